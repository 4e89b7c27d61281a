//! Physical lines, comments and line continuations.

use super::unicode::is_space;

/// The physical lines of the input, each with its terminator, numbered from 1.
pub(crate) struct Physical<'a> {
    rest: &'a str,
    consumed: usize,
}

impl<'a> Physical<'a> {
    /// Split `text`; a UTF-8 byte-order mark at the start is dropped.
    pub(crate) fn new(text: &'a str) -> Self {
        Self {
            rest: text.strip_prefix('\u{FEFF}').unwrap_or(text),
            consumed: 0,
        }
    }

    /// The next line, terminator included; `None` at the end.
    pub(crate) fn next_line(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let end = self.rest.find('\n').map_or(self.rest.len(), |i| i + 1);
        let (line, rest) = self.rest.split_at(end);
        self.rest = rest;
        self.consumed += 1;
        Some(line)
    }

    /// 1-based number of the last line returned (0 before the first).
    pub(crate) fn line_no(&self) -> usize {
        self.consumed
    }
}

/// The first physical line longer than `max` bytes (not counting `\n`), as
/// `(line number, length)`.
pub(crate) fn first_long_line(bytes: &[u8], max: usize) -> Option<(usize, usize)> {
    bytes
        .split(|b| *b == b'\n')
        .enumerate()
        .find(|(_, l)| l.len() > max)
        .map(|(i, l)| (i + 1, l.len()))
}

/// Remove any run of trailing `\r` and `\n`.
pub(crate) fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

/// A comment line: `#` is its first non-whitespace character.
pub(crate) fn is_comment(line: &str) -> bool {
    trim_newline(line)
        .trim_start_matches(is_space)
        .starts_with('#')
}

/// The continuation test: a line continues when it ends with the escape
/// token (spaces or tabs may follow) that is either the first character or
/// not itself preceded by the escape token. Returns the line without the
/// token and whether it continues.
pub(crate) fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let body = line.trim_end_matches([' ', '\t']);
    let Some(before) = body.strip_suffix(escape) else {
        return (line, false);
    };
    if before.is_empty() || !before.ends_with(escape) {
        (before, true)
    } else {
        (line, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_rules() {
        assert_eq!(trim_continuation("RUN a \\", '\\'), ("RUN a ", true));
        assert_eq!(trim_continuation("RUN a \\ \t ", '\\'), ("RUN a ", true));
        assert_eq!(trim_continuation("\\", '\\'), ("", true));
        assert_eq!(trim_continuation("\\  ", '\\'), ("", true));
        assert_eq!(trim_continuation("a\\\\", '\\'), ("a\\\\", false));
        assert_eq!(trim_continuation("\\\\", '\\'), ("\\\\", false));
        assert_eq!(trim_continuation("a `", '`'), ("a ", true));
        assert_eq!(trim_continuation("a \\", '`'), ("a \\", false));
        assert_eq!(trim_continuation("a", '\\'), ("a", false));
    }

    #[test]
    fn physical_lines_keep_terminators() {
        let mut p = Physical::new("\u{FEFF}a\r\nb\n\nc");
        assert_eq!(p.next_line(), Some("a\r\n"));
        assert_eq!(p.next_line(), Some("b\n"));
        assert_eq!(p.next_line(), Some("\n"));
        assert_eq!(p.next_line(), Some("c"));
        assert_eq!(p.line_no(), 4);
        assert_eq!(p.next_line(), None);
    }

    #[test]
    fn long_lines_are_found() {
        assert_eq!(first_long_line(b"ab\nabcd\n", 3), Some((2, 4)));
        assert_eq!(first_long_line(b"abc\nabc", 3), None);
    }
}
