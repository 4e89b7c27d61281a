//! How images are named in the local store: one normalisation for every
//! command that sets or looks up a ref.
//!
//! Refs are stored under docker's fully normalised name
//! (`distribution/reference` `ParseNormalizedNamed` plus the default tag):
//! `busybox` → `docker.io/library/busybox:latest`,
//! `localhost:5000/app` → `localhost:5000/app:latest`. So `busybox`,
//! `busybox:latest` and `docker.io/library/busybox:latest` are one image.
//! Users see the familiar form (`FamiliarString`): `busybox:latest`.

use crate::oci::store::{ContentStore, RefDescriptor, StoreError};

/// The docker Hub registry name in normalised references.
const HUB: &str = "docker.io/";

/// Normalise `s` as docker does (distribution/reference
/// `ParseNormalizedNamed` + `TagNameOnly`: `alpine` →
/// `docker.io/library/alpine:latest`), or say why it is not an image
/// reference. The grammar is
/// the registry client's ([`crate::registry::Reference`]); a reference with
/// neither tag nor digest gets `:latest`.
pub fn normalize_reference(s: &str) -> Result<String, String> {
    let mut r: crate::registry::Reference = s.parse().map_err(|e| format!("{e}"))?;
    if r.tag.is_none() && r.digest.is_none() {
        r.tag = Some("latest".into());
    }
    Ok(r.to_string())
}

/// The store key for a user-typed image reference (`busybox` →
/// `docker.io/library/busybox:latest`). Errors say what is wrong with it.
pub fn store_name(input: &str) -> Result<String, String> {
    normalize_reference(input).map_err(|why| format!("invalid reference {input:?}: {why}"))
}

/// The short form docker shows (`docker.io/library/busybox:latest` →
/// `busybox:latest`, `docker.io/user/app:1` → `user/app:1`); other
/// registries' names are unchanged.
pub fn familiar(name: &str) -> String {
    match name.strip_prefix(HUB) {
        Some(rest) => rest.strip_prefix("library/").unwrap_or(rest).to_string(),
        None => name.to_string(),
    }
}

/// Look `input` up in `store`: by its normalised name, then (for refs an
/// older build wrote verbatim) by the text as typed. `Ok(None)` when the
/// store has no such image.
pub fn find(
    store: &ContentStore,
    input: &str,
) -> Result<Option<(String, RefDescriptor)>, LookupError> {
    let name = store_name(input).map_err(LookupError::Invalid)?;
    for candidate in [name.as_str(), input] {
        if let Some(d) = store.get_ref(candidate)? {
            return Ok(Some((candidate.to_string(), d)));
        }
    }
    Ok(None)
}

/// Why a lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The reference does not parse.
    #[error("{0}")]
    Invalid(String),
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn familiar_and_store_names_round_trip() {
        for (typed, stored, shown) in [
            (
                "busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "docker.io/library/busybox:1",
                "docker.io/library/busybox:1",
                "busybox:1",
            ),
            ("user/app:2", "docker.io/user/app:2", "user/app:2"),
            (
                "localhost:5000/app",
                "localhost:5000/app:latest",
                "localhost:5000/app:latest",
            ),
        ] {
            let s = store_name(typed).expect(typed);
            assert_eq!(s, stored);
            assert_eq!(familiar(&s), shown);
            assert_eq!(store_name(&familiar(&s)).expect(typed), s);
        }
    }

    #[test]
    fn bad_names_are_refused_with_the_input() {
        let e = store_name("Bad Name").unwrap_err();
        assert!(e.contains("\"Bad Name\""), "{e}");
        assert!(store_name("").is_err());
    }

    #[test]
    fn find_tries_normalised_then_verbatim() {
        let d = tempfile::tempdir().expect("tempdir");
        let store = ContentStore::open(d.path()).expect("store");
        let digest = store.put_bytes(b"{}").expect("put");
        let desc = RefDescriptor::new("application/vnd.oci.image.manifest.v1+json", digest, 2);
        store
            .set_ref("docker.io/library/busybox:latest", &desc)
            .expect("set");
        let (n, _) = find(&store, "busybox").expect("find").expect("found");
        assert_eq!(n, "docker.io/library/busybox:latest");
        assert!(find(&store, "other").expect("find").is_none());
        assert!(matches!(find(&store, "UP"), Err(LookupError::Invalid(_))));
    }

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
