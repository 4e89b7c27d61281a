//! Lexical path cleaning: one algorithm ([`lexical`]) and the small variants
//! callers need, each named after the rule it follows.

use std::borrow::Cow;

/// What a `..` with no earlier component to drop does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AboveRoot {
    /// It is dropped: `..` never climbs above the root (a rooted path, as
    /// Go's `path.Clean` treats `/..`, and as containerd cleans tar members).
    Clamp,
    /// It is kept as a leading `..` (Go's `path.Clean` of a relative path).
    Keep,
}

/// The result of [`lexical`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lexical<'a, T: ?Sized> {
    /// The remaining components: never empty or `.`; `..` only as leading
    /// components, and only with [`AboveRoot::Keep`].
    pub parts: Vec<&'a T>,
    /// Some component was `..` (whether or not it climbed).
    pub had_dotdot: bool,
    /// Some `..` had nothing before it to drop (it tried to leave the root).
    pub climbed: bool,
}

/// The lexical core every cleaner here uses (Go's `path.Clean` steps, on
/// components already split at `/`): empty and `.` components are dropped,
/// `..` drops the previous component, and a `..` with nothing to drop is
/// handled as `above` says. Works on `str` and byte components alike (tar
/// member names are bytes).
pub fn lexical<'a, T>(parts: impl IntoIterator<Item = &'a T>, above: AboveRoot) -> Lexical<'a, T>
where
    T: ?Sized + AsRef<[u8]> + 'a,
{
    let mut out: Vec<&'a T> = Vec::new();
    let (mut had_dotdot, mut climbed) = (false, false);
    for part in parts {
        match part.as_ref() {
            b"" | b"." => {}
            b".." => {
                had_dotdot = true;
                if out.last().is_some_and(|p| p.as_ref() != b"..") {
                    out.pop();
                } else {
                    climbed = true;
                    if above == AboveRoot::Keep {
                        out.push(part);
                    }
                }
            }
            _ => out.push(part),
        }
    }
    Lexical {
        parts: out,
        had_dotdot,
        climbed,
    }
}

/// Go's `path.Clean` (what Docker's `.dockerignore` documentation says
/// patterns go through, via `filepath.Clean`): collapse `//`, drop `.`,
/// resolve `..` against the previous element (at the root of a rooted path
/// it is dropped, at the start of a relative one kept), and `.` for an
/// empty result.
pub fn go_clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let above = if rooted {
        AboveRoot::Clamp
    } else {
        AboveRoot::Keep
    };
    let joined = lexical(path.split('/'), above).parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// `path` cleaned as an absolute path in the image (a relative one is taken
/// from `/`), with no trailing slash: BuildKit's `path.Clean` of a rooted
/// path, as the Dockerfile frontend applies it to WORKDIR and COPY
/// destinations (`..` stops at `/`). `"/a/./b/../c//d/"` → `"/a/c/d"`.
pub fn clean_rooted(path: &str) -> String {
    format!(
        "/{}",
        lexical(path.split('/'), AboveRoot::Clamp).parts.join("/")
    )
}

/// `path` cleaned as if rooted at `/` and returned relative, `.` for the
/// root: how moby/patternmatcher sees a context path matched against
/// `.dockerignore` (`filepath.Clean`, leading `/` and `./` dropped). Borrows
/// when the path is already clean.
pub fn clean_under_root(path: &str) -> Cow<'_, str> {
    let simple = !path.is_empty()
        && !path.starts_with('/')
        && !path.ends_with('/')
        && path
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..");
    if simple {
        return Cow::Borrowed(path);
    }
    let parts = lexical(path.split('/'), AboveRoot::Clamp).parts;
    Cow::Owned(if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    })
}

/// A relative path that climbs above its root with `..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the path climbs above its root with `..`")]
pub struct Climbs;

/// A COPY/ADD source as components relative to the context root
/// (BuildKit's rule): an absolute source is relative to the root and its
/// `..` stops there; a relative source that climbs out with `..` is refused
/// ([`Climbs`]), unless `rooted` (a stage's filesystem, where `..` stops at
/// the root as in any absolute path).
pub fn source_components(source: &str, rooted: bool) -> Result<Vec<&str>, Climbs> {
    let cleaned = lexical(source.split('/'), AboveRoot::Clamp);
    if cleaned.climbed && !rooted && !source.starts_with('/') {
        return Err(Climbs);
    }
    Ok(cleaned.parts)
}

/// A layer tar member name cleaned as if rooted at `/` (containerd's rule
/// for the image spec's "Applying Changesets", where member paths are
/// relative to the root): a leading `/` is dropped and `..` cannot climb
/// above the root. Returns the components and whether the name was
/// neutralised: it was absolute or held any `..` component (even one that
/// did not climb; such names are reported).
pub fn tar_member(path: &[u8]) -> (Vec<Vec<u8>>, bool) {
    let cleaned = lexical(path.split(|b| *b == b'/'), AboveRoot::Clamp);
    let parts = cleaned.parts.into_iter().map(<[u8]>::to_vec).collect();
    (parts, path.starts_with(b"/") || cleaned.had_dotdot)
}

/// The components of `path` with empty and `.` ones dropped (so a leading
/// `/` too), or `None` when any component is `..`: the strict rule for
/// names that must not mention `..` at all, even where it would not climb
/// (OCI layout tar members, context files handed back by name, mount
/// targets and unpack prefixes).
pub fn strict_components(path: &str) -> Option<Vec<&str>> {
    let cleaned = lexical(path.split('/'), AboveRoot::Clamp);
    (!cleaned.had_dotdot).then_some(cleaned.parts)
}

/// `path` relative with empty and `.` components dropped, and `..` kept
/// as written: separator normalisation only, for keys of a layer view
/// (its paths as the archive names them) and for callers that resolve
/// `..` themselves, against the view, with [`super::resolve_in_root`].
pub fn strip_empty_and_dot(path: &str) -> String {
    path.split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_like_go() {
        for (input, want) in [
            ("", "."),
            (".", "."),
            ("./foo", "foo"),
            ("foo/", "foo"),
            ("a//b", "a/b"),
            ("a/./b/..", "a"),
            ("../x", "../x"),
            ("a/../../x", "../x"),
            ("/../x", "/x"),
            ("/", "/"),
            ("//", "/"),
            ("!foo/../bar", "bar"),
        ] {
            assert_eq!(go_clean(input), want, "clean({input:?})");
        }
    }

    #[test]
    fn cleaning_neutralises_escapes() {
        let c = |p: &[u8]| {
            let (v, n) = tar_member(p);
            (v.join(&b'/'), n)
        };
        assert_eq!(c(b"a/b/c"), (b"a/b/c".to_vec(), false));
        assert_eq!(c(b"./a//b/"), (b"a/b".to_vec(), false));
        assert_eq!(c(b"../../etc/passwd"), (b"etc/passwd".to_vec(), true));
        assert_eq!(c(b"/etc/passwd"), (b"etc/passwd".to_vec(), true));
        assert_eq!(c(b"a/../../b"), (b"b".to_vec(), true));
        assert_eq!(c(b".."), (Vec::new(), true));
    }

    #[test]
    fn rooted_and_under_root() {
        assert_eq!(clean_rooted("/a/./b/../c//d/"), "/a/c/d");
        assert_eq!(clean_rooted("/../.."), "/");
        assert_eq!(clean_rooted("rel/x"), "/rel/x");
        assert_eq!(clean_under_root("a/b"), Cow::Borrowed("a/b"));
        assert_eq!(clean_under_root("/a/../../b/"), "b");
        assert_eq!(clean_under_root("./"), ".");
        assert_eq!(clean_under_root(""), ".");
    }

    #[test]
    fn sources_climbing_out_are_refused_unless_rooted() {
        assert_eq!(source_components("./a/b/", false), Ok(vec!["a", "b"]));
        assert_eq!(source_components("/../x", false), Ok(vec!["x"]));
        assert_eq!(source_components("a/../../x", false), Err(Climbs));
        assert_eq!(source_components("a/../../x", true), Ok(vec!["x"]));
        assert_eq!(source_components(".", false), Ok(vec![]));
    }

    #[test]
    fn strict_refuses_any_dotdot() {
        assert_eq!(strict_components("/a/./b//"), Some(vec!["a", "b"]));
        assert_eq!(strict_components("a/../b"), None);
        assert_eq!(strict_components(".."), None);
        assert_eq!(strict_components(""), Some(vec![]));
    }

    #[test]
    fn view_keys_keep_dotdot() {
        assert_eq!(strip_empty_and_dot("/a/./b//../c/"), "a/b/../c");
        assert_eq!(strip_empty_and_dot("/"), "");
    }
}
