//! Word expansion for instructions, with the names used and missing.
//!
//! Thin adapter over the shell lexer (BuildKit `shell.Lex.ProcessWord`):
//! `$V ${V} ${V:-w} ${V-w} ${V:+w} ${V+w} ${V:?m} ${V?m}`, quotes and the
//! escape token. Until `dockerfile::shell` lands this holds a minimal lexer
//! with the same contract.

/// A variable scope: ordered `(name, value)` pairs, later entries win.
pub type Vars = Vec<(String, String)>;

/// The result of expanding one word.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expanded {
    /// The expanded word.
    pub value: String,
    /// Names found in the scope.
    pub matched: Vec<String>,
    /// Names referenced but not in the scope.
    pub unmatched: Vec<String>,
}

/// Expands words with a given escape token.
#[derive(Debug, Clone, Copy)]
pub struct Expander {
    escape: char,
}

impl Expander {
    /// `escape` is `\\` or `` ` ``.
    pub fn new(escape: char) -> Self {
        Self { escape }
    }

    /// Expand one word; quotes are removed.
    pub fn word(&self, w: &str, vars: &Vars) -> Result<String, String> {
        Ok(self.word_with_matches(w, vars)?.value)
    }

    /// Expand one word and report the names used.
    pub fn word_with_matches(&self, w: &str, vars: &Vars) -> Result<Expanded, String> {
        if !w.contains(['$', '\'', '"', self.escape]) {
            return Ok(Expanded {
                value: w.to_string(),
                ..Expanded::default()
            });
        }
        let mut m = Mini {
            chars: w.chars().collect(),
            pos: 0,
            escape: self.escape,
            vars,
            out: Expanded::default(),
        };
        let value = m.run(&[])?;
        m.out.value = value;
        Ok(m.out)
    }
}

struct Mini<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    vars: &'a Vars,
    out: Expanded,
}

impl Mini<'_> {
    fn lookup(&mut self, name: &str) -> Option<String> {
        let v = self
            .vars
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone());
        let list = if v.is_some() {
            &mut self.out.matched
        } else {
            &mut self.out.unmatched
        };
        if !list.iter().any(|n| n == name) {
            list.push(name.to_string());
        }
        v
    }

    fn run(&mut self, stop: &[char]) -> Result<String, String> {
        let mut s = String::new();
        while let Some(&c) = self.chars.get(self.pos) {
            if stop.contains(&c) {
                break;
            }
            self.pos += 1;
            if c == self.escape {
                if let Some(&n) = self.chars.get(self.pos) {
                    s.push(n);
                    self.pos += 1;
                }
            } else if c == '\'' {
                while let Some(&n) = self.chars.get(self.pos) {
                    self.pos += 1;
                    if n == '\'' {
                        break;
                    }
                    s.push(n);
                }
            } else if c == '"' {
                while let Some(&n) = self.chars.get(self.pos) {
                    self.pos += 1;
                    match n {
                        '"' => break,
                        '$' => s.push_str(&self.dollar()?),
                        _ if n == self.escape => {
                            if let Some(&e) = self.chars.get(self.pos) {
                                if !matches!(e, '"' | '$') && e != self.escape {
                                    s.push(n);
                                }
                                s.push(e);
                                self.pos += 1;
                            }
                        }
                        _ => s.push(n),
                    }
                }
            } else if c == '$' {
                s.push_str(&self.dollar()?);
            } else {
                s.push(c);
            }
        }
        Ok(s)
    }

    fn name(&mut self) -> String {
        let mut n = String::new();
        while let Some(&c) = self.chars.get(self.pos) {
            if c.is_ascii_alphanumeric() || c == '_' {
                n.push(c);
                self.pos += 1;
            } else {
                break;
            }
        }
        n
    }

    fn dollar(&mut self) -> Result<String, String> {
        match self.chars.get(self.pos) {
            Some('{') => {
                self.pos += 1;
                let name = self.name();
                if name.is_empty() {
                    return Err("bad substitution: missing variable name after ${".into());
                }
                let val = self.lookup(&name);
                match self.chars.get(self.pos).copied() {
                    Some('}') => {
                        self.pos += 1;
                        Ok(val.unwrap_or_default())
                    }
                    Some(c @ (':' | '-' | '+' | '?')) => {
                        let colon = c == ':';
                        if colon {
                            self.pos += 1;
                        }
                        let op = self.chars.get(self.pos).copied().unwrap_or('}');
                        self.pos += 1;
                        let word = self.run(&['}'])?;
                        if self.chars.get(self.pos) != Some(&'}') {
                            return Err(format!("missing '}}' in ${{{name}"));
                        }
                        self.pos += 1;
                        let set = match &val {
                            Some(v) => !(colon && v.is_empty()),
                            None => false,
                        };
                        match op {
                            '-' => Ok(if set { val.unwrap_or_default() } else { word }),
                            '+' => Ok(if set { word } else { String::new() }),
                            '?' => {
                                if set {
                                    Ok(val.unwrap_or_default())
                                } else if word.is_empty() {
                                    Err(format!("{name}: is not allowed to be unset"))
                                } else {
                                    Err(format!("{name}: {word}"))
                                }
                            }
                            _ => Err(format!("unsupported modifier ({op}) in substitution")),
                        }
                    }
                    _ => Err(format!("missing '}}' in ${{{name}")),
                }
            }
            Some(c) if c.is_ascii_alphanumeric() || *c == '_' => {
                let name = self.name();
                Ok(self.lookup(&name).unwrap_or_default())
            }
            _ => Ok("$".into()),
        }
    }
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
    }
}
