//! The version handshake and the session admission rules, as pure functions.
//!
//! Each side of a new stream first writes [`preamble`]: the magic `IMGF` and
//! its [`PROTOCOL_VERSION`] (u32 big-endian). Both read the other's preamble
//! with [`check_preamble`] before anything else, so a peer of another version
//! is refused with a message naming both versions and who must upgrade,
//! without trying to parse messages whose layout may differ.

use crate::identity::Role;
use crate::proto::messages::Hello;

/// Protocol version of this build. Bump it whenever a message changes shape
/// (3: the build context travels as chunk layers, `ContextBlob.chunks`; 4: a worker's
/// `Hello` says which entitlements its operator allows).
pub const PROTOCOL_VERSION: u32 = 4;

/// The 4 magic bytes at the start of every stream.
pub const MAGIC: [u8; 4] = *b"IMGF";

/// Length of the preamble: magic + u32 version.
pub const PREAMBLE_LEN: usize = 8;

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The peer does not speak the imgfarm protocol at all.
    #[error("peer is not an imgfarm endpoint (bad magic {0:02x?}): check the address and port")]
    BadMagic([u8; 4]),
    /// The peer speaks another version.
    #[error("peer speaks imgfarm protocol {theirs}, we speak {ours}: upgrade the {upgrade}")]
    VersionMismatch {
        /// The peer's version.
        theirs: u32,
        /// Ours.
        ours: u32,
        /// Which side is older and must be upgraded ("worker", "coordinator", ...).
        upgrade: String,
    },
    /// The hello claims a role or name other than the certificate's.
    #[error("hello claims {claimed_role} {claimed_name:?} but the TLS certificate is for {cert_role} {cert_name:?}")]
    IdentityMismatch {
        /// Role in the hello.
        claimed_role: Role,
        /// Name in the hello.
        claimed_name: String,
        /// Role in the certificate.
        cert_role: Role,
        /// Name in the certificate.
        cert_name: String,
    },
    /// The certificate's role may not open this kind of session.
    #[error("a {cert_role} certificate cannot {what}: issue a {needed} certificate with `imgfarm farm issue --{needed} NAME`")]
    RoleNotAllowed {
        /// The role in the peer's certificate.
        cert_role: Role,
        /// What it tried to do.
        what: &'static str,
        /// The role that would be allowed.
        needed: Role,
    },
}

/// The 8-byte preamble for `version` (normally [`PROTOCOL_VERSION`]).
pub fn preamble(version: u32) -> [u8; PREAMBLE_LEN] {
    let mut p = [0u8; PREAMBLE_LEN];
    p[..4].copy_from_slice(&MAGIC);
    p[4..].copy_from_slice(&version.to_be_bytes());
    p
}

/// Checks the peer's preamble against ours. `peer_role` names the peer in the
/// error ("upgrade the worker") when the peer is older; `our_role` when we are.
pub fn check_preamble(
    theirs: [u8; PREAMBLE_LEN],
    ours: u32,
    peer_role: Role,
    our_role: Role,
) -> Result<u32, HandshakeError> {
    let mut magic = [0u8; 4];
    magic.copy_from_slice(&theirs[..4]);
    if magic != MAGIC {
        return Err(HandshakeError::BadMagic(magic));
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&theirs[4..]);
    let version = u32::from_be_bytes(v);
    if version != ours {
        let older = if version < ours { peer_role } else { our_role };
        return Err(HandshakeError::VersionMismatch {
            theirs: version,
            ours,
            upgrade: older.to_string(),
        });
    }
    Ok(version)
}

/// Admission of a control session: the hello must repeat the certificate's
/// role and name, and the role must be one that opens control sessions on
/// the coordinator (workers register, clients submit; a coordinator
/// certificate never dials in).
pub fn check_hello(hello: &Hello, cert_role: Role, cert_name: &str) -> Result<(), HandshakeError> {
    if hello.role != cert_role || hello.name != cert_name {
        return Err(HandshakeError::IdentityMismatch {
            claimed_role: hello.role,
            claimed_name: hello.name.clone(),
            cert_role,
            cert_name: cert_name.to_string(),
        });
    }
    check_role_may(cert_role, Purpose::Session)
}

/// What a peer asks to do, for [`check_role_may`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Open a control session (register as worker or as client).
    Session,
    /// Register as a worker and receive vertices.
    RegisterWorker,
    /// Submit, cancel or query builds.
    SubmitBuild,
    /// Upload or download blobs.
    Blobs,
}

/// The role policy: only workers register as workers, only clients submit
/// builds, both move blobs, a coordinator certificate does none of these.
pub fn check_role_may(role: Role, purpose: Purpose) -> Result<(), HandshakeError> {
    let (allowed, what, needed) = match purpose {
        Purpose::RegisterWorker => (role == Role::Worker, "register as a worker", Role::Worker),
        Purpose::SubmitBuild => (role == Role::Client, "submit builds", Role::Client),
        Purpose::Session => (
            matches!(role, Role::Worker | Role::Client),
            "open a session with the coordinator",
            Role::Worker,
        ),
        Purpose::Blobs => (
            matches!(role, Role::Worker | Role::Client),
            "transfer blobs",
            Role::Client,
        ),
    };
    if allowed {
        Ok(())
    } else {
        Err(HandshakeError::RoleNotAllowed {
            cert_role: role,
            what,
            needed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::messages::CacheSummary;

    fn hello(role: Role, name: &str) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            role,
            name: name.into(),
            software: "test".into(),
            native_platforms: vec![],
            emulated_platforms: vec![],
            slots: 0,
            cache_summary: CacheSummary::default(),
            entitlements: Default::default(),
        }
    }

    #[test]
    fn same_version_passes() {
        assert_eq!(
            check_preamble(
                preamble(PROTOCOL_VERSION),
                PROTOCOL_VERSION,
                Role::Worker,
                Role::Coordinator
            ),
            Ok(PROTOCOL_VERSION)
        );
    }

    #[test]
    fn older_peer_must_upgrade() {
        let mut p = preamble(PROTOCOL_VERSION);
        p[4..].copy_from_slice(&1u32.to_be_bytes());
        let e = check_preamble(p, 2, Role::Worker, Role::Coordinator).unwrap_err();
        assert_eq!(
            e.to_string(),
            "peer speaks imgfarm protocol 1, we speak 2: upgrade the worker"
        );
    }

    #[test]
    fn newer_peer_means_we_upgrade() {
        let mut p = preamble(PROTOCOL_VERSION);
        p[4..].copy_from_slice(&2u32.to_be_bytes());
        let e = check_preamble(p, 1, Role::Worker, Role::Coordinator).unwrap_err();
        assert_eq!(
            e.to_string(),
            "peer speaks imgfarm protocol 2, we speak 1: upgrade the coordinator"
        );
    }

    #[test]
    fn bad_magic() {
        let e = check_preamble(*b"HTTP/1.1", 1, Role::Worker, Role::Coordinator).unwrap_err();
        assert!(matches!(e, HandshakeError::BadMagic(_)));
    }

    #[test]
    fn hello_must_match_certificate() {
        assert!(check_hello(&hello(Role::Worker, "w1"), Role::Worker, "w1").is_ok());
        let e = check_hello(&hello(Role::Worker, "w1"), Role::Client, "w1").unwrap_err();
        assert!(matches!(e, HandshakeError::IdentityMismatch { .. }));
        let e = check_hello(&hello(Role::Worker, "w2"), Role::Worker, "w1").unwrap_err();
        assert!(matches!(e, HandshakeError::IdentityMismatch { .. }));
        let e = check_hello(
            &hello(Role::Coordinator, "coordinator"),
            Role::Coordinator,
            "coordinator",
        )
        .unwrap_err();
        assert!(matches!(e, HandshakeError::RoleNotAllowed { .. }));
    }

    #[test]
    fn role_policy() {
        assert!(check_role_may(Role::Worker, Purpose::RegisterWorker).is_ok());
        assert!(check_role_may(Role::Client, Purpose::RegisterWorker).is_err());
        assert!(check_role_may(Role::Client, Purpose::SubmitBuild).is_ok());
        assert!(check_role_may(Role::Worker, Purpose::SubmitBuild).is_err());
        assert!(check_role_may(Role::Coordinator, Purpose::Blobs).is_err());
    }
}
