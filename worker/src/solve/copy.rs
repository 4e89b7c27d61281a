//! COPY, ADD and WORKDIR as file operations that write one layer tar
//! directly (no staging directory, so no privileges are needed for owners):
//! BuildKit's FileOp copy/mkdir rules.
//!
//! - A directory source copies its *contents* into the destination.
//! - A file source goes to `dest/<name>` when the destination ends in `/`,
//!   is an existing directory, or there are several sources; else to `dest`.
//! - `--parents` keeps each match's context path under the destination.
//! - Owners: context files become 0:0, stage files keep theirs, `--chown`
//!   sets both (names resolved in the destination's /etc/passwd and group).
//! - `--chmod` sets the mode of every copied entry.
//! - Parent directories of what is written appear in the layer with their
//!   existing metadata; missing ones are created 0755 (with `--chown`'s owner).
//! - ADD of a local tar archive (plain or gzip) extracts it into the destination.

use super::layers::LayerWriter;
use super::result::LayerRef;
use super::view::ChainView;
use super::SolveError;
use imgfarm_common::context::{BuildContext, EntryKind, SourceMatch};
use imgfarm_common::graph::op::CopyAction;
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::path::strip_empty_and_dot;
use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where a copy source's files are read from.
pub struct SourceFs<'a> {
    /// The files (the build context, or a stage unpacked into a directory).
    pub ctx: &'a BuildContext,
    /// For a stage: its owners; `None` = the build context (owners 0:0).
    pub owners: Option<&'a ChainView>,
}

#[derive(Debug, Clone)]
enum Content {
    Dir,
    File {
        source: usize,
        rel: String,
    },
    Symlink(String),
    Hardlink(String),
    Fifo,
    /// Bytes from an extracted archive entry, kept in a temp file.
    Extracted {
        file: usize,
    },
}

#[derive(Debug, Clone)]
struct Planned {
    content: Content,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
}

/// The plan of one layer: clean relative path → entry.
struct Plan<'v> {
    view: &'v ChainView,
    entries: BTreeMap<String, Planned>,
    chown: Option<(u64, u64)>,
    now: u64,
    extracted: Vec<tempfile::NamedTempFile>,
}

fn join(a: &str, b: &str) -> String {
    strip_empty_and_dot(&format!("{a}/{b}"))
}

fn base_name(p: &str) -> &str {
    p.trim_end_matches('/').rsplit('/').next().unwrap_or("")
}

impl<'v> Plan<'v> {
    fn new(view: &'v ChainView, chown: Option<(u64, u64)>) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self {
            view,
            entries: BTreeMap::new(),
            chown,
            now,
            extracted: Vec::new(),
        }
    }

    /// Every parent of `path` as an entry: existing metadata, or a new 0755 dir.
    fn parents(&mut self, path: &str) {
        let parts: Vec<&str> = path.split('/').collect();
        for i in 1..parts.len() {
            let p = parts[..i].join("/");
            if self.entries.contains_key(&p) {
                continue;
            }
            let planned = self.dir(&p, 0o755, self.chown.unwrap_or((0, 0)));
            self.entries.insert(p, planned);
        }
    }

    /// The directory `path`: an existing one keeps its metadata, a new one
    /// gets `mode`, `owner` and the current time.
    fn dir(&self, path: &str, mode: u32, owner: (u64, u64)) -> Planned {
        match self.view.get(path) {
            Some(e) if e.kind == tar::EntryType::Directory => Planned {
                content: Content::Dir,
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
                mtime: e.mtime,
            },
            _ => Planned {
                content: Content::Dir,
                mode,
                uid: owner.0,
                gid: owner.1,
                mtime: self.now,
            },
        }
    }

    fn put(&mut self, path: String, p: Planned) {
        if path.is_empty() {
            return;
        }
        self.parents(&path);
        // Replacing a directory with a non-directory drops what we planned under it.
        if !matches!(p.content, Content::Dir) {
            let prefix = format!("{path}/");
            self.entries.retain(|k, _| !k.starts_with(&prefix));
        }
        self.entries.insert(path, p);
    }
}

fn is_tar_archive(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b]) || (head.len() > 262 && &head[257..262] == b"ustar")
}

/// Build the COPY/ADD layer.
pub fn copy_layer(
    store: &ContentStore,
    view: &ChainView,
    action: &CopyAction,
    sources: &[(SourceFs<'_>, Vec<SourceMatch>)],
) -> Result<LayerRef, SolveError> {
    let chown = match &action.chown {
        Some(spec) if !spec.is_empty() => Some(view.resolve_user(spec)?),
        _ => None,
    };
    let mut plan = Plan::new(view, chown);
    let total: usize = sources.iter().map(|(_, m)| m.len()).sum();
    // BuildKit resolves the destination inside the rootfs: symlinks of the image on the
    // way (and at the end) are followed, never outside the root.
    let dest = view.resolve_in_root(&strip_empty_and_dot(&action.dest))?;
    let dest_is_dir = action.dest.ends_with('/')
        || action.dest.ends_with("/.")
        || total > 1
        || dest.is_empty()
        || view.is_dir(&dest);
    for (si, (fs, matches)) in sources.iter().enumerate() {
        for m in matches {
            let Some(root) = m.entries.first() else {
                continue;
            };
            let top = if action.parents {
                join(&dest, &m.path)
            } else if root.kind == EntryKind::Dir {
                dest.clone()
            } else if dest_is_dir {
                join(&dest, base_name(&m.path))
            } else {
                dest.clone()
            };
            for e in &m.entries {
                let rel = if e.path.is_empty() {
                    m.resolved.clone()
                } else {
                    join(&m.resolved, &e.path)
                };
                let target = if e.path.is_empty() {
                    top.clone()
                } else {
                    join(&top, &e.path)
                };
                let (uid, gid) = match (chown, fs.owners) {
                    (Some(c), _) => c,
                    (None, Some(v)) => v.get(&rel).map_or((0, 0), |x| (x.uid, x.gid)),
                    (None, None) => (0, 0),
                };
                let mode = action.chmod.unwrap_or(e.mode) & 0o7777;
                let content = match e.kind {
                    EntryKind::Dir => Content::Dir,
                    EntryKind::Symlink => {
                        Content::Symlink(e.link_target.clone().unwrap_or_default())
                    }
                    EntryKind::Fifo => Content::Fifo,
                    EntryKind::File => match &e.hardlink_to {
                        Some(first) => Content::Hardlink(join(&top, first)),
                        None => Content::File {
                            source: si,
                            rel: rel.clone(),
                        },
                    },
                };
                if e.path.is_empty() && e.kind == EntryKind::Dir {
                    // The destination directory itself: created 0755 unless it exists.
                    if !target.is_empty() && !plan.entries.contains_key(&target) {
                        let mode = action.chmod.unwrap_or(0o755);
                        let p = plan.dir(&target, mode, chown.unwrap_or((0, 0)));
                        plan.put(target, p);
                    }
                    continue;
                }
                if action.is_add && e.kind == EntryKind::File && e.path.is_empty() {
                    let extract = action.sources.iter().any(|s| s.extract_archives);
                    if extract && extract_wanted(fs.ctx, &rel)? {
                        extract_archive(&mut plan, fs.ctx, &rel, &dest)?;
                        continue;
                    }
                }
                plan.put(
                    target,
                    Planned {
                        content,
                        mode,
                        uid,
                        gid,
                        mtime: plan.now,
                    },
                );
            }
        }
    }
    write_plan(store, plan, sources)
}

fn extract_wanted(ctx: &BuildContext, rel: &str) -> Result<bool, SolveError> {
    let f = ctx
        .open_file(rel)
        .map_err(|e| SolveError::Context(e.to_string()))?;
    let mut r = BufReader::new(f);
    let mut head = vec![0u8; 512];
    let mut n = 0;
    while n < head.len() {
        let k = r
            .read(&mut head[n..])
            .map_err(|e| SolveError::Context(format!("{rel}: {e}")))?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(is_tar_archive(&head[..n]))
}

const MAX_EXTRACT_ENTRIES: usize = 1_000_000;

fn extract_archive(
    plan: &mut Plan<'_>,
    ctx: &BuildContext,
    rel: &str,
    into: &str,
) -> Result<(), SolveError> {
    let bad = |e: std::io::Error| SolveError::Context(format!("ADD {rel}: {e}"));
    let f = ctx
        .open_file(rel)
        .map_err(|e| SolveError::Context(e.to_string()))?;
    let reader = imgfarm_common::oci::layer::decompress::sniffed(f).map_err(bad)?;
    let mut ar = tar::Archive::new(reader);
    for (n, e) in ar.entries().map_err(bad)?.enumerate() {
        if n > MAX_EXTRACT_ENTRIES {
            return Err(SolveError::Context(format!("ADD {rel}: too many entries")));
        }
        let mut e = e.map_err(bad)?;
        let raw = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        if raw.split('/').any(|s| s == "..") {
            return Err(SolveError::Context(format!(
                "ADD {rel}: archive entry {raw:?} climbs out of the destination"
            )));
        }
        let target = join(into, &raw);
        let h = e.header().clone();
        let (uid, gid) = plan
            .chown
            .unwrap_or((h.uid().unwrap_or(0), h.gid().unwrap_or(0)));
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        let mtime = h.mtime().unwrap_or(0);
        let link = || {
            e.link_name_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        let content = match h.entry_type() {
            tar::EntryType::Directory => Content::Dir,
            tar::EntryType::Symlink => Content::Symlink(link()),
            tar::EntryType::Link => Content::Hardlink(join(into, &link())),
            tar::EntryType::Fifo => Content::Fifo,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut tmp = tempfile::NamedTempFile::new().map_err(bad)?;
                std::io::copy(&mut e, &mut tmp).map_err(bad)?;
                plan.extracted.push(tmp);
                Content::Extracted {
                    file: plan.extracted.len() - 1,
                }
            }
            _ => continue,
        };
        plan.put(
            target,
            Planned {
                content,
                mode,
                uid,
                gid,
                mtime,
            },
        );
    }
    Ok(())
}

/// WORKDIR: `mkdir -p path`, new directories owned by `user`.
pub fn mkdir_layer(
    store: &ContentStore,
    view: &ChainView,
    path: &str,
    mode: u32,
    user: &str,
) -> Result<LayerRef, SolveError> {
    let owner = if user.is_empty() {
        (0, 0)
    } else {
        view.resolve_user(user)?
    };
    let mut plan = Plan::new(view, Some(owner));
    let target = strip_empty_and_dot(path);
    let p = plan.dir(&target, mode, owner);
    plan.put(target, p);
    write_plan(store, plan, &[])
}

fn write_plan(
    store: &ContentStore,
    plan: Plan<'_>,
    sources: &[(SourceFs<'_>, Vec<SourceMatch>)],
) -> Result<LayerRef, SolveError> {
    let mut w = LayerWriter::new(store)?;
    for (path, p) in &plan.entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(p.mode);
        h.set_uid(p.uid);
        h.set_gid(p.gid);
        h.set_mtime(p.mtime);
        match &p.content {
            Content::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                w.append(&mut h, &format!("{path}/"), std::io::empty())?;
            }
            Content::Fifo => {
                h.set_entry_type(tar::EntryType::Fifo);
                h.set_size(0);
                w.append(&mut h, path, std::io::empty())?;
            }
            Content::Symlink(t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                w.append_link(&mut h, path, t)?;
            }
            Content::Hardlink(t) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                w.append_link(&mut h, path, t)?;
            }
            Content::File { source, rel } => {
                let ctx = sources
                    .get(*source)
                    .map(|s| s.0.ctx)
                    .ok_or_else(|| SolveError::Internal("copy source index".into()))?;
                let f = ctx
                    .open_file(rel)
                    .map_err(|e| SolveError::Context(e.to_string()))?;
                let meta = f
                    .metadata()
                    .map_err(|e| SolveError::Context(format!("{rel}: {e}")))?;
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(meta.len());
                if let Ok(m) = meta.modified() {
                    if let Ok(d) = m.duration_since(UNIX_EPOCH) {
                        h.set_mtime(d.as_secs());
                    }
                }
                w.append(&mut h, path, f.take(meta.len()))?;
            }
            Content::Extracted { file } => {
                let tmp = plan
                    .extracted
                    .get(*file)
                    .ok_or_else(|| SolveError::Internal("extracted index".into()))?;
                let f = tmp
                    .reopen()
                    .map_err(|e| SolveError::Context(format!("ADD: {e}")))?;
                let len = f
                    .metadata()
                    .map_err(|e| SolveError::Context(format!("ADD: {e}")))?
                    .len();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(len);
                w.append(&mut h, path, f.take(len))?;
            }
        }
    }
    w.finish()
}
