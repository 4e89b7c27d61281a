//! What the content-store collection must keep, as the engine knows it.
//!
//! The engine does no I/O, so it does not collect: it answers two queries
//! and the shell sweeps (`service/gc.rs`).
//!
//! - [`Engine::gc_pins`]: the vertex keys and blobs that queued and running
//!   builds need (every needed vertex's result, the context chunks, the
//!   base-image manifests), and those of ended builds whose client is still
//!   attached (it is downloading the result, the index included).
//! - [`Engine::gc_forget`]: forgets the results a plan evicts, except those
//!   that became pinned or were used since the plan's snapshot, and names
//!   the blobs that must then be spared. Records go before their blobs, so
//!   the journal never names a missing blob.

use super::ports::{JournalError, UsedResult};
use super::Engine;
use imgfarm_common::graph::op::Op;
use imgfarm_common::oci::Digest;
use std::collections::BTreeSet;

/// What the collection must keep whatever its size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcPins {
    /// Vertex keys whose stored results builds need.
    pub keys: BTreeSet<Digest>,
    /// Blobs builds need directly (context chunks, base-image manifests,
    /// finished indexes being downloaded).
    pub blobs: BTreeSet<Digest>,
}

/// What [`Engine::gc_forget`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcForgot {
    /// Results forgotten.
    pub forgotten: Vec<Digest>,
    /// Blobs the sweep must not remove: those of evicted results that are
    /// live again, of results used since the snapshot, and the pinned blobs.
    pub spare: BTreeSet<Digest>,
}

impl Engine {
    /// See the module docs.
    pub fn gc_pins(&self) -> GcPins {
        let mut pins = GcPins::default();
        let live = self
            .builds
            .all()
            .filter(|b| b.state.is_active() || !b.attached.is_empty());
        for b in live {
            pins.keys.extend(b.needed_vertices().map(|v| v.key.clone()));
            if let Some(c) = &b.definition.context {
                pins.blobs.extend(c.chunks.iter().map(|l| l.digest.clone()));
            }
            for v in &b.definition.vertices {
                if let Op::Image(img) = &v.op {
                    pins.blobs.extend(img.digest.clone());
                }
            }
            if let Some(ix) = b.finished.as_ref().and_then(|f| f.index.as_ref()) {
                pins.blobs.insert(ix.digest.clone());
            }
        }
        pins
    }

    /// Every stored result with its last use (the plan's input).
    pub fn gc_records(&self) -> Result<Vec<UsedResult>, JournalError> {
        self.journal.result_usage()
    }

    /// Forgets the results in `evict` unless pinned now or used at or after
    /// `since_ms` (when the plan's snapshot was taken). See [`GcForgot`].
    pub fn gc_forget(&mut self, evict: &[Digest], since_ms: u64) -> Result<GcForgot, JournalError> {
        let pins = self.gc_pins();
        let recent = self.journal.results_used_since(since_ms)?;
        let recent_keys: BTreeSet<&Digest> = recent.iter().map(|u| &u.key).collect();
        let mut out = GcForgot {
            spare: pins.blobs.clone(),
            ..GcForgot::default()
        };
        for u in &recent {
            out.spare.extend(u.result.blobs());
        }
        for k in evict {
            if recent_keys.contains(k) {
                continue;
            }
            if pins.keys.contains(k) {
                if let Ok(Some(r)) = self.journal.get_result(k) {
                    out.spare.extend(r.blobs());
                }
                continue;
            }
            out.forgotten.push(k.clone());
        }
        self.journal.forget_results(&out.forgotten)?;
        Ok(out)
    }

    /// Builds ended since this engine started (the shell collects after
    /// each).
    pub fn builds_ended(&self) -> u64 {
        self.ended
    }
}
