//! The coordinator/worker wire protocol: serde messages in bincode frames.
