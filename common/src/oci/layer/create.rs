//! Layer creation: one pass over a directory → tar → compressor → content
//! store, hashing the uncompressed tar (`diff_id`) and the blob (digest) on
//! the way. Memory is bounded by the copy buffer and the compressor's
//! in-flight chunks; the layer is never held in RAM.
//!
//! Rules implemented:
//! - entries depth-first, names sorted bytewise within each directory (the
//!   order of `tar --sort=name`); the root itself is not an entry;
//! - hardlinks (same device and inode, `nlink > 1`) become link entries to
//!   the first path seen;
//! - from an overlay upper dir ([`SourceKind::OverlayUpper`]): a character
//!   device 0/0 or a file with `*.overlay.whiteout` becomes `.wh.<name>`, a
//!   directory with `*.overlay.opaque=y` gets a `.wh..wh..opq` entry (image
//!   spec "Whiteouts"); overlayfs' own `trusted.overlay.*`/`user.overlay.*`
//!   xattrs never enter the layer;
//! - other xattrs (e.g. `security.capability`) as PAX `SCHILY.xattr.*`;
//! - sockets are skipped (tar cannot hold them, as in Docker);
//! - deterministic mode (`SOURCE_DATE_EPOCH`, BuildKit's rule): mtimes are
//!   clamped to the epoch; atime/ctime are never written; uname/gname are
//!   always empty; gzip headers carry mtime 0 and no name. Equal trees give
//!   equal digests on any machine;
//! - with [`CreateOptions::id_map`], host ids of a rootless upper dir are
//!   recorded as the container ids they stand for;
//! - with [`CreateOptions::base`] (a copy snapshot: the step ran on a full
//!   copy of its parent tree), only the differences from `base` are written,
//!   as containerd's continuity `fs.Changes` finds them: an entry whose type,
//!   mode, owner, xattrs, mtime (with nanoseconds; the content too when both
//!   have none), size, link target or device number differ, or that is new;
//!   a path of `base` that is gone becomes `.wh.<name>`; an unchanged
//!   directory is written only when something below it is.

use super::compress::{Compressor, HashingWriter, Settings};
use super::tar_write::{self, EntryHeader, Kind};
use super::whiteout;
use super::xattrs;
use super::IdMap;
use super::{Compression, LayerError, LayerInfo};
use crate::oci::store::{ContentStore, Lease};
use crate::oci::Digest;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// What kind of directory is being turned into a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourceKind {
    /// A plain directory (COPY/ADD): every entry as it is.
    #[default]
    Plain,
    /// An overlayfs upper dir: overlay whiteouts and opaque markers become
    /// OCI whiteout entries.
    OverlayUpper,
}

/// How to build a layer.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Blob compression.
    pub compression: Compression,
    /// Compression level (gzip 0–9, default 6; zstd 1–19, default 3).
    pub level: Option<u32>,
    /// Deterministic mode: clamp mtimes to this Unix time
    /// (`SOURCE_DATE_EPOCH`).
    pub source_date_epoch: Option<u64>,
    /// Plain dir or overlay upper dir.
    pub source: SourceKind,
    /// gzip only: uncompressed bytes per gzip member, compressed in
    /// parallel; `None` writes one single-threaded gzip stream. Part of the
    /// output format: keep it fixed for reproducible digests.
    pub gzip_chunk: Option<usize>,
    /// Compression threads for chunked gzip (does not affect the output).
    pub threads: usize,
    /// Adds the blob to this lease before it becomes visible (GC safety).
    pub lease: Option<Lease>,
    /// When archiving a rootless upper dir from outside its user namespace:
    /// record container ids (host ids translated back through this map;
    /// unmapped ones become 65534, as the kernel shows them).
    pub id_map: Option<IdMap>,
    /// Write only the differences from this tree (see the module docs).
    pub base: Option<std::path::PathBuf>,
}

/// The default gzip member size for parallel compression.
pub const DEFAULT_GZIP_CHUNK: usize = 1 << 20;

impl Default for CreateOptions {
    fn default() -> Self {
        Self {
            compression: Compression::Gzip,
            level: None,
            source_date_epoch: None,
            source: SourceKind::Plain,
            gzip_chunk: Some(DEFAULT_GZIP_CHUNK),
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            lease: None,
            id_map: None,
            base: None,
        }
    }
}

impl CreateOptions {
    /// Defaults, with `source_date_epoch` from `$SOURCE_DATE_EPOCH` when it
    /// is a valid non-negative integer.
    pub fn from_env() -> Self {
        Self {
            source_date_epoch: std::env::var("SOURCE_DATE_EPOCH")
                .ok()
                .and_then(|v| v.trim().parse().ok()),
            ..Self::default()
        }
    }

    fn settings(&self) -> Settings {
        Settings {
            kind: self.compression,
            level: self.level,
            gzip_chunk: self.gzip_chunk,
            threads: self.threads,
        }
    }
}

const COPY_BUF: usize = 256 * 1024;
const MAX_DEPTH: usize = 2048;

/// Archives `src` as a layer blob in `store`.
pub fn create(
    store: &ContentStore,
    src: &Path,
    opts: &CreateOptions,
) -> Result<LayerInfo, LayerError> {
    let mut blob = store.writer(None, None)?;
    if let Some(lease) = &opts.lease {
        blob = blob.with_lease(lease);
    }
    let out = BufWriter::with_capacity(COPY_BUF, blob);
    let (out, diff_id, uncompressed_size) = create_to_writer(src, opts, out)?;
    let blob = out
        .into_inner()
        .map_err(|e| LayerError::io("flush layer blob", src, e.into_error()))?;
    let (digest, size) = blob.commit()?;
    Ok(LayerInfo {
        digest,
        diff_id,
        size,
        uncompressed_size,
        media_type: opts.compression.media_type().to_string(),
    })
}

/// Archives `src` into `out` (compressed as `opts` says). Returns the
/// writer, the `diff_id` and the uncompressed size.
pub fn create_to_writer<W: Write>(
    src: &Path,
    opts: &CreateOptions,
    out: W,
) -> Result<(W, Digest, u64), LayerError> {
    let compressor = Compressor::new(out, opts.settings())
        .map_err(|e| LayerError::io("start compressor", src, e))?;
    let mut walker = Walker {
        opts,
        out: HashingWriter::new(compressor),
        links: HashMap::new(),
        buf: vec![0u8; COPY_BUF],
        pending: Vec::new(),
    };
    walker.dir(src, b"", 0, opts.base.as_deref())?;
    tar_write::write_end(&mut walker.out).map_err(|e| LayerError::io("write tar", src, e))?;
    let (compressor, diff_id, size) = walker.out.finish();
    let out = compressor
        .finish()
        .map_err(|e| LayerError::io("finish compression", src, e))?;
    Ok((out, diff_id, size))
}

struct Walker<'a, W: Write> {
    opts: &'a CreateOptions,
    out: HashingWriter<Compressor<W>>,
    /// (dev, ino) of multiply-linked files → first archived path.
    links: HashMap<(u64, u64), Vec<u8>>,
    buf: Vec<u8>,
    /// Diff mode: unchanged parent directories, written before the first
    /// entry below them (and dropped if none comes).
    pending: Vec<EntryHeader>,
}

impl<W: Write> Walker<'_, W> {
    fn dir(
        &mut self,
        abs: &Path,
        rel: &[u8],
        depth: usize,
        base: Option<&Path>,
    ) -> Result<(), LayerError> {
        if depth > MAX_DEPTH {
            return Err(LayerError::BadArchive(format!(
                "source tree deeper than {MAX_DEPTH} levels at {}",
                abs.display()
            )));
        }
        let list = |dir: &Path| -> Result<Vec<OsString>, LayerError> {
            fs::read_dir(dir)
                .map_err(|e| LayerError::io("read directory", dir, e))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(|e| LayerError::io("read directory", dir, e))
        };
        let mut names = list(abs)?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut gone: Vec<OsString> = match base {
            Some(b) => {
                let here: std::collections::HashSet<&OsString> = names.iter().collect();
                list(b)?.into_iter().filter(|n| !here.contains(n)).collect()
            }
            None => Vec::new(),
        };
        gone.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in gone {
            // Deleted since the base: a whiteout, with the base entry's metadata.
            let b = base.map(|b| b.join(&name)).unwrap_or_default();
            let meta = fs::symlink_metadata(&b).map_err(|e| LayerError::io("stat", &b, e))?;
            let mut wh = rel.to_vec();
            wh.extend_from_slice(&whiteout::whiteout_name(name.as_bytes()));
            let h = self.header(wh, Kind::Regular { size: 0 }, &meta, Vec::new());
            self.write_header(&h, &b)?;
        }
        for name in names {
            let path = abs.join(&name);
            let mut child = rel.to_vec();
            child.extend_from_slice(name.as_bytes());
            let below = base
                .map(|b| b.join(&name))
                .filter(|b| b.symlink_metadata().is_ok());
            self.entry(&path, child, name.as_bytes(), rel, depth, below.as_deref())?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        abs: &Path,
        mut rel: Vec<u8>,
        name: &[u8],
        parent_rel: &[u8],
        depth: usize,
        base: Option<&Path>,
    ) -> Result<(), LayerError> {
        let meta = fs::symlink_metadata(abs).map_err(|e| LayerError::io("stat", abs, e))?;
        let ft = meta.file_type();
        let overlay = self.opts.source == SourceKind::OverlayUpper;
        let xattrs = if ft.is_symlink() {
            Vec::new()
        } else {
            read_xattrs(abs)?
        };
        let unchanged = match base {
            Some(b) => same_entry(abs, &meta, &xattrs, b)?,
            None => false,
        };
        if overlay && is_overlay_whiteout(&meta, abs) {
            let mut wh = parent_rel.to_vec();
            wh.extend_from_slice(&whiteout::whiteout_name(name));
            let h = self.header(wh, Kind::Regular { size: 0 }, &meta, Vec::new());
            return self.write_header(&h, abs);
        }
        if ft.is_dir() {
            let opaque = overlay && is_opaque(abs);
            rel.push(b'/');
            let h = self.header(rel.clone(), Kind::Dir, &meta, xattrs);
            // A directory of the base stays a base for what is below it.
            let below = base.filter(|b| b.symlink_metadata().is_ok_and(|m| m.is_dir()));
            if unchanged {
                let mark = self.pending.len();
                self.pending.push(h);
                self.dir(abs, &rel, depth + 1, below)?;
                self.pending.truncate(mark);
                return Ok(());
            }
            self.write_header(&h, abs)?;
            if opaque {
                let mut marker = rel.clone();
                marker.extend_from_slice(whiteout::OPAQUE.as_bytes());
                let mut h = self.header(marker, Kind::Regular { size: 0 }, &meta, Vec::new());
                h.mode = 0o644;
                self.write_header(&h, abs)?;
            }
            return self.dir(abs, &rel, depth + 1, below);
        }
        if unchanged {
            return Ok(());
        }
        if ft.is_file() {
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = self.links.get(&key) {
                    let kind = Kind::Hardlink {
                        target: first.clone(),
                    };
                    let h = self.header(rel, kind, &meta, Vec::new());
                    return self.write_header(&h, abs);
                }
                self.links.insert(key, rel.clone());
            }
            let size = meta.len();
            let h = self.header(rel, Kind::Regular { size }, &meta, xattrs);
            self.write_header(&h, abs)?;
            return self.copy_file(abs, size);
        }
        let kind = if ft.is_symlink() {
            let target = fs::read_link(abs).map_err(|e| LayerError::io("read link", abs, e))?;
            Kind::Symlink {
                target: target.as_os_str().as_bytes().to_vec(),
            }
        } else if ft.is_char_device() || ft.is_block_device() {
            let (major, minor) = dev_numbers(meta.rdev());
            if ft.is_char_device() {
                Kind::Char { major, minor }
            } else {
                Kind::Block { major, minor }
            }
        } else if ft.is_fifo() {
            Kind::Fifo
        } else {
            tracing::debug!(path = %abs.display(), "socket skipped: tar cannot hold it");
            return Ok(());
        };
        let h = self.header(rel, kind, &meta, xattrs);
        self.write_header(&h, abs)
    }

    fn header(
        &self,
        path: Vec<u8>,
        kind: Kind,
        meta: &Metadata,
        xattrs: Vec<(String, Vec<u8>)>,
    ) -> EntryHeader {
        let mut mtime = u64::try_from(meta.mtime()).unwrap_or(0);
        if let Some(epoch) = self.opts.source_date_epoch {
            mtime = mtime.min(epoch);
        }
        let (uid, gid) = match &self.opts.id_map {
            Some(m) => (
                m.uid_to_container(meta.uid()),
                m.gid_to_container(meta.gid()),
            ),
            None => (meta.uid(), meta.gid()),
        };
        EntryHeader {
            path,
            kind,
            mode: meta.mode() & 0o7777,
            uid: u64::from(uid),
            gid: u64::from(gid),
            mtime,
            uname: Vec::new(),
            gname: Vec::new(),
            xattrs,
        }
    }

    fn write_header(&mut self, h: &EntryHeader, abs: &Path) -> Result<(), LayerError> {
        for p in std::mem::take(&mut self.pending) {
            tar_write::write_header(&mut self.out, &p)
                .map_err(|e| LayerError::io("write tar", abs, e))?;
        }
        tar_write::write_header(&mut self.out, h).map_err(|e| LayerError::io("write tar", abs, e))
    }

    fn copy_file(&mut self, abs: &Path, size: u64) -> Result<(), LayerError> {
        let mut file = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(abs)
            .map_err(|e| LayerError::io("open", abs, e))?;
        let mut left = size;
        while left > 0 {
            let want = left.min(self.buf.len() as u64) as usize;
            let n = file
                .read(&mut self.buf[..want])
                .map_err(|e| LayerError::io("read", abs, e))?;
            if n == 0 {
                return Err(LayerError::SourceChanged(abs.to_path_buf()));
            }
            self.out
                .write_all(&self.buf[..n])
                .map_err(|e| LayerError::io("write tar", abs, e))?;
            left -= n as u64;
        }
        tar_write::write_padding(&mut self.out, size)
            .map_err(|e| LayerError::io("write tar", abs, e))
    }
}

fn dev_numbers(rdev: u64) -> (u32, u32) {
    // glibc's gnu_dev_major/minor encoding.
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (major as u32, minor as u32)
}

fn read_xattrs(abs: &Path) -> Result<Vec<(String, Vec<u8>)>, LayerError> {
    let mut names = xattrs::list(abs).map_err(|e| LayerError::io("list xattrs", abs, e))?;
    names.retain(|n| !whiteout::is_overlay_private_xattr(n));
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        match xattrs::get(abs, &name) {
            Ok(v) => out.push((name, v)),
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => return Err(LayerError::io("read xattr", abs, e)),
        }
    }
    Ok(out)
}

/// Diff mode: is `abs` (with `meta` and `xattrs`) the same entry as `base`?
fn same_entry(
    abs: &Path,
    meta: &Metadata,
    xattrs: &[(String, Vec<u8>)],
    base: &Path,
) -> Result<bool, LayerError> {
    let b = fs::symlink_metadata(base).map_err(|e| LayerError::io("stat", base, e))?;
    let (ft, bt) = (meta.file_type(), b.file_type());
    let same_kind = (ft.is_dir() && bt.is_dir())
        || (ft.is_file() && bt.is_file())
        || (ft.is_symlink() && bt.is_symlink())
        || (ft.is_char_device() && bt.is_char_device())
        || (ft.is_block_device() && bt.is_block_device())
        || (ft.is_fifo() && bt.is_fifo());
    if !same_kind
        || meta.mode() != b.mode()
        || meta.uid() != b.uid()
        || meta.gid() != b.gid()
        || meta.rdev() != b.rdev()
    {
        return Ok(false);
    }
    if ft.is_symlink() {
        let t = fs::read_link(abs).map_err(|e| LayerError::io("read link", abs, e))?;
        let bt = fs::read_link(base).map_err(|e| LayerError::io("read link", base, e))?;
        return Ok(t == bt);
    }
    if meta.mtime() != b.mtime()
        || meta.mtime_nsec() != b.mtime_nsec()
        || (ft.is_file() && meta.len() != b.len())
        || read_xattrs(base)? != xattrs
    {
        return Ok(false);
    }
    if ft.is_file() && meta.mtime_nsec() == 0 {
        // No sub-second time to tell edits apart: compare the bytes.
        return same_content(abs, base);
    }
    Ok(true)
}

/// Whether two files of equal size hold the same bytes (read in chunks).
fn same_content(a: &Path, b: &Path) -> Result<bool, LayerError> {
    let open = |p: &Path| File::open(p).map_err(|e| LayerError::io("open", p, e));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = read_full(&mut fa, &mut ba).map_err(|e| LayerError::io("read", a, e))?;
        let m = read_full(&mut fb, &mut bb).map_err(|e| LayerError::io("read", b, e))?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Fills `buf` unless the file ends first; returns the bytes read.
fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn is_overlay_whiteout(meta: &Metadata, abs: &Path) -> bool {
    let ft = meta.file_type();
    if ft.is_char_device() && meta.rdev() == 0 {
        return true;
    }
    ft.is_file()
        && meta.len() == 0
        && whiteout::OVERLAY_WHITEOUT_XATTRS
            .iter()
            .any(|x| xattrs::get(abs, x).is_ok())
}

fn is_opaque(abs: &Path) -> bool {
    whiteout::OVERLAY_OPAQUE_XATTRS
        .iter()
        .any(|x| xattrs::get(abs, x).is_ok_and(|v| v == b"y"))
}

#[cfg(test)]
mod tests {
    use super::dev_numbers;

    #[test]
    fn device_numbers_decode() {
        assert_eq!(dev_numbers(0), (0, 0));
        // makedev(1, 3) = /dev/null
        assert_eq!(dev_numbers(0x103), (1, 3));
        // makedev(259, 65536)
        let dev = nix::sys::stat::makedev(259, 65536);
        assert_eq!(dev_numbers(dev), (259, 65536));
    }
}
