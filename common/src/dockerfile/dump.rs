//! The parse tree → BuildKit's test dump format (`Node.Dump()` in BuildKit's
//! parser), used by `imgfarm debug parse` and the conformance tests.
//!
//! Each instruction prints as `(keyword ["flag" ...] "arg" ...)` on its own
//! line, strings quoted with Go's `strconv.Quote` rules; see
//! `common/tests/conformance/buildkit-parser/FORMAT.md`, section 3.

use crate::dockerfile::ast::Node;
use crate::dockerfile::parser::unicode::{is_print, is_space, to_lower};
use std::fmt::Write as _;

/// Dump `node` as BuildKit does. For a root node the result is one line per
/// instruction, without a final newline (BuildKit's test adds it).
pub fn dump(node: &Node) -> String {
    let mut out = to_lower(&node.value);
    if !node.flags.is_empty() {
        out.push_str(" [");
        for (i, flag) in node.flags.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(&go_quote(flag));
        }
        out.push(']');
    }
    for child in &node.children {
        out.push('(');
        out.push_str(&dump(child));
        out.push_str(")\n");
    }
    let mut arg = node.next.as_deref();
    while let Some(a) = arg {
        out.push(' ');
        if a.children.is_empty() {
            out.push_str(&go_quote(&a.value));
        } else {
            out.push_str(&dump(a));
        }
        arg = a.next.as_deref();
    }
    out.trim_matches(is_space).to_string()
}

/// Quote `s` like Go's `strconv.Quote`: printable characters stay literal,
/// `"` and `\` are escaped, control characters use `\a \b \f \n \r \t \v` or
/// `\xNN`, and other non-printable characters use `\uNNNN` or `\UNNNNNNNN`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if is_print(c) => out.push(c),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_matches_go() {
        assert_eq!(go_quote("abc 123"), r#""abc 123""#);
        assert_eq!(go_quote("♥☃한국어é"), "\"♥☃한국어é\"");
        assert_eq!(
            go_quote("\" \\ / \u{8} \u{c} \n \r \t \0"),
            r#""\" \\ / \b \f \n \r \t \x00""#
        );
        assert_eq!(go_quote("\u{7}\u{b}\u{1b}\u{7f}"), r#""\a\v\x1b\x7f""#);
        assert_eq!(
            go_quote("\u{a0}\u{2028}\u{200b}\u{feff}"),
            r#""\u00a0\u2028\u200b\ufeff""#
        );
        assert_eq!(
            go_quote("\u{e000}\u{10ffff}\u{1f600}"),
            "\"\\ue000\\U0010ffff😀\""
        );
        assert_eq!(go_quote("\u{FFFD}"), "\"\u{FFFD}\"");
    }
}
