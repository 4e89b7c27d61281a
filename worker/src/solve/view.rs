//! A metadata view of a layer chain without unpacking it: path → type,
//! mode, owner (and the bytes of /etc/passwd and /etc/group, to resolve
//! `--chown` names). Whiteouts per the image spec "Whiteouts": `.wh.<name>`
//! deletes a lower path, `.wh..wh..opq` empties a lower directory.

pub(super) use super::layer_index::layer_touches;
pub use super::layer_index::ViewEntry;
use super::layer_index::{layer_index, IndexOp, LayerIndex, MAX_ENTRIES};
use super::result::LayerRef;
use super::SolveError;
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::path::{self, strip_empty_and_dot, AfterMissing, Node, ResolveError};
use std::collections::BTreeMap;
use std::convert::Infallible;

/// The merged view of a chain.
#[derive(Debug, Default, Clone)]
pub struct ChainView {
    /// Clean relative paths (`etc/passwd`) → metadata.
    pub entries: BTreeMap<String, ViewEntry>,
    passwd: Option<Vec<u8>>,
    group: Option<Vec<u8>>,
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
                IndexOp::Opaque(dir) if dir.is_empty() => self.entries.clear(),
                IndexOp::Opaque(dir) => self.remove_below(dir),
                IndexOp::Whiteout(gone) => {
                    self.entries.remove(gone);
                    self.remove_below(gone);
                }
                IndexOp::Entry(path, entry) => {
                    if entry.kind != tar::EntryType::Directory {
                        // A non-directory replaces a directory and everything in it.
                        self.remove_below(path);
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

    /// Drop every path strictly below `dir`. Paths under `dir/` are one
    /// contiguous range of the sorted map, so this costs the entries removed,
    /// not a scan of the whole view.
    fn remove_below(&mut self, dir: &str) {
        let prefix = format!("{dir}/");
        let below: Vec<String> = self
            .entries
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in below {
            self.entries.remove(&k);
        }
    }

    /// The entry at absolute or relative `path`.
    pub fn get(&self, path: &str) -> Option<&ViewEntry> {
        self.entries.get(&strip_empty_and_dot(path))
    }

    /// `path` with every symlink of the view followed, resolved inside the root
    /// (continuity's `RootPath`, which BuildKit uses for a COPY destination): an
    /// absolute link target restarts at the root, `..` never climbs above it, and
    /// missing components are kept as they are; [`path::resolve_in_root`]). Returns a clean
    /// relative path.
    pub fn resolve_in_root(&self, path: &str) -> Result<String, SolveError> {
        // The view's own links, by key; a path can be present below a
        // missing parent, so every component is looked up.
        let read = |cur: &[Vec<u8>], name: &[u8]| -> Result<Node, Infallible> {
            let mut key = cur.join(&b'/');
            if !key.is_empty() {
                key.push(b'/');
            }
            key.extend_from_slice(name);
            Ok(match self.entries.get(&*String::from_utf8_lossy(&key)) {
                None => Node::Missing,
                Some(e) if e.kind == tar::EntryType::Symlink => {
                    Node::Link(e.link.clone().into_bytes())
                }
                Some(_) => Node::Other,
            })
        };
        match path::resolve_in_root(path.as_bytes(), AfterMissing::Continue, read) {
            Ok(parts) => Ok(String::from_utf8_lossy(&parts.join(&b'/')).into_owned()),
            Err(ResolveError::Read(never)) => match never {},
            Err(_) => Err(SolveError::Context(format!(
                "resolving {path:?} in the image: too many levels of symbolic links"
            ))),
        }
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
