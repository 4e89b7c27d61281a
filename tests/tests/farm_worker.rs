//! The farm worker against a scripted coordinator built from the real QUIC
//! endpoint (`imgfarm_coordinator::server::Server`) on 127.0.0.1: admission,
//! hello contents, heartbeats, jobs from a real build graph, blob transfers
//! both ways, failures, reconnection.
//!
//! Jobs without RUN run with the worker in this process. RUN steps run in the
//! `imgfarm-farm-worker` binary started as the unprivileged farm user (as
//! the other rootless tests do), so they are really rootless.

use imgfarm_common::context::BuildContext;
use imgfarm_common::dockerfile::frontend::{
    build_graph, BuildRequest, ContextSelector, ResolvedImage,
};
use imgfarm_common::dockerfile::parser::parse_named;
use imgfarm_common::farm::{decode, encode, ContextBlob, VertexJob};
use imgfarm_common::graph::op::Op;
use imgfarm_common::graph::BuildGraph;
use imgfarm_common::identity::{
    init_farm, issue_leaf, write_new_files, Credentials, FileSpec, InitOptions, Role, TlsDir,
    Validity,
};
use imgfarm_common::oci::image::ImageConfig;
use imgfarm_common::oci::layer::open_layer;
use imgfarm_common::oci::layer::{create, CreateOptions};
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::oci::Digest;
use imgfarm_common::platform::Platform;
use imgfarm_common::proto::{Hello, Message, RunVertex};
use imgfarm_coordinator::server::{Server, ServerEvent, ServerOptions, Session};
use imgfarm_testkit::{or_skip, BaseImages, FarmUser, UserTempDir};
use imgfarm_worker::farm::{fetch::result_blobs, run, FarmWorkerError, WorkerEvent, WorkerOptions};
use imgfarm_worker::solve::export::export_image;
use imgfarm_worker::solve::image::stage_config;
use imgfarm_worker::solve::result::{LayerRef, ResultCache, VertexResult};
use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// The worker crate's `imgfarm-farm-worker` test driver, next to the test's own
/// `target/<profile>/deps` (cargo builds it with the worker package's tests).
fn worker_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target/<profile>/deps")
        .join("imgfarm-farm-worker");
    assert!(
        bin.is_file(),
        "{} is missing: build it first (cargo build -p imgfarm-worker)",
        bin.display()
    );
    bin
}
const SESSION_WAIT: Duration = Duration::from_secs(60);
const JOB_WAIT: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------- farm + coordinator

/// CA, coordinator and worker `w1` certificates in `dir`.
fn make_farm(dir: &Path) -> TlsDir {
    std::fs::create_dir_all(dir).expect("tls dir");
    let (ca, coord) = init_farm(&InitOptions::default()).expect("init farm");
    let w1 = issue_leaf(&ca, Role::Worker, "w1", &[], Validity::default_leaf()).expect("issue w1");
    let mut files = vec![FileSpec {
        path: dir.join("ca.crt"),
        contents: ca.cert_pem.clone(),
        mode: 0o644,
    }];
    for leaf in [coord, w1] {
        files.push(FileSpec {
            path: dir.join(format!("{}.crt", leaf.stem)),
            contents: leaf.cert_pem,
            mode: 0o644,
        });
        files.push(FileSpec {
            path: dir.join(format!("{}.key", leaf.stem)),
            contents: leaf.key_pem,
            mode: 0o600,
        });
    }
    write_new_files(&files, false).expect("write farm files");
    TlsDir::new(dir)
}

/// A coordinator endpoint the test drives by hand.
struct Coord {
    server: Server,
    addr: SocketAddr,
    store: ContentStore,
    creds: Credentials,
}

impl Coord {
    fn start(creds: Credentials, store: ContentStore, addr: SocketAddr) -> Coord {
        let mut last = None;
        // After a restart the old socket may linger for a moment.
        for _ in 0..100 {
            let mut opts = ServerOptions::new(addr, creds.clone(), store.clone());
            opts.heartbeat_interval_ms = 200;
            match Server::bind(opts) {
                Ok(server) => {
                    let addr = server.local_addr().expect("addr");
                    return Coord {
                        server,
                        addr,
                        store,
                        creds,
                    };
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("cannot bind the coordinator on {addr}: {last:?}");
    }

    fn url(&self) -> String {
        format!("quic://{}", self.addr)
    }

    /// The next admitted session.
    async fn session(&mut self) -> Session {
        let wait = async {
            loop {
                match self.server.next_event().await {
                    Some(ServerEvent::Session(s)) => return *s,
                    Some(_) => continue,
                    None => panic!("the coordinator endpoint closed"),
                }
            }
        };
        tokio::time::timeout(SESSION_WAIT, wait)
            .await
            .expect("no worker session in time")
    }

    /// Closes the endpoint and starts a new one on the same address.
    fn restart(self) -> Coord {
        let Coord {
            server,
            addr,
            store,
            creds,
        } = self;
        server.close();
        drop(server);
        Coord::start(creds, store, addr)
    }
}

/// What the scripted coordinator saw while a vertex ran.
struct Ran {
    result: Result<VertexResult, String>,
    logs: Vec<u8>,
}

/// Sends `RunVertex` for `key` with `op` and reads until its `VertexDone`.
async fn run_vertex(s: &mut Session, key: &Digest, op: Vec<u8>) -> Ran {
    let rv = RunVertex {
        build_id: "b1".into(),
        vertex_key: key.clone(),
        platform: String::new(),
        emulated: false,
        op,
        inputs: vec![],
    };
    s.send(&Message::RunVertex(rv))
        .await
        .expect("send RunVertex");
    let mut logs = Vec::new();
    let wait = async {
        loop {
            match s.recv().await.expect("recv").expect("session ended") {
                Message::VertexLog(l) if l.vertex_key == *key => logs.extend(l.data),
                Message::VertexDone(d) if d.vertex_key == *key => return d,
                Message::Heartbeat(h) => remember_summary(s, h.cache_summary),
                _ => {}
            }
        }
    };
    let done = tokio::time::timeout(JOB_WAIT, wait)
        .await
        .expect("no VertexDone in time");
    Ran {
        result: done
            .result
            .map(|bytes| decode::<VertexResult>(&bytes, "vertex result").expect("result JSON")),
        logs,
    }
}

/// Cache summaries that arrived in heartbeats while a job was awaited, by
/// worker endpoint (a summary is sent once per change, so it must not be lost).
static SEEN_SUMMARIES: std::sync::Mutex<
    Vec<(std::net::SocketAddr, imgfarm_common::proto::CacheSummary)>,
> = std::sync::Mutex::new(Vec::new());

fn remember_summary(s: &Session, summary: Option<imgfarm_common::proto::CacheSummary>) {
    let Some(summary) = summary else { return };
    let addr = s.connection().remote_address();
    let mut seen = SEEN_SUMMARIES.lock().unwrap_or_else(|p| p.into_inner());
    seen.retain(|(a, _)| *a != addr);
    seen.push((addr, summary));
}

/// The latest cache summary seen (and kept) for this session's worker, if any.
fn take_summary(s: &Session) -> Option<imgfarm_common::proto::CacheSummary> {
    let addr = s.connection().remote_address();
    let mut seen = SEEN_SUMMARIES.lock().unwrap_or_else(|p| p.into_inner());
    let i = seen.iter().position(|(a, _)| *a == addr)?;
    Some(seen.remove(i).1)
}

/// Waits for the next heartbeat; returns it.
async fn next_heartbeat(s: &mut Session) -> imgfarm_common::proto::Heartbeat {
    let wait = async {
        loop {
            if let Message::Heartbeat(h) = s.recv().await.expect("recv").expect("ended") {
                return h;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .expect("no heartbeat in time")
}

// ---------------------------------------------------------------- graphs and images

struct Selector(BuildContext);

impl ContextSelector for Selector {
    fn select(&self, sources: &[String], excludes: &[String]) -> Result<Digest, String> {
        self.0
            .select(sources, excludes)
            .map(|s| s.digest())
            .map_err(|e| e.to_string())
    }
}

/// The graph of `dockerfile` for `platform`, `FROM busybox` resolved to
/// `image`, COPY sources read from `context`.
fn graph(
    dockerfile: &str,
    platform: &Platform,
    image: (&Digest, &ImageConfig),
    context: &Path,
) -> BuildGraph {
    let parsed = parse_named(dockerfile.as_bytes(), "Dockerfile").expect("parse");
    let mut resolved = BTreeMap::new();
    resolved.insert(
        (
            "docker.io/library/busybox:latest".to_string(),
            platform.clone(),
        ),
        ResolvedImage {
            digest: image.0.clone(),
            config: stage_config(image.1),
        },
    );
    let sel = Selector(BuildContext::open(context, Default::default()).expect("context"));
    build_graph(&BuildRequest {
        dockerfile: &parsed,
        file_name: "Dockerfile".into(),
        build_args: BTreeMap::new(),
        target: None,
        platforms: vec![platform.clone()],
        build_platform: Platform::host(),
        labels: BTreeMap::new(),
        context: &sel,
        resolved_images: resolved,
    })
    .expect("graph")
}

/// The context directory as chunk layers in `store` (what the client
/// uploads): here one chunk per top-level entry, in name order, so every
/// context of more than one file travels as several chunks.
fn context_layer(store: &ContentStore, dir: &Path) -> ContextBlob {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("read context")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    let mut chunks = Vec::new();
    for name in names {
        let part = tempfile::tempdir().expect("chunk dir");
        let copied = std::process::Command::new("cp")
            .arg("-a")
            .arg(dir.join(&name))
            .arg(part.path())
            .status()
            .expect("cp");
        assert!(copied.success());
        let info = create(store, part.path(), &CreateOptions::default()).expect("chunk");
        chunks.push(LayerRef::from(info));
    }
    ContextBlob { chunks }
}

/// A tiny image (one layer holding `/etc/hostname`) in `store`: its manifest
/// digest and config. Enough for jobs without RUN.
fn synthetic_image(store: &ContentStore, platform: &Platform) -> (Digest, ImageConfig) {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("etc")).expect("etc");
    std::fs::write(dir.path().join("etc/hostname"), b"base\n").expect("hostname");
    let layer =
        LayerRef::from(create(store, dir.path(), &CreateOptions::default()).expect("layer"));
    let (manifest, config) =
        export_image(store, platform, &Default::default(), None, &[layer]).expect("export");
    let config = ImageConfig::from_json(&store.read_bytes(&config, 1 << 20).expect("config"))
        .expect("config json");
    (manifest.digest, config)
}

/// The testkit's busybox image for `arch`, put into `store` (manifest,
/// config, layer): its manifest digest and config.
fn busybox_image(store: &ContentStore, images: &BaseImages, arch: &str) -> (Digest, ImageConfig) {
    let blob = |d: &str| {
        let hex = d.strip_prefix("sha256:").expect("sha256");
        std::fs::read(images.layout_dir().join("blobs/sha256").join(hex)).expect("layout blob")
    };
    for d in [
        images.manifest_digest(arch),
        images.config_digest(arch),
        images.layer_digest(arch),
    ] {
        store.put_bytes(&blob(d)).expect("put base blob");
    }
    let config = ImageConfig::from_json(&blob(images.config_digest(arch))).expect("config");
    (
        images.manifest_digest(arch).parse().expect("digest"),
        config,
    )
}

/// The job for `v`, with the results of its non-source inputs.
fn job_for(
    g: &BuildGraph,
    key: &Digest,
    results: &BTreeMap<Digest, VertexResult>,
    context: &ContextBlob,
) -> VertexJob {
    let v = g.vertex(key).expect("vertex").clone();
    let inputs: Vec<_> = v
        .inputs
        .iter()
        .map(|k| g.vertex(k).expect("input").clone())
        .collect();
    let input_results = inputs
        .iter()
        .filter_map(|i| results.get(&i.key).map(|r| (i.key.clone(), r.clone())))
        .collect();
    let reads_context = inputs.iter().any(|i| matches!(i.op, Op::Context(_)));
    VertexJob {
        vertex: v,
        inputs,
        input_results,
        context: reads_context.then(|| context.clone()),
        no_cache: false,
    }
}

/// Runs every dispatchable vertex of `g` in order, as a coordinator would,
/// checking that each result's blobs reached the coordinator's store.
/// Returns the results and the logs, by key.
async fn run_graph(
    s: &mut Session,
    store: &ContentStore,
    g: &BuildGraph,
    context: &ContextBlob,
) -> (BTreeMap<Digest, VertexResult>, BTreeMap<Digest, Vec<u8>>) {
    let mut results = BTreeMap::new();
    let mut logs = BTreeMap::new();
    for v in g.vertices() {
        if v.op.is_source() {
            continue;
        }
        let job = job_for(g, &v.key, &results, context);
        let ran = run_vertex(s, &v.key, encode(&job)).await;
        let r = ran
            .result
            .unwrap_or_else(|e| panic!("vertex {} failed: {e}", v.description));
        for d in result_blobs(store, &r).expect("result blobs") {
            assert!(
                store.contains(&d),
                "blob {d} of {} not uploaded",
                v.description
            );
        }
        results.insert(v.key.clone(), r);
        logs.insert(v.key.clone(), ran.logs);
    }
    (results, logs)
}

/// The content of `path` in a layer blob of `store`, if the layer has it.
fn file_in_layer(store: &ContentStore, layer: &LayerRef, path: &str) -> Option<Vec<u8>> {
    let mut ar = tar::Archive::new(open_layer(store, layer).expect("open layer"));
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("entry");
        let p = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        if p.trim_start_matches("./") == path {
            let mut out = Vec::new();
            e.read_to_end(&mut out).expect("read entry");
            return Some(out);
        }
    }
    None
}

fn vertex_of<'g>(g: &'g BuildGraph, kind: &str) -> &'g imgfarm_common::graph::Vertex {
    g.vertices()
        .into_iter()
        .find(|v| v.op.kind() == kind)
        .expect("vertex of kind")
}

// ---------------------------------------------------------------- in-process worker

struct InProcess {
    task: JoinHandle<Result<(), FarmWorkerError>>,
    stop: oneshot::Sender<()>,
    events: mpsc::UnboundedReceiver<WorkerEvent>,
}

fn start_in_process(mut opts: WorkerOptions) -> InProcess {
    let (tx, events) = mpsc::unbounded_channel();
    opts.events = Some(std::sync::Arc::new(move |e: &WorkerEvent| {
        let _ = tx.send(e.clone());
    }));
    opts.backoff_initial = Duration::from_millis(100);
    opts.backoff_max = Duration::from_secs(1);
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(run(opts, async {
        let _ = rx.await;
    }));
    InProcess { task, stop, events }
}

impl InProcess {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("worker did not stop")
            .expect("join")
            .expect("worker result");
    }

    async fn event(&mut self, pred: impl Fn(&WorkerEvent) -> bool) -> WorkerEvent {
        let wait = async {
            loop {
                let e = self.events.recv().await.expect("events ended");
                if pred(&e) {
                    return e;
                }
            }
        };
        tokio::time::timeout(SESSION_WAIT, wait)
            .await
            .expect("event not seen in time")
    }
}

struct Setup {
    _tmp: tempfile::TempDir,
    tls: TlsDir,
    coord: Coord,
    state: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().expect("tmp");
    let tls = make_farm(&tmp.path().join("tls"));
    let store = ContentStore::open(tmp.path().join("coordinator")).expect("coordinator store");
    let coord = Coord::start(
        tls.load(Role::Coordinator, None)
            .expect("coordinator creds"),
        store,
        "127.0.0.1:0".parse().expect("addr"),
    );
    let state = tmp.path().join("worker");
    Setup {
        _tmp: tmp,
        tls,
        coord,
        state,
    }
}

impl Setup {
    fn options(&self) -> WorkerOptions {
        let creds = self
            .tls
            .load(Role::Worker, Some("w1"))
            .expect("worker creds");
        WorkerOptions::new(self.coord.url(), creds, self.state.clone())
    }
}

// ---------------------------------------------------------------- tests: in process

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_announces_platforms_slots_and_complete_cache_keys() {
    let mut su = setup();
    // A result whose blob is in the worker's store, and one whose blob is not.
    let wstore = ContentStore::open(&su.state).expect("worker store");
    let cache = ResultCache::open(&su.state).expect("cache");
    let blob = wstore.put_bytes(b"some layer").expect("blob");
    let layer = |d: Digest| LayerRef {
        digest: d,
        diff_id: Digest::sha256_of(b"diff"),
        size: 10,
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
    };
    let (kept, lost) = (Digest::sha256_of(b"kept"), Digest::sha256_of(b"lost"));
    let with = |l: LayerRef| VertexResult {
        chain: vec![l],
        ..VertexResult::default()
    };
    cache.put(&kept, &with(layer(blob))).expect("put");
    cache
        .put(&lost, &with(layer(Digest::sha256_of(b"absent"))))
        .expect("put");

    let mut opts = su.options();
    opts.platforms_override = Some(vec![Platform::linux_arm64()]);
    opts.slots = 3;
    let mut w = start_in_process(opts);
    let mut s = su.coord.session().await;
    let Hello {
        name,
        role,
        native_platforms,
        emulated_platforms,
        slots,
        cache_summary,
        software,
        ..
    } = s.hello.clone();
    assert_eq!((name.as_str(), role), ("w1", Role::Worker));
    assert_eq!(native_platforms, vec!["linux/arm64".to_string()]);
    // The host runs amd64 natively: with --platforms it is not offered at all.
    assert!(
        !emulated_platforms.contains(&"linux/amd64".to_string()),
        "{emulated_platforms:?}"
    );
    assert_eq!(slots, 3);
    assert_eq!(cache_summary.keys, vec![kept.clone()]);
    assert_eq!(cache_summary.entries, 1);
    assert_eq!(cache_summary.bytes, b"some layer".len() as u64);
    assert!(software.starts_with("imgfarm "), "{software}");

    let line = w
        .event(|e| matches!(e, WorkerEvent::Connected { .. }))
        .await
        .to_string();
    assert!(
        line.starts_with(&format!(
            "worker w1 connected to {} (native linux/arm64; emulated ",
            su.coord.url()
        )),
        "{line}"
    );
    let h1 = next_heartbeat(&mut s).await;
    let h2 = next_heartbeat(&mut s).await;
    assert_eq!((h1.slots_in_use, h2.seq), (0, h1.seq + 1));
    w.stop().await;
    // The worker said goodbye on the way out.
    let bye = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.recv().await {
                Ok(Some(Message::Bye)) => return true,
                Ok(Some(_)) => continue,
                _ => return false,
            }
        }
    })
    .await
    .expect("no end of session");
    assert!(bye, "expected Bye from the worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_image_and_copy_jobs_and_serves_repeats_from_its_cache() {
    let mut su = setup();
    let amd64 = Platform::linux_amd64();
    let store = su.coord.store.clone();
    let image = synthetic_image(&store, &amd64);
    let ctx_dir = tempfile::tempdir().expect("ctx");
    std::fs::write(ctx_dir.path().join("a.txt"), b"from the context\n").expect("a.txt");
    let context = context_layer(&store, ctx_dir.path());
    let g = graph(
        "FROM busybox\nCOPY a.txt /a.txt\n",
        &amd64,
        (&image.0, &image.1),
        ctx_dir.path(),
    );
    let mut w = start_in_process(su.options());
    let mut s = su.coord.session().await;
    let (results, _) = run_graph(&mut s, &store, &g, &context).await;

    let copy = vertex_of(&g, "file");
    let copied = &results[&copy.key];
    let layer = copied.delta.first().expect("copy layer");
    assert_eq!(
        file_in_layer(&store, layer, "a.txt").as_deref(),
        Some(&b"from the context\n"[..])
    );
    // The base layer carried through the chain; the export names a manifest
    // whose config is in the coordinator's store too (checked by run_graph).
    assert_eq!(copied.chain.len(), 2);
    assert!(results[&vertex_of(&g, "export").key].manifest.is_some());
    // The context was unpacked once, by digest.
    assert!(su
        .state
        .join("contexts")
        .join(context.id().hex())
        .join("a.txt")
        .is_file());

    // The new result shows up in a heartbeat's cache summary (possibly one
    // that arrived while the jobs were awaited).
    let seen = take_summary(&s);
    let summary = tokio::time::timeout(Duration::from_secs(20), async {
        if let Some(c) = seen {
            return c;
        }
        loop {
            if let Some(c) = next_heartbeat(&mut s).await.cache_summary {
                return c;
            }
        }
    })
    .await
    .expect("no cache summary in heartbeats");
    assert!(summary.keys.contains(&copy.key), "{summary:?}");

    // The same job again: served from the worker's cache, same result.
    let job = job_for(&g, &copy.key, &results, &context);
    let again = run_vertex(&mut s, &copy.key, encode(&job)).await;
    assert_eq!(again.result.as_ref().ok(), Some(copied));
    let cached = w
        .event(
            |e| matches!(e, WorkerEvent::VertexDone { key, cached: true, .. } if *key == copy.key),
        )
        .await
        .to_string();
    assert!(cached.contains("(cached)"), "{cached}");

    // `--no-cache`: the same job runs again (same, reproducible result).
    let mut job = job_for(&g, &copy.key, &results, &context);
    job.no_cache = true;
    let rerun = run_vertex(&mut s, &copy.key, encode(&job)).await;
    assert_eq!(rerun.result.as_ref().ok(), Some(copied));
    let ran = w
        .event(
            |e| matches!(e, WorkerEvent::VertexDone { key, cached: false, .. } if *key == copy.key),
        )
        .await
        .to_string();
    assert!(!ran.contains("(cached)"), "{ran}");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_input_blob_fails_the_job_clearly() {
    let mut su = setup();
    let amd64 = Platform::linux_amd64();
    let store = su.coord.store.clone();
    let image = synthetic_image(&store, &amd64);
    let ctx_dir = tempfile::tempdir().expect("ctx");
    std::fs::write(ctx_dir.path().join("a.txt"), b"x").expect("a.txt");
    let context = context_layer(&store, ctx_dir.path());
    let g = graph(
        "FROM busybox\nCOPY a.txt /a.txt\n",
        &amd64,
        (&image.0, &image.1),
        ctx_dir.path(),
    );
    let base = vertex_of(&g, "image");
    let ghost = LayerRef {
        digest: Digest::sha256_of(b"never uploaded"),
        diff_id: Digest::sha256_of(b"diff"),
        size: 14,
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
    };
    let mut results = BTreeMap::new();
    results.insert(
        base.key.clone(),
        VertexResult {
            chain: vec![ghost.clone()],
            delta: vec![ghost.clone()],
            ..VertexResult::default()
        },
    );
    let copy = vertex_of(&g, "file");
    let job = job_for(&g, &copy.key, &results, &context);
    let w = start_in_process(su.options());
    let mut s = su.coord.session().await;
    let ran = run_vertex(&mut s, &copy.key, encode(&job)).await;
    let err = ran.result.expect_err("must fail");
    assert!(
        err.contains(&format!(
            "the coordinator does not have blob {} (the result of input {})",
            ghost.digest, base.key
        )),
        "{err}"
    );
    assert!(err.contains("the client must upload it"), "{err}");
    // Still connected: heartbeats go on.
    next_heartbeat(&mut s).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_job_fails_and_the_worker_stays_connected() {
    let mut su = setup();
    let amd64 = Platform::linux_amd64();
    let store = su.coord.store.clone();
    let image = synthetic_image(&store, &amd64);
    let ctx_dir = tempfile::tempdir().expect("ctx");
    let context = context_layer(&store, ctx_dir.path());
    let g = graph(
        "FROM busybox\n",
        &amd64,
        (&image.0, &image.1),
        ctx_dir.path(),
    );
    let w = start_in_process(su.options());
    let mut s = su.coord.session().await;
    let key = Digest::sha256_of(b"k");
    let ran = run_vertex(&mut s, &key, b"\x00not a job".to_vec()).await;
    let err = ran.result.expect_err("must fail");
    assert!(
        err.starts_with(&format!("cannot run vertex {key}: malformed vertex job: ")),
        "{err}"
    );
    // A refusal of one message (the coordinator ignores it) does not end the session.
    s.send(&Message::Refused("message ignored".into()))
        .await
        .expect("send");
    next_heartbeat(&mut s).await;
    // The same session still runs a good job.
    let base = vertex_of(&g, "image");
    let job = job_for(&g, &base.key, &BTreeMap::new(), &context);
    let ran = run_vertex(&mut s, &base.key, encode(&job)).await;
    let r = ran.result.expect("image job");
    assert_eq!(r.chain.len(), 1);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_coordinator_restarts() {
    let mut su = setup();
    let mut w = start_in_process(su.options());
    let s1 = su.coord.session().await;
    w.event(|e| matches!(e, WorkerEvent::Connected { .. }))
        .await;
    drop(s1);
    su.coord = su.coord.restart();
    let mut s2 = su.coord.session().await;
    w.event(|e| matches!(e, WorkerEvent::Disconnected { .. }))
        .await;
    w.event(|e| matches!(e, WorkerEvent::Connected { .. }))
        .await;
    assert_eq!(s2.hello.name, "w1");
    next_heartbeat(&mut s2).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_slots_are_refused() {
    let su = setup();
    let mut opts = su.options();
    opts.slots = 0;
    let err = start_in_process(opts)
        .task
        .await
        .expect("join")
        .expect_err("must fail");
    assert_eq!(
        err.to_string(),
        "invalid worker options: --slots must be at least 1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_of_another_name_is_refused_before_dialling() {
    let su = setup();
    let mut opts = su.options();
    opts.name = "w2".into();
    let w = start_in_process(opts);
    let err = w.task.await.expect("join").expect_err("must fail");
    assert_eq!(
        err.to_string(),
        "the certificate is for worker \"w1\", but this worker is named \"w2\""
    );
}

// ---------------------------------------------------------------- processes

/// `comm`, state and parent of a process, from `/proc/<pid>/stat` (the
/// fields after the last `)`, since `comm` may contain one).
fn proc_stat(pid: u32) -> Option<(String, char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, state, ppid))
}

/// `pid` and its ancestors, nearest first.
fn ancestry(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut p = pid;
    while let Some((_, _, ppid)) = proc_stat(p) {
        if ppid <= 1 || out.len() > 64 {
            break;
        }
        out.push(ppid);
        p = ppid;
    }
    out
}

/// Live (not zombie) processes below `root` whose name is `comm` (any name
/// when empty).
fn descendants_named(root: u32, comm: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<u32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| *p != root)
        .filter(|p| {
            proc_stat(*p)
                .is_some_and(|(c, state, _)| state != 'Z' && (comm.is_empty() || c == comm))
                && ancestry(*p).contains(&root)
        })
        .collect();
    out.sort_unstable();
    out
}

// ---------------------------------------------------------------- tests: rootless RUN

/// The worker binary running as the farm user, killed on drop.
struct WorkerProcess {
    child: Child,
    log: PathBuf,
    stdout: std::sync::mpsc::Receiver<String>,
    _dir: UserTempDir,
}

impl WorkerProcess {
    fn start(user: &FarmUser, tls: &TlsDir, coord: &str, platforms: Option<&str>) -> Self {
        let dir = user.tempdir().expect("user temp dir");
        let chown = |p: &Path| {
            if imgfarm_testkit::is_root() {
                std::os::unix::fs::chown(p, Some(user.uid()), Some(user.gid())).expect("chown");
            }
        };
        let tls_copy = dir.path().join("tls");
        std::fs::create_dir(&tls_copy).expect("tls copy");
        chown(&tls_copy);
        for f in ["ca.crt", "worker-w1.crt", "worker-w1.key"] {
            std::fs::copy(tls.path().join(f), tls_copy.join(f)).expect("copy tls file");
            chown(&tls_copy.join(f));
        }
        let state = dir.path().join("state");
        std::fs::create_dir(&state).expect("state");
        chown(&state);
        let log = dir.path().join("worker.log");
        let mut cmd = user.command(worker_bin());
        cmd.args(["--coordinator", coord, "--name", "w1", "--slots", "2"])
            .arg("--tls-dir")
            .arg(&tls_copy)
            .arg("--state")
            .arg(&state)
            .env("IMGFARM_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"));
        if let Some(p) = platforms {
            cmd.args(["--platforms", p]);
        }
        let mut child = cmd.spawn().expect("start the worker");
        let out = child.stdout.take().expect("stdout");
        let (tx, stdout) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        WorkerProcess {
            child,
            log,
            stdout,
            _dir: dir,
        }
    }

    fn connected_line(&self) -> String {
        self.stdout
            .recv_timeout(SESSION_WAIT)
            .expect("no connected line on stdout")
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("---- worker log ----\n{log}\n--------------------");
        }
    }
}

struct RunFixture {
    su: Setup,
    user: FarmUser,
    images: BaseImages,
    ctx_dir: tempfile::TempDir,
}

fn run_fixture(test: &str) -> Option<RunFixture> {
    let user = or_skip(test, FarmUser::get())?;
    let images = or_skip(test, BaseImages::build())?;
    let ctx_dir = tempfile::tempdir().expect("ctx");
    std::fs::write(ctx_dir.path().join("a.txt"), b"copied\n").expect("a.txt");
    Some(RunFixture {
        su: setup(),
        user,
        images,
        ctx_dir,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_a_rootless_graph_and_uploads_its_layers() {
    let Some(mut fx) = run_fixture("runs_a_rootless_graph_and_uploads_its_layers") else {
        return;
    };
    let amd64 = Platform::linux_amd64();
    let store = fx.su.coord.store.clone();
    let image = busybox_image(&store, &fx.images, "amd64");
    let context = context_layer(&store, fx.ctx_dir.path());
    let g = graph(
        "FROM busybox\nCOPY a.txt /a.txt\nRUN echo hi > /f && cat /a.txt && echo logged-line\n",
        &amd64,
        (&image.0, &image.1),
        fx.ctx_dir.path(),
    );
    let wp = WorkerProcess::start(&fx.user, &fx.su.tls, &fx.su.coord.url(), None);
    let mut s = fx.su.coord.session().await;
    let line = wp.connected_line();
    assert!(
        line.starts_with(&format!(
            "worker w1 connected to {} (native linux/amd64",
            fx.su.coord.url()
        )),
        "{line}"
    );
    let (results, logs) = run_graph(&mut s, &store, &g, &context).await;
    let run = vertex_of(&g, "exec");
    let layer = results[&run.key].delta.first().expect("RUN layer");
    assert_eq!(
        file_in_layer(&store, layer, "f").as_deref(),
        Some(&b"hi\n"[..])
    );
    let out = String::from_utf8_lossy(&logs[&run.key]).into_owned();
    assert!(out.contains("copied\nlogged-line"), "{out:?}");
    let export = &results[&vertex_of(&g, "export").key];
    let manifest = export.manifest.as_ref().expect("manifest");
    assert!(store.contains(&manifest.digest));

    // A failing RUN: its exit code and output come back, the session goes on.
    let g_fail = graph(
        "FROM busybox\nRUN echo about to fail && exit 3\n",
        &amd64,
        (&image.0, &image.1),
        fx.ctx_dir.path(),
    );
    let bad = vertex_of(&g_fail, "exec");
    let job = job_for(&g_fail, &bad.key, &results, &context);
    let ran = run_vertex(&mut s, &bad.key, encode(&job)).await;
    let err = ran.result.expect_err("RUN exit 3 must fail");
    assert!(err.contains("exit code: 3"), "{err}");
    assert!(
        String::from_utf8_lossy(&ran.logs).contains("about to fail"),
        "{:?}",
        ran.logs
    );

    // A long RUN cancelled: its processes are killed, the answer comes within
    // seconds, the slot is free at the next heartbeat, and no process of the
    // step is left under the worker.
    let g2 = graph(
        "FROM busybox\nRUN sleep 30\n",
        &amd64,
        (&image.0, &image.1),
        fx.ctx_dir.path(),
    );
    let slow = vertex_of(&g2, "exec");
    let job = job_for(&g2, &slow.key, &results, &context);
    let rv = RunVertex {
        build_id: "b2".into(),
        vertex_key: slow.key.clone(),
        platform: "linux/amd64".into(),
        emulated: false,
        op: encode(&job),
        inputs: vec![],
    };
    s.send(&Message::RunVertex(rv)).await.expect("send");
    let worker_pid = wp.child.id();
    let waited = std::time::Instant::now();
    let sleeper = loop {
        if let Some(p) = descendants_named(worker_pid, "sleep").first() {
            break *p;
        }
        assert!(
            waited.elapsed() < JOB_WAIT,
            "the RUN's sleep never started under worker {worker_pid}: {:?}",
            descendants_named(worker_pid, "")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let helper = ancestry(sleeper)
        .into_iter()
        .find(|p| proc_stat(*p).is_some_and(|(_, _, ppid)| ppid == worker_pid))
        .expect("the executor helper between the worker and the step");
    let t0 = std::time::Instant::now();
    s.send(&Message::CancelVertex {
        vertex_key: slow.key.clone(),
    })
    .await
    .expect("cancel");
    let done = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Message::VertexDone(d) = s.recv().await.expect("recv").expect("ended") {
                return d;
            }
        }
    })
    .await
    .expect("no answer to the cancel");
    let answered = t0.elapsed();
    assert_eq!(done.vertex_key, slow.key);
    assert_eq!(done.result, Err("cancelled".to_string()));
    assert!(
        answered < Duration::from_secs(5),
        "answered after {answered:?}"
    );
    let hb = next_heartbeat(&mut s).await;
    assert_eq!(hb.slots_in_use, 0, "the cancelled RUN still holds its slot");
    assert_eq!(descendants_named(worker_pid, ""), Vec::<u32>::new());
    assert!(
        proc_stat(helper).is_none_or(|(_, _, ppid)| ppid != worker_pid),
        "executor helper {helper} is still a child of the worker"
    );
    assert!(
        proc_stat(sleeper).is_none_or(|(_, state, _)| state == 'Z'),
        "the step's sleep {sleeper} is still alive"
    );
    let tmp = wp._dir.path().join("state").join("tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert_eq!(left, Vec::<PathBuf>::new(), "the cancelled RUN's work dirs");
    eprintln!("cancel answered after {answered:?}");
    drop(wp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_arm64_worker_on_an_amd64_host_still_emulates() {
    let test = "an_arm64_worker_on_an_amd64_host_still_emulates";
    let Some(mut fx) = run_fixture(test) else {
        return;
    };
    let arm64 = Platform::linux_arm64();
    if Platform::host() != Platform::linux_amd64() {
        imgfarm_testkit::skip(test, "the host is not amd64");
        return;
    }
    if let Err(e) = imgfarm_worker::emulation::resolve(&arm64) {
        imgfarm_testkit::skip(test, &e.to_string());
        return;
    }
    let store = fx.su.coord.store.clone();
    let image = busybox_image(&store, &fx.images, "arm64");
    let context = context_layer(&store, fx.ctx_dir.path());
    let g = graph(
        "FROM busybox\nRUN uname -m > /arch\n",
        &arm64,
        (&image.0, &image.1),
        fx.ctx_dir.path(),
    );
    let wp = WorkerProcess::start(
        &fx.user,
        &fx.su.tls,
        &fx.su.coord.url(),
        Some("linux/arm64"),
    );
    let mut s = fx.su.coord.session().await;
    assert_eq!(s.hello.native_platforms, vec!["linux/arm64".to_string()]);
    let line = wp.connected_line();
    assert!(line.contains("(native linux/arm64; emulated"), "{line}");
    let (results, _) = run_graph(&mut s, &store, &g, &context).await;
    let layer = results[&vertex_of(&g, "exec").key]
        .delta
        .first()
        .expect("RUN layer")
        .clone();
    assert_eq!(
        file_in_layer(&store, &layer, "arch").as_deref(),
        Some(&b"aarch64\n"[..])
    );
    drop(wp);
}

// ---------------------------------------------------------------- measurements

/// Round trips of jobs without RUN over loopback QUIC (in-process worker):
/// fresh image+COPY+export graphs and repeated COPY jobs served from the
/// worker's cache. `cargo test -p imgfarm-e2e --test farm_worker -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run by hand"]
async fn bench_job_round_trips() {
    let mut su = setup();
    let amd64 = Platform::linux_amd64();
    let store = su.coord.store.clone();
    let image = synthetic_image(&store, &amd64);
    let w = start_in_process(su.options());
    let mut s = su.coord.session().await;
    let rounds = 20;
    let mut vertices = 0;
    let t0 = std::time::Instant::now();
    let mut last = None;
    for i in 0..rounds {
        let ctx_dir = tempfile::tempdir().expect("ctx");
        std::fs::write(ctx_dir.path().join("a.txt"), format!("round {i}\n")).expect("a.txt");
        let context = context_layer(&store, ctx_dir.path());
        let g = graph(
            "FROM busybox\nCOPY a.txt /a.txt\n",
            &amd64,
            (&image.0, &image.1),
            ctx_dir.path(),
        );
        let mut results = BTreeMap::new();
        for v in g.vertices().into_iter().filter(|v| !v.op.is_source()) {
            let job = job_for(&g, &v.key, &results, &context);
            let t = std::time::Instant::now();
            let r = run_vertex(&mut s, &v.key, encode(&job))
                .await
                .result
                .expect("job");
            if i == rounds - 1 {
                eprintln!(
                    "{}: {:.2} ms",
                    v.op.kind(),
                    t.elapsed().as_secs_f64() * 1000.0
                );
            }
            results.insert(v.key.clone(), r);
        }
        vertices += results.len();
        last = Some((g, results, context, ctx_dir));
    }
    let fresh = t0.elapsed() / u32::try_from(vertices).expect("count");
    let (g, results, context, _ctx_dir) = last.expect("a round");
    let copy = vertex_of(&g, "file");
    let job = encode(&job_for(&g, &copy.key, &results, &context));
    let n = 50u32;
    let t1 = std::time::Instant::now();
    for _ in 0..n {
        run_vertex(&mut s, &copy.key, job.clone())
            .await
            .result
            .expect("cached copy");
    }
    let cached = t1.elapsed() / n;
    eprintln!(
        "fresh jobs (image/COPY/export, {vertices} vertices): {:.2} ms per vertex; \
         cached COPY: {:.2} ms per job",
        fresh.as_secs_f64() * 1000.0,
        cached.as_secs_f64() * 1000.0
    );
    w.stop().await;
}
