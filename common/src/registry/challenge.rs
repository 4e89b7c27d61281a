//! Pure parts of registry auth: `WWW-Authenticate` challenges (RFC 7235
//! section 4.1), token scopes and token responses of the distribution token
//! protocol (docker "Token Authentication Specification"). No I/O here.

use std::collections::BTreeMap;
use std::time::Duration;

/// Largest token response accepted from a token endpoint.
pub const MAX_TOKEN_RESPONSE: usize = 256 * 1024;
/// Lifetime assumed when a token response has no `expires_in` (the token spec's default).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// One challenge from a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm="..."`: send the username and password on every request.
    Basic,
    /// `Bearer realm=...,service=...,scope=...`: fetch a token from `realm`.
    Bearer {
        /// Token endpoint URL.
        realm: String,
        /// `service` parameter to pass back, if given.
        service: Option<String>,
        /// The scope the registry asked for, if given.
        scope: Option<String>,
        /// `error` parameter (`insufficient_scope`, `invalid_token`), if given.
        error: Option<String>,
    },
}

/// A `WWW-Authenticate` header that can't be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    /// Syntax error.
    #[error("malformed WWW-Authenticate header {0:?}")]
    Malformed(String),
    /// Neither Basic nor Bearer.
    #[error("unsupported auth scheme in WWW-Authenticate header {0:?}: only Basic and Bearer are supported")]
    Unsupported(String),
    /// A Bearer challenge without a realm.
    #[error("Bearer challenge without a realm: {0:?}")]
    NoRealm(String),
}

/// Parse a `WWW-Authenticate` value and pick the first Bearer or Basic challenge
/// (Bearer preferred when both are offered, as docker does).
pub fn parse_challenge(header: &str) -> Result<Challenge, ChallengeError> {
    let short = || header.chars().take(300).collect::<String>();
    let parsed = parse_challenges(header).ok_or_else(|| ChallengeError::Malformed(short()))?;
    let bearer = parsed
        .iter()
        .find(|(s, _)| s.eq_ignore_ascii_case("bearer"));
    if let Some((_, params)) = bearer {
        let realm = params
            .get("realm")
            .filter(|r| !r.is_empty())
            .ok_or_else(|| ChallengeError::NoRealm(short()))?;
        return Ok(Challenge::Bearer {
            realm: realm.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
            error: params.get("error").cloned(),
        });
    }
    if parsed.iter().any(|(s, _)| s.eq_ignore_ascii_case("basic")) {
        return Ok(Challenge::Basic);
    }
    Err(ChallengeError::Unsupported(short()))
}

type Params = BTreeMap<String, String>;

/// RFC 7235 `1#challenge`; parameter names are lowercased.
fn parse_challenges(s: &str) -> Option<Vec<(String, Params)>> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out: Vec<(String, Params)> = Vec::new();
    let is_tchar = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t') {
            *i += 1;
        }
    };
    let token = |i: &mut usize| -> Option<String> {
        let start = *i;
        while *i < b.len() && is_tchar(b[*i]) {
            *i += 1;
        }
        (start < *i).then(|| s[start..*i].to_string())
    };
    loop {
        skip_ws(&mut i);
        while i < b.len() && b[i] == b',' {
            i += 1;
            skip_ws(&mut i);
        }
        if i >= b.len() {
            break;
        }
        let scheme = token(&mut i)?;
        let mut params = Params::new();
        loop {
            skip_ws(&mut i);
            let save = i;
            let Some(name) = token(&mut i) else { break };
            skip_ws(&mut i);
            if i >= b.len() || b[i] != b'=' {
                // A new challenge (or token68 form, which registries don't use).
                i = save;
                break;
            }
            i += 1;
            skip_ws(&mut i);
            let value = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut v = String::new();
                loop {
                    let c = *b.get(i)?;
                    i += 1;
                    match c {
                        b'"' => break,
                        b'\\' => {
                            let n = s[i..].chars().next()?;
                            v.push(n);
                            i += n.len_utf8();
                        }
                        _ => {
                            let n = s[i - 1..].chars().next()?;
                            v.push(n);
                            i += n.len_utf8() - 1;
                        }
                    }
                }
                v
            } else {
                token(&mut i).unwrap_or_default()
            };
            params.insert(name.to_ascii_lowercase(), value);
            skip_ws(&mut i);
            if i < b.len() && b[i] == b',' {
                i += 1;
            } else {
                break;
            }
        }
        out.push((scheme, params));
        skip_ws(&mut i);
        if i < b.len() && b[i] != b',' && !is_tchar(b[i]) {
            return None;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// What a request needs on a repository (distribution token scopes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Access {
    /// `pull`.
    Pull,
    /// `pull,push`.
    Push,
}

/// `repository:<repo>:pull` or `repository:<repo>:pull,push`.
pub fn repository_scope(repository: &str, access: Access) -> String {
    match access {
        Access::Pull => format!("repository:{repository}:pull"),
        Access::Push => format!("repository:{repository}:pull,push"),
    }
}

/// A token endpoint's answer, reduced to what we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenResponse {
    /// The bearer token (`token`, or OAuth2's `access_token`).
    pub token: String,
    /// How long it is valid.
    pub lifetime: Duration,
}

/// A token endpoint answer that can't be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token endpoint answer is unusable: {0}")]
pub struct TokenError(pub String);

/// Parse a token endpoint's JSON body (token spec: `token`, `access_token`,
/// `expires_in` seconds; a missing lifetime means 60 s).
pub fn parse_token_response(body: &[u8]) -> Result<TokenResponse, TokenError> {
    #[derive(serde::Deserialize)]
    struct Raw {
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        access_token: Option<String>,
        #[serde(default)]
        expires_in: Option<u64>,
    }
    if body.len() > MAX_TOKEN_RESPONSE {
        return Err(TokenError(format!(
            "larger than {MAX_TOKEN_RESPONSE} bytes"
        )));
    }
    let raw: Raw = serde_json::from_slice(body).map_err(|e| TokenError(e.to_string()))?;
    let token = raw
        .token
        .filter(|t| !t.is_empty())
        .or(raw.access_token.filter(|t| !t.is_empty()))
        .ok_or_else(|| TokenError("no token or access_token field".into()))?;
    if !token.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Err(TokenError(
            "token holds characters not allowed in a header".into(),
        ));
    }
    let lifetime = match raw.expires_in {
        Some(s) if s >= 1 => Duration::from_secs(s.min(24 * 3600)),
        _ => DEFAULT_TOKEN_LIFETIME,
    };
    Ok(TokenResponse { token, lifetime })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_bearer() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
                error: None,
            }
        );
    }

    #[test]
    fn basic_and_odd_spacing() {
        assert_eq!(
            parse_challenge(r#"Basic realm="farm-registry""#).unwrap(),
            Challenge::Basic
        );
        assert_eq!(parse_challenge("basic").unwrap(), Challenge::Basic);
        let c = parse_challenge(
            r#"Basic realm="x", Bearer realm = "https://a/t" , error="insufficient_scope", scope="a\"b""#,
        )
        .unwrap();
        match c {
            Challenge::Bearer {
                realm,
                error,
                scope,
                ..
            } => {
                assert_eq!(realm, "https://a/t");
                assert_eq!(error.as_deref(), Some("insufficient_scope"));
                assert_eq!(scope.as_deref(), Some("a\"b"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_challenges() {
        assert!(matches!(
            parse_challenge(""),
            Err(ChallengeError::Malformed(_))
        ));
        assert!(matches!(
            parse_challenge(r#"Bearer realm="unterminated"#),
            Err(ChallengeError::Malformed(_))
        ));
        assert!(matches!(
            parse_challenge("Negotiate abc"),
            Err(ChallengeError::Unsupported(_))
        ));
        assert!(matches!(
            parse_challenge(r#"Bearer service="x""#),
            Err(ChallengeError::NoRealm(_))
        ));
        assert!(matches!(
            parse_challenge("Bearer realm=\"é\\"),
            Err(ChallengeError::Malformed(_))
        ));
    }

    #[test]
    fn scopes() {
        assert_eq!(
            repository_scope("library/busybox", Access::Pull),
            "repository:library/busybox:pull"
        );
        assert_eq!(
            repository_scope("a/b", Access::Push),
            "repository:a/b:pull,push"
        );
    }

    #[test]
    fn token_responses() {
        let t = parse_token_response(br#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!(
            t,
            TokenResponse {
                token: "abc".into(),
                lifetime: Duration::from_secs(300)
            }
        );
        let t = parse_token_response(br#"{"access_token":"xyz"}"#).unwrap();
        assert_eq!(t.lifetime, DEFAULT_TOKEN_LIFETIME);
        assert!(parse_token_response(br#"{"token":""}"#).is_err());
        assert!(parse_token_response(b"not json").is_err());
        assert!(parse_token_response(br#"{"token":"a\nb"}"#).is_err());
        assert!(parse_token_response(&vec![b' '; MAX_TOKEN_RESPONSE + 1]).is_err());
    }
}
