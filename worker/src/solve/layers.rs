//! Writing new layer tars straight into the content store, hashing the
//! `diff_id` on the way (reading them back is
//! [`imgfarm_common::oci::layer::open_layer`]).

use super::result::LayerRef;
use super::SolveError;
use flate2::write::GzEncoder;
use imgfarm_common::oci::layer::MEDIA_TYPE_TAR_GZIP;
use imgfarm_common::oci::store::{BlobWriter, ContentStore};
use imgfarm_common::oci::Digest;
use sha2::{Digest as _, Sha256};
use std::io::{self, Read, Write};

/// Hashes what passes through.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A gzip layer being written: a tar builder whose bytes are hashed
/// (diff_id) and compressed into a store blob.
pub struct LayerWriter {
    tar: tar::Builder<Hashing<GzEncoder<io::BufWriter<BlobWriter>>>>,
}

impl LayerWriter {
    /// A new layer blob in `store`.
    pub fn new(store: &ContentStore) -> Result<Self, SolveError> {
        let blob = store
            .writer(None, None)
            .map_err(|e| SolveError::Store(e.to_string()))?;
        let gz = GzEncoder::new(
            io::BufWriter::with_capacity(256 * 1024, blob),
            flate2::Compression::new(6),
        );
        let mut tar = tar::Builder::new(Hashing {
            inner: gz,
            hash: Sha256::new(),
            size: 0,
        });
        tar.mode(tar::HeaderMode::Complete);
        Ok(Self { tar })
    }

    /// Append an entry (header path/size/cksum set here).
    pub fn append(
        &mut self,
        header: &mut tar::Header,
        path: &str,
        data: impl Read,
    ) -> Result<(), SolveError> {
        self.tar
            .append_data(header, path, data)
            .map_err(|e| SolveError::Layer(format!("writing {path}: {e}")))
    }

    /// Append a symlink or hardlink entry, its target verbatim
    /// ([`imgfarm_common::oci::layer::append_link_verbatim`]).
    pub fn append_link(
        &mut self,
        header: &mut tar::Header,
        path: &str,
        target: &str,
    ) -> Result<(), SolveError> {
        imgfarm_common::oci::layer::append_link_verbatim(&mut self.tar, header, path, target)
            .map_err(|e| SolveError::Layer(format!("writing {path}: {e}")))
    }

    /// Finish the tar, commit the blob.
    pub fn finish(self) -> Result<LayerRef, SolveError> {
        let err = |e: io::Error| SolveError::Layer(format!("finishing layer: {e}"));
        let hashing = self.tar.into_inner().map_err(err)?;
        let diff_id = Digest::from_sha256(hashing.hash);
        let buf = hashing.inner.finish().map_err(err)?;
        let blob = buf.into_inner().map_err(|e| err(e.into_error()))?;
        let (digest, size) = blob
            .commit()
            .map_err(|e| SolveError::Store(e.to_string()))?;
        Ok(LayerRef {
            digest,
            diff_id,
            size,
            media_type: MEDIA_TYPE_TAR_GZIP.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A context symlink to `/` stayed `/` in Docker but became `//` here
    /// (issue 15, hostile context): link targets are kept verbatim.
    #[test]
    fn link_targets_are_written_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let long = format!("/{}", "x/".repeat(80));
        let targets = ["/", "a//b", "./x/", "..", long.as_str()];
        let mut w = LayerWriter::new(&store).unwrap();
        for (i, t) in targets.iter().enumerate() {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            w.append_link(&mut h, &format!("l{i}"), t).unwrap();
        }
        let layer = w.finish().unwrap();
        let blob = store.read_bytes(&layer.digest, 1 << 20).unwrap();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
        let got: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                String::from_utf8(e.link_name_bytes().unwrap().into_owned()).unwrap()
            })
            .collect();
        assert_eq!(got, targets);
    }
}
