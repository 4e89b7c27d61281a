//! Image references (`[host[:port]/]repo[:tag][@digest]`), parsed and
//! normalised the way docker's `distribution/reference` package does
//! (`ParseNormalizedNamed`): Docker Hub is the default registry, single-word
//! Hub names get the `library/` namespace, repositories must be lowercase.

use crate::oci::Digest;
use std::fmt;
use std::str::FromStr;

/// Docker Hub's canonical registry name, as written in normalised references.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves Docker Hub's distribution API.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
/// The key docker writes in `config.json` `auths` for Docker Hub.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";
/// The tag used when a reference names neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
/// distribution/reference `NameTotalLengthMax`.
const NAME_MAX: usize = 255;
/// distribution/reference: tags are `[\w][\w.-]{0,127}`.
const TAG_MAX: usize = 128;

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host, with port when given (`docker.io`, `localhost:5000`, `[::1]:5000`).
    pub registry: String,
    /// Repository path inside the registry (`library/busybox`).
    pub repository: String,
    /// Tag, if the text named one.
    pub tag: Option<String>,
    /// Digest, if the text named one (`@sha256:...`); it wins over the tag when pulling.
    pub digest: Option<Digest>,
}

/// Why a reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct ReferenceError {
    /// The text given (truncated to 300 characters).
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Reference {
    /// The host[:port] to open connections to: `registry-1.docker.io` for Docker Hub.
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    /// What to ask the registry for: the digest if known, else the tag (default `latest`).
    pub fn target(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository with another digest (and no tag): how index children are addressed.
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest),
        }
    }

    /// The same repository on the same registry under another repository path.
    pub fn with_repository(&self, repository: &str) -> Self {
        Self {
            registry: self.registry.clone(),
            repository: repository.to_string(),
            tag: None,
            digest: None,
        }
    }
}

/// Map a registry name to the host serving its API (Docker Hub's special case).
pub fn api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB || registry == "index.docker.io" {
        DOCKER_HUB_API_HOST
    } else {
        registry
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

fn parse(input: &str) -> Result<Reference, ReferenceError> {
    let err = |reason: &str| ReferenceError {
        input: input.chars().take(300).collect(),
        reason: reason.to_string(),
    };
    if input.is_empty() {
        return Err(err("empty"));
    }
    if input.len() > 2 * NAME_MAX + TAG_MAX + 140 {
        return Err(err("too long"));
    }
    if input.len() == 64 && input.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err(
            "a 64-character hex string is an image ID, not a repository name",
        ));
    }

    let (rest, digest) = match input.split_once('@') {
        Some((r, d)) => {
            let digest = d.parse::<Digest>().map_err(|e| err(&e.to_string()))?;
            (r, Some(digest))
        }
        None => (input, None),
    };

    // A tag is after the last ':' that follows the last '/', so a port is not a tag.
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            (&rest[..at], Some(&rest[at + 1..]))
        }
        None => (rest, None),
    };
    if let Some(t) = tag {
        validate_tag(t).map_err(&err)?;
    }

    let (registry, path) = split_domain(name);
    let registry = match registry {
        Some(r) => {
            validate_domain(r).map_err(&err)?;
            if r == "index.docker.io" {
                DOCKER_HUB.to_string()
            } else {
                r.to_string()
            }
        }
        None => DOCKER_HUB.to_string(),
    };
    if path.is_empty() {
        return Err(err("missing repository name"));
    }
    if path.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(err("repository name must be lowercase"));
    }
    validate_path(path).map_err(&err)?;
    let repository = if registry == DOCKER_HUB && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_string()
    };
    if registry.len() + 1 + repository.len() > NAME_MAX {
        return Err(err("name longer than 255 characters"));
    }
    Ok(Reference {
        registry,
        repository,
        tag: tag.map(str::to_string),
        digest,
    })
}

/// docker's `splitDockerDomain`: the first component is a registry if it holds
/// a '.' or ':', is `localhost`, or has uppercase letters (which a repository can't).
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase())
                || first.starts_with('[') =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn validate_tag(tag: &str) -> Result<(), &'static str> {
    let ok_first = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok_rest = |b: u8| ok_first(b) || b == b'.' || b == b'-';
    match tag.as_bytes() {
        [] => Err("empty tag after ':'"),
        t if t.len() > TAG_MAX => Err("tag longer than 128 characters"),
        [first, rest @ ..] if ok_first(*first) && rest.iter().all(|b| ok_rest(*b)) => Ok(()),
        _ => Err("tag must match [A-Za-z0-9_][A-Za-z0-9_.-]*"),
    }
}

fn validate_domain(domain: &str) -> Result<(), &'static str> {
    const BAD: &str = "registry must be host[:port] with letters, digits, '-' and '.'";
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or(BAD)?;
        if v6.is_empty()
            || !v6
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(BAD);
        }
        match after {
            "" => ("", None),
            p => ("", Some(p.strip_prefix(':').ok_or(BAD)?)),
        }
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (domain, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err("port must be 1 to 5 digits");
        }
    }
    if domain.starts_with('[') {
        return Ok(());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(BAD)
    }
}

/// Path components: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, joined by '/'.
fn validate_path(path: &str) -> Result<(), &'static str> {
    const BAD: &str = "repository path components must be lowercase letters and digits, \
                       joined by '.', '_', '__' or dashes";
    for comp in path.split('/') {
        let b = comp.as_bytes();
        if b.is_empty() {
            return Err("empty path component (double or trailing '/')");
        }
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return Err(BAD);
        }
        let mut i = 0;
        while i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && !alnum(b[i]) {
                i += 1;
            }
            let sep = &comp[start..i];
            let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
            if !ok {
                return Err(BAD);
            }
        }
    }
    Ok(())
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Reference {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn docker_hub_defaults() {
        let r = p("busybox");
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/busybox");
        assert_eq!(r.tag, None);
        assert_eq!(r.target(), "latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(p("user/app:1.0").repository, "user/app");
        assert_eq!(p("docker.io/busybox").repository, "library/busybox");
        assert_eq!(p("index.docker.io/busybox").registry, "docker.io");
    }

    #[test]
    fn hosts_ports_tags_digests() {
        let r = p("localhost:5000/busybox:latest");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("localhost:5000", "busybox")
        );
        assert_eq!(r.tag.as_deref(), Some("latest"));
        let r = p(&format!("127.0.0.1:5000/a/b/c:v1.2-x@{D}"));
        assert_eq!(r.repository, "a/b/c");
        assert_eq!(r.target(), D, "the digest wins over the tag");
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/a/b/c:v1.2-x@{D}"));
        let r = p("localhost/x");
        assert_eq!(r.registry, "localhost");
        let r = p("[::1]:5000/x:t");
        assert_eq!(r.registry, "[::1]:5000");
        let r = p("quay.io/a__b/c-d--e.f_g");
        assert_eq!(r.repository, "a__b/c-d--e.f_g");
        assert_eq!(p("ghcr.io/x").name(), "ghcr.io/x");
    }

    #[test]
    fn errors_name_the_problem() {
        let cases = [
            ("", "empty"),
            ("Busybox", "lowercase"),
            ("localhost:5000/Busybox", "lowercase"),
            ("busybox:", "empty tag"),
            ("busybox:-x", "tag must"),
            ("busybox@sha256:abc", "invalid digest"),
            ("a//b", "empty path"),
            ("a/b/", "empty path"),
            ("host:5000/", "missing repository"),
            ("a_-b", "components"),
            ("-a", "components"),
            ("host:abc/x", "port"),
            ("ho_st.io/x", "registry must"),
            (&"a".repeat(64).replace('a', "e"), "image ID"),
        ];
        for (input, want) in cases {
            let e = input.parse::<Reference>().unwrap_err();
            assert!(e.to_string().contains(want), "{input:?}: {e}");
        }
        let long = format!("x/{}", "a".repeat(300));
        assert!(long.parse::<Reference>().is_err());
        let long_tag = format!("x:{}", "a".repeat(129));
        assert!(long_tag
            .parse::<Reference>()
            .unwrap_err()
            .reason
            .contains("128"));
    }

    #[test]
    fn uppercase_first_component_is_a_domain() {
        // docker: "Foo/bar" has a domain "Foo" (a repository can't be uppercase).
        let r = p("Foo.Example/bar");
        assert_eq!(r.registry, "Foo.Example");
    }
}
