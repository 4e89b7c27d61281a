//! The one rule for "may this vertex's result be reused?", shared by the
//! coordinator engine (local and farm builds) and the farm worker's cache.
//!
//! A vertex key covers the vertex's op, platform and input keys (DESIGN.md
//! "Cache keys"). It does not cover content read at run time: an `ADD URL`
//! without a checksum downloads whatever the server returns now, so its
//! result is never reused, nor is the result of anything fed by it,
//! directly or not (BuildKit likewise re-resolves an unpinned HTTP source
//! each build). `--no-cache` makes every vertex run again.

use super::op::Op;
use super::Vertex;
use crate::oci::Digest;
use std::collections::BTreeSet;

/// May a result of `op` be reused by key alone? Not for an `ADD URL`
/// without a checksum.
pub fn reusable_op(op: &Op) -> bool {
    !matches!(op, Op::Url(u) if !u.content_addressed)
}

/// Keys of `vertices` (inputs before users) that must run again however a
/// result is cached: every vertex with `no_cache`, else each vertex whose op
/// is not reusable and everything fed by one.
pub fn fresh<'a>(
    vertices: impl IntoIterator<Item = &'a Vertex>,
    no_cache: bool,
) -> BTreeSet<Digest> {
    let mut fresh = BTreeSet::new();
    for v in vertices {
        if no_cache || !reusable_op(&v.op) || v.inputs.iter().any(|i| fresh.contains(i)) {
            fresh.insert(v.key.clone());
        }
    }
    fresh
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::op::{ContextOp, UrlOp};

    fn url(pinned: bool) -> Vertex {
        Vertex::new(
            None,
            Op::Url(UrlOp {
                url: "https://example.invalid/f".into(),
                filename: "f".into(),
                checksum: pinned.then(|| Digest::sha256_of(b"f")),
                content_addressed: pinned,
            }),
            vec![],
            "ADD".into(),
            1,
        )
    }

    #[test]
    fn unpinned_urls_and_their_users_run_again() {
        let op = |n: &str| {
            Op::Context(ContextOp {
                sources: vec![n.into()],
                excludes: vec![],
                selection: Digest::sha256_of(n.as_bytes()),
            })
        };
        let ctx = Vertex::new(None, op("a"), vec![], "ctx".into(), 1);
        let (pinned, loose) = (url(true), url(false));
        let user = Vertex::new(None, op("b"), vec![loose.key.clone()], "user".into(), 2);
        let all = [ctx.clone(), pinned.clone(), loose.clone(), user.clone()];
        let f = fresh(&all, false);
        assert_eq!(
            f,
            [loose.key.clone(), user.key.clone()].into_iter().collect()
        );
        assert_eq!(fresh(&all, true).len(), 4);
        assert!(reusable_op(&pinned.op) && !reusable_op(&loose.op));
    }
}
