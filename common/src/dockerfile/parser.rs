//! Dockerfile bytes → parse tree, following BuildKit's
//! `frontend/dockerfile/parser` (described in
//! `common/tests/conformance/buildkit-parser/FORMAT.md`).
//!
//! The parser is permissive on purpose, like BuildKit's: unknown
//! instructions, unknown flags and missing arguments all parse, and the
//! instruction layer rejects them later with their line. Only these fail
//! here: an empty file, `ENV`/`LABEL` without a value, a JSON array with a
//! non-string element, an unterminated heredoc, bad parser directives, and
//! inputs over the size bounds.
//!
//! Pipeline per logical line: physical lines ([`lines`]) → directive check
//! ([`directives`]) → comment and continuation handling → keyword, flags and
//! arguments ([`command`], [`json`]) → heredoc bodies ([`heredoc`]).
//!
//! Known, deliberate differences from BuildKit:
//! - Invalid UTF-8 is replaced by U+FFFD (with a warning) because the tree
//!   holds `String`s; BuildKit keeps the raw bytes outside JSON and ARG/ENV
//!   words.
//! - Lines may be up to [`MAX_LINE_BYTES`] long (BuildKit: 65,535 bytes), and
//!   files up to [`MAX_FILE_BYTES`].
//! - Builder flags are scanned per character, not per byte, so non-ASCII
//!   flag values stay intact.
//! - HEALTHCHECK splits its type word at ASCII whitespace only (BuildKit also
//!   splits at the bytes 0x85 and 0xA0, inside UTF-8 sequences).
//! - `${...}` references nested more than 64 deep on a RUN/COPY/ADD line
//!   that mentions `<<` are refused instead of recursing without bound.
//!
//! Builder flags take a plain backslash as their escape character whatever
//! `# escape=` says, as BuildKit's `extractBuilderFlags` does (FORMAT.md
//! says the escape token; the code does not).

mod command;
mod directives;
mod heredoc;
mod json;
mod lines;
mod shellwords;
pub(crate) mod unicode;

use crate::dockerfile::ast::{Node, ParseResult, Warning};
use crate::dockerfile::error::{DockerfileError, ErrorKind};
use directives::Directives;

use crate::dockerfile::ast::Heredoc;
pub use heredoc::chomp_heredoc_content;

/// Largest Dockerfile accepted, in bytes (16 MiB).
pub const MAX_FILE_BYTES: usize = 16 << 20;

/// Largest physical line accepted, in bytes, not counting its `\n` (1 MiB).
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Parse a Dockerfile named `Dockerfile`. See [`parse_named`].
pub fn parse(bytes: &[u8]) -> Result<ParseResult, DockerfileError> {
    parse_named(bytes, "Dockerfile")
}

/// Parse a Dockerfile; errors carry `file`, the 1-based line and the
/// offending text, with [`ErrorKind::Syntax`].
///
/// The root node's children are the instructions, each with its keyword as
/// written, its builder flags, its arguments (BuildKit's per-keyword rules),
/// its heredocs and its physical line range.
pub fn parse_named(bytes: &[u8], file: &str) -> Result<ParseResult, DockerfileError> {
    Parser::new(file).run(bytes)
}

/// Test one word for heredoc shape (BuildKit's `ParseHeredoc`):
/// `[fd]<<[-]name`, where the name part must lex to exactly one shell word.
/// `Ok(None)` means "not a heredoc"; an unterminated quote in the name is an
/// error. The returned heredoc has no content yet.
pub fn parse_heredoc_word(word: &str) -> Result<Option<Heredoc>, DockerfileError> {
    heredoc::parse_heredoc_word(word)
        .map_err(|e| DockerfileError::new(ErrorKind::Syntax, 0, word, heredoc_message(&e)))
}

/// The heredocs a logical line names, in order, without bodies (BuildKit's
/// `heredocsFromLine`). Quoted `"<<EOF"` and lines that do not lex name none.
pub fn heredocs_in_line(line: &str) -> Result<Vec<Heredoc>, DockerfileError> {
    heredoc::heredocs_from_line(line)
        .map_err(|e| DockerfileError::new(ErrorKind::Syntax, 0, line, heredoc_message(&e)))
}

struct Parser<'f> {
    file: &'f str,
    directives: Directives,
    warnings: Vec<Warning>,
}

impl<'f> Parser<'f> {
    fn new(file: &'f str) -> Self {
        Self {
            file,
            directives: Directives::default(),
            warnings: Vec::new(),
        }
    }

    fn error(&self, line: usize, text: &str, message: impl Into<String>) -> DockerfileError {
        DockerfileError::new(ErrorKind::Syntax, line, text, message).in_file(self.file)
    }

    fn run(mut self, bytes: &[u8]) -> Result<ParseResult, DockerfileError> {
        if bytes.len() > MAX_FILE_BYTES {
            return Err(self.error(
                0,
                "",
                format!(
                    "the Dockerfile is over the limit of {MAX_FILE_BYTES} bytes (16 MiB); split it or move data into the build context"
                ),
            ));
        }
        if let Some((line, len)) = lines::first_long_line(bytes, MAX_LINE_BYTES) {
            return Err(self.error(
                line,
                "",
                format!(
                    "line is {len} bytes, over the limit of {MAX_LINE_BYTES} bytes (1 MiB); break it with line continuations"
                ),
            ));
        }
        let text = match std::str::from_utf8(bytes) {
            Ok(s) => std::borrow::Cow::Borrowed(s),
            Err(e) => {
                let line = 1 + bytes[..e.valid_up_to()]
                    .iter()
                    .filter(|b| **b == b'\n')
                    .count();
                self.warnings.push(Warning {
                    message: "invalid UTF-8 replaced with U+FFFD; save the Dockerfile as UTF-8"
                        .into(),
                    line,
                });
                String::from_utf8_lossy(bytes)
            }
        };
        let mut physical = lines::Physical::new(&text);
        let mut children = Vec::new();
        let mut comments: Vec<String> = Vec::new();
        while let Some((logical, start_line)) = self.next_logical(&mut physical, &mut comments)? {
            let mut node = command::node_from_line(&logical, self.directives.escape, 0)
                .map_err(|e| self.error(start_line, &logical, e.0))?;
            if can_contain_heredoc(&node) && logical.contains("<<") {
                node.heredocs = self.read_heredocs(&logical, start_line, &mut physical)?;
            }
            node.start_line = start_line;
            node.end_line = physical.line_no();
            node.prev_comment = std::mem::take(&mut comments);
            children.push(node);
        }

        let (Some(first), Some(last)) = (children.first(), children.last()) else {
            return Err(self.error(
                0,
                "",
                "file with no instructions; a Dockerfile needs at least one instruction such as FROM",
            ));
        };
        let root = Node {
            start_line: first.start_line,
            end_line: last.end_line,
            children,
            ..Node::default()
        };
        Ok(ParseResult {
            ast: root,
            escape_token: self.directives.escape,
            syntax: self.directives.syntax,
            check: self.directives.check,
            warnings: self.warnings,
        })
    }
}

impl Parser<'_> {
    /// Read the next logical line: skip blank lines, comments and directives
    /// (collecting comments), then join continuation lines. Returns the line
    /// and its first physical line number, or `None` at the end of input.
    fn next_logical(
        &mut self,
        physical: &mut lines::Physical<'_>,
        comments: &mut Vec<String>,
    ) -> Result<Option<(String, usize)>, DockerfileError> {
        while let Some(raw) = physical.next_line() {
            let start_line = physical.line_no();
            let token = lines::trim_newline(raw).trim_start_matches(unicode::is_space);
            if let Some(comment) = token.strip_prefix('#') {
                let comment = comment.trim_matches(unicode::is_space);
                if comment.is_empty() {
                    comments.clear();
                } else {
                    comments.push(comment.to_string());
                }
            }
            self.directives
                .check_line(token)
                .map_err(|m| self.error(start_line, token, m))?;
            let token = if token.starts_with('#') { "" } else { token };
            let (first, mut continues) = lines::trim_continuation(token, self.directives.escape);
            if !continues && first.is_empty() {
                continue;
            }
            let mut logical = first.to_string();
            let mut empty_continuation = false;
            while continues {
                let Some(raw) = physical.next_line() else {
                    break;
                };
                let token = lines::trim_newline(raw);
                let line_no = physical.line_no();
                self.directives
                    .check_line(token)
                    .map_err(|m| self.error(line_no, token, m))?;
                if lines::is_comment(raw) {
                    continue;
                }
                if token.trim_start_matches(unicode::is_space).is_empty() {
                    empty_continuation = true;
                    continue;
                }
                let (piece, more) = lines::trim_continuation(token, self.directives.escape);
                logical.push_str(piece);
                continues = more;
            }
            if empty_continuation {
                self.warnings.push(Warning {
                    message: format!(
                        "Empty continuation line found in: {logical}; remove the blank line or end the previous line without a continuation"
                    ),
                    line: physical.line_no(),
                });
            }
            return Ok(Some((logical, start_line)));
        }
        Ok(None)
    }

    /// Read the bodies of the heredocs `logical` names, each up to its
    /// terminator line (leading tabs ignored for `<<-`). Bodies are kept
    /// verbatim, line endings included.
    fn read_heredocs(
        &self,
        logical: &str,
        start_line: usize,
        physical: &mut lines::Physical<'_>,
    ) -> Result<Vec<Heredoc>, DockerfileError> {
        let mut docs = heredoc::heredocs_from_line(logical)
            .map_err(|e| self.error(start_line, logical, heredoc_message(&e)))?;
        for doc in &mut docs {
            let mut terminated = false;
            while let Some(body) = physical.next_line() {
                let mut candidate = lines::trim_newline(body);
                if doc.chomp {
                    candidate = candidate.trim_start_matches('\t');
                }
                if candidate == doc.name {
                    terminated = true;
                    break;
                }
                doc.content.push_str(body);
            }
            if !terminated {
                return Err(self.error(
                    start_line,
                    logical,
                    format!(
                        "unterminated heredoc: no line {:?} closes it before the end of the file",
                        doc.name
                    ),
                ));
            }
        }
        Ok(docs)
    }
}

fn heredoc_message(e: &shellwords::LexError) -> String {
    if e.is_too_deep() {
        format!("{}; simplify the variable references on this line", e.0)
    } else {
        format!("invalid heredoc delimiter: {}; close the quote", e.0)
    }
}

/// BuildKit reads heredocs only for RUN, COPY and ADD (also inside ONBUILD),
/// and only in shell form.
fn can_contain_heredoc(node: &Node) -> bool {
    let mut node = node;
    if unicode::to_lower(&node.value) == "onbuild" {
        if let Some(nested) = node.next.as_deref().and_then(|n| n.children.first()) {
            node = nested;
        }
    }
    matches!(
        unicode::to_lower(&node.value).as_str(),
        "run" | "copy" | "add"
    ) && !node.json
}
