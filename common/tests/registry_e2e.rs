//! The registry client against a real `docker-registry` (plain, TLS, TLS +
//! htpasswd), with skopeo as the independent reader/writer.

use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::oci::Digest;
use imgfarm_common::platform::Platform;
use imgfarm_common::registry::{
    login, Credential, CredentialSources, PlatformSelection, PullOptions, PushOptions, Reference,
    RegistryClient, RegistryConfig, RegistryError, UploadMode,
};
use imgfarm_testkit::{
    init_tracing, or_skip, require_tools_or_skip, run_checked, BaseImages, Registry,
    RegistryOptions,
};
use std::path::Path;
use std::process::Command;

fn fixtures(test: &str, opts: RegistryOptions) -> Option<(Registry, BaseImages)> {
    init_tracing();
    if !require_tools_or_skip(test, &["skopeo"]) {
        return None;
    }
    let reg = or_skip(test, Registry::start_with(opts))?;
    let base = or_skip(test, BaseImages::build())?;
    Some((reg, base))
}

/// A store holding every blob of the base-image layout.
fn store_with_base(dir: &Path, base: &BaseImages) -> ContentStore {
    let store = ContentStore::open(dir).unwrap();
    for e in std::fs::read_dir(base.layout_dir().join("blobs/sha256")).unwrap() {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        store.put_bytes(&bytes).unwrap();
    }
    store
}

/// Client config for `reg`: its CA in a docker-style certs.d, its credentials
/// in a docker config.json written by `login`.
fn config_for(reg: &Registry, dir: &Path) -> RegistryConfig {
    let mut cfg = RegistryConfig::default();
    if let Some(ca) = reg.ca_cert() {
        let certs_d = dir.join("docker/certs.d");
        let host_dir = certs_d.join(reg.addr());
        std::fs::create_dir_all(&host_dir).unwrap();
        std::fs::copy(ca, host_dir.join("ca.crt")).unwrap();
        cfg.certs_dirs = vec![certs_d];
    }
    if let Some((u, p)) = reg.credentials() {
        let docker = dir.join("docker");
        login(&docker, reg.addr(), u, p).unwrap();
        cfg.credentials = CredentialSources::from_vars(None, Some(docker), None, None);
    }
    cfg
}

fn reference(reg: &Registry, repo_tag: &str) -> Reference {
    format!("{}/{repo_tag}", reg.addr()).parse().unwrap()
}

fn d(s: &str) -> Digest {
    s.parse().unwrap()
}

fn skopeo(reg: &Registry, args: &[&str], image: &str) -> Vec<u8> {
    let out = run_checked(
        Command::new("skopeo")
            .args(["--insecure-policy", "inspect"])
            .args(args)
            .args(reg.skopeo_flags_plain())
            .arg(format!("docker://{}/{image}", reg.addr()))
            .env("REGISTRY_AUTH_FILE", "/nonexistent/imgfarm-auth.json"),
    )
    .unwrap();
    out.stdout
}

fn sha256(b: &[u8]) -> String {
    Digest::sha256_of(b).to_string()
}

/// Push with our client, read back with skopeo, pull into a fresh store, pull again.
async fn roundtrip(test: &str, opts: RegistryOptions) {
    let Some((reg, base)) = fixtures(test, opts) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let src = store_with_base(&tmp.path().join("src"), &base);
    let client = RegistryClient::new(config_for(&reg, tmp.path()));
    let target = reference(&reg, "imgfarm/busybox:multi");
    let index = d(base.index_digest());

    let report = client
        .push(&src, &index, &target, &PushOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (
            report.uploaded,
            report.mounted,
            report.existing,
            report.manifests
        ),
        (4, 0, 0, 3),
        "{report:?}"
    );

    // skopeo, an independent reader, sees the same index and per-platform manifests.
    let raw = skopeo(&reg, &["--raw"], "imgfarm/busybox:multi");
    assert_eq!(sha256(&raw), base.index_digest());
    let idx: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    for arch in ["amd64", "arm64"] {
        let entry = idx["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["platform"]["architecture"] == arch)
            .unwrap();
        assert_eq!(entry["digest"], base.manifest_digest(arch), "{arch}");
        let by_digest = format!("imgfarm/busybox@{}", base.manifest_digest(arch));
        assert_eq!(
            sha256(&skopeo(&reg, &["--raw"], &by_digest)),
            base.manifest_digest(arch)
        );
        let info: serde_json::Value = serde_json::from_slice(&skopeo(
            &reg,
            &["--override-arch", arch],
            "imgfarm/busybox:multi",
        ))
        .unwrap();
        assert_eq!(info["Architecture"], arch);
        assert_eq!(info["Layers"][0], base.layer_digest(arch));
    }

    // Pull everything into an empty store.
    let dst = ContentStore::open(tmp.path().join("dst")).unwrap();
    let pulled = client
        .pull(&target, &PullOptions::default(), &dst)
        .await
        .unwrap();
    assert_eq!(pulled.root.digest, index);
    assert_eq!(pulled.images.len(), 2);
    for img in &pulled.images {
        let arch = img.platform.as_ref().unwrap().architecture.clone();
        assert_eq!(img.manifest.digest.as_str(), base.manifest_digest(&arch));
        assert_eq!(img.config.digest.as_str(), base.config_digest(&arch));
        assert_eq!(img.layers[0].digest.as_str(), base.layer_digest(&arch));
        for digest in [
            &img.manifest.digest,
            &img.config.digest,
            &img.layers[0].digest,
        ] {
            assert_eq!(
                dst.read_bytes(digest, 1 << 30).unwrap().len() as u64,
                dst.size(digest).unwrap()
            );
        }
    }
    assert!(dst.contains(&index));
    assert_eq!(
        (pulled.stats.blobs_fetched, pulled.stats.blobs_present),
        (4, 0)
    );

    // A second pull fetches no blobs.
    let again = client
        .pull(&target, &PullOptions::default(), &dst)
        .await
        .unwrap();
    assert_eq!(
        (again.stats.blobs_fetched, again.stats.blobs_present),
        (0, 4)
    );
}

#[tokio::test]
async fn roundtrip_plain_http() {
    roundtrip("roundtrip_plain_http", RegistryOptions::default()).await;
}

#[tokio::test]
async fn roundtrip_tls_with_certs_d_ca() {
    roundtrip(
        "roundtrip_tls_with_certs_d_ca",
        RegistryOptions {
            tls: true,
            auth: None,
        },
    )
    .await;
}

#[tokio::test]
async fn roundtrip_tls_htpasswd_with_login() {
    roundtrip(
        "roundtrip_tls_htpasswd_with_login",
        RegistryOptions::tls_auth("farmer", "s3cret-pw"),
    )
    .await;
}

#[tokio::test]
async fn pull_one_platform_of_a_skopeo_pushed_index() {
    let test = "pull_one_platform_of_a_skopeo_pushed_index";
    let Some((reg, base)) = fixtures(test, RegistryOptions::default()) else {
        return;
    };
    base.push_to(&reg, "busybox", "latest").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let store = ContentStore::open(tmp.path().join("s")).unwrap();
    let client = RegistryClient::new(config_for(&reg, tmp.path()));
    let opts = PullOptions {
        platforms: PlatformSelection::Only(vec!["linux/arm64/v8".parse::<Platform>().unwrap()]),
    };
    let pulled = client
        .pull(&reference(&reg, "busybox:latest"), &opts, &store)
        .await
        .unwrap();
    assert_eq!(pulled.root.digest.as_str(), base.index_digest());
    assert_eq!(pulled.images.len(), 1);
    assert_eq!(
        pulled.images[0].manifest.digest.as_str(),
        base.manifest_digest("arm64")
    );
    for s in [
        base.manifest_digest("arm64"),
        base.config_digest("arm64"),
        base.layer_digest("arm64"),
    ] {
        assert!(store.contains(&d(s)), "{s} should be stored");
    }
    for s in [
        base.manifest_digest("amd64"),
        base.config_digest("amd64"),
        base.layer_digest("amd64"),
    ] {
        assert!(!store.contains(&d(s)), "{s} (amd64) must not be stored");
    }
    assert_eq!(pulled.stats.blobs_fetched, 2);

    // A platform the index lacks is a clear error listing what exists.
    let opts = PullOptions {
        platforms: PlatformSelection::Only(vec!["linux/s390x".parse().unwrap()]),
    };
    let e = client
        .pull(&reference(&reg, "busybox:latest"), &opts, &store)
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("linux/s390x") && msg.contains("linux/amd64") && msg.contains("linux/arm64"),
        "{msg}"
    );
}

#[tokio::test]
async fn tampered_blob_is_rejected_and_nothing_is_stored() {
    let test = "tampered_blob_is_rejected_and_nothing_is_stored";
    let Some((reg, base)) = fixtures(test, RegistryOptions::default()) else {
        return;
    };
    base.push_to(&reg, "busybox", "latest").unwrap();
    // Flip one byte of the amd64 layer in the registry's own storage (same size).
    let path = reg.blob_path(base.layer_digest("amd64"));
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let store_dir = tmp.path().join("s");
    let store = ContentStore::open(&store_dir).unwrap();
    let client = RegistryClient::new(config_for(&reg, tmp.path()));
    let opts = PullOptions {
        platforms: PlatformSelection::Only(vec![Platform::linux_amd64()]),
    };
    let e = client
        .pull(&reference(&reg, "busybox:latest"), &opts, &store)
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(base.layer_digest("amd64")) && msg.contains("nothing was stored"),
        "{msg}"
    );
    assert!(!store.contains(&d(base.layer_digest("amd64"))));
    assert!(
        !store.contains(&d(base.index_digest())),
        "the root is stored only after its blobs"
    );
    assert!(!store.contains(&d(base.manifest_digest("amd64"))));
    let leftovers: Vec<_> = std::fs::read_dir(store_dir.join("ingest"))
        .unwrap()
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

#[tokio::test]
async fn wrong_or_missing_credentials_give_clear_401_messages() {
    let test = "wrong_or_missing_credentials_give_clear_401_messages";
    let Some((reg, _base)) = fixtures(test, RegistryOptions::tls_auth("farmer", "right")) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store = ContentStore::open(tmp.path().join("s")).unwrap();
    let r = reference(&reg, "busybox:latest");

    let mut cfg = config_for(&reg, tmp.path());
    cfg.credentials = CredentialSources::default();
    cfg.explicit_credentials
        .insert(reg.addr().to_string(), Credential::basic("farmer", "wrong"));
    let e = RegistryClient::new(cfg.clone())
        .pull(&r, &PullOptions::default(), &store)
        .await
        .unwrap_err();
    assert!(
        matches!(e, RegistryError::InvalidCredentials { .. }),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("invalid username or password"),
        "{e}"
    );

    cfg.explicit_credentials.clear();
    let e = RegistryClient::new(cfg)
        .pull(&r, &PullOptions::default(), &store)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "authentication required: run `imgfarm login {}`",
            reg.addr()
        )
    );
}

#[tokio::test]
async fn missing_tag_is_manifest_unknown() {
    let test = "missing_tag_is_manifest_unknown";
    let Some((reg, base)) = fixtures(test, RegistryOptions::default()) else {
        return;
    };
    base.push_to(&reg, "busybox", "latest").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let store = ContentStore::open(tmp.path().join("s")).unwrap();
    let client = RegistryClient::new(config_for(&reg, tmp.path()));
    let e = client
        .pull(
            &reference(&reg, "busybox:nope"),
            &PullOptions::default(),
            &store,
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("manifest unknown: {}/busybox:nope", reg.addr())
    );
}

#[tokio::test]
async fn cross_repo_mount_then_existing_then_chunked() {
    let test = "cross_repo_mount_then_existing_then_chunked";
    let Some((reg, base)) = fixtures(test, RegistryOptions::default()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let src = store_with_base(&tmp.path().join("src"), &base);
    let index = d(base.index_digest());
    let client = RegistryClient::new(config_for(&reg, tmp.path()));

    let first = client
        .push(
            &src,
            &index,
            &reference(&reg, "a/busybox:1"),
            &PushOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(first.uploaded, 4);
    let mounted = client
        .push(
            &src,
            &index,
            &reference(&reg, "b/busybox:1"),
            &PushOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!((mounted.uploaded, mounted.mounted), (0, 4), "{mounted:?}");
    let existing = client
        .push(
            &src,
            &index,
            &reference(&reg, "b/busybox:2"),
            &PushOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        (existing.uploaded, existing.existing),
        (0, 4),
        "{existing:?}"
    );
    assert_eq!(
        sha256(&skopeo(&reg, &["--raw"], "b/busybox:1")),
        base.index_digest()
    );

    // Chunked upload in 64 KiB PATCHes, into a fresh client (no mount knowledge).
    let mut cfg = config_for(&reg, tmp.path());
    cfg.upload = UploadMode::Chunked {
        chunk_size: 64 * 1024,
    };
    let chunked = RegistryClient::new(cfg);
    let rep = chunked
        .push(
            &src,
            &index,
            &reference(&reg, "c/busybox:1"),
            &PushOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(rep.uploaded, 4);
    assert_eq!(
        sha256(&skopeo(&reg, &["--raw"], "c/busybox:1")),
        base.index_digest()
    );
    // The layers went through chunked uploads and still verify on the way back.
    let dst = ContentStore::open(tmp.path().join("dst")).unwrap();
    let pulled = chunked
        .pull(
            &reference(&reg, "c/busybox:1"),
            &PullOptions::default(),
            &dst,
        )
        .await
        .unwrap();
    assert_eq!(pulled.stats.blobs_fetched, 4);
    let arm = base.layer_digest("arm64");
    assert_eq!(
        dst.read_bytes(&d(arm), 1 << 30).unwrap(),
        src.read_bytes(&d(arm), 1 << 30).unwrap()
    );
}

#[tokio::test]
async fn tls_without_the_ca_names_certs_d() {
    let test = "tls_without_the_ca_names_certs_d";
    let Some((reg, _base)) = fixtures(
        test,
        RegistryOptions {
            tls: true,
            auth: None,
        },
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store = ContentStore::open(tmp.path().join("s")).unwrap();
    let e = RegistryClient::new(RegistryConfig::default())
        .pull(
            &reference(&reg, "busybox:latest"),
            &PullOptions::default(),
            &store,
        )
        .await
        .unwrap_err();
    let msg = e.to_string();
    // Loopback may fall back to http, which the TLS server refuses: both reasons are shown.
    assert!(
        msg.contains("https:") && msg.contains("UnknownIssuer"),
        "{msg}"
    );
}
