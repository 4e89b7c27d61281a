//! The build context as one layer blob for the farm: exactly what the
//! selection of `.` allows after `.dockerignore` (BuildKit sends the
//! context the same way: filtered before it leaves the client).
//!
//! Entries keep their mode bits (setuid/setgid/sticky included), symlink
//! targets, hard links and FIFOs; owners are 0:0 (the context has none, as
//! [`imgfarm_common::context::Entry`] says). Regular files keep their mtime,
//! which COPY carries into the image; other entries get mtime 0, which COPY
//! never reads. The gzip header carries no time, so an unchanged context
//! packs to the same blob and is uploaded once.
//!
//! Every file's content is hashed while it is packed and compared with the
//! selection's digest: a file changed in between fails the build instead of
//! sending content that does not match the cache keys.

use anyhow::{anyhow, Context as _};
use imgfarm_common::context::{BuildContext, EntryKind};
use imgfarm_common::farm::LayerRef;
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::oci::Digest;
use imgfarm_worker::solve::layers::LayerWriter;
use sha2::{Digest as _, Sha256};
use std::io::Read;
use std::time::UNIX_EPOCH;

/// What was packed.
#[derive(Debug, Clone)]
pub struct PackedContext {
    /// The layer blob, in the local store.
    pub layer: LayerRef,
    /// Digest of the selection of `.` (equal on the worker after unpacking).
    pub selection: Digest,
    /// Entries packed.
    pub entries: usize,
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

/// Packs the context into a gzip layer blob in `store`.
pub fn pack_context(store: &ContentStore, ctx: &BuildContext) -> anyhow::Result<PackedContext> {
    let selection = ctx
        .select(&[".".to_string()], &[])
        .context("selecting the build context")?;
    let mut w = LayerWriter::new(store).map_err(|e| anyhow!("packing the build context: {e}"))?;
    let mut entries = 0;
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
                    let f = ctx.open_file(&rel).context("packing the build context")?;
                    let meta = f
                        .metadata()
                        .with_context(|| format!("reading {rel:?} in the build context"))?;
                    if meta.len() != e.size {
                        return Err(changed(&rel));
                    }
                    if let Some(t) = meta
                        .modified()
                        .ok()
                        .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
                    {
                        h.set_mtime(t.as_secs());
                    }
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(e.size);
                    let mut src = Hashing {
                        inner: f.take(e.size),
                        hash: Sha256::new(),
                    };
                    let r = w.append(&mut h, &e.path, &mut src);
                    if r.is_ok() && Some(Digest::from_sha256(src.hash)) != e.digest {
                        return Err(changed(&rel));
                    }
                    r
                }
            };
            res.map_err(|err| anyhow!("packing the build context: {err}"))?;
            entries += 1;
        }
    }
    let layer = w
        .finish()
        .map_err(|e| anyhow!("packing the build context: {e}"))?;
    Ok(PackedContext {
        layer,
        selection: selection.digest(),
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgfarm_common::dockerfile::ignore::IgnoreMatcher;
    use imgfarm_common::oci::layer::{apply, ApplyOptions};
    use std::os::unix::fs::{symlink, PermissionsExt};

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
        let packed = pack_context(&store, &ctx).unwrap();
        assert!(packed.entries >= 9, "{}", packed.entries);

        // Packing again gives the same blob: an unchanged context uploads once.
        let again = pack_context(&store, &ctx).unwrap();
        assert_eq!(again.layer.digest, packed.layer.digest);

        let out = tempfile::tempdir().unwrap();
        let blob = std::fs::File::open(store.blob_path(&packed.layer.digest)).unwrap();
        let opts = ApplyOptions {
            ownership: false,
            ..Default::default()
        };
        apply(blob, out.path(), &opts).unwrap();
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
