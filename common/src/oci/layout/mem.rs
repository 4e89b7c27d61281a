//! An in-memory [`BlobStore`] for unit tests of the layout logic.

use super::{BlobStore, StoreError};
use crate::oci::Digest;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Read;

#[derive(Default)]
pub(crate) struct MemBlobs(pub RefCell<BTreeMap<Digest, Vec<u8>>>);

impl MemBlobs {
    pub fn put(&self, bytes: &[u8]) -> Digest {
        let d = Digest::sha256_of(bytes);
        self.0.borrow_mut().insert(d.clone(), bytes.to_vec());
        d
    }
}

impl BlobStore for MemBlobs {
    fn contains_blob(&self, digest: &Digest) -> bool {
        self.0.borrow().contains_key(digest)
    }
    fn blob_size(&self, digest: &Digest) -> Result<u64, StoreError> {
        Ok(self.0.borrow().get(digest).ok_or("missing")?.len() as u64)
    }
    fn read_blob(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, StoreError> {
        let b = self.0.borrow().get(digest).cloned().ok_or("missing")?;
        if b.len() as u64 > max {
            return Err("too large".into());
        }
        Ok(b)
    }
    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + '_>, StoreError> {
        Ok(Box::new(std::io::Cursor::new(
            self.read_blob(digest, u64::MAX)?,
        )))
    }
    fn put_blob(
        &self,
        expected: &Digest,
        size_limit: u64,
        data: &mut dyn Read,
    ) -> Result<u64, StoreError> {
        let mut buf = Vec::new();
        data.take(size_limit.saturating_add(1))
            .read_to_end(&mut buf)?;
        if buf.len() as u64 > size_limit {
            return Err(format!("blob over {size_limit} bytes").into());
        }
        let got = Digest::sha256_of(&buf);
        if &got != expected {
            return Err(format!("digest mismatch: want {expected}, got {got}").into());
        }
        let n = buf.len() as u64;
        self.0.borrow_mut().insert(got, buf);
        Ok(n)
    }
}
