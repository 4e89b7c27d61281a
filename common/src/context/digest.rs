//! Content digests: streaming sha256 of context files (cached per context by
//! device and inode, and across builds by [`super::cache`]), and the
//! canonical digest of a whole selection.

use super::cache::Stamp;
use super::fsys::{DirHandle, RawKind, RawStat};
use super::{BuildContext, ContextError, EntryKind, FileStamp, Selection};
use crate::oci::Digest;
use sha2::{Digest as _, Sha256};
use std::ffi::OsStr;
use std::io::Read;

/// Read buffer for hashing: memory stays bounded whatever the file size.
const HASH_BUFFER: usize = 256 * 1024;

/// sha256 of the regular file `name` in `dir`, whose `lstat` the walk saw
/// as `stat`. The open file must be that same file and must have that size,
/// or the context changed under us.
pub(super) fn file_digest(
    ctx: &BuildContext,
    dir: &DirHandle,
    name: &OsStr,
    stat: &RawStat,
    path: &str,
) -> Result<Digest, ContextError> {
    let stamp = FileStamp {
        size: stat.size,
        mtime_ns: stat.mtime_ns,
        ctime_ns: stat.ctime_ns,
    };
    let persisted = ctx.persisted.as_ref();
    let persisted_stamp = Stamp {
        size: stat.size,
        mtime_ns: stat.mtime_ns,
        ctime_ns: stat.ctime_ns,
        ino: stat.ino,
        mode: stat.perm,
    };
    if let Some(digest) = persisted.and_then(|p| p.lookup(path, persisted_stamp)) {
        return Ok(digest);
    }
    let key = (stat.dev, stat.ino);
    {
        let cache = ctx
            .file_digests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((cached_stamp, digest)) = cache.get(&key) {
            if *cached_stamp == stamp {
                if let Some(p) = persisted {
                    p.record(path, persisted_stamp, digest);
                }
                return Ok(digest.clone());
            }
        }
    }
    let changed = || ContextError::Changed {
        path: path.to_string(),
    };
    let io_err = |source| ContextError::Io {
        path: path.to_string(),
        source,
    };
    let (mut file, opened) = dir.open_file(name).map_err(io_err)?;
    if opened.kind != RawKind::File || opened.dev != stat.dev || opened.ino != stat.ino {
        return Err(changed());
    }
    ctx.files_hashed
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; HASH_BUFFER];
    let mut total: u64 = 0;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(e)),
        };
        total += n as u64;
        if total > stat.size {
            return Err(changed());
        }
        hasher.update(&buf[..n]);
    }
    if total != stat.size {
        return Err(changed());
    }
    let digest = Digest::from_sha256(hasher);
    if let Some(p) = persisted {
        p.record(path, persisted_stamp, &digest);
    }
    let mut cache = ctx
        .file_digests
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    cache.insert(key, (stamp, digest.clone()));
    Ok(digest)
}

/// Length-prefixed field writer: no two different selections encode alike.
struct Encoder(Sha256);

impl Encoder {
    fn bytes(&mut self, b: &[u8]) {
        self.0.update((b.len() as u64).to_be_bytes());
        self.0.update(b);
    }

    fn opt(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.0.update([1]);
                self.bytes(s.as_bytes());
            }
            None => self.0.update([0]),
        }
    }
}

/// The canonical encoding behind [`Selection::digest`], version-tagged so a
/// future change of fields changes every digest.
pub(super) fn selection_digest(selection: &Selection) -> Digest {
    let mut enc = Encoder(Sha256::new());
    enc.bytes(b"imgfarm context selection v1");
    enc.0.update((selection.matches.len() as u64).to_be_bytes());
    for m in &selection.matches {
        enc.bytes(m.path.as_bytes());
        enc.0.update((m.entries.len() as u64).to_be_bytes());
        for e in &m.entries {
            enc.bytes(e.path.as_bytes());
            enc.0.update([match e.kind {
                EntryKind::File => b'f',
                EntryKind::Dir => b'd',
                EntryKind::Symlink => b'l',
                EntryKind::Fifo => b'p',
            }]);
            // A directory source's own mode does not reach the image: BuildKit
            // creates the destination directory (0755) before copying the
            // contents into it. Leaving it out keeps `COPY . /app` stable
            // across checkouts made with different umasks.
            let mode = if e.path.is_empty() && e.kind == EntryKind::Dir {
                0
            } else {
                e.mode
            };
            enc.0.update(mode.to_be_bytes());
            enc.0.update(e.size.to_be_bytes());
            enc.opt(e.link_target.as_deref());
            enc.opt(e.digest.as_ref().map(Digest::as_str));
            enc.opt(e.hardlink_to.as_deref());
        }
    }
    Digest::from_sha256(enc.0)
}
