//! Scripted peers for the coordinator service tests: a farm directory, raw
//! QUIC control sessions (preamble, hello, welcome by hand), blob uploads,
//! a scripted worker that answers `RunVertex` with results whose blobs it
//! put first, and build definitions.
#![allow(dead_code)]

use imgfarm_common::farm::{
    self, ContextBlob, FarmDefinition, FarmTarget, LayerRef, OutputSpec, VertexJob, VertexResult,
};
use imgfarm_common::graph::image_config::StageConfig;
use imgfarm_common::graph::op::{ContextOp, ExecOp, ExportOp, ImageOp, Op};
use imgfarm_common::graph::Vertex;
use imgfarm_common::identity::{
    client_config, init_farm, issue_leaf, write_new_files, Credentials, FileSpec, InitOptions,
    Role, TlsDir, Validity,
};
use imgfarm_common::oci::image::document::{descriptor_for, manifest_to_json, new_manifest};
use imgfarm_common::oci::media_types::{OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};
use imgfarm_common::oci::store::RefDescriptor;
use imgfarm_common::oci::Digest;
use imgfarm_common::platform::Platform;
use imgfarm_common::proto::io::{expect_msg, read_msg, read_preamble, write_msg, write_preamble};
use imgfarm_common::proto::{
    BlobHeader, BlobPutReply, BlobPutResult, CacheSummary, Heartbeat, Hello, Message, RunVertex,
    StreamOpen, Submit, VertexDone, VertexLog, MAX_CONTROL_FRAME, PROTOCOL_VERSION,
};
use imgfarm_coordinator::service::{Service, ServiceOptions};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Writes a farm (CA, coordinator, the workers and clients named) into `dir`.
pub fn make_farm(dir: &Path, workers: &[&str], clients: &[&str]) -> TlsDir {
    std::fs::create_dir_all(dir).unwrap();
    let (ca, coord) = init_farm(&InitOptions::default()).unwrap();
    let mut leaves = vec![coord];
    for w in workers {
        leaves.push(issue_leaf(&ca, Role::Worker, w, &[], Validity::default_leaf()).unwrap());
    }
    for c in clients {
        leaves.push(issue_leaf(&ca, Role::Client, c, &[], Validity::default_leaf()).unwrap());
    }
    let mut files = vec![FileSpec {
        path: dir.join("ca.crt"),
        contents: ca.cert_pem.clone(),
        mode: 0o644,
    }];
    for leaf in leaves {
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
    write_new_files(&files, false).unwrap();
    TlsDir::new(dir)
}

/// Test settings: fast heartbeats, long timeouts unless a test shortens them.
pub fn options(tls: &TlsDir, state: &Path) -> ServiceOptions {
    let creds = tls.load(Role::Coordinator, None).unwrap();
    let mut o = ServiceOptions::new("127.0.0.1:0".parse().unwrap(), creds, state);
    o.heartbeat_interval = Duration::from_millis(200);
    o.heartbeat_timeout = Duration::from_secs(30);
    o.no_candidate_grace = Duration::from_secs(30);
    o.startup_grace = Duration::ZERO;
    o
}

pub async fn start(opts: ServiceOptions) -> Service {
    Service::start(opts).await.unwrap()
}

const WAIT: Duration = Duration::from_secs(20);

/// A raw control session.
pub struct Peer {
    pub conn: quinn::Connection,
    send: quinn::SendStream,
    /// Messages read by a reader task (`None`: the session ended), so
    /// waiting for one can be interrupted by a heartbeat safely.
    inbox: tokio::sync::mpsc::UnboundedReceiver<Option<Message>>,
    /// The reader task reads only while this is true.
    reading: tokio::sync::watch::Sender<bool>,
    role: Role,
    /// Workers send a heartbeat at this interval while they wait.
    pub heartbeat: Option<Duration>,
    seq: u64,
}

pub fn worker_hello(name: &str, native: &[&str], emulated: &[&str], slots: u32) -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        role: Role::Worker,
        name: name.into(),
        software: "scripted".into(),
        native_platforms: native.iter().map(|s| s.to_string()).collect(),
        emulated_platforms: emulated.iter().map(|s| s.to_string()).collect(),
        slots,
        cache_summary: CacheSummary::default(),
        entitlements: Default::default(),
    }
}

pub fn client_hello(name: &str) -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        role: Role::Client,
        name: name.into(),
        software: "scripted".into(),
        native_platforms: vec![],
        emulated_platforms: vec![],
        slots: 0,
        cache_summary: CacheSummary::default(),
        entitlements: Default::default(),
    }
}

/// Dials like a real worker or client: the farm's socket buffers, socket
/// runtime and transport settings (windows, keep-alive).
async fn dial(addr: SocketAddr, creds: &Credentials) -> quinn::Connection {
    use imgfarm_coordinator::server::{
        bind_udp, dialer_transport_config, endpoint_config, runtime,
    };
    let tls = client_config(creds).unwrap();
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    cfg.transport_config(Arc::new(dialer_transport_config()));
    let socket = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut ep = quinn::Endpoint::new(endpoint_config(), None, socket, runtime()).unwrap();
    ep.set_default_client_config(cfg);
    ep.connect(addr, "127.0.0.1").unwrap().await.unwrap()
}

async fn open(
    conn: &quinn::Connection,
    role: Role,
    first: &StreamOpen,
) -> (quinn::SendStream, quinn::RecvStream) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    write_preamble(&mut send, PROTOCOL_VERSION).await.unwrap();
    write_msg(&mut send, first).await.unwrap();
    read_preamble(&mut recv, PROTOCOL_VERSION, Role::Coordinator, role)
        .await
        .unwrap();
    (send, recv)
}

impl Peer {
    /// Dials, opens the control stream, waits for the welcome.
    pub async fn connect(addr: SocketAddr, tls: &TlsDir, hello: Hello) -> Peer {
        let creds = tls.load(hello.role, Some(&hello.name)).unwrap();
        let conn = dial(addr, &creds).await;
        let worker = hello.role == Role::Worker;
        let role = hello.role;
        let (send, mut recv) = open(&conn, role, &StreamOpen::Control(hello)).await;
        let welcome: Message = expect_msg(&mut recv, MAX_CONTROL_FRAME, "welcome")
            .await
            .unwrap();
        let Message::Welcome(w) = welcome else {
            panic!("expected a welcome, got {welcome:?}")
        };
        let (tx, inbox) = tokio::sync::mpsc::unbounded_channel();
        let (reading, mut may_read) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            loop {
                if may_read.wait_for(|r| *r).await.is_err() {
                    break;
                }
                let m = read_msg::<_, Message>(&mut recv, MAX_CONTROL_FRAME)
                    .await
                    .ok()
                    .flatten();
                let end = m.is_none();
                if tx.send(m).is_err() || end {
                    break;
                }
            }
        });
        Peer {
            conn,
            send,
            inbox,
            reading,
            role,
            heartbeat: worker.then(|| Duration::from_millis(w.heartbeat_interval_ms)),
            seq: 0,
        }
    }

    /// Stops reading the control stream (after the message being read, if
    /// any): the coordinator's messages pile up as for a stalled peer.
    pub fn pause_reading(&self) {
        let _ = self.reading.send(false);
    }

    pub async fn send(&mut self, m: &Message) {
        write_msg(&mut self.send, m).await.unwrap();
    }

    /// The next message (heartbeating meanwhile when a worker); `None`
    /// when the coordinator closed the session.
    pub async fn next(&mut self) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let beat = self.heartbeat.unwrap_or(WAIT);
            tokio::select! {
                m = self.inbox.recv() => return m.flatten(),
                _ = tokio::time::sleep(beat) => {
                    if self.heartbeat.is_some() {
                        self.seq += 1;
                        let hb = Message::Heartbeat(Heartbeat { seq: self.seq, slots_in_use: 0, cache_summary: None });
                        let _ = write_msg(&mut self.send, &hb).await;
                    }
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no message within {WAIT:?}"
            );
        }
    }

    /// Messages until one matches `stop`; returns all of them, `stop` last.
    pub async fn until(&mut self, stop: impl Fn(&Message) -> bool) -> Vec<Message> {
        let mut out = Vec::new();
        loop {
            let m = self.next().await.expect("session closed early");
            let done = stop(&m);
            out.push(m);
            if done {
                return out;
            }
        }
    }

    /// Uploads `bytes` as a blob over its own stream.
    pub async fn put_blob(&self, bytes: &[u8]) -> BlobHeader {
        let header = BlobHeader {
            digest: Digest::sha256_of(bytes),
            size: bytes.len() as u64,
        };
        let (mut send, mut recv) =
            open(&self.conn, self.role, &StreamOpen::BlobPut(header.clone())).await;
        let reply: BlobPutReply = expect_msg(&mut recv, MAX_CONTROL_FRAME, "put reply")
            .await
            .unwrap();
        match reply {
            BlobPutReply::Present => return header,
            BlobPutReply::Send => {}
            BlobPutReply::Refused(r) => panic!("blob refused: {r}"),
        }
        tokio::io::AsyncWriteExt::write_all(&mut send, bytes)
            .await
            .unwrap();
        let _ = send.finish();
        let r: BlobPutResult = expect_msg(&mut recv, MAX_CONTROL_FRAME, "put result")
            .await
            .unwrap();
        assert_eq!(r, BlobPutResult::Stored);
        header
    }
}

impl Peer {
    /// Offers a blob under `header` and, when asked, sends `bytes` whatever
    /// they are (a lying peer): the coordinator's reply and, if the bytes
    /// were sent, its verdict (`None` when the stream ended first).
    pub async fn put_raw_blob(
        &self,
        header: &BlobHeader,
        bytes: &[u8],
    ) -> (BlobPutReply, Option<BlobPutResult>) {
        let (mut send, mut recv) =
            open(&self.conn, self.role, &StreamOpen::BlobPut(header.clone())).await;
        let reply: BlobPutReply = expect_msg(&mut recv, MAX_CONTROL_FRAME, "put reply")
            .await
            .unwrap();
        if reply != BlobPutReply::Send {
            return (reply, None);
        }
        let _ = tokio::io::AsyncWriteExt::write_all(&mut send, bytes).await;
        let _ = send.finish();
        let verdict = expect_msg::<_, BlobPutResult>(&mut recv, MAX_CONTROL_FRAME, "put result")
            .await
            .ok();
        (reply, verdict)
    }
}

// ---- definitions --------------------------------------------------------

/// A two-platform-capable build: per platform, base image → RUN (reading
/// the context) → export. Returns the definition and the blobs the client
/// must upload (context layer, base manifests).
pub struct TestBuild {
    pub definition: FarmDefinition,
    pub uploads: Vec<Vec<u8>>,
}

pub fn exec(p: &Platform, inputs: Vec<Digest>, cmd: &str) -> Vertex {
    Vertex::new(
        Some(p.clone()),
        Op::Exec(ExecOp {
            root: Some(0),
            args: vec!["/bin/sh".into(), "-c".into(), cmd.into()],
            env: vec![],
            cwd: "/".into(),
            user: String::new(),
            mounts: vec![],
            network: Default::default(),
            security: Default::default(),
        }),
        inputs,
        format!("[{p} 2/2] RUN {cmd}"),
        2,
    )
}

pub fn test_build(platforms: &[&str], cmd: &str) -> TestBuild {
    test_build_with(platforms, cmd, None)
}

/// [`test_build`] whose RUN also reads `extra` (a source vertex, e.g. an
/// `ADD URL` download).
pub fn test_build_with(platforms: &[&str], cmd: &str, extra: Option<Vertex>) -> TestBuild {
    // The context as two chunks, as a client sends a larger one.
    let chunks: Vec<Vec<u8>> = (1..=2)
        .map(|i| format!("context chunk {i} for {cmd}").into_bytes())
        .collect();
    let chunk_refs: Vec<LayerRef> = chunks
        .iter()
        .map(|c| LayerRef {
            digest: Digest::sha256_of(c),
            diff_id: Digest::sha256_of(b"diff"),
            size: c.len() as u64,
            media_type: OCI_LAYER_GZIP.into(),
        })
        .collect();
    let ctx = Vertex::new(
        None,
        Op::Context(ContextOp {
            sources: vec![".".into()],
            excludes: vec![],
            selection: Digest::sha256_of(&chunks.concat()),
        }),
        vec![],
        "[internal] load build context".into(),
        0,
    );
    let mut vertices = vec![ctx.clone()];
    vertices.extend(extra.clone());
    let mut targets = Vec::new();
    let mut uploads = chunks;
    for p in platforms {
        let plat: Platform = p.parse().unwrap();
        let base_manifest = format!("base manifest {p}").into_bytes();
        let img = Vertex::new(
            Some(plat.clone()),
            Op::Image(ImageOp {
                reference: "docker.io/library/busybox:1".into(),
                digest: Some(Digest::sha256_of(&base_manifest)),
            }),
            vec![],
            format!("[{p} 1/2] FROM busybox"),
            1,
        );
        uploads.push(base_manifest);
        let mut run_inputs = vec![img.key.clone(), ctx.key.clone()];
        if let Some(x) = &extra {
            run_inputs.push(x.key.clone());
        }
        let run = exec(&plat, run_inputs, cmd);
        let export = Vertex::new(
            Some(plat.clone()),
            Op::Export(Box::new(ExportOp {
                stage: "final".into(),
                config: StageConfig::default(),
                base_image: Some(0),
            })),
            vec![img.key.clone(), run.key.clone()],
            format!("[{p}] exporting"),
            0,
        );
        targets.push(FarmTarget {
            platform: p.to_string(),
            export: export.key.clone(),
        });
        vertices.extend([img, run, export]);
    }
    TestBuild {
        definition: FarmDefinition {
            vertices,
            targets,
            context: Some(ContextBlob { chunks: chunk_refs }),
            title: format!("test {cmd}"),
        },
        uploads,
    }
}

/// A client that uploaded `b`'s blobs and submitted it; returns the build id.
pub async fn submit(client: &mut Peer, b: &TestBuild, output: &OutputSpec) -> String {
    for u in &b.uploads {
        client.put_blob(u).await;
    }
    let platforms = b
        .definition
        .targets
        .iter()
        .map(|t| t.platform.clone())
        .collect();
    client
        .send(&Message::Submit(Submit {
            platforms,
            definition: farm::encode(&b.definition),
            context: vec![],
            output: farm::encode(output),
            reattach: None,
        }))
        .await;
    match client.next().await {
        Some(Message::Accepted { build_id }) => build_id,
        other => panic!("expected Accepted, got {other:?}"),
    }
}

pub fn is_finished(m: &Message) -> bool {
    matches!(m, Message::BuildFinished(_))
}

// ---- scripted worker ----------------------------------------------------

/// What a scripted worker did for one job.
#[derive(Debug, Clone)]
pub struct Ran {
    pub run: RunVertex,
    pub job: VertexJob,
    pub result: VertexResult,
}

/// Makes a result for `job` and puts its blobs: a layer per vertex, and
/// for an export vertex a config and a manifest naming that layer.
pub async fn produce(w: &Peer, run: &RunVertex) -> (VertexJob, VertexResult) {
    let job: VertexJob = farm::decode(&run.op, "job").unwrap();
    let layer = format!("layer of {}", job.vertex.key).into_bytes();
    let lh = w.put_blob(&layer).await;
    let lref = LayerRef {
        digest: lh.digest.clone(),
        diff_id: Digest::sha256_of(b"diff"),
        size: lh.size,
        media_type: OCI_LAYER_GZIP.into(),
    };
    let mut r = VertexResult {
        chain: vec![lref.clone()],
        delta: vec![lref],
        ..VertexResult::default()
    };
    if let Op::Export(_) = &job.vertex.op {
        let plat = job.vertex.platform.clone().unwrap();
        let config = format!(
            "{{\"architecture\":\"{}\",\"os\":\"{}\",\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[]}}}}",
            plat.architecture, plat.os
        )
        .into_bytes();
        w.put_blob(&config).await;
        let m = new_manifest(
            descriptor_for(OCI_CONFIG, &config),
            vec![descriptor_for(OCI_LAYER_GZIP, &layer)],
            &BTreeMap::new(),
        );
        let bytes = manifest_to_json(&m).unwrap();
        let mh = w.put_blob(&bytes).await;
        r.manifest = Some(RefDescriptor::new(OCI_MANIFEST, mh.digest, mh.size));
    }
    (job, r)
}

/// Answers `run` with `result`.
pub async fn answer(w: &mut Peer, run: &RunVertex, result: Result<&VertexResult, &str>) {
    w.send(&Message::VertexDone(VertexDone {
        vertex_key: run.vertex_key.clone(),
        result: result.map(farm::encode).map_err(|e| e.to_string()),
        duration_ms: 5,
    }))
    .await;
}

/// Serves jobs until `count` ran; returns them.
pub async fn serve(w: &mut Peer, count: usize) -> Vec<Ran> {
    let mut out = Vec::new();
    while out.len() < count {
        match w
            .next()
            .await
            .expect("coordinator closed the worker session")
        {
            Message::RunVertex(run) => {
                let (job, result) = produce(w, &run).await;
                w.send(&Message::VertexLog(VertexLog {
                    vertex_key: run.vertex_key.clone(),
                    stream: 1,
                    data: format!("output of {}\n", job.vertex.description).into_bytes(),
                }))
                .await;
                answer(w, &run, Ok(&result)).await;
                out.push(Ran { run, job, result });
            }
            Message::CancelVertex { .. } => {}
            other => panic!("worker got {other:?}"),
        }
    }
    out
}

/// The next `RunVertex` (skipping nothing else silently: panics on others).
pub async fn next_run(w: &mut Peer) -> RunVertex {
    match w.next().await {
        Some(Message::RunVertex(r)) => r,
        other => panic!("expected RunVertex, got {other:?}"),
    }
}
