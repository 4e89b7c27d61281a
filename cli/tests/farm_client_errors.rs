//! `imgfarm build --farm` and `imgfarm farm status|workers`: the error paths
//! a user meets first, each with a message that says what to do.

use assert_cmd::Command;
use std::path::Path;
use std::time::{Duration, Instant};

struct Env {
    tmp: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path().join("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY hello.txt /\n").unwrap();
        std::fs::write(ctx.join("hello.txt"), "hello\n").unwrap();
        std::fs::create_dir_all(tmp.path().join("home")).unwrap();
        std::fs::create_dir_all(tmp.path().join("xdg")).unwrap();
        Self { tmp }
    }

    fn path(&self, p: &str) -> std::path::PathBuf {
        self.tmp.path().join(p)
    }

    /// `imgfarm` with a private state, HOME and config directory, and no farm
    /// variables from the caller's environment.
    fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("imgfarm").unwrap();
        c.arg("--state")
            .arg(self.path("state"))
            .env("HOME", self.path("home"))
            .env("XDG_CONFIG_HOME", self.path("xdg"))
            .env("DOCKER_CONFIG", self.path("home/.docker"))
            .env_remove("IMGFARM_FARM")
            .env_remove("IMGFARM_TLS_DIR")
            .env_remove("IMGFARM_FARM_NAME")
            .env_remove("IMGFARM_STATE")
            .timeout(Duration::from_secs(60));
        c
    }

    fn farm_dir(&self, client: Option<&str>) -> std::path::PathBuf {
        let dir = self.path("farm");
        self.cmd()
            .args(["farm", "init", "--dir"])
            .arg(&dir)
            .assert()
            .success();
        if let Some(name) = client {
            self.cmd()
                .args(["farm", "issue", "--dir"])
                .arg(&dir)
                .args(["--client", name])
                .assert()
                .success();
        }
        dir
    }
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A UDP port on loopback with nothing listening.
fn dead_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

fn assert_names(msg: &str, wants: &[&str]) {
    for w in wants {
        assert!(msg.contains(w), "{w:?} missing in {msg:?}");
    }
}

#[test]
fn build_without_a_farm_address_says_where_to_give_one() {
    let env = Env::new();
    let dir = env.farm_dir(Some("alice"));
    let out = env
        .cmd()
        .arg("build")
        .arg("--tls-dir")
        .arg(&dir)
        .arg(env.path("ctx"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_names(
        &stderr(&out),
        &[
            "no farm address",
            "--farm",
            "IMGFARM_FARM",
            "imgfarm/farm.conf",
        ],
    );
    // `--farm=` (empty) means "from the config", which has none either.
    let out = env
        .cmd()
        .arg("build")
        .arg("--farm=")
        .arg(env.path("ctx"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_names(&stderr(&out), &["no farm address", "--farm"]);
    for sub in ["status", "workers"] {
        let out = env.cmd().args(["farm", sub]).output().unwrap();
        assert!(!out.status.success());
        assert_names(&stderr(&out), &["no farm address", "IMGFARM_FARM"]);
    }
}

#[test]
fn build_without_a_tls_dir_says_where_to_give_one() {
    let env = Env::new();
    let out = env
        .cmd()
        .arg("build")
        .arg("--farm")
        .arg("quic://127.0.0.1:1")
        .arg(env.path("ctx"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_names(
        &stderr(&out),
        &["no farm TLS directory", "--tls-dir", "IMGFARM_TLS_DIR"],
    );
}

#[test]
fn tls_dir_without_a_client_certificate_says_how_to_issue_one() {
    let env = Env::new();
    let dir = env.farm_dir(None);
    let out = env
        .cmd()
        .arg("build")
        .arg("--farm")
        .arg("quic://127.0.0.1:1")
        .arg("--tls-dir")
        .arg(&dir)
        .arg(env.path("ctx"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_names(
        &stderr(&out),
        &["client certificate", "imgfarm farm issue", "--client"],
    );
    // A name that has no certificate.
    let out = env
        .cmd()
        .args([
            "farm",
            "workers",
            "--farm",
            "quic://127.0.0.1:1",
            "--farm-name",
            "bob",
            "--tls-dir",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_names(&stderr(&out), &["client-bob.crt", "imgfarm farm issue"]);
}

#[test]
fn unreachable_coordinator_fails_within_a_bounded_time() {
    let env = Env::new();
    let dir = env.farm_dir(Some("alice"));
    let addr = format!("quic://127.0.0.1:{}", dead_port());
    let started = Instant::now();
    let out = env
        .cmd()
        .arg("build")
        .arg("--farm")
        .arg(&addr)
        .arg("--tls-dir")
        .arg(&dir)
        .arg("--progress=plain")
        .arg(env.path("ctx"))
        .output()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_names(
        &stderr(&out),
        &["cannot reach the farm coordinator", &addr, "--farm"],
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[test]
fn config_file_supplies_address_and_tls_dir() {
    let env = Env::new();
    env.farm_dir(Some("alice"));
    let addr = format!("quic://127.0.0.1:{}", dead_port());
    let conf_dir = env.path("xdg/imgfarm");
    std::fs::create_dir_all(&conf_dir).unwrap();
    // tls_dir relative to the config file's directory.
    std::fs::write(
        conf_dir.join("farm.conf"),
        format!("# test farm\nfarm = {addr}\ntls_dir = ../../farm\nname = alice\n"),
    )
    .unwrap();
    let out = env.cmd().args(["farm", "status"]).output().unwrap();
    assert!(!out.status.success());
    assert_names(&stderr(&out), &["cannot reach the farm coordinator", &addr]);

    // A typo in the file is reported with its line.
    std::fs::write(
        conf_dir.join("farm.conf"),
        "farm = quic://h:1\ntlsdir = x\n",
    )
    .unwrap();
    let out = env.cmd().args(["farm", "status"]).output().unwrap();
    assert!(!out.status.success());
    assert_names(
        &stderr(&out),
        &["farm.conf line 2", "unknown key \"tlsdir\""],
    );
}

#[test]
fn secrets_are_refused_on_the_farm() {
    let env = Env::new();
    let dir = env.farm_dir(Some("alice"));
    let secret = env.path("s.txt");
    std::fs::write(&secret, "x").unwrap();
    let out = env
        .cmd()
        .arg("build")
        .arg("--farm")
        .arg("quic://127.0.0.1:1")
        .arg("--tls-dir")
        .arg(&dir)
        .arg("--secret")
        .arg(format!("id=s,src={}", Path::new(&secret).display()))
        .arg(env.path("ctx"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_names(&stderr(&out), &["--secret is not supported with --farm"]);
}

/// A Dockerfile whose graph cannot travel in one control frame is refused
/// on the client, before it dials the farm, saying why and what to do.
#[test]
fn a_graph_too_big_for_the_wire_is_refused_before_connecting() {
    let env = Env::new();
    let dir = env.farm_dir(Some("alice"));
    // 20,000 RUNs each carrying a 1 KB ENV value: a 200 KB Dockerfile whose
    // definition is over 20 MB encoded.
    let mut df = format!("FROM scratch\nENV BIG={}\n", "x".repeat(1000));
    df.push_str(&"RUN true\n".repeat(20_000));
    std::fs::write(env.path("ctx/Dockerfile"), df).unwrap();
    let addr = format!("quic://127.0.0.1:{}", dead_port());
    let started = Instant::now();
    let out = env
        .cmd()
        .arg("build")
        .arg("--farm")
        .arg(&addr)
        .arg("--tls-dir")
        .arg(&dir)
        .arg("--progress=plain")
        .arg(env.path("ctx"))
        .output()
        .unwrap();
    let took = started.elapsed();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_names(
        &err,
        &[
            "the build graph is",
            "MB encoded",
            "16 MiB message limit",
            "build locally",
        ],
    );
    // Refused before dialling: no connection attempt, so no connect error
    // and no connect timeout (10 s) spent.
    assert!(!err.contains("cannot reach"), "{err}");
    assert!(!err.contains("peer"), "{err}");
    assert!(took < Duration::from_secs(9), "took {took:?}");
}
