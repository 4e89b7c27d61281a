//! `imgfarm build --farm` against a scripted coordinator: the real QUIC
//! endpoint (`imgfarm_coordinator::server::Server`, mutual TLS, blob
//! streams into a real content store) driven by a test script instead of
//! the scheduler. The client is the real binary.
//!
//! Checked: the context chunks are uploaded before Submit; progress lines
//! name the worker and emulation; the result is downloaded and exported
//! (local files, a named image, metadata with the build id); a failed
//! vertex gives `ERROR: failed to solve` and exit 1; Ctrl-C sends Cancel
//! and exits 130; a dropped connection is re-attached by build id.

use assert_cmd::Command;
use imgfarm_common::farm::{decode, FarmDefinition, OutputSpec};
use imgfarm_common::graph::op::Op;
use imgfarm_common::identity::{Role, TlsDir};
use imgfarm_common::oci::media_types;
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::proto::{
    BlobHeader, BuildFinished, BuiltManifest, Message, VertexFinished, VertexLog, VertexStarted,
};
use imgfarm_coordinator::server::{Server, ServerEvent, ServerOptions, Session};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Script {
    Succeed,
    Fail,
    WaitForCancel,
    DropThenReattach,
    PushOnly,
    Refuse,
}

const BUILD_ID: &str = "b-test-1";

struct Farm {
    tmp: tempfile::TempDir,
    addr: String,
    seen: mpsc::Receiver<String>,
}

fn imgfarm(tmp: &Path) -> Command {
    let mut c = Command::cargo_bin("imgfarm").unwrap();
    c.arg("--state")
        .arg(tmp.join("state"))
        .env("HOME", tmp)
        .env("XDG_CONFIG_HOME", tmp.join("xdg"))
        .env("DOCKER_CONFIG", tmp.join("docker"))
        .env_remove("IMGFARM_FARM")
        .env_remove("IMGFARM_TLS_DIR")
        .env_remove("IMGFARM_STATE")
        .timeout(Duration::from_secs(90));
    c
}

impl Farm {
    fn start(script: Script) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("farm");
        imgfarm(tmp.path())
            .args(["farm", "init", "--dir"])
            .arg(&dir)
            .assert()
            .success();
        imgfarm(tmp.path())
            .args(["farm", "issue", "--client", "alice", "--dir"])
            .arg(&dir)
            .assert()
            .success();
        let ctx = tmp.path().join("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY hello.txt /\n").unwrap();
        std::fs::write(ctx.join("hello.txt"), "hello from the farm\n").unwrap();
        std::fs::write(ctx.join("ignored.txt"), "never sent\n").unwrap();
        std::fs::write(ctx.join(".dockerignore"), "ignored.txt\n").unwrap();

        let creds = TlsDir::new(&dir).load(Role::Coordinator, None).unwrap();
        let store = ContentStore::open(tmp.path().join("coordinator")).unwrap();
        let (addr_tx, addr_rx) = mpsc::channel();
        let (seen_tx, seen) = mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let opts = ServerOptions::new("127.0.0.1:0".parse().unwrap(), creds, store.clone());
                let mut server = Server::bind(opts).unwrap();
                addr_tx.send(server.local_addr().unwrap()).unwrap();
                // Sessions are served concurrently, as the real coordinator does.
                let def: Arc<Mutex<Option<FarmDefinition>>> = Arc::default();
                while let Some(ev) = server.next_event().await {
                    let ServerEvent::Session(s) = ev else {
                        continue;
                    };
                    let (store, def, seen) = (store.clone(), def.clone(), seen_tx.clone());
                    tokio::spawn(async move {
                        let log = move |m: String| {
                            let _ = seen.send(m);
                        };
                        serve(*s, script, &store, &def, &log).await;
                    });
                }
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Self {
            tmp,
            addr: format!("quic://{addr}"),
            seen,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn build(&self) -> Command {
        let mut c = imgfarm(self.tmp.path());
        c.arg("build")
            .arg("--farm")
            .arg(&self.addr)
            .arg("--tls-dir")
            .arg(self.path("farm"))
            .args(["--platform", "linux/amd64", "--progress", "plain"]);
        c
    }

    fn seen(&self) -> Vec<String> {
        self.seen.try_iter().collect()
    }
}

async fn recv(s: &mut Session) -> Option<Message> {
    tokio::time::timeout(Duration::from_secs(60), s.recv())
        .await
        .ok()
        .and_then(|r| r.ok())
        .flatten()
}

/// The image a worker would have built: the context chunks themselves, with
/// a config naming their diff_ids, as an amd64 manifest in the coordinator's
/// store.
fn result_image(store: &ContentStore, def: &FarmDefinition) -> BuiltManifest {
    let chunks = &def.context.as_ref().expect("the context was sent").chunks;
    let diff_ids: Vec<&str> = chunks.iter().map(|l| l.diff_id.as_str()).collect();
    let layers: Vec<serde_json::Value> = chunks
        .iter()
        .map(|l| serde_json::json!({"mediaType": l.media_type, "digest": l.digest.as_str(), "size": l.size}))
        .collect();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = store.put_bytes(&config).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_MANIFEST,
        "config": {"mediaType": media_types::OCI_CONFIG, "digest": config_digest.as_str(), "size": config.len()},
        "layers": layers,
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let digest = store.put_bytes(&manifest).unwrap();
    BuiltManifest {
        platform: "linux/amd64".into(),
        manifest: BlobHeader {
            digest,
            size: manifest.len() as u64,
        },
        media_type: media_types::OCI_MANIFEST.into(),
    }
}

fn copy_key(def: &FarmDefinition) -> imgfarm_common::oci::Digest {
    def.vertices
        .iter()
        .find(|v| matches!(v.op, Op::File(_)))
        .expect("a COPY vertex")
        .key
        .clone()
}

async fn finish_ok(s: &mut Session, store: &ContentStore, def: &FarmDefinition) {
    let m = result_image(store, def);
    let fin = BuildFinished {
        build_id: BUILD_ID.into(),
        result: Ok(vec![m.clone()]),
        index: Some(m.manifest.clone()),
        pushed: vec![],
    };
    s.send(&Message::BuildFinished(fin)).await.unwrap();
}

async fn serve(
    mut s: Session,
    script: Script,
    store: &ContentStore,
    def: &Mutex<Option<FarmDefinition>>,
    log: &(dyn Fn(String) + Send + Sync),
) {
    let Some(Message::Submit(sub)) = recv(&mut s).await else {
        log("no submit".into());
        return;
    };
    let output: OutputSpec = decode(&sub.output, "output").unwrap();
    log(format!(
        "output push={:?} insecure={:?} no_cache={}",
        output.push, output.insecure, output.no_cache
    ));
    for c in &output.credentials {
        log(format!("credential {} {} {}", c.host, c.username, c.secret));
    }
    if script == Script::Refuse {
        let why = match &sub.reattach {
            Some(id) => format!("unknown build {id}: this coordinator has no record of it"),
            None => "missing blob sha256:00 — upload it first".to_string(),
        };
        s.send(&Message::Refused(why)).await.unwrap();
        while recv(&mut s).await.is_some() {}
        return;
    }
    if let Some(id) = &sub.reattach {
        log(format!("reattach {id}"));
        s.send(&Message::Accepted {
            build_id: id.clone(),
        })
        .await
        .unwrap();
        let d = def.lock().unwrap().clone().unwrap();
        let key = copy_key(&d);
        s.send(&Message::VertexFinished(VertexFinished {
            vertex_key: key,
            error: None,
            cached: false,
            duration_ms: 5,
        }))
        .await
        .unwrap();
        finish_ok(&mut s, store, &d).await;
        while recv(&mut s).await.is_some() {}
        return;
    }
    let d: FarmDefinition = decode(&sub.definition, "definition").unwrap();
    d.validate().unwrap();
    let ctx = d.context.as_ref().expect("context blob");
    log(format!(
        "submit context_present={} headers={}",
        ctx.chunks.iter().all(|l| store.contains(&l.digest)),
        sub.context.len()
    ));
    *def.lock().unwrap() = Some(d.clone());
    s.send(&Message::Accepted {
        build_id: BUILD_ID.into(),
    })
    .await
    .unwrap();
    let key = copy_key(&d);
    s.send(&Message::VertexStarted(VertexStarted {
        vertex_key: key.clone(),
        worker: "arm1".into(),
        emulated: true,
    }))
    .await
    .unwrap();
    s.send(&Message::VertexLog(VertexLog {
        vertex_key: key.clone(),
        stream: 1,
        data: b"hello from arm1\n".to_vec(),
    }))
    .await
    .unwrap();
    match script {
        Script::Succeed => {
            s.send(&Message::VertexFinished(VertexFinished {
                vertex_key: key,
                error: None,
                cached: false,
                duration_ms: 5,
            }))
            .await
            .unwrap();
            finish_ok(&mut s, store, &d).await;
            while recv(&mut s).await.is_some() {}
        }
        Script::Fail => {
            s.send(&Message::VertexFinished(VertexFinished {
                vertex_key: key,
                error: Some("process exited with code 2".into()),
                cached: false,
                duration_ms: 5,
            }))
            .await
            .unwrap();
            s.send(&Message::BuildFinished(BuildFinished {
                build_id: BUILD_ID.into(),
                result: Err("vertex failed: process exited with code 2".into()),
                index: None,
                pushed: vec![],
            }))
            .await
            .unwrap();
            while recv(&mut s).await.is_some() {}
        }
        Script::WaitForCancel => loop {
            match recv(&mut s).await {
                Some(Message::Cancel { build_id }) => {
                    log(format!("cancel {build_id}"));
                    s.send(&Message::BuildFinished(BuildFinished {
                        build_id,
                        result: Err("cancelled by the client".into()),
                        index: None,
                        pushed: vec![],
                    }))
                    .await
                    .unwrap();
                }
                Some(_) => {}
                None => break,
            }
        },
        Script::PushOnly => {
            let m = result_image(store, &d);
            let fin = BuildFinished {
                build_id: BUILD_ID.into(),
                result: Ok(vec![m.clone()]),
                index: Some(m.manifest.clone()),
                pushed: output.push.clone(),
            };
            s.send(&Message::BuildFinished(fin)).await.unwrap();
            while let Some(m) = recv(&mut s).await {
                log(format!("after finish: {m:?}"));
            }
        }
        Script::Refuse => {}
        Script::DropThenReattach => {
            // Long enough for the client to read what was sent.
            tokio::time::sleep(Duration::from_millis(500)).await;
            log("dropping".into());
            s.close("coordinator restarting");
        }
    }
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_farm_build_is_exported_like_a_local_one() {
    let farm = Farm::start(Script::Succeed);
    let out_dir = farm.path("out");
    let meta = farm.path("meta.json");
    let out = farm
        .build()
        .args(["-t", "farmtest:1", "-o", "type=image", "-o"])
        .arg(format!("type=local,dest={}", out_dir.display()))
        .arg("--metadata-file")
        .arg(&meta)
        .arg(farm.path("ctx"))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("build id: {BUILD_ID}")), "{err}");
    assert!(
        err.contains("COPY hello.txt / (worker arm1, emulated)"),
        "{err}"
    );
    assert!(err.contains("hello from arm1"), "{err}");
    // What moved: one context chunk (nothing was on the coordinator yet).
    assert!(
        err.contains("[internal] uploading to the farm: build context 1 chunk ("),
        "{err}"
    );
    assert!(err.contains("build context: sent 1 of 1 chunk ("), "{err}");
    let seen = farm.seen();
    assert!(
        seen.iter()
            .any(|s| s == "submit context_present=true headers=1"),
        "{seen:?}"
    );
    // The context layer went up filtered, came back as the image layer.
    assert_eq!(
        std::fs::read_to_string(out_dir.join("hello.txt")).unwrap(),
        "hello from the farm\n"
    );
    assert!(!out_dir.join("ignored.txt").exists());
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    assert_eq!(m["imgfarm.farm.build_id"], BUILD_ID);
    let vertices = m["imgfarm.farm.vertices"].as_object().unwrap();
    assert!(
        vertices
            .values()
            .any(|v| v["worker"] == "arm1" && v["emulated"] == true),
        "{m}"
    );
    let images = imgfarm(farm.tmp.path()).arg("images").output().unwrap();
    assert!(
        String::from_utf8_lossy(&images.stdout).contains("farmtest:1"),
        "{images:?}"
    );
}

#[test]
fn a_failed_vertex_fails_the_build_like_a_local_one() {
    let farm = Farm::start(Script::Fail);
    let out = farm.build().arg(farm.path("ctx")).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "ERROR: failed to solve: [1/1] COPY hello.txt / (worker arm1, emulated): process exited with code 2"
        ),
        "{err}"
    );
}

#[test]
fn a_dropped_connection_is_reattached_by_build_id() {
    let farm = Farm::start(Script::DropThenReattach);
    let out_dir = farm.path("out");
    let out = farm
        .build()
        .arg("-o")
        .arg(format!("type=local,dest={}", out_dir.display()))
        .arg(farm.path("ctx"))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("re-attached to build {BUILD_ID}")),
        "{err}"
    );
    let seen = farm.seen();
    assert!(
        seen.iter().any(|s| s == &format!("reattach {BUILD_ID}")),
        "{seen:?}"
    );
    assert!(out_dir.join("hello.txt").exists());
}

#[test]
fn ctrl_c_cancels_the_build_on_the_farm() {
    let farm = Farm::start(Script::WaitForCancel);
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("imgfarm"));
    cmd.arg("--state")
        .arg(farm.path("state"))
        .env("HOME", farm.tmp.path())
        .env("XDG_CONFIG_HOME", farm.path("xdg"))
        .env_remove("IMGFARM_FARM")
        .args(["build", "--farm", &farm.addr, "--tls-dir"])
        .arg(farm.path("farm"))
        .args(["--platform", "linux/amd64", "--progress", "plain"])
        .arg(farm.path("ctx"))
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    });
    let mut lines = Vec::new();
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap_or(0) > 0 {
        lines.push(line.clone());
        if line.contains("hello from arm1") {
            std::process::Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status()
                .unwrap();
        }
        line.clear();
    }
    let status = child.wait().unwrap();
    drop(watchdog);
    let all = lines.concat();
    assert_eq!(status.code(), Some(130), "{all}");
    assert!(all.contains("cancelling build"), "{all}");
    let seen = farm.seen();
    assert!(
        seen.iter().any(|s| s == &format!("cancel {BUILD_ID}")),
        "{seen:?}"
    );
}

#[test]
fn a_push_done_by_the_coordinator_is_not_repeated() {
    let farm = Farm::start(Script::PushOnly);
    let docker = farm.path("docker");
    std::fs::create_dir_all(&docker).unwrap();
    // base64("user:s3cret")
    std::fs::write(
        docker.join("config.json"),
        r#"{"auths":{"localhost:5000":{"auth":"dXNlcjpzM2NyZXQ="}}}"#,
    )
    .unwrap();
    let meta = farm.path("meta.json");
    let iid = farm.path("iid");
    let out = farm
        .build()
        .args(["--push", "--no-cache", "-t", "localhost:5000/app:1"])
        .arg("--metadata-file")
        .arg(&meta)
        .arg("--iidfile")
        .arg(&iid)
        .arg(farm.path("ctx"))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let seen = farm.seen();
    assert!(
        seen.iter().any(|s| s
            == r#"output push=["localhost:5000/app:1"] insecure=["localhost:5000"] no_cache=true"#),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|s| s == "credential localhost:5000 user s3cret"),
        "{seen:?}"
    );
    assert!(err.contains("pushed sha256:"), "{err}");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    assert_eq!(m["image.name"], "localhost:5000/app:1");
    assert_eq!(m["imgfarm.farm.build_id"], BUILD_ID);
    let digest = m["containerimage.digest"].as_str().unwrap().to_string();
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), digest);
    // Nothing was downloaded: the local store has no blob of the result.
    let blob = farm
        .path("state")
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    assert!(!blob.exists(), "{} was downloaded", blob.display());
}

#[test]
fn refusals_are_reported_with_the_coordinators_reason() {
    let farm = Farm::start(Script::Refuse);
    let out = farm.build().arg(farm.path("ctx")).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the coordinator refused the build: missing blob sha256:00"),
        "{err}"
    );
    let out = farm
        .build()
        .args(["--reattach", "nope"])
        .arg(farm.path("ctx"))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("unknown build nope"), "{err}");
}

#[test]
fn a_refused_certificate_is_named_at_once_on_both_sides() {
    let farm = Farm::start(Script::Succeed);
    let other = farm.path("other");
    imgfarm(farm.tmp.path())
        .args(["farm", "init", "--dir"])
        .arg(&other)
        .assert()
        .success();
    imgfarm(farm.tmp.path())
        .args(["farm", "issue", "--client", "alice", "--dir"])
        .arg(&other)
        .assert()
        .success();
    let build = |tls_dir: &Path| {
        let started = std::time::Instant::now();
        let out = imgfarm(farm.tmp.path())
            .arg("build")
            .arg("--farm")
            .arg(&farm.addr)
            .arg("--tls-dir")
            .arg(tls_dir)
            .args(["--platform", "linux/amd64", "--progress", "plain"])
            .arg(farm.path("ctx"))
            .output()
            .unwrap();
        let took = started.elapsed();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(took < Duration::from_secs(5), "took {took:?}: {err}");
        assert!(!err.contains("cannot reach"), "{err}");
        err
    };
    // The whole TLS directory of another farm: the client refuses the coordinator.
    let err = build(&other);
    for want in [
        format!(
            "this client refused the certificate of the farm coordinator at {}",
            farm.addr
        ),
        "it is not signed by the farm's CA".into(),
        "--tls-dir / IMGFARM_TLS_DIR".into(),
    ] {
        assert!(err.contains(&want), "{want:?} missing in {err}");
    }
    // This farm's ca.crt with another farm's client certificate: the
    // coordinator refuses the client.
    std::fs::copy(farm.path("farm/ca.crt"), other.join("ca.crt")).unwrap();
    let err = build(&other);
    for want in [
        format!(
            "the farm coordinator at {} refused this client's certificate (it is not signed by the farm's CA",
            farm.addr
        ),
        "check --tls-dir / IMGFARM_TLS_DIR".into(),
    ] {
        assert!(err.contains(&want), "{want:?} missing in {err}");
    }
    eprintln!("{err}");
}
