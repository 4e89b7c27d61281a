//! What the busybox ([`crate::BaseImages`]) and Debian ([`crate::DebianBase`]) fixtures share:
//! writing an OCI image layout of one-layer images, keeping a finished build in a per-user
//! cache directory, and pushing a layout ref with skopeo.
//!
//! The JSON is written by hand in a fixed key order and without white space, so the digests
//! depend only on the inputs (tests and docs rely on them staying the same).

use crate::cmd::{have_tool, run_checked};
use crate::registry::Registry;
use crate::skip::{effective_uid, Unavailable};
use anyhow::Context;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// `sha256:<hex>` of `data`.
pub(crate) fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// `sha256:<hex>` of the file at `p`.
pub(crate) fn sha256_file(p: &Path) -> anyhow::Result<String> {
    let data = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(sha256_digest(&data))
}

/// A JSON string literal (the fixtures' values are plain ASCII; quote and backslash escaped).
fn json_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn json_str_array(items: &[&str]) -> String {
    let items: Vec<String> = items.iter().map(|s| json_str(s)).collect();
    format!("[{}]", items.join(","))
}

/// The config of a one-layer linux image (see [`LayoutWriter::put_image`]).
pub(crate) struct ImageConfig<'a> {
    pub arch: &'a str,
    pub cmd: &'a [&'a str],
    pub env: &'a [&'a str],
    pub working_dir: Option<&'a str>,
    /// RFC 3339 time of the image and of its one history entry.
    pub created: &'a str,
    pub created_by: &'a str,
    /// `sha256:<hex>` of the uncompressed layer tar.
    pub diff_id: &'a str,
}

impl ImageConfig<'_> {
    fn to_json(&self) -> String {
        let working_dir = match self.working_dir {
            Some(w) => format!(r#","WorkingDir":{}"#, json_str(w)),
            None => String::new(),
        };
        format!(
            concat!(
                r#"{{"architecture":{a},"config":{{"Cmd":{cmd},"Env":{env}{wd}}},"#,
                r#""created":{t},"history":[{{"created":{t},"created_by":{by}}}],"#,
                r#""os":"linux","rootfs":{{"diff_ids":[{d}],"type":"layers"}}}}"#
            ),
            a = json_str(self.arch),
            cmd = json_str_array(self.cmd),
            env = json_str_array(self.env),
            wd = working_dir,
            t = json_str(self.created),
            by = json_str(self.created_by),
            d = json_str(self.diff_id),
        )
    }
}

/// A descriptor for an image index: an image manifest for a linux platform, or a nested
/// image index.
#[derive(Debug, Clone)]
pub(crate) struct Descriptor {
    media_type: &'static str,
    pub digest: String,
    pub size: u64,
    /// The architecture of a manifest's `platform` (an index has none).
    arch: Option<String>,
}

impl Descriptor {
    /// An image manifest for linux/`arch`.
    pub fn manifest(digest: &str, size: u64, arch: &str) -> Descriptor {
        Descriptor {
            media_type: MANIFEST_TYPE,
            digest: digest.to_string(),
            size,
            arch: Some(arch.to_string()),
        }
    }

    /// `self` with a `org.opencontainers.image.ref.name` annotation, as `index.json` lists it.
    pub fn named<'a>(&'a self, ref_name: &'a str) -> IndexEntry<'a> {
        IndexEntry {
            desc: self,
            ref_name: Some(ref_name),
        }
    }

    /// `self` without annotations, as an inner image index lists it.
    pub fn unnamed(&self) -> IndexEntry<'_> {
        IndexEntry {
            desc: self,
            ref_name: None,
        }
    }
}

/// One entry of an image index.
pub(crate) struct IndexEntry<'a> {
    desc: &'a Descriptor,
    ref_name: Option<&'a str>,
}

impl IndexEntry<'_> {
    fn to_json(&self) -> String {
        let d = self.desc;
        let platform = match &d.arch {
            Some(a) => format!(
                r#","platform":{{"architecture":{},"os":"linux"}}"#,
                json_str(a)
            ),
            None => String::new(),
        };
        let ann = match self.ref_name {
            Some(r) => format!(
                r#","annotations":{{{}:{}}}"#,
                json_str(REF_NAME),
                json_str(r)
            ),
            None => String::new(),
        };
        format!(
            r#"{{"mediaType":{},"digest":{},"size":{}{platform}{ann}}}"#,
            json_str(d.media_type),
            json_str(&d.digest),
            d.size
        )
    }
}

fn index_json(entries: &[IndexEntry<'_>]) -> String {
    let entries: Vec<String> = entries.iter().map(IndexEntry::to_json).collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":{},"manifests":[{}]}}"#,
        json_str(INDEX_TYPE),
        entries.join(",")
    )
}

/// What [`LayoutWriter::put_image`] wrote.
pub(crate) struct WrittenImage {
    pub config_digest: String,
    /// The manifest, for an index.
    pub manifest: Descriptor,
}

/// Writes an OCI image layout: `oci-layout`, `blobs/sha256/<hex>` and `index.json`.
pub(crate) struct LayoutWriter {
    layout: PathBuf,
    blobs: PathBuf,
}

impl LayoutWriter {
    /// Create the layout directory `layout` with its `oci-layout` file and blob directory.
    pub fn create(layout: &Path) -> anyhow::Result<LayoutWriter> {
        let blobs = layout.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).context("creating the layout")?;
        std::fs::write(
            layout.join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        Ok(LayoutWriter {
            layout: layout.to_path_buf(),
            blobs,
        })
    }

    /// `blobs/sha256`.
    pub fn blobs_dir(&self) -> &Path {
        &self.blobs
    }

    /// Where the blob `digest` (`sha256:<hex>`) is stored.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        blob_path(&self.layout, digest)
    }

    /// Store `data` as a blob; its digest and size.
    pub fn put_blob(&self, data: &[u8]) -> anyhow::Result<(String, u64)> {
        let digest = sha256_digest(data);
        std::fs::write(self.blob_path(&digest), data).context("writing blob")?;
        Ok((digest, data.len() as u64))
    }

    /// Move the content of `file` into a blob (the file is removed); its digest and size.
    pub fn put_blob_file(&self, file: &Path) -> anyhow::Result<(String, u64)> {
        let data = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let r = self.put_blob(&data)?;
        std::fs::remove_file(file)?;
        Ok(r)
    }

    /// Store the config and manifest of a one-layer image whose gzip layer blob
    /// (`layer_digest`, `layer_size`) is already in the layout.
    pub fn put_image(
        &self,
        config: &ImageConfig<'_>,
        layer_digest: &str,
        layer_size: u64,
    ) -> anyhow::Result<WrittenImage> {
        let (config_digest, config_size) = self.put_blob(config.to_json().as_bytes())?;
        let manifest = format!(
            concat!(
                r#"{{"schemaVersion":2,"mediaType":{mt},"#,
                r#""config":{{"mediaType":{ct},"digest":{cd},"size":{cs}}},"#,
                r#""layers":[{{"mediaType":{lt},"digest":{ld},"size":{ls}}}]}}"#
            ),
            mt = json_str(MANIFEST_TYPE),
            ct = json_str(CONFIG_TYPE),
            cd = json_str(&config_digest),
            cs = config_size,
            lt = json_str(LAYER_TYPE),
            ld = json_str(layer_digest),
            ls = layer_size
        );
        let (manifest_digest, manifest_size) = self.put_blob(manifest.as_bytes())?;
        Ok(WrittenImage {
            config_digest,
            manifest: Descriptor::manifest(&manifest_digest, manifest_size, config.arch),
        })
    }

    /// Store an image index of `entries` as a blob; its descriptor.
    pub fn put_index(&self, entries: &[IndexEntry<'_>]) -> anyhow::Result<Descriptor> {
        let (digest, size) = self.put_blob(index_json(entries).as_bytes())?;
        Ok(Descriptor {
            media_type: INDEX_TYPE,
            digest,
            size,
            arch: None,
        })
    }

    /// Write `index.json` listing `entries` (in this order).
    pub fn write_index_json(&self, entries: &[IndexEntry<'_>]) -> anyhow::Result<()> {
        std::fs::write(self.layout.join("index.json"), index_json(entries))
            .context("writing index.json")
    }
}

/// Where the blob `digest` (`sha256:<hex>`) of the layout `layout` is stored.
pub(crate) fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    layout.join("blobs/sha256").join(hex)
}

/// The `key=value` lines of the `DONE` file that marks a finished build in `dir`; `None`
/// while there is none.
pub(crate) struct DoneRecord {
    path: PathBuf,
    kv: BTreeMap<String, String>,
}

impl DoneRecord {
    pub fn read(dir: &Path) -> Option<DoneRecord> {
        let path = dir.join("DONE");
        let text = std::fs::read_to_string(&path).ok()?;
        let kv = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some(DoneRecord { path, kv })
    }

    pub fn get(&self, k: &str) -> anyhow::Result<String> {
        self.kv
            .get(k)
            .cloned()
            .with_context(|| format!("{} lacks {k}", self.path.display()))
    }
}

/// The fixture `cell` holds, made with `make` on the first call of the process. A failure is
/// kept as text; every call that finds one re-runs `prerequisites` first, so a missing
/// prerequisite comes back as a typed [`Unavailable`] error, else fails with
/// "`<doing> failed: <the first error>`".
pub(crate) fn once_per_process<T: Clone>(
    cell: &OnceLock<Result<T, String>>,
    make: impl FnOnce() -> anyhow::Result<T>,
    prerequisites: impl FnOnce() -> anyhow::Result<()>,
    doing: &str,
) -> anyhow::Result<T> {
    match cell.get_or_init(|| make().map_err(|e| format!("{e:#}"))) {
        Ok(b) => Ok(b.clone()),
        Err(e) => {
            prerequisites()?;
            anyhow::bail!("{doing} failed: {e}")
        }
    }
}

/// How [`cached_build`] finds, checks and makes one fixture's build.
pub(crate) struct CachedBuild<'a, T> {
    /// The directory name's prefix (`base`, `debian`): the build lives in `<prefix>-<key>`.
    pub prefix: &'a str,
    /// Hash of everything the build depends on (its first 8 bytes name the directory).
    pub key: Sha256,
    /// What is built, for messages ("base images", "Debian layout").
    pub what: &'a str,
    /// Load a finished build from a directory (`None` when it has no `DONE`).
    pub load: &'a dyn Fn(&Path) -> anyhow::Result<Option<T>>,
    /// Whether a loaded build is unchanged (a test may have modified the shared cache).
    pub intact: &'a dyn Fn(&T) -> bool,
    /// Build into an empty directory.
    pub build: &'a dyn Fn(&Path) -> anyhow::Result<()>,
}

/// The build kept in `$TMPDIR/imgfarm-testkit-<uid>/<prefix>-<key>`, made there first if it
/// is missing or was modified. A build is made next to it and renamed into place, so
/// concurrent test processes never see a half-built tree.
pub(crate) fn cached_build<T>(c: CachedBuild<'_, T>) -> anyhow::Result<T> {
    let key = hex::encode(&c.key.finalize()[..8]);
    let uid = effective_uid().unwrap_or(u32::MAX);
    let parent = std::env::temp_dir().join(format!("imgfarm-testkit-{uid}"));
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    // Other users (the farm user) read from here.
    let _ = std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o755));
    let final_dir = parent.join(format!("{}-{key}", c.prefix));
    if let Some(b) = (c.load)(&final_dir)? {
        if (c.intact)(&b) {
            return Ok(b);
        }
        // A test changed the shared cache: throw it away (atomically) and rebuild.
        tracing::warn!(dir = %final_dir.display(), "cached {} was modified; rebuilding", c.what);
        let trash = parent.join(format!(".trash-{}-{key}-{}", c.prefix, std::process::id()));
        if std::fs::rename(&final_dir, &trash).is_ok() {
            let _ = std::fs::remove_dir_all(&trash);
        }
    }
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{}-{key}-", c.prefix))
        .tempdir_in(&parent)
        .context("creating a build dir")?;
    (c.build)(tmp.path())?;
    let built = tmp.keep();
    match std::fs::rename(&built, &final_dir) {
        Ok(()) => {}
        Err(_) if final_dir.join("DONE").is_file() => {
            // Another test process won the race; its build is identical.
            let _ = std::fs::remove_dir_all(&built);
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&built);
            return Err(e)
                .with_context(|| format!("moving the build into {}", final_dir.display()));
        }
    }
    (c.load)(&final_dir)?.with_context(|| format!("the {} vanished right after the build", c.what))
}

/// Push the ref `layout_ref` of the layout `layout` to `reg` as `repo:tag` with
/// `skopeo copy --all`, using the registry's cert dir and credentials when it has them.
pub(crate) fn push_ref(
    layout: &Path,
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
        .arg(format!("oci:{}:{layout_ref}", layout.display()))
        .arg(format!("docker://{}/{repo}:{tag}", reg.addr()));
    run_checked(&mut cmd).with_context(|| {
        format!(
            "pushing oci:{}:{layout_ref} to {}/{repo}:{tag}",
            layout.display(),
            reg.addr()
        )
    })?;
    Ok(())
}
