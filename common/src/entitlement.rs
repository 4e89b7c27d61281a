//! Entitlements: the privileges a build step may ask for only when both the user who starts
//! the build and the operator of the worker that runs it allow them (BuildKit's
//! `--allow` / buildkitd's `--allow-insecure-entitlement`, with the same names).
//!
//! - `network.host`: `RUN --network=host`, the worker's own network (its loopback, its
//!   link-local addresses, the cloud metadata service);
//! - `security.insecure`: `RUN --security=insecure`, a step without the sandbox's
//!   confinement.
//!
//! The allowed set is per build (client) and per worker (operator): it is not part of any
//! vertex key.

use crate::graph::op::{NetworkMode, Op, SecurityMode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// One entitlement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Entitlement {
    /// `network.host`: `RUN --network=host`.
    NetworkHost,
    /// `security.insecure`: `RUN --security=insecure`.
    SecurityInsecure,
}

impl Entitlement {
    /// Every entitlement, in order.
    pub const ALL: [Entitlement; 2] = [Entitlement::NetworkHost, Entitlement::SecurityInsecure];

    /// BuildKit's name (`network.host`, `security.insecure`).
    pub fn name(self) -> &'static str {
        match self {
            Entitlement::NetworkHost => "network.host",
            Entitlement::SecurityInsecure => "security.insecure",
        }
    }

    /// The Dockerfile flag that asks for it.
    pub fn flag(self) -> &'static str {
        match self {
            Entitlement::NetworkHost => "RUN --network=host",
            Entitlement::SecurityInsecure => "RUN --security=insecure",
        }
    }
}

impl fmt::Display for Entitlement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not an entitlement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown entitlement {0:?}: expected network.host or security.insecure")]
pub struct UnknownEntitlement(pub String);

impl FromStr for Entitlement {
    type Err = UnknownEntitlement;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Entitlement::ALL
            .into_iter()
            .find(|e| e.name() == s.trim())
            .ok_or_else(|| UnknownEntitlement(s.trim().to_string()))
    }
}

/// A set of entitlements (what a build or a worker allows, what a step needs).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Entitlements(BTreeSet<Entitlement>);

impl Entitlements {
    /// The empty set.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parse flag values, each a comma-separated list (`--allow a,b --allow c`). Empty
    /// items are ignored; an unknown name is an error.
    pub fn parse<S: AsRef<str>>(
        values: impl IntoIterator<Item = S>,
    ) -> Result<Self, UnknownEntitlement> {
        let mut set = BTreeSet::new();
        for v in values {
            for item in v.as_ref().split(',').filter(|i| !i.trim().is_empty()) {
                set.insert(item.parse()?);
            }
        }
        Ok(Entitlements(set))
    }

    /// What `op` needs: `network.host` for an exec on the host network,
    /// `security.insecure` for an insecure exec; nothing for other ops.
    pub fn required_by(op: &Op) -> Self {
        let mut set = BTreeSet::new();
        if let Op::Exec(e) = op {
            if e.network == NetworkMode::Host {
                set.insert(Entitlement::NetworkHost);
            }
            if e.security == SecurityMode::Insecure {
                set.insert(Entitlement::SecurityInsecure);
            }
        }
        Entitlements(set)
    }

    /// Add one.
    pub fn insert(&mut self, e: Entitlement) {
        self.0.insert(e);
    }

    /// Whether `e` is in the set.
    pub fn contains(&self, e: Entitlement) -> bool {
        self.0.contains(&e)
    }

    /// The members of `needed` missing from this set, in order.
    pub fn missing(&self, needed: &Entitlements) -> Vec<Entitlement> {
        needed.0.difference(&self.0).copied().collect()
    }

    /// Whether every member of `needed` is in this set.
    pub fn allows(&self, needed: &Entitlements) -> bool {
        needed.0.is_subset(&self.0)
    }

    /// No member.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The members, in order.
    pub fn iter(&self) -> impl Iterator<Item = Entitlement> + '_ {
        self.0.iter().copied()
    }
}

impl FromIterator<Entitlement> for Entitlements {
    fn from_iter<I: IntoIterator<Item = Entitlement>>(iter: I) -> Self {
        Entitlements(iter.into_iter().collect())
    }
}

impl fmt::Display for Entitlements {
    /// Comma-separated names, `none` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let names: Vec<&str> = self.0.iter().map(|e| e.name()).collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_repeated_and_comma_separated() {
        let set =
            Entitlements::parse(["network.host", "security.insecure,network.host"]).expect("parse");
        assert_eq!(set.to_string(), "network.host,security.insecure");
        assert!(Entitlements::parse([""]).expect("empty").is_empty());
        let e = Entitlements::parse(["network.hots"]).expect_err("unknown");
        assert_eq!(
            e.to_string(),
            "unknown entitlement \"network.hots\": expected network.host or security.insecure"
        );
        for e in Entitlement::ALL {
            assert_eq!(e.name().parse::<Entitlement>(), Ok(e));
        }
    }

    #[test]
    fn allows_and_missing() {
        let host: Entitlements = [Entitlement::NetworkHost].into_iter().collect();
        let both: Entitlements = Entitlement::ALL.into_iter().collect();
        assert!(both.allows(&host));
        assert!(!host.allows(&both));
        assert_eq!(host.missing(&both), vec![Entitlement::SecurityInsecure]);
        assert!(Entitlements::none().allows(&Entitlements::none()));
    }
}
