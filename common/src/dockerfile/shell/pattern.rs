//! The shell patterns of `${X#p}`, `${X##p}`, `${X%p}`, `${X%%p}`,
//! `${X/p/r}` and `${X//p/r}`, with BuildKit's semantics.
//!
//! BuildKit turns the pattern into a Go regular expression: `*` becomes
//! `.*?` (or `.*` for `##`, `%%` and `/`), `?` becomes `.`, and a backslash
//! escapes `*`, `?` or `\`; `\}` and `\/` stand for `}` and `/`. There are no
//! bracket classes. Go's `.` does not match a newline, so neither do the
//! wildcards here. Go regexps pick the leftmost match and, among those, the
//! one a backtracking matcher would find first ("leftmost-first"); this
//! module reproduces that with a Pike VM, which runs in time proportional to
//! pattern length times text length, and charges every step to a budget.

/// A compiled pattern.
#[derive(Debug, Clone)]
pub(super) struct Pattern {
    tokens: Vec<Token>,
    greedy: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `?`: one character other than a newline.
    AnyChar,
    /// `*`: any run of characters other than newlines.
    AnyRun,
}

/// Why a match or replacement stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MatchError {
    /// The step budget ran out.
    Steps,
    /// The output would exceed the size limit.
    TooLarge,
}

#[derive(Debug, Clone, Copy)]
struct Thread {
    pc: usize,
    start: usize,
}

impl Pattern {
    /// Compile `text`. On a bad escape, returns the character after the
    /// backslash (`None` when the backslash ends the pattern).
    pub(super) fn compile(text: &str, greedy: bool) -> Result<Self, Option<char>> {
        // Go's text/scanner drops a byte-order mark at the very start.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut tokens = Vec::with_capacity(text.len());
        let mut chars = text.chars().peekable();
        while let Some(ch) = chars.next() {
            let token = match ch {
                '*' => Token::AnyRun,
                '?' => Token::AnyChar,
                '\\' => match chars.peek() {
                    // The escape only protected `}`/`/` from the lexer.
                    Some('}' | '/') => continue,
                    _ => match chars.next() {
                        Some(escaped @ ('*' | '?' | '\\')) => Token::Literal(escaped),
                        other => return Err(other),
                    },
                },
                other => Token::Literal(other),
            };
            tokens.push(token);
        }
        Ok(Self { tokens, greedy })
    }

    /// Leftmost-first match starting at or after byte `from` of `text`
    /// (exactly at `from` when `anchored`). Returns the byte range.
    pub(super) fn find(
        &self,
        text: &str,
        from: usize,
        anchored: bool,
        steps: &mut u64,
    ) -> Result<Option<(usize, usize)>, MatchError> {
        let accept = self.tokens.len();
        // Setting up costs as much as the pattern is long.
        spend_many(steps, accept as u64 + 1)?;
        let mut vm = Closure {
            tokens: &self.tokens,
            greedy: self.greedy,
            seen: vec![0; accept + 1],
            stamp: 1,
            lazy_runs: Vec::new(),
        };
        let mut current = Vec::new();
        let mut next = Vec::new();
        let mut found = None;
        let mut pos = from;
        vm.add(&mut current, 0, pos, steps)?;
        loop {
            let ch = text.get(pos..).and_then(|rest| rest.chars().next());
            vm.stamp += 1;
            next.clear();
            for thread in &current {
                spend(steps)?;
                let Some(&token) = self.tokens.get(thread.pc) else {
                    // Accepting thread: lower-priority threads are cut.
                    found = Some((thread.start, pos));
                    break;
                };
                let consumes = match (token, ch) {
                    (_, None) => false,
                    (Token::Literal(want), Some(got)) => want == got,
                    (Token::AnyChar | Token::AnyRun, Some(got)) => got != '\n',
                };
                if consumes {
                    let target = if token == Token::AnyRun {
                        thread.pc
                    } else {
                        thread.pc + 1
                    };
                    vm.add(&mut next, target, thread.start, steps)?;
                }
            }
            let Some(ch) = ch else { break };
            pos += ch.len_utf8();
            std::mem::swap(&mut current, &mut next);
            if !anchored && found.is_none() {
                vm.add(&mut current, 0, pos, steps)?;
            }
            if current.is_empty() {
                break;
            }
        }
        Ok(found)
    }
}

/// Adds threads with their epsilon closure, in priority order.
struct Closure<'p> {
    tokens: &'p [Token],
    greedy: bool,
    seen: Vec<u64>,
    stamp: u64,
    lazy_runs: Vec<usize>,
}

impl Closure<'_> {
    fn add(
        &mut self,
        list: &mut Vec<Thread>,
        mut pc: usize,
        start: usize,
        steps: &mut u64,
    ) -> Result<(), MatchError> {
        self.lazy_runs.clear();
        loop {
            spend(steps)?;
            let Some(seen) = self.seen.get_mut(pc) else {
                break;
            };
            if *seen == self.stamp {
                break;
            }
            *seen = self.stamp;
            if self.tokens.get(pc) == Some(&Token::AnyRun) {
                // Greedy: "one more character" before "stop here"; lazy: after.
                if self.greedy {
                    list.push(Thread { pc, start });
                } else {
                    self.lazy_runs.push(pc);
                }
                pc += 1;
                continue;
            }
            list.push(Thread { pc, start });
            break;
        }
        for &run in self.lazy_runs.iter().rev() {
            list.push(Thread { pc: run, start });
        }
        Ok(())
    }
}

fn spend(steps: &mut u64) -> Result<(), MatchError> {
    spend_many(steps, 1)
}

fn spend_many(steps: &mut u64, count: u64) -> Result<(), MatchError> {
    *steps = steps.checked_sub(count).ok_or(MatchError::Steps)?;
    Ok(())
}

/// `${X#p}` / `${X##p}`: remove the prefix of `value` that `pattern` matches.
pub(super) fn trim_prefix<'v>(
    pattern: &Pattern,
    value: &'v str,
    steps: &mut u64,
) -> Result<&'v str, MatchError> {
    Ok(match pattern.find(value, 0, true, steps)? {
        Some((_, end)) => &value[end..],
        None => value,
    })
}

/// `${X%p}` / `${X%%p}`: BuildKit reverses the pattern (keeping each
/// backslash before the character it escapes) and the value, trims a
/// prefix, and reverses the rest back. `reversed_pattern` must come from
/// [`reverse_pattern`].
pub(super) fn trim_suffix(
    reversed_pattern: &Pattern,
    value: &str,
    steps: &mut u64,
) -> Result<String, MatchError> {
    let reversed: String = value.chars().rev().collect();
    let rest = trim_prefix(reversed_pattern, &reversed, steps)?;
    Ok(rest.chars().rev().collect())
}

/// Reverse a pattern's characters, but keep `\x` pairs in order (BuildKit's
/// `reversePattern`: a backslash pairs with the character after it, scanning
/// from the left, and a trailing lone backslash moves to the front).
pub(super) fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut units: Vec<&[char]> = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let width = if chars[i] == '\\' && i + 1 < chars.len() {
            2
        } else {
            1
        };
        units.push(&chars[i..i + width]);
        i += width;
    }
    units.iter().rev().flat_map(|unit| unit.iter()).collect()
}

/// `${X/p/r}`: replace the first match with `replacement`, taken literally.
pub(super) fn replace_first(
    pattern: &Pattern,
    value: &str,
    replacement: &str,
    steps: &mut u64,
) -> Result<String, MatchError> {
    Ok(match pattern.find(value, 0, false, steps)? {
        Some((start, end)) => [&value[..start], replacement, &value[end..]].concat(),
        None => value.to_owned(),
    })
}

/// `${X//p/r}`: replace every match, as Go's `Regexp.ReplaceAllString`
/// does: after an empty match the search moves on by one character, an
/// empty match right after a previous match is not replaced, and
/// `replacement` is a template in which `$0`/`${0}` is the match, `$$` a
/// dollar, other `$name` references are empty, and a malformed `$` is kept.
pub(super) fn replace_all(
    pattern: &Pattern,
    value: &str,
    replacement: &str,
    max_len: usize,
    steps: &mut u64,
) -> Result<String, MatchError> {
    let mut out = String::new();
    let mut last_end = 0;
    let mut search = 0;
    while search <= value.len() {
        let Some((start, end)) = pattern.find(value, search, false, steps)? else {
            break;
        };
        out.push_str(&value[last_end..start]);
        if end > last_end || start == 0 {
            expand_template(&mut out, replacement, &value[start..end], max_len)?;
        }
        if out.len() > max_len {
            return Err(MatchError::TooLarge);
        }
        last_end = end;
        let width = value[search..].chars().next().map_or(0, char::len_utf8);
        search = if search + width > end {
            search + width
        } else if search + 1 > end {
            search + 1
        } else {
            end
        };
    }
    out.push_str(&value[last_end..]);
    if out.len() > max_len {
        return Err(MatchError::TooLarge);
    }
    Ok(out)
}

fn expand_template(
    out: &mut String,
    template: &str,
    whole: &str,
    max_len: usize,
) -> Result<(), MatchError> {
    let mut rest = template;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        rest = &rest[dollar + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        match template_reference(rest) {
            Some((group, after)) => {
                rest = after;
                if group == Some(0) {
                    out.push_str(whole);
                }
            }
            None => out.push('$'),
        }
        if out.len() > max_len {
            return Err(MatchError::TooLarge);
        }
    }
    out.push_str(rest);
    Ok(())
}

/// Go's `regexp.extract`: a `name` or `{name}` after `$`. Returns the group
/// number (`None` for a name that is not a number) and the text after it.
fn template_reference(text: &str) -> Option<(Option<u32>, &str)> {
    let (braced, body) = match text.strip_prefix('{') {
        Some(body) => (true, body),
        None => (false, text),
    };
    let end = body
        .char_indices()
        .find(|&(_, ch)| !super::chars::is_name_char(ch))
        .map_or(body.len(), |(index, _)| index);
    if end == 0 {
        return None;
    }
    let name = &body[..end];
    let after = if braced {
        body[end..].strip_prefix('}')?
    } else {
        &body[end..]
    };
    let mut number: Option<u32> = Some(0);
    for byte in name.bytes() {
        number = match number {
            Some(n) if byte.is_ascii_digit() && n < 100_000_000 => {
                Some(n * 10 + u32::from(byte - b'0'))
            }
            _ => None,
        };
    }
    if name.len() > 1 && name.starts_with('0') {
        number = None;
    }
    Some((number, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEPS: u64 = 1 << 20;

    fn find(pattern: &str, greedy: bool, text: &str, anchored: bool) -> Option<(usize, usize)> {
        let compiled = Pattern::compile(pattern, greedy).expect("pattern compiles");
        compiled
            .find(text, 0, anchored, &mut STEPS.clone())
            .expect("within budget")
    }

    #[test]
    fn lazy_and_greedy_prefixes() {
        assert_eq!(find("*x*y", false, "xxyy", true), Some((0, 3)));
        assert_eq!(find("*x", true, "xxyy", true), Some((0, 2)));
        assert_eq!(find("*", false, "xxyy", true), Some((0, 0)));
        assert_eq!(find("*", true, "xxyy", true), Some((0, 4)));
        assert_eq!(find("y", false, "xxyy", true), None);
    }

    #[test]
    fn wildcards_stop_at_newlines_like_go_dot() {
        assert_eq!(find("*", true, "ab\ncd", true), Some((0, 2)));
        assert_eq!(find("a?c", true, "a\nc", true), None);
        // A literal newline still matches, and backtracking finds the later `a`.
        assert_eq!(find("*a*b", false, "a\nab", true), None);
        assert_eq!(find("*a\n*b", false, "xa\nzb", true), Some((0, 5)));
    }

    #[test]
    fn unanchored_search_is_leftmost_first() {
        assert_eq!(find("/?/", true, "/a/foo/b/c.txt", false), Some((0, 3)));
        assert_eq!(find("o*o", true, "foo/boo", false), Some((1, 7)));
        assert_eq!(find("", true, "abc", false), Some((0, 0)));
        assert_eq!(find("z", true, "abc", false), None);
    }

    #[test]
    fn escapes() {
        assert_eq!(find(r"\*\?\\", true, r"*?\x", true), Some((0, 3)));
        assert_eq!(find(r"a\}\/", true, "a}/", true), Some((0, 3)));
        assert_eq!(Pattern::compile(r"\a", true).err(), Some(Some('a')));
        assert_eq!(Pattern::compile("ab\\", true).err(), Some(None));
        // A leading byte-order mark is dropped, as Go's scanner does.
        assert_eq!(find("\u{feff}a", true, "ab", true), Some((0, 1)));
    }

    #[test]
    fn reverse_keeps_escape_pairs() {
        assert_eq!(reverse_pattern(r"\**"), r"*\*");
        assert_eq!(reverse_pattern(r"\**\*"), r"\**\*");
        assert_eq!(reverse_pattern(r"ab\"), r"\ba");
        assert_eq!(reverse_pattern("한국어"), "어국한");
        // BuildKit's TestReversePattern vectors.
        assert_eq!(reverse_pattern(r"a\*c"), r"c\*a");
        assert_eq!(reverse_pattern(r"\\\ab"), r"b\a\\");
        assert_eq!(reverse_pattern("👽\\🚀🖖"), "🖖\\🚀👽");
        assert_eq!(reverse_pattern(r"\\b"), r"b\\");
    }

    #[test]
    fn invalid_patterns_from_buildkit_tests() {
        for pattern in [r"\", r"\x", r"\\\"] {
            assert!(Pattern::compile(pattern, true).is_err(), "{pattern}");
        }
        assert!(Pattern::compile(r"(()[]{\}^$.\*\?|\\", true).is_ok());
    }

    #[test]
    fn suffix_trimming() {
        let pattern = Pattern::compile(&reverse_pattern(r"\**"), true).expect("compiles");
        let rest = trim_suffix(&pattern, "xx**", &mut STEPS.clone()).expect("budget");
        assert_eq!(rest, "xx");
    }

    #[test]
    fn replace_all_follows_go() {
        let all = |p: &str, v: &str, r: &str| {
            let pattern = Pattern::compile(p, true).expect("compiles");
            replace_all(&pattern, v, r, 1 << 20, &mut STEPS.clone()).expect("ok")
        };
        assert_eq!(all("", "xy", "-"), "-x-y-");
        assert_eq!(all("/tmp", "/tmp/tmp/bar.txt", ""), "/bar.txt");
        assert_eq!(all("*", "abc", "-"), "-");
        assert_eq!(all("a", "banana", "[$0]"), "b[a]n[a]n[a]");
        assert_eq!(all("a", "ba", "${0}$$$1$x${"), "ba$${");
    }

    #[test]
    fn template_references() {
        let expand = |t: &str| {
            let mut out = String::new();
            expand_template(&mut out, t, "M", 1 << 20).expect("ok");
            out
        };
        assert_eq!(expand("$0"), "M");
        assert_eq!(expand("${0}x"), "Mx");
        assert_eq!(expand("$00"), "");
        assert_eq!(expand("$1"), "");
        assert_eq!(expand("$$0"), "$0");
        assert_eq!(expand("$"), "$");
        assert_eq!(expand("${0"), "${0");
        assert_eq!(expand("$.x"), "$.x");
        assert_eq!(expand("a$0b"), "a");
    }

    #[test]
    fn budget_is_enforced() {
        let pattern = Pattern::compile(&"*a".repeat(200), false).expect("compiles");
        let text = "a".repeat(10_000) + "b";
        let mut steps = 100_000;
        assert_eq!(
            pattern.find(&text, 0, true, &mut steps),
            Err(MatchError::Steps)
        );
        let pattern = Pattern::compile("a", true).expect("compiles");
        assert_eq!(
            replace_all(&pattern, "aaaa", "bbbb", 10, &mut STEPS.clone()),
            Err(MatchError::TooLarge)
        );
    }
}
