//! Choosing manifests from an index for a platform, following containerd's
//! `platforms.Only` matcher (what docker, BuildKit and nerdctl use for pulls):
//!
//! - both sides are normalised first (`aarch64` = `arm64`, `arm64/v8` =
//!   `arm64`, `x86_64` = `amd64`, `amd64/v1` = `amd64`, `arm` = `arm/v7`);
//! - `amd64/vN` also accepts `amd64/vN-1` ... `amd64` (v1), then `386`;
//! - `arm/vN` also accepts `arm/vN-1` ... `arm/v5`;
//! - `arm64` also accepts `arm/v8`, then `arm/v7` ... `arm/v5`;
//! - earlier in that list ranks better; ties keep index order;
//! - `os.version` and `os.features` are ignored unless the request sets them.

use super::document::from_oci_platform;
use super::{Descriptor, ImageError, ImageIndex};
use crate::oci::media_types::{classify, MediaKind};
use crate::platform::Platform;

/// What to match: a platform and, optionally, the OS version and features.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformRequest {
    /// The platform wanted (normalised on use).
    pub platform: Platform,
    /// When set, an entry's `os.version` must be absent, equal, or start with
    /// this followed by `.` (Windows build-number prefix matching).
    pub os_version: Option<String>,
    /// When non-empty, an entry's `os.features` must all be in this list.
    pub os_features: Vec<String>,
}

impl From<Platform> for PlatformRequest {
    fn from(platform: Platform) -> Self {
        Self {
            platform,
            os_version: None,
            os_features: Vec::new(),
        }
    }
}

/// containerd `platformVector`: the platforms acceptable for `p`, best first.
pub fn compatible_platforms(p: &Platform) -> Vec<Platform> {
    let p = Platform::new(&p.os, &p.architecture, &p.variant);
    let version = |v: &str| v.strip_prefix('v').and_then(|n| n.parse::<u32>().ok());
    let mut out = vec![p.clone()];
    match p.architecture.as_str() {
        "amd64" => {
            if let Some(n) = version(&p.variant).filter(|n| *n > 1) {
                for k in (1..n).rev() {
                    out.push(Platform::new(&p.os, "amd64", &format!("v{k}")));
                }
            }
            out.push(Platform::new(&p.os, "386", ""));
        }
        "arm" => {
            if let Some(n) = version(&p.variant).filter(|n| *n > 5) {
                for k in (5..n).rev() {
                    out.push(Platform::new(&p.os, "arm", &format!("v{k}")));
                }
            }
        }
        "arm64" => {
            let v = if p.variant.is_empty() {
                "v8"
            } else {
                p.variant.as_str()
            };
            out.push(Platform::new(&p.os, "arm", v));
            if let Some(n) = version(v).filter(|n| *n > 5) {
                for k in (5..n).rev() {
                    out.push(Platform::new(&p.os, "arm", &format!("v{k}")));
                }
            }
        }
        _ => {}
    }
    out.dedup();
    out
}

fn os_extras_match(req: &PlatformRequest, entry: &oci_spec::image::Platform) -> bool {
    if let (Some(want), Some(have)) = (&req.os_version, entry.os_version()) {
        if have != want && !have.starts_with(&format!("{want}.")) {
            return false;
        }
    }
    if !req.os_features.is_empty() {
        if let Some(features) = entry.os_features() {
            if !features.iter().all(|f| req.os_features.contains(f)) {
                return false;
            }
        }
    }
    true
}

/// The index entries that run on `req`, best match first. Only manifests
/// and nested indexes with a `platform` are candidates (attestation
/// manifests carry `unknown/unknown` and never match). Errors with the list
/// of available platforms when nothing matches.
pub fn select_manifests<'a>(
    index: &'a ImageIndex,
    req: &PlatformRequest,
) -> Result<Vec<&'a Descriptor>, ImageError> {
    let vector = compatible_platforms(&req.platform);
    let mut ranked: Vec<(usize, usize, &Descriptor)> = Vec::new();
    for (pos, d) in index.manifests().iter().enumerate() {
        if !matches!(
            classify(d.media_type().as_ref()),
            MediaKind::Manifest | MediaKind::Index
        ) {
            continue;
        }
        let Some(p) = d.platform() else { continue };
        if !os_extras_match(req, p) {
            continue;
        }
        let candidate = from_oci_platform(p);
        if let Some(rank) = vector.iter().position(|v| *v == candidate) {
            ranked.push((rank, pos, d));
        }
    }
    if ranked.is_empty() {
        let available = index
            .manifests()
            .iter()
            .filter_map(|d| d.platform().as_ref())
            .map(|p| from_oci_platform(p).to_string())
            .filter(|p| p != "unknown/unknown")
            .collect();
        return Err(ImageError::NoMatchingPlatform {
            wanted: req.platform.to_string(),
            available,
        });
    }
    ranked.sort_by_key(|(rank, pos, _)| (*rank, *pos));
    Ok(ranked.into_iter().map(|(_, _, d)| d).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::image::document::{descriptor_for, new_index, to_oci_platform};
    use crate::oci::media_types::{OCI_LAYER_GZIP, OCI_MANIFEST};
    use std::collections::BTreeMap;

    fn entry(tag: &str, os: &str, arch: &str, variant: &str) -> Descriptor {
        let mut d = descriptor_for(OCI_MANIFEST, tag.as_bytes());
        let mut p = to_oci_platform(&Platform::new(os, arch, ""));
        if !variant.is_empty() {
            p.set_variant(Some(variant.to_string()));
        }
        d.set_platform(Some(p));
        d
    }

    fn pick(index: &ImageIndex, want: &str) -> Result<Vec<String>, ImageError> {
        let req = PlatformRequest::from(want.parse::<Platform>().unwrap());
        Ok(select_manifests(index, &req)?
            .into_iter()
            .map(|d| {
                index
                    .manifests()
                    .iter()
                    .position(|m| m == d)
                    .unwrap()
                    .to_string()
            })
            .collect())
    }

    #[test]
    fn arm64_with_and_without_v8() {
        let idx = new_index(
            vec![
                entry("0", "linux", "amd64", ""),
                entry("1", "linux", "arm64", "v8"),
                entry("2", "linux", "arm", "v7"),
            ],
            &BTreeMap::new(),
        );
        assert_eq!(pick(&idx, "linux/arm64").unwrap(), ["1", "2"]);
        assert_eq!(pick(&idx, "linux/arm64/v8").unwrap(), ["1", "2"]);
        assert_eq!(pick(&idx, "linux/aarch64").unwrap(), ["1", "2"]);
        let plain = new_index(vec![entry("1", "linux", "arm64", "")], &BTreeMap::new());
        assert_eq!(pick(&plain, "linux/arm64/v8").unwrap(), ["0"]);
    }

    #[test]
    fn amd64_variants_rank_highest_first_and_never_upwards() {
        let idx = new_index(
            vec![
                entry("0", "linux", "amd64", ""),
                entry("1", "linux", "amd64", "v3"),
                entry("2", "linux", "amd64", "v2"),
                entry("3", "linux", "386", ""),
            ],
            &BTreeMap::new(),
        );
        assert_eq!(pick(&idx, "linux/amd64/v3").unwrap(), ["1", "2", "0", "3"]);
        assert_eq!(pick(&idx, "linux/amd64/v2").unwrap(), ["2", "0", "3"]);
        assert_eq!(pick(&idx, "linux/amd64").unwrap(), ["0", "3"]);
    }

    #[test]
    fn no_match_lists_available_platforms() {
        let mut att = entry("a", "unknown", "unknown", "");
        att.set_media_type(OCI_MANIFEST.into());
        let layer = descriptor_for(OCI_LAYER_GZIP, b"l");
        let idx = new_index(
            vec![
                entry("0", "linux", "amd64", ""),
                entry("1", "linux", "arm", "v6"),
                att,
                layer,
            ],
            &BTreeMap::new(),
        );
        let e = pick(&idx, "linux/s390x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "no manifest for platform linux/s390x in the index; available: linux/amd64, linux/arm/v6"
        );
        assert!(pick(&idx, "linux/arm/v5").is_err());
        assert_eq!(pick(&idx, "linux/arm/v7").unwrap(), ["1"]);
    }

    #[test]
    fn os_version_only_when_asked() {
        let mut d = entry("0", "windows", "amd64", "");
        let mut p = d.platform().clone().unwrap();
        p.set_os_version(Some("10.0.17763.1234".into()));
        d.set_platform(Some(p));
        let idx = new_index(vec![d], &BTreeMap::new());
        let mut req = PlatformRequest::from(Platform::new("windows", "amd64", ""));
        assert_eq!(select_manifests(&idx, &req).unwrap().len(), 1);
        req.os_version = Some("10.0.17763".into());
        assert_eq!(select_manifests(&idx, &req).unwrap().len(), 1);
        req.os_version = Some("10.0.20348".into());
        assert!(select_manifests(&idx, &req).is_err());
    }
}
