//! The image configuration (image-spec `config.md`) with Docker's extensions
//! (`Healthcheck`, `OnBuild`, `Shell`), as BuildKit's `DockerOCIImage`.
//!
//! Why not `oci_spec::image::ImageConfiguration`: it drops `Healthcheck`,
//! `OnBuild`, `Shell` and `ArgsEscaped`, which Docker/BuildKit images carry
//! and a Dockerfile builder must inherit from its base image. This type models
//! exactly what BuildKit models, and serialises the way BuildKit's exporter
//! does: top-level keys sorted (BuildKit re-marshals the config through a
//! `map[string]json.RawMessage`), runtime `config` fields in Go struct order,
//! compact, HTML-escaped.

use super::json::{self, JsonError};
use super::ImageError;
use crate::oci::Digest;
use crate::platform::Platform;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Configs, manifests and indexes larger than this are refused (4 MiB, as
/// containerd's and the distribution spec's manifest limit).
pub const MAX_DOCUMENT_SIZE: u64 = 4 * 1024 * 1024;

/// `{}`: the value type of Go's `map[string]struct{}` (ExposedPorts, Volumes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// The image config document. Field order is alphabetical on purpose: it is
/// the order BuildKit's exporter writes (sorted map keys).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `architecture` (REQUIRED): GOARCH spelling.
    pub architecture: String,
    /// `author` (OPTIONAL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// `config` (OPTIONAL): the execution parameters.
    #[serde(default, skip_serializing_if = "RuntimeConfig::is_empty")]
    pub config: RuntimeConfig,
    /// `created` (OPTIONAL): RFC 3339 date-time, as Go's RFC3339Nano.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// `history` (OPTIONAL): one entry per Dockerfile instruction, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    /// `os` (REQUIRED).
    pub os: String,
    /// `os.features` (OPTIONAL).
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    /// `os.version` (OPTIONAL).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// `rootfs` (REQUIRED): the layers' diff IDs, bottom first.
    pub rootfs: RootFs,
    /// `variant` (OPTIONAL): CPU variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// `config` of the image config: defaults for the container process.
/// Field names and order are Go's (`ocispecs.ImageConfig` then Docker's
/// `DockerOCIImageConfigExt`); every field is `omitempty`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuntimeConfig {
    /// `User`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `ExposedPorts`: `"80/tcp": {}`.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub exposed_ports: BTreeMap<String, Empty>,
    /// `Env`: `KEY=value` strings.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub env: Vec<String>,
    /// `Entrypoint`.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub cmd: Vec<String>,
    /// `Volumes`: `"/data": {}`.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub volumes: BTreeMap<String, Empty>,
    /// `WorkingDir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `Labels`.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub labels: BTreeMap<String, String>,
    /// `StopSignal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// `ArgsEscaped` (Windows only in practice).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub args_escaped: bool,
    /// `Healthcheck` (Docker extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    /// `OnBuild` (Docker extension): triggers run by child builds.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub on_build: Vec<String>,
    /// `Shell` (Docker extension): set by the SHELL instruction.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub shell: Vec<String>,
}

impl RuntimeConfig {
    /// True when every field is empty (Go would still write `"config":{}`,
    /// but only for a non-pointer struct; BuildKit always has Env, so this
    /// only matters for hand-made configs).
    pub fn is_empty(&self) -> bool {
        self == &RuntimeConfig::default()
    }
}

/// Docker's `HealthcheckConfig`; durations in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", args...]` or `["CMD-SHELL", command]`.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub test: Vec<String>,
    /// Time between checks (ns).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interval: i64,
    /// Check timeout (ns).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout: i64,
    /// Start period (ns).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_period: i64,
    /// Interval during the start period (ns).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_interval: i64,
    /// Consecutive failures before unhealthy.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// Go writes `null` for nil slices and maps without `omitempty` (Docker's
/// own configs do); read it as empty.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `rootfs`: `{"type":"layers","diff_ids":[...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// MUST be `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// sha256 of each *uncompressed* layer tar, bottom first.
    #[serde(default, deserialize_with = "null_as_default")]
    pub diff_ids: Vec<Digest>,
}

impl Default for RootFs {
    fn default() -> Self {
        Self {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        }
    }
}

/// One `history` entry (Go `ocispecs.History` field order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// RFC 3339 creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The instruction, e.g. `RUN /bin/sh -c make # buildkit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Comment, e.g. `buildkit.dockerfile.v0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True when the instruction made no layer (ENV, CMD, ...).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// Go's `system.DefaultPathEnv("linux")`, which BuildKit puts in `FROM scratch`.
pub const DEFAULT_LINUX_PATH: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl ImageConfig {
    /// The config BuildKit starts from for `FROM scratch`: platform fields,
    /// `rootfs.type = layers`, `WorkingDir = /` and the default `PATH`
    /// (dockerfile2llb `emptyImage`).
    pub fn scratch(platform: &Platform) -> Self {
        Self {
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            variant: (!platform.variant.is_empty()).then(|| platform.variant.clone()),
            config: RuntimeConfig {
                env: if platform.os == "windows" {
                    Vec::new()
                } else {
                    vec![DEFAULT_LINUX_PATH.to_string()]
                },
                working_dir: Some("/".into()),
                ..RuntimeConfig::default()
            },
            ..Self::default()
        }
    }

    /// The platform this config declares, normalised.
    pub fn platform(&self) -> Platform {
        Platform::new(
            &self.os,
            &self.architecture,
            self.variant.as_deref().unwrap_or(""),
        )
    }

    /// Append a layer: its diff ID and a history entry.
    pub fn push_layer(&mut self, diff_id: Digest, history: History) {
        self.rootfs.diff_ids.push(diff_id);
        self.history.push(History {
            empty_layer: false,
            ..history
        });
    }

    /// Parse a config blob (OCI or Docker media type), refusing more than
    /// [`MAX_DOCUMENT_SIZE`] bytes and configs whose `rootfs.type` is not `layers`.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ImageError> {
        super::check_size("image config", bytes.len() as u64)?;
        let cfg: Self = serde_json::from_slice(bytes).map_err(|e| ImageError::Parse {
            what: "image config",
            reason: e.to_string(),
        })?;
        if cfg.rootfs.kind != "layers" {
            return Err(ImageError::Invalid(format!(
                "image config rootfs.type is {:?}, the image spec requires \"layers\"",
                cfg.rootfs.kind
            )));
        }
        let layers = cfg.history.iter().filter(|h| !h.empty_layer).count();
        if !cfg.history.is_empty() && layers != cfg.rootfs.diff_ids.len() {
            tracing::debug!(
                layers,
                diff_ids = cfg.rootfs.diff_ids.len(),
                "history/diff_ids length mismatch (tolerated, as docker does)"
            );
        }
        Ok(cfg)
    }

    /// Canonical bytes as BuildKit writes them (compact, sorted top-level keys).
    pub fn to_json(&self) -> Result<Vec<u8>, JsonError> {
        json::to_vec(self)
    }
}

/// Format seconds since the Unix epoch as Go's `time.RFC3339Nano` in UTC
/// (`1970-01-01T00:00:00Z`), as used for `created` under `SOURCE_DATE_EPOCH`.
pub fn rfc3339_utc(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut s = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    );
    if nanos > 0 && nanos < 1_000_000_000 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_config_matches_buildkit_bytes() {
        let mut cfg = ImageConfig::scratch(&Platform::linux_amd64());
        cfg.created = Some(rfc3339_utc(0, 0));
        let diff = Digest::sha256_of(b"layer");
        cfg.push_layer(
            diff.clone(),
            History {
                created: Some(rfc3339_utc(0, 0)),
                created_by: Some("COPY a / # buildkit".into()),
                comment: Some("buildkit.dockerfile.v0".into()),
                ..History::default()
            },
        );
        let s = String::from_utf8(cfg.to_json().unwrap()).unwrap();
        assert_eq!(
            s,
            format!(
                "{{\"architecture\":\"amd64\",\"config\":{{\"Env\":[\"{DEFAULT_LINUX_PATH}\"],\"WorkingDir\":\"/\"}},\"created\":\"1970-01-01T00:00:00Z\",\"history\":[{{\"created\":\"1970-01-01T00:00:00Z\",\"created_by\":\"COPY a / # buildkit\",\"comment\":\"buildkit.dockerfile.v0\"}}],\"os\":\"linux\",\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[\"{diff}\"]}}}}"
            )
        );
        assert_eq!(ImageConfig::from_json(s.as_bytes()).unwrap(), cfg);
    }

    #[test]
    fn reads_docker_config_with_nulls_and_extensions() {
        let doc = br#"{"architecture":"arm64","variant":"v8","os":"linux","config":{"Hostname":"","Env":null,"Cmd":["sh"],"Healthcheck":{"Test":["CMD","true"],"Interval":1000000000},"OnBuild":null,"Shell":["/bin/bash","-c"],"Labels":null},"container_config":{},"rootfs":{"type":"layers","diff_ids":["sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]}}"#;
        let cfg = ImageConfig::from_json(doc).unwrap();
        assert_eq!(cfg.platform(), Platform::linux_arm64());
        assert_eq!(cfg.config.shell, ["/bin/bash", "-c"]);
        assert_eq!(cfg.config.healthcheck.unwrap().interval, 1_000_000_000);
    }

    #[test]
    fn refuses_bad_rootfs_and_oversized_and_garbage() {
        let e = ImageConfig::from_json(
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"zfs"}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("rootfs.type"), "{e}");
        let big = vec![b' '; MAX_DOCUMENT_SIZE as usize + 1];
        assert!(matches!(
            ImageConfig::from_json(&big),
            Err(ImageError::TooLarge { .. })
        ));
        let e = ImageConfig::from_json(br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:../x"]}}"#).unwrap_err();
        assert!(e.to_string().contains("invalid digest"), "{e}");
    }

    #[test]
    fn rfc3339_formats() {
        assert_eq!(rfc3339_utc(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(1_700_000_000, 0), "2023-11-14T22:13:20Z");
        assert_eq!(
            rfc3339_utc(951_782_400, 500_000_000),
            "2000-02-29T00:00:00.5Z"
        );
    }
}
