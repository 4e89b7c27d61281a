//! Roles and the role URI written into certificates.

use super::IdentityError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Scheme and path prefix of the role URI SAN: `imgfarm://role/<role>/<name>`.
pub const ROLE_URI_PREFIX: &str = "imgfarm://role/";

/// What a certificate holder is in the farm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// The coordinator (TLS server).
    Coordinator,
    /// A worker: registers and runs vertices.
    Worker,
    /// A client: submits builds and queries the farm.
    Client,
}

impl Role {
    /// The lower-case word used in URIs, file names and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Worker => "worker",
            Role::Client => "client",
        }
    }

    fn from_word(s: &str) -> Option<Self> {
        match s {
            "coordinator" => Some(Role::Coordinator),
            "worker" => Some(Role::Worker),
            "client" => Some(Role::Client),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks a worker/client name: 1-63 characters of `[A-Za-z0-9._-]`,
/// starting with a letter or digit (so it is safe in file names and URIs).
pub fn validate_name(name: &str) -> Result<(), IdentityError> {
    let bad = |reason| IdentityError::InvalidName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() || name.len() > 63 {
        return Err(bad("length must be 1 to 63"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(bad("must start with a letter or digit"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(bad("contains a character outside a-z A-Z 0-9 . _ -"));
    }
    Ok(())
}

/// The file stem of an endpoint's `.crt`/`.key` pair in a TLS directory:
/// `coordinator` for the coordinator, else `ROLE-NAME`.
pub(super) fn file_stem(role: Role, name: &str) -> String {
    match role {
        Role::Coordinator => Role::Coordinator.as_str().to_string(),
        Role::Worker | Role::Client => format!("{role}-{name}"),
    }
}

/// The role URI for `role` and `name`.
pub fn role_uri(role: Role, name: &str) -> String {
    format!("{ROLE_URI_PREFIX}{role}/{name}")
}

/// Parses a role URI. `None` if it is not an imgfarm role URI at all; an
/// error if it is one but malformed.
pub fn parse_role_uri(uri: &str) -> Option<Result<(Role, String), IdentityError>> {
    let rest = uri.strip_prefix(ROLE_URI_PREFIX)?;
    let parsed = rest
        .split_once('/')
        .and_then(|(r, n)| Role::from_word(r).map(|role| (role, n.to_string())))
        .ok_or_else(|| IdentityError::NoRole(format!("malformed role URI {uri:?}")))
        .and_then(|(role, name)| validate_name(&name).map(|()| (role, name)));
    Some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_round_trip() {
        let uri = role_uri(Role::Worker, "arm-1");
        assert_eq!(uri, "imgfarm://role/worker/arm-1");
        assert_eq!(
            parse_role_uri(&uri).unwrap().unwrap(),
            (Role::Worker, "arm-1".to_string())
        );
    }

    #[test]
    fn foreign_and_malformed_uris() {
        assert!(parse_role_uri("https://example.invalid/").is_none());
        assert!(parse_role_uri("imgfarm://role/admin/x").unwrap().is_err());
        assert!(parse_role_uri("imgfarm://role/worker/a/b")
            .unwrap()
            .is_err());
        assert!(parse_role_uri("imgfarm://role/worker/").unwrap().is_err());
    }

    #[test]
    fn names() {
        assert!(validate_name("w1.example_x-2").is_ok());
        for bad in ["", "-x", ".x", "a/b", "a b", &"x".repeat(64), "é"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
