//! The build context as chunk layers for the farm: exactly what the
//! selection of `.` allows after `.dockerignore` (BuildKit sends the
//! context the same way: filtered before it leaves the client), split at
//! content-defined boundaries ([`imgfarm_common::farm::chunks`]) so that an
//! edit re-sends only the chunk around it; the other chunks keep their
//! bytes and digests, and the coordinator already holds them.
//!
//! Entries keep their mode bits (setuid/setgid/sticky included), symlink
//! targets, hard links and FIFOs; owners are 0:0 (the context has none, as
//! [`imgfarm_common::context::Entry`] says). Regular files keep their mtime,
//! which COPY carries into the image; other entries get mtime 0, which COPY
//! never reads. The gzip header carries no time, so the same entries pack
//! to the same chunk bytes. A hard link may name a file of an earlier
//! chunk: workers apply the chunks in order into one directory.
//!
//! Every file's content is hashed while it is packed and compared with the
//! selection's digest: a file changed in between fails the build instead of
//! sending content that does not match the cache keys.
//!
//! Chunks packed before are remembered per context directory
//! (`<state>/cache/context/<sha256 of the path>.chunks`, next to the digest
//! cache), keyed by everything their bytes depend on ([`chunk_key`]): an
//! unchanged chunk whose blob is still in the store is neither read, nor
//! compressed, nor written again.

use anyhow::{anyhow, Context as _};
use imgfarm_common::context::cache::DigestCache;
use imgfarm_common::context::{BuildContext, Entry, EntryKind};
use imgfarm_common::farm::chunks::{self, ChunkParams};
use imgfarm_common::farm::LayerRef;
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::oci::Digest;
use imgfarm_common::proto::codec::{decode_bounded, encode_bounded};
use imgfarm_common::sealed;
use imgfarm_worker::solve::layers::LayerWriter;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// What was packed.
#[derive(Debug, Clone)]
pub struct PackedContext {
    /// The chunk layer blobs, in order, in the local store.
    pub chunks: Vec<LayerRef>,
    /// Digest of the selection of `.` (equal on the worker after unpacking).
    pub selection: Digest,
    /// Entries packed.
    pub entries: usize,
    /// Chunks taken from earlier packs instead of packed again.
    pub reused: usize,
}

impl PackedContext {
    /// Compressed bytes over all chunks.
    pub fn size(&self) -> u64 {
        self.chunks.iter().map(|c| c.size).sum()
    }
}

/// A reader that hashes what passes through.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

fn changed(path: &str) -> anyhow::Error {
    anyhow!("{path:?} in the build context changed while it was packed; build again once the context is not being modified")
}

/// One entry to pack: its path in the context and in the tar.
struct Item<'s> {
    rel: String,
    entry: &'s Entry,
}

/// The bytes `e` takes in the tar stream, for the chunk boundaries.
fn weight(e: &Entry) -> u64 {
    let content = match (e.kind, &e.hardlink_to) {
        (EntryKind::File, None) => e.size,
        _ => 0,
    };
    let link = e.link_target.as_deref().or(e.hardlink_to.as_deref());
    chunks::tar_weight(&e.path, link, content)
}

/// Packs the context into chunk layer blobs in `store`. With `memo_dir`
/// (`<state>/cache/context`), chunks packed by an earlier build are reused.
pub fn pack_context(
    store: &ContentStore,
    ctx: &BuildContext,
    memo_dir: Option<&Path>,
) -> anyhow::Result<PackedContext> {
    let selection = ctx
        .select(&[".".to_string()], &[])
        .context("selecting the build context")?;
    let mut items = Vec::new();
    for m in &selection.matches {
        for e in &m.entries {
            if e.path.is_empty() {
                continue;
            }
            let rel = if m.resolved.is_empty() {
                e.path.clone()
            } else {
                format!("{}/{}", m.resolved, e.path)
            };
            items.push(Item { rel, entry: e });
        }
    }
    let weights: Vec<(&str, u64)> = items
        .iter()
        .map(|i| (i.entry.path.as_str(), weight(i.entry)))
        .collect();
    let params = ChunkParams::for_total(weights.iter().map(|(_, w)| w).sum());
    let memo = memo_dir.map(|dir| ChunkMemo::load(dir, ctx.root()));
    let mut packed = HashMap::new();
    let mut chunks = Vec::new();
    let mut reused = 0;
    for range in chunks::split(&weights, params) {
        let part = &items[range];
        let key = chunk_key(part);
        let known = memo
            .as_ref()
            .and_then(|m| m.chunks.get(&key))
            .filter(|l| store.contains(&l.digest));
        let layer = match known {
            Some(l) => {
                reused += 1;
                l.clone()
            }
            None => pack_chunk(store, ctx, part)?,
        };
        packed.insert(key, layer.clone());
        chunks.push(layer);
    }
    if let Some(Err(e)) = memo.as_ref().map(|m| m.save(packed)) {
        // Only the next build pays: it packs every chunk again.
        tracing::warn!("{e}");
    }
    Ok(PackedContext {
        chunks,
        selection: selection.digest(),
        entries: items.len(),
        reused,
    })
}

/// The mtime a tar header gets: a regular file's (whole seconds, as COPY
/// keeps it; 0 before 1970), 0 for anything else.
fn header_mtime(e: &Entry) -> u64 {
    match (e.kind, &e.hardlink_to) {
        (EntryKind::File, None) => u64::try_from(e.mtime_ns / 1_000_000_000).unwrap_or(0),
        _ => 0,
    }
}

/// Names a chunk by everything its bytes depend on: each entry's tar path,
/// kind, mode, size, header mtime, link targets and content digest, in
/// order, plus the packing format. Equal keys pack to equal content.
fn chunk_key(items: &[Item<'_>]) -> Digest {
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    field(b"imgfarm context chunk v1: gnu tar, uid/gid 0, gzip 6");
    for Item { entry: e, .. } in items {
        field(e.path.as_bytes());
        field(&[match e.kind {
            EntryKind::File => b'f',
            EntryKind::Dir => b'd',
            EntryKind::Symlink => b'l',
            EntryKind::Fifo => b'p',
        }]);
        field(&(e.mode & 0o7777).to_be_bytes());
        field(&e.size.to_be_bytes());
        field(&header_mtime(e).to_be_bytes());
        field(e.link_target.as_deref().unwrap_or("\0").as_bytes());
        field(e.hardlink_to.as_deref().unwrap_or("\0").as_bytes());
        field(e.digest.as_ref().map_or("", |d| d.as_str()).as_bytes());
    }
    Digest::from_sha256(h)
}

/// Format of the chunk memo file.
const MEMO_MAGIC: &[u8] = b"imgfarm-ctxchunks-1\n";

/// Largest chunk memo read or written.
const MAX_MEMO: usize = 64 << 20;

/// The chunks of the last pack of one context directory, by [`chunk_key`].
/// A missing or broken file is an empty memo; a failed write only costs the
/// next build a repack.
struct ChunkMemo {
    file: PathBuf,
    chunks: HashMap<Digest, LayerRef>,
}

impl ChunkMemo {
    fn load(dir: &Path, root: &Path) -> Self {
        let file = DigestCache::file_for(dir, root).with_extension("chunks");
        let chunks = match sealed::read(&file, MEMO_MAGIC, MAX_MEMO) {
            Ok(Some(body)) => decode_bounded::<Vec<(Digest, LayerRef)>, MAX_MEMO>(&body)
                .map(|v| v.into_iter().collect())
                .unwrap_or_else(|e| {
                    tracing::debug!(file = %file.display(), "context chunk memo ignored: {e}");
                    HashMap::new()
                }),
            Ok(None) => HashMap::new(),
            Err(why) => {
                tracing::debug!(file = %file.display(), "context chunk memo ignored: {why}");
                HashMap::new()
            }
        };
        Self { file, chunks }
    }

    /// Replaces the memo with `chunks` (this pack's), if they differ.
    fn save(&self, chunks: HashMap<Digest, LayerRef>) -> Result<(), String> {
        if chunks == self.chunks {
            return Ok(());
        }
        let mut list: Vec<(Digest, LayerRef)> = chunks.into_iter().collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        encode_bounded::<_, MAX_MEMO>(&list)
            .map_err(|e| e.to_string())
            .and_then(|body| {
                sealed::write(&self.file, MEMO_MAGIC, &body).map_err(|e| e.to_string())
            })
            .map_err(|e| {
                format!(
                    "cannot write the context chunk memo {}: {e}",
                    self.file.display()
                )
            })
    }
}

/// One chunk: `items` as a tar+gzip layer blob.
fn pack_chunk(
    store: &ContentStore,
    ctx: &BuildContext,
    items: &[Item<'_>],
) -> anyhow::Result<LayerRef> {
    let mut w = LayerWriter::new(store).map_err(|e| anyhow!("packing the build context: {e}"))?;
    for Item { rel, entry: e } in items {
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.mode & 0o7777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(0);
        let res = match (e.kind, &e.hardlink_to) {
            (EntryKind::Dir, _) => {
                h.set_entry_type(tar::EntryType::Directory);
                w.append(&mut h, &format!("{}/", e.path), std::io::empty())
            }
            (EntryKind::Fifo, _) => {
                h.set_entry_type(tar::EntryType::Fifo);
                w.append(&mut h, &e.path, std::io::empty())
            }
            (EntryKind::Symlink, _) => {
                h.set_entry_type(tar::EntryType::Symlink);
                let target = e.link_target.as_deref().unwrap_or_default();
                w.append_link(&mut h, &e.path, target)
            }
            (EntryKind::File, Some(first)) => {
                h.set_entry_type(tar::EntryType::Link);
                w.append_link(&mut h, &e.path, first)
            }
            (EntryKind::File, None) => {
                let f = ctx.open_file(rel).context("packing the build context")?;
                let meta = f
                    .metadata()
                    .with_context(|| format!("reading {rel:?} in the build context"))?;
                if meta.len() != e.size {
                    return Err(changed(rel));
                }
                h.set_mtime(header_mtime(e));
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(e.size);
                let mut src = Hashing {
                    inner: f.take(e.size),
                    hash: Sha256::new(),
                };
                let r = w.append(&mut h, &e.path, &mut src);
                if r.is_ok() && Some(Digest::from_sha256(src.hash)) != e.digest {
                    return Err(changed(rel));
                }
                r
            }
        };
        res.map_err(|err| anyhow!("packing the build context: {err}"))?;
    }
    w.finish()
        .map_err(|e| anyhow!("packing the build context: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgfarm_common::dockerfile::ignore::IgnoreMatcher;
    use imgfarm_common::oci::layer::{apply_all, ApplyOptions};
    use std::os::unix::fs::{symlink, PermissionsExt};

    /// Applies every chunk in order into `out`, as a worker does.
    fn unpack(store: &ContentStore, packed: &PackedContext, out: &std::path::Path) {
        let opts = ApplyOptions {
            ownership: false,
            ..Default::default()
        };
        let blobs = packed
            .chunks
            .iter()
            .map(|c| Ok(std::fs::File::open(store.blob_path(&c.digest)).unwrap()));
        apply_all(blobs, out, &opts).unwrap();
    }

    fn write(p: &std::path::Path, body: &str, mode: u32) {
        std::fs::write(p, body).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn round_trip_keeps_the_selection() {
        let src = tempfile::tempdir().unwrap();
        let root = src.path();
        write(&root.join("Dockerfile"), "FROM scratch\nCOPY . /\n", 0o644);
        write(&root.join("run.sh"), "#!/bin/sh\necho hi\n", 0o755);
        write(&root.join("suid"), "s", 0o4755);
        write(&root.join("secret.key"), "do not send", 0o600);
        std::fs::create_dir_all(root.join("sub/deep")).unwrap();
        write(&root.join("sub/deep/a.txt"), "alpha", 0o640);
        std::fs::create_dir(root.join("node_modules")).unwrap();
        write(&root.join("node_modules/big.js"), "x", 0o644);
        std::fs::set_permissions(root.join("sub"), std::fs::Permissions::from_mode(0o750)).unwrap();
        std::fs::hard_link(root.join("sub/deep/a.txt"), root.join("sub/hard.txt")).unwrap();
        symlink("deep/a.txt", root.join("sub/link")).unwrap();
        nix::unistd::mkfifo(
            &root.join("pipe"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        write(&root.join(".dockerignore"), "*.key\nnode_modules\n", 0o644);

        let ignore = IgnoreMatcher::parse("*.key\nnode_modules\n").unwrap();
        let ctx = BuildContext::open(root, ignore).unwrap();
        let state = tempfile::tempdir().unwrap();
        let store = ContentStore::open(state.path()).unwrap();
        let packed = pack_context(&store, &ctx, None).unwrap();
        assert!(packed.entries >= 9, "{}", packed.entries);

        // Packing again gives the same blobs: an unchanged context uploads once.
        let again = pack_context(&store, &ctx, None).unwrap();
        assert_eq!(again.chunks, packed.chunks);

        let out = tempfile::tempdir().unwrap();
        unpack(&store, &packed, out.path());
        assert!(!out.path().join("secret.key").exists());
        assert!(!out.path().join("node_modules").exists());
        let mode = |p: &str| {
            std::fs::symlink_metadata(out.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("run.sh"), 0o755);
        assert_eq!(mode("suid"), 0o4755);
        assert_eq!(mode("sub"), 0o750);
        assert_eq!(
            std::fs::read_to_string(out.path().join("sub/hard.txt")).unwrap(),
            "alpha"
        );

        let unpacked = BuildContext::open(out.path(), IgnoreMatcher::empty()).unwrap();
        let there = unpacked.select(&[".".to_string()], &[]).unwrap().digest();
        assert_eq!(there, packed.selection);
        let here = ctx.select(&[".".to_string()], &[]).unwrap().digest();
        assert_eq!(there, here);
    }
}

#[cfg(test)]
mod chunk_tests {
    use super::*;
    use imgfarm_common::dockerfile::ignore::IgnoreMatcher;
    use std::collections::BTreeSet;
    use std::path::Path;

    /// A 20,000-file context of about 4 MB: 100 to 300 bytes of letters
    /// each, from a fixed xorshift sequence (about as compressible as text).
    fn make_tree(root: &Path) {
        make_tree_of(root, 200);
    }

    fn make_tree_of(root: &Path, dirs: usize) {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for d in 0..dirs {
            let dir = root.join(format!("src/m{d:03}"));
            std::fs::create_dir_all(&dir).unwrap();
            for f in 0..100 {
                let n = 100 + next() % 201;
                let body: Vec<u8> = (0..n).map(|_| b'a' + (next() % 26) as u8).collect();
                std::fs::write(dir.join(format!("f{f:03}.rs")), body).unwrap();
            }
        }
    }

    /// Puts `body` back at `p` with the mtime `p` had (or `m`), so the
    /// context packs as before.
    fn restore(p: &Path, body: &[u8], m: std::time::SystemTime) {
        std::fs::write(p, body).unwrap();
        let f = std::fs::File::options().write(true).open(p).unwrap();
        f.set_modified(m).unwrap();
    }

    fn walk_size(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let m = e.metadata().unwrap();
                if m.is_dir() {
                    walk_size(&e.path())
                } else {
                    m.len()
                }
            })
            .sum()
    }

    fn pack(root: &Path, store: &ContentStore) -> PackedContext {
        let ctx = BuildContext::open(root, IgnoreMatcher::empty()).unwrap();
        pack_context(store, &ctx, None).unwrap()
    }

    /// Compressed bytes of the chunks of `after` that `before` lacks.
    fn new_bytes(before: &PackedContext, after: &PackedContext) -> u64 {
        let old: BTreeSet<&Digest> = before.chunks.iter().map(|c| &c.digest).collect();
        after
            .chunks
            .iter()
            .filter(|c| !old.contains(&c.digest))
            .map(|c| c.size)
            .sum()
    }

    #[test]
    fn one_changed_file_resends_under_one_percent() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        make_tree(root);
        let state = tempfile::tempdir().unwrap();
        let store = ContentStore::open(state.path()).unwrap();
        let base = pack(root, &store);
        assert_eq!(base.entries, 20_201);
        let content: u64 = walk_size(root);
        assert!((3_500_000..4_500_000).contains(&content), "{content}");

        // Same size, new content; a file that grows; one added; one removed.
        // Each edit is undone (mtime included) before the next, so each is
        // measured alone against the same base.
        let edit = root.join("src/m117/f042.rs");
        let grow = root.join("src/m003/f099.rs");
        let added = root.join("src/m150/f050b.rs");
        let gone = root.join("src/m199/f000.rs");
        let keep = |p: &Path| {
            let m = std::fs::metadata(p).unwrap().modified().unwrap();
            (std::fs::read(p).unwrap(), m)
        };
        let (edit_body, edit_m) = keep(&edit);
        let (grow_body, grow_m) = keep(&grow);
        let (gone_body, gone_m) = keep(&gone);
        let mut report = Vec::new();
        for what in ["same-size edit", "grown file", "added file", "removed file"] {
            match what {
                "same-size edit" => {
                    let mut b = edit_body.clone();
                    b[10] = if b[10] == b'z' { b'y' } else { b'z' };
                    std::fs::write(&edit, b).unwrap();
                }
                "grown file" => {
                    std::fs::write(&grow, [grow_body.as_slice(), &[b'x'; 2000]].concat()).unwrap()
                }
                "added file" => std::fs::write(&added, "fn added() {}\n").unwrap(),
                _ => std::fs::remove_file(&gone).unwrap(),
            }
            let after = pack(root, &store);
            let sent = new_bytes(&base, &after);
            let share = sent as f64 / after.size() as f64;
            let old: BTreeSet<&Digest> = base.chunks.iter().map(|c| &c.digest).collect();
            let fresh = after.chunks.iter().filter(|c| !old.contains(&c.digest));
            report.push(format!(
                "{what}: {sent} of {} bytes ({:.2}%) in {} of {} chunks",
                after.size(),
                share * 100.0,
                fresh.count(),
                after.chunks.len()
            ));
            assert!(sent > 0, "{what}: something must be sent");
            assert!(share <= 0.01, "{what}: {}", report.join("; "));
            restore(&edit, &edit_body, edit_m);
            restore(&grow, &grow_body, grow_m);
            restore(&gone, &gone_body, gone_m);
            let _ = std::fs::remove_file(&added);
        }
        // Undone edits pack to the very same chunks.
        assert_eq!(pack(root, &store).chunks, base.chunks);
        eprintln!("{}", report.join("\n"));
    }

    #[test]
    fn unchanged_chunks_are_not_packed_again() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        make_tree_of(root, 20);
        let state = tempfile::tempdir().unwrap();
        let store = ContentStore::open(state.path()).unwrap();
        let memo = state.path().join("cache/context");
        let packed = |memo: Option<&Path>| {
            let ctx = BuildContext::open(root, IgnoreMatcher::empty()).unwrap();
            pack_context(&store, &ctx, memo).unwrap()
        };
        let first = packed(Some(&memo));
        assert!(first.chunks.len() > 20, "{}", first.chunks.len());
        assert_eq!(first.reused, 0);

        let again = packed(Some(&memo));
        assert_eq!(again.chunks, first.chunks);
        assert_eq!(again.reused, first.chunks.len(), "nothing packed again");

        // One edit: only its chunk is packed; the result equals a pack
        // without the memo, byte for byte.
        std::fs::write(root.join("src/m007/f013.rs"), "changed").unwrap();
        let edited = packed(Some(&memo));
        assert_eq!(edited.reused, first.chunks.len() - 1);
        assert_eq!(edited.chunks, packed(None).chunks);

        // A chunk whose blob left the store (imgfarm prune) is packed again.
        std::fs::remove_file(store.blob_path(&edited.chunks[3].digest)).unwrap();
        let healed = packed(Some(&memo));
        assert_eq!(healed.reused, edited.chunks.len() - 1);
        assert!(store.contains(&edited.chunks[3].digest));

        // A broken memo is no memo.
        let file = DigestCache::file_for(&memo, root).with_extension("chunks");
        let mut bytes = std::fs::read(&file).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 1;
        std::fs::write(&file, bytes).unwrap();
        let fresh = packed(Some(&memo));
        assert_eq!((fresh.reused, &fresh.chunks), (0, &edited.chunks));
        assert_eq!(packed(Some(&memo)).reused, edited.chunks.len());

        // A memo that cannot be written costs the next build a repack, and
        // says where.
        std::fs::remove_dir_all(&memo).unwrap();
        std::fs::write(&memo, "in the way").unwrap();
        let blocked = ChunkMemo::load(&memo, root);
        assert!(blocked.chunks.is_empty());
        let err = blocked.save(HashMap::from([(
            Digest::sha256_of(b"k"),
            first.chunks[0].clone(),
        )]));
        let err = err.unwrap_err();
        assert!(err.contains("cannot write the context chunk memo"), "{err}");
        assert!(err.contains(&memo.display().to_string()), "{err}");
        assert_eq!(packed(Some(&memo)).chunks, edited.chunks);
    }
}
