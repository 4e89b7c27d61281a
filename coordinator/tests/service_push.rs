//! The coordinator pushes the merged index to a real registry
//! (Distribution 2.8 on loopback, basic auth) with the credentials the
//! client lent for that build only, and skopeo reads the index back.

mod service_common;

use imgfarm_common::farm::{OutputSpec, RegistryCredential};
use imgfarm_common::proto::Message;
use imgfarm_testkit::{Registry, RegistryOptions};
use service_common::*;
use std::process::Command;

fn finished(msgs: &[Message]) -> imgfarm_common::proto::BuildFinished {
    match msgs.last() {
        Some(Message::BuildFinished(f)) => f.clone(),
        other => panic!("expected BuildFinished, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_the_index_with_the_builds_credentials_only() {
    if !imgfarm_testkit::require_tools_or_skip(
        "pushes_the_index_with_the_builds_credentials_only",
        &["docker-registry", "skopeo"],
    ) {
        return;
    }
    let reg = Registry::start_with(RegistryOptions {
        tls: false,
        auth: Some(("farm".into(), "s3cret-pw".into())),
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tls = make_farm(&dir.path().join("tls"), &["w1"], &["alice"]);
    let state = dir.path().join("state");
    let svc = start(options(&tls, &state)).await;
    let addr = svc.local_addr();
    let mut w1 = Peer::connect(
        addr,
        &tls,
        worker_hello("w1", &["linux/amd64"], &["linux/arm64"], 4),
    )
    .await;
    let mut alice = Peer::connect(addr, &tls, client_hello("alice")).await;
    let target = reg.image_ref("app", "1");
    let cred = |secret: &str| RegistryCredential {
        host: reg.addr().to_string(),
        username: "farm".into(),
        secret: secret.into(),
    };

    // A wrong password: the build fails and says where the push failed.
    let b = test_build(&["linux/amd64", "linux/arm64"], "make");
    let wrong = OutputSpec {
        push: vec![target.clone()],
        credentials: vec![cred("wrong")],
        ..OutputSpec::default()
    };
    submit(&mut alice, &b, &wrong).await;
    let ran = serve(&mut w1, 6).await;
    assert!(
        ran.iter()
            .any(|r| r.run.platform == "linux/arm64" && r.run.emulated),
        "the RUN for arm64 is emulated on an amd64 worker"
    );
    let fin = finished(&alice.until(is_finished).await);
    let err = fin.result.unwrap_err();
    assert!(err.contains(&target), "{err}");

    // The right one, lent for this build: pushed, and nothing ran again.
    let good = OutputSpec {
        push: vec![target.clone()],
        credentials: vec![cred("s3cret-pw")],
        ..OutputSpec::default()
    };
    submit(&mut alice, &b, &good).await;
    let msgs = alice.until(is_finished).await;
    let fin = finished(&msgs);
    assert_eq!(fin.pushed, vec![target.clone()], "{fin:?}");
    assert!(!msgs.iter().any(|m| matches!(m, Message::VertexStarted(_))));
    let index = fin.index.unwrap();

    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            "farm:s3cret-pw",
            &format!("docker://{target}"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        imgfarm_common::oci::Digest::sha256_of(&out.stdout),
        index.digest,
        "the registry serves the index the client was told about"
    );
    let raw = String::from_utf8_lossy(&out.stdout);
    assert!(
        raw.contains("\"arm64\"") && raw.contains("\"amd64\""),
        "{raw}"
    );

    svc.shutdown().await.unwrap();
    for f in ["coordinator.db", "coordinator.db-wal"] {
        let bytes = std::fs::read(state.join(f)).unwrap_or_default();
        assert!(
            !bytes.windows(9).any(|w| w == b"s3cret-pw"),
            "the registry password reached {f}"
        );
    }
}
