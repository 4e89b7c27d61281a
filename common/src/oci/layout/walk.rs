//! Walk the descriptor graph from root descriptors (indexes and manifests)
//! down to configs and layers, the way containerd's `images.Walk` does, with
//! bounds: documents at most 4 MiB, nesting at most [`MAX_DEPTH`], at most
//! [`MAX_BLOBS`] blobs.

use super::{store_err, BlobStore, LayoutError};
use crate::oci::image::document::{descriptor_digest, is_document};
use crate::oci::image::{Descriptor, Document, ImageError, MAX_DOCUMENT_SIZE};
use crate::oci::media_types::{classify, MediaKind};
use crate::oci::Digest;
use std::collections::HashSet;

/// Deepest index-in-index nesting followed.
pub const MAX_DEPTH: usize = 8;
/// Most distinct blobs one walk accepts.
pub const MAX_BLOBS: usize = 100_000;

/// A blob reached by the walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEntry {
    /// Its digest.
    pub digest: Digest,
    /// Its size (checked against the store).
    pub size: u64,
    /// The media type it was referenced with.
    pub media_type: String,
}

/// Walk from `roots`. Before a blob is examined, `fetch` may put it into the
/// store (import) and returns whether it did; a blob still absent after that
/// is an error, except non-distributable (foreign) layers, which are skipped.
/// Every present blob's size must equal its descriptor's. Returns the blobs
/// in first-seen order, each once.
pub fn walk(
    store: &dyn BlobStore,
    roots: &[Descriptor],
    fetch: &mut dyn FnMut(&Descriptor, &Digest) -> Result<bool, LayoutError>,
) -> Result<Vec<BlobEntry>, LayoutError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut stack: Vec<(Descriptor, usize)> = roots.iter().rev().map(|d| (d.clone(), 0)).collect();
    while let Some((desc, depth)) = stack.pop() {
        let digest = descriptor_digest(&desc)?;
        if !seen.insert(digest.clone()) {
            continue;
        }
        if seen.len() > MAX_BLOBS {
            return Err(LayoutError::Invalid(format!("more than {MAX_BLOBS} blobs")));
        }
        let media_type = desc.media_type().to_string();
        if classify(&media_type) == MediaKind::Schema1 {
            return Err(ImageError::Schema1.into());
        }
        let is_doc = is_document(&desc);
        if is_doc && desc.size() > MAX_DOCUMENT_SIZE {
            return Err(LayoutError::TooLarge {
                what: format!("{media_type} {digest}"),
                limit: MAX_DOCUMENT_SIZE,
            });
        }
        if !store.contains_blob(&digest) {
            fetch(&desc, &digest)?;
        }
        if !store.contains_blob(&digest) {
            if matches!(
                classify(&media_type),
                MediaKind::Layer { foreign: true, .. }
            ) {
                continue;
            }
            return Err(LayoutError::MissingBlob {
                digest: digest.to_string(),
                media_type,
                hint: "not in the content store or the layout",
            });
        }
        let size = store
            .blob_size(&digest)
            .map_err(store_err(format!("size of {digest}")))?;
        if size != desc.size() {
            return Err(LayoutError::SizeMismatch {
                digest: digest.to_string(),
                expected: desc.size(),
                actual: size,
            });
        }
        if is_doc {
            if depth >= MAX_DEPTH {
                return Err(LayoutError::Invalid(format!(
                    "indexes nested deeper than {MAX_DEPTH} levels at {digest}"
                )));
            }
            let bytes = store
                .read_blob(&digest, MAX_DOCUMENT_SIZE)
                .map_err(store_err(format!("reading {media_type} {digest}")))?;
            let doc = Document::parse(&bytes, Some(&media_type))?;
            for child in doc.children().into_iter().rev() {
                stack.push((child.clone(), depth + 1));
            }
        }
        out.push(BlobEntry {
            digest,
            size,
            media_type,
        });
    }
    Ok(out)
}
