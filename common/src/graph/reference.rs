//! Image references as docker normalises them (distribution/reference
//! `ParseNormalizedNamed` + `TagNameOnly`): `alpine` →
//! `docker.io/library/alpine:latest`.

/// Normalise `s`, or say why it is not an image reference.
pub fn normalize_reference(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 512 {
        return Err("an image reference must be 1 to 512 characters".into());
    }
    let (name_tag, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        d.parse::<crate::oci::Digest>().map_err(|e| e.to_string())?;
    }
    // A tag is after the last ':' that follows the last '/'.
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return Err(format!("invalid tag {t:?}"));
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    let domain = if parts.len() > 1
        && (parts[0].contains('.')
            || parts[0].contains(':')
            || parts[0] == "localhost"
            || parts[0].chars().any(|c| c.is_ascii_uppercase()))
    {
        let d = parts.remove(0);
        if !d
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        {
            return Err(format!("invalid registry host {d:?}"));
        }
        d.to_string()
    } else {
        "docker.io".to_string()
    };
    for p in &parts {
        if !valid_path_component(p) {
            return Err(format!(
                "invalid repository name component {p:?}: use lowercase letters, digits and separators (. _ __ -)"
            ));
        }
    }
    let mut path = parts.join("/");
    if domain == "docker.io" && parts.len() == 1 {
        path = format!("library/{path}");
    }
    let mut out = format!("{domain}/{path}");
    match (tag, digest) {
        (Some(t), _) => {
            out.push(':');
            out.push_str(t);
        }
        (None, None) => out.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(d) = digest {
        out.push('@');
        out.push_str(d);
    }
    Ok(out)
}

fn valid_path_component(p: &str) -> bool {
    let b = p.as_bytes();
    if b.is_empty() || !b[0].is_ascii_lowercase() && !b[0].is_ascii_digit() {
        return false;
    }
    if !b[b.len() - 1].is_ascii_lowercase() && !b[b.len() - 1].is_ascii_digit() {
        return false;
    }
    let mut prev_sep = false;
    for &c in b {
        let sep = matches!(c, b'.' | b'_' | b'-');
        if !(c.is_ascii_lowercase() || c.is_ascii_digit() || sep) {
            return false;
        }
        if sep && prev_sep && c != b'_' && c != b'-' {
            return false;
        }
        prev_sep = sep;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        assert_eq!(
            normalize_reference("alpine").unwrap(),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(
            normalize_reference("alpine:3.20").unwrap(),
            "docker.io/library/alpine:3.20"
        );
        assert_eq!(
            normalize_reference("user/app").unwrap(),
            "docker.io/user/app:latest"
        );
        assert_eq!(
            normalize_reference("localhost:5000/app:1").unwrap(),
            "localhost:5000/app:1"
        );
        assert_eq!(
            normalize_reference("ghcr.io/o/r/x:v1.2").unwrap(),
            "ghcr.io/o/r/x:v1.2"
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            normalize_reference(&format!("alpine@{d}")).unwrap(),
            format!("docker.io/library/alpine@{d}")
        );
    }

    #[test]
    fn refuses_bad_refs() {
        for bad in ["Builder", "a b", "alpine:", "alpine@sha256:12", "-x", "x/"] {
            assert!(normalize_reference(bad).is_err(), "{bad}");
        }
    }
}
