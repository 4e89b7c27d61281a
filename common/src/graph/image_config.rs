//! The image config a stage accumulates, field for field as Docker records
//! it (docker image spec v1.2 `config` object plus `author` and `history`).
//! Config-only instructions (ENV, LABEL, USER, ...) change only this.

use crate::dockerfile::instructions::config::Healthcheck;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Docker's default PATH for Linux images, added when a stage has none
/// (BuildKit `system.DefaultPathEnv`).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Per-stage image configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `author` (MAINTAINER).
    #[serde(rename = "Author", default, skip_serializing_if = "String::is_empty")]
    pub author: String,
    /// `User`.
    #[serde(rename = "User", default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// `ExposedPorts` keys, e.g. `80/tcp`.
    #[serde(
        rename = "ExposedPorts",
        default,
        skip_serializing_if = "BTreeSet::is_empty"
    )]
    pub exposed_ports: BTreeSet<String>,
    /// `Env` as `KEY=value`, in definition order.
    #[serde(rename = "Env", default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// `Entrypoint`; `None` when unset.
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`; `None` when unset (ENTRYPOINT resets an inherited CMD).
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `Volumes` keys.
    #[serde(
        rename = "Volumes",
        default,
        skip_serializing_if = "BTreeSet::is_empty"
    )]
    pub volumes: BTreeSet<String>,
    /// `WorkingDir`.
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub working_dir: String,
    /// `Labels`.
    #[serde(rename = "Labels", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `StopSignal`.
    #[serde(
        rename = "StopSignal",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub stop_signal: String,
    /// `Healthcheck`.
    #[serde(
        rename = "Healthcheck",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub healthcheck: Option<Healthcheck>,
    /// `OnBuild` trigger expressions.
    #[serde(rename = "OnBuild", default, skip_serializing_if = "Vec::is_empty")]
    pub onbuild: Vec<String>,
    /// `Shell`.
    #[serde(rename = "Shell", default, skip_serializing_if = "Vec::is_empty")]
    pub shell: Vec<String>,
    /// `ArgsEscaped`, set by CMD/ENTRYPOINT as BuildKit does.
    #[serde(
        rename = "ArgsEscaped",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub args_escaped: bool,
    /// History entries added by this build (the base image's come first at export).
    #[serde(rename = "History", default, skip_serializing_if = "Vec::is_empty")]
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
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

impl ImageConfig {
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
