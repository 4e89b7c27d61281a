//! Errors of shell word expansion.
//!
//! Where BuildKit's `shell.Lex` reports the same condition, the message is
//! BuildKit's, word for word (its tests and users' scripts match on them);
//! BuildKit additionally prefixes `failed to process "<word>": `, which the
//! caller adds together with the file and line. The resource-limit errors
//! are ours: BuildKit has no bounds.

/// Why a word could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellError {
    /// A `'` with no closing `'`.
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote,
    /// A `"` with no closing `"`.
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote,
    /// A `${` with no closing `}`.
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    /// A `${NAME/pattern` with no `/` before the end of the word.
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    /// `${}`, `${{…` or `${:…`: no parameter name where one is required.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// An operator BuildKit does not implement, e.g. `${X=w}`, `${X:=w}`,
    /// `${X:#p}` or `${.}`; `modifier` is the text after the name.
    #[error("unsupported modifier ({modifier}) in substitution")]
    UnsupportedModifier {
        /// The operator as written (`=`, `:=`, `:#`, `.`, …).
        modifier: String,
    },
    /// `${NAME?msg}` or `${NAME:?msg}` with `NAME` unset; `message` is `msg`,
    /// or `is not allowed to be unset` when `msg` is empty.
    #[error("{name}: {message}")]
    Unset {
        /// The variable that must be set.
        name: String,
        /// The user's message, or BuildKit's default.
        message: String,
    },
    /// `${NAME:?msg}` with `NAME` set to the empty string; `message` is `msg`,
    /// or `is not allowed to be empty` when `msg` is empty.
    #[error("{name}: {message}")]
    Empty {
        /// The variable that must not be empty.
        name: String,
        /// The user's message, or BuildKit's default.
        message: String,
    },
    /// A `#`, `%` or `/` pattern with a backslash before something other
    /// than `*`, `?`, `\`, `}` or `/`.
    #[error("invalid pattern ({pattern}) in substitution: {}", describe_escape(*escaped))]
    InvalidPattern {
        /// The pattern as expanded.
        pattern: String,
        /// The character after the backslash; `None` when the pattern ends
        /// with the backslash.
        escaped: Option<char>,
    },
    /// The word is longer than [`super::Limits::max_word_bytes`].
    #[error(
        "word is {len} bytes, over the {max}-byte limit for variable expansion; \
         shorten the instruction or move the text into a file"
    )]
    WordTooLong {
        /// Length of the word in bytes.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The expansion would exceed [`super::Limits::max_result_bytes`], or
    /// building it would copy more than [`super::Limits::max_work_bytes`].
    #[error(
        "variable expansion would produce more than {max} bytes; \
         check for variables that are repeated or hold very large values"
    )]
    ExpansionTooLarge {
        /// The limit that was hit.
        max: usize,
    },
    /// `${…}` expansions nested deeper than [`super::Limits::max_depth`].
    #[error("variable expansions are nested more than {max} levels deep; flatten the expression")]
    NestingTooDeep {
        /// The limit in force.
        max: usize,
    },
    /// Matching a `#`, `%` or `/` pattern took more than
    /// [`super::Limits::max_match_steps`] steps.
    #[error(
        "pattern ({pattern}) needs more than {max_steps} steps to match; \
         use fewer `*` wildcards or a shorter value"
    )]
    PatternTooComplex {
        /// The pattern as expanded.
        pattern: String,
        /// The limit in force.
        max_steps: u64,
    },
}

impl ShellError {
    /// Errors from the resource bounds, which must never be masked by the
    /// "missing `}`" rewrite BuildKit applies to errors at the end of input.
    pub(super) fn is_limit(&self) -> bool {
        matches!(
            self,
            Self::WordTooLong { .. }
                | Self::ExpansionTooLarge { .. }
                | Self::NestingTooDeep { .. }
                | Self::PatternTooComplex { .. }
        )
    }
}

fn describe_escape(escaped: Option<char>) -> String {
    match escaped {
        Some(ch) => format!("invalid escape '\\{ch}'"),
        None => String::from("invalid escape '\\' at the end of the pattern"),
    }
}
