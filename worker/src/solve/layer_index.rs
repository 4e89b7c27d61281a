//! What one layer does to a filesystem view, in archive order: its metadata
//! index (paths, types, modes, owners, whiteouts, and the bytes of
//! /etc/passwd and /etc/group). Blobs are content addressed, so a digest
//! always means the same index: it is read from the blob once, kept on disk
//! under `<state>/index/layers/<hex>.bin` (so a later build process does not
//! decompress a 400 MB base to learn its file list) and memoized in the
//! process. A missing, corrupt or foreign index file is a miss: the blob is
//! read again and the file rewritten; it is never an error.
//!
//! Whiteouts per the image spec ("Whiteouts"): `.wh.<name>` deletes a lower
//! path, `.wh..wh..opq` empties a lower directory.

use super::result::LayerRef;
use super::SolveError;
use imgfarm_common::oci::layer::open_layer;
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::oci::Digest;
use imgfarm_common::path::strip_empty_and_dot;
use imgfarm_common::proto::codec;
use imgfarm_common::sealed;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

/// Most paths one layer may hold.
pub(super) const MAX_ENTRIES: usize = 2_000_000;
/// Largest /etc/passwd or /etc/group kept for `--chown` names.
const MAX_ID_FILE: u64 = 4 << 20;
/// Most index operations kept in memory across layers; past it the memo is
/// emptied (a Debian base is about 20,000).
const MAX_MEMO_OPS: usize = 4_000_000;
/// First bytes of an index file; a new layout gets a new tag.
const FILE_TAG: &[u8] = b"imgfarm layer index v2\n";
/// Largest index file read or written (a Debian base's is about 1 MB).
const MAX_INDEX_FILE: usize = 64 << 20;

/// Metadata of one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewEntry {
    /// Tar entry type.
    #[serde(with = "entry_type")]
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

mod entry_type {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(k: &tar::EntryType, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(k.as_byte())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<tar::EntryType, D::Error> {
        Ok(tar::EntryType::new(u8::deserialize(d)?))
    }
}

/// One layer's index.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct LayerIndex {
    pub ops: Vec<IndexOp>,
    pub passwd: Option<Vec<u8>>,
    pub group: Option<Vec<u8>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) enum IndexOp {
    /// `.wh..wh..opq` in this directory (`""`: the root).
    Opaque(String),
    /// `.wh.<name>`: this path and everything under it.
    Whiteout(String),
    /// An entry (its `layer` is filled in when applied).
    Entry(String, ViewEntry),
}

static MEMO: Mutex<Option<Memo>> = Mutex::new(None);

#[derive(Default)]
struct Memo {
    by_digest: HashMap<Digest, Arc<LayerIndex>>,
    ops: usize,
}

fn index_path(store: &ContentStore, digest: &Digest) -> PathBuf {
    store
        .root()
        .join("index")
        .join("layers")
        .join(format!("{}.bin", digest.hex()))
}

/// The index of layer `l`: memo, then disk, then the blob.
pub(super) fn layer_index(
    store: &ContentStore,
    l: &LayerRef,
) -> Result<Arc<LayerIndex>, SolveError> {
    {
        let g = MEMO.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = g.as_ref().and_then(|m| m.by_digest.get(&l.digest)) {
            return Ok(Arc::clone(i));
        }
    }
    let index = match load(store, &l.digest) {
        Some(i) => Arc::new(i),
        None => {
            let i = read_layer_index(store, l)?;
            save(store, &l.digest, &i);
            Arc::new(i)
        }
    };
    let mut g = MEMO.lock().unwrap_or_else(PoisonError::into_inner);
    let m = g.get_or_insert_with(Memo::default);
    if m.ops + index.ops.len() > MAX_MEMO_OPS {
        *m = Memo::default();
    }
    m.ops += index.ops.len();
    m.by_digest.insert(l.digest.clone(), Arc::clone(&index));
    Ok(index)
}

/// Makes sure layer `l` is indexed (on disk and in memory): the snapshotter
/// calls it beside each unpack, so later file ops on that layer read a small
/// index instead of its blob.
pub(crate) fn ensure_index(store: &ContentStore, l: &LayerRef) -> Result<(), SolveError> {
    layer_index(store, l).map(drop)
}

/// The persisted index of `digest`, if a valid one is on disk (a sealed
/// file: `imgfarm_common::sealed`).
fn load(store: &ContentStore, digest: &Digest) -> Option<LayerIndex> {
    let path = index_path(store, digest);
    let body = match sealed::read(&path, FILE_TAG, MAX_INDEX_FILE) {
        Ok(body) => body?,
        Err(e) => {
            tracing::debug!(path = %path.display(), "layer index unusable ({e}): reading the blob again");
            return None;
        }
    };
    codec::decode_bounded::<LayerIndex, MAX_INDEX_FILE>(&body)
        .map_err(|e| {
            tracing::debug!(path = %path.display(), "layer index unreadable ({e}): reading the blob again")
        })
        .ok()
}

/// Persist `index`. Failing to save only costs a later re-read: it is
/// logged, not returned.
fn save(store: &ContentStore, digest: &Digest, index: &LayerIndex) {
    let path = index_path(store, digest);
    let result = codec::encode_bounded::<LayerIndex, MAX_INDEX_FILE>(index)
        .map_err(|e| e.to_string())
        .and_then(|body| sealed::write(&path, FILE_TAG, &body).map_err(|e| e.to_string()));
    if let Err(e) = result {
        tracing::debug!(path = %path.display(), "layer index not saved: {e}");
    }
}

/// Removes the persisted indexes of blobs the store no longer holds (`prune`
/// calls it after the store's GC). Returns the bytes freed.
pub fn collect_indexes(store: &ContentStore) -> u64 {
    let dir = store.root().join("index").join("layers");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut freed = 0;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".bin")) else {
            continue;
        };
        let live = format!("sha256:{hex}")
            .parse::<Digest>()
            .is_ok_and(|d| store.contains(&d));
        if !live {
            freed += e.metadata().map_or(0, |m| m.len());
            let _ = std::fs::remove_file(e.path());
        }
    }
    freed
}

fn read_layer_index(store: &ContentStore, l: &LayerRef) -> Result<LayerIndex, SolveError> {
    let bad = |e: std::io::Error| SolveError::Layer(format!("reading layer {}: {e}", l.digest));
    let mut out = LayerIndex::default();
    let mut ar = tar::Archive::new(open_layer(store, l)?);
    for e in ar.entries().map_err(bad)? {
        let mut e = e.map_err(bad)?;
        let path = strip_empty_and_dot(&String::from_utf8_lossy(&e.path_bytes()));
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

/// The one layer of `chain` that decides what is at and under the clean
/// relative `prefixes`, when there is one: the only layer with entries at
/// or under them, with no whiteout or opaque marker there, and no layer
/// above or below it that deletes, hides or replaces a prefix or one of its
/// parents. Then that layer's committed snapshot holds exactly the files a
/// copy from those prefixes reads (their parents' metadata comes from the
/// view). `None` when several layers contribute or anything is hidden.
pub(super) fn sole_holder(
    store: &ContentStore,
    chain: &[LayerRef],
    prefixes: &[String],
) -> Result<Option<usize>, SolveError> {
    let at_or_under = |p: &str| {
        prefixes.iter().any(|x| {
            p == x
                || p.strip_prefix(x.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        })
    };
    let above = |p: &str| {
        p.is_empty()
            || prefixes
                .iter()
                .any(|x| x.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
    };
    let mut holder = None;
    for (i, l) in chain.iter().enumerate() {
        let index = layer_index(store, l)?;
        let mut holds = false;
        for op in &index.ops {
            match op {
                IndexOp::Entry(p, _) if at_or_under(p) => holds = true,
                IndexOp::Entry(p, e) if above(p) && e.kind != tar::EntryType::Directory => {
                    return Ok(None);
                }
                IndexOp::Entry(..) => {}
                IndexOp::Whiteout(p) | IndexOp::Opaque(p) if at_or_under(p) || above(p) => {
                    return Ok(None);
                }
                IndexOp::Whiteout(_) | IndexOp::Opaque(_) => {}
            }
        }
        if holds {
            if holder.is_some() {
                return Ok(None);
            }
            holder = Some(i);
        }
    }
    Ok(holder)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(store: &ContentStore) -> LayerRef {
        let mut w = super::super::layers::LayerWriter::new(store).expect("writer");
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(5);
        w.append(&mut h, "etc/passwd", &b"a:x:1"[..])
            .expect("append");
        w.finish().expect("finish")
    }

    #[test]
    fn persisted_index_is_read_back_and_corrupt_files_are_misses() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = ContentStore::open(dir.path()).expect("store");
        let l = layer(&store);
        let read = read_layer_index(&store, &l).expect("index");
        save(&store, &l.digest, &read);
        let back = load(&store, &l.digest).expect("saved index loads");
        assert_eq!(back.ops.len(), 1);
        assert_eq!(back.passwd.as_deref(), Some(&b"a:x:1"[..]));
        let path = index_path(&store, &l.digest);
        for junk in [
            &b""[..],
            b"imgfarm layer index v2\n\0\0\0\x09abc",
            b"other tag\n",
        ] {
            std::fs::write(&path, junk).expect("write");
            assert!(load(&store, &l.digest).is_none(), "{junk:?} must be a miss");
        }
        // A miss is rebuilt from the blob.
        let again = layer_index(&store, &l).expect("index");
        assert_eq!(again.ops.len(), 1);
    }
}
