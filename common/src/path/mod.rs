//! The one place for security-relevant path rules: lexical cleaning
//! ([`clean`](self::go_clean) and friends) and resolving a path inside a root
//! while following symlinks ([`resolve_in_root`]).
//!
//! - Cleaning is purely lexical (no I/O): `//` collapses, `.` goes, `..`
//!   drops the previous component. Callers differ only in what `..` above
//!   the root means (clamped, kept as Go does for relative paths, or an
//!   error) and in how the result is written; each variant is a small
//!   function here that names the rule it follows.
//! - Resolution follows symlinks the way the kernel does with the root as
//!   `/` (`openat2(RESOLVE_IN_ROOT)`): absolute targets restart at the root,
//!   `..` stops at the root, at most [`MAX_SYMLINKS`] links. It is generic
//!   over how a link is read, so the same algorithm serves the real
//!   filesystem and an in-memory view of a layer chain.

mod clean;
mod resolve;
#[cfg(test)]
mod tests;

pub use clean::{
    clean_rooted, clean_under_root, go_clean, lexical, source_components, strict_components,
    strip_empty_and_dot, tar_member, AboveRoot, Climbs, Lexical,
};
pub use resolve::{resolve_in_root, AfterMissing, Node, ResolveError, MAX_SYMLINKS};
