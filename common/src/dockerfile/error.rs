//! The one error shape of the frontend: every Dockerfile error names the
//! file, the 1-based line and the offending text.

use std::fmt;

/// What went wrong, in a word the caller can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The file does not parse (empty file, bad JSON array, bad heredoc, ...).
    Syntax,
    /// An instruction keyword BuildKit does not know.
    UnknownInstruction,
    /// A builder flag that the instruction does not take, or a bad flag value.
    BadFlag,
    /// A `RUN --mount` option that is unknown or invalid.
    BadMount,
    /// A platform string that does not parse.
    InvalidPlatform,
    /// `FROM`/`COPY --from` names a stage or image that cannot be resolved.
    UnknownStage,
    /// Stages that depend on each other in a cycle.
    CyclicStage,
    /// A variable expansion error (`${X:?msg}`, bad substitution).
    Expansion,
    /// An ARG used in FROM has no value and no default.
    MissingArg,
    /// Wrong number of arguments or a malformed argument.
    BadArguments,
}

/// A Dockerfile error with its location: `Dockerfile:12: unknown instruction: FOO bar`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DockerfileError {
    /// The category.
    pub kind: ErrorKind,
    /// The Dockerfile's name as the user gave it.
    pub file: String,
    /// 1-based line; 0 when the error concerns the whole file.
    pub line: usize,
    /// The offending text (the instruction as written, or the bad word).
    pub text: String,
    /// What is wrong and, where possible, what to do.
    pub message: String,
}

impl DockerfileError {
    /// Build an error; `file` may be filled in later with [`Self::in_file`].
    pub fn new(
        kind: ErrorKind,
        line: usize,
        text: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            file: String::from("Dockerfile"),
            line,
            text: text.into(),
            message: message.into(),
        }
    }

    /// Set the file name shown in the message.
    pub fn in_file(mut self, file: impl Into<String>) -> Self {
        self.file = file.into();
        self
    }
}

impl fmt::Display for DockerfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)?;
        } else {
            write!(f, "{}: {}", self.file, self.message)?;
        }
        if !self.text.is_empty() {
            write!(f, ": {}", self.text.trim_end())?;
        }
        Ok(())
    }
}
