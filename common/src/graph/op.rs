//! What a vertex does. Everything a worker needs to run a vertex is in its
//! [`Op`] plus the results of its inputs (referred to by position in the
//! vertex's `inputs`).

use super::image_config::StageConfig;
use crate::oci::Digest;
use serde::{Deserialize, Serialize};

/// A vertex's operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Pull a base image's root filesystem for the vertex's platform.
    Image(ImageOp),
    /// Files of the build context (a selection, addressed by content).
    Context(ContextOp),
    /// A file downloaded by ADD from an http(s) URL.
    Url(UrlOp),
    /// Files written from heredocs (`COPY <<EOF`) or a RUN heredoc script.
    Inline(InlineOp),
    /// Run a process (RUN).
    Exec(ExecOp),
    /// Copy files or create a directory (COPY, ADD, WORKDIR).
    File(FileOp),
    /// Lay one filesystem over another (the result of `COPY --link`).
    Merge(MergeOp),
    /// The final image of a platform: config plus the layers in `inputs` order.
    Export(Box<ExportOp>),
}

impl Op {
    /// Source ops (build context, heredoc files, URL download) read nothing
    /// from a parent filesystem and produce no layer: a farm worker solves
    /// them again wherever a step needs them, so they are never dispatched
    /// and their results never travel.
    pub fn is_source(&self) -> bool {
        matches!(self, Op::Context(_) | Op::Inline(_) | Op::Url(_))
    }

    /// Short name of the kind, as printed by `imgfarm debug graph`.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Image(_) => "image",
            Op::Context(_) => "context",
            Op::Url(_) => "url",
            Op::Inline(_) => "inline",
            Op::Exec(_) => "exec",
            Op::File(_) => "file",
            Op::Merge(_) => "merge",
            Op::Export(_) => "export",
        }
    }
}

/// A base image (`FROM image`, `COPY --from=image`, `--mount from=image`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageOp {
    /// Normalised reference, e.g. `docker.io/library/alpine:3.20`.
    pub reference: String,
    /// Manifest digest when resolved before graph construction; `None` means
    /// "resolve at solve time" (its config, ENV and ONBUILD were then not applied).
    pub digest: Option<Digest>,
}

/// A context selection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextOp {
    /// The COPY/ADD sources (or bind-mount source), relative to the context root.
    pub sources: Vec<String>,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
    /// Digest over exactly the selected files (paths, modes, content), after .dockerignore.
    pub selection: Digest,
}

/// An ADD URL source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlOp {
    /// The URL.
    pub url: String,
    /// File name to save as (last path segment).
    pub filename: String,
    /// `--checksum`: the download must match it.
    pub checksum: Option<Digest>,
    /// False without a checksum: the key is the URL only, so the content must
    /// be fetched and checked again on each build (not cacheable by content).
    pub content_addressed: bool,
}

/// Inline files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineOp {
    /// The files, in order.
    pub files: Vec<InlineFile>,
}

/// One inline file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineFile {
    /// File name (no directories).
    pub name: String,
    /// Content.
    pub content: String,
    /// Mode bits.
    pub mode: u32,
}

/// RUN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOp {
    /// Input index of the root filesystem; `None` = empty (scratch).
    pub root: Option<usize>,
    /// argv (shell form already wrapped with SHELL).
    pub args: Vec<String>,
    /// Environment, `KEY=value`: image ENV, then ARG values in scope.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// User (`name`, `uid`, `uid:gid`...), resolved in the root fs by the worker; empty = root.
    pub user: String,
    /// Extra mounts.
    pub mounts: Vec<ExecMount>,
    /// The network namespace (`RUN --network`).
    pub network: NetworkMode,
    /// The confinement (`RUN --security`).
    pub security: SecurityMode,
}

/// One RUN mount with its source resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecMount {
    /// The mount options, variables expanded (its source is `input`).
    pub spec: Mount,
    /// Input index of the source (bind: context or stage; cache: `from` seed; inline script).
    pub input: Option<usize>,
}

/// COPY/ADD/WORKDIR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOp {
    /// Input index of the filesystem written to; `None` = empty (scratch, or `--link`).
    pub dest_root: Option<usize>,
    /// The action.
    pub action: FileAction,
}

/// A file action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileAction {
    /// Copy sources to `dest`.
    Copy(CopyAction),
    /// `mkdir -p` (WORKDIR).
    Mkdir {
        /// Absolute path.
        path: String,
        /// Mode of created directories.
        mode: u32,
        /// Owner: the stage's USER at that point (empty = root).
        user: String,
    },
}

/// COPY/ADD details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyAction {
    /// Sources in order.
    pub sources: Vec<CopySource>,
    /// Absolute destination; a trailing `/` means "into this directory".
    pub dest: String,
    /// `--chown`, resolved against the destination's /etc/passwd by the worker.
    pub chown: Option<String>,
    /// `--chmod` bits.
    pub chmod: Option<u32>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude`.
    pub excludes: Vec<String>,
    /// ADD (as opposed to COPY).
    pub is_add: bool,
    /// `--keep-git-dir` (ADD).
    pub keep_git_dir: bool,
}

/// One source of a copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopySource {
    /// Input index holding it.
    pub input: usize,
    /// Path or glob inside that input.
    pub path: String,
    /// ADD of a local tar archive: extract it (ADD's auto-extraction, or `--unpack`).
    pub extract_archives: bool,
}

/// `COPY --link` result: `inputs[upper]` over `inputs[lower]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeOp {
    /// Input index of the lower filesystem (`None` = empty).
    pub lower: Option<usize>,
    /// Input index of the upper layer.
    pub upper: usize,
}

/// The image of one platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportOp {
    /// Stage exported.
    pub stage: String,
    /// The config (build `--label`s applied).
    pub config: StageConfig,
    /// Index in `inputs` of the base image vertex, if the chain starts with one.
    pub base_image: Option<usize>,
}

/// A RUN mount as the IR carries it. Serialised (and so hashed into vertex
/// keys) exactly as the Dockerfile `--mount` options it comes from; the
/// frontend converts the parser's `MountSpec` into it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mount {
    /// The mount kind.
    #[serde(rename = "type")]
    pub kind: MountKind,
    /// Mount point in the container (a secret's defaults to `/run/secrets/<id>`).
    pub target: String,
    /// Path inside the source input (bind, cache).
    pub source: String,
    /// Always empty: the source is the exec's input named by
    /// [`ExecMount::input`]. Kept so the encoding, and the keys, stay as
    /// they were.
    pub from: String,
    /// Read-only mount.
    pub readonly: bool,
    /// Cache or secret id.
    pub id: String,
    /// How concurrent users share a cache.
    pub sharing: Option<SharingMode>,
    /// A secret that must exist.
    pub required: bool,
    /// File mode.
    pub mode: Option<u32>,
    /// Owner uid.
    pub uid: Option<u32>,
    /// Owner gid.
    pub gid: Option<u32>,
    /// tmpfs size limit in bytes.
    pub size: Option<u64>,
}

/// What a [`Mount`] mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A read-only (or writable, discarded) view of an input.
    Bind,
    /// A persistent per-worker cache directory.
    Cache,
    /// An empty in-memory filesystem.
    Tmpfs,
    /// A secret file provided by the client.
    Secret,
}

/// How concurrent builds share a cache mount (BuildKit `sharing=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SharingMode {
    /// Concurrent builds use the same directory.
    #[default]
    Shared,
    /// Each concurrent user gets its own copy.
    Private,
    /// Concurrent users wait for each other.
    Locked,
}

/// The network namespace of an exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// The build's default, BuildKit's `sandbox` network: an own network namespace with
    /// outbound access, where the worker's loopback and link-local addresses are
    /// unreachable.
    #[default]
    Default,
    /// A fresh network namespace with only loopback.
    None,
    /// The host's network namespace (needs the `network.host` entitlement).
    Host,
}

/// The confinement of an exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecurityMode {
    /// Default capabilities and confinement.
    #[default]
    Sandbox,
    /// All capabilities (needs the `security.insecure` entitlement).
    Insecure,
}
