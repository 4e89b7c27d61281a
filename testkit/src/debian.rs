//! Debian bookworm base images made with mmdebstrap, as an OCI image layout.
//!
//! `scripts/setup.sh --dev` makes the root filesystems once per machine into
//! `IMGFARM_DEBIAN_DIR` (default `/var/cache/imgfarm/debian`) with Debian's own tools:
//!
//! | file | what |
//! | --- | --- |
//! | `bookworm-amd64.tar`, `bookworm-arm64.tar` | `mmdebstrap --variant=minbase` (arm64 under qemu binfmt) |
//! | `bookworm-dev-amd64.tar` | minbase plus `gcc libc6-dev python3 python3-pip` |
//! | `NAME.tar.gz` | the same tar through `gzip -n` (the layer blob) |
//! | `NAME.packages` | `dpkg-query -W` of the image: package, version, architecture |
//! | `SHA256SUMS` | `sha256sum` of every `.tar` and `.tar.gz` |
//!
//! mmdebstrap ran with `SOURCE_DATE_EPOCH` (mtimes clamped, logs dropped); owners, modes and
//! xattrs are exactly as mmdebstrap wrote them, since its tar is the layer unchanged. The
//! host's `/etc/resolv.conf` and `/etc/hostname` are removed; `/etc/apt/sources.list` points
//! at Debian like the official image (tests override it, e.g. with [`crate::AptRepo`]).
//!
//! [`DebianBase`] wraps them as one-layer images (config with `architecture`, `os`, `Env`
//! `PATH`, `Cmd ["bash"]`, `rootfs.diff_ids`) in an OCI layout with the refs `bookworm` (an
//! index of linux/amd64 and linux/arm64), `bookworm-amd64`, `bookworm-arm64` and
//! `bookworm-dev` (linux/amd64). The layout is made once per cache content into
//! `$TMPDIR/imgfarm-testkit-<uid>/debian-<key>`; its layer blobs are hard links to (or, across
//! file systems or without permission, symlinks to) the cached `.tar.gz` files.

use crate::cmd::{have_tool, run_checked};
use crate::registry::Registry;
use crate::skip::{effective_uid, Unavailable};
use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Default cache directory; `scripts/setup.sh --dev` fills it.
const DEFAULT_DEBIAN_DIR: &str = "/var/cache/imgfarm/debian";
/// Bump when the conversion changes, so cached layouts are not reused.
const RECIPE_VERSION: &str = "imgfarm-testkit-debian-v1";
/// `SOURCE_DATE_EPOCH` of `scripts/setup.sh` (`DEBIAN_EPOCH=1747699200`).
const CREATED: &str = "2025-05-20T00:00:00Z";
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The (variant, arch) pairs made by `scripts/setup.sh`, in layout order.
pub const DEBIAN_VARIANTS: [(&str, &str); 3] = [
    ("bookworm", "amd64"),
    ("bookworm", "arm64"),
    ("bookworm-dev", "amd64"),
];

/// One (variant, arch) image.
#[derive(Debug, Clone)]
struct VariantImage {
    variant: String,
    arch: String,
    tar: PathBuf,
    packages: PathBuf,
    manifest_digest: String,
    manifest_size: usize,
    config_digest: String,
    layer_digest: String,
    layer_size: u64,
    diff_id: String,
}

/// The cached Debian bookworm images as an OCI layout (see the module docs). Cheap to clone.
#[derive(Debug, Clone)]
pub struct DebianBase {
    cache: PathBuf,
    root: PathBuf,
    layout: PathBuf,
    index_digest: String,
    images: Vec<VariantImage>,
}

static CACHED: OnceLock<Result<DebianBase, String>> = OnceLock::new();

impl DebianBase {
    /// The cached images, converted into an OCI layout once per cache content and reused.
    ///
    /// Fails with [`Unavailable`] (→ `SKIPPED`, or a failure in CI) when
    /// `IMGFARM_DEBIAN_DIR` (default `/var/cache/imgfarm/debian`) was not made: run
    /// `sudo scripts/setup.sh --dev`.
    pub fn get() -> anyhow::Result<DebianBase> {
        let r = CACHED.get_or_init(|| get_cached().map_err(|e| format!("{e:#}")));
        match r {
            Ok(b) => Ok(b.clone()),
            Err(e) => {
                // Re-run the prerequisite check to hand back a typed Unavailable error.
                read_cache()?;
                bail!("converting the Debian base images failed: {e}")
            }
        }
    }

    /// Convert the cache into a new layout in `dir` (created if needed; should be empty),
    /// without reusing anything. With `verify`, first check the cached files against
    /// `SHA256SUMS` with `sha256sum -c` (reads about 1 GB).
    pub fn convert_into(dir: &Path, verify: bool) -> anyhow::Result<DebianBase> {
        let (cache, sums) = read_cache()?;
        if verify {
            if !have_tool("sha256sum") {
                return Err(Unavailable::new(
                    "sha256sum is missing",
                    "install coreutils (run `sudo scripts/setup.sh --dev`)",
                )
                .into());
            }
            run_checked(
                Command::new("sha256sum")
                    .args(["--quiet", "-c", "SHA256SUMS"])
                    .current_dir(&cache),
            )
            .context("the Debian base image cache does not match its SHA256SUMS")?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        convert(&cache, &sums, dir)
    }

    /// The OCI layout holding all refs: `bookworm` (index of linux/amd64 and linux/arm64),
    /// `bookworm-amd64`, `bookworm-arm64`, `bookworm-dev` (linux/amd64).
    pub fn layout_dir(&self) -> &Path {
        &self.layout
    }

    /// The directory holding the layout (`oci/`) and the `DONE` record.
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// The cache directory made by `scripts/setup.sh --dev` (tars, `.packages`, `SHA256SUMS`).
    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    /// Push `bookworm` (the index of linux/amd64 and linux/arm64) to `reg` as `repo:tag`.
    pub fn push_to(&self, reg: &Registry, repo: &str, tag: &str) -> anyhow::Result<()> {
        self.push_ref_to(reg, "bookworm", repo, tag)
    }

    /// Push `bookworm-dev` (linux/amd64, with gcc, libc6-dev, python3, python3-pip) to `reg`
    /// as `repo:tag`.
    pub fn push_dev_to(&self, reg: &Registry, repo: &str, tag: &str) -> anyhow::Result<()> {
        self.push_ref_to(reg, "bookworm-dev", repo, tag)
    }

    /// Push one layout ref to `reg` as `repo:tag` with `skopeo copy --all`, using the
    /// registry's cert dir and credentials when it has them.
    pub fn push_ref_to(
        &self,
        reg: &Registry,
        layout_ref: &str,
        repo: &str,
        tag: &str,
    ) -> anyhow::Result<()> {
        if !have_tool("skopeo") {
            return Err(Unavailable::new(
                "skopeo is missing",
                "run `sudo scripts/setup.sh --dev` (installs skopeo)",
            )
            .into());
        }
        let mut cmd = Command::new("skopeo");
        cmd.args(["--insecure-policy", "copy", "-q", "--all"])
            .args(reg.skopeo_dest_flags())
            .arg(format!("oci:{}:{layout_ref}", self.layout.display()))
            .arg(format!("docker://{}/{repo}:{tag}", reg.addr()));
        run_checked(&mut cmd).with_context(|| {
            format!("pushing Debian {layout_ref} to {}/{repo}:{tag}", reg.addr())
        })?;
        Ok(())
    }

    /// The uncompressed layer tar (mmdebstrap's output) of `variant` for `arch`:
    /// `("bookworm", "amd64")`, `("bookworm", "arm64")` or `("bookworm-dev", "amd64")`.
    ///
    /// # Panics
    /// On any other pair (a bug in the test).
    pub fn rootfs_tar(&self, variant: &str, arch: &str) -> &Path {
        &self.image(variant, arch).tar
    }

    /// The `dpkg-query -W` list of the image (`package\tversion\tarch` lines, sorted).
    pub fn packages_file(&self, variant: &str, arch: &str) -> &Path {
        &self.image(variant, arch).packages
    }

    /// Digest (`sha256:<hex>`) of the `bookworm` image index.
    pub fn index_digest(&self) -> &str {
        &self.index_digest
    }

    /// Digest of the image manifest of `variant` for `arch`.
    pub fn manifest_digest(&self, variant: &str, arch: &str) -> &str {
        &self.image(variant, arch).manifest_digest
    }

    /// Digest of the image config blob of `variant` for `arch`.
    pub fn config_digest(&self, variant: &str, arch: &str) -> &str {
        &self.image(variant, arch).config_digest
    }

    /// Digest of the gzip layer blob of `variant` for `arch`.
    pub fn layer_digest(&self, variant: &str, arch: &str) -> &str {
        &self.image(variant, arch).layer_digest
    }

    /// The diff ID (sha256 of the uncompressed tar) of `variant` for `arch`.
    pub fn diff_id(&self, variant: &str, arch: &str) -> &str {
        &self.image(variant, arch).diff_id
    }

    fn image(&self, variant: &str, arch: &str) -> &VariantImage {
        match self
            .images
            .iter()
            .find(|i| i.variant == variant && i.arch == arch)
        {
            Some(i) => i,
            None => panic!(
                "DebianBase has no image {variant:?} for {arch:?}; use one of {DEBIAN_VARIANTS:?}"
            ),
        }
    }
}

fn cache_dir() -> PathBuf {
    std::env::var_os("IMGFARM_DEBIAN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DEBIAN_DIR))
}

fn unavailable(what: String) -> anyhow::Error {
    Unavailable::new(
        what,
        "run `sudo scripts/setup.sh --dev` (makes the Debian bookworm images with mmdebstrap, \
         a few minutes once), or point IMGFARM_DEBIAN_DIR at such a directory",
    )
    .into()
}

/// The cache dir and its `SHA256SUMS` (file name → `sha256:<hex>`), checking every file is
/// there.
fn read_cache() -> anyhow::Result<(PathBuf, BTreeMap<String, String>)> {
    let dir = cache_dir();
    let sums_path = dir.join("SHA256SUMS");
    let Ok(text) = std::fs::read_to_string(&sums_path) else {
        return Err(unavailable(format!("{} is missing", sums_path.display())));
    };
    let mut sums = BTreeMap::new();
    for l in text.lines() {
        if let Some((hex, name)) = l.split_once("  ") {
            sums.insert(name.to_string(), format!("sha256:{hex}"));
        }
    }
    for (v, a) in DEBIAN_VARIANTS {
        for suffix in ["tar", "tar.gz", "packages"] {
            let name = format!("{v}-{a}.{suffix}");
            if !dir.join(&name).is_file() {
                return Err(unavailable(format!(
                    "{} is missing",
                    dir.join(name).display()
                )));
            }
            if suffix != "packages" && !sums.contains_key(&name) {
                return Err(unavailable(format!("{} lacks {name}", sums_path.display())));
            }
        }
    }
    Ok((dir, sums))
}

fn get_cached() -> anyhow::Result<DebianBase> {
    let (cache, sums) = read_cache()?;
    let mut h = Sha256::new();
    h.update(RECIPE_VERSION.as_bytes());
    h.update(cache.as_os_str().as_encoded_bytes());
    for (name, digest) in &sums {
        h.update(format!("{name}={digest}\n").as_bytes());
    }
    let key = hex::encode(&h.finalize()[..8]);
    let uid = effective_uid().unwrap_or(u32::MAX);
    let parent = std::env::temp_dir().join(format!("imgfarm-testkit-{uid}"));
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let _ = std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o755));
    let final_dir = parent.join(format!("debian-{key}"));
    if let Some(b) = load_complete(&cache, &final_dir)? {
        if intact(&b) {
            return Ok(b);
        }
        tracing::warn!(dir = %final_dir.display(), "cached Debian layout was modified; rebuilding");
        let trash = parent.join(format!(".trash-debian-{key}-{}", std::process::id()));
        if std::fs::rename(&final_dir, &trash).is_ok() {
            let _ = std::fs::remove_dir_all(&trash);
        }
    }
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".debian-{key}-"))
        .tempdir_in(&parent)
        .context("creating a conversion dir")?;
    convert(&cache, &sums, tmp.path())?;
    let built = tmp.keep();
    match std::fs::rename(&built, &final_dir) {
        Ok(()) => {}
        Err(_) if final_dir.join("DONE").is_file() => {
            // Another test process won the race; its layout is identical.
            let _ = std::fs::remove_dir_all(&built);
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&built);
            return Err(e)
                .with_context(|| format!("moving the layout into {}", final_dir.display()));
        }
    }
    load_complete(&cache, &final_dir)?.context("Debian layout vanished right after conversion")
}

/// Whether the small blobs still hash to their digests and the layer blobs have their sizes
/// (hashing the layers on every test process would read about 300 MB).
fn intact(b: &DebianBase) -> bool {
    let blob = |d: &str| blob_path(&b.layout, d);
    let mut small = vec![b.index_digest.as_str()];
    for i in &b.images {
        small.push(&i.manifest_digest);
        small.push(&i.config_digest);
    }
    small.iter().all(|d| {
        std::fs::read(blob(d))
            .map(|data| sha256_hex(&data) == *d)
            .unwrap_or(false)
    }) && b.images.iter().all(|i| {
        std::fs::metadata(blob(&i.layer_digest))
            .map(|m| m.len() == i.layer_size)
            .unwrap_or(false)
            && i.tar.is_file()
    }) && b.layout.join("index.json").is_file()
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    layout.join("blobs/sha256").join(hex)
}

fn sha256_hex(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Load a finished conversion (marked by `DONE`, which records the digests).
fn load_complete(cache: &Path, dir: &Path) -> anyhow::Result<Option<DebianBase>> {
    let done = dir.join("DONE");
    let Ok(text) = std::fs::read_to_string(&done) else {
        return Ok(None);
    };
    let kv: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let get = |k: &str| -> anyhow::Result<String> {
        kv.get(k)
            .map(|s| s.to_string())
            .with_context(|| format!("{} lacks {k}", done.display()))
    };
    let mut images = Vec::new();
    for (v, a) in DEBIAN_VARIANTS {
        let p = format!("{v}-{a}");
        images.push(VariantImage {
            variant: v.to_string(),
            arch: a.to_string(),
            tar: cache.join(format!("{p}.tar")),
            packages: cache.join(format!("{p}.packages")),
            manifest_digest: get(&format!("manifest.{p}"))?,
            manifest_size: get(&format!("manifest_size.{p}"))?.parse()?,
            config_digest: get(&format!("config.{p}"))?,
            layer_digest: get(&format!("layer.{p}"))?,
            layer_size: get(&format!("layer_size.{p}"))?.parse()?,
            diff_id: get(&format!("diff_id.{p}"))?,
        });
    }
    Ok(Some(DebianBase {
        cache: cache.to_path_buf(),
        root: dir.to_path_buf(),
        layout: dir.join("oci"),
        index_digest: get("index")?,
        images,
    }))
}

fn put_blob(blobs: &Path, data: &[u8]) -> anyhow::Result<(String, usize)> {
    let digest = sha256_hex(data);
    std::fs::write(blob_path_in(blobs, &digest), data).context("writing blob")?;
    Ok((digest, data.len()))
}

fn blob_path_in(blobs: &Path, digest: &str) -> PathBuf {
    blobs.join(digest.strip_prefix("sha256:").unwrap_or(digest))
}

/// Put the cached gzip layer into the layout: a hard link, else a symlink.
fn link_blob(src: &Path, dst: &Path) -> anyhow::Result<()> {
    if dst.symlink_metadata().is_ok() {
        return Ok(()); // the same layer twice (cannot happen with distinct tars, but harmless)
    }
    if std::fs::hard_link(src, dst).is_ok() {
        return Ok(());
    }
    std::os::unix::fs::symlink(src, dst)
        .with_context(|| format!("linking {} to {}", dst.display(), src.display()))
}

/// Write the layout into `out` from the cache (digests from `SHA256SUMS`).
fn convert(
    cache: &Path,
    sums: &BTreeMap<String, String>,
    out: &Path,
) -> anyhow::Result<DebianBase> {
    let layout = out.join("oci");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).context("creating the layout")?;
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let mut images = Vec::new();
    for (v, a) in DEBIAN_VARIANTS {
        let p = format!("{v}-{a}");
        let tar = cache.join(format!("{p}.tar"));
        let gz = cache.join(format!("{p}.tar.gz"));
        let lookup = |name: String| {
            sums.get(&name)
                .cloned()
                .with_context(|| format!("SHA256SUMS lacks {name}"))
        };
        let diff_id = lookup(format!("{p}.tar"))?;
        let layer_digest = lookup(format!("{p}.tar.gz"))?;
        let layer_size = std::fs::metadata(&gz)
            .with_context(|| format!("reading {}", gz.display()))?
            .len();
        link_blob(&gz, &blob_path_in(&blobs, &layer_digest))?;
        let mut extra = String::new();
        if v == "bookworm-dev" {
            extra.push_str(" --include=gcc,libc6-dev,python3,python3-pip");
        }
        let config = format!(
            concat!(
                r#"{{"architecture":"{a}","config":{{"Cmd":["bash"],"Env":["{env}"]}},"#,
                r#""created":"{t}","history":[{{"created":"{t}","#,
                r#""created_by":"mmdebstrap --variant=minbase{extra} --architectures={a} bookworm (imgfarm-testkit)"}}],"#,
                r#""os":"linux","rootfs":{{"diff_ids":["{d}"],"type":"layers"}}}}"#
            ),
            a = a,
            env = PATH_ENV,
            t = CREATED,
            extra = extra,
            d = diff_id
        );
        let (config_digest, config_size) = put_blob(&blobs, config.as_bytes())?;
        let manifest = format!(
            concat!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","#,
                r#""config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{cs}}},"#,
                r#""layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{ld}","size":{ls}}}]}}"#
            ),
            cd = config_digest,
            cs = config_size,
            ld = layer_digest,
            ls = layer_size
        );
        let (manifest_digest, manifest_size) = put_blob(&blobs, manifest.as_bytes())?;
        images.push(VariantImage {
            variant: v.to_string(),
            arch: a.to_string(),
            tar,
            packages: cache.join(format!("{p}.packages")),
            manifest_digest,
            manifest_size,
            config_digest,
            layer_digest,
            layer_size,
            diff_id,
        });
    }
    let desc = |img: &VariantImage, ref_name: Option<&str>| {
        let ann = match ref_name {
            Some(r) => format!(r#","annotations":{{"org.opencontainers.image.ref.name":"{r}"}}"#),
            None => String::new(),
        };
        format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"platform":{{"architecture":"{}","os":"linux"}}{ann}}}"#,
            img.manifest_digest, img.manifest_size, img.arch
        )
    };
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{},{}]}}"#,
        desc(&images[0], None),
        desc(&images[1], None)
    );
    let (index_digest, index_size) = put_blob(&blobs, index.as_bytes())?;
    let top = format!(
        concat!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":["#,
            r#"{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"bookworm"}}}},"#,
            r#"{},{},{}]}}"#
        ),
        index_digest,
        index_size,
        desc(&images[0], Some("bookworm-amd64")),
        desc(&images[1], Some("bookworm-arm64")),
        desc(&images[2], Some("bookworm-dev"))
    );
    std::fs::write(layout.join("index.json"), top).context("writing index.json")?;

    let mut done = format!("index={index_digest}\n");
    for i in &images {
        done.push_str(&format!(
            "manifest.{p}={}\nmanifest_size.{p}={}\nconfig.{p}={}\nlayer.{p}={}\nlayer_size.{p}={}\ndiff_id.{p}={}\n",
            i.manifest_digest,
            i.manifest_size,
            i.config_digest,
            i.layer_digest,
            i.layer_size,
            i.diff_id,
            p = format_args!("{}-{}", i.variant, i.arch)
        ));
    }
    // Readable by other users (the farm user pulls from here).
    for d in [
        out,
        layout.as_path(),
        blobs.parent().unwrap_or(&blobs),
        &blobs,
    ] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", d.display()))?;
    }
    for e in std::fs::read_dir(&blobs)? {
        let p = e?.path();
        if !p.is_symlink() && p.metadata()?.permissions().mode() & 0o044 != 0o044 {
            // Our own small blobs (hard-linked layers are already 0644, and root's anyway).
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644));
        }
    }
    for f in ["index.json", "oci-layout"] {
        std::fs::set_permissions(layout.join(f), std::fs::Permissions::from_mode(0o644))?;
    }
    std::fs::write(out.join("DONE"), done).context("writing DONE")?;
    tracing::info!(dir = %out.display(), index = %index_digest, "converted the Debian base images");
    Ok(DebianBase {
        cache: cache.to_path_buf(),
        root: out.to_path_buf(),
        layout,
        index_digest,
        images,
    })
}
