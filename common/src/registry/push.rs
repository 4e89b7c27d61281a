//! Push (distribution spec "Pushing blobs", "Mounting a blob from another
//! repository", "Pushing manifests"): every blob is HEAD-checked first, mounted
//! from another repository of the same registry when one is known to hold it,
//! else uploaded monolithically or in chunks; then the per-platform manifests,
//! and the index last, so a tag never points at something incomplete.

use super::challenge::{repository_scope, Access};
use super::client::{header_str, parse_url, Body, Host, RegistryClient, Req, Subject, UploadMode};
use super::error::{RegistryError, Result};
use super::manifest::{self, Descriptor, Parsed};
use super::reference::Reference;
use crate::oci::store::{ContentStore, StoreError};
use crate::oci::Digest;
use futures_util::stream::{self, StreamExt as _, TryStreamExt as _};
use reqwest::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode, Url};

/// Push settings.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Repositories of the target registry to try mounting blobs from, besides
    /// those this client has seen holding them.
    pub mount_from: Vec<String>,
}

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    /// The root pushed (index or manifest).
    pub root: Option<Descriptor>,
    /// Blobs uploaded.
    pub uploaded: usize,
    /// Bytes uploaded.
    pub bytes_uploaded: u64,
    /// Blobs mounted from another repository.
    pub mounted: usize,
    /// Blobs the registry already had in the target repository.
    pub existing: usize,
    /// Manifests pushed (children and root).
    pub manifests: usize,
}

enum BlobOutcome {
    Existing,
    Mounted,
    Uploaded(u64),
}

fn missing(digest: &Digest, e: StoreError) -> RegistryError {
    RegistryError::MissingLocal {
        digest: digest.clone(),
        reason: e.to_string(),
    }
}

impl RegistryClient {
    /// Push the image rooted at `root` (an index or a manifest in `store`) to
    /// `target` (its tag, or its digest when the target has no tag).
    pub async fn push(
        &self,
        store: &ContentStore,
        root: &Digest,
        target: &Reference,
        opts: &PushOptions,
    ) -> Result<PushReport> {
        let limit = self.config().max_manifest_bytes;
        let root_body = store
            .read_bytes(root, limit)
            .map_err(|e| missing(root, e))?;
        let shown = format!("local {root}");
        let bad = |reason: String| RegistryError::BadManifest {
            reference: shown.clone(),
            reason,
        };
        let (root_type, parsed) = manifest::parse(&root_body, None).map_err(bad)?;
        let mut children: Vec<(Descriptor, Vec<u8>)> = Vec::new();
        let mut blobs: Vec<Descriptor> = Vec::new();
        let mut add_blobs = |config: Descriptor, layers: Vec<Descriptor>| {
            for d in std::iter::once(config).chain(layers) {
                if !blobs.iter().any(|b| b.digest == d.digest) {
                    blobs.push(d);
                }
            }
        };
        match parsed {
            Parsed::Index { manifests } => {
                for entry in manifests {
                    let body = store
                        .read_bytes(&entry.digest, limit)
                        .map_err(|e| missing(&entry.digest, e))?;
                    let (mt, parsed) =
                        manifest::parse(&body, Some(&entry.media_type)).map_err(bad)?;
                    let Parsed::Image { config, layers } = parsed else {
                        return Err(bad(format!(
                            "index entry {} is an index; nested indexes are not pushed",
                            entry.digest
                        )));
                    };
                    add_blobs(config, layers);
                    children.push((
                        Descriptor {
                            media_type: mt,
                            ..entry
                        },
                        body,
                    ));
                }
            }
            Parsed::Image { config, layers } => add_blobs(config, layers),
        }
        for b in &blobs {
            if !store.contains(&b.digest) {
                return Err(missing(&b.digest, StoreError::NotFound(b.digest.clone())));
            }
        }

        let host = self.host(&target.registry)?;
        let base = self.base_url(&host).await?;
        let parallel = self.config().max_parallel.max(1);
        let outcomes: Vec<BlobOutcome> = stream::iter(
            blobs
                .iter()
                .map(|b| self.push_blob(&host, &base, target, b, store, opts)),
        )
        .buffer_unordered(parallel)
        .try_collect()
        .await?;
        let mut report = PushReport::default();
        for o in outcomes {
            match o {
                BlobOutcome::Existing => report.existing += 1,
                BlobOutcome::Mounted => report.mounted += 1,
                BlobOutcome::Uploaded(n) => {
                    report.uploaded += 1;
                    report.bytes_uploaded += n;
                }
            }
        }
        for b in &blobs {
            self.record_source(&b.digest, &target.registry, &target.repository);
        }
        for (desc, body) in &children {
            self.put_manifest(
                &host,
                &base,
                target,
                &desc.digest.to_string(),
                &desc.media_type,
                body,
                &desc.digest,
            )
            .await?;
            report.manifests += 1;
        }
        let tag = target.tag.clone().unwrap_or_else(|| target.target());
        self.put_manifest(&host, &base, target, &tag, &root_type, &root_body, root)
            .await?;
        report.manifests += 1;
        report.root = Some(Descriptor {
            media_type: root_type,
            digest: root.clone(),
            size: root_body.len() as u64,
            platform: None,
        });
        Ok(report)
    }

    #[allow(clippy::too_many_arguments)]
    async fn put_manifest(
        &self,
        host: &Host,
        base: &Url,
        target: &Reference,
        tag_or_digest: &str,
        media_type: &str,
        body: &[u8],
        digest: &Digest,
    ) -> Result<()> {
        let url = join(
            base,
            &format!("v2/{}/manifests/{tag_or_digest}", target.repository),
            host,
        )?;
        let scopes = [repository_scope(&target.repository, Access::Push)];
        let ct = HeaderValue::from_str(media_type).map_err(|_| RegistryError::BadManifest {
            reference: digest.to_string(),
            reason: format!("media type {media_type:?} is not a valid header value"),
        })?;
        let req = Req {
            method: Method::PUT,
            url,
            headers: vec![(CONTENT_TYPE, ct)],
            body: Body::Bytes(bytes::Bytes::copy_from_slice(body)),
            scopes: &scopes,
            repository: &target.repository,
            push: true,
        };
        let resp = self.send(host, &req).await?;
        if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
            let shown = format!("{}/{}:{tag_or_digest}", target.registry, target.repository);
            return Err(self
                .status_error(host, resp, &req, Subject::Manifest(&shown))
                .await);
        }
        check_digest_header(host, resp.headers(), digest, "manifest PUT")
    }

    async fn push_blob(
        &self,
        host: &Host,
        base: &Url,
        target: &Reference,
        desc: &Descriptor,
        store: &ContentStore,
        opts: &PushOptions,
    ) -> Result<BlobOutcome> {
        let repo = &target.repository;
        let push_scope = [repository_scope(repo, Access::Push)];
        let repo_name = target.name();

        // 1. Already there?
        let head = Req {
            method: Method::HEAD,
            url: join(base, &format!("v2/{repo}/blobs/{}", desc.digest), host)?,
            headers: Vec::new(),
            body: Body::Empty,
            scopes: &push_scope,
            repository: repo,
            push: true,
        };
        let resp = self.send(host, &head).await?;
        match resp.status() {
            s if s.is_success() => return Ok(BlobOutcome::Existing),
            StatusCode::NOT_FOUND => {}
            _ => {
                return Err(self
                    .status_error(host, resp, &head, Subject::Blob(&repo_name, &desc.digest))
                    .await)
            }
        }

        // 2. Cross-repo mount; a 202 answer is an upload session we can use.
        let mut location: Option<Url> = None;
        let mut sources = self.mount_candidates(&desc.digest, &target.registry, repo);
        for extra in &opts.mount_from {
            if extra != repo && !sources.contains(extra) {
                sources.push(extra.clone());
            }
        }
        for from in sources.iter().take(3) {
            let scopes = [
                repository_scope(repo, Access::Push),
                repository_scope(from, Access::Pull),
            ];
            let mut url = join(base, &format!("v2/{repo}/blobs/uploads/"), host)?;
            url.query_pairs_mut()
                .append_pair("mount", desc.digest.as_str())
                .append_pair("from", from);
            let req = Req {
                method: Method::POST,
                url,
                headers: vec![(CONTENT_LENGTH, HeaderValue::from_static("0"))],
                body: Body::Empty,
                scopes: &scopes,
                repository: repo,
                push: true,
            };
            let resp = self.send(host, &req).await?;
            match resp.status() {
                StatusCode::CREATED => return Ok(BlobOutcome::Mounted),
                StatusCode::ACCEPTED => {
                    location = Some(location_of(host, base, resp.headers(), "mount POST")?);
                    break;
                }
                _ => {
                    tracing::debug!(from, status = %resp.status(), "mount refused; trying the next source")
                }
            }
        }

        // 3. Open an upload session if the mount did not give one.
        let location = match location {
            Some(l) => l,
            None => {
                let req = Req {
                    method: Method::POST,
                    url: join(base, &format!("v2/{repo}/blobs/uploads/"), host)?,
                    headers: vec![(CONTENT_LENGTH, HeaderValue::from_static("0"))],
                    body: Body::Empty,
                    scopes: &push_scope,
                    repository: repo,
                    push: true,
                };
                let resp = self.send(host, &req).await?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(self.status_error(host, resp, &req, Subject::Other).await);
                }
                location_of(host, base, resp.headers(), "upload POST")?
            }
        };

        // 4. Upload.
        let path = store.blob_path(&desc.digest);
        let chunked = match self.config().upload {
            UploadMode::Monolithic => None,
            UploadMode::Chunked { chunk_size } => Some(chunk_size.max(1)),
            UploadMode::Auto {
                threshold,
                chunk_size,
            } => (desc.size > threshold).then_some(chunk_size.max(1)),
        };
        let octet = HeaderValue::from_static("application/octet-stream");
        let mut location = location;
        let final_body = match chunked {
            None => Body::File {
                path: path.clone(),
                offset: 0,
                len: desc.size,
            },
            Some(chunk) => {
                let mut offset = 0u64;
                while offset < desc.size {
                    let n = chunk.min(desc.size - offset);
                    let range = HeaderValue::from_str(&format!("{}-{}", offset, offset + n - 1))
                        .map_err(|e| RegistryError::Store(e.to_string()))?;
                    let req = Req {
                        method: Method::PATCH,
                        url: location.clone(),
                        headers: vec![
                            (CONTENT_TYPE, octet.clone()),
                            (HeaderName::from_static("content-range"), range),
                        ],
                        body: Body::File {
                            path: path.clone(),
                            offset,
                            len: n,
                        },
                        scopes: &push_scope,
                        repository: repo,
                        push: true,
                    };
                    let resp = self.send(host, &req).await?;
                    if resp.status() != StatusCode::ACCEPTED {
                        return Err(self.status_error(host, resp, &req, Subject::Other).await);
                    }
                    location = location_of(host, base, resp.headers(), "chunk PATCH")?;
                    offset += n;
                }
                Body::Empty
            }
        };
        let mut url = location;
        url.query_pairs_mut()
            .append_pair("digest", desc.digest.as_str());
        let mut headers = vec![(CONTENT_TYPE, octet)];
        if matches!(final_body, Body::Empty) {
            headers.push((CONTENT_LENGTH, HeaderValue::from_static("0")));
        }
        let req = Req {
            method: Method::PUT,
            url,
            headers,
            body: final_body,
            scopes: &push_scope,
            repository: repo,
            push: true,
        };
        let resp = self.send(host, &req).await?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.status_error(host, resp, &req, Subject::Other).await);
        }
        check_digest_header(host, resp.headers(), &desc.digest, "blob PUT")?;
        Ok(BlobOutcome::Uploaded(desc.size))
    }
}

fn join(base: &Url, path: &str, host: &Host) -> Result<Url> {
    base.join(path).map_err(|e| RegistryError::Protocol {
        registry: host.registry.clone(),
        what: "a URL".into(),
        reason: e.to_string(),
    })
}

/// The upload `Location` (absolute, or relative to the registry).
fn location_of(
    host: &Host,
    base: &Url,
    headers: &reqwest::header::HeaderMap,
    what: &str,
) -> Result<Url> {
    let loc = header_str(headers, LOCATION).ok_or_else(|| RegistryError::Protocol {
        registry: host.registry.clone(),
        what: what.to_string(),
        reason: "no Location header".into(),
    })?;
    match Url::parse(&loc) {
        Ok(u) => Ok(u),
        Err(_) => base.join(&loc).or_else(|_| parse_url(&loc, &host.registry)),
    }
}

/// If the registry names the digest it stored, it must be ours.
fn check_digest_header(
    host: &Host,
    headers: &reqwest::header::HeaderMap,
    digest: &Digest,
    what: &str,
) -> Result<()> {
    match header_str(headers, HeaderName::from_static("docker-content-digest")) {
        Some(d) if d != digest.as_str() => Err(RegistryError::DigestMismatch {
            what: format!("{what} to {}", host.registry),
            expected: digest.to_string(),
            actual: d,
        }),
        _ => Ok(()),
    }
}
