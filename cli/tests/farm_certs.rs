//! `imgfarm farm init` / `farm issue`: the files, their modes, the refusal
//! to overwrite, and errors that say what to do.

use assert_cmd::Command;
use std::os::unix::fs::PermissionsExt;

fn imgfarm() -> Command {
    Command::cargo_bin("imgfarm").unwrap()
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_and_issue_write_the_farm_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("farm");
    let d = dir.to_str().unwrap();
    imgfarm()
        .args([
            "farm",
            "init",
            "--dir",
            d,
            "--san",
            "farm.test",
            "--san",
            "127.0.0.1",
        ])
        .assert()
        .success();
    imgfarm()
        .args(["farm", "issue", "--dir", d, "--worker", "w1"])
        .assert()
        .success();
    imgfarm()
        .args(["farm", "issue", "--dir", d, "--client", "alice"])
        .assert()
        .success();
    for (f, m) in [
        ("ca.crt", 0o644),
        ("ca.key", 0o600),
        ("coordinator.crt", 0o644),
        ("coordinator.key", 0o600),
        ("worker-w1.crt", 0o644),
        ("worker-w1.key", 0o600),
        ("client-alice.crt", 0o644),
        ("client-alice.key", 0o600),
    ] {
        assert_eq!(mode(&dir.join(f)), m, "{f}");
    }
    let tls = imgfarm_common::identity::TlsDir::new(&dir);
    let w = tls
        .load(imgfarm_common::identity::Role::Worker, Some("w1"))
        .unwrap();
    assert_eq!(w.identity.name, "w1");

    // No silent overwrite.
    let before = std::fs::read(dir.join("worker-w1.key")).unwrap();
    let out = imgfarm()
        .args(["farm", "issue", "--dir", d, "--worker", "w1"])
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(dir.join("worker-w1.key")).unwrap(), before);
    imgfarm()
        .args(["farm", "issue", "--dir", d, "--worker", "w1", "--force"])
        .assert()
        .success();
    assert_ne!(std::fs::read(dir.join("worker-w1.key")).unwrap(), before);
    assert_eq!(mode(&dir.join("worker-w1.key")), 0o600);
}

#[test]
fn issue_needs_a_farm_and_a_valid_name() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    let out = imgfarm()
        .args(["farm", "issue", "--dir", d, "--worker", "w1"])
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(err.contains("farm init"), "{err}");

    imgfarm()
        .args(["farm", "init", "--dir", d])
        .assert()
        .success();
    let out = imgfarm()
        .args(["farm", "issue", "--dir", d, "--client", "../evil"])
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(err.contains("invalid name"), "{err}");
    imgfarm()
        .args(["farm", "issue", "--dir", d])
        .assert()
        .failure();
    let fresh = tmp.path().join("fresh");
    let out = imgfarm()
        .args([
            "farm",
            "init",
            "--dir",
            fresh.to_str().unwrap(),
            "--san",
            "bad name",
        ])
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(err.contains("invalid --san"), "{err}");
    assert!(!fresh.join("ca.key").exists());
}

/// `--days` sets `notAfter` (read back by openssl, an independent reader); 0 and more than a
/// hundred years are refused before anything is written.
#[test]
fn days_set_the_validity_and_bad_days_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("farm");
    let d = dir.to_str().unwrap();
    let out = imgfarm()
        .args(["farm", "init", "--dir", d, "--days", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid --days 0: give 1 to 36500 days"),
        "{err}"
    );
    assert!(!dir.exists(), "a refused init made {d}");

    let out = imgfarm()
        .args(["farm", "init", "--dir", d, "--days", "90"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("valid 90 days"),
        "{out:?}"
    );
    let out = imgfarm()
        .args([
            "farm", "issue", "--dir", d, "--worker", "w1", "--days", "36501",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!dir.join("worker-w1.crt").exists());
    let out = imgfarm()
        .args([
            "farm", "issue", "--dir", d, "--worker", "w1", "--days", "30",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(valid 30 days)"),
        "{out:?}"
    );
    if !imgfarm_testkit::require_tools_or_skip(
        "days_set_the_validity_and_bad_days_are_refused",
        &["openssl"],
    ) {
        return;
    }
    // openssl x509 -checkend N: success when the certificate is still valid N seconds from now.
    let valid_in = |file: &str, days: u64| {
        std::process::Command::new("openssl")
            .args([
                "x509",
                "-noout",
                "-checkend",
                &(days * 86_400).to_string(),
                "-in",
            ])
            .arg(dir.join(file))
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(valid_in("worker-w1.crt", 29));
    assert!(!valid_in("worker-w1.crt", 31));
    assert!(valid_in("coordinator.crt", 89));
    assert!(!valid_in("coordinator.crt", 91));
    // The CA outlives them: ten years.
    assert!(valid_in("ca.crt", 3649));
    assert!(!valid_in("ca.crt", 3651));
}

/// `farm issue --coordinator --san …` renews the coordinator's certificate with the same CA
/// (so workers and clients keep trusting it); its SANs are required and only it takes them.
#[test]
fn the_coordinator_certificate_is_renewed_by_the_same_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("farm");
    let d = dir.to_str().unwrap();
    imgfarm()
        .args(["farm", "init", "--dir", d])
        .assert()
        .success();
    let ca_before = std::fs::read(dir.join("ca.crt")).unwrap();
    let crt_before = std::fs::read(dir.join("coordinator.crt")).unwrap();
    let refused = |args: &[&str], want: &str| {
        let out = imgfarm().args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    };
    refused(
        &["farm", "issue", "--dir", d, "--coordinator"],
        "--coordinator needs --san NAME",
    );
    refused(
        &[
            "farm", "issue", "--dir", d, "--worker", "w1", "--san", "x.test",
        ],
        "--san is for --coordinator",
    );
    refused(
        &[
            "farm",
            "issue",
            "--dir",
            d,
            "--coordinator",
            "--san",
            "x.test",
        ],
        "pass --force to replace them",
    );
    imgfarm()
        .args([
            "farm",
            "issue",
            "--dir",
            d,
            "--coordinator",
            "--san",
            "farm.test",
            "--san",
            "127.0.0.1",
            "--days",
            "30",
            "--force",
        ])
        .assert()
        .success();
    assert_eq!(std::fs::read(dir.join("ca.crt")).unwrap(), ca_before);
    assert_ne!(
        std::fs::read(dir.join("coordinator.crt")).unwrap(),
        crt_before
    );
    let tls = imgfarm_common::identity::TlsDir::new(&dir);
    let c = tls
        .load(imgfarm_common::identity::Role::Coordinator, None)
        .unwrap();
    assert_eq!(c.identity.name, "coordinator");
    if !imgfarm_testkit::require_tools_or_skip(
        "the_coordinator_certificate_is_renewed_by_the_same_ca",
        &["openssl"],
    ) {
        return;
    }
    // openssl verifies the renewed certificate against the unchanged CA and reads its SANs.
    let out = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(dir.join("ca.crt"))
        .arg(dir.join("coordinator.crt"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(dir.join("coordinator.crt"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("DNS:farm.test") && text.contains("IP Address:127.0.0.1"),
        "{text}"
    );
}
