//! The Bearer token flow against a real docker-registry in token-auth mode
//! (docker's "Token Authentication Specification"): the registry verifies
//! ES256 JWTs whose x5c certificate chains to its `rootcertbundle`. The token
//! service is a small server in this test that checks Basic credentials and
//! signs tokens for the scopes asked; the registry, its challenges and its
//! token verification are the real ones.

use base64::Engine as _;
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::oci::Digest;
use imgfarm_common::registry::{
    Credential, PullOptions, PushOptions, Reference, RegistryClient, RegistryConfig, RegistryError,
};
use imgfarm_testkit::{init_tracing, or_skip, require_tools_or_skip, run_checked, BaseImages};
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SERVICE: &str = "imgfarm-test-registry";
const ISSUER: &str = "imgfarm-test-issuer";
const USER: &str = "farmer";
const PASSWORD: &str = "token-pw";

/// A docker-registry process killed (by its PID) on drop.
struct TokenRegistry {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for TokenRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// ECDSA P-256 signer and its self-signed certificate (openssl, independent of us).
struct Signer {
    key: EcdsaKeyPair,
    cert_der: Vec<u8>,
    cert_pem: PathBuf,
}

fn make_signer(dir: &Path) -> Signer {
    let key_pem = dir.join("key.pem");
    let key_p8 = dir.join("key.p8");
    let cert_pem = dir.join("signer.pem");
    let cert_der = dir.join("signer.der");
    run_checked(
        Command::new("openssl")
            .args([
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
            ])
            .arg(&key_pem),
    )
    .unwrap();
    run_checked(
        Command::new("openssl")
            .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
            .arg(&key_pem)
            .arg("-out")
            .arg(&key_p8),
    )
    .unwrap();
    run_checked(
        Command::new("openssl")
            .args([
                "req",
                "-new",
                "-x509",
                "-days",
                "2",
                "-subj",
                "/CN=imgfarm-token-signer",
                "-key",
            ])
            .arg(&key_pem)
            .arg("-out")
            .arg(&cert_pem),
    )
    .unwrap();
    run_checked(
        Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert_pem)
            .arg("-out")
            .arg(&cert_der),
    )
    .unwrap();
    let rng = ring::rand::SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &std::fs::read(&key_p8).unwrap(),
        &rng,
    )
    .unwrap();
    Signer {
        key,
        cert_der: std::fs::read(&cert_der).unwrap(),
        cert_pem,
    }
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

static JTI: AtomicU64 = AtomicU64::new(0);

/// An ES256 JWT granting every action asked for in `scopes`.
fn sign_token(signer: &Signer, account: &str, scopes: &[String]) -> String {
    let header = serde_json::json!({
        "typ": "JWT",
        "alg": "ES256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(&signer.cert_der)],
    });
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let (kind, rest) = s.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": account, "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now - 10,
        "jti": JTI.fetch_add(1, Ordering::Relaxed).to_string(),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let rng = ring::rand::SystemRandom::new();
    let sig = signer.key.sign(&rng, signing_input.as_bytes()).unwrap();
    format!("{signing_input}.{}", b64url(sig.as_ref()))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 3 <= b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("3f");
                let h = u8::from_str_radix(hex, 16).unwrap_or(b'?');
                out.push(h);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The token service: GET /token?service=&scope=... with Basic USER:PASSWORD.
async fn start_token_service(signer: Arc<Signer>) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let issued = Arc::new(AtomicU64::new(0));
    let issued2 = issued.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let signer = signer.clone();
            let issued = issued2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let target = head.split(' ').nth(1).unwrap_or("").to_string();
                let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
                let mut scopes = Vec::new();
                let mut service_ok = false;
                for kv in query.split('&') {
                    if let Some((k, v)) = kv.split_once('=') {
                        let v = percent_decode(v);
                        match k {
                            "scope" => scopes.extend(v.split(' ').map(str::to_string)),
                            "service" => service_ok = v == SERVICE,
                            _ => {}
                        }
                    }
                }
                let want = format!(
                    "authorization: basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
                )
                .to_ascii_lowercase();
                let authorized = head.lines().any(|l| l.to_ascii_lowercase() == want);
                let (status, body) = if !authorized || !service_ok {
                    (
                        "401 Unauthorized",
                        r#"{"details":"bad credentials"}"#.to_string(),
                    )
                } else {
                    issued.fetch_add(1, Ordering::Relaxed);
                    let t = sign_token(&signer, USER, &scopes);
                    (
                        "200 OK",
                        serde_json::json!({"token": t, "expires_in": 300}).to_string(),
                    )
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (addr, issued)
}

fn start_registry(cert_pem: &Path, realm: &str) -> TokenRegistry {
    let dir = tempfile::Builder::new()
        .prefix("imgfarm-token-registry-")
        .tempdir()
        .unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {addr}\nauth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    \
             issuer: {ISSUER}\n    rootcertbundle: {}\n",
            dir.path().join("storage").display(),
            cert_pem.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
    let child = Command::new("/usr/bin/docker-registry")
        .arg("serve")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "registry did not start: {}",
            std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    TokenRegistry {
        child,
        addr,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_push_pull_mount_against_token_auth_registry() {
    let test = "bearer_push_pull_mount_against_token_auth_registry";
    init_tracing();
    if !require_tools_or_skip(test, &["openssl", "docker-registry"]) {
        return;
    }
    let Some(base) = or_skip(test, BaseImages::build()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let signer = Arc::new(make_signer(tmp.path()));
    let (token_addr, issued) = start_token_service(signer.clone()).await;
    let reg = start_registry(&signer.cert_pem, &format!("http://{token_addr}/token"));

    let src = ContentStore::open(tmp.path().join("src")).unwrap();
    for e in std::fs::read_dir(base.layout_dir().join("blobs/sha256")).unwrap() {
        src.put_bytes(&std::fs::read(e.unwrap().path()).unwrap())
            .unwrap();
    }
    let mut cfg = RegistryConfig::default();
    cfg.explicit_credentials
        .insert(reg.addr.clone(), Credential::basic(USER, PASSWORD));
    let client = RegistryClient::new(cfg.clone());
    let index: Digest = base.index_digest().parse().unwrap();
    let a: Reference = format!("{}/team/busybox:1", reg.addr).parse().unwrap();
    let b: Reference = format!("{}/other/busybox:1", reg.addr).parse().unwrap();

    let pushed = client
        .push(&src, &index, &a, &PushOptions::default())
        .await
        .unwrap();
    assert_eq!(pushed.uploaded, 4, "{pushed:?}");
    let mounted = client
        .push(&src, &index, &b, &PushOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (mounted.mounted, mounted.uploaded),
        (4, 0),
        "mount needs a token for two repositories: {mounted:?}"
    );

    let dst = ContentStore::open(tmp.path().join("dst")).unwrap();
    let pulled = client
        .pull(&b, &PullOptions::default(), &dst)
        .await
        .unwrap();
    assert_eq!(pulled.root.digest, index);
    assert_eq!(pulled.stats.blobs_fetched, 4);
    let tokens = issued.load(Ordering::Relaxed);
    assert!(tokens <= 4, "tokens are cached per scope set, got {tokens}");

    // Wrong password: the token service refuses, the message says so.
    let mut bad = cfg.clone();
    bad.explicit_credentials
        .insert(reg.addr.clone(), Credential::basic(USER, "nope"));
    let e = RegistryClient::new(bad)
        .pull(&a, &PullOptions::default(), &dst)
        .await
        .unwrap_err();
    assert!(
        matches!(e, RegistryError::InvalidCredentials { .. }),
        "{e:?}"
    );
    // No credentials at all.
    let e = RegistryClient::new(RegistryConfig::default())
        .pull(&a, &PullOptions::default(), &dst)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("authentication required: run `imgfarm login {}`", reg.addr)
    );
}
