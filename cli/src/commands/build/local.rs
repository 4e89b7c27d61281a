//! The local build's wiring: the embedded worker ([`LocalWorker`]) as the
//! engine's in-process peer ([`imgfarm_coordinator::local`]), its result
//! cache as the engine's journal, and this terminal as the client.

use super::naming::Namer;
use super::output::{self, OutputSpec};
use super::BuildArgs;
use crate::progress::Progress;
use imgfarm_common::farm::{FarmDefinition, VertexResult};
use imgfarm_common::graph::BuildGraph;
use imgfarm_common::oci::store::{ContentStore, RefDescriptor};
use imgfarm_common::oci::Digest;
use imgfarm_common::platform::Platform;
use imgfarm_common::proto::{BuildFinished, Message};
use imgfarm_coordinator::engine::{Journal, JournalError, StoredBuild};
use imgfarm_coordinator::local::{self, LocalClient, LocalError, LocalWorkerOffer};
use imgfarm_worker::solve::exec::CancelToken;
use imgfarm_worker::solve::LocalWorker;
use std::collections::BTreeSet;
use std::sync::Arc;

/// The engine's journal for a local build: results are the embedded
/// worker's (its persisted result cache, checked complete); builds are not
/// written down, since the build lives as long as this process.
struct WorkerJournal(Arc<LocalWorker>);

impl Journal for WorkerJournal {
    fn insert_build(
        &self,
        _: &str,
        _: &str,
        _: &FarmDefinition,
        _: &imgfarm_common::farm::OutputSpec,
        _: u64,
    ) -> Result<(), JournalError> {
        Ok(())
    }
    fn set_state(&self, _: &str, _: &str, _: Option<&BuildFinished>) -> Result<(), JournalError> {
        Ok(())
    }
    fn load_active(&self) -> Result<Vec<StoredBuild>, JournalError> {
        Ok(Vec::new())
    }
    fn get_build(&self, _: &str) -> Result<Option<StoredBuild>, JournalError> {
        Ok(None)
    }
    /// The worker keeps what it ran (in memory and in its cache).
    fn put_result(&self, _: &Digest, _: &VertexResult) -> Result<(), JournalError> {
        Ok(())
    }
    fn get_result(&self, key: &Digest) -> Result<Option<VertexResult>, JournalError> {
        Ok(self.0.result(key))
    }
    fn has_result(&self, key: &Digest) -> Result<bool, JournalError> {
        Ok(self.0.reuse(key))
    }
}

/// This terminal as the build's client: progress lines, the outputs.
struct Terminal<'a> {
    a: &'a BuildArgs,
    store: &'a ContentStore,
    outputs: &'a [OutputSpec],
    progress: &'a mut Progress,
    names: Namer,
    multi: bool,
    emulated: BTreeSet<Digest>,
    cancel: CancelToken,
    /// The first vertex that failed, with its error.
    failed: Option<(Digest, String)>,
    /// Why the outputs could not be written.
    export_error: Option<anyhow::Error>,
}

impl LocalClient for Terminal<'_> {
    fn message(&mut self, msg: &Message) {
        match msg {
            Message::VertexStarted(s) => {
                if s.emulated {
                    self.emulated.insert(s.vertex_key.clone());
                }
                let name = self.names.local_name(&s.vertex_key, s.emulated, self.multi);
                self.progress.started(s.vertex_key.as_str(), &name);
            }
            Message::VertexLog(l) => self.progress.log(l.vertex_key.as_str(), &l.data),
            Message::VertexFinished(f) => match (&f.error, f.cached) {
                (Some(e), _) => {
                    self.progress.failed(f.vertex_key.as_str(), e);
                    self.failed
                        .get_or_insert_with(|| (f.vertex_key.clone(), e.clone()));
                }
                (None, true) if !self.names.is_source(&f.vertex_key) => {
                    let name = self.names.local_name(&f.vertex_key, false, self.multi);
                    self.progress.cached(f.vertex_key.as_str(), &name);
                }
                (None, true) => {}
                (None, false) => self.progress.done(f.vertex_key.as_str()),
            },
            _ => {}
        }
    }

    fn export(&mut self, manifests: &[(String, RefDescriptor)]) -> Result<(), String> {
        let typed: Result<Vec<(Platform, RefDescriptor)>, String> = manifests
            .iter()
            .map(|(p, m)| {
                p.parse()
                    .map(|p| (p, m.clone()))
                    .map_err(|e| format!("platform {p:?}: {e}"))
            })
            .collect();
        let done = typed
            .map_err(anyhow::Error::msg)
            .and_then(|m| output::export(self.a, self.store, self.outputs, &m, self.progress));
        done.map_err(|e| {
            let msg = format!("{e:#}");
            self.export_error = Some(e);
            msg
        })
    }

    fn cancel(&mut self, _: &Digest) {
        // One token for the embedded worker: the build is over.
        self.cancel.cancel();
    }
}

/// What [`build`] needs besides the graph.
pub struct LocalBuild<'a> {
    pub a: &'a BuildArgs,
    pub store: &'a ContentStore,
    pub outputs: &'a [OutputSpec],
    pub platforms: &'a [Platform],
    pub offer: LocalWorkerOffer,
}

/// Runs `graph` on the embedded worker; `Ok(false)` when a step failed
/// (already reported on stderr, as BuildKit's `failed to solve`).
pub fn build(
    b: LocalBuild<'_>,
    graph: &BuildGraph,
    worker: Arc<LocalWorker>,
    cancel: CancelToken,
    progress: &mut Progress,
) -> anyhow::Result<bool> {
    let definition = FarmDefinition::from_graph(graph, None, String::new());
    let output = imgfarm_common::farm::OutputSpec {
        no_cache: b.a.no_cache,
        timeout_secs: b.a.timeout,
        step_timeout_secs: b.a.step_timeout,
        ..Default::default()
    };
    let mut term = Terminal {
        a: b.a,
        store: b.store,
        outputs: b.outputs,
        progress,
        names: Namer::new(graph),
        multi: b.platforms.len() > 1,
        emulated: BTreeSet::new(),
        cancel,
        failed: None,
        export_error: None,
    };
    let journal = Box::new(WorkerJournal(Arc::clone(&worker)));
    let result = local::run(
        definition,
        output,
        &b.offer,
        journal,
        Box::new(b.store.clone()),
        worker,
        &mut term,
    );
    let err = match result {
        Ok(_) => return Ok(true),
        Err(e) => e,
    };
    if let Some(e) = term.export_error.take() {
        return Err(e);
    }
    term.progress.finish();
    match (&err, &term.failed) {
        (LocalError::Failed(_), Some((key, error))) => {
            let name = term
                .names
                .local_name(key, term.emulated.contains(key), term.multi);
            eprintln!("ERROR: failed to solve: {name}: {error}");
            let tail = term.progress.tail(key.as_str());
            if !tail.is_empty() && !error.contains(tail.last().map_or("", |s| s.as_str())) {
                eprintln!("------\n{}\n------", tail.join("\n"));
            }
        }
        (other, _) => eprintln!("ERROR: failed to solve: {other}"),
    }
    Ok(false)
}
