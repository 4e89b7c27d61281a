//! Heredoc detection (`<<EOF`, `<<-EOF`, `<<"EOF"`, `3<<EOF`), following
//! BuildKit's `heredocsFromLine` / `ParseHeredoc`.
//!
//! The logical line is split into words with the shell lexer in raw mode;
//! each word shaped `[digits]<<[-]name` whose name part lexes to exactly one
//! word is a heredoc. The name is that word with quotes removed; quoting any
//! part of it turns expansion off.

use super::shellwords::{self, LexError, Mode};
use crate::dockerfile::ast::Heredoc;

/// Find the heredocs named on a logical line, in order. A line that does not
/// lex (an unterminated quote, say) has none, except that nesting `${`
/// beyond the lexer's bound is an error.
pub(crate) fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, LexError> {
    let raw = Mode {
        raw_quotes: true,
        raw_escapes: true,
    };
    let words = match shellwords::words(line, raw) {
        Ok(words) => words,
        Err(e) if e.is_too_deep() => return Err(e),
        Err(_) => return Ok(Vec::new()),
    };
    let mut docs = Vec::new();
    for word in words {
        if let Some(doc) = parse_heredoc_word(&word)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// Test one word: `Ok(None)` when it is not a heredoc, an error when its name
/// part does not lex (an unterminated quote).
pub(crate) fn parse_heredoc_word(word: &str) -> Result<Option<Heredoc>, LexError> {
    // Shape: ^(\d*)<<(-?)([^<]*)$ with ASCII digits.
    let digits_end = word.bytes().take_while(u8::is_ascii_digit).count();
    let (digits, rest) = word.split_at(digits_end);
    let Some(rest) = rest.strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, name_part) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if name_part.contains('<') || name_part.is_empty() {
        return Ok(None);
    }
    // Go's ParseUint error is ignored: empty gives 0, overflow gives the
    // maximum; clamp that to u32.
    let file_descriptor = if digits.is_empty() {
        0
    } else {
        digits.parse::<u32>().unwrap_or(u32::MAX)
    };

    let cooked = shellwords::words(
        name_part,
        Mode {
            raw_quotes: false,
            raw_escapes: false,
        },
    )?;
    let [name] = cooked.as_slice() else {
        return Ok(None);
    };
    let quoted = shellwords::words(
        name_part,
        Mode {
            raw_quotes: true,
            raw_escapes: false,
        },
    )?;
    if quoted.len() != 1 {
        return Err(LexError(format!(
            "internal lexing of heredoc produced inconsistent results: {name_part}"
        )));
    }
    let quote_count = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    let expand = quote_count(name) == quote_count(&quoted[0]);
    Ok(Some(Heredoc {
        name: name.clone(),
        content: String::new(),
        expand,
        chomp,
        file_descriptor,
    }))
}

/// Remove the leading tabs of every line of a `<<-` heredoc body (what
/// BuildKit's `ChompHeredocContent` does when the instruction is dispatched;
/// the parser itself stores the body unchanged).
pub fn chomp_heredoc_content(content: &str) -> String {
    content
        .split_inclusive('\n')
        .map(|line| line.trim_start_matches('\t'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_and_chomp() {
        let h = parse_heredoc_word("3<<-EOF").expect("ok").expect("heredoc");
        assert_eq!(
            (h.name.as_str(), h.file_descriptor, h.chomp, h.expand),
            ("EOF", 3, true, true)
        );
        let h = parse_heredoc_word("99999999999<<E")
            .expect("ok")
            .expect("heredoc");
        assert_eq!(h.file_descriptor, u32::MAX);
    }

    #[test]
    fn chomp_strips_tabs_per_line() {
        assert_eq!(
            chomp_heredoc_content("\thello\n\t\tworld\n  x\n"),
            "hello\nworld\n  x\n"
        );
    }
}
