//! A metadata view of a layer chain without unpacking it: path → type,
//! mode, owner (and the bytes of /etc/passwd and /etc/group, to resolve
//! `--chown` names). Whiteouts per the image spec "Whiteouts": `.wh.<name>`
//! deletes a lower path, `.wh..wh..opq` empties a lower directory.

use super::layers::open_layer;
use super::result::LayerRef;
use super::SolveError;
use imgfarm_common::oci::store::ContentStore;
use std::collections::BTreeMap;
use std::io::Read;

/// Metadata of one path in the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewEntry {
    /// Tar entry type.
    pub kind: tar::EntryType,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time.
    pub mtime: u64,
    /// Link target (symlink).
    pub link: String,
    /// Index in the chain of the layer that holds this entry.
    pub layer: usize,
}

/// The merged view of a chain.
#[derive(Debug, Default, Clone)]
pub struct ChainView {
    /// Clean relative paths (`etc/passwd`) → metadata.
    pub entries: BTreeMap<String, ViewEntry>,
    passwd: Option<Vec<u8>>,
    group: Option<Vec<u8>>,
}

const MAX_ENTRIES: usize = 2_000_000;
const MAX_ID_FILE: u64 = 4 << 20;
/// Most symlinks followed while resolving one path (the kernel's MAXSYMLINKS).
const MAX_SYMLINKS: usize = 40;

/// `p` relative and normalised: no empty or `.` components (`..` is left to
/// the caller).
pub(super) fn clean(p: &str) -> String {
    p.split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// What one layer does to a view, in archive order: the layer's metadata
/// index, read once per process for each layer blob (blobs are content
/// addressed, so a digest always means the same index) and shared by every
/// file op that views a chain holding it.
#[derive(Debug, Default)]
struct LayerIndex {
    ops: Vec<IndexOp>,
    passwd: Option<Vec<u8>>,
    group: Option<Vec<u8>>,
}

#[derive(Debug)]
enum IndexOp {
    /// `.wh..wh..opq` in this directory (`""`: the root).
    Opaque(String),
    /// `.wh.<name>`: this path and everything under it.
    Whiteout(String),
    /// An entry (its `layer` is filled in when applied).
    Entry(String, ViewEntry),
}

/// Most index operations kept in memory across layers; past it the memo is
/// emptied (a Debian base is about 20,000).
const MAX_MEMO_OPS: usize = 4_000_000;

static MEMO: std::sync::Mutex<Option<Memo>> = std::sync::Mutex::new(None);

#[derive(Default)]
struct Memo {
    by_digest: std::collections::HashMap<imgfarm_common::oci::Digest, std::sync::Arc<LayerIndex>>,
    ops: usize,
}

fn layer_index(
    store: &ContentStore,
    l: &LayerRef,
) -> Result<std::sync::Arc<LayerIndex>, SolveError> {
    {
        let g = MEMO
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = g.as_ref().and_then(|m| m.by_digest.get(&l.digest)) {
            return Ok(std::sync::Arc::clone(i));
        }
    }
    let index = std::sync::Arc::new(read_layer_index(store, l)?);
    let mut g = MEMO
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let m = g.get_or_insert_with(Memo::default);
    if m.ops + index.ops.len() > MAX_MEMO_OPS {
        *m = Memo::default();
    }
    m.ops += index.ops.len();
    m.by_digest
        .insert(l.digest.clone(), std::sync::Arc::clone(&index));
    Ok(index)
}

/// Whether layer `l` holds anything that an unpack restricted to the clean
/// relative `prefixes` ([`imgfarm_common::oci::layer::ApplyOptions::only`])
/// would apply: an entry or whiteout at, under or above a prefix, or an
/// opaque marker in such a directory. A layer that holds none can be skipped
/// without reading its blob again.
pub(super) fn layer_touches(
    store: &ContentStore,
    l: &LayerRef,
    prefixes: &[String],
) -> Result<bool, SolveError> {
    let related = |p: &str| {
        prefixes.iter().any(|x| {
            p == x
                || p.strip_prefix(x.as_str())
                    .is_some_and(|r| r.starts_with('/'))
                || x.strip_prefix(p).is_some_and(|r| r.starts_with('/'))
        })
    };
    Ok(layer_index(store, l)?.ops.iter().any(|op| match op {
        IndexOp::Entry(p, _) | IndexOp::Whiteout(p) => related(p),
        IndexOp::Opaque(d) => d.is_empty() || related(d),
    }))
}

fn read_layer_index(store: &ContentStore, l: &LayerRef) -> Result<LayerIndex, SolveError> {
    let bad = |e: std::io::Error| SolveError::Layer(format!("reading layer {}: {e}", l.digest));
    let mut out = LayerIndex::default();
    let mut ar = tar::Archive::new(open_layer(store, l)?);
    for e in ar.entries().map_err(bad)? {
        let mut e = e.map_err(bad)?;
        let path = clean(&String::from_utf8_lossy(&e.path_bytes()));
        if path.is_empty() {
            continue;
        }
        let (dir, base) = match path.rsplit_once('/') {
            Some((d, b)) => (d.to_string(), b.to_string()),
            None => (String::new(), path.clone()),
        };
        if base == ".wh..wh..opq" {
            out.ops.push(IndexOp::Opaque(dir));
            continue;
        }
        if let Some(name) = base.strip_prefix(".wh.") {
            let gone = if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            };
            out.ops.push(IndexOp::Whiteout(gone));
            continue;
        }
        let h = e.header();
        let entry = ViewEntry {
            kind: h.entry_type(),
            mode: h.mode().unwrap_or(0o644) & 0o7777,
            uid: h.uid().unwrap_or(0),
            gid: h.gid().unwrap_or(0),
            mtime: h.mtime().unwrap_or(0),
            link: e
                .link_name_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default(),
            layer: 0,
        };
        if path == "etc/passwd" || path == "etc/group" {
            let mut buf = Vec::new();
            (&mut e)
                .take(MAX_ID_FILE)
                .read_to_end(&mut buf)
                .map_err(bad)?;
            if path == "etc/passwd" {
                out.passwd = Some(buf);
            } else {
                out.group = Some(buf);
            }
        }
        out.ops.push(IndexOp::Entry(path, entry));
        if out.ops.len() > MAX_ENTRIES {
            return Err(SolveError::Layer(format!(
                "layer {} has more than {MAX_ENTRIES} paths",
                l.digest
            )));
        }
    }
    Ok(out)
}

impl ChainView {
    /// Read every layer of `chain`, bottom first (each layer's index is read
    /// from its blob once per process).
    pub fn load(store: &ContentStore, chain: &[LayerRef]) -> Result<Self, SolveError> {
        let mut v = Self::default();
        for (i, l) in chain.iter().enumerate() {
            v.apply(&*layer_index(store, l)?, i)?;
        }
        Ok(v)
    }

    fn apply(&mut self, index: &LayerIndex, layer: usize) -> Result<(), SolveError> {
        for op in &index.ops {
            match op {
                IndexOp::Opaque(dir) => {
                    if dir.is_empty() {
                        self.entries.clear();
                    } else {
                        let prefix = format!("{dir}/");
                        self.entries.retain(|k, _| !k.starts_with(&prefix));
                    }
                }
                IndexOp::Whiteout(gone) => {
                    let prefix = format!("{gone}/");
                    self.entries
                        .retain(|k, _| k != gone && !k.starts_with(&prefix));
                }
                IndexOp::Entry(path, entry) => {
                    if entry.kind != tar::EntryType::Directory {
                        // A non-directory replaces a directory and everything in it.
                        let prefix = format!("{path}/");
                        self.entries.retain(|k, _| !k.starts_with(&prefix));
                    }
                    self.entries.insert(
                        path.clone(),
                        ViewEntry {
                            layer,
                            ..entry.clone()
                        },
                    );
                    if self.entries.len() > MAX_ENTRIES {
                        return Err(SolveError::Layer(format!(
                            "layer chain has more than {MAX_ENTRIES} paths"
                        )));
                    }
                }
            }
        }
        if index.passwd.is_some() {
            self.passwd.clone_from(&index.passwd);
        }
        if index.group.is_some() {
            self.group.clone_from(&index.group);
        }
        Ok(())
    }

    /// The entry at absolute or relative `path`.
    pub fn get(&self, path: &str) -> Option<&ViewEntry> {
        self.entries.get(&clean(path))
    }

    /// `path` with every symlink of the view followed, resolved inside the root
    /// (continuity's `RootPath`, which BuildKit uses for a COPY destination): an
    /// absolute link target restarts at the root, `..` never climbs above it, and
    /// missing components are kept as they are. Returns a clean relative path.
    pub fn resolve_in_root(&self, path: &str) -> Result<String, SolveError> {
        let mut pending: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .rev()
            .map(str::to_string)
            .collect();
        let mut cur: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(c) = pending.pop() {
            if c == ".." {
                cur.pop();
                continue;
            }
            cur.push(c);
            let Some(e) = self.entries.get(&cur.join("/")) else {
                continue;
            };
            if e.kind != tar::EntryType::Symlink {
                continue;
            }
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(SolveError::Context(format!(
                    "resolving {path:?} in the image: too many levels of symbolic links"
                )));
            }
            cur.pop();
            if e.link.starts_with('/') {
                cur.clear();
            }
            pending.extend(
                e.link
                    .split('/')
                    .filter(|s| !s.is_empty() && *s != ".")
                    .rev()
                    .map(str::to_string),
            );
        }
        Ok(cur.join("/"))
    }

    /// Is `path` itself a directory (no symlink is followed; resolve first with
    /// [`Self::resolve_in_root`]).
    pub fn is_dir(&self, path: &str) -> bool {
        self.get(path)
            .is_some_and(|e| e.kind == tar::EntryType::Directory)
    }

    /// Resolve a `user[:group]` spec to ids via /etc/passwd and /etc/group
    /// of this filesystem (Docker's rule: numeric ids are used as given; a
    /// user name without a group takes the user's primary group).
    pub fn resolve_user(&self, spec: &str) -> Result<(u64, u64), SolveError> {
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let lookup = |file: &Option<Vec<u8>>, name: &str, field: usize| -> Option<u64> {
            let text = String::from_utf8_lossy(file.as_deref()?).into_owned();
            text.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.first() == Some(&name))
                    .then(|| f.get(field).and_then(|v| v.parse().ok()))
                    .flatten()
            })
        };
        let (uid, primary) = if user.is_empty() {
            (0, 0)
        } else if let Ok(n) = user.parse::<u64>() {
            // BuildKit: a numeric user without a group also gets it as gid.
            (n, n)
        } else {
            let uid = lookup(&self.passwd, user, 2).ok_or_else(|| {
                SolveError::User(format!(
                    "unable to find user {user}: no matching entries in /etc/passwd"
                ))
            })?;
            (uid, lookup(&self.passwd, user, 3).unwrap_or(0))
        };
        let gid = match group {
            None => primary,
            Some(g) => match g.parse::<u64>() {
                Ok(n) => n,
                Err(_) => lookup(&self.group, g, 2).ok_or_else(|| {
                    SolveError::User(format!(
                        "unable to find group {g}: no matching entries in /etc/group"
                    ))
                })?,
            },
        };
        Ok((uid, gid))
    }
}

/// Write the merged filesystem of `chain` as one plain tar to `out`: every
/// path once, as the topmost layer has it (whiteouts applied, never written).
pub fn write_flat_tar(
    store: &ContentStore,
    chain: &[LayerRef],
    out: impl std::io::Write,
) -> Result<(), SolveError> {
    let view = ChainView::load(store, chain)?;
    let mut w = tar::Builder::new(out);
    let bad = |e: std::io::Error| SolveError::Layer(format!("writing tar: {e}"));
    for (i, l) in chain.iter().enumerate() {
        let mut ar = tar::Archive::new(open_layer(store, l)?);
        for e in ar.entries().map_err(bad)? {
            let mut e = e.map_err(bad)?;
            let path = clean(&String::from_utf8_lossy(&e.path_bytes()));
            if view.entries.get(&path).is_none_or(|v| v.layer != i) {
                continue;
            }
            let mut h = e.header().clone();
            let link = e
                .link_name_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            let name = if h.entry_type() == tar::EntryType::Directory {
                format!("{path}/")
            } else {
                path.clone()
            };
            match (h.entry_type(), link) {
                (tar::EntryType::Symlink | tar::EntryType::Link, Some(t)) => {
                    w.append_link(&mut h, &name, t).map_err(bad)?
                }
                _ => w.append_data(&mut h, &name, &mut e).map_err(bad)?,
            }
        }
    }
    w.finish().map_err(bad)
}
