//! Registry credentials: lookup in docker's `config.json` (`credHelpers`,
//! `credsStore` via `docker-credential-*` helpers, `auths` entries) and podman's
//! `auth.json` files, plus `login`/`logout` that edit docker's `auths`.
//!
//! Lookup order: `$REGISTRY_AUTH_FILE` (an explicit choice wins), then docker's
//! `$DOCKER_CONFIG/config.json` (else `~/.docker/config.json`), then podman's
//! `${XDG_RUNTIME_DIR}/containers/auth.json` and `~/.config/containers/auth.json`.

use super::reference::{DOCKER_HUB, DOCKER_HUB_AUTH_KEY};
use base64::Engine as _;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Largest credentials file we read.
const MAX_CONFIG_FILE: u64 = 4 * 1024 * 1024;

/// A secret for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// Username and password (HTTP Basic, or Basic to a token endpoint).
    Basic {
        /// User name.
        username: String,
        /// Password or access token.
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken` in docker's config).
    IdentityToken(String),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Secret::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

/// A secret and where it came from (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The secret.
    pub secret: Secret,
    /// Human-readable origin, e.g. `/root/.docker/config.json`.
    pub source: String,
}

impl Credential {
    /// A username/password pair given directly (e.g. `--creds`).
    pub fn basic(username: &str, password: &str) -> Self {
        Self {
            secret: Secret::Basic {
                username: username.to_string(),
                password: password.to_string(),
            },
            source: "explicit credentials".to_string(),
        }
    }
}

/// Credential lookup or storage failed.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// A config file exists but can't be read or parsed.
    #[error("cannot read credentials from {path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A credential helper failed.
    #[error("credential lookup for {registry} in {path} failed: {reason}")]
    Helper {
        /// The registry looked up.
        registry: String,
        /// The config file naming the helper.
        path: PathBuf,
        /// The helper's error.
        reason: String,
    },
    /// Writing docker's config failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No place to store credentials (no `$DOCKER_CONFIG` and no `$HOME`).
    #[error("no docker config directory: set DOCKER_CONFIG or HOME")]
    NoConfigDir,
}

/// Where to look for credentials. Build with [`CredentialSources::from_env`], or
/// by hand in tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialSources {
    /// Files tried in order; missing files are skipped.
    pub files: Vec<PathBuf>,
}

impl CredentialSources {
    /// The standard places, from the process environment.
    pub fn from_env() -> Self {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Self::from_vars(
            var("REGISTRY_AUTH_FILE"),
            docker_config_dir(),
            var("XDG_RUNTIME_DIR"),
            var("HOME"),
        )
    }

    /// Pure form of [`Self::from_env`].
    pub fn from_vars(
        registry_auth_file: Option<PathBuf>,
        docker_config_dir: Option<PathBuf>,
        xdg_runtime_dir: Option<PathBuf>,
        home: Option<PathBuf>,
    ) -> Self {
        let mut files = Vec::new();
        files.extend(registry_auth_file);
        files.extend(docker_config_dir.map(|d| d.join("config.json")));
        files.extend(xdg_runtime_dir.map(|d| d.join("containers/auth.json")));
        files.extend(home.map(|h| h.join(".config/containers/auth.json")));
        Self { files }
    }

    /// The credential for `registry` (as written in references: `docker.io`,
    /// `localhost:5000`), or `None` when no file has one.
    pub fn lookup(&self, registry: &str) -> Result<Option<Credential>, CredentialsError> {
        for path in &self.files {
            let Some(bytes) = read_bounded(path)? else {
                continue;
            };
            if let Some(secret) = lookup_in(&bytes, registry, path)? {
                return Ok(Some(Credential {
                    secret,
                    source: path.display().to_string(),
                }));
            }
        }
        Ok(None)
    }
}

/// docker's config directory: `$DOCKER_CONFIG`, else `$HOME/.docker`.
pub fn docker_config_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("DOCKER_CONFIG").or_else(|| var("HOME").map(|h| h.join(".docker")))
}

/// The key docker uses in `auths` for a registry.
pub fn auth_key(registry: &str) -> &str {
    if registry == DOCKER_HUB || registry == "index.docker.io" {
        DOCKER_HUB_AUTH_KEY
    } else {
        registry
    }
}

fn read_bounded(path: &Path) -> Result<Option<Vec<u8>>, CredentialsError> {
    let cfg_err = |reason: String| CredentialsError::Config {
        path: path.to_path_buf(),
        reason,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(cfg_err(e.to_string())),
    };
    if !meta.is_file() {
        return Ok(None);
    }
    if meta.len() > MAX_CONFIG_FILE {
        return Err(cfg_err(format!("larger than {MAX_CONFIG_FILE} bytes")));
    }
    std::fs::read(path)
        .map(Some)
        .map_err(|e| cfg_err(e.to_string()))
}

/// Look `registry` up in one config file's bytes (helpers run as needed).
fn lookup_in(
    bytes: &[u8],
    registry: &str,
    path: &Path,
) -> Result<Option<Secret>, CredentialsError> {
    use docker_credential::{CredentialRetrievalError as E, DockerCredential};
    let Ok(mut doc) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Err(CredentialsError::Config {
            path: path.to_path_buf(),
            reason: "not valid JSON".into(),
        });
    };
    // docker treats `"credsStore": ""` as unset; docker_credential would run `docker-credential-`.
    if let Some(obj) = doc.as_object_mut() {
        if obj.get("credsStore").and_then(|v| v.as_str()) == Some("") {
            obj.remove("credsStore");
        }
    }
    let cleaned = serde_json::to_vec(&doc).unwrap_or_default();
    match docker_credential::get_credential_from_reader(cleaned.as_slice(), auth_key(registry)) {
        Ok(DockerCredential::UsernamePassword(username, password)) => {
            Ok(Some(Secret::Basic { username, password }))
        }
        Ok(DockerCredential::IdentityToken(t)) => Ok(Some(Secret::IdentityToken(t))),
        Err(E::NoCredentialConfigured) => Ok(None),
        Err(e @ (E::CredentialDecodingError | E::CredentialMismatchError | E::ConfigReadError)) => {
            Err(CredentialsError::Config {
                path: path.to_path_buf(),
                reason: format!("entry for {registry}: {e}"),
            })
        }
        Err(e) => Err(CredentialsError::Helper {
            registry: registry.to_string(),
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// Store `username`/`password` for `registry` in `<config_dir>/config.json`
/// (`auths.<key>.auth = base64(user:pass)`), keeping every other field. The file
/// is written to a temp file with mode 0600 and renamed into place.
pub fn login(
    config_dir: &Path,
    registry: &str,
    username: &str,
    password: &str,
) -> Result<PathBuf, CredentialsError> {
    let path = config_dir.join("config.json");
    let mut doc = read_doc(&path)?;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let auths = doc
        .as_object_mut()
        .ok_or_else(|| not_object(&path))?
        .entry("auths")
        .or_insert_with(|| serde_json::json!({}));
    let auths = auths.as_object_mut().ok_or_else(|| not_object(&path))?;
    auths.insert(
        auth_key(registry).to_string(),
        serde_json::json!({ "auth": auth }),
    );
    write_doc(config_dir, &path, &doc)?;
    Ok(path)
}

/// Remove `registry`'s `auths` entry (any spelling docker accepts for it) from
/// `<config_dir>/config.json`. Returns whether something was removed.
pub fn logout(config_dir: &Path, registry: &str) -> Result<bool, CredentialsError> {
    let path = config_dir.join("config.json");
    if !path.exists() {
        return Ok(false);
    }
    let mut doc = read_doc(&path)?;
    let key = auth_key(registry).to_string();
    let Some(auths) = doc.get_mut("auths").and_then(|a| a.as_object_mut()) else {
        return Ok(false);
    };
    let host = registry;
    let matches = |k: &str| {
        let stripped = k
            .strip_prefix("https://")
            .or_else(|| k.strip_prefix("http://"))
            .map(|s| s.split('/').next().unwrap_or(s))
            .unwrap_or(k);
        k == key || stripped == host || (host == DOCKER_HUB && stripped == "index.docker.io")
    };
    let before = auths.len();
    auths.retain(|k, _| !matches(k));
    let removed = auths.len() != before;
    if removed {
        write_doc(config_dir, &path, &doc)?;
    }
    Ok(removed)
}

fn not_object(path: &Path) -> CredentialsError {
    CredentialsError::Config {
        path: path.to_path_buf(),
        reason: "not a JSON object (or `auths` is not an object)".into(),
    }
}

fn read_doc(path: &Path) -> Result<serde_json::Value, CredentialsError> {
    match read_bounded(path)? {
        None => Ok(serde_json::json!({})),
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| CredentialsError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

fn write_doc(dir: &Path, path: &Path, doc: &serde_json::Value) -> Result<(), CredentialsError> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let werr = |source| CredentialsError::Write {
        path: path.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(werr)?;
    let tmp = dir.join(format!(".config.json.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut body = serde_json::to_vec_pretty(doc).map_err(std::io::Error::other)?;
        body.push(b'\n');
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(werr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn order_and_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let auth_file = dir.path().join("auth.json");
        let docker = dir.path().join("docker");
        std::fs::create_dir_all(&docker).unwrap();
        std::fs::write(
            docker.join("config.json"),
            format!(
                r#"{{"auths":{{"localhost:5000":{{"auth":"{}"}},"https://index.docker.io/v1/":{{"auth":"{}"}},"http://old.example:81/v1/":{{"username":"o","password":"p"}}}}}}"#,
                b64("alice:s3cret"),
                b64("hub:pw")
            ),
        )
        .unwrap();
        std::fs::write(
            &auth_file,
            format!(
                r#"{{"auths":{{"localhost:5000":{{"auth":"{}"}}}}}}"#,
                b64("bob:x:y")
            ),
        )
        .unwrap();
        let only_docker = CredentialSources::from_vars(None, Some(docker.clone()), None, None);
        let c = only_docker.lookup("localhost:5000").unwrap().unwrap();
        assert_eq!(
            c.secret,
            Secret::Basic {
                username: "alice".into(),
                password: "s3cret".into()
            }
        );
        assert!(c.source.ends_with("docker/config.json"));
        let hub = only_docker.lookup("docker.io").unwrap().unwrap();
        assert_eq!(
            hub.secret,
            Secret::Basic {
                username: "hub".into(),
                password: "pw".into()
            }
        );
        assert!(only_docker.lookup("old.example:81").unwrap().is_some());
        assert_eq!(only_docker.lookup("ghcr.io").unwrap(), None);
        assert!(!format!("{c:?}").contains("s3cret"));

        let with_env = CredentialSources::from_vars(Some(auth_file), Some(docker), None, None);
        let c = with_env.lookup("localhost:5000").unwrap().unwrap();
        assert_eq!(
            c.secret,
            Secret::Basic {
                username: "bob".into(),
                password: "x:y".into()
            }
        );
    }

    #[test]
    fn from_vars_paths() {
        let s = CredentialSources::from_vars(
            None,
            Some("/d".into()),
            Some("/run/u".into()),
            Some("/h".into()),
        );
        assert_eq!(
            s.files,
            vec![
                PathBuf::from("/d/config.json"),
                PathBuf::from("/run/u/containers/auth.json"),
                PathBuf::from("/h/.config/containers/auth.json")
            ]
        );
    }

    #[test]
    fn broken_files_are_errors_that_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("config.json");
        std::fs::write(&f, "{not json").unwrap();
        let s = CredentialSources {
            files: vec![f.clone()],
        };
        let e = s.lookup("x.io").unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains("JSON"), "{e}");
        std::fs::write(&f, r#"{"auths":{"x.io":{"auth":"!!!"}}}"#).unwrap();
        let e = s.lookup("x.io").unwrap_err().to_string();
        assert!(e.contains("x.io"), "{e}");
    }

    #[test]
    fn missing_helper_is_a_helper_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("config.json");
        std::fs::write(
            &f,
            r#"{"credHelpers":{"x.io":"imgfarm-test-no-such-helper"}}"#,
        )
        .unwrap();
        let s = CredentialSources { files: vec![f] };
        let e = s.lookup("x.io").unwrap_err();
        assert!(matches!(e, CredentialsError::Helper { .. }), "{e}");
    }

    #[test]
    fn helper_is_run() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let helper = bin.join("docker-credential-imgfarmtest");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread host\n[ \"$1\" = get ] && [ \"$host\" = h.io ] && echo '{\"Username\":\"u\",\"Secret\":\"s\"}'\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let f = dir.path().join("config.json");
        std::fs::write(&f, r#"{"credsStore":"imgfarmtest"}"#).unwrap();
        // The helper is found through PATH; its name is unique, so prepending is harmless
        // to other tests running in this process.
        let old = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![bin.clone()];
        paths.extend(std::env::split_paths(&old));
        std::env::set_var("PATH", std::env::join_paths(paths).unwrap());
        let s = CredentialSources { files: vec![f] };
        let c = s.lookup("h.io").unwrap().unwrap();
        assert_eq!(
            c.secret,
            Secret::Basic {
                username: "u".into(),
                password: "s".into()
            }
        );
    }

    #[test]
    fn login_logout_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("newdir");
        let path = login(&cfg, "localhost:5000", "alice", "pw").unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::write(
            &path,
            std::fs::read_to_string(&path).unwrap().replacen(
                '{',
                r#"{"credsStore":"","psFormat":"x","#,
                1,
            ),
        )
        .unwrap();
        login(&cfg, "docker.io", "hub", "pw2").unwrap();
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(doc["psFormat"], "x", "other fields are kept");
        assert_eq!(
            doc["auths"]["https://index.docker.io/v1/"]["auth"],
            b64("hub:pw2")
        );
        let s = CredentialSources {
            files: vec![path.clone()],
        };
        assert_eq!(
            s.lookup("localhost:5000").unwrap().unwrap().secret,
            Secret::Basic {
                username: "alice".into(),
                password: "pw".into()
            }
        );
        assert!(logout(&cfg, "localhost:5000").unwrap());
        assert!(!logout(&cfg, "localhost:5000").unwrap());
        assert_eq!(s.lookup("localhost:5000").unwrap(), None);
        assert!(logout(&cfg, "docker.io").unwrap());
        assert!(!logout(&dir.path().join("absent"), "x.io").unwrap());
        std::fs::write(&path, "[]").unwrap();
        assert!(login(&cfg, "x.io", "a", "b").is_err());
    }
}
