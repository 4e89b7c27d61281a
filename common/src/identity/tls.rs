//! rustls configurations for farm endpoints: TLS 1.3 only, the ring
//! provider, the farm CA as the only root on both sides, client
//! certificates required (mutual TLS).

use super::tls_dir::Credentials;
use super::IdentityError;
use crate::proto::ALPN;
use rustls::crypto::ring::default_provider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::sync::Arc;

fn tls_err(e: impl std::fmt::Display) -> IdentityError {
    IdentityError::Tls(e.to_string())
}

fn farm_roots(creds: &Credentials) -> Result<RootCertStore, IdentityError> {
    let mut roots = RootCertStore::empty();
    for ca in &creds.ca {
        roots.add(ca.clone()).map_err(tls_err)?;
    }
    Ok(roots)
}

/// The coordinator's server config: presents `creds` and requires a client
/// certificate chaining to the farm CA (webpki verification with the farm CA
/// as sole root, `clientAuth` EKU enforced). The peer's role is read from its
/// certificate afterwards, per stream purpose.
pub fn server_config(creds: &Credentials) -> Result<ServerConfig, IdentityError> {
    let provider = Arc::new(default_provider());
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(farm_roots(creds)?), provider.clone())
            .build()
            .map_err(tls_err)?;
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(creds.chain.clone(), creds.key.clone_key())
        .map_err(tls_err)?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// A worker's or client's config: trusts only the farm CA (`serverAuth`
/// EKU enforced, so only the coordinator's certificate passes) and presents
/// `creds` as its client certificate.
pub fn client_config(creds: &Credentials) -> Result<ClientConfig, IdentityError> {
    let provider = Arc::new(default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_root_certificates(farm_roots(creds)?)
        .with_client_auth_cert(creds.chain.clone(), creds.key.clone_key())
        .map_err(tls_err)?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}
