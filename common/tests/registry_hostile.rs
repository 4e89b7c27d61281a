//! A hostile registry (issue 15, hostile input): answers that lie about
//! digests and sizes, an index that points back at itself, a manifest that
//! never ends, and an auth challenge sending credentials to another host.
//! Each pull must fail with a clear message, never loop or read a huge body
//! into memory, and leave the content store as it was: no manifest, no
//! unverified bytes, no temp files, no refs, and nothing a `gc` keeps.
//!
//! The registry here is a few lines of HTTP/1.1 on a std `TcpListener`
//! thread, so a test can stream a gigabyte lazily and count what the
//! client actually read.

use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::oci::Digest;
use imgfarm_common::registry::{
    Credential, PullOptions, Reference, RegistryClient, RegistryConfig, RegistryError,
};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A request as the hostile registry saw it.
#[derive(Debug, Clone)]
struct Seen {
    target: String,
    headers: HashMap<String, String>,
}

/// What to answer.
enum Reply {
    /// Status, headers, body (with a `Content-Length` unless `close_delimited`).
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        close_delimited: bool,
    },
    /// 200 with `len` bytes of `byte`, written lazily in 64 KiB pieces until
    /// done or the client hangs up; `Content-Length` is sent when
    /// `announce`.
    Stream { len: u64, byte: u8, announce: bool },
}

fn ok(body: impl Into<Vec<u8>>) -> Reply {
    Reply::Full {
        status: 200,
        headers: Vec::new(),
        body: body.into(),
        close_delimited: false,
    }
}

fn status(code: u16, body: &str, headers: &[(&str, &str)]) -> Reply {
    Reply::Full {
        status: code,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.as_bytes().to_vec(),
        close_delimited: false,
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// A hostile registry on `127.0.0.1:PORT`: the request log and the body
/// bytes written so far.
struct Hostile {
    addr: String,
    log: Arc<Mutex<Vec<Seen>>>,
    sent: Arc<AtomicU64>,
}

impl Hostile {
    fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        Self::on(TcpListener::bind("127.0.0.1:0").unwrap(), Arc::new(handler))
    }

    fn on(listener: TcpListener, handler: Handler) -> Self {
        let addr = listener.local_addr().unwrap().to_string();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(AtomicU64::new(0));
        let (log2, sent2) = (log.clone(), sent.clone());
        std::thread::spawn(move || {
            for sock in listener.incoming() {
                let Ok(sock) = sock else { return };
                let (handler, log, sent) = (handler.clone(), log2.clone(), sent2.clone());
                std::thread::spawn(move || serve_one(sock, &*handler, &log, &sent));
            }
        });
        Self { addr, log, sent }
    }

    fn requests(&self, prefix: &str) -> Vec<Seen> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|s| s.target.starts_with(prefix))
            .cloned()
            .collect()
    }

    fn reference(&self, repo_and_tag: &str) -> Reference {
        format!("{}/{repo_and_tag}", self.addr).parse().unwrap()
    }
}

fn serve_one(
    sock: TcpStream,
    handler: &dyn Fn(&Seen) -> Reply,
    log: &Mutex<Vec<Seen>>,
    sent: &AtomicU64,
) {
    let mut reader = BufReader::new(sock.try_clone().unwrap());
    let mut out = sock;
    loop {
        let mut first = String::new();
        if reader.read_line(&mut first).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let mut parts = first.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let seen = Seen {
            target: parts.next().unwrap_or("").to_string(),
            headers,
        };
        log.lock().unwrap().push(seen.clone());
        match handler(&seen) {
            Reply::Full {
                status,
                headers,
                body,
                close_delimited,
            } => {
                let mut head = format!("HTTP/1.1 {status} X\r\n");
                if close_delimited {
                    head.push_str("Connection: close\r\n");
                } else {
                    head.push_str(&format!("Content-Length: {}\r\n", body.len()));
                }
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                if out.write_all(head.as_bytes()).is_err() {
                    return;
                }
                if method != "HEAD" {
                    if out.write_all(&body).is_err() {
                        return;
                    }
                    sent.fetch_add(body.len() as u64, Ordering::Relaxed);
                }
                if close_delimited {
                    return;
                }
            }
            Reply::Stream {
                len,
                byte,
                announce,
            } => {
                let mut head = "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n".to_string();
                if announce {
                    head.push_str(&format!("Content-Length: {len}\r\n"));
                } else {
                    head.push_str("Connection: close\r\n");
                }
                head.push_str("\r\n");
                if out.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let piece = vec![byte; 64 * 1024];
                let mut left = len;
                while left > 0 {
                    let n = left.min(piece.len() as u64) as usize;
                    if out.write_all(&piece[..n]).is_err() {
                        return;
                    }
                    sent.fetch_add(n as u64, Ordering::Relaxed);
                    left -= n as u64;
                }
                return;
            }
        }
    }
}

/// One small image: config, layer, manifest, and an index over it.
struct Image {
    config: Vec<u8>,
    layer: Vec<u8>,
    manifest: Vec<u8>,
    index: Vec<u8>,
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn image() -> Image {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let layer = vec![7u8; 10_000];
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#,
        Digest::sha256_of(&config),
        config.len(),
        Digest::sha256_of(&layer),
        layer.len()
    )
    .into_bytes();
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{},"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
        Digest::sha256_of(&manifest),
        manifest.len()
    )
    .into_bytes();
    Image {
        config,
        layer,
        manifest,
        index,
    }
}

/// The honest answers for `img` under `lib/x`; `None` for anything else.
fn honest(img: &Image, seen: &Seen) -> Option<Reply> {
    let path = seen.target.split('?').next().unwrap_or("");
    if path == "/v2/" {
        return Some(ok("{}"));
    }
    let manifests = [(&img.manifest, OCI_MANIFEST), (&img.index, OCI_INDEX)];
    for (body, mt) in manifests {
        if path == format!("/v2/lib/x/manifests/{}", Digest::sha256_of(body)) {
            return Some(typed(body.clone(), mt));
        }
    }
    for blob in [&img.config, &img.layer] {
        if path == format!("/v2/lib/x/blobs/{}", Digest::sha256_of(blob)) {
            return Some(ok(blob.clone()));
        }
    }
    None
}

fn typed(body: Vec<u8>, media_type: &str) -> Reply {
    Reply::Full {
        status: 200,
        headers: vec![("Content-Type".into(), media_type.into())],
        body,
        close_delimited: false,
    }
}

fn not_found() -> Reply {
    status(
        404,
        r#"{"errors":[{"code":"NOT_FOUND","message":"nope"}]}"#,
        &[],
    )
}

fn client() -> RegistryClient {
    let mut cfg = RegistryConfig::default();
    cfg.retry.base_delay = std::time::Duration::from_millis(5);
    RegistryClient::new(cfg)
}

/// What a store holds: blob files, temp files and refs.
fn contents(root: &Path) -> (Vec<String>, Vec<String>, usize) {
    let list = |dir: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(root.join(dir))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let refs = ContentStore::open(root).unwrap().list_refs().unwrap().len();
    (list("blobs/sha256"), list("ingest"), refs)
}

/// The store holds no manifest, no bytes that fail their digest, no temp
/// file and no ref; verified blobs fetched before the failure may remain
/// (they are content, named by their own digest) but nothing refers to
/// them, so `gc` removes them and the store is empty again.
fn assert_untouched(store: &ContentStore, what: &str) {
    let (blobs, ingest, refs) = contents(store.root());
    assert!(ingest.is_empty(), "{what}: temp files left: {ingest:?}");
    assert_eq!(refs, 0, "{what}: refs written");
    for hex in &blobs {
        let d: Digest = format!("sha256:{hex}").parse().unwrap();
        let bytes = std::fs::read(store.blob_path(&d)).unwrap();
        assert_eq!(
            Digest::sha256_of(&bytes),
            d,
            "{what}: a stored blob fails its digest"
        );
        assert!(
            !bytes.starts_with(b"{\"schemaVersion\""),
            "{what}: a manifest was stored: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    store.gc().unwrap();
    let (blobs, _, _) = contents(store.root());
    assert!(blobs.is_empty(), "{what}: gc keeps {blobs:?}");
}

fn fresh_store() -> (tempfile::TempDir, ContentStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path().join("store")).unwrap();
    (dir, store)
}

async fn pull_err(reference: &Reference, store: &ContentStore) -> RegistryError {
    client()
        .pull(reference, &PullOptions::default(), store)
        .await
        .expect_err("the hostile pull must fail")
}

#[tokio::test]
async fn manifest_whose_digest_does_not_match_is_refused() {
    let img = Arc::new(image());
    let other = b"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:1111111111111111111111111111111111111111111111111111111111111111\",\"size\":1},\"layers\":[]}".to_vec();
    let want = Digest::sha256_of(&img.manifest);
    // By digest: the registry serves another (valid) manifest under it.
    let (i, o) = (img.clone(), other.clone());
    let reg = Hostile::start(move |s| {
        if s.target.starts_with("/v2/lib/x/manifests/") {
            return typed(o.clone(), OCI_MANIFEST);
        }
        honest(&i, s).unwrap_or_else(not_found)
    });
    let (_dir, store) = fresh_store();
    let e = pull_err(&reg.reference(&format!("lib/x@{want}")), &store).await;
    assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(want.as_str()),
        "names the expected digest: {msg}"
    );
    assert!(
        reg.requests("/v2/lib/x/blobs/").is_empty(),
        "no blob is fetched for an unverified manifest"
    );
    assert_untouched(&store, "manifest by digest");

    // Through an index: the index is honest, the child it names is not.
    let (i, o) = (img.clone(), other.clone());
    let reg = Hostile::start(move |s| {
        if s.target == "/v2/lib/x/manifests/latest" {
            return typed(i.index.clone(), OCI_INDEX);
        }
        if s.target.starts_with("/v2/lib/x/manifests/sha256:") {
            return typed(o.clone(), OCI_MANIFEST);
        }
        honest(&i, s).unwrap_or_else(not_found)
    });
    let e = pull_err(&reg.reference("lib/x:latest"), &store).await;
    assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{e:?}");
    assert!(e.to_string().contains(want.as_str()), "{e}");
    assert_untouched(&store, "index child");
}

#[tokio::test]
async fn blob_whose_size_or_digest_is_wrong_is_refused() {
    let img = Arc::new(image());
    let layer_path = format!("/v2/lib/x/blobs/{}", Digest::sha256_of(&img.layer));
    let (_dir, store) = fresh_store();
    // Each lie about the layer: same size other bytes; longer and shorter,
    // announced; longer and shorter with no Content-Length at all.
    type Lie = fn(&[u8]) -> Reply;
    let lies: [(&str, Lie); 5] = [
        ("same size, wrong bytes", |l| {
            let mut b = l.to_vec();
            b[5000] ^= 0xff;
            ok(b)
        }),
        ("one byte more", |l| ok([l, &[0][..]].concat())),
        ("one byte less", |l| ok(l[1..].to_vec())),
        ("unannounced, far longer", |_| Reply::Stream {
            len: 50 << 20,
            byte: 7,
            announce: false,
        }),
        ("unannounced, shorter", |l| Reply::Full {
            status: 200,
            headers: Vec::new(),
            body: l[..100].to_vec(),
            close_delimited: true,
        }),
    ];
    for (what, lie) in lies {
        let (i, lp) = (img.clone(), layer_path.clone());
        let reg = Hostile::start(move |s| {
            if s.target == "/v2/lib/x/manifests/latest" {
                return typed(i.manifest.clone(), OCI_MANIFEST);
            }
            if s.target == lp {
                return lie(&i.layer);
            }
            honest(&i, s).unwrap_or_else(not_found)
        });
        let e = pull_err(&reg.reference("lib/x:latest"), &store).await;
        match what {
            "same size, wrong bytes" => {
                assert!(
                    matches!(e, RegistryError::DigestMismatch { .. }),
                    "{what}: {e:?}"
                )
            }
            "unannounced, shorter" => assert!(
                matches!(
                    e,
                    RegistryError::SizeMismatch { .. } | RegistryError::Unreachable { .. }
                ),
                "{what}: {e:?}"
            ),
            _ => assert!(
                matches!(e, RegistryError::SizeMismatch { .. }),
                "{what}: {e:?}"
            ),
        }
        assert!(
            e.to_string()
                .contains(Digest::sha256_of(&img.layer).as_str()),
            "{what}: names the blob: {e}"
        );
        assert!(
            reg.sent.load(Ordering::Relaxed) < 48 << 20,
            "{what}: the client kept reading a blob past its size"
        );
        assert!(!store.contains(&Digest::sha256_of(&img.layer)), "{what}");
        assert_untouched(&store, what);
    }
}

#[tokio::test]
async fn index_that_refers_to_itself_does_not_loop() {
    let img = image();
    // Content addressing makes a true cycle impossible, so the hostile
    // registry answers *every* manifest request, by tag or by digest, with
    // the same index, whose entry claims to be an index (first case) or a
    // manifest (second case) under some digest.
    for (entry_type, expected) in [(OCI_INDEX, "nested"), (OCI_MANIFEST, "mismatch")] {
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{entry_type}","digest":"{}","size":{},"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            Digest::sha256_of(&img.index),
            img.index.len()
        )
        .into_bytes();
        let reg = Hostile::start(move |s| {
            if s.target == "/v2/" {
                return ok("{}");
            }
            if s.target.starts_with("/v2/lib/x/manifests/") {
                return typed(index.clone(), OCI_INDEX);
            }
            not_found()
        });
        let (_dir, store) = fresh_store();
        let (c, r, opts) = (
            client(),
            reg.reference("lib/x:latest"),
            PullOptions::default(),
        );
        let pull = c.pull(&r, &opts, &store);
        let e = tokio::time::timeout(std::time::Duration::from_secs(30), pull)
            .await
            .expect("the pull of a self-referring index ends")
            .expect_err("and fails");
        let msg = e.to_string();
        match expected {
            "nested" => assert!(
                msg.contains("lists no image manifest") && msg.contains(OCI_INDEX),
                "{msg}"
            ),
            _ => assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{msg}"),
        }
        let fetched = reg.requests("/v2/lib/x/manifests/").len();
        assert!(fetched <= 2, "{fetched} manifest requests for one index");
        assert_untouched(&store, entry_type);
    }
}

#[tokio::test]
async fn endless_manifest_is_refused_at_the_bound_without_reading_it() {
    // A 1 GiB manifest, announced (Content-Length) and unannounced (the body
    // runs until the connection closes). Both are refused at the 4 MiB
    // manifest bound; the client reads no more than that plus socket
    // buffers, and holds no more than that in memory.
    for announce in [true, false] {
        let reg = Hostile::start(move |s| {
            if s.target == "/v2/" {
                return ok("{}");
            }
            Reply::Stream {
                len: 1 << 30,
                byte: b' ',
                announce,
            }
        });
        let (_dir, store) = fresh_store();
        let start = std::time::Instant::now();
        let e = pull_err(&reg.reference("lib/x:latest"), &store).await;
        assert!(
            matches!(e, RegistryError::TooLarge { limit: 4194304, .. }),
            "announce={announce}: {e:?}"
        );
        assert!(
            e.to_string().contains("manifest"),
            "announce={announce}: {e}"
        );
        // Let the server notice the hang-up, then look at what it managed to send.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let sent = reg.sent.load(Ordering::Relaxed);
        eprintln!(
            "1 GiB manifest, announce={announce}: refused after {:?}, {} KiB written by the server",
            start.elapsed(),
            sent >> 10
        );
        assert!(
            sent < 64 << 20,
            "announce={announce}: the server wrote {sent} bytes; the client did not stop at the bound"
        );
        assert_eq!(
            reg.requests("/v2/lib/x/manifests/").len(),
            1,
            "a refused body is not retried"
        );
        assert_untouched(&store, "endless manifest");
    }
}

/// A Bearer registry whose token realm is another host (`localhost` for a
/// registry addressed as `127.0.0.1`): the token is asked for, as docker
/// does, but the registry's Basic credentials are never sent there, nor to
/// a blob redirect on another host.
#[tokio::test]
async fn credentials_never_go_to_a_realm_or_redirect_on_another_host() {
    let img = Arc::new(image());
    // The token service on "another host": anonymous tokens only.
    let tokens = Hostile::start(|s| {
        if s.target.starts_with("/token") {
            if s.headers.contains_key("authorization") {
                return status(400, "credentials sent to the wrong host", &[]);
            }
            return ok(r#"{"token":"T-anon"}"#);
        }
        not_found()
    });
    let token_port = tokens.addr.rsplit(':').next().unwrap().to_string();
    // Blobs are redirected to a mirror on another host, too.
    let mirror = {
        let i = img.clone();
        Hostile::start(move |s| {
            let path = s.target.replace("/mirror", "");
            honest(
                &i,
                &Seen {
                    target: path,
                    headers: s.headers.clone(),
                },
            )
            .unwrap_or_else(not_found)
        })
    };
    let mirror_port = mirror.addr.rsplit(':').next().unwrap().to_string();
    let realm = format!(r#"Bearer realm="http://localhost:{token_port}/token",service="hostile""#);
    let i = img.clone();
    let reg = Hostile::start(move |s| {
        let auth = s.headers.get("authorization").map(String::as_str);
        if s.target == "/v2/" || auth != Some("Bearer T-anon") {
            return status(
                401,
                r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#,
                &[("WWW-Authenticate", &realm)],
            );
        }
        if s.target.contains("/blobs/") {
            let to = format!("http://localhost:{mirror_port}/mirror{}", s.target);
            return status(307, "", &[("Location", &to)]);
        }
        if s.target == "/v2/lib/x/manifests/latest" {
            return typed(i.manifest.clone(), OCI_MANIFEST);
        }
        not_found()
    });
    let (_dir, store) = fresh_store();
    let mut cfg = RegistryConfig::default();
    cfg.retry.base_delay = std::time::Duration::from_millis(5);
    cfg.explicit_credentials
        .insert(reg.addr.clone(), Credential::basic("u", "secret"));
    let pulled = RegistryClient::new(cfg)
        .pull(
            &reg.reference("lib/x:latest"),
            &PullOptions::default(),
            &store,
        )
        .await;
    let token_requests = tokens.requests("/token");
    assert!(
        !token_requests.is_empty(),
        "the realm was asked for a token"
    );
    for s in token_requests.iter().chain(&mirror.requests("/")) {
        assert!(
            !s.headers.contains_key("authorization"),
            "credentials went to another host: {s:?}"
        );
    }
    let pulled = pulled.expect("an anonymous token from the other host still pulls a public image");
    assert_eq!(pulled.stats.blobs_fetched, 2);
    // The registry itself saw the token, never the password either (Bearer mode).
    for s in reg.requests("/v2/lib/") {
        let auth = s.headers.get("authorization").cloned().unwrap_or_default();
        assert!(
            !auth.starts_with("Basic"),
            "Basic sent in Bearer mode: {s:?}"
        );
    }
}

/// The same with a token service that insists on credentials: the pull
/// fails, saying why, and still nothing is sent there.
#[tokio::test]
async fn realm_on_another_host_demanding_credentials_fails_clearly() {
    let tokens = Hostile::start(|s| {
        if s.headers.contains_key("authorization") {
            return ok(r#"{"token":"stolen"}"#);
        }
        status(401, "", &[])
    });
    let token_port = tokens.addr.rsplit(':').next().unwrap().to_string();
    let realm = format!(r#"Bearer realm="http://localhost:{token_port}/token",service="hostile""#);
    let reg = Hostile::start(move |_| status(401, "", &[("WWW-Authenticate", &realm)]));
    let (_dir, store) = fresh_store();
    let mut cfg = RegistryConfig::default();
    cfg.explicit_credentials
        .insert(reg.addr.clone(), Credential::basic("u", "secret"));
    let e = RegistryClient::new(cfg)
        .pull(
            &reg.reference("lib/x:latest"),
            &PullOptions::default(),
            &store,
        )
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("localhost:{token_port}")) && msg.contains("not sent"),
        "{msg}"
    );
    for s in tokens.requests("/") {
        assert!(!s.headers.contains_key("authorization"), "{s:?}");
    }
    assert_untouched(&store, "realm demanding credentials");
}
