//! Generating the farm CA and role certificates (rcgen, ECDSA P-256 keys
//! from ring). Pure: returns PEM text; [`super::write_new_files`] writes it.

use super::role::{file_stem, role_uri, validate_name, Role};
use super::IdentityError;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use time::OffsetDateTime;

/// Days a worker, client or coordinator certificate is valid by default (`--days`).
pub const DEFAULT_LEAF_DAYS: u32 = 365;
/// Days the farm CA is valid: ten years. Every leaf it signs stops being accepted with it.
pub const CA_DAYS: u32 = 3650;
/// The most `--days` takes: a hundred years.
pub const MAX_DAYS: u32 = 36_500;
/// How far back `notBefore` is set, so a peer whose clock runs a little behind the issuer's
/// still accepts a certificate issued a moment ago.
const CLOCK_SKEW: Duration = Duration::from_secs(3600);

/// The validity period of a certificate (RFC 5280 §4.1.2.5: `notBefore`..`notAfter`,
/// inclusive; TLS peers refuse a certificate outside it with `certificate_expired`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// `notBefore`.
    pub not_before: SystemTime,
    /// `notAfter`.
    pub not_after: SystemTime,
}

impl Validity {
    /// Valid from an hour ago ([`CLOCK_SKEW`]) until `days` days from now. `days` must be
    /// 1..=[`MAX_DAYS`].
    pub fn days_from_now(days: u32) -> Result<Validity, IdentityError> {
        if !(1..=MAX_DAYS).contains(&days) {
            return Err(IdentityError::InvalidDays(days));
        }
        Ok(Validity::from_now(days))
    }

    /// Valid for [`DEFAULT_LEAF_DAYS`] from now.
    pub fn default_leaf() -> Validity {
        Validity::from_now(DEFAULT_LEAF_DAYS)
    }

    fn from_now(days: u32) -> Validity {
        let now = SystemTime::now();
        Validity {
            not_before: now - CLOCK_SKEW,
            not_after: now + Duration::from_secs(u64::from(days) * 86_400),
        }
    }
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn to_asn1_time(t: SystemTime) -> Result<OffsetDateTime, IdentityError> {
    OffsetDateTime::from_unix_timestamp(unix_secs(t)).map_err(gen_err)
}

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
    /// Days the coordinator's certificate is valid (the CA's are [`CA_DAYS`]).
    pub days: u32,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            sans: vec!["localhost".into(), "127.0.0.1".into()],
            days: DEFAULT_LEAF_DAYS,
        }
    }
}

fn gen_err(e: impl std::fmt::Display) -> IdentityError {
    IdentityError::Generate(e.to_string())
}

fn base_params(cn: &str, validity: Validity) -> Result<CertificateParams, IdentityError> {
    let mut p = CertificateParams::default();
    p.not_before = to_asn1_time(validity.not_before)?;
    p.not_after = to_asn1_time(validity.not_after)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "imgfarm");
    p.distinguished_name = dn;
    Ok(p)
}

/// Creates a farm CA (path length 0: it signs leaves only) and the
/// coordinator's certificate for `opts.sans`.
pub fn init_farm(opts: &InitOptions) -> Result<(CaMaterial, IssuedFiles), IdentityError> {
    let ca_key = KeyPair::generate().map_err(gen_err)?;
    let mut ca_params = base_params("imgfarm farm CA", Validity::days_from_now(CA_DAYS)?)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(gen_err)?;
    let ca = CaMaterial {
        cert_pem: ca_cert.pem(),
        key_pem: ca_key.serialize_pem(),
    };
    let validity = Validity::days_from_now(opts.days)?;
    let coordinator = issue_leaf(&ca, Role::Coordinator, "coordinator", &opts.sans, validity)?;
    Ok((ca, coordinator))
}

/// Issues a certificate for `role`/`name`, signed by the CA, valid for `validity`. `sans`
/// (DNS names or IPs) are used for the coordinator only.
pub fn issue_leaf(
    ca: &CaMaterial,
    role: Role,
    name: &str,
    sans: &[String],
    validity: Validity,
) -> Result<IssuedFiles, IdentityError> {
    validate_name(name)?;
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(gen_err)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(gen_err)?;

    let mut p = base_params(&format!("imgfarm {role} {name}"), validity)?;
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

    #[test]
    fn days_are_bounded_and_give_the_period() {
        for bad in [0, MAX_DAYS + 1] {
            assert!(matches!(
                Validity::days_from_now(bad),
                Err(IdentityError::InvalidDays(d)) if d == bad
            ));
        }
        let v = Validity::days_from_now(30).unwrap();
        let span = v.not_after.duration_since(v.not_before).unwrap();
        assert_eq!(span, Duration::from_secs(30 * 86_400) + CLOCK_SKEW);
    }

    #[test]
    fn the_certificate_carries_the_period() {
        let (ca, _) = init_farm(&InitOptions::default()).unwrap();
        let v = Validity::days_from_now(7).unwrap();
        let w = issue_leaf(&ca, Role::Worker, "w1", &[], v).unwrap();
        let pem = x509_parser::pem::parse_x509_pem(w.cert_pem.as_bytes())
            .unwrap()
            .1;
        let cert = pem.parse_x509().unwrap();
        assert_eq!(
            cert.validity().not_after.timestamp(),
            unix_secs(v.not_after)
        );
        assert_eq!(
            cert.validity().not_before.timestamp(),
            unix_secs(v.not_before)
        );
    }
}
