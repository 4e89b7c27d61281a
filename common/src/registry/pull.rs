//! Pull (distribution spec "Pulling manifests" and "Pulling blobs"): resolve a
//! reference through an index to the wanted platforms, fetch only the blobs the
//! store lacks, a bounded number at a time, verifying size and digest while
//! streaming into the store; manifests are bounded and verified too, and the
//! root manifest is stored last so its presence implies its children.

use super::challenge::{repository_scope, Access};
use super::client::{header_str, read_limited, strip_query, Body, RegistryClient, Req, Subject};
use super::error::{RegistryError, Result};
use super::manifest::{self, Descriptor, Parsed};
use super::reference::Reference;
use crate::oci::store::{ContentStore, StoreError};
use crate::oci::Digest;
use crate::platform::Platform;
use futures_util::stream::{self, StreamExt as _, TryStreamExt as _};
use reqwest::header::{HeaderName, HeaderValue, ACCEPT};
use reqwest::Method;
use std::io::Write as _;

/// Which manifests of an index to pull.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PlatformSelection {
    /// Every image manifest in the index.
    #[default]
    All,
    /// The best match (containerd's rules, [`Platform::match_rank`]) for each platform.
    Only(Vec<Platform>),
}

/// Pull settings.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Platforms to fetch when the reference names an index.
    pub platforms: PlatformSelection,
}

/// One image manifest that was pulled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledManifest {
    /// Its platform (from the index entry, or from the config for a lone manifest).
    pub platform: Option<Platform>,
    /// The manifest.
    pub manifest: Descriptor,
    /// Its config blob.
    pub config: Descriptor,
    /// Its layers, in order.
    pub layers: Vec<Descriptor>,
}

/// Transfer figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferStats {
    /// Blobs downloaded.
    pub blobs_fetched: usize,
    /// Bytes of blobs downloaded.
    pub bytes_fetched: u64,
    /// Blobs the store already had.
    pub blobs_present: usize,
}

/// The result of a pull: everything is in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// The root document (index or manifest) the reference resolved to.
    pub root: Descriptor,
    /// The image manifests fetched.
    pub images: Vec<PulledManifest>,
    /// Transfer figures.
    pub stats: TransferStats,
}

fn store_err(e: StoreError) -> RegistryError {
    RegistryError::Store(e.to_string())
}

impl RegistryClient {
    /// Fetch a manifest or index by tag or digest, bounded to
    /// `max_manifest_bytes`. The body must hash to the reference's digest (when
    /// given) and to the registry's `Docker-Content-Digest` (when sent).
    pub async fn fetch_manifest(&self, reference: &Reference) -> Result<(Descriptor, Vec<u8>)> {
        let host = self.host(&reference.registry)?;
        let base = self.base_url(&host).await?;
        let url = base
            .join(&format!(
                "v2/{}/manifests/{}",
                reference.repository,
                reference.target()
            ))
            .map_err(|e| RegistryError::Protocol {
                registry: host.registry.clone(),
                what: "a manifest URL".into(),
                reason: e.to_string(),
            })?;
        let scopes = [repository_scope(&reference.repository, Access::Pull)];
        let req = Req {
            method: Method::GET,
            url,
            headers: vec![(ACCEPT, HeaderValue::from_static(manifest::ACCEPT_MANIFESTS))],
            body: Body::Empty,
            scopes: &scopes,
            repository: &reference.repository,
            push: false,
        };
        let resp = self.send(&host, &req).await?;
        let shown = reference.to_string();
        if !resp.status().is_success() {
            return Err(self
                .status_error(&host, resp, &req, Subject::Manifest(&shown))
                .await);
        }
        let content_type = header_str(resp.headers(), reqwest::header::CONTENT_TYPE);
        let header_digest = header_str(
            resp.headers(),
            HeaderName::from_static("docker-content-digest"),
        );
        let limit = self.config().max_manifest_bytes;
        let body = read_limited(resp, limit, &format!("manifest {shown}")).await?;
        let actual = Digest::sha256_of(&body);
        let expected = match &reference.digest {
            Some(d) => Some(d.to_string()),
            None => header_digest.filter(|d| d.starts_with("sha256:")),
        };
        if let Some(exp) = expected {
            if exp != actual.as_str() {
                return Err(RegistryError::DigestMismatch {
                    what: format!("manifest {shown}"),
                    expected: exp,
                    actual: actual.to_string(),
                });
            }
        }
        let media_type =
            manifest::media_type_of(&body, content_type.as_deref()).map_err(|reason| {
                RegistryError::BadManifest {
                    reference: shown.clone(),
                    reason,
                }
            })?;
        let desc = Descriptor {
            media_type,
            digest: actual,
            size: body.len() as u64,
            platform: None,
        };
        Ok((desc, body))
    }

    /// Pull `reference` into `store`: resolve it (through an index to the
    /// selected platforms), fetch missing blobs with bounded parallelism and
    /// full verification, then store the manifests, the root last.
    pub async fn pull(
        &self,
        reference: &Reference,
        opts: &PullOptions,
        store: &ContentStore,
    ) -> Result<PulledImage> {
        let shown = reference.to_string();
        let (root, root_body) = self.fetch_manifest(reference).await?;
        let bad = |reason: String| RegistryError::BadManifest {
            reference: shown.clone(),
            reason,
        };
        let (_, parsed) = manifest::parse(&root_body, Some(&root.media_type)).map_err(bad)?;
        let mut children: Vec<(Descriptor, Vec<u8>)> = Vec::new();
        let mut images = Vec::new();
        let mut stats = TransferStats::default();
        let mut prefetched: Option<Digest> = None;
        match parsed {
            Parsed::Index { manifests } => {
                for entry in select(&manifests, &opts.platforms, &shown)? {
                    let child_ref = reference.with_digest(entry.digest.clone());
                    let (desc, body) = self.fetch_manifest(&child_ref).await?;
                    if desc.size != entry.size {
                        return Err(RegistryError::SizeMismatch {
                            what: format!("manifest {child_ref}"),
                            expected: entry.size,
                            actual: desc.size,
                        });
                    }
                    let (mt, parsed) =
                        manifest::parse(&body, Some(&entry.media_type)).map_err(bad)?;
                    let Parsed::Image { config, layers } = parsed else {
                        return Err(bad(format!(
                            "index entry {} is itself an index; nested indexes are not pulled",
                            entry.digest
                        )));
                    };
                    let manifest = Descriptor {
                        media_type: mt,
                        ..entry.clone()
                    };
                    images.push(PulledManifest {
                        platform: entry.platform.clone(),
                        manifest,
                        config,
                        layers,
                    });
                    children.push((desc, body));
                }
            }
            Parsed::Image { config, layers } => {
                // A lone manifest: check the platform in its config before the layers.
                self.fetch_blobs(reference, std::slice::from_ref(&config), store, &mut stats)
                    .await?;
                let cfg = store
                    .read_bytes(&config.digest, self.config().max_manifest_bytes)
                    .map_err(store_err)?;
                let platform = manifest::config_platform(&cfg);
                prefetched = Some(config.digest.clone());
                if let PlatformSelection::Only(wanted) = &opts.platforms {
                    let ok = platform
                        .as_ref()
                        .is_some_and(|p| wanted.iter().any(|w| w.matches(p)));
                    if !ok {
                        return Err(RegistryError::NoMatchingPlatform {
                            reference: shown.clone(),
                            wanted: list(wanted.iter()),
                            available: platform.map_or("unknown".into(), |p| p.to_string()),
                        });
                    }
                }
                images.push(PulledManifest {
                    platform,
                    manifest: root.clone(),
                    config,
                    layers,
                });
            }
        }

        let mut blobs: Vec<Descriptor> = Vec::new();
        for img in &images {
            for d in std::iter::once(&img.config).chain(&img.layers) {
                if !blobs.iter().any(|b| b.digest == d.digest)
                    && prefetched.as_ref() != Some(&d.digest)
                {
                    blobs.push(d.clone());
                }
            }
        }
        self.fetch_blobs(reference, &blobs, store, &mut stats)
            .await?;

        for (desc, body) in children
            .iter()
            .chain(std::iter::once(&(root.clone(), root_body)))
        {
            let stored = store.put_bytes(body).map_err(store_err)?;
            if stored != desc.digest {
                return Err(RegistryError::Store(format!(
                    "stored manifest as {stored}, expected {}",
                    desc.digest
                )));
            }
            self.record_source(&desc.digest, &reference.registry, &reference.repository);
        }
        Ok(PulledImage {
            root,
            images,
            stats,
        })
    }

    /// Fetch the `blobs` the store lacks, `max_parallel` at a time.
    async fn fetch_blobs(
        &self,
        reference: &Reference,
        blobs: &[Descriptor],
        store: &ContentStore,
        stats: &mut TransferStats,
    ) -> Result<()> {
        let parallel = self.config().max_parallel.max(1);
        let results: Vec<Option<u64>> =
            stream::iter(blobs.iter().map(|d| self.fetch_blob(reference, d, store)))
                .buffer_unordered(parallel)
                .try_collect()
                .await?;
        for r in results {
            match r {
                Some(n) => {
                    stats.blobs_fetched += 1;
                    stats.bytes_fetched += n;
                }
                None => stats.blobs_present += 1,
            }
        }
        for d in blobs {
            self.record_source(&d.digest, &reference.registry, &reference.repository);
        }
        Ok(())
    }

    /// Fetch one blob into the store unless present. Returns the bytes fetched,
    /// or `None` if the store had it. Size and digest are checked while
    /// streaming; on any mismatch the writer is dropped and nothing is stored.
    /// A connection lost mid-body restarts the blob (bounded by the retry policy).
    pub async fn fetch_blob(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        store: &ContentStore,
    ) -> Result<Option<u64>> {
        if store.contains(&desc.digest) {
            return Ok(None);
        }
        let host = self.host(&reference.registry)?;
        let base = self.base_url(&host).await?;
        let url = base
            .join(&format!(
                "v2/{}/blobs/{}",
                reference.repository, desc.digest
            ))
            .map_err(|e| RegistryError::Protocol {
                registry: host.registry.clone(),
                what: "a blob URL".into(),
                reason: e.to_string(),
            })?;
        let scopes = [repository_scope(&reference.repository, Access::Pull)];
        let repo_name = reference.name();
        let what = format!("blob {} from {repo_name}", desc.digest);
        let policy = self.config().retry;
        let mut attempt = 0;
        'attempts: loop {
            attempt += 1;
            let req = Req {
                method: Method::GET,
                url: url.clone(),
                headers: Vec::new(),
                body: Body::Empty,
                scopes: &scopes,
                repository: &reference.repository,
                push: false,
            };
            let mut resp = self.send(&host, &req).await?;
            if !resp.status().is_success() {
                return Err(self
                    .status_error(&host, resp, &req, Subject::Blob(&repo_name, &desc.digest))
                    .await);
            }
            if let Some(n) = resp.content_length() {
                if n != desc.size {
                    return Err(RegistryError::SizeMismatch {
                        what,
                        expected: desc.size,
                        actual: n,
                    });
                }
            }
            // Network chunks are small; batch them into 256 KiB file writes.
            let mut writer = std::io::BufWriter::with_capacity(
                256 * 1024,
                store
                    .writer(Some(desc.digest.clone()), Some(desc.size))
                    .map_err(store_err)?,
            );
            let mut n: u64 = 0;
            loop {
                let chunk = match resp.chunk().await {
                    Ok(c) => c,
                    Err(e) => {
                        if let Some(d) = policy.next_delay(attempt, None) {
                            tracing::debug!(%what, error = %e, "blob body failed; restarting");
                            drop(writer);
                            tokio::time::sleep(d).await;
                            continue 'attempts;
                        }
                        return Err(RegistryError::Unreachable {
                            url: strip_query(&url),
                            attempts: attempt,
                            reason: super::client::error_chain(&e),
                        });
                    }
                };
                let Some(chunk) = chunk else { break };
                n += chunk.len() as u64;
                if n > desc.size {
                    return Err(RegistryError::SizeMismatch {
                        what,
                        expected: desc.size,
                        actual: n,
                    });
                }
                // Sequential writes to a local file; the store's writer is synchronous.
                writer
                    .write_all(&chunk)
                    .map_err(|e| RegistryError::Store(format!("writing {what}: {e}")))?;
            }
            if n != desc.size {
                return Err(RegistryError::SizeMismatch {
                    what,
                    expected: desc.size,
                    actual: n,
                });
            }
            // The store's writer hashes as it writes and refuses to commit a
            // mismatch (the temp file is deleted): one hash pass, nothing stored.
            let writer = writer
                .into_inner()
                .map_err(|e| RegistryError::Store(format!("writing {what}: {}", e.error())))?;
            match writer.commit() {
                Ok(_) => {}
                Err(StoreError::DigestMismatch { expected, actual }) => {
                    return Err(RegistryError::DigestMismatch {
                        what,
                        expected: expected.to_string(),
                        actual: actual.to_string(),
                    })
                }
                Err(e) => return Err(store_err(e)),
            }
            return Ok(Some(n));
        }
    }
}

/// Pick index entries for `selection`: all image manifests, or the best match
/// per wanted platform (exact variant first), deduplicated.
pub fn select(
    manifests: &[Descriptor],
    selection: &PlatformSelection,
    reference: &str,
) -> Result<Vec<Descriptor>> {
    let is_image =
        |d: &&Descriptor| manifest::is_manifest(&d.media_type) || d.media_type.is_empty();
    match selection {
        PlatformSelection::All => {
            let images: Vec<Descriptor> = manifests.iter().filter(is_image).cloned().collect();
            if images.is_empty() {
                // Without this an index of only nested indexes (or of
                // nothing) would "pull" as zero images and be stored.
                let kinds: Vec<&str> = manifests.iter().map(|d| d.media_type.as_str()).collect();
                return Err(RegistryError::BadManifest {
                    reference: reference.to_string(),
                    reason: format!(
                        "the index lists no image manifest (entries: {}); nested indexes are not pulled",
                        if kinds.is_empty() { "none".to_string() } else { kinds.join(", ") }
                    ),
                });
            }
            Ok(images)
        }
        PlatformSelection::Only(wanted) => {
            let mut out: Vec<Descriptor> = Vec::new();
            for w in wanted {
                let best = manifests
                    .iter()
                    .filter(is_image)
                    .filter_map(|d| {
                        d.platform
                            .as_ref()
                            .and_then(|p| w.match_rank(p))
                            .map(|r| (r, d))
                    })
                    .min_by_key(|(r, _)| *r)
                    .map(|(_, d)| d);
                match best {
                    Some(d) if !out.iter().any(|o| o.digest == d.digest) => out.push(d.clone()),
                    Some(_) => {}
                    None => {
                        return Err(RegistryError::NoMatchingPlatform {
                            reference: reference.to_string(),
                            wanted: w.to_string(),
                            available: list(manifests.iter().filter_map(|d| d.platform.as_ref())),
                        })
                    }
                }
            }
            Ok(out)
        }
    }
}

fn list<'a>(ps: impl Iterator<Item = &'a Platform>) -> String {
    let v: Vec<String> = ps.map(|p| p.to_string()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_without_image_manifests_selects_nothing_and_fails() {
        let mut nested = entry(1, "linux/amd64");
        nested.media_type = manifest::OCI_INDEX.into();
        let e = select(&[nested], &PlatformSelection::All, "r/x:1").unwrap_err();
        assert!(
            e.to_string().contains("lists no image manifest")
                && e.to_string().contains(manifest::OCI_INDEX),
            "{e}"
        );
        let e = select(&[], &PlatformSelection::All, "r/x:1").unwrap_err();
        assert!(e.to_string().contains("entries: none"), "{e}");
    }

    fn entry(n: u8, p: &str) -> Descriptor {
        Descriptor {
            media_type: manifest::OCI_MANIFEST.into(),
            digest: format!("sha256:{}", format!("{n:02x}").repeat(32))
                .parse()
                .unwrap(),
            size: 1,
            platform: Some(p.parse().unwrap()),
        }
    }

    #[test]
    fn selects_best_match_per_platform() {
        let idx = vec![
            entry(1, "linux/amd64"),
            entry(2, "linux/arm64/v8"),
            entry(3, "linux/arm/v7"),
            entry(4, "linux/amd64/v3"),
        ];
        let all = select(&idx, &PlatformSelection::All, "r").unwrap();
        assert_eq!(all.len(), 4);
        let one = select(
            &idx,
            &PlatformSelection::Only(vec![Platform::linux_arm64()]),
            "r",
        )
        .unwrap();
        assert_eq!(one, vec![idx[1].clone()]);
        let v3: Platform = "linux/amd64/v3".parse().unwrap();
        let two = select(
            &idx,
            &PlatformSelection::Only(vec![v3, Platform::linux_amd64(), Platform::linux_amd64()]),
            "r",
        )
        .unwrap();
        assert_eq!(
            two,
            vec![idx[3].clone(), idx[0].clone()],
            "exact variant first, deduped"
        );
        let e = select(
            &idx,
            &PlatformSelection::Only(vec!["linux/s390x".parse().unwrap()]),
            "r",
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("linux/s390x") && msg.contains("linux/arm64"),
            "{msg}"
        );
    }

    #[test]
    fn nested_indexes_are_not_selected() {
        let mut nested = entry(9, "linux/amd64");
        nested.media_type = manifest::OCI_INDEX.into();
        let image = entry(1, "linux/amd64");
        let got = select(&[nested, image.clone()], &PlatformSelection::All, "r").unwrap();
        assert_eq!(got, vec![image]);
    }
}
