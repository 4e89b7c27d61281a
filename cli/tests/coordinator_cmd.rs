//! `imgfarm coordinator`: starts on a farm directory, prints the bound
//! address, keeps its queue in `<state>/coordinator.db`, and exits cleanly
//! on SIGTERM; a missing --tls-dir or bad flag says what to do.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> std::path::PathBuf {
    assert_cmd::cargo::cargo_bin("imgfarm")
}

#[test]
fn runs_until_sigterm_and_reports_its_address() {
    let tmp = tempfile::tempdir().unwrap();
    let farm = tmp.path().join("farm");
    let state = tmp.path().join("state");
    let ok = Command::new(bin())
        .args([
            "farm",
            "init",
            "--dir",
            farm.to_str().unwrap(),
            "--san",
            "127.0.0.1",
        ])
        .status()
        .unwrap();
    assert!(ok.success());
    let mut child = Command::new(bin())
        .args([
            "--state",
            state.to_str().unwrap(),
            "coordinator",
            "--listen",
            "127.0.0.1:0",
            "--tls-dir",
            farm.to_str().unwrap(),
            "--heartbeat-timeout",
            "3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("coordinator listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    assert_ne!(addr.port(), 0);
    assert!(state.join("coordinator.db").exists());
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no clean exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn flags_errors_say_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["--state", tmp.path().to_str().unwrap(), "coordinator"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--tls-dir DIR is required"), "{err}");

    let out = Command::new(bin())
        .args([
            "--state",
            tmp.path().to_str().unwrap(),
            "coordinator",
            "--tls-dir",
            tmp.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("imgfarm farm init"), "{err}");
}
