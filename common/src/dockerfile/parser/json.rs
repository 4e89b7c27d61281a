//! The exec-form test: is an instruction's argument text a JSON array of
//! strings?
//!
//! BuildKit hands the text to Go's `encoding/json` (RFC 8259, strict). This is
//! a small iterative validator and decoder with Go's behaviour where it
//! differs from other decoders: nesting deeper than 10,000 levels is invalid,
//! and a lone UTF-16 surrogate escape decodes to U+FFFD instead of failing.

/// What the JSON test found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JsonArray {
    /// Not a JSON array (no leading `[`, or invalid JSON): use the shell form.
    NotJson,
    /// A valid JSON array with a non-string element: a hard parse error.
    NotAllStrings,
    /// A valid array of strings, decoded.
    Strings(Vec<String>),
}

/// Go's `encoding/json` maximum nesting depth.
const MAX_DEPTH: usize = 10_000;

/// Run BuildKit's JSON test on `text` (leading Unicode whitespace is skipped).
pub(crate) fn parse_json_array(text: &str) -> JsonArray {
    let text = text.trim_start_matches(super::unicode::is_space);
    if !text.starts_with('[') {
        return JsonArray::NotJson;
    }
    let mut p = Parser {
        s: text.as_bytes(),
        src: text,
        pos: 0,
    };
    match p.document() {
        Some(Some(strings)) => JsonArray::Strings(strings),
        Some(None) => JsonArray::NotAllStrings,
        None => JsonArray::NotJson,
    }
}

struct Parser<'a> {
    s: &'a [u8],
    src: &'a str,
    pos: usize,
}

/// What kind of container the validator is inside.
#[derive(Clone, Copy, PartialEq)]
enum Frame {
    Array,
    Object,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// Validate the whole text. `None` = invalid JSON; `Some(None)` = valid
    /// but some top-level element is not a string; `Some(Some(v))` = strings.
    fn document(&mut self) -> Option<Option<Vec<String>>> {
        let mut stack: Vec<Frame> = Vec::new();
        let mut strings: Option<Vec<String>> = Some(Vec::new());
        self.skip_ws();
        // Parse one value at a time; containers push frames.
        loop {
            // Expect a value here.
            self.skip_ws();
            let top_level_element = stack.len() == 1 && stack[0] == Frame::Array;
            match self.peek()? {
                b'[' | b'{' => {
                    let frame = if self.peek() == Some(b'[') {
                        Frame::Array
                    } else {
                        Frame::Object
                    };
                    self.pos += 1;
                    if top_level_element {
                        strings = None;
                    }
                    stack.push(frame);
                    if stack.len() > MAX_DEPTH {
                        return None;
                    }
                    self.skip_ws();
                    let close = if frame == Frame::Array { b']' } else { b'}' };
                    if self.peek() == Some(close) {
                        self.pos += 1;
                        stack.pop();
                    } else {
                        if frame == Frame::Object {
                            self.object_key()?;
                        }
                        continue;
                    }
                }
                b'"' => {
                    let s = self.string()?;
                    if top_level_element {
                        if let Some(v) = strings.as_mut() {
                            v.push(s);
                        }
                    }
                }
                _ => {
                    self.scalar()?;
                    if top_level_element {
                        strings = None;
                    }
                }
            }
            // After a value: close containers or move to the next element.
            loop {
                let Some(&frame) = stack.last() else {
                    self.skip_ws();
                    return if self.pos == self.s.len() {
                        Some(strings)
                    } else {
                        None
                    };
                };
                self.skip_ws();
                let close = if frame == Frame::Array { b']' } else { b'}' };
                match self.peek()? {
                    b',' => {
                        self.pos += 1;
                        if frame == Frame::Object {
                            self.skip_ws();
                            self.object_key()?;
                        }
                        break;
                    }
                    c if c == close => {
                        self.pos += 1;
                        stack.pop();
                    }
                    _ => return None,
                }
            }
        }
    }

    /// `"key" :` inside an object.
    fn object_key(&mut self) -> Option<()> {
        if self.peek()? != b'"' {
            return None;
        }
        self.string()?;
        self.skip_ws();
        if self.peek()? != b':' {
            return None;
        }
        self.pos += 1;
        Some(())
    }

    /// `true`, `false`, `null` or a number.
    fn scalar(&mut self) -> Option<()> {
        let rest = &self.s[self.pos..];
        for lit in [&b"true"[..], b"false", b"null"] {
            if rest.starts_with(lit) {
                self.pos += lit.len();
                return Some(());
            }
        }
        self.number()
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.src.get(self.pos..self.pos + 4)?;
        if !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.pos += 4;
        u32::from_str_radix(h, 16).ok()
    }

    /// A string starting at `"`, decoded as Go does.
    fn string(&mut self) -> Option<String> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            let start = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            // Safe slicing: we stopped at an ASCII byte or the end.
            out.push_str(self.src.get(start..self.pos)?);
            match self.peek()? {
                b'"' => {
                    self.pos += 1;
                    return Some(out);
                }
                b'\\' => {
                    self.pos += 1;
                    let esc = self.peek()?;
                    self.pos += 1;
                    match esc {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => out.push(self.unicode_escape()?),
                        _ => return None,
                    }
                }
                _ => return None, // control character
            }
        }
    }

    /// The code point after `\u`, pairing surrogates like Go's decoder.
    fn unicode_escape(&mut self) -> Option<char> {
        let first = self.hex4()?;
        if (0xD800..0xE000).contains(&first) {
            // Try to pair with a following `\uXXXX`; Go only consumes it when
            // the two form a valid pair.
            if (0xD800..0xDC00).contains(&first)
                && self.s.get(self.pos..self.pos + 2) == Some(b"\\u")
            {
                let save = self.pos;
                self.pos += 2;
                if let Some(second) = self.hex4() {
                    if (0xDC00..0xE000).contains(&second) {
                        let c = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                        return char::from_u32(c);
                    }
                }
                self.pos = save;
            }
            return Some('\u{FFFD}');
        }
        char::from_u32(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> JsonArray {
        JsonArray::Strings(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn decodes_string_arrays() {
        assert_eq!(parse_json_array(r#"["a", "b c"]"#), strings(&["a", "b c"]));
        assert_eq!(parse_json_array("  []"), strings(&[]));
        assert_eq!(
            parse_json_array(r#"["\" \\ \/ \b \f \n \r \t \u0000"]"#),
            strings(&["\" \\ / \u{8} \u{c} \n \r \t \0"])
        );
        assert_eq!(parse_json_array(r#"["\ud83d\ude00"]"#), strings(&["😀"]));
        assert_eq!(parse_json_array(r#"["\ud800x"]"#), strings(&["\u{FFFD}x"]));
        assert_eq!(
            parse_json_array(r#"["\udc00\ud800"]"#),
            strings(&["\u{FFFD}\u{FFFD}"])
        );
        assert_eq!(parse_json_array("[\"a\"]\r\n\t "), strings(&["a"]));
    }

    #[test]
    fn rejects_invalid_json() {
        for bad in [
            "",
            "a",
            "[",
            "['a']",
            r#"["a",]"#,
            r#"["a" "b"]"#,
            r#"["a"] x"#,
            "[\"a\tb\"]",
            r#"["\x"]"#,
            r#"["\u12"]"#,
            "[01]",
            "[1.]",
            "[1e]",
            "[-]",
            "[tru]",
            r#"[{"a"}]"#,
            r#"[{"a":1,}]"#,
            "[\"a\"]\u{a0}",
        ] {
            assert_eq!(parse_json_array(bad), JsonArray::NotJson, "{bad:?}");
        }
    }

    #[test]
    fn non_string_elements_are_flagged() {
        for v in [
            r#"["a", ["b"]]"#,
            "[1]",
            "[null]",
            r#"[{"a": [1, {"b": "c"}]}]"#,
            "[true, -0.5e+3]",
        ] {
            assert_eq!(parse_json_array(v), JsonArray::NotAllStrings, "{v:?}");
        }
    }

    #[test]
    fn depth_limit_matches_go() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(parse_json_array(&ok), JsonArray::NotAllStrings);
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(parse_json_array(&deep), JsonArray::NotJson);
    }
}
