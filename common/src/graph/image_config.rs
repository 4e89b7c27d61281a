//! The image config a stage accumulates, field for field as Docker records
//! it (docker image spec v1.2 `config` object plus `author` and `history`).
//! Config-only instructions (ENV, LABEL, USER, ...) change only this.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Docker's default PATH for Linux images, added when a stage has none
/// (BuildKit `system.DefaultPathEnv`).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Per-stage image configuration.
///
/// Every field is always serialised (no skipped fields, no internally
/// tagged enums) so the type also travels in non-self-describing formats
/// such as bincode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageConfig {
    /// `author` (MAINTAINER).
    #[serde(rename = "Author", default)]
    pub author: String,
    /// `User`.
    #[serde(rename = "User", default)]
    pub user: String,
    /// `ExposedPorts` keys, e.g. `80/tcp`.
    #[serde(rename = "ExposedPorts", default)]
    pub exposed_ports: BTreeSet<String>,
    /// `Env` as `KEY=value`, in definition order.
    #[serde(rename = "Env", default)]
    pub env: Vec<String>,
    /// `Entrypoint`; `None` when unset.
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`; `None` when unset (ENTRYPOINT resets an inherited CMD).
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    /// `Volumes` keys.
    #[serde(rename = "Volumes", default)]
    pub volumes: BTreeSet<String>,
    /// `WorkingDir`.
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: String,
    /// `Labels`.
    #[serde(rename = "Labels", default)]
    pub labels: BTreeMap<String, String>,
    /// `StopSignal`.
    #[serde(rename = "StopSignal", default)]
    pub stop_signal: String,
    /// `Healthcheck`.
    #[serde(rename = "Healthcheck", default)]
    pub healthcheck: Option<StageHealthcheck>,
    /// `OnBuild` trigger expressions.
    #[serde(rename = "OnBuild", default)]
    pub onbuild: Vec<String>,
    /// `Shell`.
    #[serde(rename = "Shell", default)]
    pub shell: Vec<String>,
    /// `ArgsEscaped`, set by CMD/ENTRYPOINT as BuildKit does.
    #[serde(rename = "ArgsEscaped", default)]
    pub args_escaped: bool,
    /// History entries added by this build (the base image's come first at export).
    #[serde(rename = "History", default)]
    pub history: Vec<HistoryEntry>,
}

/// One image history entry (OCI image config `history`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// `created_by`, e.g. `RUN /bin/sh -c make # buildkit`.
    pub created_by: String,
    /// `comment`.
    pub comment: String,
    /// `empty_layer`.
    pub empty_layer: bool,
}

impl StageConfig {
    /// Set or replace `key` in `Env`, keeping its position (BuildKit `addEnv`).
    pub fn set_env(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        match self
            .env
            .iter_mut()
            .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
        {
            Some(e) => *e = entry,
            None => self.env.push(entry),
        }
    }

    /// Value of `key` in `Env`.
    pub fn get_env(&self, key: &str) -> Option<&str> {
        self.env.iter().find_map(|e| match e.split_once('=') {
            Some((k, v)) if k == key => Some(v),
            _ => None,
        })
    }

    /// Append a history entry with BuildKit's comment.
    pub fn commit(&mut self, created_by: String, with_layer: bool) {
        self.history.push(HistoryEntry {
            created_by,
            comment: "buildkit.dockerfile.v0".into(),
            empty_layer: !with_layer,
        });
    }
}

/// The image config `Healthcheck` object (durations in nanoseconds, as Docker stores them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StageHealthcheck {
    /// `["NONE"]`, `["CMD", args...]` or `["CMD-SHELL", line]`.
    #[serde(rename = "Test")]
    pub test: Vec<String>,
    /// `--interval`, ns (0 = inherit).
    #[serde(rename = "Interval", default)]
    pub interval: i64,
    /// `--timeout`, ns.
    #[serde(rename = "Timeout", default)]
    pub timeout: i64,
    /// `--start-period`, ns.
    #[serde(rename = "StartPeriod", default)]
    pub start_period: i64,
    /// `--start-interval`, ns.
    #[serde(rename = "StartInterval", default)]
    pub start_interval: i64,
    /// `--retries`.
    #[serde(rename = "Retries", default)]
    pub retries: i64,
}
