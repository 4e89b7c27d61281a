//! OCI layout as a tar stream (`skopeo`'s `oci-archive:FILE:TAG`,
//! BuildKit's `--output type=oci,dest=x.tar`).
//!
//! Export is deterministic: `oci-layout`, `index.json`, `blobs/`,
//! `blobs/<alg>/`, then blobs sorted by digest; ustar headers with uid/gid 0,
//! no user/group names, modes 0644/0755 and one fixed mtime.

use super::dir::ImportLimits;
use super::tar_read::{for_each_member, MemberKind};
use super::{
    check_oci_layout, index_json, io_err, parse_index_json, store_err, walk, BlobStore,
    LayoutError, LayoutRef, OCI_LAYOUT_CONTENT,
};
use crate::oci::image::{Descriptor, MAX_DOCUMENT_SIZE};
use crate::oci::Digest;
use std::collections::BTreeSet;
use std::io::{self, Read, Write};

struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Tar export options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TarOptions {
    /// mtime of every member, seconds since the epoch (`SOURCE_DATE_EPOCH`, default 0).
    pub mtime: u64,
}

/// A deterministic tar writer over any `Write`.
pub(crate) struct DeterministicTar<W: Write> {
    builder: tar::Builder<W>,
    mtime: u64,
}

impl<W: Write> DeterministicTar<W> {
    pub(crate) fn new(out: W, mtime: u64) -> Self {
        let mut builder = tar::Builder::new(out);
        builder.mode(tar::HeaderMode::Deterministic);
        Self { builder, mtime }
    }

    fn header(&self, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(self.mtime);
        h.set_size(size);
        h
    }

    pub(crate) fn dir(&mut self, path: &str) -> Result<(), LayoutError> {
        let mut h = self.header(tar::EntryType::Directory, 0o755, 0);
        self.builder
            .append_data(&mut h, format!("{path}/"), io::empty())
            .map_err(io_err(format!("writing tar member {path}/")))
    }

    pub(crate) fn file(
        &mut self,
        path: &str,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<(), LayoutError> {
        let mut h = self.header(tar::EntryType::Regular, 0o644, size);
        // The tar crate pads silently when the source is short, so count.
        let mut limited = Counting {
            inner: data.take(size),
            count: 0,
        };
        self.builder
            .append_data(&mut h, path, &mut limited)
            .map_err(io_err(format!("writing tar member {path}")))?;
        if limited.count != size {
            return Err(LayoutError::SizeMismatch {
                digest: path.to_string(),
                expected: size,
                actual: limited.count,
            });
        }
        let mut probe = [0u8; 1];
        if data
            .read(&mut probe)
            .map_err(io_err(format!("reading {path}")))?
            != 0
        {
            return Err(LayoutError::Invalid(format!(
                "{path} is longer than its descriptor says"
            )));
        }
        Ok(())
    }

    pub(crate) fn bytes(&mut self, path: &str, bytes: &[u8]) -> Result<(), LayoutError> {
        self.file(path, bytes.len() as u64, &mut &bytes[..])
    }

    pub(crate) fn finish(self) -> Result<W, LayoutError> {
        self.builder.into_inner().map_err(io_err("finishing tar"))
    }
}

/// Export `refs` and everything they reference as an OCI layout tar to
/// `out`, returning it. Blob content is digest-verified while streamed (the
/// store's reader fails at EOF on a mismatch); no blob is held in memory.
pub fn export_tar<W: Write>(
    store: &dyn BlobStore,
    refs: &[LayoutRef],
    out: W,
    opts: TarOptions,
) -> Result<W, LayoutError> {
    let index = index_json(refs)?;
    let roots: Vec<Descriptor> = refs.iter().map(|r| r.descriptor.clone()).collect();
    let mut blobs = walk(store, &roots, &mut |_, _| Ok(false))?;
    blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
    let mut tar = DeterministicTar::new(out, opts.mtime);
    tar.bytes("oci-layout", OCI_LAYOUT_CONTENT)?;
    tar.bytes("index.json", &index)?;
    tar.dir("blobs")?;
    let algs: BTreeSet<&str> = blobs.iter().map(|b| b.digest.algorithm()).collect();
    for alg in algs {
        tar.dir(&format!("blobs/{alg}"))?;
    }
    for b in &blobs {
        let mut r = store
            .open_blob(&b.digest)
            .map_err(store_err(format!("opening {}", b.digest)))?;
        tar.file(&super::blob_rel_path(&b.digest), b.size, &mut r)?;
    }
    tar.finish()
}

/// Import an OCI layout tar into `store`. Every `blobs/<alg>/<hex>` member
/// is streamed into the store, which verifies its digest (a mismatch aborts
/// and stores nothing for that blob); members with unsafe paths abort;
/// links where content belongs abort; unknown members are skipped. Then
/// `index.json` must reference only blobs now present, with matching sizes.
pub fn import_tar<R: Read>(
    store: &dyn BlobStore,
    reader: R,
    limits: ImportLimits,
) -> Result<Vec<LayoutRef>, LayoutError> {
    let mut layout: Option<Vec<u8>> = None;
    let mut index: Option<Vec<u8>> = None;
    let mut total = 0u64;
    for_each_member(reader, |m, data| {
        let small = |max: u64, data: &mut dyn Read| -> Result<Vec<u8>, LayoutError> {
            if m.size > max {
                return Err(LayoutError::TooLarge {
                    what: m.path.clone(),
                    limit: max,
                });
            }
            let mut buf = Vec::new();
            data.take(max)
                .read_to_end(&mut buf)
                .map_err(io_err(format!("reading {}", m.path)))?;
            Ok(buf)
        };
        let wanted =
            m.path == "oci-layout" || m.path == "index.json" || m.path.starts_with("blobs/");
        if wanted && m.kind == MemberKind::Other {
            return Err(LayoutError::UnsafePath {
                path: m.path.clone(),
                reason: "links and special files are not allowed in an OCI layout",
            });
        }
        if m.kind != MemberKind::File {
            return Ok(());
        }
        match m.path.as_str() {
            "oci-layout" | "index.json" => {
                let slot = if m.path == "oci-layout" {
                    &mut layout
                } else {
                    &mut index
                };
                if slot.is_some() {
                    return Err(LayoutError::Invalid(format!(
                        "{} appears twice in the tar",
                        m.path
                    )));
                }
                *slot = Some(small(MAX_DOCUMENT_SIZE, data)?);
            }
            p => {
                let Some(digest) = blob_digest_from_path(p) else {
                    tracing::debug!(path = p, "ignoring unknown member of OCI layout tar");
                    return Ok(());
                };
                if m.size > limits.max_blob_size {
                    return Err(LayoutError::TooLarge {
                        what: format!("blob {digest}"),
                        limit: limits.max_blob_size,
                    });
                }
                total = total.saturating_add(m.size);
                if total > limits.max_total_size {
                    return Err(LayoutError::TooLarge {
                        what: "the archive's blobs together".into(),
                        limit: limits.max_total_size,
                    });
                }
                if !store.contains_blob(&digest) {
                    store
                        .put_blob(&digest, m.size, data)
                        .map_err(store_err(format!("importing {p}")))?;
                }
            }
        }
        Ok(())
    })?;
    let layout = layout.ok_or_else(|| {
        LayoutError::Invalid("the tar has no oci-layout file; is it an OCI archive?".into())
    })?;
    check_oci_layout(&layout)?;
    let index = index.ok_or_else(|| LayoutError::Invalid("the tar has no index.json".into()))?;
    let refs = parse_index_json(&index)?;
    let roots: Vec<Descriptor> = refs.iter().map(|r| r.descriptor.clone()).collect();
    walk(store, &roots, &mut |_, _| Ok(false))?;
    Ok(refs)
}

/// `blobs/sha256/<hex>` → digest; anything else → None.
pub(crate) fn blob_digest_from_path(path: &str) -> Option<Digest> {
    let rest = path.strip_prefix("blobs/")?;
    let (alg, hex) = rest.split_once('/')?;
    format!("{alg}:{hex}").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::layout::mem::MemBlobs;
    use crate::oci::layout::tests_support::sample_image;

    fn export(src: &MemBlobs, refs: &[LayoutRef]) -> Vec<u8> {
        export_tar(src, refs, Vec::new(), TarOptions::default()).unwrap()
    }

    #[test]
    fn tar_round_trip_is_deterministic() {
        let src = MemBlobs::default();
        let refs = sample_image(&src);
        let a = export(&src, &refs);
        let b = export(&src, &refs);
        assert_eq!(a, b);
        let mut names = Vec::new();
        for_each_member(&a[..], |m, _| {
            names.push(m.path.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(
            &names[..4],
            ["oci-layout", "index.json", "blobs", "blobs/sha256"]
        );
        let mut sorted = names[4..].to_vec();
        sorted.sort();
        assert_eq!(sorted, names[4..]);

        let dst = MemBlobs::default();
        let got = import_tar(&dst, &a[..], ImportLimits::default()).unwrap();
        assert_eq!(
            got,
            import_tar(&MemBlobs::default(), &a[..], ImportLimits::default()).unwrap()
        );
        assert_eq!(*dst.0.borrow(), *src.0.borrow());
        assert_eq!(export(&dst, &got), a, "re-export is byte-identical");
    }

    fn tar_with(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut t = DeterministicTar::new(Vec::new(), 0);
        for (p, b) in members {
            t.bytes(p, b).unwrap();
        }
        t.finish().unwrap()
    }

    #[test]
    fn tar_import_refusals() {
        let src = MemBlobs::default();
        let refs = sample_image(&src);
        let index = index_json(&refs).unwrap();

        // Wrong content under a digest name.
        let fake = format!("blobs/sha256/{}", Digest::sha256_of(b"real").hex());
        let t = tar_with(&[("oci-layout", OCI_LAYOUT_CONTENT), (&fake, b"fake")]);
        let dst = MemBlobs::default();
        let e = import_tar(&dst, &t[..], ImportLimits::default()).unwrap_err();
        assert!(e.to_string().contains("digest mismatch"), "{e}");
        assert!(dst.0.borrow().is_empty());

        // Missing blobs and missing files.
        let t = tar_with(&[("oci-layout", OCI_LAYOUT_CONTENT), ("index.json", &index)]);
        assert!(matches!(
            import_tar(&MemBlobs::default(), &t[..], ImportLimits::default()),
            Err(LayoutError::MissingBlob { .. })
        ));
        let t = tar_with(&[("index.json", &index)]);
        let e = import_tar(&MemBlobs::default(), &t[..], ImportLimits::default()).unwrap_err();
        assert!(e.to_string().contains("no oci-layout"), "{e}");

        // Oversized blob against the limit.
        let t = tar_with(&[(&fake, b"real")]);
        let e = import_tar(
            &MemBlobs::default(),
            &t[..],
            ImportLimits {
                max_blob_size: 3,
                max_total_size: 10,
            },
        )
        .unwrap_err();
        assert!(matches!(e, LayoutError::TooLarge { .. }), "{e}");

        // Unknown files are ignored.
        let mut members: Vec<(String, Vec<u8>)> = vec![
            ("oci-layout".into(), OCI_LAYOUT_CONTENT.to_vec()),
            ("index.json".into(), index.clone()),
            ("README".into(), b"hi".to_vec()),
            ("blobs/sha256/not-a-digest".into(), b"x".to_vec()),
        ];
        for (d, b) in src.0.borrow().iter() {
            members.push((format!("blobs/sha256/{}", d.hex()), b.clone()));
        }
        let m: Vec<(&str, &[u8])> = members
            .iter()
            .map(|(p, b)| (p.as_str(), b.as_slice()))
            .collect();
        assert_eq!(
            import_tar(
                &MemBlobs::default(),
                &tar_with(&m)[..],
                ImportLimits::default()
            )
            .unwrap()
            .len(),
            3
        );
    }

    #[test]
    fn tar_import_refuses_traversal_and_links() {
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_cksum();
        let mut raw = h.as_bytes().to_vec();
        raw[..12].copy_from_slice(b"../evil.json");
        let mut hh = tar::Header::from_byte_slice(&raw).clone();
        hh.set_cksum();
        let mut t = hh.as_bytes().to_vec();
        t.extend_from_slice(&[b'x'; 512]);
        t.extend_from_slice(&[0; 1024]);
        let e = import_tar(&MemBlobs::default(), &t[..], ImportLimits::default()).unwrap_err();
        assert!(matches!(e, LayoutError::UnsafePath { .. }), "{e}");

        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "index.json", "/etc/passwd").unwrap();
        let t = b.into_inner().unwrap();
        let e = import_tar(&MemBlobs::default(), &t[..], ImportLimits::default()).unwrap_err();
        assert!(e.to_string().contains("links"), "{e}");
    }
}
