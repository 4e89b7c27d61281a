//! Unit tests of the public behaviour: every error message, the options,
//! and the resource bounds. The corpus-driven tests are in
//! `tests/shell_conformance.rs`.

use std::time::{Duration, Instant};

use super::*;

fn env() -> Vec<(String, String)> {
    [
        ("PWD", "/home"),
        ("EMPTY", ""),
        ("SPACE", "a  b"),
        ("FOO", "xxyy"),
    ]
    .iter()
    .map(|&(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn word(input: &str) -> Result<String, ShellError> {
    Lexer::new('\\').process_word(input, &env())
}

fn error(input: &str) -> String {
    match word(input) {
        Ok(value) => panic!("{input:?} expanded to {value:?}, expected an error"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn quote_errors() {
    assert_eq!(
        error("a'b"),
        "unexpected end of statement while looking for matching single-quote"
    );
    assert_eq!(
        error("a\"b"),
        "unexpected end of statement while looking for matching double-quote"
    );
    assert_eq!(
        error("\"b\\"),
        "unexpected end of statement while looking for matching double-quote"
    );
}

#[test]
fn brace_errors() {
    assert_eq!(error("${"), "syntax error: missing '}'");
    assert_eq!(error("${PWD"), "syntax error: missing '}'");
    assert_eq!(error("${PWD:-x"), "syntax error: missing '}'");
    // An error inside an operand that ran to the end becomes "missing }".
    assert_eq!(error("${X:-'a}"), "syntax error: missing '}'");
    assert_eq!(error("${PWD/a"), "syntax error: missing '/' in ${}");
    assert_eq!(error("${PWD/a/b"), "syntax error: missing '}'");
    for input in ["${}", "${{a}", "${:}", "${:-x}"] {
        assert_eq!(error(input), "syntax error: bad substitution", "{input}");
    }
}

#[test]
fn unsupported_modifiers() {
    assert_eq!(
        error("${PWD=x}"),
        "unsupported modifier (=) in substitution"
    );
    assert_eq!(
        error("${PWD:=x}"),
        "unsupported modifier (:=) in substitution"
    );
    assert_eq!(
        error("${PWD:#x}"),
        "unsupported modifier (:#) in substitution"
    );
    assert_eq!(
        error("${PWD:%%x}"),
        "unsupported modifier (:%) in substitution"
    );
    assert_eq!(error("${.}"), "unsupported modifier (.) in substitution");
    assert_eq!(
        error("${PWD:x}"),
        "unsupported modifier (:x) in substitution"
    );
}

#[test]
fn required_variable_messages() {
    assert_eq!(error("${X?}"), "X: is not allowed to be unset");
    assert_eq!(error("${X:?}"), "X: is not allowed to be unset");
    assert_eq!(error("${EMPTY:?}"), "EMPTY: is not allowed to be empty");
    assert_eq!(error("${X?set X to a tag}"), "X: set X to a tag");
    assert_eq!(error("${EMPTY:?need $PWD}"), "EMPTY: need /home");
    assert_eq!(word("${EMPTY?}").as_deref(), Ok(""));
    assert_eq!(word("${PWD:?}").as_deref(), Ok("/home"));
}

#[test]
fn invalid_pattern_messages() {
    assert_eq!(
        error("${FOO#\\a}"),
        "invalid pattern (\\a) in substitution: invalid escape '\\a'"
    );
    assert_eq!(
        error("${FOO/\\a/b}"),
        "invalid pattern (\\a) in substitution: invalid escape '\\a'"
    );
    let env = [("P".to_owned(), "x\\".to_owned())];
    let result = Lexer::new('\\').process_word("${P#$P}", &env[..].to_vec());
    assert_eq!(
        result.map_err(|e| e.to_string()),
        Err(
            "invalid pattern (x\\) in substitution: invalid escape '\\' at the end of the pattern"
                .to_owned()
        )
    );
}

#[test]
fn limit_messages() {
    let long = "a".repeat(Limits::MAX_WORD_BYTES + 1);
    assert_eq!(
        word(&long).map_err(|e| e.to_string()),
        Err(format!(
            "word is {} bytes, over the 1048576-byte limit for variable expansion; \
             shorten the instruction or move the text into a file",
            long.len()
        ))
    );
    let deep = "${X:-".repeat(200);
    assert_eq!(
        error(&deep),
        "variable expansions are nested more than 100 levels deep; flatten the expression"
    );
    let lexer = Lexer::new('\\').limits(Limits {
        max_result_bytes: 8,
        ..Limits::default()
    });
    assert_eq!(
        lexer
            .process_word("$PWD$PWD", &env())
            .map_err(|e| e.to_string()),
        Err("variable expansion would produce more than 8 bytes; \
             check for variables that are repeated or hold very large values"
            .to_owned())
    );
    let lexer = Lexer::new('\\').limits(Limits {
        max_match_steps: 5,
        ..Limits::default()
    });
    assert_eq!(
        lexer
            .process_word("${FOO#*y}", &env())
            .map_err(|e| e.to_string()),
        Err("pattern (*y) needs more than 5 steps to match; \
             use fewer `*` wildcards or a shorter value"
            .to_owned())
    );
}

#[test]
fn limit_errors_are_not_masked_at_the_end_of_the_word() {
    let deep = format!("{}x", "${X:-".repeat(150));
    assert!(matches!(
        word(&deep),
        Err(ShellError::NestingTooDeep { max: 100 })
    ));
}

#[test]
fn deepest_allowed_nesting_fits_on_a_small_stack() {
    // 99 nested operands, each inside double quotes: the deepest recursion
    // the default limits allow. Run on a 1 MiB stack (tokio's default is 2).
    let input = format!("{}x{}", "\"${X:-".repeat(99), "}\"".repeat(99));
    let handle = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(move || Lexer::default().process_word(&input, &env()))
        .expect("spawn");
    assert_eq!(handle.join().expect("no overflow").as_deref(), Ok("x"));
}

#[test]
fn blow_up_is_refused_quickly() {
    let big: Vec<(String, String)> = vec![("A".to_owned(), "x".repeat(1 << 20))];
    let started = Instant::now();
    let many = "$A".repeat(100_000);
    assert!(matches!(
        Lexer::default().process_word(&many, &big),
        Err(ShellError::ExpansionTooLarge { .. })
    ));
    // Nested copies of a large value hit the work bound.
    let nested = format!("{}$A$A$A$A{}", "${X:-a".repeat(90), "}".repeat(90));
    assert!(matches!(
        Lexer::default().process_word(&nested, &big),
        Err(ShellError::ExpansionTooLarge { .. })
    ));
    // A pattern with many wildcards against a long value hits the step bound.
    let long: Vec<(String, String)> = vec![("A".to_owned(), "a".repeat(100_000))];
    let pattern = format!("${{A#{}b}}", "*a".repeat(1000));
    assert!(matches!(
        Lexer::default().process_word(&pattern, &long),
        Err(ShellError::PatternTooComplex { .. })
    ));
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn raw_quotes_and_escapes() {
    let env = env();
    let raw = Lexer::new('\\').raw_quotes(true);
    assert_eq!(
        raw.process_word("'a b'\"$PWD\"", &env).as_deref(),
        Ok("'a b'\"/home\"")
    );
    let raw = Lexer::new('\\').raw_escapes(true);
    assert_eq!(raw.process_word("a\\ b", &env).as_deref(), Ok("a\\ b"));
    assert_eq!(
        raw.process_word("\"\\$x\\a\"", &env).as_deref(),
        Ok("\\$x\\\\a")
    );
    assert_eq!(raw.process_word("x\\", &env).as_deref(), Ok("x\\"));
    // Operands of `-` have their escapes processed even so.
    assert_eq!(raw.process_word("${X:-\\$y}", &env).as_deref(), Ok("$y"));
}

#[test]
fn skip_unset_env_keeps_references() {
    let lexer = Lexer::new('\\').skip_unset_env(true);
    let env = env();
    let cases = [
        ("$X", "$X"),
        ("${X}", "${X}"),
        ("${X:-$PWD}", "${X:-/home}"),
        ("${X//a/b}", "${X/a/b}"),
        ("${X:=a}", "${X:=a}"),
        ("$PWD", "/home"),
        ("${EMPTY:-d}", "d"),
    ];
    for (input, expected) in cases {
        assert_eq!(
            lexer.process_word(input, &env).as_deref(),
            Ok(expected),
            "{input}"
        );
    }
}

#[test]
fn skip_process_quotes_keeps_quotes_literal() {
    let lexer = Lexer::new('\\').skip_process_quotes(true);
    assert_eq!(
        lexer.process_word("'$PWD' \"a\"", &env()).as_deref(),
        Ok("'/home' \"a\"")
    );
}

#[test]
fn backtick_escape() {
    let lexer = Lexer::new('`');
    let env = env();
    assert_eq!(lexer.process_word("a`$PWD", &env).as_deref(), Ok("a$PWD"));
    assert_eq!(
        lexer.process_word("C:\\dir\\$PWD", &env).as_deref(),
        Ok("C:\\dir\\/home")
    );
    assert_eq!(lexer.process_word("\"`\"\\\"", &env).as_deref(), Ok("\"\\"));
    // Patterns still use backslash escapes.
    assert_eq!(
        lexer.process_word("${FOO#\\x}", &env),
        Err(ShellError::InvalidPattern {
            pattern: "\\x".to_owned(),
            escaped: Some('x'),
        })
    );
}

#[test]
fn word_splitting() {
    let lexer = Lexer::default();
    let env = env();
    let words = |input: &str| lexer.process_words(input, &env);
    assert_eq!(
        words("a $SPACE c"),
        Ok(vec!["a".into(), "a".into(), "b".into(), "c".into()])
    );
    assert_eq!(words("\"$SPACE\""), Ok(vec!["a  b".to_owned()]));
    assert_eq!(words("\"\""), Ok(vec![]));
    assert_eq!(words("a \"\" b"), Ok(vec!["a".to_owned(), "b".to_owned()]));
    assert_eq!(words("  "), Ok(vec![]));
    assert_eq!(words("x\u{a0}y"), Ok(vec!["x".to_owned(), "y".to_owned()]));
    // The prefix before a `${X:-…}` is kept (see the module docs).
    assert_eq!(words("a${X:-b}c"), Ok(vec!["abc".to_owned()]));
}

#[test]
fn matches_are_recorded() {
    let expansion = Lexer::default()
        .process_word_with_matches("$PWD ${X:-$EMPTY} $1 ${FOO#$Y}", &env())
        .expect("expands");
    assert_eq!(expansion.result, "/home   xxyy");
    let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(expansion.matched, names(&["EMPTY", "FOO", "PWD"]));
    assert_eq!(expansion.unmatched, names(&["1", "X", "Y"]));
}

#[test]
fn case_insensitive_lookup() {
    let lexer = Lexer::default().case_insensitive(true);
    assert_eq!(
        lexer.process_word("$pwd${Pwd}", &env()).as_deref(),
        Ok("/home/home")
    );
    assert_eq!(
        Lexer::default().process_word("$pwd", &env()).as_deref(),
        Ok("")
    );
}

#[test]
fn quirks_kept_from_buildkit() {
    // A leading byte-order mark is dropped (Go's text/scanner).
    assert_eq!(word("\u{feff}$PWD").as_deref(), Ok("/home"));
    // `##` is recognised after quote removal.
    assert_eq!(word("${FOO#'#'*x}").as_deref(), Ok("yy"));
    // `//` replacement text is a Go regexp template.
    assert_eq!(word("${FOO//x/'<$$0>'}").as_deref(), Ok("<$0><$0>yy"));
    // Unquoted, `$$` is the (unset) special parameter `$`.
    assert_eq!(word("${FOO//x/<$$0>}").as_deref(), Ok("<0><0>yy"));
    assert_eq!(word("${FOO//x/'[$0]'}").as_deref(), Ok("[x][x]yy"));
    assert_eq!(word("${FOO/x/'[$0]'}").as_deref(), Ok("[$0]xyy"));
    // Wildcards do not cross newlines, like Go's `.`.
    let env = vec![("NL".to_owned(), "a\nb".to_owned())];
    assert_eq!(
        Lexer::default().process_word("${NL##*}", &env).as_deref(),
        Ok("\nb")
    );
    // Digits and special parameters.
    assert_eq!(word("$12x$@@").as_deref(), Ok("x@"));
    assert_eq!(word("${+x}").as_deref(), Ok(""));
}
