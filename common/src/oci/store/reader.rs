//! Lazily verifying blob reader.

use super::StoreError;
use crate::oci::Digest;
use sha2::{Digest as _, Sha256};
use std::fs::File;
use std::io::{self, Read};

/// Reads a blob and checks its digest at end of file. A mismatch surfaces as
/// an `io::Error` of kind `InvalidData` wrapping
/// [`StoreError::DigestMismatch`], never as a clean EOF.
#[derive(Debug)]
pub struct BlobReader {
    file: File,
    hasher: Option<Sha256>,
    expected: Digest,
    mismatch: Option<Digest>,
}

impl BlobReader {
    pub(super) fn new(file: File, expected: Digest) -> Self {
        Self {
            file,
            hasher: Some(Sha256::new()),
            expected,
            mismatch: None,
        }
    }

    /// The digest this reader checks against.
    pub fn digest(&self) -> &Digest {
        &self.expected
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(actual) = &self.mismatch {
            return Err(self.mismatch_error(actual.clone()));
        }
        let n = self.file.read(buf)?;
        if n > 0 {
            if let Some(h) = self.hasher.as_mut() {
                h.update(&buf[..n]);
            }
            return Ok(n);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(h) = self.hasher.take() {
            let actual = Digest::from_sha256(h);
            if actual != self.expected {
                self.mismatch = Some(actual.clone());
                return Err(self.mismatch_error(actual));
            }
        }
        Ok(0)
    }
}

impl BlobReader {
    fn mismatch_error(&self, actual: Digest) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            StoreError::DigestMismatch {
                expected: self.expected.clone(),
                actual,
            },
        )
    }
}
