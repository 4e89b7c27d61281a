//! Reading a layer chain back out of the content store: a layer blob
//! decompressed (gzip, zstd or plain tar, told apart by magic bytes as the
//! image spec's "Image Layer Filesystem Changeset" allows), and a chain's
//! merged filesystem written as one plain tar.

use super::LayerRef;
use crate::oci::store::{ContentStore, StoreError};
use crate::oci::Digest;
use std::io::{self, Read, Write};

/// A layer blob that could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenLayerError {
    /// The store does not hold the blob, or refused to open it.
    #[error("layer {digest}: {source}")]
    Store {
        /// The blob.
        digest: Digest,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// The first bytes of the blob could not be read.
    #[error("layer {digest}: {source}")]
    Read {
        /// The blob.
        digest: Digest,
        /// The read error.
        #[source]
        source: io::Error,
    },
}

/// Why a chain could not be written as one tar.
#[derive(Debug, thiserror::Error)]
pub enum FlatTarError {
    /// A layer of the chain could not be opened.
    #[error(transparent)]
    Open(#[from] OpenLayerError),
    /// Reading a layer or writing the tar failed.
    #[error("writing tar: {0}")]
    Io(#[from] io::Error),
}

/// A decompressing reader over the blob of layer `l`.
pub fn open_layer(store: &ContentStore, l: &LayerRef) -> Result<Box<dyn Read>, OpenLayerError> {
    let blob = store
        .open_blob(&l.digest)
        .map_err(|source| OpenLayerError::Store {
            digest: l.digest.clone(),
            source,
        })?;
    super::decompress::sniffed(blob).map_err(|source| OpenLayerError::Read {
        digest: l.digest.clone(),
        source,
    })
}

/// Write the merged filesystem of `chain` (bottom first) as one plain tar to
/// `out`: every path once, as the topmost layer has it. `visible_in(path)`
/// names the index in `chain` of the layer whose entry for the clean
/// relative `path` is the one the merged filesystem shows, or `None` when a
/// whiteout deleted it (image spec "Whiteouts"); the caller computes it from
/// its view of the chain. Whiteout entries are never written.
pub fn write_flat_tar(
    store: &ContentStore,
    chain: &[LayerRef],
    visible_in: impl Fn(&str) -> Option<usize>,
    out: impl Write,
) -> Result<(), FlatTarError> {
    let mut w = tar::Builder::new(out);
    for (i, l) in chain.iter().enumerate() {
        let mut ar = tar::Archive::new(open_layer(store, l)?);
        for e in ar.entries()? {
            let mut e = e?;
            let path = crate::path::strip_empty_and_dot(&String::from_utf8_lossy(&e.path_bytes()));
            if visible_in(&path) != Some(i) {
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
                    append_link_verbatim(&mut w, &mut h, &name, &t)?
                }
                _ => w.append_data(&mut h, &name, &mut e)?,
            }
        }
    }
    w.finish()?;
    Ok(())
}

/// Appends a symlink or hard link entry whose target is written verbatim,
/// as Docker and BuildKit keep it: `tar::Builder::append_link` rebuilds the
/// target from path components (`/` becomes `//`, `a//b` becomes `a/b`).
/// Only a target too long for the header goes through it, as a GNU long-link
/// entry, which it writes byte for byte.
pub fn append_link_verbatim<W: io::Write>(
    w: &mut tar::Builder<W>,
    header: &mut tar::Header,
    path: &str,
    target: &str,
) -> io::Result<()> {
    if target.len() <= header.as_old().linkname.len() {
        header.set_link_name_literal(target)?;
        w.append_data(header, path, io::empty())
    } else {
        w.append_link(header, path, target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Link targets pass through `write_flat_tar` byte for byte (a link to
    /// `/` used to come out as `//`).
    #[test]
    fn link_targets_are_copied_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let targets = ["/", "a//b", "./x/", ".."];
        let mut b = tar::Builder::new(Vec::new());
        for (i, t) in targets.iter().enumerate() {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            h.set_link_name_literal(t).unwrap();
            b.append_data(&mut h, format!("l{i}"), io::empty()).unwrap();
        }
        let layer = b.into_inner().unwrap();
        let digest = store.put_bytes(&layer).unwrap();
        let l = LayerRef {
            digest: digest.clone(),
            diff_id: digest,
            size: layer.len() as u64,
            media_type: super::super::MEDIA_TYPE_TAR.into(),
        };
        let mut out = Vec::new();
        write_flat_tar(&store, &[l], |_| Some(0), &mut out).unwrap();
        let got: Vec<String> = tar::Archive::new(&out[..])
            .entries()
            .unwrap()
            .map(|e| String::from_utf8(e.unwrap().link_name_bytes().unwrap().into_owned()).unwrap())
            .collect();
        assert_eq!(got, targets);
    }
}
