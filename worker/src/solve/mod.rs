//! The vertex solver: runs one build-graph vertex at a time on this worker
//! and keeps results by key (in memory and in the persisted cache). The
//! coordinator's scheduler decides what runs when; [`LocalWorker`] is the
//! runner behind the in-process link (and, later, behind the QUIC link).

pub mod cache_mount;
pub mod copy;
pub mod exec;
pub mod export;
pub mod image;
pub mod layer_index;
pub mod layers;
pub mod result;
pub mod rootless;
pub mod stage;
pub mod url;
pub mod view;

use exec::{CancelToken, ExecRequest, StepExecutor};
use imgfarm_common::context::BuildContext;
use imgfarm_common::graph::op::{FileAction, Op};
use imgfarm_common::graph::{reuse, BuildGraph, Vertex};
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::oci::Digest;
use imgfarm_transport::runner::{VertexError, VertexRunner};
use result::{ResultCache, VertexResult};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use view::ChainView;

/// Why a vertex failed.
#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    /// Content store trouble.
    #[error("content store: {0}")]
    Store(String),
    /// A layer blob could not be opened.
    #[error("content store: {0}")]
    OpenLayer(#[from] imgfarm_common::oci::layer::OpenLayerError),
    /// Writing or reading a layer failed.
    #[error("layer: {0}")]
    Layer(String),
    /// A base image could not be used.
    #[error("base image: {0}")]
    BaseImage(String),
    /// A stored manifest could not be read.
    #[error("base image: {0}")]
    Manifest(#[from] imgfarm_common::oci::image::ReadManifestError),
    /// A context read failed.
    #[error("{0}")]
    Context(String),
    /// `--chown`/USER names that do not resolve.
    #[error("{0}")]
    User(String),
    /// RUN failed.
    #[error(transparent)]
    Exec(#[from] exec::ExecFailure),
    /// The op is not supported by this worker (yet).
    #[error("{0}")]
    Unsupported(String),
    /// Build cache trouble.
    #[error(transparent)]
    Cache(#[from] result::CacheError),
    /// A bug: an invariant did not hold.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What the embedded worker needs for one build.
pub struct LocalWorker {
    store: ContentStore,
    cache: ResultCache,
    graph: Arc<BuildGraph>,
    context: Arc<BuildContext>,
    context_dir: PathBuf,
    executor: Option<Arc<dyn StepExecutor>>,
    cancel: CancelToken,
    results: Mutex<HashMap<Digest, VertexResult>>,
    snapshot_lease: std::sync::OnceLock<Option<nix::fcntl::Flock<std::fs::File>>>,
}

impl LocalWorker {
    /// A worker for `graph` over `store`, reading `context`.
    pub fn new(
        store: ContentStore,
        cache: ResultCache,
        graph: Arc<BuildGraph>,
        context: Arc<BuildContext>,
        executor: Option<Arc<dyn StepExecutor>>,
    ) -> Self {
        let context_dir = context.root().to_path_buf();
        Self {
            store,
            cache,
            graph,
            context,
            context_dir,
            executor,
            cancel: CancelToken::new(),
            results: Mutex::new(HashMap::new()),
            snapshot_lease: std::sync::OnceLock::new(),
        }
    }

    /// Stop RUNs with `cancel`: once it is triggered, a running RUN is
    /// killed and fails with [`exec::ExecFailure::Cancelled`]. Without it the
    /// worker's token is never triggered.
    pub fn with_cancel(mut self, cancel: CancelToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// May the cached result of `key` be reused? Only while it is
    /// complete (every blob it names in the store, its files present); a
    /// reusable result is loaded for the vertices that read it. The engine
    /// asks this only for keys the one reuse rule
    /// ([`imgfarm_common::graph::reuse`]) allows.
    pub fn reuse(&self, key: &Digest) -> bool {
        if self.lock().contains_key(key) {
            return true;
        }
        match self.cache.get(key) {
            Some(r) if r.is_complete(|d| self.store.contains(d)) => {
                self.cache.touch(key);
                self.lock().insert(key.clone(), r);
                true
            }
            _ => false,
        }
    }

    /// Takes a shared lease on the state's snapshots (once), so `prune` does not
    /// collect a snapshot a COPY reads in place; false when it could not be
    /// taken (then nothing is read in place).
    fn snapshot_lease(&self) -> bool {
        self.snapshot_lease
            .get_or_init(|| {
                crate::snapshotter::shared_lease(self.store.root())
                    .map_err(|e| tracing::debug!("no snapshot lease: {e}"))
                    .ok()
            })
            .is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, VertexResult>> {
        self.results
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records the result of `key` computed elsewhere (a farm worker gets
    /// its inputs' results from the coordinator). The blobs it names must
    /// be in the store before a vertex that uses it runs.
    pub fn insert_result(&self, key: Digest, result: VertexResult) {
        self.lock().insert(key, result);
    }

    /// The result of `key`, once it has run (or came from the cache).
    pub fn result(&self, key: &Digest) -> Option<VertexResult> {
        self.lock().get(key).cloned()
    }

    fn input(&self, v: &Vertex, i: usize) -> Result<VertexResult, SolveError> {
        let key = v
            .inputs
            .get(i)
            .ok_or_else(|| SolveError::Internal(format!("input {i} of {}", v.key)))?;
        if let Some(r) = self.result(key) {
            return Ok(r);
        }
        // Sources (context, inline files, URL) are never scheduled: every
        // worker solves them where they are read (FARM.md).
        match self.graph.vertex(key) {
            Some(src) if src.op.is_source() => {
                let r = self.solve_vertex(src, false, &mut |_| {})?;
                self.lock().insert(key.clone(), r.clone());
                Ok(r)
            }
            _ => Err(SolveError::Internal(format!("input {key} has no result"))),
        }
    }

    fn chain_of(&self, v: &Vertex, i: Option<usize>) -> Result<Vec<result::LayerRef>, SolveError> {
        match i {
            Some(i) => Ok(self.input(v, i)?.chain),
            None => Ok(Vec::new()),
        }
    }

    /// Run one vertex to its result.
    pub fn solve_vertex(
        &self,
        v: &Vertex,
        emulated: bool,
        log: &mut dyn FnMut(&[u8]),
    ) -> Result<VertexResult, SolveError> {
        match &v.op {
            Op::Image(img) => {
                let Some(digest) = &img.digest else {
                    return Err(SolveError::BaseImage(format!(
                        "{}: not found in the local image store; run `imgfarm pull {}` first",
                        img.reference, img.reference
                    )));
                };
                let (_, (config, layers)) =
                    imgfarm_common::oci::image::read_manifest(&self.store, digest)?;
                Ok(VertexResult {
                    chain: layers.clone(),
                    delta: layers,
                    base_config: Some(config),
                    ..VertexResult::default()
                })
            }
            Op::Context(_) => Ok(VertexResult::default()),
            Op::File(f) => {
                let lower = self.chain_of(v, f.dest_root)?;
                let view = ChainView::load(&self.store, &lower)?;
                let layer = match &f.action {
                    FileAction::Mkdir { path, mode, user } => {
                        copy::mkdir_layer(&self.store, &view, path, *mode, user)?
                    }
                    FileAction::Copy(c) => self.copy(v, &view, c)?,
                };
                Ok(on_top(lower, layer))
            }
            Op::Merge(m) => {
                let mut chain = self.chain_of(v, m.lower)?;
                chain.extend(self.input(v, m.upper)?.delta);
                Ok(VertexResult {
                    chain,
                    ..VertexResult::default()
                })
            }
            Op::Exec(e) => {
                let lower = self.chain_of(v, e.root)?;
                let Some(exec) = &self.executor else {
                    return Err(SolveError::Unsupported(
                        "RUN needs the rootless executor, which this build of imgfarm lacks".into(),
                    ));
                };
                let platform = v
                    .platform
                    .clone()
                    .ok_or_else(|| SolveError::Internal("RUN without a platform".into()))?;
                let inputs = (0..v.inputs.len())
                    .map(|i| self.input(v, i))
                    .collect::<Result<Vec<_>, _>>()?;
                let req = ExecRequest {
                    store: &self.store,
                    lower: &lower,
                    op: e,
                    inputs: &inputs,
                    context_dir: Some(&self.context_dir),
                    platform: &platform,
                    emulated,
                    cancel: &self.cancel,
                };
                let layer = exec.run(&req, log)?;
                Ok(on_top(lower, layer))
            }
            Op::Export(x) => {
                let platform = v
                    .platform
                    .clone()
                    .ok_or_else(|| SolveError::Internal("export without a platform".into()))?;
                let mut layers = Vec::new();
                let mut base = None;
                for i in 0..v.inputs.len() {
                    let r = self.input(v, i)?;
                    if x.base_image == Some(i) {
                        if let Some(c) = &r.base_config {
                            let bytes = self
                                .store
                                .read_bytes(c, imgfarm_common::oci::image::MAX_DOCUMENT_SIZE)
                                .map_err(|e| SolveError::Store(e.to_string()))?;
                            base = Some(
                                imgfarm_common::oci::image::ImageConfig::from_json(&bytes)
                                    .map_err(|e| SolveError::BaseImage(e.to_string()))?,
                            );
                        }
                    }
                    layers.extend(r.delta);
                }
                let (manifest, _config) = export::export_image(
                    &self.store,
                    &platform,
                    &x.config,
                    base.as_ref(),
                    &layers,
                )?;
                Ok(VertexResult {
                    manifest: Some(manifest),
                    ..VertexResult::default()
                })
            }
            Op::Inline(inline) => self.inline_files(v, inline),
            Op::Url(u) => {
                let dir = url::fetch_to_dir(u, &self.store.root().join("url"))
                    .map_err(|e| SolveError::Context(e.to_string()))?;
                Ok(VertexResult {
                    files_dir: Some(dir),
                    ..VertexResult::default()
                })
            }
        }
    }

    /// Heredoc files, written once per key under `<state>/inline/<key>`.
    fn inline_files(
        &self,
        v: &Vertex,
        inline: &imgfarm_common::graph::op::InlineOp,
    ) -> Result<VertexResult, SolveError> {
        let root = self.store.root().join("inline");
        let dir = root.join(v.key.hex());
        let tmp = root.join(format!("{}.tmp", v.key.hex()));
        let io = |e: std::io::Error| SolveError::Layer(format!("inline files: {e}"));
        if !dir.is_dir() {
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir_all(&tmp).map_err(io)?;
            for f in &inline.files {
                if f.name.is_empty() || f.name.contains('/') || f.name == ".." || f.name == "." {
                    return Err(SolveError::Context(format!(
                        "inline file name {:?} is not a plain file name",
                        f.name
                    )));
                }
                let p = tmp.join(&f.name);
                std::fs::write(&p, &f.content).map_err(io)?;
                let mode = std::os::unix::fs::PermissionsExt::from_mode(f.mode & 0o7777);
                std::fs::set_permissions(&p, mode).map_err(io)?;
            }
            std::fs::rename(&tmp, &dir).map_err(io)?;
        }
        Ok(VertexResult {
            files_dir: Some(dir),
            ..VertexResult::default()
        })
    }

    fn copy(
        &self,
        v: &Vertex,
        view: &ChainView,
        c: &imgfarm_common::graph::op::CopyAction,
    ) -> Result<result::LayerRef, SolveError> {
        // Group sources by input; each input is the context or a stage.
        let mut inputs: Vec<usize> = c.sources.iter().map(|s| s.input).collect();
        inputs.dedup();
        let mut stages: HashMap<usize, (stage::StageDir, ChainView)> = HashMap::new();
        let mut inline: HashMap<usize, BuildContext> = HashMap::new();
        for &i in &inputs {
            let key = &v.inputs[i.min(v.inputs.len().saturating_sub(1))];
            let is_context = matches!(self.graph.vertex(key).map(|x| &x.op), Some(Op::Context(_)));
            if let Some(files) = self.input(v, i)?.files_dir {
                let ctx = BuildContext::open(&files, Default::default())
                    .map_err(|e| SolveError::Context(e.to_string()))?;
                inline.insert(i, ctx);
                continue;
            }
            if !is_context {
                let chain = self.input(v, i)?.chain;
                let sview = ChainView::load(&self.store, &chain)?;
                let paths: Vec<String> = c
                    .sources
                    .iter()
                    .filter(|s| s.input == i)
                    .map(|s| s.path.clone())
                    .collect();
                // A snapshot is read in place only under this process's lease.
                let leased = self.snapshot_lease();
                let dir = stage::source_dir(&self.store, &chain, &sview, &paths, leased)?;
                stages.insert(i, (dir, sview));
            }
        }
        let mut stage_ctx: HashMap<usize, BuildContext> = HashMap::new();
        for (i, (dir, _)) in &stages {
            let ctx = BuildContext::open(dir.path(), Default::default())
                .map_err(|e| SolveError::Context(e.to_string()))?
                .with_rooted_symlinks();
            stage_ctx.insert(*i, ctx);
        }
        let mut sources = Vec::new();
        for &i in &inputs {
            let paths: Vec<String> = c
                .sources
                .iter()
                .filter(|s| s.input == i)
                .map(|s| s.path.clone())
                .collect();
            let (ctx, owners) = match (stage_ctx.get(&i), stages.get(&i), inline.get(&i)) {
                (Some(ctx), Some((_, view)), _) => (ctx, Some(view)),
                (_, _, Some(ctx)) => (ctx, None),
                _ => (self.context.as_ref(), None),
            };
            let sel = ctx
                .select(&paths, &c.excludes)
                .map_err(|e| SolveError::Context(e.to_string()))?;
            sources.push((copy::SourceFs { ctx, owners }, sel.matches));
        }
        copy::copy_layer(&self.store, view, c, &sources)
    }
}

/// The result of a step that adds `layer` on top of the chain `lower`
/// (COPY/ADD, WORKDIR, RUN).
fn on_top(mut lower: Vec<result::LayerRef>, layer: result::LayerRef) -> VertexResult {
    lower.push(layer.clone());
    VertexResult {
        chain: lower,
        delta: vec![layer],
        ..VertexResult::default()
    }
}

impl VertexRunner for LocalWorker {
    fn run(
        &self,
        key: &Digest,
        emulated: bool,
        log: &mut dyn FnMut(&[u8]),
    ) -> Result<VertexResult, VertexError> {
        let v = self
            .graph
            .vertex(key)
            .ok_or_else(|| VertexError::Unknown(key.clone()))?;
        let r = self
            .solve_vertex(v, emulated, log)
            .map_err(VertexError::solve)?;
        if reuse::reusable_op(&v.op) {
            self.cache.put(key, &r).map_err(VertexError::solve)?;
        }
        self.lock().insert(key.clone(), r.clone());
        Ok(r)
    }
}

#[cfg(test)]
mod stage_tests;
#[cfg(test)]
mod tests;
