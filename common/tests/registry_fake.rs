//! Client logic the real docker-registry fixture can't exercise: the Bearer
//! token flow (docker's token spec), retries of 5xx and of a body cut mid-way,
//! and the manifest size bound. A tiny scripted HTTP/1.1 server on loopback
//! stands in for registry and token service; it is a fake for logic only.

use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::oci::Digest;
use imgfarm_common::registry::{
    Credential, PullOptions, PushOptions, Reference, RegistryClient, RegistryConfig, RegistryError,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A parsed request.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    /// Path and query.
    target: String,
    headers: HashMap<String, String>,
}

/// What the script answers: status, headers, body, and whether to cut the body
/// after that many bytes (simulating a reset).
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    cut_after: Option<usize>,
    delay: Option<std::time::Duration>,
}

impl Answer {
    fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
            cut_after: None,
            delay: None,
        }
    }
    fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
}

/// Delayed answers being served right now, and the most seen at once (one
/// test uses delays, so process-wide counters are enough).
static SLOW_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static SLOW_MAX: AtomicUsize = AtomicUsize::new(0);

type Script = Arc<dyn Fn(&Request) -> Answer + Send + Sync>;

/// Start the fake; returns `127.0.0.1:PORT` and the request log.
async fn serve(script: Script) -> (String, Arc<Mutex<Vec<Request>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let script = script.clone();
            let log = log2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                    // A TLS ClientHello: answer as Go's net/http does, then hang up.
                    if buf.first() == Some(&0x16) {
                        let _ = sock.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n").await;
                        return;
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let mut lines = head.split("\r\n");
                let mut first = lines.next().unwrap_or("").split(' ');
                let method = first.next().unwrap_or("").to_string();
                let target = first.next().unwrap_or("").to_string();
                let headers = lines
                    .filter_map(|l| l.split_once(": "))
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
                    .collect();
                let req = Request {
                    method,
                    target,
                    headers,
                };
                log.lock().unwrap().push(req.clone());
                let a = script(&req);
                if let Some(d) = a.delay {
                    let now = SLOW_IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
                    SLOW_MAX.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(d).await;
                }
                let mut out = format!(
                    "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    a.status,
                    a.body.len()
                );
                for (k, v) in &a.headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                let mut bytes = out.into_bytes();
                let body = if req.method == "HEAD" {
                    &[][..]
                } else {
                    &a.body[..]
                };
                bytes.extend_from_slice(&body[..a.cut_after.unwrap_or(body.len()).min(body.len())]);
                let _ = sock.write_all(&bytes).await;
                let _ = sock.shutdown().await;
                if a.delay.is_some() {
                    SLOW_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, log)
}

/// One small image: config, layer, manifest.
struct Image {
    config: Vec<u8>,
    layer: Vec<u8>,
    manifest: Vec<u8>,
}

fn image() -> Image {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let layer = vec![7u8; 100_000];
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":{}}}]}}"#,
        Digest::sha256_of(&config),
        config.len(),
        Digest::sha256_of(&layer),
        layer.len()
    )
    .into_bytes();
    Image {
        config,
        layer,
        manifest,
    }
}

/// Serve `img` at `lib/x:latest` for requests `authorized` accepts.
fn content(img: &Image, req: &Request) -> Option<Answer> {
    let path = req.target.split('?').next().unwrap_or("");
    if path == "/v2/lib/x/manifests/latest" {
        return Some(
            Answer::new(200, img.manifest.clone())
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json"),
        );
    }
    for blob in [&img.config, &img.layer] {
        if path == format!("/v2/lib/x/blobs/{}", Digest::sha256_of(blob)) {
            return Some(Answer::new(200, blob.clone()));
        }
    }
    None
}

fn fast_config() -> RegistryConfig {
    let mut cfg = RegistryConfig::default();
    cfg.retry.base_delay = std::time::Duration::from_millis(5);
    cfg
}

fn count(log: &Arc<Mutex<Vec<Request>>>, prefix: &str) -> usize {
    log.lock()
        .unwrap()
        .iter()
        .filter(|r| r.target.starts_with(prefix))
        .count()
}

/// A Bearer registry: /v2/ challenges, /token hands out "T-good" for user u:p
/// (and "T-anon" anonymously when `anonymous_ok`), content needs a token.
fn bearer_script(img: Arc<Image>, anonymous_ok: bool) -> impl Fn(&str) -> Script {
    move |addr: &str| {
        let img = img.clone();
        let challenge = format!(r#"Bearer realm="http://{addr}/token",service="fake-registry""#);
        Arc::new(move |req: &Request| {
            if req.target.starts_with("/token?") {
                assert!(
                    req.target.contains("service=fake-registry"),
                    "{}",
                    req.target
                );
                assert!(
                    req.target.contains("scope=repository%3Alib%2Fx%3Apull"),
                    "{}",
                    req.target
                );
                return match req.headers.get("authorization").map(String::as_str) {
                    Some("Basic dTpw") => {
                        Answer::new(200, r#"{"token":"T-good","expires_in":300}"#)
                    }
                    None if anonymous_ok => Answer::new(200, r#"{"access_token":"T-anon"}"#),
                    _ => Answer::new(401, r#"{"details":"incorrect username or password"}"#),
                };
            }
            let auth = req.headers.get("authorization").map(String::as_str);
            if req.target != "/v2/" && matches!(auth, Some("Bearer T-good") | Some("Bearer T-anon"))
            {
                if let Some(a) = content(&img, req) {
                    return a;
                }
                return Answer::new(
                    404,
                    r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
                );
            }
            Answer::new(401, r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#)
                .header("WWW-Authenticate", &challenge)
        })
    }
}

async fn start_bearer(anonymous_ok: bool) -> (String, Arc<Mutex<Vec<Request>>>, Arc<Image>) {
    let img = Arc::new(image());
    // The script needs its own address for the realm: bind first, then install.
    let cell: Arc<Mutex<Option<Script>>> = Arc::new(Mutex::new(None));
    let cell2 = cell.clone();
    let (addr, log) = serve(Arc::new(move |r: &Request| {
        let s = cell2.lock().unwrap().clone().unwrap();
        s(r)
    }))
    .await;
    *cell.lock().unwrap() = Some(bearer_script(img.clone(), anonymous_ok)(&addr));
    (addr, log, img)
}

#[tokio::test]
async fn bearer_flow_with_basic_to_the_token_endpoint() {
    let (addr, log, img) = start_bearer(false).await;
    let tmp = tempfile::tempdir().unwrap();
    let store = ContentStore::open(tmp.path()).unwrap();
    let mut cfg = fast_config();
    cfg.explicit_credentials
        .insert(addr.clone(), Credential::basic("u", "p"));
    let r: Reference = format!("{addr}/lib/x:latest").parse().unwrap();
    let pulled = RegistryClient::new(cfg)
        .pull(&r, &PullOptions::default(), &store)
        .await
        .unwrap();
    assert_eq!(pulled.stats.blobs_fetched, 2);
    assert!(store.contains(&Digest::sha256_of(&img.layer)));
    assert_eq!(
        count(&log, "/token"),
        1,
        "one token serves every request of the same scope"
    );
}

#[tokio::test]
async fn bearer_flow_anonymous_token() {
    let (addr, log, _img) = start_bearer(true).await;
    let tmp = tempfile::tempdir().unwrap();
    let store = ContentStore::open(tmp.path()).unwrap();
    let r: Reference = format!("{addr}/lib/x:latest").parse().unwrap();
    RegistryClient::new(fast_config())
        .pull(&r, &PullOptions::default(), &store)
        .await
        .unwrap();
    assert_eq!(count(&log, "/token"), 1);
}

#[tokio::test]
async fn bearer_flow_wrong_password_and_no_credentials() {
    let (addr, _log, _img) = start_bearer(false).await;
    let tmp = tempfile::tempdir().unwrap();
    let store = ContentStore::open(tmp.path()).unwrap();
    let r: Reference = format!("{addr}/lib/x:latest").parse().unwrap();
    let mut cfg = fast_config();
    cfg.explicit_credentials
        .insert(addr.clone(), Credential::basic("u", "wrong"));
    let e = RegistryClient::new(cfg)
        .pull(&r, &PullOptions::default(), &store)
        .await
        .unwrap_err();
    assert!(
        matches!(e, RegistryError::InvalidCredentials { .. }),
        "{e:?}"
    );
    let e = RegistryClient::new(fast_config())
        .pull(&r, &PullOptions::default(), &store)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("authentication required: run `imgfarm login {addr}`")
    );
}

#[tokio::test]
async fn transient_5xx_is_retried_then_gives_up() {
    let img = Arc::new(image());
    let hits = Arc::new(Mutex::new(0u32));
    let (img2, hits2) = (img.clone(), hits.clone());
    let (addr, _log) = serve(Arc::new(move |req: &Request| {
        if req.target == "/v2/" {
            return Answer::new(200, "{}");
        }
        if req.target == "/v2/lib/x/manifests/latest" {
            let mut h = hits2.lock().unwrap();
            *h += 1;
            if *h <= 2 {
                return Answer::new(503, "busy").header("Retry-After", "0");
            }
        }
        content(&img2, req).unwrap_or_else(|| Answer::new(404, ""))
    }))
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let store = ContentStore::open(tmp.path()).unwrap();
    let r: Reference = format!("{addr}/lib/x:latest").parse().unwrap();
    RegistryClient::new(fast_config())
        .pull(&r, &PullOptions::default(), &store)
        .await
        .unwrap();
    assert_eq!(*hits.lock().unwrap(), 3);

    // Always 503: bounded attempts, then the status is reported.
    let (addr, log) = serve(Arc::new(|req: &Request| {
        if req.target == "/v2/" {
            Answer::new(200, "{}")
        } else {
            Answer::new(503, "down for maintenance")
        }
    }))
    .await;
    let r: Reference = format!("{addr}/lib/x:latest").parse().unwrap();
    let e = RegistryClient::new(fast_config())
        .pull(&r, &PullOptions::default(), &store)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("HTTP 503") && e.to_string().contains("down for maintenance"),
        "{e}"
    );
    assert_eq!(count(&log, "/v2/lib"), 4, "default policy: 4 attempts");
}

#[tokio::test]
async fn body_cut_midway_restarts_the_blob() {
    let img = Arc::new(image());
    let cuts = Arc::new(Mutex::new(0u32));
    let (img2, cuts2) = (img.clone(), cuts.clone());
    let layer_path = format!("/v2/lib/x/blobs/{}", Digest::sha256_of(&img.layer));
    let (addr, _log) = serve(Arc::new(move |req: &Request| {
        if req.target == "/v2/" {
            return Answer::new(200, "{}");
        }
        let mut a = content(&img2, req).unwrap_or_else(|| Answer::new(404, ""));
        if req.target == layer_path {
            let mut c = cuts2.lock().unwrap();
            if *c == 0 {
                *c += 1;
                a.cut_after = Some(1000);
            }
        }
        a
    }))
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let store = ContentStore::open(tmp.path()).unwrap();
    let r: Reference = format!("{addr}/lib/x:latest").parse().unwrap();
    let pulled = RegistryClient::new(fast_config())
        .pull(&r, &PullOptions::default(), &store)
        .await
        .unwrap();
    assert_eq!(pulled.stats.blobs_fetched, 2);
    assert_eq!(
        store
            .read_bytes(&Digest::sha256_of(&img.layer), 1 << 20)
            .unwrap(),
        img.layer
    );
}

#[tokio::test]
async fn oversized_or_lying_manifests_are_refused() {
    let big = vec![b' '; 5 * 1024 * 1024];
    let img = Arc::new(image());
    let img2 = img.clone();
    let (addr, _log) = serve(Arc::new(move |req: &Request| match req.target.as_str() {
        "/v2/" => Answer::new(200, "{}"),
        "/v2/lib/big/manifests/latest" => Answer::new(200, big.clone()),
        "/v2/lib/liar/manifests/latest" => Answer::new(200, img2.manifest.clone()).header(
            "Docker-Content-Digest",
            "sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ),
        _ => Answer::new(404, ""),
    }))
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let store = ContentStore::open(tmp.path()).unwrap();
    let client = RegistryClient::new(fast_config());
    let r: Reference = format!("{addr}/lib/big:latest").parse().unwrap();
    let e = client
        .pull(&r, &PullOptions::default(), &store)
        .await
        .unwrap_err();
    assert!(
        matches!(e, RegistryError::TooLarge { limit: 4194304, .. }),
        "{e:?}"
    );
    let r: Reference = format!("{addr}/lib/liar:latest").parse().unwrap();
    let e = client
        .pull(&r, &PullOptions::default(), &store)
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_fetches_run_in_parallel_within_the_bound() {
    // An image with 8 layers; each blob answer takes 150 ms.
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let layers: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 1000]).collect();
    let desc = |b: &[u8]| {
        format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}"#,
            Digest::sha256_of(b),
            b.len()
        )
    };
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[{}]}}"#,
        desc(&config),
        layers.iter().map(|l| desc(l)).collect::<Vec<_>>().join(",")
    );
    let mut blobs: HashMap<String, Vec<u8>> = layers
        .iter()
        .map(|l| {
            (
                format!("/v2/lib/x/blobs/{}", Digest::sha256_of(l)),
                l.clone(),
            )
        })
        .collect();
    blobs.insert(
        format!("/v2/lib/x/blobs/{}", Digest::sha256_of(&config)),
        config.clone(),
    );
    let (addr, _log) = serve(Arc::new(move |req: &Request| {
        if req.target == "/v2/" {
            return Answer::new(200, "{}");
        }
        if req.target == "/v2/lib/x/manifests/latest" {
            return Answer::new(200, manifest.clone());
        }
        match blobs.get(&req.target) {
            Some(b) => {
                let mut a = Answer::new(200, b.clone());
                a.delay = Some(std::time::Duration::from_millis(150));
                a
            }
            None => Answer::new(404, ""),
        }
    }))
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let store = ContentStore::open(tmp.path()).unwrap();
    let mut cfg = fast_config();
    cfg.max_parallel = 3;
    let client = RegistryClient::new(cfg);
    let r: Reference = format!("{addr}/lib/x:latest").parse().unwrap();
    let start = std::time::Instant::now();
    let pulled = client
        .pull(&r, &PullOptions::default(), &store)
        .await
        .unwrap();
    let took = start.elapsed();
    assert_eq!(pulled.stats.blobs_fetched, 9);
    let max = SLOW_MAX.load(Ordering::SeqCst);
    assert!(max <= 3, "at most 3 blob requests at once, saw {max}");
    assert!(max >= 2, "blobs are fetched in parallel, saw {max}");
    eprintln!("9 blobs of 150 ms each, 3 at a time: {took:?} (sequential: over 1.35 s)");
}

/// One fake registry per case; each answers `/v2/` with 200 and the rest by `f`.
async fn simple(f: impl Fn(&Request) -> Option<Answer> + Send + Sync + 'static) -> String {
    let (addr, _log) = serve(Arc::new(move |req: &Request| {
        if req.target == "/v2/" {
            return Answer::new(200, "{}");
        }
        f(req).unwrap_or_else(|| {
            Answer::new(404, r#"{"errors":[{"code":"NOT_FOUND","message":"nope"}]}"#)
        })
    }))
    .await;
    addr
}

#[tokio::test]
async fn error_paths_have_clear_errors() {
    let img = Arc::new(image());
    let tmp = tempfile::tempdir().unwrap();
    let store = ContentStore::open(tmp.path().join("s")).unwrap();
    let client = RegistryClient::new(fast_config());
    let pull = |addr: &str| format!("{addr}/lib/x:latest").parse::<Reference>().unwrap();

    // A blob the manifest names but the registry lacks.
    let i = img.clone();
    let addr = simple(move |r| {
        (r.target == "/v2/lib/x/manifests/latest").then(|| Answer::new(200, i.manifest.clone()))
    })
    .await;
    let e = client
        .pull(&pull(&addr), &PullOptions::default(), &store)
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::BlobUnknown { .. }), "{e:?}");
    assert!(e.to_string().contains("blob unknown"), "{e}");

    // A blob whose length is not the descriptor's size.
    let i = img.clone();
    let addr = simple(move |r| match content(&i, r) {
        Some(mut a) if r.target.contains("/blobs/") => {
            a.body.push(0);
            Some(a)
        }
        other => other,
    })
    .await;
    let e = client
        .pull(&pull(&addr), &PullOptions::default(), &store)
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::SizeMismatch { .. }), "{e:?}");
    assert!(!store.contains(&Digest::sha256_of(&img.layer)));

    // 403: authenticated but not allowed.
    let addr = simple(|_| {
        Some(Answer::new(403, r#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#))
    })
    .await;
    let e = client
        .pull(&pull(&addr), &PullOptions::default(), &store)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("access denied: pull from lib/x on {addr}: DENIED: requested access to the resource is denied")
    );

    // An unusable challenge.
    let addr =
        simple(|_| Some(Answer::new(401, "").header("WWW-Authenticate", "Negotiate abc"))).await;
    let e = client
        .pull(&pull(&addr), &PullOptions::default(), &store)
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::Challenge { .. }), "{e:?}");

    // A lone manifest for another platform.
    let i = img.clone();
    let addr = simple(move |r| content(&i, r)).await;
    let opts = PullOptions {
        platforms: imgfarm_common::registry::PlatformSelection::Only(vec![
            imgfarm_common::platform::Platform::linux_arm64(),
        ]),
    };
    let e = client.pull(&pull(&addr), &opts, &store).await.unwrap_err();
    assert!(
        e.to_string().contains("no image for platform linux/arm64")
            && e.to_string().contains("available: linux/amd64"),
        "{e}"
    );
    assert!(
        !store.contains(&Digest::sha256_of(&img.layer)),
        "layers of the wrong platform are not fetched"
    );

    // Nothing listening: both schemes are tried on loopback, both reasons shown.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = client
        .pull(
            &pull(&format!("127.0.0.1:{port}")),
            &PullOptions::default(),
            &store,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, RegistryError::Unreachable { .. }) && e.to_string().contains("http:"),
        "{e}"
    );
}

#[tokio::test]
async fn push_error_paths() {
    let img = image();
    let tmp = tempfile::tempdir().unwrap();
    let store = ContentStore::open(tmp.path().join("s")).unwrap();
    let client = RegistryClient::new(fast_config());
    // The manifest is local but its layer is not.
    let manifest = store.put_bytes(&img.manifest).unwrap();
    store.put_bytes(&img.config).unwrap();
    let addr = simple(|_| None).await;
    let target: Reference = format!("{addr}/lib/x:1").parse().unwrap();
    let e = client
        .push(&store, &manifest, &target, &PushOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::MissingLocal { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains(&Digest::sha256_of(&img.layer).to_string()),
        "{e}"
    );

    // The registry opens an upload without a Location.
    store.put_bytes(&img.layer).unwrap();
    let addr = simple(|r| (r.method == "POST").then(|| Answer::new(202, ""))).await;
    let target: Reference = format!("{addr}/lib/x:1").parse().unwrap();
    let e = client
        .push(&store, &manifest, &target, &PushOptions::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no Location header"), "{e}");

    // A root that is not in the store at all.
    let absent = Digest::sha256_of(b"absent");
    let e = client
        .push(&store, &absent, &target, &PushOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::MissingLocal { .. }), "{e:?}");
}
