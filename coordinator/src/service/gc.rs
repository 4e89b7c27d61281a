//! The coordinator's size-capped collection (`--store-max`): the sweep the
//! engine asks the shell to run (the engine only says what is live:
//! [`crate::engine::gc`]).
//!
//! It runs after every build that ends, when a peer leaves (a client that
//! downloaded a result unpins it) and every [`GcOptions::period`], one at a
//! time, in three steps:
//!
//! 1. On the loop: take the engine's pins and the journal's results with
//!    their last use (one SQLite query).
//! 2. On a blocking thread: [`ContentStore::plan_lru`] (directory scan,
//!    manifest reads, sizes): which results to evict, which blobs to remove.
//! 3. Back on the loop: [`Engine::gc_forget`] forgets the evicted results
//!    first, sparing any that became live meanwhile (a build admitted, a
//!    result recorded), then the blobs go, except those the spared results
//!    reach. Step 3 is a few unlinks; the loop never waits on step 2.

use crate::engine::ports::now_ms;
use crate::engine::Engine;
use imgfarm_common::oci::store::{ContentStore, LruPlan, LruRecord};
use std::time::{Duration, Instant};

/// How the coordinator bounds its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcOptions {
    /// Bytes the store may hold beyond what queued and running builds need
    /// (`--store-max`).
    pub store_max: u64,
    /// Blobs no result names yet (an upload before its submit or its
    /// `VertexDone`) are kept this long.
    pub young: Duration,
    /// Collect at least this often (besides after each build).
    pub period: Duration,
}

impl GcOptions {
    /// `store_max` with a 10 min grace for fresh uploads and a collection
    /// at least every minute.
    pub fn new(store_max: u64) -> Self {
        Self {
            store_max,
            young: Duration::from_secs(600),
            period: Duration::from_secs(60),
        }
    }
}

/// A plan computed off the loop, to apply on it.
pub(super) struct Planned {
    plan: Result<LruPlan, String>,
    since_ms: u64,
    started: Instant,
}

/// Whether a collection is due or running.
pub(super) struct Collector {
    opts: GcOptions,
    running: bool,
    again: bool,
    seen_ended: u64,
    seen_sessions: usize,
    last: Instant,
}

impl Collector {
    pub(super) fn new(opts: GcOptions) -> Self {
        Self {
            opts,
            running: false,
            again: false,
            seen_ended: 0,
            seen_sessions: 0,
            last: Instant::now(),
        }
    }

    /// Starts a collection when a build ended or the period passed (or
    /// marks one to follow the running one). `send` gets the plan.
    pub(super) fn maybe_start(
        &mut self,
        engine: &Engine,
        store: &ContentStore,
        send: impl FnOnce(Planned) + Send + 'static,
    ) {
        let ended = engine.builds_ended();
        let sessions = engine.stats().sessions;
        let left = sessions < self.seen_sessions;
        self.seen_sessions = sessions;
        let due = ended != self.seen_ended || left || self.last.elapsed() >= self.opts.period;
        if !due && !self.again {
            return;
        }
        if self.running {
            self.again |= due;
            self.seen_ended = ended;
            return;
        }
        self.seen_ended = ended;
        self.again = false;
        self.running = true;
        self.last = Instant::now();
        let pins = engine.gc_pins();
        let records = match engine.gc_records() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("store collection skipped: {e}");
                self.running = false;
                return;
            }
        };
        let records: Vec<LruRecord> = records
            .into_iter()
            .map(|u| LruRecord {
                blobs: u.result.blobs(),
                key: u.key,
                last_used: u.last_used_ms,
            })
            .collect();
        let (store, opts) = (store.clone(), self.opts);
        let since_ms = now_ms();
        let started = Instant::now();
        tokio::task::spawn_blocking(move || {
            let plan = store
                .plan_lru(&pins.blobs, &pins.keys, records, opts.store_max, opts.young)
                .map_err(|e| e.to_string());
            send(Planned {
                plan,
                since_ms,
                started,
            });
        });
    }

    /// Applies a plan: results first, then blobs (see the module docs).
    pub(super) fn apply(&mut self, engine: &mut Engine, store: &ContentStore, p: Planned) {
        self.running = false;
        let plan = match p.plan {
            Ok(plan) => plan,
            Err(e) => return tracing::warn!("store collection failed to plan: {e}"),
        };
        let applied = Instant::now();
        let forgot = match engine.gc_forget(&plan.evict, p.since_ms) {
            Ok(f) => f,
            Err(e) => return tracing::warn!("store collection: forgetting results: {e}"),
        };
        let spare = match store.closure(forgot.spare) {
            Ok(s) => s,
            Err(e) => return tracing::warn!("store collection: {e}"),
        };
        match store.remove_blobs(&plan.delete, &spare) {
            Ok(r) => tracing::info!(
                "store collection: forgot {} cached results, removed {} blobs ({} bytes); {} bytes kept ({} pinned by builds), cap {}; planned in {} ms, applied in {} ms",
                forgot.forgotten.len(),
                r.removed.len(),
                r.freed_bytes,
                plan.kept_bytes + plan.freed_bytes - r.freed_bytes,
                plan.pinned_bytes,
                self.opts.store_max,
                applied.duration_since(p.started).as_millis(),
                applied.elapsed().as_millis(),
            ),
            Err(e) => tracing::warn!("store collection: removing blobs: {e}"),
        }
    }
}
