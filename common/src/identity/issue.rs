//! Generating the farm CA and role certificates (rcgen, ECDSA P-256 keys
//! from ring). Pure: returns PEM text; [`super::write_new_files`] writes it.

use super::role::{file_stem, role_uri, validate_name, Role};
use super::IdentityError;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// How long certificates are valid, in years from the start of this year.
const VALID_YEARS: i32 = 10;

/// The CA certificate and its private key, as PEM.
#[derive(Debug, Clone)]
pub struct CaMaterial {
    /// `ca.crt` content.
    pub cert_pem: String,
    /// `ca.key` content (PKCS#8).
    pub key_pem: String,
}

/// A certificate and key issued for one role.
#[derive(Debug, Clone)]
pub struct IssuedFiles {
    /// Base file name without extension (`coordinator`, `worker-NAME`, `client-NAME`).
    pub stem: String,
    /// `.crt` content.
    pub cert_pem: String,
    /// `.key` content (PKCS#8).
    pub key_pem: String,
}

/// Options of `imgfarm farm init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// DNS names and IP addresses the coordinator is reached by.
    pub sans: Vec<String>,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            sans: vec!["localhost".into(), "127.0.0.1".into()],
        }
    }
}

fn gen_err(e: impl std::fmt::Display) -> IdentityError {
    IdentityError::Generate(e.to_string())
}

fn this_year() -> i32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Days to years, civil-calendar accurate enough for Jan 1 of the current year.
    1970 + i32::try_from(secs / 31_556_952).unwrap_or(0)
}

fn base_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let year = this_year();
    p.not_before = date_time_ymd(year, 1, 1);
    p.not_after = date_time_ymd(year + VALID_YEARS, 1, 1);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "imgfarm");
    p.distinguished_name = dn;
    p
}

/// Creates a farm CA (path length 0: it signs leaves only) and the
/// coordinator's certificate for `opts.sans`.
pub fn init_farm(opts: &InitOptions) -> Result<(CaMaterial, IssuedFiles), IdentityError> {
    let ca_key = KeyPair::generate().map_err(gen_err)?;
    let mut ca_params = base_params("imgfarm farm CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(gen_err)?;
    let ca = CaMaterial {
        cert_pem: ca_cert.pem(),
        key_pem: ca_key.serialize_pem(),
    };
    let coordinator = issue_leaf(&ca, Role::Coordinator, "coordinator", &opts.sans)?;
    Ok((ca, coordinator))
}

/// Issues a certificate for `role`/`name`, signed by the CA. `sans` (DNS names
/// or IPs) are used for the coordinator only.
pub fn issue_leaf(
    ca: &CaMaterial,
    role: Role,
    name: &str,
    sans: &[String],
) -> Result<IssuedFiles, IdentityError> {
    validate_name(name)?;
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(gen_err)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(gen_err)?;

    let mut p = base_params(&format!("imgfarm {role} {name}"));
    p.use_authority_key_identifier_extension = true;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let uri = role_uri(role, name).try_into().map_err(gen_err)?;
    p.subject_alt_names.push(SanType::URI(uri));
    match role {
        Role::Coordinator => {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            if sans.is_empty() {
                return Err(IdentityError::InvalidSan(String::new()));
            }
            for s in sans {
                p.subject_alt_names.push(parse_san(s)?);
            }
        }
        Role::Worker | Role::Client => {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
    }
    let key = KeyPair::generate().map_err(gen_err)?;
    let cert = p.signed_by(&key, &issuer).map_err(gen_err)?;
    Ok(IssuedFiles {
        stem: file_stem(role, name),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn parse_san(s: &str) -> Result<SanType, IdentityError> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !ok {
        return Err(IdentityError::InvalidSan(s.to_string()));
    }
    Ok(SanType::DnsName(
        s.try_into()
            .map_err(|_| IdentityError::InvalidSan(s.to_string()))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sans_are_checked() {
        assert!(matches!(parse_san("127.0.0.1"), Ok(SanType::IpAddress(_))));
        assert!(matches!(parse_san("::1"), Ok(SanType::IpAddress(_))));
        assert!(matches!(parse_san("farm.example"), Ok(SanType::DnsName(_))));
        for bad in ["", "a..b", "-a", "a b", "x/y"] {
            assert!(parse_san(bad).is_err(), "{bad:?}");
        }
    }
}
