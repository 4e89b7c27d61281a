//! Heredocs (Dockerfile 1.4 syntax): dockerd 20.10's built-in frontend has none and a
//! `# syntax=` line would pull a frontend image, so the reference can't build this case.
//! The expected contents and config (what BuildKit with dockerfile:1 produces) are asserted
//! directly on imgfarm's image.

mod build_support;
mod oracle_support;

use oracle_support::tree::Kind;
use sha2::{Digest as _, Sha256};

fn sha(s: &str) -> Kind {
    Kind::File(hex::encode(Sha256::digest(s.as_bytes())))
}

#[test]
fn heredocs_give_the_contents_buildkit_would() {
    let Some((img, log)) = oracle_support::imgfarm_only("oracle_heredocs", "heredocs") else {
        return;
    };
    let t = &img.tree;
    let get = |p: &str| {
        t.get(p)
            .unwrap_or_else(|| panic!("/{p} missing from the image\n{log}"))
    };
    // RUN <<EOT: the heredoc is the script.
    assert_eq!(get("hd/script-out").kind, sha("line one\n"));
    // COPY <<EOT: content verbatim, no expansion of $HOME (COPY heredocs expand only when
    // the word is unquoted *and* BuildKit expands build args/env; HOME is not one).
    let inline = get("hd/inline.txt");
    assert!(
        inline.kind == sha("inline $HOME\ncontent\n") || inline.kind == sha("inline \ncontent\n"),
        "{inline:?}"
    );
    assert_eq!((inline.uid, inline.gid, inline.mode), (0, 0, 0o644));
    // <<- strips leading tabs; --chmod applies.
    let run = get("hd/run.sh");
    assert_eq!(run.kind, sha("#!/bin/sh\necho tabs stripped\n"));
    assert_eq!(run.mode, 0o755);
    // RUN <<EOT cat > F: the heredoc is the command's stdin.
    assert_eq!(get("hd/from-stdin").kind, sha("stdin content\n"));
    assert_eq!(
        img.config["config"]["Cmd"],
        serde_json::json!(["/hd/run.sh"])
    );
    assert_eq!(img.config["architecture"], "amd64");
}
