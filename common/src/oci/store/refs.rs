//! Refs: names (`docker.io/library/alpine:3.20`, `build-cache/abc`, ...)
//! pointing at a descriptor. GC keeps everything a ref reaches.
//!
//! Each ref is one JSON file `refs/<key>.json` holding the name and the
//! descriptor. The key is the name with every byte outside `[A-Za-z0-9_-]`
//! percent-escaped (so no `/`, no `..`, no path traversal), or
//! `h-<sha256(name)>` when that would exceed 200 bytes; names are read back
//! from the file contents, never decoded from the key.

use super::{lock, write_atomic, ContentStore, StoreError};
use crate::oci::Digest;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

/// The fields of an OCI content descriptor (image spec "Content
/// Descriptors") that a ref needs. Serialises with OCI field names
/// (`mediaType`, `digest`, `size`, `annotations`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefDescriptor {
    /// The media type of the target (manifest, index, ...).
    pub media_type: String,
    /// The target blob.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl RefDescriptor {
    /// A descriptor without annotations.
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Self {
        Self {
            media_type: media_type.into(),
            digest,
            size,
            annotations: BTreeMap::new(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct RefFile {
    name: String,
    descriptor: RefDescriptor,
}

const MAX_NAME: usize = 4096;
const MAX_REF_FILE: u64 = 1 << 20;

fn validate(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(StoreError::InvalidRefName(name.chars().take(200).collect()));
    }
    Ok(())
}

/// The file-name key for a ref name (see the module docs).
pub(crate) fn key_of(name: &str) -> String {
    let mut key = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            key.push(b as char);
        } else {
            key.push_str(&format!("%{b:02X}"));
        }
    }
    if key.len() > 200 {
        key = format!("h-{}", hex::encode(Sha256::digest(name.as_bytes())));
    }
    key
}

impl ContentStore {
    fn ref_path(&self, name: &str) -> PathBuf {
        self.root()
            .join("refs")
            .join(format!("{}.json", key_of(name)))
    }

    /// Points `name` at `descriptor` (replacing any previous target).
    pub fn set_ref(&self, name: &str, descriptor: &RefDescriptor) -> Result<(), StoreError> {
        validate(name)?;
        let body = serde_json::to_vec_pretty(&RefFile {
            name: name.to_string(),
            descriptor: descriptor.clone(),
        })
        .map_err(|e| StoreError::Corrupt {
            path: self.ref_path(name),
            reason: e.to_string(),
        })?;
        let _guard = lock::shared(self.root())?;
        write_atomic(&self.ref_path(name), &body)
    }

    /// The descriptor `name` points at, if any.
    pub fn get_ref(&self, name: &str) -> Result<Option<RefDescriptor>, StoreError> {
        validate(name)?;
        let path = self.ref_path(name);
        match read_ref_file(&path)? {
            Some(f) if f.name == name => Ok(Some(f.descriptor)),
            Some(_) => Ok(None),
            None => Ok(None),
        }
    }

    /// Removes `name`. Returns whether it existed.
    pub fn delete_ref(&self, name: &str) -> Result<bool, StoreError> {
        validate(name)?;
        let path = self.ref_path(name);
        let _guard = lock::shared(self.root())?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io("remove ref", &path, e)),
        }
    }

    /// All refs, sorted by name.
    pub fn list_refs(&self) -> Result<Vec<(String, RefDescriptor)>, StoreError> {
        let dir = self.root().join("refs");
        let entries = fs::read_dir(&dir).map_err(|e| StoreError::io("list refs", &dir, e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io("list refs", &dir, e))?;
            let path = entry.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            if let Some(f) = read_ref_file(&path)? {
                out.push((f.name, f.descriptor));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

fn read_ref_file(path: &std::path::Path) -> Result<Option<RefFile>, StoreError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io("read ref", path, e)),
    };
    if !meta.is_file() || meta.len() > MAX_REF_FILE {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: "not a regular file of at most 1 MiB".into(),
        });
    }
    let bytes = fs::read(path).map_err(|e| StoreError::io("read ref", path, e))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::key_of;

    #[test]
    fn keys_never_contain_separators_or_dots() {
        for name in ["../../etc/passwd", "/abs", ".", "..", "a/b:c@sha256:x"] {
            let k = key_of(name);
            assert!(!k.contains('/') && !k.contains('.'), "{name} -> {k}");
        }
        assert_ne!(key_of("a/b"), key_of("a%2Fb"));
        assert!(key_of(&"x/".repeat(300)).starts_with("h-"));
    }
}
