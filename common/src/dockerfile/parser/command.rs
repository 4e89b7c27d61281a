//! One logical line → one instruction node: keyword, builder flags and the
//! per-keyword argument rules of BuildKit's `line_parsers.go`.

use super::json::{parse_json_array, JsonArray};
use super::unicode::{is_space, to_lower};
use crate::dockerfile::ast::Node;

/// The bytes BuildKit's `reWhitespace` (`[\t\v\f\r ]+`) splits on.
fn is_sep(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// How deep ONBUILD may nest inside ONBUILD before the parser refuses (the
/// instruction layer rejects any nesting; this only bounds recursion).
pub(crate) const MAX_ONBUILD_DEPTH: usize = 8;

/// Most argument nodes one instruction may have. Bounds the linked list so
/// that dropping or cloning a node can never exhaust the stack.
pub(crate) const MAX_ARGUMENTS: usize = 10_000;

/// A failure while building a node, with BuildKit's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeError(pub(crate) String);

/// Build the instruction node for `line` (`escape` is the escape token).
pub(crate) fn node_from_line(line: &str, escape: char, depth: usize) -> Result<Node, NodeError> {
    let (keyword, flags, args) = split_command(line);
    let mut node = Node {
        value: keyword.to_string(),
        original: line.to_string(),
        flags,
        ..Node::default()
    };
    let (arguments, json) = match to_lower(keyword).as_str() {
        "from" | "expose" => (list(&args)?, false),
        "add" | "copy" | "volume" => json_or_list(&args)?,
        "run" | "cmd" | "entrypoint" | "shell" => json_or_string(&args)?,
        "maintainer" | "stopsignal" | "user" | "workdir" => (string(&args), false),
        "arg" => (leaves(split_words(&args, escape))?, false),
        "env" => (name_value(&args, "ENV", escape)?, false),
        "label" => (name_value(&args, "LABEL", escape)?, false),
        "healthcheck" => health(&args)?,
        "onbuild" => {
            if args.is_empty() {
                (None, false)
            } else {
                if depth >= MAX_ONBUILD_DEPTH {
                    return Err(NodeError(format!(
                        "ONBUILD nested more than {MAX_ONBUILD_DEPTH} levels deep; ONBUILD cannot contain ONBUILD"
                    )));
                }
                let nested = node_from_line(&args, escape, depth + 1)?;
                let holder = Node {
                    children: vec![nested],
                    ..Node::default()
                };
                (Some(Box::new(holder)), false)
            }
        }
        _ => (Some(Box::default()), false),
    };
    node.next = arguments;
    node.json = json;
    Ok(node)
}

/// Split the keyword off, extract the builder flags, and trim the arguments.
pub(crate) fn split_command(line: &str) -> (&str, Vec<String>, String) {
    let line = line.trim_matches(is_space);
    match line.find(is_sep) {
        None => (line, Vec::new(), String::new()),
        Some(i) => {
            let keyword = &line[..i];
            let rest = line[i..].trim_start_matches(is_sep);
            let (args, flags) = extract_builder_flags(rest);
            (keyword, flags, args.trim_matches(is_space).to_string())
        }
    }
}

/// Scan leading `--flag` words. Quotes group and are removed; a backslash
/// makes the next character literal (BuildKit uses a plain backslash here,
/// whatever the escape directive says); a bare `--` ends the flags.
fn extract_builder_flags(line: &str) -> (&str, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let mut flags = Vec::new();
    let mut word = String::new();
    let mut phase = Phase::Spaces;
    let mut it = line.char_indices().peekable();
    while let Some((pos, ch)) = it.next() {
        match phase {
            Phase::Spaces => {
                if is_space(ch) {
                    continue;
                }
                if !line[pos..].starts_with("--") {
                    return (&line[pos..], flags);
                }
                phase = Phase::Word;
                word.push(ch);
            }
            Phase::Word => {
                if is_space(ch) {
                    phase = Phase::Spaces;
                    if word == "--" {
                        return (&line[pos..], flags);
                    }
                    flags.push(std::mem::take(&mut word));
                } else if ch == '\'' || ch == '"' {
                    phase = Phase::Quote(ch);
                } else if ch == '\\' {
                    if let Some((_, next)) = it.next() {
                        word.push(next);
                    }
                } else {
                    word.push(ch);
                }
            }
            Phase::Quote(q) => {
                if ch == q {
                    phase = Phase::Word;
                } else if ch == '\\' {
                    match it.next() {
                        Some((_, next)) => word.push(next),
                        None => phase = Phase::Word,
                    }
                } else {
                    word.push(ch);
                }
            }
        }
    }
    if phase != Phase::Spaces && word != "--" {
        flags.push(word);
    }
    ("", flags)
}

/// Link `values` into an argument list (at most [`MAX_ARGUMENTS`]).
fn leaves(values: Vec<String>) -> Result<Option<Box<Node>>, NodeError> {
    if values.len() > MAX_ARGUMENTS {
        return Err(NodeError(format!(
            "instruction has {} arguments, more than the {MAX_ARGUMENTS} allowed; split it into several instructions",
            values.len()
        )));
    }
    let mut next = None;
    for value in values.into_iter().rev() {
        next = Some(Box::new(Node {
            value,
            next,
            ..Node::default()
        }));
    }
    Ok(next)
}

/// LIST: split at runs of `[\t\v\f\r ]`.
fn list(args: &str) -> Result<Option<Box<Node>>, NodeError> {
    if args.is_empty() {
        return Ok(None);
    }
    leaves(
        args.split(is_sep)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
    )
}

/// STRING: the arguments verbatim as one leaf.
fn string(args: &str) -> Option<Box<Node>> {
    if args.is_empty() {
        None
    } else {
        Some(Box::new(Node {
            value: args.to_string(),
            ..Node::default()
        }))
    }
}

type Args = Result<(Option<Box<Node>>, bool), NodeError>;

fn not_strings() -> NodeError {
    NodeError("when using JSON array syntax, arrays must be comprised of strings only".into())
}

/// JSON-or-LIST (ADD, COPY, VOLUME).
fn json_or_list(args: &str) -> Args {
    match parse_json_array(args) {
        JsonArray::Strings(v) => Ok((leaves(v)?, true)),
        JsonArray::NotAllStrings => Err(not_strings()),
        JsonArray::NotJson => Ok((list(args)?, false)),
    }
}

/// JSON-or-STRING (RUN, CMD, ENTRYPOINT, SHELL).
fn json_or_string(args: &str) -> Args {
    if args.is_empty() {
        return Ok((None, false));
    }
    match parse_json_array(args) {
        JsonArray::Strings(v) => Ok((leaves(v)?, true)),
        JsonArray::NotAllStrings => Err(not_strings()),
        JsonArray::NotJson => Ok((string(args), false)),
    }
}

/// HEALTHCHECK: the type word, then JSON-or-STRING for the rest.
fn health(args: &str) -> Args {
    let ascii_space = |c: char| matches!(c, '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ');
    let sep = args.find(ascii_space).unwrap_or(args.len());
    if sep == 0 {
        return Ok((None, false));
    }
    let rest = args[sep..].trim_start_matches(ascii_space);
    let (cmd, json) = json_or_string(rest)?;
    Ok((
        Some(Box::new(Node {
            value: args[..sep].to_string(),
            next: cmd,
            ..Node::default()
        })),
        json,
    ))
}

/// The quote-aware word splitter of ARG, ENV and LABEL. Quotes and escapes
/// stay in the words; they are removed later, during expansion.
pub(crate) fn split_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let mut words = Vec::new();
    let mut word = String::new();
    let mut phase = Phase::Spaces;
    let mut it = rest.chars().peekable();
    while let Some(ch) = it.next() {
        if phase == Phase::Spaces {
            if is_space(ch) {
                continue;
            }
            phase = Phase::Word;
        }
        match phase {
            Phase::Spaces => {}
            Phase::Word => {
                if is_space(ch) {
                    phase = Phase::Spaces;
                    if !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    phase = Phase::Quote(ch);
                }
                if ch == escape {
                    match it.next() {
                        None => continue, // a final escape token is dropped
                        Some(next) => {
                            word.push(ch);
                            word.push(next);
                            continue;
                        }
                    }
                }
                word.push(ch);
            }
            Phase::Quote(q) => {
                if ch == q {
                    phase = Phase::Word;
                }
                if ch == escape && q != '\'' {
                    match it.next() {
                        None => {
                            phase = Phase::Word;
                            continue;
                        }
                        Some(next) => {
                            word.push(ch);
                            word.push(next);
                            continue;
                        }
                    }
                }
                word.push(ch);
            }
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// NAME-VALUE (ENV, LABEL): legacy `KEY value...` or `k=v` pairs. Each pair
/// becomes three leaves: key, value, and the separator (`""` legacy, `"="`).
fn name_value(args: &str, keyword: &str, escape: char) -> Result<Option<Box<Node>>, NodeError> {
    let words = split_words(args, escape);
    let Some(first) = words.first() else {
        return Ok(None);
    };
    if !first.contains('=') {
        let Some(i) = args.find(is_sep) else {
            return Err(NodeError(format!("{keyword} must have two arguments")));
        };
        let value = args[i..].trim_start_matches(is_sep);
        return leaves(vec![
            args[..i].to_string(),
            value.to_string(),
            String::new(),
        ]);
    }
    let mut values = Vec::with_capacity(words.len() * 3);
    for word in &words {
        let Some((key, value)) = word.split_once('=') else {
            return Err(NodeError(format!(
                "Syntax error - can't find = in {}. Must be of the form: name=value",
                crate::dockerfile::dump::go_quote(word)
            )));
        };
        values.extend([key.to_string(), value.to_string(), "=".to_string()]);
    }
    leaves(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_stop_at_double_dash_and_non_flags() {
        assert_eq!(
            split_command("COPY --a=1 --b -- --c x"),
            ("COPY", vec!["--a=1".into(), "--b".into()], "--c x".into())
        );
        assert_eq!(
            split_command("COPY --a=\"x y\" z"),
            ("COPY", vec!["--a=x y".into()], "z".into())
        );
        assert_eq!(
            split_command("CMD --doit"),
            ("CMD", vec!["--doit".into()], String::new())
        );
        assert_eq!(split_command("CMD --"), ("CMD", vec![], String::new()));
        assert_eq!(
            split_command("CMD --a\\ b c"),
            ("CMD", vec!["--a b".into()], "c".into())
        );
        assert_eq!(
            split_command("CMD --a\\"),
            ("CMD", vec!["--a".into()], String::new())
        );
        assert_eq!(split_command("CMD -x"), ("CMD", vec![], "-x".into()));
        assert_eq!(split_command("  FROM\t\tx  "), ("FROM", vec![], "x".into()));
    }

    #[test]
    fn words_keep_quotes_and_escapes() {
        assert_eq!(
            split_words(r#"abc="123 456" def"#, '\\'),
            [r#"abc="123 456""#, "def"]
        );
        assert_eq!(
            split_words(r#"a\ b 'c\' d"#, '\\'),
            [r#"a\ b"#, r#"'c\'"#, "d"]
        );
        assert_eq!(split_words(r#""a\"b" x\"#, '\\'), [r#""a\"b""#, "x"]);
        assert_eq!(split_words("a`` b", '`'), ["a``", "b"]);
        assert_eq!(split_words("\"unterminated x", '\\'), ["\"unterminated x"]);
    }
}
