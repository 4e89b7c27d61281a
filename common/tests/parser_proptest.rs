//! Property tests: the parser never panics, on arbitrary bytes or on
//! Dockerfile-like text, and what it returns is well formed.

use imgfarm_common::dockerfile::ast::ParseResult;
use imgfarm_common::dockerfile::dump::{dump, go_quote};
use imgfarm_common::dockerfile::parser::{heredocs_in_line, parse, parse_heredoc_word};
use proptest::prelude::*;

/// Invariants of a successful parse of `input`.
fn check_tree(input: &[u8], r: &ParseResult) {
    let lines = input.split(|b| *b == b'\n').count();
    let root = &r.ast;
    assert!(!root.children.is_empty());
    let mut prev_end = 0;
    for c in &root.children {
        assert!(c.start_line > prev_end, "instructions are ordered");
        assert!(c.start_line <= c.end_line);
        assert!(c.end_line <= lines);
        prev_end = c.end_line;
    }
    assert_eq!(root.start_line, root.children[0].start_line);
    assert_eq!(root.end_line, prev_end);
    let d = dump(root);
    assert_eq!(
        d.lines().count(),
        root.children.len(),
        "one dump line per instruction"
    );
    assert!(r.escape_token == '\\' || r.escape_token == '`');
}

const PIECES: &[&str] = &[
    "FROM",
    "from",
    "RUN",
    "run",
    "CMD",
    "ENTRYPOINT",
    "SHELL",
    "COPY",
    "ADD",
    "VOLUME",
    "ENV",
    "LABEL",
    "ARG",
    "EXPOSE",
    "USER",
    "WORKDIR",
    "MAINTAINER",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "ONBUILD",
    "FOO",
    "NONE",
    "CONNECT",
    " ",
    "  ",
    "\t",
    "\n",
    "\n",
    "\n",
    "\r\n",
    "\r",
    "\\",
    "\\\n",
    "`",
    "`\n",
    "#",
    "# escape=`\n",
    "# escape=\\\n",
    "#syntax=x\n",
    "# check=skip=all\n",
    "--",
    "--from=build",
    "--mount=type=cache,target=/x",
    "--chown=\"a b\"",
    "'",
    "\"",
    "[",
    "]",
    ",",
    "[\"a\", \"b\"]",
    "[1]",
    "[\"\\u0000\"]",
    "=",
    "a=b",
    "x",
    "$",
    "${",
    "}",
    "${X:-",
    "$X",
    "<<",
    "<<EOF",
    "<<-EOF",
    "<<'EOF'",
    "<<\"EOF\"",
    "3<<EOF",
    "<<  EOF",
    "EOF",
    "\tEOF",
    "é",
    "♥",
    "\u{a0}",
    "\u{2028}",
    "\u{feff}",
    "\0",
    "\u{7f}",
];

fn dockerfile_ish() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 0..80).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(input in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(r) = parse(&input) {
            check_tree(&input, &r);
        }
    }

    #[test]
    fn parse_never_panics_on_dockerfile_like_text(input in dockerfile_ish()) {
        let first = parse(input.as_bytes());
        if let Ok(r) = &first {
            check_tree(input.as_bytes(), r);
        }
        // Deterministic: the same input gives the same answer.
        let again = parse(input.as_bytes());
        prop_assert_eq!(
            first.as_ref().map(|r| dump(&r.ast)).map_err(|e| e.to_string()),
            again.as_ref().map(|r| dump(&r.ast)).map_err(|e| e.to_string())
        );
    }

    #[test]
    fn heredoc_detection_never_panics(line in dockerfile_ish(), word in "\\PC{0,20}") {
        let _ = heredocs_in_line(&line);
        let _ = parse_heredoc_word(&word);
    }

    #[test]
    fn quoting_has_no_raw_controls(s in "\\PC*|[\\x00-\\x20\\x7f-\\u{a0}]*") {
        let q = go_quote(&s);
        prop_assert!(q.starts_with('"') && q.ends_with('"'));
        prop_assert!(!q.chars().any(|c| c.is_control()));
    }
}
