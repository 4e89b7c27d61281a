//! Garbage collection: mark from refs and unexpired leases, follow child
//! links, sweep every other blob.
//!
//! Children of a blob are found two ways, both followed:
//! 1. explicit links registered with [`ContentStore::set_children`]
//!    (`children/<hex>.json`), for relations the store cannot see;
//! 2. the store itself parses blobs that are OCI/Docker manifests or indexes
//!    (JSON of at most 4 MiB with `schemaVersion`): `config`, `layers[]`,
//!    `manifests[]`, `blobs[]` and `subject` descriptors are children
//!    (image spec "Image Manifest" and "Image Index"). So refing an index
//!    keeps its manifests, configs and layers without extra calls.
//!
//! GC holds `gc.lock` exclusively, so commits, ref and lease updates wait
//! for it and never interleave with a sweep. Temp files in `ingest/` older
//! than a day are removed too.

use super::{leases, lock, usage, write_atomic, ContentStore, StoreError};
use crate::oci::Digest;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::time::{Duration, SystemTime};

/// What a GC run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs kept (reachable).
    pub kept: u64,
    /// Blobs removed.
    pub removed: Vec<Digest>,
    /// Bytes freed.
    pub freed_bytes: u64,
}

const MAX_MANIFEST: u64 = 4 << 20;
const MAX_LINKS_FILE: u64 = 16 << 20;
const STALE_INGEST: Duration = Duration::from_secs(24 * 3600);

impl ContentStore {
    /// Records that `parent` keeps `children` alive (replacing any previous
    /// list). Needed only for links the store cannot parse itself (see the
    /// module docs).
    pub fn set_children(&self, parent: &Digest, children: &[Digest]) -> Result<(), StoreError> {
        let path = self.children_path(parent);
        let body = serde_json::to_vec(children).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let _guard = lock::shared(self.root())?;
        write_atomic(&path, &body)
    }

    /// Children of `digest`: explicit links plus, for manifests and indexes,
    /// the descriptors inside.
    pub fn children(&self, digest: &Digest) -> Result<Vec<Digest>, StoreError> {
        let mut out = BTreeSet::new();
        let path = self.children_path(digest);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() && m.len() <= MAX_LINKS_FILE => {
                let bytes = fs::read(&path).map_err(|e| StoreError::io("read links", &path, e))?;
                let list: Vec<Digest> =
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                out.extend(list);
            }
            Ok(_) => {
                return Err(StoreError::Corrupt {
                    path,
                    reason: "not a regular file under 16 MiB".into(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("read links", &path, e)),
        }
        out.extend(self.manifest_children(digest)?);
        Ok(out.into_iter().collect())
    }

    fn manifest_children(&self, digest: &Digest) -> Result<Vec<Digest>, StoreError> {
        let Ok(size) = self.size(digest) else {
            return Ok(Vec::new());
        };
        if !(2..=MAX_MANIFEST).contains(&size) {
            return Ok(Vec::new());
        }
        let path = self.blob_path(digest);
        let mut bytes = Vec::with_capacity(size as usize);
        fs::File::open(&path)
            .and_then(|f| f.take(MAX_MANIFEST).read_to_end(&mut bytes))
            .map_err(|e| StoreError::io("read blob", &path, e))?;
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Ok(Vec::new());
        }
        Ok(descriptor_digests(&bytes))
    }

    /// Runs a mark-and-sweep collection (see the module docs).
    pub fn gc(&self) -> Result<GcReport, StoreError> {
        let _guard = lock::exclusive(self.root())?;
        let mut pending: Vec<Digest> = self
            .list_refs()?
            .into_iter()
            .map(|(_, d)| d.digest)
            .collect();
        pending.extend(leases::live_digests(self.root())?);
        let mut marked = BTreeSet::new();
        while let Some(d) = pending.pop() {
            if !marked.insert(d.clone()) {
                continue;
            }
            pending.extend(self.children(&d)?);
        }
        let mut report = GcReport::default();
        for (digest, size) in self.scan_blobs()? {
            if marked.contains(&digest) {
                report.kept += 1;
                continue;
            }
            let path = self.blob_path(&digest);
            fs::remove_file(&path).map_err(|e| StoreError::io("remove blob", &path, e))?;
            let _ = fs::remove_file(self.children_path(&digest));
            report.freed_bytes += size;
            report.removed.push(digest);
        }
        usage::record_removed(self.root(), &report.removed)?;
        self.remove_stale_ingest();
        Ok(report)
    }

    fn remove_stale_ingest(&self) {
        let Ok(entries) = fs::read_dir(self.ingest_dir()) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > STALE_INGEST);
            if old {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// Digests of the descriptors an OCI/Docker manifest or index names.
/// Anything that is not such a document yields nothing.
pub fn descriptor_digests(json: &[u8]) -> Vec<Digest> {
    let Ok(doc) = serde_json::from_slice::<Value>(json) else {
        return Vec::new();
    };
    if doc.get("schemaVersion").is_none() {
        return Vec::new();
    }
    let one = |v: Option<&Value>| {
        v.and_then(|d| d.get("digest"))
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<Digest>().ok())
    };
    let mut out = Vec::new();
    out.extend(one(doc.get("config")));
    out.extend(one(doc.get("subject")));
    for list in ["layers", "manifests", "blobs"] {
        if let Some(items) = doc.get(list).and_then(Value::as_array) {
            out.extend(items.iter().filter_map(|i| one(Some(i))));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::descriptor_digests;

    #[test]
    fn finds_manifest_and_index_children() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{a}"}},"layers":[{{"digest":"{b}"}},{{"digest":"bogus"}}]}}"#
        );
        let got: Vec<String> = descriptor_digests(m.as_bytes())
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(got, vec![a.clone(), b]);
        let i = format!(r#"{{"schemaVersion":2,"manifests":[{{"digest":"{a}"}}]}}"#);
        assert_eq!(descriptor_digests(i.as_bytes()).len(), 1);
        assert!(descriptor_digests(b"{\"config\":{}}").is_empty());
        assert!(descriptor_digests(b"\x1f\x8b").is_empty());
    }
}
