//! Deterministic busybox base images for linux/amd64 and linux/arm64, as an OCI image layout.
//!
//! Built from Debian's `busybox-static` .debs with tools independent of the code under test:
//! `dpkg-deb -x`, GNU tar (sorted file list, mtime 0, owner 0, GNU format) and `gzip -n`.
//! Layout follows the OCI image-layout spec: `oci-layout`, `index.json`, `blobs/sha256/<hex>`.
//! `index.json` names three refs (`org.opencontainers.image.ref.name`): `amd64`, `arm64` and
//! `latest` (the image index of both).

use crate::cmd::{have_tool, run_checked};
use crate::oci_layout::{
    blob_path, cached_build, once_per_process, push_ref, sha256_file, CachedBuild, DoneRecord,
    ImageConfig, LayoutWriter,
};
use crate::registry::Registry;
use crate::skip::Unavailable;
use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The architectures built, in index order.
pub const ARCHES: [&str; 2] = ["amd64", "arm64"];
/// Default directory of the .debs; `scripts/setup.sh` fills it.
const DEFAULT_DEBS_DIR: &str = "/var/cache/imgfarm/debs";
/// Bump when the recipe changes, so cached builds are not reused.
const RECIPE_VERSION: &str = "imgfarm-testkit-base-images-v1";
const EPOCH: &str = "1970-01-01T00:00:00Z";
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One architecture's image.
#[derive(Debug, Clone)]
struct ArchImage {
    arch: String,
    rootfs: PathBuf,
    layer_tar: PathBuf,
    manifest_digest: String,
    config_digest: String,
    layer_digest: String,
    diff_id: String,
}

/// The built base images (see the module docs). Cheap to clone.
#[derive(Debug, Clone)]
pub struct BaseImages {
    root: PathBuf,
    layout: PathBuf,
    index_digest: String,
    images: Vec<ArchImage>,
    busybox_version: String,
}

static CACHED: OnceLock<Result<BaseImages, String>> = OnceLock::new();

impl BaseImages {
    /// The base images, built once per machine and deb set into
    /// `$TMPDIR/imgfarm-testkit-<uid>/base-<key>` and reused afterwards (the key hashes the
    /// .debs and the recipe version, so a changed input rebuilds).
    ///
    /// Fails with [`Unavailable`] when the .debs are not in `IMGFARM_DEBS_DIR`
    /// (default `/var/cache/imgfarm/debs`) or the tools are missing.
    pub fn build() -> anyhow::Result<BaseImages> {
        once_per_process(
            &CACHED,
            build_cached,
            || debs_dir_and_files().map(drop),
            "building base images",
        )
    }

    /// Build from scratch into `dir` (created if needed; must be empty), without any cache.
    pub fn build_in(dir: &Path) -> anyhow::Result<BaseImages> {
        let (_, debs) = debs_dir_and_files()?;
        check_tools()?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        build_into(dir, &debs)
    }

    /// The OCI layout directory (refs `amd64`, `arm64`, `latest`).
    pub fn layout_dir(&self) -> &Path {
        &self.layout
    }

    /// Digest (`sha256:<hex>`) of the image index of both platforms.
    pub fn index_digest(&self) -> &str {
        &self.index_digest
    }

    /// Digest of the image manifest for `arch` (`amd64` or `arm64`).
    ///
    /// # Panics
    /// On any other arch (a bug in the test).
    pub fn manifest_digest(&self, arch: &str) -> &str {
        &self.image(arch).manifest_digest
    }

    /// Digest of the image config blob for `arch`.
    pub fn config_digest(&self, arch: &str) -> &str {
        &self.image(arch).config_digest
    }

    /// Digest of the gzip layer blob for `arch`.
    pub fn layer_digest(&self, arch: &str) -> &str {
        &self.image(arch).layer_digest
    }

    /// The diff ID (sha256 of the uncompressed layer tar) for `arch`.
    pub fn diff_id(&self, arch: &str) -> &str {
        &self.image(arch).diff_id
    }

    /// The unpacked root filesystem for `arch` (files owned by whoever built it).
    pub fn rootfs_dir(&self, arch: &str) -> &Path {
        &self.image(arch).rootfs
    }

    /// The uncompressed layer tar for `arch` (owners recorded as 0:0).
    pub fn layer_tar(&self, arch: &str) -> &Path {
        &self.image(arch).layer_tar
    }

    /// The busybox-static package version the images were built from.
    pub fn busybox_version(&self) -> &str {
        &self.busybox_version
    }

    /// The directory holding everything (layout, rootfs dirs, layer tars).
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// Push the index (and both images) to `reg` as `repo:tag` with `skopeo copy --all`,
    /// using the registry's cert dir and credentials when it has them.
    pub fn push_to(&self, reg: &Registry, repo: &str, tag: &str) -> anyhow::Result<()> {
        self.push_ref_to(reg, "latest", repo, tag)
    }

    /// Push one layout ref (`amd64`, `arm64` or `latest`) to `reg` as `repo:tag`.
    pub fn push_ref_to(
        &self,
        reg: &Registry,
        layout_ref: &str,
        repo: &str,
        tag: &str,
    ) -> anyhow::Result<()> {
        push_ref(&self.layout, reg, layout_ref, repo, tag)
            .context("pushing the busybox base images")
    }

    fn image(&self, arch: &str) -> &ArchImage {
        match self.images.iter().find(|i| i.arch == arch) {
            Some(i) => i,
            None => panic!("BaseImages has no arch {arch:?}; use one of {ARCHES:?}"),
        }
    }
}

fn debs_dir_and_files() -> anyhow::Result<(PathBuf, Vec<PathBuf>)> {
    let dir = std::env::var_os("IMGFARM_DEBS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DEBS_DIR));
    let mut files = Vec::new();
    for a in ARCHES {
        let f = dir.join(format!("busybox-static_{a}.deb"));
        if !f.is_file() {
            return Err(Unavailable::new(
                format!("{} is missing", f.display()),
                "run `sudo scripts/setup.sh --dev` (downloads the busybox-static .debs), \
                 or point IMGFARM_DEBS_DIR at a directory holding busybox-static_{amd64,arm64}.deb",
            )
            .into());
        }
        files.push(f);
    }
    Ok((dir, files))
}

fn check_tools() -> anyhow::Result<()> {
    for t in ["dpkg-deb", "tar", "gzip"] {
        if !have_tool(t) {
            return Err(Unavailable::new(
                format!("{t} is missing"),
                "install dpkg, tar and gzip (run `sudo scripts/setup.sh --dev`)",
            )
            .into());
        }
    }
    Ok(())
}

fn build_cached() -> anyhow::Result<BaseImages> {
    let (_, debs) = debs_dir_and_files()?;
    check_tools()?;
    let mut key = Sha256::new();
    key.update(RECIPE_VERSION.as_bytes());
    for d in &debs {
        key.update(std::fs::read(d).with_context(|| format!("reading {}", d.display()))?);
    }
    cached_build(CachedBuild {
        prefix: "base",
        key,
        what: "base images",
        load: &load_complete,
        intact: &intact,
        build: &|dir| build_into(dir, &debs).map(drop),
    })
}

/// Whether the layout blobs and layer tars still hash to their recorded digests.
fn intact(b: &BaseImages) -> bool {
    let blob = |d: &str| blob_path(&b.layout, d);
    let mut checks: Vec<(PathBuf, &str)> = vec![(blob(&b.index_digest), &b.index_digest)];
    for i in &b.images {
        checks.push((blob(&i.manifest_digest), &i.manifest_digest));
        checks.push((blob(&i.config_digest), &i.config_digest));
        checks.push((blob(&i.layer_digest), &i.layer_digest));
        checks.push((i.layer_tar.clone(), &i.diff_id));
    }
    checks
        .iter()
        .all(|(p, d)| sha256_file(p).map(|got| got == *d).unwrap_or(false))
        && b.images
            .iter()
            .all(|i| i.rootfs.join("bin/busybox").is_file())
}

/// Load a finished build (marked by `DONE`, which records the digests).
fn load_complete(dir: &Path) -> anyhow::Result<Option<BaseImages>> {
    let Some(done) = DoneRecord::read(dir) else {
        return Ok(None);
    };
    let get = |k: &str| done.get(k);
    let mut images = Vec::new();
    for a in ARCHES {
        images.push(ArchImage {
            arch: a.to_string(),
            rootfs: dir.join(format!("rootfs-{a}")),
            layer_tar: dir.join(format!("layer-{a}.tar")),
            manifest_digest: get(&format!("manifest.{a}"))?,
            config_digest: get(&format!("config.{a}"))?,
            layer_digest: get(&format!("layer.{a}"))?,
            diff_id: get(&format!("diff_id.{a}"))?,
        });
    }
    Ok(Some(BaseImages {
        root: dir.to_path_buf(),
        layout: dir.join("oci"),
        index_digest: get("index")?,
        images,
        busybox_version: get("busybox_version")?,
    }))
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    }
}

fn build_into(out: &Path, debs: &[PathBuf]) -> anyhow::Result<BaseImages> {
    let version = String::from_utf8_lossy(
        &run_checked(
            Command::new("dpkg-deb")
                .arg("-f")
                .arg(&debs[0])
                .arg("Version"),
        )?
        .stdout,
    )
    .trim()
    .to_string();

    // Applet list from the host-arch busybox (same busybox config on both arches).
    let host_idx = ARCHES.iter().position(|a| *a == host_arch()).unwrap_or(0);
    let x = out.join("x-host");
    run_checked(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&debs[host_idx])
            .arg(&x),
    )?;
    let list = run_checked(Command::new(x.join("bin/busybox")).arg("--list-full"))?;
    let applets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .split_whitespace()
        .filter(|a| *a != "bin/busybox" && !a.contains(".."))
        .map(str::to_string)
        .collect();
    if applets.len() < 100 {
        bail!("busybox --list-full gave only {} applets", applets.len());
    }
    std::fs::remove_dir_all(&x).context("removing scratch dir")?;

    let layout = out.join("oci");
    let writer = LayoutWriter::create(&layout)?;
    let created_by = format!("imgfarm-testkit: busybox-static {version}");

    let mut images = Vec::new();
    let mut manifests = Vec::new();
    for (i, a) in ARCHES.iter().enumerate() {
        let rootfs = out.join(format!("rootfs-{a}"));
        make_rootfs(&rootfs, &debs[i], out, a, &applets)?;
        let layer_tar = out.join(format!("layer-{a}.tar"));
        make_tar(&rootfs, &layer_tar, out)?;
        let diff_id = sha256_file(&layer_tar)?;
        let gz = out.join(".layer.gz");
        run_checked(
            Command::new("sh")
                .arg("-c")
                .arg("gzip -n -9 -c \"$1\" > \"$2\"")
                .arg("sh")
                .arg(&layer_tar)
                .arg(&gz),
        )?;
        let (layer_digest, layer_size) = writer.put_blob_file(&gz)?;
        let written = writer.put_image(
            &ImageConfig {
                arch: a,
                cmd: &["/bin/sh"],
                env: &[PATH_ENV],
                working_dir: Some("/"),
                created: EPOCH,
                created_by: &created_by,
                diff_id: &diff_id,
            },
            &layer_digest,
            layer_size,
        )?;
        images.push(ArchImage {
            arch: a.to_string(),
            rootfs,
            layer_tar,
            manifest_digest: written.manifest.digest.clone(),
            config_digest: written.config_digest,
            layer_digest,
            diff_id,
        });
        manifests.push(written.manifest);
    }
    // `latest`: an index of both platforms, listed after the per-arch refs.
    let index = writer.put_index(&[manifests[0].unnamed(), manifests[1].unnamed()])?;
    writer.write_index_json(&[
        manifests[0].named(ARCHES[0]),
        manifests[1].named(ARCHES[1]),
        index.named("latest"),
    ])?;
    let index_digest = index.digest;

    let mut done = format!("index={index_digest}\nbusybox_version={version}\n");
    for i in &images {
        done.push_str(&format!(
            "manifest.{a}={}\nconfig.{a}={}\nlayer.{a}={}\ndiff_id.{a}={}\n",
            i.manifest_digest,
            i.config_digest,
            i.layer_digest,
            i.diff_id,
            a = i.arch
        ));
    }
    // Readable by other users (the farm user unpacks layer tars); rootfs/root stays 0700.
    run_checked(Command::new("chmod").args(["-R", "a+rX"]).arg(&layout))?;
    for i in &images {
        std::fs::set_permissions(&i.layer_tar, std::fs::Permissions::from_mode(0o644))?;
    }
    std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(out.join("DONE"), done).context("writing DONE")?;
    tracing::info!(dir = %out.display(), index = %index_digest, "built base images");
    Ok(BaseImages {
        root: out.to_path_buf(),
        layout,
        index_digest,
        images,
        busybox_version: version,
    })
}

fn set_mode(p: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", p.display()))
}

fn make_rootfs(
    root: &Path,
    deb: &Path,
    scratch: &Path,
    arch: &str,
    applets: &[String],
) -> anyhow::Result<()> {
    let x = scratch.join(format!("x-{arch}"));
    run_checked(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&x))?;
    // Explicit modes everywhere: the umask must not leak into the digests.
    for d in [
        "", "bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp",
        "root", "var", "var/tmp", "run", "home",
    ] {
        let p = root.join(d);
        std::fs::create_dir_all(&p).with_context(|| format!("mkdir {}", p.display()))?;
        set_mode(&p, 0o755)?;
    }
    set_mode(&root.join("tmp"), 0o1777)?;
    set_mode(&root.join("var/tmp"), 0o1777)?;
    set_mode(&root.join("root"), 0o700)?;
    let bb = root.join("bin/busybox");
    std::fs::copy(x.join("bin/busybox"), &bb).context("copying busybox")?;
    set_mode(&bb, 0o755)?;
    std::fs::remove_dir_all(&x).context("removing scratch dir")?;
    for app in applets {
        let p = root.join(app);
        if let Some(parent) = p.parent() {
            if !parent.exists() {
                std::fs::create_dir_all(parent)?;
                set_mode(parent, 0o755)?;
            }
        }
        if p.symlink_metadata().is_ok() {
            std::fs::remove_file(&p)?;
        }
        std::os::unix::fs::symlink("/bin/busybox", &p)
            .with_context(|| format!("symlink {}", p.display()))?;
    }
    let files = [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
        ("etc/group", "root:x:0:\nnobody:x:65534:\n"),
        ("etc/hostname", "imgfarm-busybox\n"),
    ];
    for (f, content) in files {
        let p = root.join(f);
        std::fs::write(&p, content)?;
        set_mode(&p, 0o644)?;
    }
    Ok(())
}

/// A GNU tar of `root` with a byte-sorted file list, mtime 0, owner/group 0.
fn make_tar(root: &Path, tar: &Path, scratch: &Path) -> anyhow::Result<()> {
    let mut paths = Vec::new();
    collect(root, root, &mut paths)?;
    paths.sort();
    let list = scratch.join(".filelist");
    let mut text = Vec::new();
    for p in &paths {
        text.extend_from_slice(p.as_bytes());
        text.push(b'\n');
    }
    std::fs::write(&list, text)?;
    run_checked(
        Command::new("tar")
            .arg("-C")
            .arg(root)
            .args(["--no-recursion", "--format=gnu", "--numeric-owner"])
            .args([
                "--owner=0",
                "--group=0",
                "--mtime=@0",
                "--no-acls",
                "--no-xattrs",
            ])
            .arg("-T")
            .arg(&list)
            .arg("-cf")
            .arg(tar),
    )?;
    std::fs::remove_file(&list)?;
    Ok(())
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let p = e.path();
        let rel = p
            .strip_prefix(root)
            .context("walking rootfs")?
            .to_str()
            .context("non-UTF-8 path in rootfs")?
            .to_string();
        out.push(rel);
        if e.file_type()?.is_dir() {
            collect(root, &p, out)?;
        }
    }
    Ok(())
}
