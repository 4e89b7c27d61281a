//! Skipping tests whose prerequisites are missing, loudly, and never in CI.

use crate::cmd::have_tool;
use std::fmt;

/// A fixture cannot run on this machine: a tool, a deb cache or root is missing.
/// `fix` says what to do about it (usually `sudo scripts/setup.sh --dev`).
#[derive(Debug, Clone)]
pub struct Unavailable {
    /// What is missing.
    pub what: String,
    /// How to get it.
    pub fix: String,
}

impl Unavailable {
    /// A new `Unavailable` error.
    pub fn new(what: impl Into<String>, fix: impl Into<String>) -> Self {
        Unavailable {
            what: what.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.what, self.fix)
    }
}

impl std::error::Error for Unavailable {}

/// Whether we run in CI (`CI` set to anything but empty, `0` or `false`). In CI a skip is a
/// failure.
pub fn in_ci() -> bool {
    match std::env::var("CI") {
        Ok(v) => !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false")),
        Err(_) => false,
    }
}

/// Whether the effective user is root (read from `/proc/self/status`).
pub fn is_root() -> bool {
    effective_uid() == Some(0)
}

pub(crate) fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    // Uid: real effective saved fs
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Report that test `test` cannot run because of `reason`.
///
/// Prints `SKIPPED: <test> because <reason>` to stderr (visible with `--nocapture` and in the
/// captured output) and returns. In CI (see [`in_ci`]) it panics instead, so a missing
/// prerequisite fails the run rather than passing silently.
pub fn skip(test: &str, reason: &str) {
    if in_ci() {
        panic!("{test} cannot run in CI because {reason}");
    }
    // Written to the stderr handle directly: libtest captures `print!`/`eprint!` of passing
    // tests, and a skip must be visible.
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test} because {reason}");
}

/// `true` when running as root; otherwise reports a skip (see [`skip`]) and returns `false`.
pub fn require_root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    skip(
        test,
        "it needs root (run the tests as root, e.g. `sudo -E cargo test`)",
    );
    false
}

/// `true` when every tool is on `PATH`; otherwise reports a skip naming the missing ones.
pub fn require_tools_or_skip(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have_tool(t)).collect();
    if missing.is_empty() {
        return true;
    }
    skip(
        test,
        &format!(
            "{} not installed (run `sudo scripts/setup.sh --dev`)",
            missing.join(", ")
        ),
    );
    false
}

/// Unwrap a fixture result: `Some(value)` on success; on an [`Unavailable`] error report a skip
/// and return `None`; on any other error panic with the full error chain.
///
/// ```no_run
/// # fn t() {
/// let Some(reg) = imgfarm_testkit::or_skip("push_roundtrip", imgfarm_testkit::Registry::start())
/// else {
///     return;
/// };
/// # let _ = reg; }
/// ```
pub fn or_skip<T>(test: &str, result: anyhow::Result<T>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(e) => match e.downcast_ref::<Unavailable>() {
            Some(u) => {
                skip(test, &u.to_string());
                None
            }
            None => panic!("{test}: fixture failed: {e:#}"),
        },
    }
}
