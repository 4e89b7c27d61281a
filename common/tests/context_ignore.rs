//! `.dockerignore` matching: reading rules, Docker's pattern semantics,
//! exceptions, `**`, errors, and the file-precedence rule. The vectors are
//! written from the behaviour of moby/patternmatcher and Go's
//! `filepath.Match`.

use imgfarm_common::dockerfile::ignore::{
    find_ignore_file, IgnoreError, IgnoreMatcher, ParentMatches,
};
use proptest::prelude::*;

fn matcher(patterns: &[&str]) -> IgnoreMatcher {
    let owned: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
    IgnoreMatcher::from_patterns(&owned, "test").expect("valid patterns")
}

/// What a walker concludes for `path`, feeding each parent's results down.
fn walk_result(m: &IgnoreMatcher, path: &str) -> bool {
    let mut state = ParentMatches::default();
    let mut prefix = String::new();
    let parts: Vec<&str> = path.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(part);
        let (excluded, next) = m.matches_under(&prefix, &state);
        if i + 1 == parts.len() {
            return excluded;
        }
        state = next;
    }
    false
}

/// (pattern, path, excluded) with one pattern, where the direct match, the
/// parent-directory rule and the walk all agree.
const SINGLE: &[(&str, &str, bool)] = &[
    ("*", "main.go", true),
    ("*", "dir/main.go", true),
    ("*.go", "main.go", true),
    ("*.go", "dir/main.go", false),
    ("**", "file", true),
    ("**", "dir/file", true),
    ("**/", "file", true),
    ("**/**", "dir/file", true),
    ("dir/**", "dir/file", true),
    ("dir/**", "dir/dir2/file", true),
    ("dir/**", "dir", false),
    ("**/dir", "dir", true),
    ("**/dir", "dir/file", true),
    ("**/dir", "a/b/dir/file", true),
    ("**/dir2/*", "dir/dir2/file", true),
    ("**/dir2/**", "dir/dir2/dir3/file", true),
    ("**file", "file", true),
    ("**file", "dir/file", true),
    ("**/file", "dir/dir/file", true),
    ("**/file*", "dir/dir/file.txt", true),
    ("**/file*txt", "dir/dir/file.txt", true),
    ("**/file*.txt*", "dir/dir/file.txt", true),
    ("**/**/*.txt", "dir/dir/file.txt", true),
    ("**/**/*.txt2", "dir/dir/file.txt", false),
    ("**/*.txt", "file.txt", true),
    ("a**/*.txt", "a/file.txt", true),
    ("a**/*.txt", "a/dir/dir/file.txt", true),
    ("a/*.txt", "a/dir/file.txt", false),
    ("a/*.txt", "a/file.txt", true),
    ("a/*.txt**", "a/file.txt", true),
    ("a[b-d]e", "ae", false),
    ("a[b-d]e", "ace", true),
    ("a[b-d]e", "aae", false),
    ("a[^b-d]e", "aze", true),
    (".*", ".foo", true),
    (".*", "foo", false),
    ("abc.def", "abcdef", false),
    ("abc.def", "abc.def", true),
    ("abc?def", "abcZdef", true),
    ("abc?def", "abcdef", false),
    ("**/foo/bar", "foo/bar", true),
    ("**/foo/bar", "dir/dir2/foo/bar", true),
    ("abc/**", "abc", false),
    ("abc/**", "abc/def/ghi", true),
    ("**/.foo", ".foo", true),
    ("**/.foo", "bar.foo", false),
    ("a(b)c/def", "a(b)c/def", true),
    ("a(b)c/def", "a(b)c/xyz", false),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
    (
        "dist/*.whl",
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        true,
    ),
    ("a\\\\", "a\\", true),
    ("a\\*b", "a*b", true),
    ("a\\*b", "axb", false),
    // Go filepath.Match vectors, through the matcher.
    ("a*", "ab/c", true),
    ("a*/b", "abc/b", true),
    ("a*/b", "a/c/b", false),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
    ("a*b?c*x", "abxbbxdbxebxczzx", true),
    ("a*b?c*x", "abxbbxdbxebxczzy", false),
    ("ab[^c]", "abc", false),
    ("ab[^e-g]", "abc", true),
    ("a?b", "a☺b", true),
    ("a???b", "a☺b", false),
    ("[a-ζ]*", "α", true),
    ("*[a-ζ]", "A", false),
    ("a?b", "a/b", false),
    ("a*b", "a/b", false),
    ("[\\]a]", "]", true),
    ("[\\-]", "-", true),
    ("[x\\-]", "-", true),
    ("[x\\-]", "z", false),
    ("*x", "xxx", true),
    // Cleaning: the pattern is filepath.Clean-ed before matching.
    ("./docs/", "docs/README.md", true),
    ("docs//api/../", "docs/x", true),
];

#[test]
fn single_pattern_table() {
    assert!(SINGLE.len() > 70, "table shrank");
    for &(pattern, path, want) in SINGLE {
        let m = matcher(&[pattern]);
        assert_eq!(m.matches(path), want, "matches({pattern:?}, {path:?})");
        assert_eq!(walk_result(&m, path), want, "walk({pattern:?}, {path:?})");
    }
}

/// (patterns, path, excluded): order, exceptions and the parent rule.
const MULTI: &[(&[&str], &str, bool)] = &[
    (&["*.go", "!fileutils.go"], "fileutils.go", false),
    (&["!fileutils.go", "*.go"], "fileutils.go", true),
    (&["docs", "!docs/README.md"], "docs/README.md", false),
    (&["docs", "!docs/README.md"], "docs/other.md", true),
    (&["docs/", "!docs/README.md"], "docs/README.md", false),
    (&["docs/*", "!docs/README.md"], "docs/README.md", false),
    (&["**", "!util/docker/web"], "util/docker/web/foo", false),
    (
        &["**", "!util/docker/web", "util/docker/web/foo"],
        "util/docker/web/foo",
        true,
    ),
    (
        &["**", "!dist/*.whl"],
        "dist/proxy.py-2.4.0rc3-py3-none-any.whl",
        false,
    ),
    (&["*", "!README.md"], "README.md", false),
    (&["*", "!README.md"], "src/main.rs", true),
    (
        &["*.md", "!README*.md", "README-secret.md"],
        "README-secret.md",
        true,
    ),
    (
        &["*.md", "!README*.md", "README-secret.md"],
        "README-public.md",
        false,
    ),
    (&["**/*.log", "!keep/**"], "keep/a/b.log", false),
    (&["**/*.log", "!keep/**"], "other/b.log", true),
    (
        &["node_modules", "!node_modules/keep"],
        "node_modules/keep/index.js",
        false,
    ),
    (
        &["node_modules", "!node_modules/keep"],
        "node_modules/drop/index.js",
        true,
    ),
];

#[test]
fn multi_pattern_table() {
    for &(patterns, path, want) in MULTI {
        let m = matcher(patterns);
        assert_eq!(m.matches(path), want, "matches({patterns:?}, {path:?})");
        assert_eq!(walk_result(&m, path), want, "walk({patterns:?}, {path:?})");
    }
}

#[test]
fn walk_uses_parent_results_like_buildkit() {
    // An exception that matches only a parent directory the walk skipped
    // evaluating does not re-include (BuildKit's MatchesUsingParentResults);
    // the stateless query applies it through the parent rule.
    let m = matcher(&["a/b", "!a"]);
    assert!(!m.matches("a/b"));
    assert!(walk_result(&m, "a/b"));
}

#[test]
fn reading_rules_of_ignorefile() {
    let text = "\u{feff}# comment\n  # not a comment: a pattern\n\nfoo\n/bar/\n./baz\r\n\t spaced \t\n! /inverted/abs\n!keep\n";
    let m = IgnoreMatcher::parse(text).unwrap();
    assert!(m.has_exceptions());
    assert!(m.matches("foo"));
    assert!(m.matches("bar/x"));
    assert!(m.matches("baz"));
    assert!(m.matches("spaced"));
    assert!(m.matches("# not a comment: a pattern"));
    assert!(!m.matches("comment"));
    assert!(!m.matches("inverted/abs"));
    assert!(!m.matches("keep"));
    assert!(!m.matches("other"));
}

#[test]
fn leading_slash_and_dot_slash_are_the_same_pattern() {
    for pattern in ["/a/b", "./a/b", "a/b", "a//b/", "a/./b"] {
        let m = IgnoreMatcher::parse(pattern).unwrap();
        assert!(m.matches("a/b/c"), "{pattern}");
        assert!(!m.matches("a/bc"), "{pattern}");
    }
}

#[test]
fn matches_normalizes_the_queried_path() {
    let m = matcher(&["a/b"]);
    assert!(m.matches("./a/b"));
    assert!(m.matches("/a/b/"));
    assert!(!m.matches("."));
    assert!(!m.matches(""));
}

#[test]
fn empty_matcher_excludes_nothing() {
    let m = IgnoreMatcher::parse("# only comments\n\n   \n").unwrap();
    assert!(m.is_empty());
    assert!(!m.has_exceptions());
    assert!(!m.matches("anything"));
}

#[test]
fn bare_exclamation_is_an_error_naming_its_line() {
    for text in ["foo\n!\n", "foo\n! \n"] {
        let err = IgnoreMatcher::parse(text).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, IgnoreError::BadPattern { .. }));
        assert!(msg.starts_with("line 2: invalid pattern \"!\""), "{msg}");
        assert!(msg.contains("re-include"), "{msg}");
    }
}

#[test]
fn malformed_patterns_are_errors_naming_line_and_pattern() {
    for (text, line, pattern, why) in [
        ("[", 1, "[", "never closed"),
        ("ok\n\nfoo[]", 3, "foo[]", "at least one character"),
        ("a[x-]b", 1, "a[x-]b", "bad range"),
        ("[-x]", 1, "[-x]", "bad range"),
        ("[a-b-c]", 1, "[a-b-c]", "bad range"),
        ("trailing\\", 1, "trailing\\", "escapes nothing"),
        ("!sub/[^", 1, "!sub/[^", "never closed"),
    ] {
        let msg = IgnoreMatcher::parse(text).unwrap_err().to_string();
        let want = format!("line {line}: invalid pattern {pattern:?}: ");
        assert!(msg.starts_with(&want), "{text:?}: {msg}");
        assert!(msg.contains(why), "{text:?}: {msg}");
    }
}

#[test]
fn exclude_flag_errors_name_the_flag() {
    let err = IgnoreMatcher::from_patterns(&["[".to_string()], "COPY --exclude").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("COPY --exclude: invalid pattern \"[\""),
        "{err}"
    );
}

#[test]
fn from_file_names_the_file_and_bounds_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".dockerignore");
    std::fs::write(&path, "ok\n[\n").unwrap();
    let msg = IgnoreMatcher::from_file(&path).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!("{} line 2: invalid pattern", path.display())),
        "{msg}"
    );

    std::fs::write(
        &path,
        vec![b'a'; imgfarm_common::dockerfile::ignore::MAX_IGNORE_BYTES + 1],
    )
    .unwrap();
    let err = IgnoreMatcher::from_file(&path).unwrap_err();
    assert!(matches!(err, IgnoreError::TooLarge { .. }), "{err}");

    std::fs::write(&path, b"\xff\xfe\n").unwrap();
    assert!(matches!(
        IgnoreMatcher::from_file(&path).unwrap_err(),
        IgnoreError::NotUtf8 { .. }
    ));

    let missing = dir.path().join("missing");
    assert!(matches!(
        IgnoreMatcher::from_file(&missing).unwrap_err(),
        IgnoreError::Read { .. }
    ));
}

#[test]
fn reinclusion_pruning_follows_fsutil() {
    let none = matcher(&["docs"]);
    assert!(!none.may_reinclude_under("docs"));
    let literal = matcher(&["docs", "!docs/api/README.md"]);
    assert!(literal.may_reinclude_under("docs"));
    assert!(literal.may_reinclude_under("docs/api"));
    assert!(!literal.may_reinclude_under("docs/guide"));
    let trailing_glob = matcher(&["docs", "!docs/api/**"]);
    assert!(trailing_glob.may_reinclude_under("docs"));
    assert!(!trailing_glob.may_reinclude_under("other"));
    let wildcard = matcher(&["docs", "!**/*.md"]);
    assert!(wildcard.may_reinclude_under("anything/at/all"));
}

#[test]
fn dockerfile_specific_ignore_file_takes_precedence() {
    let ctx = tempfile::tempdir().unwrap();
    let root = ctx.path();
    std::fs::create_dir(root.join("build")).unwrap();
    let dockerfile = root.join("build/app.Dockerfile");
    std::fs::write(&dockerfile, "FROM scratch\n").unwrap();
    assert_eq!(find_ignore_file(root, &dockerfile), None);

    std::fs::write(root.join(".dockerignore"), "x\n").unwrap();
    assert_eq!(
        find_ignore_file(root, &dockerfile),
        Some(root.join(".dockerignore"))
    );

    std::fs::write(root.join("build/app.Dockerfile.dockerignore"), "y\n").unwrap();
    assert_eq!(
        find_ignore_file(root, &dockerfile),
        Some(root.join("build/app.Dockerfile.dockerignore"))
    );

    let plain = root.join("Dockerfile");
    std::fs::write(&plain, "FROM scratch\n").unwrap();
    assert_eq!(
        find_ignore_file(root, &plain),
        Some(root.join(".dockerignore"))
    );
    std::fs::write(root.join("Dockerfile.dockerignore"), "z\n").unwrap();
    assert_eq!(
        find_ignore_file(root, &plain),
        Some(root.join("Dockerfile.dockerignore"))
    );

    // A directory with the ignore file's name is not an ignore file.
    std::fs::remove_file(root.join(".dockerignore")).unwrap();
    std::fs::create_dir(root.join(".dockerignore")).unwrap();
    let other = root.join("build/other.Dockerfile");
    assert_eq!(find_ignore_file(root, &other), None);
}

proptest! {
    #[test]
    fn parsing_and_matching_never_panic(text in ".{0,200}", path in "[a-z./*?\\[\\]\\\\!^-]{0,40}") {
        if let Ok(m) = IgnoreMatcher::parse(&text) {
            let _ = m.matches(&path);
            let _ = m.matches_under(&path, &ParentMatches::default());
            let _ = m.may_reinclude_under(&path);
        }
    }

    #[test]
    fn glob_patterns_never_panic(pattern in "[a-c*?/\\[\\]\\\\^!-]{0,24}", path in "[a-c/]{0,24}") {
        if let Ok(m) = IgnoreMatcher::from_patterns(&[pattern], "prop") {
            let direct = m.matches(&path);
            let _ = direct;
        }
    }

    #[test]
    fn stateless_and_walk_agree_for_one_pattern(pattern in "[ab*?/]{1,8}", path in "[ab]{1,3}(/[ab]{1,3}){0,3}") {
        if let Ok(m) = IgnoreMatcher::from_patterns(std::slice::from_ref(&pattern), "prop") {
            prop_assert_eq!(m.matches(&path), walk_result(&m, &path), "pattern {:?} path {:?}", pattern, path);
        }
    }
}
