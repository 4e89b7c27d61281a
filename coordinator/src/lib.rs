//! The farm coordinator: worker pool, scheduler, job queue, exporters.

pub mod server;
