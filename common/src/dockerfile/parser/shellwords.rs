//! The slice of BuildKit's shell lexer (`shell.Lex.ProcessWords`) that heredoc
//! detection needs: an empty environment with `SkipUnsetEnv` (every variable
//! reference is kept as written), backslash as the escape token, and the
//! `RawQuotes`/`RawEscapes` switches. No variable is ever expanded here; full
//! expansion lives in [`crate::dockerfile::shell`].

use super::unicode::{is_digit, is_letter, is_space};

/// Why lexing failed (the messages follow BuildKit's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LexError(pub(crate) String);

/// How deeply `${...}` may nest before lexing gives up. BuildKit has no limit
/// (Go stacks grow); this bounds recursion on hostile input.
pub(crate) const MAX_NESTING: usize = 64;

impl LexError {
    /// True when the input nests `${` deeper than [`MAX_NESTING`].
    pub(crate) fn is_too_deep(&self) -> bool {
        self.0.starts_with(TOO_DEEP)
    }
}

const TOO_DEEP: &str = "variable references nested too deeply";

/// Lexer switches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mode {
    /// Keep quote characters in the output.
    pub(crate) raw_quotes: bool,
    /// Keep escape characters in the output.
    pub(crate) raw_escapes: bool,
}

/// Split `input` into words as BuildKit's `ProcessWords` does in `mode`.
pub(crate) fn words(input: &str, mode: Mode) -> Result<Vec<String>, LexError> {
    let mut chars: Vec<char> = input.chars().collect();
    // Go's text/scanner drops a byte-order mark at the very start.
    if chars.first() == Some(&'\u{FEFF}') {
        chars.remove(0);
    }
    let mut lx = Lexer {
        chars,
        pos: 0,
        raw_quotes: mode.raw_quotes,
        raw_escapes: mode.raw_escapes,
        depth: 0,
    };
    let (_, words) = lx.process_stop_on(None, mode.raw_escapes)?;
    Ok(words)
}

const ESCAPE: char = '\\';

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    raw_quotes: bool,
    raw_escapes: bool,
    depth: usize,
}

/// Word accumulation, with the heredoc rule that spaces or tabs directly after
/// `<<` stay in the word (`<<  EOF` is one word).
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
    /// The word ends in `<<` plus only glued spaces or tabs.
    glue: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if (ch == ' ' || ch == '\t') && self.glue {
            self.word.push(ch);
        } else if is_space(ch) {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
                self.glue = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
        self.glue = self.word.ends_with("<<");
    }

    fn add_string(&mut self, s: &str) {
        for ch in s.chars() {
            self.add_char(ch);
        }
    }

    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
        if !s.is_empty() {
            self.glue = self.word.ends_with("<<");
        }
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

impl Lexer {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// Process until `stop` (consumed) or the end; returns the joined text
    /// and the words.
    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), LexError> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.process_inner(stop);
        self.raw_escapes = saved;
        r
    }

    fn process_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), LexError> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if stop == Some(ch) {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            match ch {
                '\'' => {
                    let tmp = self.single_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                '"' => {
                    let tmp = self.double_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                '$' => {
                    let tmp = self.dollar()?;
                    result.push_str(&tmp);
                    words.add_string(&tmp);
                }
                _ => {
                    self.pos += 1;
                    if ch == ESCAPE {
                        if self.raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        let Some(escaped) = self.next() else { break };
                        words.add_raw_char(escaped);
                        result.push(escaped);
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        if let Some(stop) = stop {
            return Err(LexError(format!(
                "unexpected end of statement while looking for matching {stop}"
            )));
        }
        Ok((result, words.finish()))
    }

    fn single_quote(&mut self) -> Result<String, LexError> {
        let mut out = String::new();
        self.pos += 1;
        if self.raw_quotes {
            out.push('\'');
        }
        loop {
            match self.next() {
                None => {
                    return Err(LexError(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    ))
                }
                Some('\'') => {
                    if self.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String, LexError> {
        let mut out = String::new();
        self.pos += 1;
        if self.raw_quotes {
            out.push('"');
        }
        loop {
            match self.peek() {
                None => {
                    return Err(LexError(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    ))
                }
                Some('"') => {
                    self.pos += 1;
                    if self.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let v = self.dollar()?;
                    out.push_str(&v);
                }
                Some(mut ch) => {
                    self.pos += 1;
                    if ch == ESCAPE {
                        if self.raw_escapes {
                            out.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(c @ ('"' | '$' | ESCAPE)) => {
                                self.pos += 1;
                                ch = c;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(ch);
                }
            }
        }
    }

    /// `$...`: with no variables set and `SkipUnsetEnv`, every reference is
    /// returned as written (nested words processed), or fails on bad syntax.
    fn dollar(&mut self) -> Result<String, LexError> {
        self.depth += 1;
        let r = self.dollar_inner();
        self.depth -= 1;
        r
    }

    fn dollar_inner(&mut self) -> Result<String, LexError> {
        if self.depth > MAX_NESTING {
            return Err(LexError(format!(
                "{TOO_DEEP} (more than {MAX_NESTING} levels of ${{...}})"
            )));
        }
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            return Ok(if name.is_empty() {
                "$".into()
            } else {
                format!("${name}")
            });
        }
        self.pos += 1;
        match self.peek() {
            None => return Err(LexError("syntax error: missing '}'".into())),
            Some('{' | '}' | ':') => return Err(LexError("syntax error: bad substitution".into())),
            _ => {}
        }
        let name = self.name();
        let ch = self.next();
        // Go turns the end-of-input marker into U+FFFD when printing it.
        let show = |c: Option<char>| c.unwrap_or('\u{FFFD}');
        let mut modifier = String::from(show(ch));
        match ch {
            Some('}') => Ok(format!("${{{name}}}")),
            Some(':' | '+' | '-' | '?' | '#' | '%') => {
                let mut op = ch;
                if ch == Some(':') {
                    op = self.next();
                    modifier.push(show(op));
                }
                let raw = matches!(op, Some('#' | '%'));
                let word = match self.process_stop_on(Some('}'), raw) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        return Err(if self.peek().is_none() {
                            LexError("syntax error: missing '}'".into())
                        } else {
                            e
                        })
                    }
                };
                Ok(format!("${{{name}{modifier}{word}}}"))
            }
            Some('/') => {
                if self.peek() == Some('/') {
                    self.pos += 1;
                }
                let pattern = match self.process_stop_on(Some('/'), true) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        return Err(if self.peek().is_none() {
                            LexError("syntax error: missing '/' in ${}".into())
                        } else {
                            e
                        })
                    }
                };
                let replacement = match self.process_stop_on(Some('}'), true) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        return Err(if self.peek().is_none() {
                            LexError("syntax error: missing '}'".into())
                        } else {
                            e
                        })
                    }
                };
                Ok(format!("${{{name}/{pattern}/{replacement}}}"))
            }
            _ => Err(LexError(format!(
                "unsupported modifier ({modifier}) in substitution"
            ))),
        }
    }

    /// A variable name: letters, digits and `_`; a run of digits; or one
    /// special parameter character.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_digit(ch) {
                while let Some(d) = self.peek().filter(|c| is_digit(*c)) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                return ch.to_string();
            }
            if !is_letter(ch) && !is_digit(ch) && ch != '_' {
                break;
            }
            name.push(ch);
            self.pos += 1;
        }
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: Mode = Mode {
        raw_quotes: true,
        raw_escapes: true,
    };

    fn w(s: &str, mode: Mode) -> Vec<String> {
        words(s, mode).expect("lexes")
    }

    #[test]
    fn raw_mode_keeps_quotes_escapes_and_variables() {
        assert_eq!(
            w(r#"RUN "a b" 'c' d\ e $X ${Y:-z}"#, RAW),
            ["RUN", "\"a b\"", "'c'", "d\\ e", "$X", "${Y:-z}"]
        );
        assert_eq!(w("RUN <<  EOF  > foo", RAW), ["RUN", "<<  EOF", ">", "foo"]);
        assert_eq!(w("RUN <<- EOF", RAW), ["RUN", "<<-", "EOF"]);
        assert_eq!(w("a ${X//p/r}", RAW), ["a", "${X/p/r}"]);
    }

    #[test]
    fn cooked_mode_removes_quotes() {
        let m = Mode {
            raw_quotes: false,
            raw_escapes: false,
        };
        assert_eq!(w(r#"eo'f'"#, m), ["eof"]);
        assert_eq!(w(r#"eo\'f"#, m), ["eo'f"]);
        assert_eq!(w("\u{feff}EOF", m), ["EOF"]);
    }

    #[test]
    fn errors() {
        for bad in [
            "'a", "\"a", "${", "${}", "${:a}", "${a", "${a:-b", "${a=b}", "${a/b",
        ] {
            assert!(words(bad, RAW).is_err(), "{bad:?}");
        }
    }
}
