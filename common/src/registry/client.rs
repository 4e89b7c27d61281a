//! The async registry client (OCI distribution spec v1.1): per-registry HTTP
//! clients with their TLS roots, scheme choice (https, or http for localhost
//! and insecure registries, as docker does), auth (anonymous, Basic, Bearer
//! token flow) and retries. Pull and push live in `pull.rs` and `push.rs`.

use super::challenge::{parse_challenge, parse_token_response, Challenge, MAX_TOKEN_RESPONSE};
use super::credentials::{Credential, CredentialSources, Secret};
use super::error::{RegistryError, Result};
use super::retry::{parse_retry_after, Outcome, RetryPolicy};
use super::tls;
use crate::oci::Digest;
use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode, Url};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Default bound on manifest and index documents (4 MiB, as containerd).
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;
/// How long the https probe of a registry that may fall back to http waits.
const HTTPS_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default number of blobs transferred at once.
pub const DEFAULT_PARALLEL: usize = 4;

/// How blobs are uploaded (distribution spec "Pushing blobs").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadMode {
    /// `POST` then one `PUT ?digest=` carrying the whole blob.
    Monolithic,
    /// `POST`, `PATCH` chunks with `Content-Range`, then `PUT ?digest=`.
    Chunked {
        /// Bytes per PATCH.
        chunk_size: u64,
    },
    /// Monolithic up to `threshold` bytes, chunked above.
    Auto {
        /// Largest blob sent monolithically.
        threshold: u64,
        /// Bytes per PATCH for bigger blobs.
        chunk_size: u64,
    },
}

impl Default for UploadMode {
    fn default() -> Self {
        UploadMode::Auto {
            threshold: 64 * 1024 * 1024,
            chunk_size: 16 * 1024 * 1024,
        }
    }
}

/// Client settings. [`RegistryConfig::from_env`] gives docker's defaults.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Credential files to search.
    pub credentials: CredentialSources,
    /// Credentials that win over the files, by registry (`localhost:5000`).
    pub explicit_credentials: HashMap<String, Credential>,
    /// certs.d roots searched for `<host>/*.crt`.
    pub certs_dirs: Vec<PathBuf>,
    /// Registries (`host` or `host:port`) that may use plain http.
    pub insecure_registries: Vec<String>,
    /// Retry policy for transient failures.
    pub retry: RetryPolicy,
    /// Blobs transferred at once.
    pub max_parallel: usize,
    /// Bound on manifests and indexes.
    pub max_manifest_bytes: u64,
    /// Blob upload mode.
    pub upload: UploadMode,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Read timeout (between bytes).
    pub read_timeout: Duration,
}

impl Default for RegistryConfig {
    /// No credentials, no certs.d, default limits (tests start here).
    fn default() -> Self {
        Self {
            credentials: CredentialSources::default(),
            explicit_credentials: HashMap::new(),
            certs_dirs: Vec::new(),
            insecure_registries: Vec::new(),
            retry: RetryPolicy::default(),
            max_parallel: DEFAULT_PARALLEL,
            max_manifest_bytes: MAX_MANIFEST_BYTES,
            upload: UploadMode::default(),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(120),
        }
    }
}

impl RegistryConfig {
    /// Docker's defaults from the environment: credentials from docker and podman
    /// files, certs.d in the docker config dir and `/etc/docker/certs.d`.
    pub fn from_env() -> Self {
        let docker_dir = super::credentials::docker_config_dir();
        Self {
            credentials: CredentialSources::from_env(),
            certs_dirs: tls::default_certs_dirs(docker_dir.as_deref()),
            ..Self::default()
        }
    }
}

/// A distribution-spec client. Cheap to clone; share one per process so
/// connections, tokens and cross-repo mount knowledge are reused.
#[derive(Clone)]
pub struct RegistryClient {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) config: RegistryConfig,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    /// Blob digest → repositories (`registry`, `repository`) known to hold it,
    /// for cross-repo mounts.
    sources: Mutex<HashMap<Digest, BTreeSet<(String, String)>>>,
}

/// Per-registry state.
pub(super) struct Host {
    /// Registry name as in references (`docker.io`, `localhost:5000`).
    pub(super) registry: String,
    /// Host serving the API.
    api_host: String,
    http: reqwest::Client,
    base: tokio::sync::OnceCell<Url>,
    credential: Option<Credential>,
    auth: tokio::sync::Mutex<AuthState>,
}

#[derive(Default)]
struct AuthState {
    mode: AuthMode,
    tokens: HashMap<String, (String, Instant)>,
}

#[derive(Default, Clone)]
enum AuthMode {
    #[default]
    Anonymous,
    Basic,
    Bearer {
        realm: Url,
        service: Option<String>,
    },
}

/// A request body that can be produced again for a retry.
#[derive(Clone)]
pub(super) enum Body {
    Empty,
    Bytes(bytes::Bytes),
    /// `len` bytes of a file from `offset`.
    File {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
}

/// What a request is about, for error messages.
#[derive(Clone, Copy)]
pub(super) enum Subject<'a> {
    Manifest(&'a str),
    Blob(&'a str, &'a Digest),
    Other,
}

/// One request, repeatable.
pub(super) struct Req<'a> {
    pub(super) method: Method,
    pub(super) url: Url,
    pub(super) headers: Vec<(HeaderName, HeaderValue)>,
    pub(super) body: Body,
    /// Token scopes the request needs.
    pub(super) scopes: &'a [String],
    /// Repository, for messages.
    pub(super) repository: &'a str,
    /// Is this a push-side request (for "access denied" wording)?
    pub(super) push: bool,
}

impl RegistryClient {
    /// A client with `config`.
    pub fn new(config: RegistryConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                hosts: Mutex::new(HashMap::new()),
                sources: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &RegistryConfig {
        &self.inner.config
    }

    /// Remember that `registry/repository` holds `digest` (used for cross-repo mounts).
    pub fn record_source(&self, digest: &Digest, registry: &str, repository: &str) {
        if let Ok(mut m) = self.inner.sources.lock() {
            m.entry(digest.clone())
                .or_default()
                .insert((registry.to_string(), repository.to_string()));
        }
    }

    /// Repositories of `registry` other than `repository` known to hold `digest`.
    pub(super) fn mount_candidates(
        &self,
        digest: &Digest,
        registry: &str,
        repository: &str,
    ) -> Vec<String> {
        let Ok(m) = self.inner.sources.lock() else {
            return Vec::new();
        };
        m.get(digest)
            .map(|s| {
                s.iter()
                    .filter(|(reg, repo)| reg == registry && repo != repository)
                    .map(|(_, repo)| repo.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The state for `registry`, created on first use (TLS roots, credentials).
    pub(super) fn host(&self, registry: &str) -> Result<Arc<Host>> {
        if let Some(h) = self
            .inner
            .hosts
            .lock()
            .ok()
            .and_then(|m| m.get(registry).cloned())
        {
            return Ok(h);
        }
        let cfg = &self.inner.config;
        let api_host = super::reference::api_host(registry).to_string();
        let mut cas = tls::registry_cas(registry, &cfg.certs_dirs)?;
        if api_host != registry {
            cas.extend(tls::registry_cas(&api_host, &cfg.certs_dirs)?);
        }
        let tls_config = tls::client_config(registry, &cas)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config)
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.read_timeout)
            .user_agent(concat!("imgfarm/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .build()
            .map_err(|e| tls::TlsError::Config {
                host: registry.to_string(),
                reason: error_chain(&e),
            })?;
        let credential = match cfg.explicit_credentials.get(registry) {
            Some(c) => Some(c.clone()),
            None => cfg.credentials.lookup(registry)?,
        };
        let host = Arc::new(Host {
            registry: registry.to_string(),
            api_host,
            http,
            base: tokio::sync::OnceCell::new(),
            credential,
            auth: tokio::sync::Mutex::new(AuthState::default()),
        });
        let mut hosts = self
            .inner
            .hosts
            .lock()
            .map_err(|_| RegistryError::Store("registry host table poisoned".into()))?;
        Ok(hosts.entry(registry.to_string()).or_insert(host).clone())
    }

    /// `scheme://host/` for `host`, found by pinging `/v2/` once: https first;
    /// http only for localhost/loopback/insecure registries when https fails.
    pub(super) async fn base_url(&self, host: &Host) -> Result<Url> {
        host.base.get_or_try_init(|| self.ping(host)).await.cloned()
    }

    async fn ping(&self, host: &Host) -> Result<Url> {
        let https = parse_url(&format!("https://{}/", host.api_host), &host.registry)?;
        let plain_ok =
            tls::allows_plain_http(&host.api_host, &self.inner.config.insecure_registries)
                || tls::allows_plain_http(&host.registry, &self.inner.config.insecure_registries);
        // When http is a fallback, don't let a silent plain server stall the https probe.
        let probe_timeout = plain_ok.then_some(HTTPS_PROBE_TIMEOUT);
        let https_err = match self.ping_one(host, &https, probe_timeout).await {
            Ok(()) => return Ok(https),
            Err(e) => e,
        };
        if !plain_ok {
            return Err(RegistryError::Unreachable {
                url: format!("{https}v2/"),
                attempts: 1,
                reason: format!(
                    "{https_err}; if the registry uses a private CA, put it in \
                     <docker config>/certs.d/{}/ca.crt; for a plain-http registry add it to \
                     the insecure registries",
                    host.registry
                ),
            });
        }
        let http = parse_url(&format!("http://{}/", host.api_host), &host.registry)?;
        match self.ping_one(host, &http, None).await {
            Ok(()) => Ok(http),
            Err(http_err) => Err(RegistryError::Unreachable {
                url: format!("{https}v2/"),
                attempts: 1,
                reason: format!("https: {https_err}; http: {http_err}"),
            }),
        }
    }

    /// GET `/v2/`: any HTTP answer means the scheme works; a 401 teaches the auth mode.
    async fn ping_one(
        &self,
        host: &Host,
        base: &Url,
        timeout: Option<Duration>,
    ) -> std::result::Result<(), String> {
        let url = base.join("v2/").map_err(|e| e.to_string())?;
        let mut rb = host.http.get(url);
        if let Some(t) = timeout {
            rb = rb.timeout(t);
        }
        let resp = rb.send().await.map_err(|e| error_chain(&e))?;
        // A registry answers /v2/ with 200 or 401 (distribution spec "Determining
        // support"); anything else (e.g. a TLS server's 400 to plain http) is not one.
        let api_header = resp
            .headers()
            .contains_key("docker-distribution-api-version");
        if !matches!(resp.status(), StatusCode::OK | StatusCode::UNAUTHORIZED) && !api_header {
            return Err(format!(
                "not a registry answer: HTTP {} from {base}v2/",
                resp.status()
            ));
        }
        if resp.status() == StatusCode::UNAUTHORIZED {
            if let Some(ch) = header_str(resp.headers(), WWW_AUTHENTICATE) {
                if let Ok(ch) = parse_challenge(&ch) {
                    let mut st = host.auth.lock().await;
                    st.mode = match ch {
                        Challenge::Basic => AuthMode::Basic,
                        Challenge::Bearer { realm, service, .. } => match Url::parse(&realm) {
                            Ok(realm) => AuthMode::Bearer { realm, service },
                            Err(_) => AuthMode::Anonymous,
                        },
                    };
                }
            }
        }
        Ok(())
    }

    /// Send `req` with auth and retries. Returns any response that is not a
    /// 401 or a retryable status; the caller interprets the status.
    pub(super) async fn send(&self, host: &Host, req: &Req<'_>) -> Result<Response> {
        let policy = self.inner.config.retry;
        let mut attempt: u32 = 0;
        let mut reauthed = false;
        loop {
            attempt += 1;
            let auth = if same_authority(&req.url, &self.base_url(host).await?) {
                self.auth_header(host, req.scopes).await?
            } else {
                None
            };
            let mut rb = host.http.request(req.method.clone(), req.url.clone());
            for (k, v) in &req.headers {
                rb = rb.header(k, v);
            }
            if let Some(a) = &auth {
                rb = rb.header(AUTHORIZATION, a);
            }
            rb = match &req.body {
                Body::Empty => rb,
                Body::Bytes(b) => rb.body(b.clone()),
                Body::File { path, offset, len } => rb
                    .header(reqwest::header::CONTENT_LENGTH, *len)
                    .body(file_body(path, *offset, *len).await?),
            };
            let result = rb.send().await;
            let resp = match result {
                Ok(r) => r,
                Err(e) => {
                    let transient =
                        e.is_connect() || e.is_timeout() || e.is_request() || e.is_body();
                    if transient && !is_tls_error(&e) {
                        if let Some(d) = policy.next_delay(attempt, None) {
                            tracing::debug!(url = %strip_query(&req.url), error = %error_chain(&e), "retrying");
                            tokio::time::sleep(d).await;
                            continue;
                        }
                    }
                    return Err(RegistryError::Unreachable {
                        url: strip_query(&req.url),
                        attempts: attempt,
                        reason: error_chain(&e),
                    });
                }
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED {
                if !reauthed {
                    reauthed = true;
                    attempt -= 1;
                    self.handle_401(host, &resp, req).await?;
                    continue;
                }
                return Err(self.final_401(host, resp, req).await);
            }
            if RetryPolicy::classify_status(status.as_u16()) == Outcome::Retry {
                let ra = header_str(resp.headers(), reqwest::header::RETRY_AFTER)
                    .and_then(|v| parse_retry_after(&v));
                if let Some(d) = policy.next_delay(attempt, ra) {
                    tracing::debug!(url = %strip_query(&req.url), %status, "retrying");
                    tokio::time::sleep(d).await;
                    continue;
                }
            }
            return Ok(resp);
        }
    }

    /// The Authorization header for `scopes` under the current mode, fetching a
    /// token when needed.
    async fn auth_header(&self, host: &Host, scopes: &[String]) -> Result<Option<String>> {
        let mut st = host.auth.lock().await;
        match st.mode.clone() {
            AuthMode::Anonymous => Ok(None),
            AuthMode::Basic => Ok(basic_header(host.credential.as_ref())),
            AuthMode::Bearer { realm, service } => {
                let key = scopes.join(" ");
                if let Some((tok, exp)) = st.tokens.get(&key) {
                    if Instant::now() < *exp {
                        return Ok(Some(format!("Bearer {tok}")));
                    }
                }
                let (tok, lifetime) = self
                    .fetch_token(host, &realm, service.as_deref(), scopes)
                    .await?;
                // Renew a little early so a token never expires mid-request.
                let exp = Instant::now()
                    + lifetime
                        .saturating_sub(Duration::from_secs(5))
                        .max(Duration::from_secs(1));
                st.tokens.insert(key, (tok.clone(), exp));
                Ok(Some(format!("Bearer {tok}")))
            }
        }
    }

    /// Learn from a 401: switch to Basic or Bearer, or fail with a clear message.
    async fn handle_401(&self, host: &Host, resp: &Response, req: &Req<'_>) -> Result<()> {
        let header = header_str(resp.headers(), WWW_AUTHENTICATE).ok_or_else(|| {
            RegistryError::Protocol {
                registry: host.registry.clone(),
                what: format!("{} {}", req.method, strip_query(&req.url)),
                reason: "HTTP 401 without a WWW-Authenticate header".into(),
            }
        })?;
        let challenge = parse_challenge(&header).map_err(|source| RegistryError::Challenge {
            registry: host.registry.clone(),
            source,
        })?;
        let mut st = host.auth.lock().await;
        match challenge {
            Challenge::Basic => {
                if host.credential.is_none() {
                    return Err(RegistryError::AuthRequired {
                        registry: host.registry.clone(),
                    });
                }
                if matches!(st.mode, AuthMode::Basic) {
                    return Err(invalid_credentials(host));
                }
                st.mode = AuthMode::Basic;
            }
            Challenge::Bearer { realm, service, .. } => {
                let realm = parse_url(&realm, &host.registry)?;
                st.tokens.clear();
                st.mode = AuthMode::Bearer { realm, service };
            }
        }
        Ok(())
    }

    /// A 401 after re-authenticating: the credentials are wrong or insufficient.
    async fn final_401(&self, host: &Host, resp: Response, req: &Req<'_>) -> RegistryError {
        let mode = host.auth.lock().await.mode.clone();
        match (mode, &host.credential) {
            (_, None) => RegistryError::AuthRequired {
                registry: host.registry.clone(),
            },
            (AuthMode::Basic, Some(_)) => invalid_credentials(host),
            (_, Some(_)) => RegistryError::Denied {
                registry: host.registry.clone(),
                repository: req.repository.to_string(),
                action: if req.push { "push to" } else { "pull from" },
                detail: error_body(resp).await,
            },
        }
    }

    /// The distribution token flow: GET `realm?service=&scope=` (Basic with the
    /// user's password), or POST the OAuth2 refresh-token grant for identity tokens.
    async fn fetch_token(
        &self,
        host: &Host,
        realm: &Url,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<(String, Duration)> {
        let realm_host = realm.host_str().unwrap_or("");
        let realm_authority = match realm.port() {
            Some(p) => format!("{realm_host}:{p}"),
            None => realm_host.to_string(),
        };
        let insecure = &self.inner.config.insecure_registries;
        if realm.scheme() != "https"
            && !(realm.scheme() == "http" && tls::allows_plain_http(&realm_authority, insecure))
        {
            return Err(RegistryError::Protocol {
                registry: host.registry.clone(),
                what: "the auth challenge".into(),
                reason: format!(
                    "token realm {realm} is not https; refusing to send credentials there"
                ),
            });
        }
        // Docker sends the registry's credentials to whatever realm the
        // registry names; imgfarm sends them only to a realm on the
        // registry's own host or DNS domain, and asks any other realm for an
        // anonymous token (see `realm_may_receive_credentials`).
        let foreign =
            host.credential.is_some() && !realm_may_receive_credentials(realm, &host.api_host);
        if foreign {
            tracing::warn!(
                registry = %host.registry,
                realm = %strip_query(realm),
                "token realm is on another host; asking it for a token without the registry's credentials"
            );
        }
        let secret = host
            .credential
            .as_ref()
            .map(|c| &c.secret)
            .filter(|_| !foreign);
        let rb = match secret {
            Some(Secret::IdentityToken(refresh)) => {
                let mut form: Vec<(&str, &str)> = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh),
                    ("client_id", "imgfarm"),
                ];
                if let Some(s) = service {
                    form.push(("service", s));
                }
                let scope = scopes.join(" ");
                form.push(("scope", &scope));
                let body = form_encode(&form);
                host.http
                    .post(realm.clone())
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(body)
            }
            other => {
                let mut url = realm.clone();
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    for s in scopes {
                        q.append_pair("scope", s);
                    }
                }
                let rb = host.http.get(url);
                match other {
                    Some(Secret::Basic { username, password }) => {
                        rb.basic_auth(username, Some(password))
                    }
                    _ => rb,
                }
            }
        };
        let resp = rb.send().await.map_err(|e| RegistryError::Unreachable {
            url: strip_query(realm),
            attempts: 1,
            reason: error_chain(&e),
        })?;
        let status = resp.status();
        if (status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN) && foreign {
            return Err(RegistryError::Protocol {
                registry: host.registry.clone(),
                what: "the auth challenge".into(),
                reason: format!(
                    "token realm {realm_authority} is not on the registry's host or domain, so the \
                     credentials for {} were not sent there, and it refused an anonymous token \
                     (HTTP {})",
                    host.registry,
                    status.as_u16()
                ),
            });
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(match host.credential {
                Some(_) => invalid_credentials(host),
                None => RegistryError::AuthRequired {
                    registry: host.registry.clone(),
                },
            });
        }
        if !status.is_success() {
            return Err(RegistryError::Status {
                method: "GET".into(),
                url: strip_query(realm),
                status: status.as_u16(),
                body: error_body(resp).await,
            });
        }
        let body = read_limited(resp, MAX_TOKEN_RESPONSE as u64, "token response").await?;
        let tok = parse_token_response(&body).map_err(|e| RegistryError::Protocol {
            registry: host.registry.clone(),
            what: format!("token request to {}", strip_query(realm)),
            reason: e.to_string(),
        })?;
        Ok((tok.token, tok.lifetime))
    }

    /// Check that the credentials configured for `registry` are accepted (what
    /// `docker login` does before saving them): `GET /v2/` with auth, through
    /// the token service when the registry uses Bearer tokens.
    pub async fn verify_credentials(&self, registry: &str) -> Result<()> {
        let host = self.host(registry)?;
        let base = self.base_url(&host).await?;
        let url = base.join("v2/").map_err(|e| RegistryError::Protocol {
            registry: host.registry.clone(),
            what: "the /v2/ URL".into(),
            reason: e.to_string(),
        })?;
        let req = Req {
            method: Method::GET,
            url,
            headers: Vec::new(),
            body: Body::Empty,
            scopes: &[],
            repository: "",
            push: false,
        };
        let resp = self.send(&host, &req).await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.status_error(&host, resp, &req, Subject::Other).await)
        }
    }

    /// Turn a non-success response into the clearest error we can.
    pub(super) async fn status_error(
        &self,
        host: &Host,
        resp: Response,
        req: &Req<'_>,
        subject: Subject<'_>,
    ) -> RegistryError {
        let status = resp.status();
        match (status, subject) {
            (StatusCode::NOT_FOUND, Subject::Manifest(r)) => RegistryError::ManifestUnknown {
                reference: r.to_string(),
            },
            (StatusCode::NOT_FOUND, Subject::Blob(repo, d)) => RegistryError::BlobUnknown {
                repository: repo.to_string(),
                digest: d.clone(),
            },
            (StatusCode::FORBIDDEN, _) => RegistryError::Denied {
                registry: host.registry.clone(),
                repository: req.repository.to_string(),
                action: if req.push { "push to" } else { "pull from" },
                detail: error_body(resp).await,
            },
            _ => RegistryError::Status {
                method: req.method.to_string(),
                url: strip_query(&req.url),
                status: status.as_u16(),
                body: error_body(resp).await,
            },
        }
    }
}

fn invalid_credentials(host: &Host) -> RegistryError {
    RegistryError::InvalidCredentials {
        registry: host.registry.clone(),
        source_of: host
            .credential
            .as_ref()
            .map(|c| c.source.clone())
            .unwrap_or_else(|| "nowhere".into()),
    }
}

fn basic_header(cred: Option<&Credential>) -> Option<String> {
    match cred.map(|c| &c.secret) {
        Some(Secret::Basic { username, password }) => Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
        )),
        _ => None,
    }
}

/// May the registry served from `api_host` (`host[:port]`) have its
/// credentials sent to the token `realm`? Docker sends them to any realm the
/// registry names; a hostile or spoofed registry could then collect them.
/// The rule here: the realm's host is the registry's host (any port), or
/// both are DNS names in the same domain, its last two labels, or three
/// when the second-to-last is a public second level like `co.uk`
/// (`registry-1.docker.io` → `auth.docker.io`, `registry.gitlab.com` →
/// `gitlab.com`). IP addresses and single-label names (`localhost`) must
/// match exactly.
fn realm_may_receive_credentials(realm: &Url, api_host: &str) -> bool {
    let Some(realm_host) = realm.host_str() else {
        return false;
    };
    let registry_host = Url::parse(&format!("https://{api_host}/"))
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
    let Some(registry_host) = registry_host else {
        return false;
    };
    let realm_host = realm_host.to_ascii_lowercase();
    if realm_host == registry_host {
        return true;
    }
    match (dns_domain(&realm_host), dns_domain(&registry_host)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The registrable domain of a DNS name, approximated without a public
/// suffix list; `None` for IP addresses and names of fewer than two labels.
fn dns_domain(host: &str) -> Option<String> {
    if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
        return None;
    }
    let labels: Vec<&str> = host.trim_end_matches('.').split('.').collect();
    if labels.len() < 2 || labels.iter().any(|l| l.is_empty()) {
        return None;
    }
    let public_second_level = [
        "co", "com", "net", "org", "gov", "edu", "ac", "or", "ne", "go",
    ];
    let keep = if labels.len() >= 3
        && labels[labels.len() - 1].len() == 2
        && public_second_level.contains(&labels[labels.len() - 2])
    {
        3
    } else {
        2
    };
    if labels.len() < keep {
        return None;
    }
    Some(labels[labels.len() - keep..].join("."))
}

/// Auth headers go only to the registry itself, never to a redirect or
/// upload location on another host.
fn same_authority(url: &Url, base: &Url) -> bool {
    url.scheme() == base.scheme()
        && url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default()
}

pub(super) fn parse_url(s: &str, registry: &str) -> Result<Url> {
    Url::parse(s).map_err(|e| RegistryError::Protocol {
        registry: registry.to_string(),
        what: "a URL".into(),
        reason: format!("{s:?}: {e}"),
    })
}

/// A URL without its query (upload state and tokens stay out of messages).
pub(super) fn strip_query(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

pub(super) fn header_str(
    h: &HeaderMap,
    name: impl reqwest::header::AsHeaderName,
) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// An error and its sources, one line.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Was this failure a TLS handshake/certificate problem (never worth retrying)?
fn is_tls_error(e: &reqwest::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if c.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|i| i.downcast_ref::<rustls::Error>().is_some())
            {
                return true;
            }
        }
        cur = c.source();
    }
    false
}

/// Read a body up to `limit` bytes.
pub(super) async fn read_limited(mut resp: Response, limit: u64, what: &str) -> Result<Vec<u8>> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(RegistryError::TooLarge {
            what: what.to_string(),
            limit,
        });
    }
    let mut out = Vec::new();
    loop {
        let chunk = resp.chunk().await.map_err(|e| RegistryError::Unreachable {
            url: strip_query(resp.url()),
            attempts: 1,
            reason: error_chain(&e),
        })?;
        let Some(chunk) = chunk else { break };
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(RegistryError::TooLarge {
                what: what.to_string(),
                limit,
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The start of an error body, with distribution's `{"errors":[{code,message}]}` summarised.
pub(super) async fn error_body(resp: Response) -> String {
    let bytes = read_limited(resp, 64 * 1024, "error body")
        .await
        .unwrap_or_default();
    #[derive(serde::Deserialize)]
    struct Errs {
        errors: Vec<E>,
    }
    #[derive(serde::Deserialize)]
    struct E {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(errs) = serde_json::from_slice::<Errs>(&bytes) {
        let parts: Vec<String> = errs
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect();
        if !parts.is_empty() {
            return parts.join("; ");
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let t: String = text.trim().chars().take(500).collect();
    if t.is_empty() {
        "(empty body)".into()
    } else {
        t
    }
}

async fn file_body(path: &std::path::Path, offset: u64, len: u64) -> Result<reqwest::Body> {
    use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| RegistryError::Store(format!("open {}: {e}", path.display())))?;
    f.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(|e| RegistryError::Store(format!("seek {}: {e}", path.display())))?;
    let stream = tokio_util::io::ReaderStream::with_capacity(f.take(len), 64 * 1024);
    Ok(reqwest::Body::wrap_stream(stream))
}

/// `application/x-www-form-urlencoded` (WHATWG URL standard serializer).
fn form_encode(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        let mut o = String::new();
        for b in s.bytes() {
            match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                    o.push(b as char)
                }
                b' ' => o.push('+'),
                _ => o.push_str(&format!("%{b:02X}")),
            }
        }
        o
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding_escapes() {
        assert_eq!(
            form_encode(&[("a", "b c"), ("s", "repository:x:pull,push")]),
            "a=b+c&s=repository%3Ax%3Apull%2Cpush"
        );
    }

    #[test]
    fn credentials_go_only_to_a_realm_of_the_same_host_or_domain() {
        let may = |realm: &str, api: &str| {
            realm_may_receive_credentials(&Url::parse(realm).unwrap(), api)
        };
        assert!(may("https://auth.docker.io/token", "registry-1.docker.io"));
        assert!(may("https://gitlab.com/jwt/auth", "registry.gitlab.com"));
        assert!(may("https://ghcr.io/token", "ghcr.io"));
        assert!(may("http://127.0.0.1:9/token", "127.0.0.1:5000"));
        assert!(may("https://auth.corp.co.uk/t", "registry.corp.co.uk:5000"));
        assert!(!may("http://localhost:9/token", "127.0.0.1:5000"));
        assert!(!may("http://127.0.0.2/token", "127.0.0.1:5000"));
        assert!(!may("https://evil.example/token", "registry-1.docker.io"));
        assert!(!may("https://docker.io.evil.example/token", "docker.io"));
        assert!(!may("https://evil.co.uk/token", "registry.corp.co.uk"));
        assert!(!may("https://attacker.localhost/token", "localhost:5000"));
    }

    #[test]
    fn basic_header_only_for_passwords() {
        assert_eq!(
            basic_header(Some(&Credential::basic("u", "p"))).as_deref(),
            Some("Basic dTpw")
        );
        let tok = Credential {
            secret: Secret::IdentityToken("t".into()),
            source: "x".into(),
        };
        assert_eq!(basic_header(Some(&tok)), None);
        assert_eq!(basic_header(None), None);
    }

    #[test]
    fn strips_queries() {
        let u = Url::parse("http://h:5000/v2/x/blobs/uploads/abc?_state=secret&digest=sha256:1")
            .unwrap();
        assert_eq!(strip_query(&u), "http://h:5000/v2/x/blobs/uploads/abc");
    }
}
