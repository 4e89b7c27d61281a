//! Image references as docker normalises them (distribution/reference
//! `ParseNormalizedNamed` + `TagNameOnly`): `alpine` →
//! `docker.io/library/alpine:latest`.

/// Normalise `s`, or say why it is not an image reference. The grammar is
/// the registry client's ([`crate::registry::Reference`]); a reference with
/// neither tag nor digest gets `:latest`.
pub fn normalize_reference(s: &str) -> Result<String, String> {
    let mut r: crate::registry::Reference = s.parse().map_err(|e| format!("{e}"))?;
    if r.tag.is_none() && r.digest.is_none() {
        r.tag = Some("latest".into());
    }
    Ok(r.to_string())
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
