//! What the engine asks of its environment, behind traits so the engine
//! stays free of I/O: the [`Journal`] (builds and vertex results that
//! outlive the process) and [`Blobs`] (which blobs the coordinator holds).
//!
//! The farm uses SQLite and the content store; the local build its result
//! cache and the same content store; the simulator [`MemJournal`] and a
//! store that holds everything.

use imgfarm_common::farm::{FarmDefinition, OutputSpec, VertexResult};
use imgfarm_common::oci::image::Document;
use imgfarm_common::oci::store::{ContentStore, RefDescriptor};
use imgfarm_common::oci::Digest;
use imgfarm_common::proto::BuildFinished;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Largest manifest read back from the store.
const MAX_MANIFEST: u64 = 4 << 20;

/// A journal failure (the store's own message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JournalError(pub String);

/// A build as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBuild {
    /// Build id.
    pub id: String,
    /// Submitting client.
    pub client: String,
    /// `queued`, `running`, ...
    pub state: String,
    /// The definition.
    pub definition: FarmDefinition,
    /// The output, credentials removed.
    pub output: OutputSpec,
    /// Whether credentials were lent (they were not stored).
    pub had_credentials: bool,
    /// Seconds since the epoch.
    pub created: u64,
    /// The final message, once ended.
    pub result: Option<BuildFinished>,
}

/// Builds and vertex results that outlive the engine. A build is written
/// before it is accepted and results as they arrive, so a restarted engine
/// resumes every accepted build from its finished vertices.
pub trait Journal: Send {
    /// Writes a new build (state `queued`). Credentials are never written,
    /// only whether there were any.
    fn insert_build(
        &self,
        id: &str,
        client: &str,
        definition: &FarmDefinition,
        output: &OutputSpec,
        created: u64,
    ) -> Result<(), JournalError>;
    /// Updates a build's state (and, once it ended, its result).
    fn set_state(
        &self,
        id: &str,
        state: &str,
        result: Option<&BuildFinished>,
    ) -> Result<(), JournalError>;
    /// Builds still queued or running, oldest first.
    fn load_active(&self) -> Result<Vec<StoredBuild>, JournalError>;
    /// One build by id.
    fn get_build(&self, id: &str) -> Result<Option<StoredBuild>, JournalError>;
    /// Stores a vertex result.
    fn put_result(&self, key: &Digest, result: &VertexResult) -> Result<(), JournalError>;
    /// One stored result.
    fn get_result(&self, key: &Digest) -> Result<Option<VertexResult>, JournalError>;
    /// Whether a usable result is stored under `key`.
    fn has_result(&self, key: &Digest) -> Result<bool, JournalError>;

    /// Every stored result with when it was last used (ms since the
    /// epoch: written, looked up or read), for the size-capped collection.
    /// A journal without a size cap lists none.
    fn result_usage(&self) -> Result<Vec<UsedResult>, JournalError> {
        Ok(Vec::new())
    }
    /// Results written or used at or after `since_ms` (what became live
    /// while a collection was being planned).
    fn results_used_since(&self, _since_ms: u64) -> Result<Vec<UsedResult>, JournalError> {
        Ok(Vec::new())
    }
    /// Forgets the results of `keys` (before the collection removes their
    /// blobs, so no record ever names a missing blob).
    fn forget_results(&self, _keys: &[Digest]) -> Result<(), JournalError> {
        Ok(())
    }

    /// Records build `id` as failed with `error`, without an index (a
    /// build that never reached the scheduler).
    fn mark_failed(&self, id: &str, error: String) -> Result<(), JournalError> {
        self.set_state(id, "failed", Some(&failed_record(id, error)))
    }
}

/// The final record of build `id` that failed with `error` before any
/// index was made.
pub fn failed_record(id: &str, error: String) -> BuildFinished {
    BuildFinished {
        build_id: id.to_string(),
        result: Err(error),
        index: None,
        pushed: Vec::new(),
    }
}

/// The output as stored: no credentials.
pub fn output_without_credentials(o: &OutputSpec) -> OutputSpec {
    OutputSpec {
        credentials: Vec::new(),
        ..o.clone()
    }
}

/// A stored result and when it was last used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsedResult {
    /// The vertex key.
    pub key: Digest,
    /// The result.
    pub result: VertexResult,
    /// Last use, ms since the epoch.
    pub last_used_ms: u64,
}

/// Now, in ms since the epoch (how journals stamp a result's last use).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Which blobs the coordinator holds.
pub trait Blobs: Send {
    /// Is `digest` stored?
    fn contains(&self, digest: &Digest) -> bool;
    /// The digests manifest `m` names (config and layers).
    fn manifest_children(&self, m: &RefDescriptor) -> Result<Vec<Digest>, String>;

    /// The first blob `result` names that is not stored: its layers, base
    /// config and manifest, and the config and layers the manifest lists.
    /// `Err` when the manifest itself does not parse. A `VertexDone` naming
    /// a blob the coordinator lacks would make every later job and the push
    /// fail far from the cause.
    fn missing(&self, result: &VertexResult) -> Result<Option<Digest>, String> {
        if let Some(d) = result.blobs().into_iter().find(|d| !self.contains(d)) {
            return Ok(Some(d));
        }
        if let Some(m) = &result.manifest {
            return Ok(self
                .manifest_children(m)?
                .into_iter()
                .find(|d| !self.contains(d)));
        }
        Ok(None)
    }
}

impl Blobs for ContentStore {
    fn contains(&self, digest: &Digest) -> bool {
        ContentStore::contains(self, digest)
    }

    fn manifest_children(&self, m: &RefDescriptor) -> Result<Vec<Digest>, String> {
        let bytes = self
            .read_bytes(&m.digest, MAX_MANIFEST)
            .map_err(|e| format!("reading manifest {}: {e}", m.digest))?;
        let doc = Document::parse(&bytes, Some(&m.media_type))
            .map_err(|e| format!("manifest {}: {e}", m.digest))?;
        doc.children()
            .iter()
            .map(|c| {
                c.digest()
                    .as_ref()
                    .parse()
                    .map_err(|e| format!("manifest {} names a bad digest: {e}", m.digest))
            })
            .collect()
    }
}

/// A store that holds every blob (the simulator's workers upload nothing).
#[derive(Debug, Clone, Copy, Default)]
pub struct AllBlobs;

impl Blobs for AllBlobs {
    fn contains(&self, _: &Digest) -> bool {
        true
    }
    fn manifest_children(&self, _: &RefDescriptor) -> Result<Vec<Digest>, String> {
        Ok(Vec::new())
    }
}

#[derive(Debug, Default)]
struct MemState {
    builds: BTreeMap<String, (u64, StoredBuild)>,
    seq: u64,
    results: BTreeMap<Digest, VertexResult>,
    /// Last use of each result, on a logical clock (`clock`).
    used: BTreeMap<Digest, u64>,
    clock: u64,
}

impl MemState {
    fn use_result(&mut self, key: &Digest) {
        if self.results.contains_key(key) {
            self.clock += 1;
            self.used.insert(key.clone(), self.clock);
        }
    }

    fn used_results(&self, since: u64) -> Vec<UsedResult> {
        let mut out: Vec<UsedResult> = self
            .results
            .iter()
            .map(|(k, r)| UsedResult {
                key: k.clone(),
                result: r.clone(),
                last_used_ms: self.used.get(k).copied().unwrap_or(0),
            })
            .filter(|u| u.last_used_ms >= since)
            .collect();
        out.sort_by_key(|u| u.last_used_ms);
        out
    }
}

/// A journal in memory, shared by its clones: the simulator restarts an
/// engine over the same one. Counts its writes (the persisted queue's write
/// rate in `bench/farm_scale.sh`).
#[derive(Debug, Clone, Default)]
pub struct MemJournal {
    state: Arc<Mutex<MemState>>,
    writes: Arc<AtomicU64>,
}

impl MemJournal {
    /// An empty journal.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes so far (builds inserted, states set, results put).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// The stored state of build `id`.
    pub fn state_of(&self, id: &str) -> Option<String> {
        self.lock().builds.get(id).map(|(_, b)| b.state.clone())
    }

    /// Results stored.
    pub fn results(&self) -> usize {
        self.lock().results.len()
    }

    /// The logical clock of result uses (see [`Journal::result_usage`]).
    pub fn clock(&self) -> u64 {
        self.lock().clock
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }
}

impl Journal for MemJournal {
    fn insert_build(
        &self,
        id: &str,
        client: &str,
        definition: &FarmDefinition,
        output: &OutputSpec,
        created: u64,
    ) -> Result<(), JournalError> {
        self.wrote();
        let mut s = self.lock();
        if s.builds.contains_key(id) {
            return Err(JournalError(format!("build {id} exists")));
        }
        s.seq += 1;
        let seq = s.seq;
        let b = StoredBuild {
            id: id.to_string(),
            client: client.to_string(),
            state: "queued".into(),
            definition: definition.clone(),
            output: output_without_credentials(output),
            had_credentials: !output.credentials.is_empty(),
            created,
            result: None,
        };
        s.builds.insert(id.to_string(), (seq, b));
        Ok(())
    }

    fn set_state(
        &self,
        id: &str,
        state: &str,
        result: Option<&BuildFinished>,
    ) -> Result<(), JournalError> {
        self.wrote();
        if let Some((_, b)) = self.lock().builds.get_mut(id) {
            b.state = state.to_string();
            b.result = result.cloned();
        }
        Ok(())
    }

    fn load_active(&self) -> Result<Vec<StoredBuild>, JournalError> {
        let s = self.lock();
        let mut active: Vec<&(u64, StoredBuild)> = s
            .builds
            .values()
            .filter(|(_, b)| b.state == "queued" || b.state == "running")
            .collect();
        active.sort_by_key(|(seq, _)| *seq);
        Ok(active.into_iter().map(|(_, b)| b.clone()).collect())
    }

    fn get_build(&self, id: &str) -> Result<Option<StoredBuild>, JournalError> {
        Ok(self.lock().builds.get(id).map(|(_, b)| b.clone()))
    }

    fn put_result(&self, key: &Digest, result: &VertexResult) -> Result<(), JournalError> {
        self.wrote();
        let mut s = self.lock();
        s.results.insert(key.clone(), result.clone());
        s.use_result(key);
        Ok(())
    }

    fn get_result(&self, key: &Digest) -> Result<Option<VertexResult>, JournalError> {
        let mut s = self.lock();
        s.use_result(key);
        Ok(s.results.get(key).cloned())
    }

    fn has_result(&self, key: &Digest) -> Result<bool, JournalError> {
        let mut s = self.lock();
        s.use_result(key);
        Ok(s.results.contains_key(key))
    }

    /// Last use on a logical clock (one tick per use), not in ms.
    fn result_usage(&self) -> Result<Vec<UsedResult>, JournalError> {
        Ok(self.lock().used_results(0))
    }

    fn results_used_since(&self, since: u64) -> Result<Vec<UsedResult>, JournalError> {
        Ok(self.lock().used_results(since))
    }

    fn forget_results(&self, keys: &[Digest]) -> Result<(), JournalError> {
        let mut s = self.lock();
        for k in keys {
            s.results.remove(k);
            s.used.remove(k);
        }
        Ok(())
    }
}
