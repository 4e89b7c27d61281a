//! Resolving a path inside a root, following symlinks, the way the kernel
//! does with the root as `/` (`openat2(2)` with `RESOLVE_IN_ROOT`, and
//! continuity's `RootPath` that BuildKit uses for COPY destinations), over
//! any way of reading links: the real filesystem or an in-memory view.

/// Most symlinks followed while resolving one path: Linux's `MAXSYMLINKS`
/// (40), the limit after which path lookup fails with `ELOOP`.
pub const MAX_SYMLINKS: usize = 40;

/// What a link reader says about one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// Nothing by that name.
    Missing,
    /// A symlink, with its target as stored.
    Link(Vec<u8>),
    /// Anything else (a directory, a file, ...): taken as is.
    Other,
}

/// What happens once a component is [`Node::Missing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterMissing {
    /// Keep going: later components are still read (a layer view can hold
    /// `a/b` without `a`), and a `..` drops the missing component
    /// lexically.
    Continue,
    /// Stop reading: the rest of the path is kept as written, and a `..` in
    /// it is [`ResolveError::DotDotAfterMissing`] (the kernel's `ENOENT` for
    /// `missing/../x`); for callers that then create what is missing.
    Stop,
}

/// Why [`resolve_in_root`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError<E> {
    /// More than [`MAX_SYMLINKS`] symlinks (a loop, most likely): the
    /// kernel's `ELOOP`.
    #[error("too many levels of symbolic links (more than {MAX_SYMLINKS} followed)")]
    TooManyLinks,
    /// With [`AfterMissing::Stop`], a `..` after a missing component.
    #[error("a `..` follows a missing component")]
    DotDotAfterMissing,
    /// The link reader failed.
    #[error("{0}")]
    Read(E),
}

/// Resolves `path` (absolute or relative, both taken from the root) inside
/// a root, following every symlink, the last component's too, as the
/// kernel does with `RESOLVE_IN_ROOT`: an absolute link target restarts at
/// the root, `..` never climbs above it, and at most [`MAX_SYMLINKS`] links
/// are followed ([`ResolveError::TooManyLinks`] after that). Missing
/// components are kept as they are (see [`AfterMissing`]).
///
/// `read(resolved, name)` says what `name` is in the directory reached by
/// the components `resolved` (already free of links, `.` and `..`). The
/// result is the components below the root; none is empty, `.` or `..`, so
/// joining them to the root never leaves it.
pub fn resolve_in_root<E>(
    path: &[u8],
    after_missing: AfterMissing,
    mut read: impl FnMut(&[Vec<u8>], &[u8]) -> Result<Node, E>,
) -> Result<Vec<Vec<u8>>, ResolveError<E>> {
    let mut pending: Vec<Vec<u8>> = Vec::new();
    push_front(&mut pending, path);
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut links = 0;
    while let Some(c) = pending.pop() {
        if c == b".." {
            out.pop();
            continue;
        }
        match read(&out, &c).map_err(ResolveError::Read)? {
            Node::Other => out.push(c),
            Node::Missing => {
                out.push(c);
                if after_missing == AfterMissing::Stop {
                    while let Some(rest) = pending.pop() {
                        if rest == b".." {
                            return Err(ResolveError::DotDotAfterMissing);
                        }
                        out.push(rest);
                    }
                }
            }
            Node::Link(target) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(ResolveError::TooManyLinks);
                }
                if target.starts_with(b"/") {
                    out.clear();
                }
                push_front(&mut pending, &target);
            }
        }
    }
    Ok(out)
}

/// Puts the components of `path` (no empty or `.` ones) before what is
/// pending (`pending` is a stack: its last element comes next).
fn push_front(pending: &mut Vec<Vec<u8>>, path: &[u8]) {
    pending.extend(
        path.split(|b| *b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .rev()
            .map(<[u8]>::to_vec),
    );
}
