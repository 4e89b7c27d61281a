//! `imgfarm worker` as a process against the coordinator's real QUIC
//! endpoint on 127.0.0.1: it announces itself, prints the session line,
//! stops cleanly on SIGTERM, and explains missing flags and credentials.

use imgfarm_common::identity::{Role, TlsDir};
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::proto::Message;
use imgfarm_coordinator::server::{Server, ServerEvent, ServerOptions};
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const IMGFARM: &str = env!("CARGO_BIN_EXE_imgfarm");

fn farm(dir: &Path) -> TlsDir {
    let d = dir.to_str().expect("utf-8 path");
    for args in [
        vec!["farm", "init", "--dir", d, "--san", "127.0.0.1"],
        vec!["farm", "issue", "--dir", d, "--worker", "w1"],
    ] {
        let out = Command::new(IMGFARM).args(&args).output().expect("imgfarm");
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    TlsDir::new(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_connects_announces_and_stops_on_sigterm() {
    let tmp = tempfile::tempdir().expect("tmp");
    let tls = farm(&tmp.path().join("tls"));
    let store = ContentStore::open(tmp.path().join("coordinator")).expect("store");
    let opts = ServerOptions::new(
        "127.0.0.1:0".parse().expect("addr"),
        tls.load(Role::Coordinator, None).expect("creds"),
        store,
    );
    let mut server = Server::bind(opts).expect("bind");
    let url = format!("quic://{}", server.local_addr().expect("addr"));
    let mut child = Command::new(IMGFARM)
        .arg("--state")
        .arg(tmp.path().join("state"))
        .args(["worker", "--coordinator", &url, "--name", "w1"])
        .args(["--platforms", "linux/arm64", "--slots", "2"])
        .arg("--tls-dir")
        .arg(tls.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start imgfarm worker");
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .next()
            .and_then(Result::ok)
    });
    let mut session = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Some(ServerEvent::Session(s)) = server.next_event().await {
                return s;
            }
        }
    })
    .await
    .expect("no session");
    let line = line.await.expect("join").expect("a line on stdout");
    assert!(
        line.starts_with(&format!(
            "worker w1 connected to {url} (native linux/arm64; emulated "
        )),
        "{line}"
    );
    assert_eq!(session.hello.native_platforms, vec!["linux/arm64"]);
    assert_eq!(session.hello.slots, 2);

    let pid = child.id().to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(kill.success());
    let bye = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match session.recv().await {
                Ok(Some(Message::Bye)) => return true,
                Ok(Some(_)) => continue,
                _ => return false,
            }
        }
    })
    .await
    .expect("session did not end");
    assert!(bye, "expected Bye");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "{status:?}");
}

#[test]
fn missing_flags_and_credentials_are_explained() {
    let tmp = tempfile::tempdir().expect("tmp");
    let tls = farm(&tmp.path().join("tls"));
    let out = Command::new(IMGFARM)
        .args(["worker", "--name", "w1"])
        .output()
        .expect("imgfarm");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--coordinator ADDR is required (quic://HOST:PORT)"),
        "{out:?}"
    );
    let out = Command::new(IMGFARM)
        .args([
            "worker",
            "--coordinator",
            "quic://127.0.0.1:9",
            "--name",
            "w9",
        ])
        .arg("--tls-dir")
        .arg(tls.path())
        .output()
        .expect("imgfarm");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("loading the credentials of worker w9"),
        "{err}"
    );
    assert!(err.contains("worker-w9.crt"), "{err}");
    let out = Command::new(IMGFARM)
        .args([
            "worker",
            "--coordinator",
            "quic://127.0.0.1:9",
            "--name",
            "w1",
        ])
        .args(["--platforms", "linux/"])
        .arg("--tls-dir")
        .arg(tls.path())
        .output()
        .expect("imgfarm");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--platforms \"linux/\""),
        "{out:?}"
    );
}
