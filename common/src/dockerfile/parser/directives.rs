//! Parser directives (`# syntax=`, `# escape=`, `# check=`), as BuildKit's
//! `DirectiveParser` detects them: only in the comment lines at the very top
//! of the file. The first line that is not a directive (a blank line, an
//! ordinary comment, an instruction, an unknown directive name) ends the
//! detection for good.

/// Directive state while parsing.
#[derive(Debug)]
pub(crate) struct Directives {
    done: bool,
    escape_set: bool,
    /// The escape token in force (`\` or `` ` ``).
    pub(crate) escape: char,
    /// The `syntax` value, if given.
    pub(crate) syntax: Option<String>,
    /// The `check` value, if given.
    pub(crate) check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Self {
            done: false,
            escape_set: false,
            escape: '\\',
            syntax: None,
            check: None,
        }
    }
}

/// Go regexp `\s`: `[\t\n\f\r ]`.
fn is_re_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ')
}

/// Split `# NAME = VALUE` into name and value, or `None` if the line does not
/// have that shape. The value follows Go's lazy `(.+?)\s*$`: trailing
/// whitespace is dropped, but a value made only of whitespace keeps its last
/// character.
fn split_directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?;
    let rest = rest.trim_start_matches(super::unicode::is_space);
    let name_len = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(rest.len(), |(i, _)| i);
    if name_len == 0 {
        return None;
    }
    let (name, after) = rest.split_at(name_len);
    let after = after.trim_start_matches(is_re_space).strip_prefix('=')?;
    let value_part = after.trim_start_matches(is_re_space);
    let value = value_part.trim_end_matches(is_re_space);
    if !value.is_empty() {
        return Some((name, value));
    }
    // Only whitespace after `=`: the lazy group still needs one character.
    let last = after.chars().next_back()?;
    Some((name, &after[after.len() - last.len_utf8()..]))
}

impl Directives {
    /// Look at one line (trailing CR/LF removed). Errors: a repeated
    /// directive, or an escape token other than `\` or `` ` ``.
    pub(crate) fn check_line(&mut self, line: &str) -> Result<(), String> {
        if self.done {
            return Ok(());
        }
        let Some((name, value)) = split_directive(line) else {
            self.done = true;
            return Ok(());
        };
        let key = name.to_ascii_lowercase();
        let slot = match key.as_str() {
            "syntax" => &mut self.syntax,
            "check" => &mut self.check,
            "escape" => return self.set_escape(value),
            _ => {
                self.done = true;
                return Ok(());
            }
        };
        if slot.is_some() {
            return Err(format!("only one {key} parser directive can be used"));
        }
        *slot = Some(value.to_string());
        Ok(())
    }

    fn set_escape(&mut self, value: &str) -> Result<(), String> {
        if self.escape_set {
            return Err("only one escape parser directive can be used".into());
        }
        self.escape = match value {
            "\\" => '\\',
            "`" => '`',
            _ => {
                return Err(format!(
                    "invalid escape token '{value}' does not match ` or \\; use a backslash or a backtick"
                ))
            }
        };
        self.escape_set = true;
        Ok(())
    }
}
