//! The registry fixture, used for real: push the base images and read them back with skopeo.

use imgfarm_testkit::{
    init_tracing, or_skip, require_tools_or_skip, run_checked, BaseImages, Registry,
    RegistryOptions,
};
use std::process::Command;

const TOOLS: &[&str] = &["skopeo", "curl"];

/// `skopeo inspect --raw` of `repo:tag`, with the registry's flags (plus `extra`).
fn inspect_raw(reg: &Registry, repo: &str, tag: &str) -> anyhow::Result<String> {
    let out = run_checked(
        Command::new("skopeo")
            .args(["--insecure-policy", "inspect", "--raw"])
            .args(reg.skopeo_flags_plain())
            .arg(format!("docker://{}/{repo}:{tag}", reg.addr()))
            .env("REGISTRY_AUTH_FILE", "/nonexistent/imgfarm-auth.json"),
    )?;
    Ok(String::from_utf8(out.stdout)?)
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// The index must list both platforms and hash to the layout's index digest.
fn check_index(raw: &str, base: &BaseImages) {
    assert_eq!(sha256(raw.as_bytes()), base.index_digest());
    let v: serde_json::Value = serde_json::from_str(raw).expect("index is JSON");
    assert_eq!(
        v["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{raw}"
    );
    let mut plats: Vec<(String, String)> = v["manifests"]
        .as_array()
        .expect("manifests array")
        .iter()
        .map(|m| {
            (
                m["platform"]["architecture"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                m["digest"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    plats.sort();
    assert_eq!(
        plats,
        vec![
            (
                "amd64".to_string(),
                base.manifest_digest("amd64").to_string()
            ),
            (
                "arm64".to_string(),
                base.manifest_digest("arm64").to_string()
            ),
        ]
    );
}

/// `curl` status code of `GET /v2/` with optional `user:pass`.
fn v2_status(reg: &Registry, creds: Option<&str>) -> String {
    let mut c = Command::new("curl");
    c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}"]);
    if let Some(ca) = reg.ca_cert() {
        c.arg("--cacert").arg(ca);
    }
    if let Some(u) = creds {
        c.args(["-u", u]);
    }
    c.arg(format!("{}/v2/", reg.url()));
    let out = run_checked(&mut c).expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn plain_registry_roundtrips_base_index() {
    init_tracing();
    let name = "plain_registry_roundtrips_base_index";
    if !require_tools_or_skip(name, TOOLS) {
        return;
    }
    let Some(reg) = or_skip(name, Registry::start()) else {
        return;
    };
    let Some(base) = or_skip(name, BaseImages::build()) else {
        return;
    };
    assert!(reg.url().starts_with("http://127.0.0.1:"));
    assert!(reg.ca_cert().is_none() && reg.cert_dir().is_none() && reg.credentials().is_none());
    assert_eq!(v2_status(&reg, None), "200");

    base.push_to(&reg, "base/busybox", "latest").expect("push");
    let raw = inspect_raw(&reg, "base/busybox", "latest").expect("inspect");
    check_index(&raw, &base);

    // Blobs land where storage_dir() says, so tests can tamper with them.
    let layer = reg.blob_path(base.layer_digest("arm64"));
    assert!(layer.starts_with(reg.storage_dir()));
    let data = std::fs::read(&layer).expect("layer blob in storage");
    assert_eq!(sha256(&data), base.layer_digest("arm64"));
}

#[test]
fn tls_auth_registry_roundtrips_and_refuses_bad_credentials() {
    init_tracing();
    let name = "tls_auth_registry_roundtrips_and_refuses_bad_credentials";
    if !require_tools_or_skip(name, TOOLS) {
        return;
    }
    let Some(reg) = or_skip(
        name,
        Registry::start_with(RegistryOptions::tls_auth("farm", "s3cret")),
    ) else {
        return;
    };
    let Some(base) = or_skip(name, BaseImages::build()) else {
        return;
    };
    assert!(reg.url().starts_with("https://127.0.0.1:"));
    assert_eq!(reg.credentials(), Some(("farm", "s3cret")));
    let cert_dir = reg.cert_dir().expect("cert dir");
    assert!(cert_dir.join("ca.crt").is_file());
    let ca = std::fs::read_to_string(reg.ca_cert().expect("ca")).expect("read ca");
    assert!(ca.contains("BEGIN CERTIFICATE"));

    assert_eq!(v2_status(&reg, None), "401");
    assert_eq!(v2_status(&reg, Some("farm:wrong")), "401");
    assert_eq!(v2_status(&reg, Some("farm:s3cret")), "200");

    base.push_to(&reg, "secure/busybox", "v1")
        .expect("push with creds");
    let raw = inspect_raw(&reg, "secure/busybox", "v1").expect("inspect with creds");
    check_index(&raw, &base);

    // No credentials: skopeo says unauthorized.
    let no_creds = Command::new("skopeo")
        .args(["--insecure-policy", "inspect", "--raw"])
        .arg(format!("--cert-dir={}", cert_dir.display()))
        .arg(format!("docker://{}/secure/busybox:v1", reg.addr()))
        .env("REGISTRY_AUTH_FILE", "/nonexistent/imgfarm-auth.json")
        .output()
        .expect("skopeo runs");
    assert!(!no_creds.status.success());
    let err = String::from_utf8_lossy(&no_creds.stderr).to_lowercase();
    assert!(err.contains("unauthorized") || err.contains("401"), "{err}");

    // Wrong password: refused too.
    let wrong = Command::new("skopeo")
        .args(["--insecure-policy", "inspect", "--raw"])
        .arg(format!("--cert-dir={}", cert_dir.display()))
        .arg("--creds=farm:wrong")
        .arg(format!("docker://{}/secure/busybox:v1", reg.addr()))
        .output()
        .expect("skopeo runs");
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr).to_lowercase();
    assert!(err.contains("unauthorized") || err.contains("401"), "{err}");

    // Without the CA the certificate is not trusted.
    let untrusted = Command::new("skopeo")
        .args([
            "--insecure-policy",
            "inspect",
            "--raw",
            "--creds=farm:s3cret",
        ])
        .arg(format!("docker://{}/secure/busybox:v1", reg.addr()))
        .output()
        .expect("skopeo runs");
    assert!(!untrusted.status.success());
    let err = String::from_utf8_lossy(&untrusted.stderr);
    assert!(err.contains("x509") || err.contains("certificate"), "{err}");
}

#[test]
fn tls_leaf_is_not_a_ca_and_names_loopback() {
    init_tracing();
    let name = "tls_leaf_is_not_a_ca_and_names_loopback";
    if !require_tools_or_skip(name, &["openssl"]) {
        return;
    }
    let Some(reg) = or_skip(
        name,
        Registry::start_with(RegistryOptions {
            tls: true,
            auth: None,
        }),
    ) else {
        return;
    };
    let ca = reg.ca_cert().expect("ca");
    let leaf = ca.parent().expect("tls dir").join("server.crt");
    let text = run_checked(
        Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(&leaf),
    )
    .expect("openssl x509");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(text.contains("TLS Web Server Authentication"), "{text}");
    assert!(text.contains("DNS:localhost") && text.contains("IP Address:127.0.0.1"));
    run_checked(
        Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(ca)
            .arg(&leaf),
    )
    .expect("leaf verifies against the CA");
}

#[test]
fn drop_stops_exactly_the_registry_process() {
    init_tracing();
    let name = "drop_stops_exactly_the_registry_process";
    let Some(reg) = or_skip(name, Registry::start()) else {
        return;
    };
    let pid = reg.pid();
    let storage = reg.storage_dir().to_path_buf();
    let proc_dir = format!("/proc/{pid}");
    assert!(std::path::Path::new(&proc_dir).exists());
    drop(reg);
    // Reaped on drop, so the PID is gone (not a zombie) and the temp dir is removed.
    let gone = match std::fs::read_to_string(format!("{proc_dir}/comm")) {
        Err(_) => true,
        Ok(comm) => comm.trim() != "docker-registry",
    };
    assert!(gone, "registry pid {pid} still alive after drop");
    assert!(!storage.exists());
}

#[test]
fn registries_started_in_parallel_get_distinct_ports() {
    init_tracing();
    let name = "registries_started_in_parallel_get_distinct_ports";
    if !require_tools_or_skip(name, &["curl"]) {
        return;
    }
    let handles: Vec<_> = (0..6)
        .map(|_| std::thread::spawn(Registry::start))
        .collect();
    let mut regs = Vec::new();
    for h in handles {
        let Some(r) = or_skip(name, h.join().expect("thread")) else {
            return;
        };
        regs.push(r);
    }
    let mut addrs: Vec<&str> = regs.iter().map(|r| r.addr()).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), regs.len());
    for r in &regs {
        assert_eq!(v2_status(r, None), "200", "{}", r.addr());
    }
}
