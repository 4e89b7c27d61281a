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
                    w.append_link(&mut h, &name, t)?
                }
                _ => w.append_data(&mut h, &name, &mut e)?,
            }
        }
    }
    w.finish()?;
    Ok(())
}
