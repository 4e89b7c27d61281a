//! Shell word expansion, as BuildKit's `frontend/dockerfile/shell` lexer
//! (`shell.Lex`) does it for Dockerfile instructions.
//!
//! Supported, with BuildKit's exact results (see
//! `tests/conformance/buildkit-shell/FORMAT.md` for the rules):
//! - `$NAME`, `${NAME}`; positional (`$1`, `${001}`) and special (`$@ $* $#
//!   $? $- $$ $! $0`) parameters, which are never set;
//! - `${NAME:-w}`, `${NAME-w}`, `${NAME:+w}`, `${NAME+w}`, `${NAME:?msg}`,
//!   `${NAME?msg}`, with the operand expanded recursively;
//! - `${NAME#p}`, `${NAME##p}`, `${NAME%p}`, `${NAME%%p}`, `${NAME/p/r}`,
//!   `${NAME//p/r}` with `*`/`?` patterns (no bracket classes);
//! - single and double quotes, the escape character (`\` or, after
//!   `# escape=``, a backtick);
//! - field splitting for [`Lexer::process_words`].
//!
//! Differences from BuildKit, all deliberate:
//! - Inputs are bounded ([`Limits`]): a word over 1 MiB, a result over
//!   16 MiB, more than 256 MiB of intermediate copying, nesting deeper than
//!   100 levels or a pattern match over 2^26 steps fails with a
//!   [`ShellError`] instead of exhausting memory or time.
//! - In `process_words`, BuildKit (since a 2024 buffer optimisation) seems
//!   to drop the part of a word before a `${NAME<op>…}` expansion
//!   (`a${X:-b}` → `b`); this is unconfirmed against a running BuildKit and
//!   looks like a bug, so the prefix is kept here (`ab`).
//! - `${NAME` at the end of the word reports a missing `}` where BuildKit
//!   reports an unsupported modifier `\u{fffd}`.

mod chars;
mod env;
mod error;
mod expand;
mod pattern;
mod words;

use std::collections::BTreeSet;

pub use env::Env;
pub use error::ShellError;

/// Resource bounds for one expansion. Every word is hostile input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest word accepted, in bytes.
    pub max_word_bytes: usize,
    /// Longest result (and longest intermediate string), in bytes.
    pub max_result_bytes: usize,
    /// Total bytes written into all buffers while expanding one word; this
    /// bounds the time spent copying nested results.
    pub max_work_bytes: usize,
    /// Deepest nesting of `${…}` operands (the word itself is level 1).
    pub max_depth: usize,
    /// Pattern-matching steps for all `#`, `%` and `/` operators of a word.
    pub max_match_steps: u64,
}

impl Limits {
    /// 1 MiB: the longest word accepted.
    pub const MAX_WORD_BYTES: usize = 1 << 20;
    /// 16 MiB: the longest result.
    pub const MAX_RESULT_BYTES: usize = 16 << 20;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_word_bytes: Self::MAX_WORD_BYTES,
            max_result_bytes: Self::MAX_RESULT_BYTES,
            max_work_bytes: 16 * Self::MAX_RESULT_BYTES,
            max_depth: 100,
            max_match_steps: 1 << 26,
        }
    }
}

/// The result of [`Lexer::process_word_with_matches`] (BuildKit's
/// `ProcessWordResult`): the expanded word and the variables that were
/// looked up, found or not. Nested references count (`${A#$B}` looks up
/// both); so do positional and special parameters (`$1` looks up `1`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expansion {
    /// The expanded word.
    pub result: String,
    /// Names that were looked up and set (possibly to the empty string).
    pub matched: BTreeSet<String>,
    /// Names that were looked up and unset.
    pub unmatched: BTreeSet<String>,
}

/// A configured expander (BuildKit's `shell.Lex`). Cheap to copy; holds no
/// state between calls, so one lexer may be shared across threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_unset_env: bool,
    skip_process_quotes: bool,
    case_insensitive: bool,
    limits: Limits,
}

impl Lexer {
    /// A lexer with the Dockerfile's escape character: `\` by default, or
    /// `` ` `` after the `# escape=`` parser directive.
    pub fn new(escape: char) -> Self {
        Self {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset_env: false,
            skip_process_quotes: false,
            case_insensitive: false,
            limits: Limits::default(),
        }
    }

    /// The escape character this lexer was made with.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Keep quote characters in the output (BuildKit's `RawQuotes`).
    pub fn raw_quotes(mut self, on: bool) -> Self {
        self.raw_quotes = on;
        self
    }

    /// Keep escape characters in the output (BuildKit's `RawEscapes`).
    /// Operands of `-`, `+` and `?` still have their escapes processed, as in
    /// BuildKit.
    pub fn raw_escapes(mut self, on: bool) -> Self {
        self.raw_escapes = on;
        self
    }

    /// Leave references to unset variables as written, e.g. `$X`, `${X}`,
    /// `${X:-w}` with its operand expanded (BuildKit's `SkipUnsetEnv`).
    pub fn skip_unset_env(mut self, on: bool) -> Self {
        self.skip_unset_env = on;
        self
    }

    /// Treat quotes as ordinary characters (BuildKit's `SkipProcessQuotes`).
    pub fn skip_process_quotes(mut self, on: bool) -> Self {
        self.skip_process_quotes = on;
        self
    }

    /// Look names up ignoring case, as BuildKit does for Windows images
    /// (`$pwd` finds `PWD`).
    pub fn case_insensitive(mut self, on: bool) -> Self {
        self.case_insensitive = on;
        self
    }

    /// Replace the resource bounds (defaults: [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Expand `word` into one string (BuildKit's `ProcessWord`): quotes are
    /// removed, escapes processed, whitespace kept as written.
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<String, ShellError> {
        expand::expand(self, word, env, false).map(|outcome| outcome.result)
    }

    /// Expand `word` and split it into fields (BuildKit's `ProcessWords`, used
    /// for EXPOSE and heredoc detection): unquoted whitespace, including
    /// whitespace from an unquoted variable's value, separates words; quoted
    /// or escaped whitespace does not; a quoted empty string yields no word.
    pub fn process_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, ShellError> {
        expand::expand(self, word, env, true).map(|outcome| outcome.words)
    }

    /// [`Self::process_word`] plus the names looked up (BuildKit's
    /// `ProcessWordWithMatches`), used for unused-build-arg warnings and
    /// cache keys.
    pub fn process_word_with_matches(
        &self,
        word: &str,
        env: &dyn Env,
    ) -> Result<Expansion, ShellError> {
        expand::expand(self, word, env, false).map(|outcome| Expansion {
            result: outcome.result,
            matched: outcome.matched,
            unmatched: outcome.unmatched,
        })
    }
}

impl Default for Lexer {
    /// The Dockerfile default: backslash escapes.
    fn default() -> Self {
        Self::new('\\')
    }
}

#[cfg(test)]
mod tests;
