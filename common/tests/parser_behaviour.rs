//! Parser behaviour the dump corpus cannot show: line endings, directives,
//! warnings, heredoc bodies and line ranges, comments, JSON form, bounds.

use imgfarm_common::dockerfile::ast::{Heredoc, Node, ParseResult};
use imgfarm_common::dockerfile::dump::dump;
use imgfarm_common::dockerfile::parser::parse;

fn ok(input: &str) -> ParseResult {
    parse(input.as_bytes()).unwrap_or_else(|e| panic!("parses: {e}"))
}

fn dumped(input: &str) -> String {
    dump(&ok(input).ast)
}

#[test]
fn crlf_is_stripped_like_upstream_but_kept_in_heredoc_bodies() {
    let r = ok("FROM a\r\nRUN echo \\\r\n  hi\r\nRUN <<EOF\r\nbody\r\nEOF\r\nUSER me\r\n");
    assert_eq!(
        dump(&r.ast),
        "(from \"a\")\n(run \"echo   hi\")\n(run \"<<EOF\")\n(user \"me\")"
    );
    let run = &r.ast.children[2];
    assert_eq!(run.heredocs[0].content, "body\r\n");
    assert_eq!((run.start_line, run.end_line), (4, 6));
}

#[test]
fn byte_order_mark_and_backtick_escape() {
    let r = ok("\u{FEFF}# escape=`\nFROM a `\n b\nRUN echo \\\n");
    assert_eq!(r.escape_token, '`');
    assert_eq!(dump(&r.ast), "(from \"a\" \"b\")\n(run \"echo \\\\\")");
}

#[test]
fn directives_are_captured_case_insensitively_and_only_at_the_top() {
    let r = ok("# SYNTAX = docker/dockerfile:1.7  \n#check=skip=all\n# Escape=\\\nFROM a\n");
    assert_eq!(r.syntax.as_deref(), Some("docker/dockerfile:1.7"));
    assert_eq!(r.check.as_deref(), Some("skip=all"));
    assert_eq!(r.escape_token, '\\');

    // After an instruction, a directive is only a comment.
    let r = ok("FROM a\n# escape=`\nRUN x \\\n y\n");
    assert_eq!(r.escape_token, '\\');
    assert_eq!(dump(&r.ast), "(from \"a\")\n(run \"x  y\")");

    // After an ordinary comment or a blank line, too.
    for input in [
        "# hello\n# escape=`\nFROM a\n",
        "\n# escape=`\nFROM a\n",
        "# foo=bar\n# escape=`\nFROM a\n",
    ] {
        assert_eq!(ok(input).escape_token, '\\', "{input:?}");
    }
    // Repeating a directive after detection ended is fine (it is a comment).
    assert!(parse(b"# syntax=a\nFROM a\n# syntax=b\n").is_ok());
}

#[test]
fn empty_continuation_lines_warn() {
    let input = "FROM alpine:3.6\n\nRUN valid \\\n    continuation\n\nRUN something \\\n\n    following \\\n\n    more\n\nRUN another \\\n\n    thing\nRUN non-indented \\\n# this is a comment\n   after-comment\n\nRUN indented \\\n    # this is an indented comment\n    comment\n";
    let r = ok(input);
    assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
    assert!(r.warnings[0]
        .message
        .starts_with("Empty continuation line found in: RUN something     following     more"));
    assert_eq!(r.warnings[0].line, 10);
    assert_eq!(r.warnings[1].line, 14);
    assert_eq!(
        dump(&r.ast),
        "(from \"alpine:3.6\")\n(run \"valid     continuation\")\n(run \"something     following     more\")\n(run \"another     thing\")\n(run \"non-indented    after-comment\")\n(run \"indented     comment\")"
    );
}

fn doc(name: &str, content: &str, expand: bool, chomp: bool) -> Heredoc {
    Heredoc {
        name: name.into(),
        content: content.into(),
        expand,
        chomp,
        file_descriptor: 0,
    }
}

#[test]
fn heredoc_bodies_are_verbatim_and_counted_in_line_ranges() {
    let r = ok("FROM a\nRUN <<EOF bash \\\n  -x\n# not a comment \\\n\nEOF\nCOPY <<-\"A\" /a\n\tx $Y\n\t\tA\nRUN after\n");
    let run = &r.ast.children[1];
    assert_eq!(dump(run), "run \"<<EOF bash   -x\"");
    assert_eq!(
        run.heredocs,
        vec![doc("EOF", "# not a comment \\\n\n", true, false)]
    );
    assert_eq!((run.start_line, run.end_line), (2, 6));
    let copy = &r.ast.children[2];
    assert_eq!(copy.heredocs, vec![doc("A", "\tx $Y\n", false, true)]);
    assert_eq!((copy.start_line, copy.end_line), (7, 9));
    assert_eq!(r.ast.children[3].start_line, 10);
    assert_eq!((r.ast.start_line, r.ast.end_line), (1, 10));
}

#[test]
fn heredocs_only_for_run_copy_add_in_shell_form() {
    let r =
        ok("FROM a\nONBUILD RUN <<EOF\nx\nEOF\nUSER <<X\nX\nRUN [\"<<EOF\"]\nadd <<F /f\nf\nF\n");
    let onbuild = &r.ast.children[1];
    assert_eq!(dump(onbuild), "onbuild (run \"<<EOF\")");
    assert_eq!(onbuild.heredocs, vec![doc("EOF", "x\n", true, false)]);
    assert!(r.ast.children[2].heredocs.is_empty(), "USER takes none");
    assert_eq!(
        r.ast.children[3].value, "X",
        "the would-be body is an instruction"
    );
    assert!(r.ast.children[4].json && r.ast.children[4].heredocs.is_empty());
    assert_eq!(
        r.ast.children[5].heredocs,
        vec![doc("F", "f\n", true, false)]
    );
}

#[test]
fn several_heredocs_and_file_descriptors() {
    let r = ok("FROM a\nRUN 3<<A cat /dev/fd/3 <<'B'\n1\nA\n2\nB\n");
    let mut a = doc("A", "1\n", true, false);
    a.file_descriptor = 3;
    assert_eq!(
        r.ast.children[1].heredocs,
        vec![a, doc("B", "2\n", false, false)]
    );
}

#[test]
fn unknown_instructions_and_flags_parse() {
    let r = ok("FROM a\nFOO --x=1 bar baz\nCMD --doit [\"a\"]\n");
    assert_eq!(
        dump(&r.ast),
        "(from \"a\")\n(foo [\"--x=1\"] \"\")\n(cmd [\"--doit\"] \"a\")"
    );
    assert_eq!(r.ast.children[1].value, "FOO");
    assert!(r.ast.children[2].json);
    assert!(!r.ast.children[1].json);
}

#[test]
fn comments_before_instructions_are_kept() {
    let r = ok("# one\n  # two\nFROM a\n#\n# three\nRUN x\nRUN y\n");
    assert_eq!(r.ast.children[0].prev_comment, ["one", "two"]);
    assert_eq!(r.ast.children[1].prev_comment, ["three"]);
    assert!(r.ast.children[2].prev_comment.is_empty());
}

#[test]
fn original_text_joins_continuations() {
    let r = ok("FROM a\nRUN a \\\n  b\n");
    assert_eq!(r.ast.children[1].original, "RUN a   b");
    assert_eq!(r.ast.children[1].args(), ["a   b"]);
}

#[test]
fn invalid_utf8_is_replaced_with_a_warning() {
    let r = parse(b"FROM a\nRUN echo \xff\xfe\n").expect("parses");
    assert_eq!(r.ast.children[1].args(), ["echo \u{FFFD}\u{FFFD}"]);
    assert_eq!(r.warnings.len(), 1);
    assert_eq!(r.warnings[0].line, 2);
}

#[test]
fn shell_form_fallbacks_and_words() {
    assert_eq!(dumped("CMD [\"a\", 'b']"), "(cmd \"[\\\"a\\\", 'b']\")");
    assert_eq!(dumped("COPY [\"a\" b"), "(copy \"[\\\"a\\\"\" \"b\")");
    assert_eq!(dumped("ARG a=\"1 2\" b"), "(arg \"a=\\\"1 2\\\"\" \"b\")");
    assert_eq!(
        dumped("ENV a=1 b=\"2 3\""),
        "(env \"a\" \"1\" \"=\" \"b\" \"\\\"2 3\\\"\" \"=\")"
    );
    assert_eq!(dumped("LABEL a b c"), "(label \"a\" \"b c\" \"\")");
    assert_eq!(dumped("HEALTHCHECK NONE"), "(healthcheck \"NONE\")");
    assert_eq!(dumped("ONBUILD"), "(onbuild)");
    assert_eq!(
        dumped("ONBUILD ONBUILD RUN x"),
        "(onbuild (onbuild (run \"x\")))"
    );
    assert_eq!(dumped("\\\n"), "(\"\")");
    assert_eq!(
        dumped("ONBUILD COPY --from=x . /"),
        "(onbuild (copy [\"--from=x\"] \".\" \"/\"))"
    );
    // Upstream's TestParseWords cases with non-ASCII text.
    assert_eq!(dumped("ARG àöû"), "(arg \"àöû\")");
    assert_eq!(
        dumped("ARG föo bàr \"âbc xÿz\""),
        "(arg \"föo\" \"bàr\" \"\\\"âbc xÿz\\\"\")"
    );
}

/// The largest argument list the parser accepts must clone, compare, print
/// and drop on a test thread's stack (the list is a `Box` chain).
#[test]
fn largest_argument_list_is_stack_safe() {
    let input = format!("FROM a\nENV{}\n", " k=v".repeat(3_333));
    let r = ok(&input);
    let env: &Node = &r.ast.children[1];
    assert_eq!(env.args().len(), 9_999);
    let copy = r.ast.clone();
    assert_eq!(copy, r.ast);
    assert!(format!("{copy:?}").len() > 9_999);
    assert!(dump(&copy).len() > 9_999);
    drop(copy);
}

/// Builder flags always use a backslash escape, as BuildKit's
/// `extractBuilderFlags` does, even under `# escape=``.
#[test]
fn builder_flags_escape_with_backslash_under_backtick_escape() {
    let r = ok("# escape=`\nFROM a\nCOPY --x=a\\ b c\nCOPY --y=a` b c\n");
    assert_eq!(r.ast.children[1].flags, ["--x=a b"]);
    assert_eq!(r.ast.children[1].args(), ["c"]);
    assert_eq!(r.ast.children[2].flags, ["--y=a`"]);
    assert_eq!(r.ast.children[2].args(), ["b", "c"]);
}

/// Keywords are matched with Go's simple lower-case mapping, so a dotted
/// capital I still names ENTRYPOINT, in the parser and in `Node::keyword`.
#[test]
fn keyword_lowercasing_follows_go() {
    let r = ok("FROM a\nENTRYPO\u{130}NT [\"x\"]\n");
    let node = &r.ast.children[1];
    assert!(node.json, "dispatched as ENTRYPOINT");
    assert_eq!(node.keyword(), "entrypoint");
    assert_eq!(dump(node), "entrypoint \"x\"");
}
