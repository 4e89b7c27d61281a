//! Builder flags (`--name=value`) of one instruction, checked against the
//! flags that instruction takes, like BuildKit's `BFlags`.
//!
//! Rules (BuildKit `instructions/bflag.go`): a flag the instruction does not
//! take is an error; a non-repeatable flag given twice is an error; a boolean
//! flag may be written `--link` or `--link=true|false`; a string flag needs a
//! value.

use crate::dockerfile::ast::Node;
use crate::dockerfile::error::{DockerfileError, ErrorKind};

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagKind {
    /// `--name=value`, at most once.
    String,
    /// `--name` or `--name=true|false`, at most once.
    Bool,
    /// `--name=value`, repeatable; values kept in order.
    List,
}

/// The parsed flags of one instruction.
#[derive(Debug, Default)]
pub struct Flags {
    values: Vec<(&'static str, Vec<String>)>,
}

impl Flags {
    /// Parse `node.flags` against `allowed` (name without dashes, kind).
    pub fn parse(
        node: &Node,
        allowed: &[(&'static str, FlagKind)],
    ) -> Result<Self, DockerfileError> {
        let mut out = Flags::default();
        for raw in &node.flags {
            let bad = |msg: String| {
                DockerfileError::new(ErrorKind::BadFlag, node.start_line, raw.clone(), msg)
            };
            let body = raw
                .strip_prefix("--")
                .ok_or_else(|| bad("a builder flag must start with --".into()))?;
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let keyword = node.value.to_uppercase();
            let Some(&(canonical, kind)) = allowed.iter().find(|(n, _)| *n == name) else {
                let known: Vec<String> = allowed.iter().map(|(n, _)| format!("--{n}")).collect();
                let hint = if known.is_empty() {
                    format!("{keyword} takes no flags")
                } else {
                    format!("{keyword} takes {}", known.join(", "))
                };
                return Err(bad(format!("unknown flag --{name} for {keyword} ({hint})")));
            };
            let value = match (kind, value) {
                (FlagKind::Bool, None) => "true".to_string(),
                (FlagKind::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                    "true" | "" => "true".to_string(),
                    "false" => "false".to_string(),
                    _ => return Err(bad(format!("--{name} expects true or false, got {v:?}"))),
                },
                (_, None) => return Err(bad(format!("--{name} needs a value: --{name}=VALUE"))),
                (_, Some(v)) => v.to_string(),
            };
            if let Some((_, vals)) = out.values.iter_mut().find(|(n, _)| *n == canonical) {
                if kind != FlagKind::List {
                    return Err(bad(format!("--{name} given more than once")));
                }
                vals.push(value);
            } else {
                out.values.push((canonical, vec![value]));
            }
        }
        Ok(out)
    }

    /// The value of a string flag.
    pub fn string(&self, name: &str) -> Option<String> {
        self.get(name).and_then(|v| v.last().cloned())
    }

    /// The value of a boolean flag (false when absent).
    pub fn bool(&self, name: &str) -> bool {
        self.get(name)
            .and_then(|v| v.last())
            .is_some_and(|v| v == "true")
    }

    /// Whether a flag was given at all.
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// All values of a repeatable flag.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.get(name).cloned().unwrap_or_default()
    }

    fn get(&self, name: &str) -> Option<&Vec<String>> {
        self.values.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(flags: &[&str]) -> Node {
        Node {
            value: "COPY".into(),
            flags: flags.iter().map(|s| s.to_string()).collect(),
            start_line: 3,
            ..Node::default()
        }
    }

    const COPY: &[(&str, FlagKind)] = &[
        ("from", FlagKind::String),
        ("link", FlagKind::Bool),
        ("exclude", FlagKind::List),
    ];

    #[test]
    fn parses_kinds() {
        let f = Flags::parse(
            &node(&["--from=a", "--link", "--exclude=x", "--exclude=y"]),
            COPY,
        )
        .unwrap();
        assert_eq!(f.string("from").as_deref(), Some("a"));
        assert!(f.bool("link"));
        assert_eq!(f.list("exclude"), vec!["x", "y"]);
        let f = Flags::parse(&node(&["--link=false"]), COPY).unwrap();
        assert!(!f.bool("link"));
    }

    #[test]
    fn rejects_unknown_duplicate_and_valueless() {
        for bad in [
            &["--frm=a"][..],
            &["--from=a", "--from=b"],
            &["--from"],
            &["--link=maybe"],
            &["-x"],
        ] {
            let e = Flags::parse(&node(bad), COPY).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadFlag, "{bad:?}");
            assert_eq!(e.line, 3);
        }
    }
}
