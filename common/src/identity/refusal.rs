//! Why a certificate was refused in the mutual-TLS handshake, in words an
//! operator can act on.
//!
//! rustls turns each verification failure into a TLS alert (RFC 8446 §6.2)
//! that QUIC carries as the crypto error `0x100 + alert` in its
//! CONNECTION_CLOSE frame, so both ends know the cause: the side that
//! refused from its own error, the refused side from the alert it received.

use std::fmt;

/// What was wrong with a refused certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertProblem {
    /// Not signed by the trusted CA (`unknown_ca`): another farm's certificate.
    UnknownCa,
    /// Expired or not valid yet (`certificate_expired`).
    Expired,
    /// Wrong extended key usage for its use (`unsupported_certificate`),
    /// e.g. the coordinator's certificate used to dial in.
    WrongUsage,
    /// Signature does not verify or uses an unsupported algorithm
    /// (`decrypt_error`): usually another farm's CA of the same name.
    BadSignature,
    /// Malformed, or not issued for the name dialled (`bad_certificate`).
    BadCertificate,
    /// Revoked (`certificate_revoked`).
    Revoked,
    /// No certificate was presented (`certificate_required`).
    Missing,
    /// Verified, but it carries no usable imgfarm role URI.
    NoRole,
    /// Refused for another reason (`certificate_unknown`, `access_denied`).
    Other,
}

/// TLS alert descriptions (RFC 8446 §6.2) that concern certificates.
mod alert {
    pub const BAD_CERTIFICATE: u8 = 42;
    pub const UNSUPPORTED_CERTIFICATE: u8 = 43;
    pub const CERTIFICATE_REVOKED: u8 = 44;
    pub const CERTIFICATE_EXPIRED: u8 = 45;
    pub const CERTIFICATE_UNKNOWN: u8 = 46;
    pub const UNKNOWN_CA: u8 = 48;
    pub const ACCESS_DENIED: u8 = 49;
    pub const DECRYPT_ERROR: u8 = 51;
    pub const CERTIFICATE_REQUIRED: u8 = 116;
}

impl CertProblem {
    /// The problem a TLS alert reports; `None` for alerts that are not
    /// about a certificate (protocol version, ALPN, internal errors).
    pub fn from_alert(code: u8) -> Option<Self> {
        Some(match code {
            alert::UNKNOWN_CA => Self::UnknownCa,
            alert::CERTIFICATE_EXPIRED => Self::Expired,
            alert::UNSUPPORTED_CERTIFICATE => Self::WrongUsage,
            alert::DECRYPT_ERROR => Self::BadSignature,
            alert::BAD_CERTIFICATE => Self::BadCertificate,
            alert::CERTIFICATE_REVOKED => Self::Revoked,
            alert::CERTIFICATE_REQUIRED => Self::Missing,
            alert::CERTIFICATE_UNKNOWN | alert::ACCESS_DENIED => Self::Other,
            _ => return None,
        })
    }

    /// What is wrong, as the predicate of a sentence about the certificate
    /// ("it …", "its certificate …"); `ca` names the trusted CA.
    pub fn describe(self, ca: &str) -> Described<'_> {
        Described { problem: self, ca }
    }
}

/// [`CertProblem::describe`]'s text.
#[derive(Debug, Clone, Copy)]
pub struct Described<'a> {
    problem: CertProblem,
    ca: &'a str,
}

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problem {
            CertProblem::UnknownCa => write!(f, "is not signed by {}", self.ca),
            CertProblem::Expired => f.write_str(
                "has expired or is not valid yet (check both clocks, or issue a new one)",
            ),
            CertProblem::WrongUsage => f.write_str(
                "has the wrong extended key usage for this use (a certificate of another role)",
            ),
            // Two farms made by `imgfarm farm init` have CAs of the same
            // name, so another farm's certificate fails here, not as unknown.
            CertProblem::BadSignature => write!(f, "is not signed by {}", self.ca),
            CertProblem::BadCertificate => {
                f.write_str("is malformed or not issued for the name or address dialled")
            }
            CertProblem::Revoked => f.write_str("has been revoked"),
            CertProblem::Missing => f.write_str("was not presented"),
            CertProblem::NoRole => f.write_str("carries no valid imgfarm role"),
            CertProblem::Other => f.write_str("was not accepted"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_alerts_map_to_problems() {
        assert_eq!(CertProblem::from_alert(48), Some(CertProblem::UnknownCa));
        assert_eq!(CertProblem::from_alert(45), Some(CertProblem::Expired));
        assert_eq!(CertProblem::from_alert(43), Some(CertProblem::WrongUsage));
        assert_eq!(
            CertProblem::from_alert(42),
            Some(CertProblem::BadCertificate)
        );
        assert_eq!(CertProblem::from_alert(116), Some(CertProblem::Missing));
        assert_eq!(CertProblem::from_alert(46), Some(CertProblem::Other));
        // handshake_failure, protocol_version, no_application_protocol: not certificates.
        for other in [40, 70, 80, 120] {
            assert_eq!(CertProblem::from_alert(other), None, "{other}");
        }
    }

    #[test]
    fn descriptions_read_as_sentences() {
        let d = |p: CertProblem| format!("it {}", p.describe("the farm's CA"));
        assert_eq!(
            d(CertProblem::UnknownCa),
            "it is not signed by the farm's CA"
        );
        // Another farm's CA of the same name: the signature fails, same words.
        assert_eq!(
            d(CertProblem::BadSignature),
            "it is not signed by the farm's CA"
        );
        assert!(d(CertProblem::Expired).starts_with("it has expired"));
    }
}
