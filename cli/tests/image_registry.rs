//! pull, push, login and logout against the real docker-registry fixture
//! (plain http on 127.0.0.1, and TLS + htpasswd), checked with skopeo.

mod image_support;

use image_support::*;
use imgfarm_testkit::or_skip;
use imgfarm_testkit::BaseImages;
use imgfarm_testkit::{Registry, RegistryOptions};

#[test]
fn pull_all_tag_push_round_trip_read_by_skopeo() {
    let t = "pull_all_tag_push_round_trip_read_by_skopeo";
    let Some(base) = or_skip(t, BaseImages::build()) else {
        return;
    };
    let Some(reg) = or_skip(t, Registry::start()) else {
        return;
    };
    base.push_to(&reg, "busybox", "1").expect("seed registry");
    let d = tempfile::tempdir().expect("tempdir");
    let (state, cfg) = (d.path().join("state"), d.path().join("docker"));

    let src = reg.image_ref("busybox", "1");
    let mut c = imgfarm(&state, &cfg);
    c.args(["pull", &src, "--platform", "all"]);
    let out = ok(c, "pull --platform all");
    assert!(
        out.contains(&format!("Digest: {}", base.index_digest())),
        "{out}"
    );
    let refs = images(&state, &cfg);
    assert_eq!(refs, vec![(src.clone(), base.index_digest().to_string())]);

    let dst = reg.image_ref("copy/bb", "2");
    let mut c = imgfarm(&state, &cfg);
    c.args(["tag", &src, &dst]);
    ok(c, "tag");
    let mut c = imgfarm(&state, &cfg);
    c.args(["push", &dst]);
    let out = ok(c, "push");
    assert!(out.contains(base.index_digest()), "{out}");

    // The independent reader: the registry now serves the same index and both images.
    let mut args = vec!["inspect".to_string(), "--raw".to_string()];
    args.extend(reg.skopeo_flags_plain());
    args.push(format!("docker://{dst}"));
    let raw = skopeo(&args);
    let idx: serde_json::Value = serde_json::from_str(&raw).expect("index json");
    assert_eq!(idx["manifests"].as_array().map(Vec::len), Some(2), "{raw}");
    for arch in ["amd64", "arm64"] {
        let mut args = vec![
            "--override-arch".to_string(),
            arch.to_string(),
            "inspect".to_string(),
        ];
        args.extend(reg.skopeo_flags_plain());
        args.push(format!("docker://{dst}"));
        let v: serde_json::Value = serde_json::from_str(&skopeo(&args)).expect("inspect json");
        assert_eq!(v["Architecture"], arch);
        assert_eq!(v["Layers"][0], base.layer_digest(arch));
    }
}

#[test]
fn pull_one_platform_names_that_manifest() {
    let t = "pull_one_platform_names_that_manifest";
    let Some(base) = or_skip(t, BaseImages::build()) else {
        return;
    };
    let Some(reg) = or_skip(t, Registry::start()) else {
        return;
    };
    base.push_to(&reg, "busybox", "1").expect("seed registry");
    let d = tempfile::tempdir().expect("tempdir");
    let (state, cfg) = (d.path().join("state"), d.path().join("docker"));
    let mut c = imgfarm(&state, &cfg);
    c.args([
        "pull",
        &reg.image_ref("busybox", "1"),
        "--platform",
        "linux/arm64",
    ]);
    ok(c, "pull arm64");
    let refs = images(&state, &cfg);
    assert_eq!(refs[0].1, base.manifest_digest("arm64"));
    // Only that platform's blobs (manifest, config, layer) plus the index
    // document, which the ref does not hold: prune drops it.
    assert_eq!(du(&state, &cfg).0, 4);
    let mut c = imgfarm(&state, &cfg);
    c.arg("prune");
    ok(c, "prune");
    assert_eq!(du(&state, &cfg).0, 3);
}

#[test]
fn pull_of_a_missing_tag_or_bad_reference_fails_and_stores_nothing() {
    let t = "pull_of_a_missing_tag_or_bad_reference_fails_and_stores_nothing";
    let Some(reg) = or_skip(t, Registry::start()) else {
        return;
    };
    let d = tempfile::tempdir().expect("tempdir");
    let (state, cfg) = (d.path().join("state"), d.path().join("docker"));
    let mut c = imgfarm(&state, &cfg);
    c.args(["pull", &reg.image_ref("nothing", "here")]);
    fails_with(c, "manifest unknown");
    let mut c = imgfarm(&state, &cfg);
    c.args(["pull", "Not A/Ref"]);
    fails_with(c, "invalid reference");
    assert!(images(&state, &cfg).is_empty());
    assert_eq!(du(&state, &cfg).0, 0);
}

#[test]
fn tls_auth_registry_needs_login_then_push_and_pull_work() {
    let t = "tls_auth_registry_needs_login_then_push_and_pull_work";
    let Some(base) = or_skip(t, BaseImages::build()) else {
        return;
    };
    let Some(reg) = or_skip(
        t,
        Registry::start_with(RegistryOptions::tls_auth("alice", "s3cret")),
    ) else {
        return;
    };
    base.push_to(&reg, "busybox", "1").expect("seed registry");
    let d = tempfile::tempdir().expect("tempdir");
    let (state, cfg) = (d.path().join("state"), d.path().join("docker"));
    // docker's certs.d layout in the docker config dir.
    let certs = cfg.join("certs.d").join(reg.addr());
    std::fs::create_dir_all(&certs).expect("certs.d");
    std::fs::copy(reg.ca_cert().expect("ca"), certs.join("ca.crt")).expect("ca.crt");
    let src = reg.image_ref("busybox", "1");

    // No credentials: a 401 that says what to do.
    let mut c = imgfarm(&state, &cfg);
    c.args(["pull", &src]);
    fails_with(c, &format!("imgfarm login {}", reg.addr()));
    assert!(images(&state, &cfg).is_empty());

    // A wrong password is refused and not saved.
    let mut c = imgfarm(&state, &cfg);
    c.args(["login", reg.addr(), "-u", "alice", "--password-stdin"])
        .write_stdin("wrong\n");
    fails_with(c, "invalid username or password");
    assert!(!cfg.join("config.json").exists());

    let mut c = imgfarm(&state, &cfg);
    c.args(["login", reg.addr(), "-u", "alice", "--password-stdin"])
        .write_stdin("s3cret\n");
    assert!(ok(c, "login").contains("Login Succeeded"));
    let conf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cfg.join("config.json")).expect("config.json"))
            .expect("json");
    assert!(conf["auths"][reg.addr()]["auth"].is_string(), "{conf}");

    let mut c = imgfarm(&state, &cfg);
    c.args(["pull", &src, "--platform", "all"]);
    ok(c, "pull with saved credentials");
    let dst = reg.image_ref("pushed", "x");
    let mut c = imgfarm(&state, &cfg);
    c.args(["tag", &src, &dst]);
    ok(c, "tag");
    let mut c = imgfarm(&state, &cfg);
    c.args(["push", &dst]);
    ok(c, "push with saved credentials");
    let mut args = vec!["inspect".to_string(), "--raw".to_string()];
    args.extend(reg.skopeo_flags_plain());
    args.push(format!("docker://{dst}"));
    let raw = skopeo(&args);
    assert!(raw.contains(base.manifest_digest("arm64")), "{raw}");

    let mut c = imgfarm(&state, &cfg);
    c.args(["logout", reg.addr()]);
    assert!(ok(c, "logout").contains("Removing login credentials"));
    let mut c = imgfarm(&state, &cfg);
    c.args(["push", &dst]);
    fails_with(c, "imgfarm login");
}
