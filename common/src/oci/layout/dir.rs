//! OCI layout as a directory (`skopeo`'s `oci:DIR:TAG`, BuildKit's
//! `--output type=oci-dir`).

use super::{
    blob_rel_path, check_oci_layout, index_json, io_err, parse_index_json, store_err, walk,
    BlobStore, LayoutError, LayoutRef, OCI_LAYOUT_CONTENT,
};
use crate::oci::image::{Descriptor, MAX_DOCUMENT_SIZE};
use crate::oci::Digest;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

/// Export `refs` and everything they reference from `store` into a new
/// layout at `dir`, which must not exist or be empty. Blobs are written
/// first and `index.json` last, so an interrupted export is visibly
/// incomplete. Every blob is digest-verified while it is copied.
pub fn export_dir(
    store: &dyn BlobStore,
    refs: &[LayoutRef],
    dir: &Path,
) -> Result<(), LayoutError> {
    prepare_empty_dir(dir)?;
    let index = index_json(refs)?;
    let roots: Vec<Descriptor> = refs.iter().map(|r| r.descriptor.clone()).collect();
    let blobs = walk(store, &roots, &mut |_, _| Ok(false))?;
    for b in &blobs {
        let alg_dir = dir.join("blobs").join(b.digest.algorithm());
        fs::create_dir_all(&alg_dir).map_err(io_err(format!("creating {}", alg_dir.display())))?;
        let target = dir.join(blob_rel_path(&b.digest));
        let result = copy_blob_to_file(store, &b.digest, &target);
        if result.is_err() {
            let _ = fs::remove_file(&target);
        }
        result?;
    }
    write_new(&dir.join("oci-layout"), OCI_LAYOUT_CONTENT)?;
    write_new(&dir.join("index.json"), &index)?;
    Ok(())
}

fn prepare_empty_dir(dir: &Path) -> Result<(), LayoutError> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {
            let mut entries =
                fs::read_dir(dir).map_err(io_err(format!("reading {}", dir.display())))?;
            if entries.next().is_some() {
                return Err(LayoutError::TargetNotEmpty(dir.to_path_buf()));
            }
            Ok(())
        }
        Ok(_) => Err(LayoutError::TargetNotEmpty(dir.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))
        }
        Err(e) => Err(io_err(format!("checking {}", dir.display()))(e)),
    }
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<(), LayoutError> {
    let ctx = || format!("writing {}", path.display());
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err(ctx()))?;
    f.write_all(bytes).map_err(io_err(ctx()))?;
    f.sync_all().map_err(io_err(ctx()))
}

fn copy_blob_to_file(store: &dyn BlobStore, d: &Digest, target: &Path) -> Result<(), LayoutError> {
    let ctx = || format!("writing {}", target.display());
    let mut src = store
        .open_blob(d)
        .map_err(store_err(format!("opening {d}")))?;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
        .map_err(io_err(ctx()))?;
    io::copy(&mut src, &mut f)
        .map_err(io_err(format!("copying blob {d} (the store verifies it)")))?;
    f.sync_all().map_err(io_err(ctx()))
}

/// Limits for imports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportLimits {
    /// Largest single blob accepted.
    pub max_blob_size: u64,
    /// Most bytes of blobs one import may add.
    pub max_total_size: u64,
}

impl Default for ImportLimits {
    fn default() -> Self {
        Self {
            max_blob_size: 32 << 30,
            max_total_size: 256 << 30,
        }
    }
}

/// Read a small file (a regular file, not a symlink) of at most `max` bytes.
pub(crate) fn read_small_file(path: &Path, max: u64) -> Result<Vec<u8>, LayoutError> {
    let file = open_regular(path)?;
    let mut buf = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(io_err(format!("reading {}", path.display())))?;
    if buf.len() as u64 > max {
        return Err(LayoutError::TooLarge {
            what: path.display().to_string(),
            limit: max,
        });
    }
    Ok(buf)
}

fn open_regular(path: &Path) -> Result<File, LayoutError> {
    let meta = fs::symlink_metadata(path).map_err(io_err(format!("reading {}", path.display())))?;
    if !meta.is_file() {
        return Err(LayoutError::Invalid(format!(
            "{} is not a regular file (symlinks and devices are refused)",
            path.display()
        )));
    }
    File::open(path).map_err(io_err(format!("opening {}", path.display())))
}

/// Import the layout at `dir` into `store`: checks `oci-layout`, reads
/// `index.json`, and copies every blob reachable from it that the store
/// lacks, verifying digest and size. Blobs not reachable from `index.json`
/// and unknown files are ignored. Returns `index.json`'s entries.
pub fn import_dir(
    store: &dyn BlobStore,
    dir: &Path,
    limits: ImportLimits,
) -> Result<Vec<LayoutRef>, LayoutError> {
    check_oci_layout(&read_small_file(&dir.join("oci-layout"), 4096)?)?;
    let refs = parse_index_json(&read_small_file(
        &dir.join("index.json"),
        MAX_DOCUMENT_SIZE,
    )?)?;
    let roots: Vec<Descriptor> = refs.iter().map(|r| r.descriptor.clone()).collect();
    let mut total = 0u64;
    walk(store, &roots, &mut |desc, digest| {
        let path = dir.join(blob_rel_path(digest));
        if fs::symlink_metadata(&path).is_err() {
            return Ok(false);
        }
        let file = open_regular(&path)?;
        let size = file
            .metadata()
            .map_err(io_err(format!("reading {}", path.display())))?
            .len();
        if size != desc.size() {
            return Err(LayoutError::SizeMismatch {
                digest: digest.to_string(),
                expected: desc.size(),
                actual: size,
            });
        }
        if size > limits.max_blob_size {
            return Err(LayoutError::TooLarge {
                what: format!("blob {digest}"),
                limit: limits.max_blob_size,
            });
        }
        total = total.saturating_add(size);
        if total > limits.max_total_size {
            return Err(LayoutError::TooLarge {
                what: "the layout's blobs together".into(),
                limit: limits.max_total_size,
            });
        }
        let mut reader = file;
        store
            .put_blob(digest, desc.size(), &mut reader)
            .map_err(store_err(format!("importing {}", path.display())))?;
        Ok(true)
    })?;
    Ok(refs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::layout::mem::MemBlobs;
    use crate::oci::layout::tests_support::sample_image;

    #[test]
    fn dir_round_trip_and_refusals() {
        let src = MemBlobs::default();
        let refs = sample_image(&src);
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("layout");
        export_dir(&src, &refs, &out).unwrap();
        assert!(matches!(
            export_dir(&src, &refs, &out),
            Err(LayoutError::TargetNotEmpty(_))
        ));

        let dst = MemBlobs::default();
        let got = import_dir(&dst, &out, ImportLimits::default()).unwrap();
        assert_eq!(got.len(), refs.len());
        assert_eq!(got[0].name.as_deref(), Some("latest"));
        assert_eq!(*dst.0.borrow(), *src.0.borrow());

        // A tampered blob is refused, and nothing from it lands in the store.
        let layer = src
            .0
            .borrow()
            .keys()
            .find(|d| src.0.borrow()[*d].starts_with(b"\x1f\x8b"))
            .cloned()
            .unwrap();
        let p = out.join(blob_rel_path(&layer));
        let mut bytes = fs::read(&p).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&p, &bytes).unwrap();
        let dst = MemBlobs::default();
        let e = import_dir(&dst, &out, ImportLimits::default()).unwrap_err();
        assert!(e.to_string().contains("digest mismatch"), "{e}");
        assert!(!dst.contains_blob(&layer));

        // A missing blob names itself.
        fs::remove_file(&p).unwrap();
        let e = import_dir(&MemBlobs::default(), &out, ImportLimits::default()).unwrap_err();
        assert!(e.to_string().contains(&layer.to_string()), "{e}");

        // A symlinked blob is refused.
        std::os::unix::fs::symlink("/etc/hostname", &p).unwrap();
        let e = import_dir(&MemBlobs::default(), &out, ImportLimits::default()).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn export_refuses_missing_blobs_and_bad_tags() {
        let src = MemBlobs::default();
        let mut refs = sample_image(&src);
        let tmp = tempfile::tempdir().unwrap();
        refs[0].name = Some("bad tag".into());
        assert!(matches!(
            export_dir(&src, &refs, &tmp.path().join("a")),
            Err(LayoutError::BadRefName(_))
        ));
        refs[0].name = Some("ok".into());
        let cfg = src
            .0
            .borrow()
            .keys()
            .find(|d| src.0.borrow()[*d].starts_with(b"{\"architecture\""))
            .cloned()
            .unwrap();
        src.0.borrow_mut().remove(&cfg);
        let e = export_dir(&src, &refs, &tmp.path().join("b")).unwrap_err();
        assert!(matches!(e, LayoutError::MissingBlob { .. }), "{e}");
    }
}
