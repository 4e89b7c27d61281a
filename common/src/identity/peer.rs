//! Reading the role out of a (already CA-verified) peer certificate.

use super::role::{parse_role_uri, Role};
use super::IdentityError;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Who is on the other end of a connection, from its certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    /// Its role.
    pub role: Role,
    /// Its name (`coordinator` for the coordinator).
    pub name: String,
}

impl std::fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.role, self.name)
    }
}

/// A DER certificate's `notAfter` (RFC 5280 §4.1.2.5) as seconds since the Unix epoch, or
/// `None` when it does not parse. For the certificate-expiry metrics.
pub(super) fn certificate_not_after(der: &[u8]) -> Option<i64> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// Extracts the imgfarm role from a DER certificate. The certificate must
/// hold exactly one `imgfarm://role/...` URI SAN; zero or several are refused.
pub fn peer_identity_from_der(der: &[u8]) -> Result<PeerIdentity, IdentityError> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| IdentityError::NoRole(format!("unparsable certificate: {e}")))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::NoRole(format!("bad subjectAltName: {e}")))?
        .ok_or_else(|| IdentityError::NoRole("no subjectAltName extension".into()))?;
    let mut found = Vec::new();
    for name in &san.value.general_names {
        if let GeneralName::URI(uri) = name {
            if let Some(parsed) = parse_role_uri(uri) {
                found.push(parsed?);
            }
        }
    }
    match found.len() {
        1 => {
            let (role, name) = found.remove(0);
            Ok(PeerIdentity { role, name })
        }
        0 => Err(IdentityError::NoRole(
            "no imgfarm://role/ URI in subjectAltName".into(),
        )),
        n => Err(IdentityError::NoRole(format!(
            "{n} imgfarm role URIs in one certificate"
        ))),
    }
}
