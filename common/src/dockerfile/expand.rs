//! Word expansion for instructions, with the names used and missing: a thin
//! adapter over [`crate::dockerfile::shell::Lexer`] (BuildKit
//! `shell.Lex.ProcessWordWithMatches`) over an ordered variable scope.

use crate::dockerfile::shell::Lexer;

/// A variable scope: ordered `(name, value)` pairs, later entries win.
pub type Vars = Vec<(String, String)>;

/// The result of expanding one word.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expanded {
    /// The expanded word.
    pub value: String,
    /// Names found in the scope, sorted.
    pub matched: Vec<String>,
    /// Names referenced but not in the scope, sorted.
    pub unmatched: Vec<String>,
}

/// Expands words with a given escape token.
#[derive(Debug, Clone, Copy)]
pub struct Expander {
    lexer: Lexer,
}

impl Expander {
    /// `escape` is `\\` or `` ` ``.
    pub fn new(escape: char) -> Self {
        Self {
            lexer: Lexer::new(escape),
        }
    }

    /// Expand one word; quotes are removed.
    pub fn word(&self, w: &str, vars: &Vars) -> Result<String, String> {
        if !needs_lexer(w) {
            return Ok(w.to_string());
        }
        self.lexer.process_word(w, vars).map_err(|e| e.to_string())
    }

    /// Expand one word and report the names used.
    pub fn word_with_matches(&self, w: &str, vars: &Vars) -> Result<Expanded, String> {
        if !needs_lexer(w) {
            return Ok(Expanded {
                value: w.to_string(),
                ..Expanded::default()
            });
        }
        let r = self
            .lexer
            .process_word_with_matches(w, vars)
            .map_err(|e| e.to_string())?;
        Ok(Expanded {
            value: r.result,
            matched: r.matched.into_iter().collect(),
            unmatched: r.unmatched.into_iter().collect(),
        })
    }
}

/// Words without `$`, quotes or escapes expand to themselves (fast path),
/// unless they start with a byte order mark, which the lexer drops as Go's
/// `text/scanner` does.
fn needs_lexer(w: &str) -> bool {
    w.starts_with('\u{feff}') || w.contains(['$', '\'', '"', '\\', '`'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_and_reports() {
        let vars: Vars = vec![("A".into(), "1".into()), ("E".into(), String::new())];
        let e = Expander::new('\\');
        let r = e
            .word_with_matches("x$A-${B:-d}-${E:+y}'$A'\"$A\"", &vars)
            .unwrap();
        assert_eq!(r.value, "x1-d-$A1");
        assert_eq!(r.matched, vec!["A", "E"]);
        assert_eq!(r.unmatched, vec!["B"]);
        assert!(e.word("${B:?need B}", &vars).is_err());
        assert_eq!(e.word("a\\$A", &vars).unwrap(), "a$A");
        assert_eq!(e.word("plain/path", &vars).unwrap(), "plain/path");
    }

    /// Found by the `shell_expand` fuzz target
    /// (`fuzz/regressions/shell_expand/crash-a5d64205…`): a word that starts
    /// with a byte order mark and has nothing to expand kept the mark on the
    /// fast path, while the lexer (as BuildKit's) drops it.
    #[test]
    fn leading_byte_order_mark_is_dropped_as_the_lexer_does() {
        let vars: Vars = Vec::new();
        for escape in ['\\', '`'] {
            let e = Expander::new(escape);
            let word = "\u{feff}\0\0@\0\0\0\u{10}";
            let lexed = Lexer::new(escape).process_word(word, &vars).unwrap();
            assert_eq!(lexed, "\0\0@\0\0\0\u{10}");
            assert_eq!(e.word(word, &vars).unwrap(), lexed);
            assert_eq!(e.word_with_matches(word, &vars).unwrap().value, lexed);
            assert_eq!(e.word("\u{feff}plain", &vars).unwrap(), "plain");
        }
    }
}
