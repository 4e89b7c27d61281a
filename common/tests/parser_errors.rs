//! Every error path of the parser: kind, file, line, offending text and a
//! message that says what to do.

use imgfarm_common::dockerfile::error::{DockerfileError, ErrorKind};
use imgfarm_common::dockerfile::parser::{
    heredocs_in_line, parse, parse_heredoc_word, parse_named, MAX_FILE_BYTES, MAX_LINE_BYTES,
};

fn err(input: &str) -> DockerfileError {
    parse(input.as_bytes()).expect_err("must fail")
}

fn check(e: &DockerfileError, line: usize, text: &str, message: &str) {
    assert_eq!(e.kind, ErrorKind::Syntax, "{e}");
    assert_eq!(e.line, line, "{e}");
    assert_eq!(e.text, text, "{e}");
    assert!(
        e.message.contains(message),
        "{:?} lacks {message:?}",
        e.message
    );
}

#[test]
fn empty_file() {
    let e = err("");
    check(&e, 0, "", "file with no instructions");
    assert_eq!(e.file, "Dockerfile");
    assert!(e.message.contains("FROM"), "says what to add");
}

#[test]
fn only_comments_and_blanks() {
    check(
        &err("# syntax=x\n\n# hello\n   \n"),
        0,
        "",
        "file with no instructions",
    );
}

#[test]
fn env_without_value() {
    check(
        &err("FROM a\n\nENV PATH\n"),
        3,
        "ENV PATH",
        "ENV must have two arguments",
    );
}

#[test]
fn label_without_value() {
    check(
        &err("FROM a\nlabel foo\n"),
        2,
        "label foo",
        "LABEL must have two arguments",
    );
}

#[test]
fn env_pair_without_equals() {
    check(
        &err("FROM a\nENV a=b c\n"),
        2,
        "ENV a=b c",
        "can't find = in \"c\". Must be of the form: name=value",
    );
}

#[test]
fn json_array_with_non_string() {
    let e = err("FROM a\nCMD [\"echo\", [\"nested\"]]\n");
    check(
        &e,
        2,
        "CMD [\"echo\", [\"nested\"]]",
        "arrays must be comprised of strings only",
    );
    let e = err("FROM a\nCOPY [1, \"/x\"]\n");
    check(&e, 2, "COPY [1, \"/x\"]", "strings only");
    let e = err("FROM a\nHEALTHCHECK CMD [null]\n");
    check(&e, 2, "HEALTHCHECK CMD [null]", "strings only");
}

#[test]
fn error_line_is_the_instruction_start() {
    let e = err("FROM a\nRUN [\\\n  1]\n");
    check(&e, 2, "RUN [  1]", "strings only");
}

#[test]
fn unterminated_heredoc() {
    let e = err("FROM a\nRUN <<EOF\necho hi\nEOF2\n");
    check(&e, 2, "RUN <<EOF", "unterminated heredoc");
    assert!(
        e.message.contains("\"EOF\""),
        "names the delimiter: {}",
        e.message
    );
    // The second of two heredocs.
    let e = err("FROM a\nCOPY <<A <<B /d\na\nA\nb\n");
    check(&e, 2, "COPY <<A <<B /d", "\"B\"");
}

#[test]
fn duplicate_directive() {
    check(
        &err("# syntax=a\n# Syntax=b\nFROM a\n"),
        2,
        "# Syntax=b",
        "only one syntax parser directive",
    );
    check(
        &err("#escape=`\n#escape=\\\nFROM a\n"),
        2,
        "#escape=\\",
        "only one escape parser directive",
    );
    check(
        &err("# check=skip=all\n# CHECK=x\nFROM a\n"),
        2,
        "# CHECK=x",
        "only one check parser directive",
    );
}

#[test]
fn invalid_escape_token() {
    let e = err("# escape=x\nFROM a\n");
    check(
        &e,
        1,
        "# escape=x",
        "invalid escape token 'x' does not match ` or \\",
    );
    // A whitespace-only value keeps one character, as Go's lazy regexp does.
    check(
        &err("# escape=  \nFROM a\n"),
        1,
        "# escape=  ",
        "invalid escape token ' '",
    );
}

#[test]
fn file_too_large() {
    let big = vec![b'#'; MAX_FILE_BYTES + 1];
    let e = parse(&big).expect_err("too big");
    check(&e, 0, "", "over the limit");
    assert!(e.message.contains("16 MiB"), "{}", e.message);
}

#[test]
fn line_too_long() {
    let mut input = b"FROM a\nRUN ".to_vec();
    input.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES));
    input.push(b'\n');
    let e = parse(&input).expect_err("line too long");
    check(&e, 2, "", "over the limit of 1048576 bytes");
    // Exactly at the limit is fine.
    let mut ok = b"FROM a\nRUN ".to_vec();
    ok.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES - 4));
    assert!(parse(&ok).is_ok());
}

#[test]
fn too_many_arguments() {
    let line = format!("EXPOSE{}", " 1".repeat(10_001));
    let e = err(&format!("FROM a\n{line}\n"));
    check(&e, 2, &line, "10001 arguments, more than the 10000 allowed");
    let ok = format!("FROM a\nEXPOSE{}\n", " 1".repeat(10_000));
    assert!(parse(ok.as_bytes()).is_ok());
}

#[test]
fn onbuild_nested_too_deep() {
    let line = format!("{}RUN x", "ONBUILD ".repeat(9));
    check(&err(&line), 1, &line, "ONBUILD nested more than 8 levels");
    assert!(parse(format!("{}RUN x", "ONBUILD ".repeat(8)).as_bytes()).is_ok());
}

#[test]
fn heredoc_line_nested_too_deep() {
    let line = format!("RUN <<EOF {}x{}", "${a:-".repeat(70), "}".repeat(70));
    let e = err(&format!("{line}\nEOF\n"));
    check(&e, 1, &line, "nested too deeply");
}

#[test]
fn heredoc_word_errors() {
    for w in ["<<'EOF", "<<\"EOF", "<<EOF'", "<<EOF\""] {
        let e = parse_heredoc_word(w).expect_err("unterminated quote");
        check(&e, 0, w, "invalid heredoc delimiter");
    }
    let e = heredocs_in_line(&format!("RUN <<{}", "${a:-".repeat(70))).expect_err("too deep");
    assert!(e.message.contains("nested too deeply"));
}

#[test]
fn file_name_is_reported() {
    let e = parse_named(b"FROM a\nENV X\n", "build/Dockerfile.dev").expect_err("fails");
    assert_eq!(e.file, "build/Dockerfile.dev");
    assert!(
        e.to_string()
            .starts_with("build/Dockerfile.dev:2: ENV must have two arguments"),
        "{e}"
    );
    assert!(e.to_string().ends_with(": ENV X"), "{e}");
}
