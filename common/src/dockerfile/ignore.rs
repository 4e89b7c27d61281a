//! `.dockerignore` matching with Docker's rules, and the same matcher for
//! `COPY --exclude`.
//!
//! Reading follows moby/patternmatcher `ignorefile.ReadAll`: a UTF-8 BOM is
//! dropped, a line whose first character is `#` is a comment, each line is
//! trimmed, blank lines are skipped, `!` marks an exception, and the pattern
//! is cleaned like Go's `filepath.Clean` with a leading `/` removed (so
//! `/foo`, `./foo` and `foo` are the same pattern).
//!
//! Matching follows patternmatcher `New`/`MatchesOrParentMatches`:
//! patterns are anchored at the context root and use Go `filepath.Match`
//! syntax (`*`, `?`, `[...]` with `[^...]`, `\` escapes) plus `**` for any
//! number of directories; a pattern that matches a parent directory
//! excludes everything below it; patterns apply in order, so the last one
//! that matches decides, and `!` patterns take paths back in.
//!
//! Walking a tree uses [`IgnoreMatcher::matches_under`], the
//! `MatchesUsingParentResults` variant BuildKit's file walker uses, and
//! [`IgnoreMatcher::may_reinclude_under`], fsutil's rule for when an
//! excluded directory must still be entered because an exception could
//! re-include something inside it.
//!
//! Deliberate differences, all in patterns nobody writes on purpose: inside
//! `[...]` the characters `*` and `?` are literal as in `filepath.Match`
//! (patternmatcher's regular expression mangles them), and a literal `^`
//! outside a class matches itself.

mod pattern;

use crate::path::{clean_under_root, go_clean};
use pattern::Compiled;
pub(crate) use pattern::{contains_wildcards, match_name, validate};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest ignore file [`IgnoreMatcher::from_file`] reads (and text
/// [`IgnoreMatcher::parse`] accepts): 4 MiB.
pub const MAX_IGNORE_BYTES: usize = 4 << 20;

/// A bad ignore file or pattern.
#[derive(Debug, thiserror::Error)]
pub enum IgnoreError {
    /// A pattern that Docker would reject too.
    #[error("{origin}: invalid pattern {pattern:?}: {reason}")]
    BadPattern {
        /// Where the pattern came from: `line 3`, `/ctx/.dockerignore line 3` or `--exclude`.
        origin: String,
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The ignore file could not be read.
    #[error("cannot read ignore file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The ignore file or text is larger than [`MAX_IGNORE_BYTES`].
    #[error("{origin} is larger than {limit} bytes; an ignore file this large is almost certainly not a pattern list")]
    TooLarge {
        /// The file, or `.dockerignore text`.
        origin: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// The ignore file is not UTF-8 text.
    #[error("{origin} is not UTF-8 text")]
    NotUtf8 {
        /// The file.
        origin: String,
    },
}

/// One compiled pattern.
#[derive(Debug, Clone)]
struct Pattern {
    /// The cleaned pattern without its `!`, as patternmatcher's `String()`.
    text: String,
    /// A `!` pattern that takes paths back in.
    exception: bool,
    compiled: Compiled,
}

/// Per-pattern results for a directory, handed down to its children during a
/// walk (patternmatcher's `MatchInfo`). The default value means "no parent
/// information" and is right for entries at the root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParentMatches(Vec<bool>);

/// The compiled patterns of a `.dockerignore` file or of `--exclude` flags.
#[derive(Debug, Clone, Default)]
pub struct IgnoreMatcher {
    patterns: Vec<Pattern>,
    exceptions: bool,
}

impl IgnoreMatcher {
    /// A matcher that excludes nothing (no `.dockerignore`).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Parses `.dockerignore` text (Docker's `ReadAll` then `New`). Errors
    /// name the 1-based line and the pattern.
    pub fn parse(text: &str) -> Result<Self, IgnoreError> {
        Self::parse_with_origin(text, "")
    }

    /// Reads and parses an ignore file (see [`find_ignore_file`]); errors name
    /// the file and line.
    pub fn from_file(path: &Path) -> Result<Self, IgnoreError> {
        let read_err = |source| IgnoreError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let mut bytes = Vec::new();
        file.take(MAX_IGNORE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        let origin = path.display().to_string();
        if bytes.len() > MAX_IGNORE_BYTES {
            return Err(IgnoreError::TooLarge {
                origin,
                limit: MAX_IGNORE_BYTES,
            });
        }
        let text = String::from_utf8(bytes).map_err(|_| IgnoreError::NotUtf8 {
            origin: origin.clone(),
        })?;
        Self::parse_with_origin(&text, &format!("{origin} "))
    }

    fn parse_with_origin(text: &str, origin: &str) -> Result<Self, IgnoreError> {
        if text.len() > MAX_IGNORE_BYTES {
            let origin = if origin.is_empty() {
                ".dockerignore text".to_string()
            } else {
                origin.trim().to_string()
            };
            return Err(IgnoreError::TooLarge {
                origin,
                limit: MAX_IGNORE_BYTES,
            });
        }
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut matcher = Self::default();
        for (index, line) in text.lines().enumerate() {
            if line.starts_with('#') {
                continue;
            }
            let mut pattern = line.trim();
            if pattern.is_empty() {
                continue;
            }
            let invert = pattern.starts_with('!');
            if invert {
                pattern = pattern[1..].trim();
            }
            let mut cleaned = String::new();
            if !pattern.is_empty() {
                cleaned = go_clean(pattern);
                if cleaned.len() > 1 && cleaned.starts_with('/') {
                    cleaned.remove(0);
                }
            }
            if invert {
                cleaned.insert(0, '!');
            }
            matcher.push(&cleaned, line, || format!("{origin}line {}", index + 1))?;
        }
        Ok(matcher)
    }

    /// Compiles `--exclude` patterns (patternmatcher `New`, no file reading
    /// rules); `origin` names them in errors, e.g. `COPY --exclude`.
    pub fn from_patterns(patterns: &[String], origin: &str) -> Result<Self, IgnoreError> {
        let mut matcher = Self::default();
        for p in patterns {
            matcher.push(p, p, || origin.to_string())?;
        }
        Ok(matcher)
    }

    /// patternmatcher `New` for one pattern.
    fn push(
        &mut self,
        raw: &str,
        as_written: &str,
        origin: impl Fn() -> String,
    ) -> Result<(), IgnoreError> {
        let bad = |reason: &str| IgnoreError::BadPattern {
            origin: origin(),
            pattern: as_written.trim().to_string(),
            reason: reason.to_string(),
        };
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Ok(());
        }
        let mut text = go_clean(trimmed);
        let exception = text.starts_with('!');
        if exception {
            if text.len() == 1 {
                return Err(bad("`!` must be followed by the path to re-include (illegal exclusion pattern \"!\")"));
            }
            text.remove(0);
        }
        validate(&text).map_err(|e| bad(e.describe()))?;
        let compiled = pattern::compile(&text).map_err(|e| bad(e.describe()))?;
        self.exceptions |= exception;
        self.patterns.push(Pattern {
            text,
            exception,
            compiled,
        });
        Ok(())
    }

    /// No patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Some pattern starts with `!`.
    pub fn has_exceptions(&self) -> bool {
        self.exceptions
    }

    /// Is `rel_path` (relative to the context root, `/`-separated) excluded?
    /// A pattern matching the path or any parent directory counts; the last
    /// matching pattern decides (patternmatcher `MatchesOrParentMatches`).
    pub fn matches(&self, rel_path: &str) -> bool {
        let path = clean_under_root(rel_path);
        if path == "." || self.patterns.is_empty() {
            return false;
        }
        let mut excluded = false;
        for p in &self.patterns {
            if p.exception != excluded {
                continue;
            }
            if p.compiled.matches(&path) || parents(&path).any(|parent| p.compiled.matches(parent))
            {
                excluded = !p.exception;
            }
        }
        excluded
    }

    /// [`matches`](Self::matches) for a walk: `parent` holds the results of
    /// the directory that contains `rel_path` (default for root entries).
    /// Returns whether the path is excluded and the results to hand to its
    /// children (patternmatcher `MatchesUsingParentResults`, as BuildKit's
    /// context walker and copier use it).
    pub fn matches_under(&self, rel_path: &str, parent: &ParentMatches) -> (bool, ParentMatches) {
        let path = clean_under_root(rel_path);
        let inherited = parent.0.len() == self.patterns.len() && !parent.0.is_empty();
        let mut results = vec![false; self.patterns.len()];
        let mut excluded = false;
        for (i, p) in self.patterns.iter().enumerate() {
            let mut hit = inherited && parent.0[i];
            if !hit {
                if p.exception != excluded {
                    continue;
                }
                hit = p.compiled.matches(&path);
                if !hit && !inherited {
                    hit = parents(&path).any(|dir| p.compiled.matches(dir));
                }
            }
            results[i] = hit;
            if hit {
                excluded = !p.exception;
            }
        }
        (excluded, ParentMatches(results))
    }

    /// Must a walker enter the excluded directory `dir` because an exception
    /// might re-include something inside it? fsutil's rule: yes when any
    /// exception has a wildcard (after dropping a trailing `/**` or `/*`),
    /// or when an exception names a path at or below `dir`.
    pub fn may_reinclude_under(&self, dir: &str) -> bool {
        if !self.exceptions {
            return false;
        }
        let dir = clean_under_root(dir);
        let dir_slash = format!("{dir}/");
        self.patterns.iter().filter(|p| p.exception).any(|p| {
            let base = p.text.strip_suffix("/**").unwrap_or(&p.text);
            let base = base.strip_suffix("/*").unwrap_or(base);
            base.contains(['*', '[', ']', '?', '^', '\\'])
                || format!("{base}/").starts_with(&dir_slash)
        })
    }
}

/// `a`, `a/b` for the path `a/b/c`: every proper parent directory.
fn parents(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// Picks the ignore file for a build, as BuildKit's dockerui does:
/// `<Dockerfile>.dockerignore` next to the Dockerfile (e.g.
/// `build/app.Dockerfile.dockerignore` for `-f build/app.Dockerfile`) takes
/// precedence over `<context>/.dockerignore`. `dockerfile` is the path the
/// CLI resolved; `None` when neither file exists.
pub fn find_ignore_file(context_dir: &Path, dockerfile: &Path) -> Option<PathBuf> {
    if let Some(name) = dockerfile.file_name() {
        let mut own = name.to_os_string();
        own.push(".dockerignore");
        let candidate = dockerfile.with_file_name(own);
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    let default = context_dir.join(".dockerignore");
    default.is_file().then_some(default)
}
