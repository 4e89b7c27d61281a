//! One `.dockerignore` / `--exclude` pattern (cleaned first with Go's
//! `path.Clean`, [`crate::path::go_clean`]): the `filepath.Match` syntax
//! check, and the matcher that moby/patternmatcher
//! builds from a pattern (exact, prefix, suffix, or a glob that behaves like
//! the regular expression patternmatcher compiles).
//!
//! No I/O here; everything is plain string work.

/// Why a pattern is not valid Go `filepath.Match` syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SyntaxError {
    /// `[` without its closing `]`.
    UnclosedClass,
    /// `[]` or `[^]`: a class must hold at least one character.
    EmptyClass,
    /// A range such as `[a-]` that lacks its upper end, or a class item that is `-`.
    BadRange,
    /// A `\` at the very end of the pattern escapes nothing.
    TrailingBackslash,
}

impl SyntaxError {
    /// A sentence for error messages.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            SyntaxError::UnclosedClass => "`[` opens a character class that is never closed with `]`",
            SyntaxError::EmptyClass => "a character class `[...]` must contain at least one character",
            SyntaxError::BadRange => {
                "a character class has a bad range (write `a-z`; escape a literal `-` or `]` with `\\`)"
            }
            SyntaxError::TrailingBackslash => "the pattern ends with `\\`, which escapes nothing",
        }
    }
}

/// A character class `[...]` as Go's `filepath.Match` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Class {
    negated: bool,
    ranges: Vec<(char, char)>,
}

impl Class {
    fn matches(&self, c: char) -> bool {
        let inside = self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
        inside != self.negated
    }
}

/// Reads one class item (`getEsc` in Go): a char, possibly `\`-escaped.
fn class_char(chars: &[char], i: &mut usize) -> Result<char, SyntaxError> {
    let first = *chars.get(*i).ok_or(SyntaxError::UnclosedClass)?;
    if first == '-' || first == ']' {
        return Err(SyntaxError::BadRange);
    }
    let c = if first == '\\' {
        *i += 1;
        *chars.get(*i).ok_or(SyntaxError::TrailingBackslash)?
    } else {
        first
    };
    *i += 1;
    if *i >= chars.len() {
        return Err(SyntaxError::UnclosedClass);
    }
    Ok(c)
}

/// Parses a class starting just after `[`; leaves `i` after the closing `]`.
fn parse_class(chars: &[char], i: &mut usize) -> Result<Class, SyntaxError> {
    let mut negated = false;
    if chars.get(*i) == Some(&'^') {
        negated = true;
        *i += 1;
    }
    let mut ranges = Vec::new();
    loop {
        match chars.get(*i) {
            None => return Err(SyntaxError::UnclosedClass),
            Some(']') if !ranges.is_empty() => {
                *i += 1;
                return Ok(Class { negated, ranges });
            }
            Some(']') => return Err(SyntaxError::EmptyClass),
            Some(_) => {}
        }
        let lo = class_char(chars, i)?;
        let mut hi = lo;
        if chars.get(*i) == Some(&'-') {
            *i += 1;
            hi = class_char(chars, i)?;
        }
        ranges.push((lo, hi));
    }
}

/// Checks `pattern` against Go's `filepath.Match` grammar (Go ≥ 1.16 reports
/// every malformed pattern, whatever the name).
pub(crate) fn validate(pattern: &str) -> Result<(), SyntaxError> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '[' => {
                i += 1;
                parse_class(&chars, &mut i)?;
            }
            '\\' => {
                if i + 1 >= chars.len() {
                    return Err(SyntaxError::TrailingBackslash);
                }
                i += 2;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// True when a COPY source segment holds an unescaped `*`, `?` or `[`
/// (fsutil's `containsWildcards`).
pub(crate) fn contains_wildcards(segment: &str) -> bool {
    let mut chars = segment.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

/// One token of a single-name glob (Go `filepath.Match`).
enum NameTok {
    Lit(char),
    Any,
    Star,
    Class(Class),
}

/// Go's `filepath.Match(pattern, name)` for one path segment: `*` is any run
/// of characters except `/`, `?` one character except `/`, `[...]` a class,
/// `\x` a literal `x`. The pattern must already be valid.
pub(crate) fn match_name(pattern: &str, name: &str) -> Result<bool, SyntaxError> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => {
                toks.push(NameTok::Star);
                i += 1;
            }
            '?' => {
                toks.push(NameTok::Any);
                i += 1;
            }
            '[' => {
                i += 1;
                toks.push(NameTok::Class(parse_class(&chars, &mut i)?));
            }
            '\\' => {
                let c = *chars.get(i + 1).ok_or(SyntaxError::TrailingBackslash)?;
                toks.push(NameTok::Lit(c));
                i += 2;
            }
            c => {
                toks.push(NameTok::Lit(c));
                i += 1;
            }
        }
    }
    let name: Vec<char> = name.chars().collect();
    // Classic glob walk with one backtrack point per star: linear in practice.
    let (mut t, mut n) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        let step = match toks.get(t) {
            Some(NameTok::Star) => {
                star = Some((t, n));
                t += 1;
                continue;
            }
            Some(NameTok::Lit(c)) => *c == name[n],
            Some(NameTok::Any) => name[n] != '/',
            Some(NameTok::Class(class)) => class.matches(name[n]),
            None => false,
        };
        if step {
            t += 1;
            n += 1;
        } else if let Some((st, sn)) = star {
            if name[sn] == '/' {
                return Ok(false);
            }
            star = Some((st, sn + 1));
            t = st + 1;
            n = sn + 1;
        } else {
            return Ok(false);
        }
    }
    Ok(toks[t..].iter().all(|tok| matches!(tok, NameTok::Star)))
}

/// One token of a compiled path glob; each mirrors a piece of the regular
/// expression moby/patternmatcher builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok {
    /// A literal character.
    Lit(char),
    /// `?` → `[^/]`.
    AnyChar,
    /// `*` → `[^/]*`.
    Star,
    /// `**` (and `**/`) not at the end → `(.*/)?`: zero or more whole
    /// directories. Go's `.` does not match a newline.
    Dirs,
    /// A trailing `**` after other wildcards → `.*`.
    Tail,
    /// `[...]`; like the regular expression, a class may match `/`.
    Class(Class),
}

/// How a pattern matches, as patternmatcher's `matchType`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Compiled {
    /// No wildcard: the path equals the pattern.
    Exact(String),
    /// `literal**`: the path starts with the literal.
    Prefix(String),
    /// `**literal`: the path ends with the literal (or equals it without
    /// its leading `/`).
    Suffix(String),
    /// Anything else.
    Glob(Vec<Tok>),
}

/// Compiles a cleaned, validated pattern the way patternmatcher's `compile`
/// classifies it. Inside classes this follows `filepath.Match` (the regex
/// route in patternmatcher mangles `*` and `?` inside `[...]`).
pub(crate) fn compile(pattern: &str) -> Result<Compiled, SyntaxError> {
    #[derive(PartialEq)]
    enum Kind {
        Exact,
        Prefix,
        Suffix,
        Glob,
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut toks = Vec::new();
    let mut kind = Kind::Exact;
    let mut i = 0;
    let mut first = true;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= chars.len() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        toks.push(Tok::Tail);
                        kind = Kind::Glob;
                    }
                } else {
                    toks.push(Tok::Dirs);
                    kind = Kind::Glob;
                }
                if first {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                toks.push(Tok::Star);
                kind = Kind::Glob;
            }
            '?' => {
                toks.push(Tok::AnyChar);
                kind = Kind::Glob;
            }
            '\\' => {
                let next = *chars.get(i).ok_or(SyntaxError::TrailingBackslash)?;
                i += 1;
                toks.push(Tok::Lit(next));
                kind = Kind::Glob;
            }
            '[' => {
                toks.push(Tok::Class(parse_class(&chars, &mut i)?));
                kind = Kind::Glob;
            }
            other => toks.push(Tok::Lit(other)),
        }
        first = false;
    }
    Ok(match kind {
        Kind::Exact => Compiled::Exact(pattern.to_string()),
        Kind::Prefix => Compiled::Prefix(pattern[..pattern.len() - 2].to_string()),
        Kind::Suffix => Compiled::Suffix(pattern[2..].to_string()),
        Kind::Glob => Compiled::Glob(toks),
    })
}

impl Compiled {
    /// Does the whole `path` match (no parent-directory rule here)?
    pub(crate) fn matches(&self, path: &str) -> bool {
        match self {
            Compiled::Exact(p) => path == p,
            Compiled::Prefix(p) => path.starts_with(p.as_str()),
            Compiled::Suffix(s) => {
                path.ends_with(s.as_str()) || s.strip_prefix('/').is_some_and(|rest| path == rest)
            }
            Compiled::Glob(toks) => glob_matches(toks, path),
        }
    }
}

/// Runs the token list as an NFA over `path`: O(tokens × chars), no
/// backtracking blow-up on hostile patterns such as `*a*a*a*a*b`.
///
/// State `2*i` means "before token i"; state `2*i+1` means "inside the
/// `(.*/)?` of token i, having consumed at least one character".
fn glob_matches(toks: &[Tok], path: &str) -> bool {
    let n = toks.len();
    let size = 2 * n + 2;
    let mut current = vec![false; size];
    let mut next = vec![false; size];
    add_closure(toks, &mut current, 0);
    for c in path.chars() {
        next.iter_mut().for_each(|s| *s = false);
        let mut any = false;
        for (state, _) in current.iter().enumerate().filter(|(_, on)| **on) {
            let i = state / 2;
            if i >= n {
                continue;
            }
            let inner = state % 2 == 1;
            match &toks[i] {
                Tok::Dirs => {
                    if c != '\n' {
                        next[2 * i + 1] = true;
                        any = true;
                    }
                    if c == '/' {
                        add_closure(toks, &mut next, 2 * (i + 1));
                        any = true;
                    }
                }
                _ if inner => {}
                Tok::Lit(l) if *l == c => {
                    add_closure(toks, &mut next, 2 * (i + 1));
                    any = true;
                }
                Tok::AnyChar if c != '/' => {
                    add_closure(toks, &mut next, 2 * (i + 1));
                    any = true;
                }
                Tok::Class(class) if class.matches(c) => {
                    add_closure(toks, &mut next, 2 * (i + 1));
                    any = true;
                }
                Tok::Star if c != '/' => {
                    add_closure(toks, &mut next, 2 * i);
                    any = true;
                }
                Tok::Tail if c != '\n' => {
                    add_closure(toks, &mut next, 2 * i);
                    any = true;
                }
                _ => {}
            }
        }
        if !any {
            return false;
        }
        std::mem::swap(&mut current, &mut next);
    }
    current[2 * n]
}

/// Marks `state` and every state reachable from it without input
/// (`*`, `**` and a trailing `**` may match nothing).
fn add_closure(toks: &[Tok], set: &mut [bool], mut state: usize) {
    loop {
        set[state] = true;
        let i = state / 2;
        match toks.get(i) {
            Some(Tok::Star | Tok::Dirs | Tok::Tail) if state % 2 == 0 => state = 2 * (i + 1),
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_match_syntax() {
        for ok in ["a", "*", "[a-z]", "[^a]", "[\\]]", "a\\*", "[!]", "]"] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("[", SyntaxError::UnclosedClass),
            ("[]", SyntaxError::EmptyClass),
            ("[^]", SyntaxError::EmptyClass),
            ("[a-]", SyntaxError::BadRange),
            ("[-a]", SyntaxError::BadRange),
            ("[abc", SyntaxError::UnclosedClass),
            ("a\\", SyntaxError::TrailingBackslash),
        ] {
            assert_eq!(validate(bad), Err(why), "{bad}");
        }
    }

    #[test]
    fn name_match_like_filepath_match() {
        for (pat, name, want) in [
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
            ("a*b?c*x", "abxbbxdbxebxczzx", true),
            ("a*b?c*x", "abxbbxdbxebxczzy", false),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[e-g]", "abc", false),
            ("ab[^c]", "abc", false),
            ("ab[^e-g]", "abc", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "ab", false),
            ("a?b", "a☺b", true),
            ("*x", "xxx", true),
        ] {
            assert_eq!(match_name(pat, name), Ok(want), "match({pat:?}, {name:?})");
        }
    }

    #[test]
    fn compile_classifies_like_patternmatcher() {
        assert_eq!(
            compile("foo/bar").unwrap(),
            Compiled::Exact("foo/bar".into())
        );
        assert_eq!(
            compile("foo.txt").unwrap(),
            Compiled::Exact("foo.txt".into())
        );
        assert_eq!(compile("foo/**").unwrap(), Compiled::Prefix("foo/".into()));
        assert_eq!(compile("**/foo").unwrap(), Compiled::Suffix("/foo".into()));
        assert_eq!(compile("**").unwrap(), Compiled::Suffix("".into()));
        assert!(matches!(compile("**/*.go").unwrap(), Compiled::Glob(_)));
        assert!(matches!(compile("a\\b").unwrap(), Compiled::Glob(_)));
    }

    #[test]
    fn hostile_glob_is_fast() {
        let pat = "*a".repeat(200) + "b";
        let path = "a".repeat(4000);
        let compiled = compile(&pat).unwrap();
        let start = std::time::Instant::now();
        assert!(!compiled.matches(&path));
        assert!(start.elapsed().as_secs() < 5);
    }
}
