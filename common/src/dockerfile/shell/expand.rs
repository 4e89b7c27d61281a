//! The expansion engine: one pass over a word, recursing into `${…}`
//! operands, following BuildKit's `shellWord` (lex.go) step by step so that
//! its quirks come out the same (see the notes on each function).

use std::collections::BTreeSet;

use super::env::{get_ignoring_case, Env};
use super::error::ShellError;
use super::pattern::{self, MatchError, Pattern};
use super::words::Words;
use super::{chars, Lexer};

/// Everything one expansion produces.
pub(super) struct Outcome {
    pub(super) result: String,
    pub(super) words: Vec<String>,
    pub(super) matched: BTreeSet<String>,
    pub(super) unmatched: BTreeSet<String>,
}

/// Expand `word`; split it into words too when `split` is set.
pub(super) fn expand(
    lexer: &Lexer,
    word: &str,
    env: &dyn Env,
    split: bool,
) -> Result<Outcome, ShellError> {
    let limits = &lexer.limits;
    if word.len() > limits.max_word_bytes {
        return Err(ShellError::WordTooLong {
            len: word.len(),
            max: limits.max_word_bytes,
        });
    }
    let mut expander = Expander {
        lexer,
        env,
        // Go's text/scanner skips a byte-order mark at the very start.
        src: word.strip_prefix('\u{feff}').unwrap_or(word),
        pos: 0,
        raw_escapes: lexer.raw_escapes,
        depth: 0,
        work: 0,
        steps: limits.max_match_steps,
        matched: BTreeSet::new(),
        unmatched: BTreeSet::new(),
    };
    let mut words = split.then(Words::default);
    let result = expander.process_until(None, lexer.raw_escapes, words.as_mut())?;
    Ok(Outcome {
        result,
        words: words.map(Words::finish).unwrap_or_default(),
        matched: expander.matched,
        unmatched: expander.unmatched,
    })
}

struct Expander<'a> {
    lexer: &'a Lexer,
    env: &'a dyn Env,
    src: &'a str,
    /// Byte offset of the next character in `src`.
    pos: usize,
    /// Whether escape characters are kept; switched on for pattern operands.
    raw_escapes: bool,
    depth: usize,
    /// Bytes written into any buffer so far.
    work: usize,
    /// Pattern-matching steps left.
    steps: u64,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

impl Expander<'_> {
    fn peek(&self) -> Option<char> {
        self.src
            .get(self.pos..)
            .and_then(|rest| rest.chars().next())
    }

    fn next_char(&mut self) -> Option<char> {
        let ch = self.peek()?;
        self.pos += ch.len_utf8();
        Some(ch)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn charge(&mut self, bytes: usize) -> Result<(), ShellError> {
        self.work = self.work.saturating_add(bytes);
        if self.work > self.lexer.limits.max_work_bytes {
            return Err(ShellError::ExpansionTooLarge {
                max: self.lexer.limits.max_work_bytes,
            });
        }
        Ok(())
    }

    fn push_str(&mut self, buf: &mut String, text: &str) -> Result<(), ShellError> {
        let max = self.lexer.limits.max_result_bytes;
        if buf.len().saturating_add(text.len()) > max {
            return Err(ShellError::ExpansionTooLarge { max });
        }
        self.charge(text.len())?;
        buf.push_str(text);
        Ok(())
    }

    fn push_char(&mut self, buf: &mut String, ch: char) -> Result<(), ShellError> {
        self.push_str(buf, ch.encode_utf8(&mut [0; 4]))
    }

    /// BuildKit's `processStopOn`: expand up to `stop` (consumed) or the end
    /// of the word. `raw_escapes` holds for this level only.
    fn process_until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
        words: Option<&mut Words>,
    ) -> Result<String, ShellError> {
        let max = self.lexer.limits.max_depth;
        if self.depth >= max {
            return Err(ShellError::NestingTooDeep { max });
        }
        self.depth += 1;
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let result = self.process_until_inner(stop, words);
        self.raw_escapes = saved;
        self.depth -= 1;
        result
    }

    fn process_until_inner(
        &mut self,
        stop: Option<char>,
        mut words: Option<&mut Words>,
    ) -> Result<String, ShellError> {
        let mut result = String::new();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.pos += ch.len_utf8();
                return Ok(result);
            }
            match ch {
                '$' => {
                    let value = self.process_dollar()?;
                    self.push_str(&mut result, &value)?;
                    if let Some(words) = words.as_deref_mut() {
                        words.add_str(&value);
                    }
                }
                '\'' | '"' if !self.lexer.skip_process_quotes => {
                    let text = if ch == '\'' {
                        self.single_quote()?
                    } else {
                        self.double_quote()?
                    };
                    self.push_str(&mut result, &text)?;
                    if let Some(words) = words.as_deref_mut() {
                        words.add_raw_str(&text);
                    }
                }
                _ => {
                    self.pos += ch.len_utf8();
                    let mut ch = ch;
                    if ch == self.lexer.escape {
                        if self.raw_escapes {
                            self.push_char(&mut result, ch)?;
                            if let Some(words) = words.as_deref_mut() {
                                words.add_raw_char(ch);
                            }
                        }
                        // An escape at the very end is dropped.
                        let Some(escaped) = self.next_char() else {
                            break;
                        };
                        ch = escaped;
                        if let Some(words) = words.as_deref_mut() {
                            words.add_raw_char(ch);
                        }
                    } else if let Some(words) = words.as_deref_mut() {
                        words.add_char(ch);
                    }
                    self.push_char(&mut result, ch)?;
                }
            }
        }
        match stop {
            None => Ok(result),
            Some('/') => Err(ShellError::MissingSlash),
            Some(_) => Err(ShellError::MissingBrace),
        }
    }

    /// Everything up to the next `'` is literal; there is no escape.
    fn single_quote(&mut self) -> Result<String, ShellError> {
        let mut result = String::new();
        self.pos += 1;
        if self.lexer.raw_quotes {
            self.push_char(&mut result, '\'')?;
        }
        loop {
            match self.next_char() {
                None => return Err(ShellError::UnterminatedSingleQuote),
                Some('\'') => {
                    if self.lexer.raw_quotes {
                        self.push_char(&mut result, '\'')?;
                    }
                    return Ok(result);
                }
                Some(ch) => self.push_char(&mut result, ch)?,
            }
        }
    }

    /// `$` expands; the escape character escapes only `"`, `$` and itself
    /// and is kept before anything else. With raw escapes BuildKit writes
    /// the escape character once more in that case (`"\a"` → `\\a`).
    fn double_quote(&mut self) -> Result<String, ShellError> {
        let mut result = String::new();
        self.pos += 1;
        if self.lexer.raw_quotes {
            self.push_char(&mut result, '"')?;
        }
        loop {
            match self.peek() {
                None => return Err(ShellError::UnterminatedDoubleQuote),
                Some('"') => {
                    self.pos += 1;
                    if self.lexer.raw_quotes {
                        self.push_char(&mut result, '"')?;
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.process_dollar()?;
                    self.push_str(&mut result, &value)?;
                }
                Some(mut ch) => {
                    self.pos += ch.len_utf8();
                    if ch == self.lexer.escape {
                        if self.raw_escapes {
                            self.push_char(&mut result, ch)?;
                        }
                        match self.peek() {
                            // Dropped; the loop then reports the open quote.
                            None => continue,
                            Some(next)
                                if next == '"' || next == '$' || next == self.lexer.escape =>
                            {
                                self.pos += next.len_utf8();
                                ch = next;
                            }
                            Some(_) => {}
                        }
                    }
                    self.push_char(&mut result, ch)?;
                }
            }
        }
    }

    /// BuildKit's `processName`: a run of digits, or one special parameter
    /// character, or a run of letters, digits and `_`.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && chars::is_digit(ch) {
                while let Some(digit) = self.peek().filter(|&c| chars::is_digit(c)) {
                    self.pos += digit.len_utf8();
                    name.push(digit);
                }
                return name;
            }
            if name.is_empty() && chars::is_special_param(ch) {
                self.pos += ch.len_utf8();
                name.push(ch);
                return name;
            }
            if !chars::is_name_char(ch) {
                break;
            }
            self.pos += ch.len_utf8();
            name.push(ch);
        }
        name
    }

    fn lookup(&mut self, name: &str) -> Option<String> {
        let value = if self.lexer.case_insensitive {
            get_ignoring_case(self.env, name)
        } else {
            self.env.get(name)
        };
        let set = if value.is_some() {
            &mut self.matched
        } else {
            &mut self.unmatched
        };
        if !set.contains(name) {
            set.insert(name.to_owned());
        }
        value
    }

    /// Expand a nested operand; an ordinary error that leaves the scanner at
    /// the end of the word becomes `at_end_error`, as in BuildKit.
    fn operand(
        &mut self,
        stop: char,
        raw_escapes: bool,
        at_end_error: ShellError,
    ) -> Result<String, ShellError> {
        self.process_until(Some(stop), raw_escapes, None)
            .map_err(|error| {
                if self.at_end() && !error.is_limit() {
                    at_end_error
                } else {
                    error
                }
            })
    }

    /// BuildKit's `processDollar`, entered at a `$`.
    fn process_dollar(&mut self) -> Result<String, ShellError> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok(String::from("$"));
            }
            return Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.lexer.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1;
        match self.peek() {
            None => return Err(ShellError::MissingBrace),
            Some('{' | '}' | ':') => return Err(ShellError::BadSubstitution),
            Some(_) => {}
        }
        let name = self.process_name();
        // BuildKit reports "unsupported modifier (\u{fffd})" at the end of
        // the word; a missing brace is what the user needs to hear.
        let Some(ch) = self.next_char() else {
            return Err(ShellError::MissingBrace);
        };
        match ch {
            '}' => Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.lexer.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => self.operator(name, ch),
            '/' => self.substitute(name),
            other => Err(ShellError::UnsupportedModifier {
                modifier: other.to_string(),
            }),
        }
    }

    /// `${NAME<op>word}` for `-`, `+`, `?`, `#`, `%` and their `:` forms.
    /// As in BuildKit, whatever follows `:` is read as the operator, its
    /// operand is expanded first, and only then is an unknown operator
    /// rejected (so with `skip_unset_env`, `${UNSET:=x}` is kept as written).
    fn operator(&mut self, name: String, first: char) -> Result<String, ShellError> {
        let mut modifier = first.to_string();
        let (null_is_unset, op) = if first == ':' {
            let op = self.next_char();
            modifier.extend(op);
            (true, op)
        } else {
            (false, Some(first))
        };
        let is_pattern = matches!(op, Some('#' | '%'));
        if null_is_unset && is_pattern {
            return Err(ShellError::UnsupportedModifier { modifier });
        }
        let word = self.operand('}', is_pattern, ShellError::MissingBrace)?;
        let value = self.lookup(&name);
        if self.lexer.skip_unset_env && value.is_none() {
            return Ok(format!("${{{name}{modifier}{word}}}"));
        }
        let unset = match &value {
            None => true,
            Some(value) => null_is_unset && value.is_empty(),
        };
        match op {
            Some('-') => Ok(if unset {
                word
            } else {
                value.unwrap_or_default()
            }),
            Some('+') => Ok(if unset { String::new() } else { word }),
            Some('?') => match value {
                None => Err(ShellError::Unset {
                    name,
                    message: message_or(word, "is not allowed to be unset"),
                }),
                Some(value) if null_is_unset && value.is_empty() => Err(ShellError::Empty {
                    name,
                    message: message_or(word, "is not allowed to be empty"),
                }),
                Some(value) => Ok(value),
            },
            Some(op @ ('#' | '%')) => self.trim(op, &word, value.unwrap_or_default()),
            _ => Err(ShellError::UnsupportedModifier { modifier }),
        }
    }

    /// `#`/`##` and `%`/`%%`: the doubled form is recognised on the
    /// expanded operand, so `${X#'#p'}` is greedy too, as in BuildKit.
    fn trim(&mut self, op: char, word: &str, value: String) -> Result<String, ShellError> {
        let (greedy, pattern) = match word.strip_prefix(op) {
            Some(rest) => (true, rest),
            None => (false, word),
        };
        let compiled_text = if op == '%' {
            pattern::reverse_pattern(pattern)
        } else {
            pattern.to_owned()
        };
        let compiled = Pattern::compile(&compiled_text, greedy).map_err(|escaped| {
            ShellError::InvalidPattern {
                pattern: compiled_text.clone(),
                escaped,
            }
        })?;
        let mut steps = self.steps;
        let trimmed = if op == '%' {
            self.charge(value.len().saturating_mul(2))?;
            pattern::trim_suffix(&compiled, &value, &mut steps)
        } else {
            pattern::trim_prefix(&compiled, &value, &mut steps).map(str::to_owned)
        };
        self.steps = steps;
        trimmed.map_err(|error| self.match_error(error, compiled_text))
    }

    /// `${NAME/pattern/replacement}` and `${NAME//pattern/replacement}`.
    fn substitute(&mut self, name: String) -> Result<String, ShellError> {
        let replace_all = self.peek() == Some('/');
        if replace_all {
            self.pos += 1;
        }
        let pattern = self.operand('/', true, ShellError::MissingSlash)?;
        let replacement = self.operand('}', true, ShellError::MissingBrace)?;
        let value = self.lookup(&name);
        if self.lexer.skip_unset_env && value.is_none() {
            // BuildKit writes a single slash back even for `//`.
            return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
        }
        let value = value.unwrap_or_default();
        let compiled =
            Pattern::compile(&pattern, true).map_err(|escaped| ShellError::InvalidPattern {
                pattern: pattern.clone(),
                escaped,
            })?;
        let max = self.lexer.limits.max_result_bytes;
        let mut steps = self.steps;
        let replaced = if replace_all {
            pattern::replace_all(&compiled, &value, &replacement, max, &mut steps)
        } else {
            pattern::replace_first(&compiled, &value, &replacement, &mut steps)
        };
        self.steps = steps;
        let replaced = replaced.map_err(|error| self.match_error(error, pattern))?;
        self.charge(replaced.len())?;
        Ok(replaced)
    }

    fn match_error(&self, error: MatchError, pattern: String) -> ShellError {
        match error {
            MatchError::Steps => ShellError::PatternTooComplex {
                pattern,
                max_steps: self.lexer.limits.max_match_steps,
            },
            MatchError::TooLarge => ShellError::ExpansionTooLarge {
                max: self.lexer.limits.max_result_bytes,
            },
        }
    }
}

fn message_or(word: String, default: &str) -> String {
    if word.is_empty() {
        default.to_owned()
    } else {
        word
    }
}
