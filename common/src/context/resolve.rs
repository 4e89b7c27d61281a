//! From a COPY source string to the context paths it names: cleaning,
//! wildcard expansion one segment at a time, and symlink resolution that
//! stays inside the context.

use super::fsys::{DirHandle, RawKind, RawStat};
use super::{BuildContext, ContextError, SourceMatch, MAX_SYMLINK_HOPS};
use crate::dockerfile::ignore::{
    contains_wildcards, match_name, validate, IgnoreMatcher, ParentMatches,
};
use crate::path;
use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io;

/// One [`BuildContext::select`] call: the context, the `--exclude` matcher
/// and the entry budget.
pub(super) struct Session<'a> {
    pub(super) ctx: &'a BuildContext,
    pub(super) exclude: &'a IgnoreMatcher,
    visited: usize,
}

/// A resolved, visible source root.
pub(super) struct Node {
    /// Context-relative path after following symlinks (`""` for the root).
    pub(super) real: String,
    pub(super) stat: RawStat,
    /// The directory holding it (the root itself for the context root).
    pub(super) parent: DirHandle,
    /// Its name in `parent`; `None` for the context root.
    pub(super) name: Option<String>,
    /// Its `.dockerignore` results, for its children.
    pub(super) ignore_state: ParentMatches,
}

impl Node {
    /// A handle on the node when it is a directory.
    pub(super) fn open_dir(&self) -> io::Result<DirHandle> {
        match &self.name {
            Some(name) => self.parent.open_dir(OsStr::new(name)),
            None => self.parent.open_path([]),
        }
    }
}

pub(super) fn join(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}/{name}")
    }
}

/// Source path → components relative to the context root
/// ([`path::source_components`]): an absolute source is relative to the
/// root (as BuildKit reads it); a relative one that climbs out with `..` is
/// refused, unless `rooted` (a stage's filesystem), where `..` stops at the
/// root.
fn clean_source(source: &str, rooted: bool) -> Result<Vec<String>, ContextError> {
    let parts = path::source_components(source, rooted).map_err(|_| ContextError::Outside {
        src: source.to_string(),
        detail: String::new(),
    })?;
    Ok(parts.into_iter().map(str::to_string).collect())
}

fn not_found(source: &str) -> ContextError {
    ContextError::NotFound {
        src: source.to_string(),
    }
}

fn is_missing(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == nix::libc::ENOENT || code == nix::libc::ENOTDIR)
}

impl<'a> Session<'a> {
    pub(super) fn new(ctx: &'a BuildContext, exclude: &'a IgnoreMatcher) -> Self {
        Self {
            ctx,
            exclude,
            visited: 0,
        }
    }

    /// How many more entries this selection may visit.
    pub(super) fn remaining(&self) -> usize {
        self.ctx.max_entries.saturating_sub(self.visited)
    }

    /// Counts one visited entry against the bound.
    pub(super) fn tick(&mut self) -> Result<(), ContextError> {
        self.visited += 1;
        if self.visited > self.ctx.max_entries {
            return Err(ContextError::TooManyEntries {
                limit: self.ctx.max_entries,
            });
        }
        Ok(())
    }

    /// Everything one source selects: one match, or one per wildcard match.
    pub(super) fn select_source(&mut self, source: &str) -> Result<Vec<SourceMatch>, ContextError> {
        let comps = clean_source(source, self.ctx.rooted_symlinks)?;
        let Some(first_wild) = comps.iter().position(|c| contains_wildcards(c)) else {
            let node = self.resolve(source, &comps)?;
            return Ok(vec![self.collect(source, comps.join("/"), node)?]);
        };
        for segment in &comps[first_wild..] {
            validate(segment).map_err(|e| ContextError::BadSource {
                src: source.to_string(),
                reason: e.describe(),
            })?;
        }
        let base = self.resolve(source, &comps[..first_wild])?;
        if base.stat.kind != RawKind::Dir {
            return Err(not_found(source));
        }
        let base_dir = base.open_dir().map_err(|e| self.io_err(&base.real, e))?;
        let mut found = Vec::new();
        self.expand(
            &base_dir,
            &base.real,
            &base.ignore_state,
            &comps[first_wild..],
            &mut found,
        )?;
        let mut out = Vec::new();
        for path in found {
            let comps: Vec<String> = path.split('/').map(str::to_string).collect();
            let node = self.resolve(source, &comps)?;
            out.push(self.collect(source, path, node)?);
        }
        Ok(out)
    }

    fn io_err(&self, path: &str, source: io::Error) -> ContextError {
        ContextError::Io {
            path: path.to_string(),
            source,
        }
    }

    /// Matches `segments` below `dir` (at context path `at`), one segment per
    /// level, without following symlinks on the way (as fsutil's wildcard
    /// walk); pushes visible matches in sorted order.
    fn expand(
        &mut self,
        dir: &DirHandle,
        at: &str,
        state: &ParentMatches,
        segments: &[String],
        found: &mut Vec<String>,
    ) -> Result<(), ContextError> {
        let Some((pattern, rest)) = segments.split_first() else {
            return Ok(());
        };
        let mut names = dir
            .names(self.remaining())
            .map_err(|e| self.io_err(at, e))?;
        names.sort();
        for name in names {
            self.tick()?;
            let Some(name) = name.to_str() else { continue };
            if !match_name(pattern, name).unwrap_or(false) {
                continue;
            }
            let path = join(at, name);
            let stat = match dir.lstat(OsStr::new(name)) {
                Ok(stat) => stat,
                Err(e) if is_missing(&e) => continue,
                Err(e) => return Err(self.io_err(&path, e)),
            };
            let (excluded, child_state) = self.ctx.ignore.matches_under(&path, state);
            if rest.is_empty() {
                if self.visible(dir, name, &path, &stat, excluded, &child_state)? {
                    found.push(path);
                }
            } else if stat.kind == RawKind::Dir
                && (!excluded || self.ctx.ignore.may_reinclude_under(&path))
            {
                let sub = dir
                    .open_dir(OsStr::new(name))
                    .map_err(|e| self.io_err(&path, e))?;
                self.expand(&sub, &path, &child_state, rest, found)?;
            }
        }
        Ok(())
    }

    /// Is an entry present in the context as BuildKit transfers it: not
    /// ignored, or an ignored directory that still holds a re-included path?
    fn visible(
        &mut self,
        parent: &DirHandle,
        name: &str,
        path: &str,
        stat: &RawStat,
        excluded: bool,
        state: &ParentMatches,
    ) -> Result<bool, ContextError> {
        if !excluded {
            return Ok(true);
        }
        if stat.kind != RawKind::Dir || !self.ctx.ignore.may_reinclude_under(path) {
            return Ok(false);
        }
        let dir = parent
            .open_dir(OsStr::new(name))
            .map_err(|e| self.io_err(path, e))?;
        self.has_visible_descendant(&dir, path, state, 0)
    }

    fn has_visible_descendant(
        &mut self,
        dir: &DirHandle,
        at: &str,
        state: &ParentMatches,
        depth: usize,
    ) -> Result<bool, ContextError> {
        if depth >= super::MAX_DEPTH {
            return Err(ContextError::TooDeep {
                path: at.to_string(),
                limit: super::MAX_DEPTH,
            });
        }
        let mut names = dir
            .names(self.remaining())
            .map_err(|e| self.io_err(at, e))?;
        names.sort();
        for name in names {
            self.tick()?;
            let path = join(at, &name.to_string_lossy());
            let (excluded, child_state) = self.ctx.ignore.matches_under(&path, state);
            if !excluded {
                return Ok(true);
            }
            if !self.ctx.ignore.may_reinclude_under(&path) {
                continue;
            }
            match dir.lstat(&name) {
                Ok(stat) if stat.kind == RawKind::Dir => {
                    let sub = dir.open_dir(&name).map_err(|e| self.io_err(&path, e))?;
                    if self.has_visible_descendant(&sub, &path, &child_state, depth + 1)? {
                        return Ok(true);
                    }
                }
                Ok(_) => {}
                Err(e) if is_missing(&e) => {}
                Err(e) => return Err(self.io_err(&path, e)),
            }
        }
        Ok(false)
    }

    /// Resolves `comps` from the context root, following every symlink
    /// (the last one too) inside the context, and checks that the result is
    /// visible through `.dockerignore`.
    pub(super) fn resolve(&mut self, source: &str, comps: &[String]) -> Result<Node, ContextError> {
        let root = self
            .ctx
            .root_dir
            .open_path([])
            .map_err(|e| self.io_err("", e))?;
        let mut real: Vec<String> = Vec::new();
        let mut dirs: Vec<DirHandle> = vec![root];
        let mut states: Vec<ParentMatches> = vec![ParentMatches::default()];
        let mut queue: VecDeque<String> = comps.iter().cloned().collect();
        let mut hops = 0usize;
        let mut last_link: Option<(String, String)> = None;
        let outside = |link: &Option<(String, String)>| ContextError::Outside {
            src: source.to_string(),
            detail: match link {
                Some((path, target)) => {
                    format!(" (symlink {path} -> {target} leads out of the context)")
                }
                None => String::new(),
            },
        };
        loop {
            let Some(comp) = queue.pop_front() else {
                // Nothing left to look up: the answer is the directory we
                // stand in. Look it up once more from its parent as a final name.
                let Some(name) = real.pop() else {
                    let parent = dirs.pop().ok_or_else(|| not_found(source))?;
                    let stat = parent.stat_self().map_err(|e| self.io_err("", e))?;
                    return Ok(Node {
                        real: String::new(),
                        stat,
                        parent,
                        name: None,
                        ignore_state: ParentMatches::default(),
                    });
                };
                dirs.pop();
                states.pop();
                queue.push_back(name);
                continue;
            };
            if comp.is_empty() || comp == "." {
                continue;
            }
            if comp == ".." {
                if real.pop().is_none() {
                    if self.ctx.rooted_symlinks {
                        continue;
                    }
                    return Err(outside(&last_link));
                }
                dirs.pop();
                states.pop();
                continue;
            }
            self.tick()?;
            let parent = dirs.last().ok_or_else(|| not_found(source))?;
            let path = join(&real.join("/"), &comp);
            let stat = match parent.lstat(OsStr::new(&comp)) {
                Ok(stat) => stat,
                Err(e) if is_missing(&e) => return Err(not_found(source)),
                Err(e) => return Err(self.io_err(&path, e)),
            };
            let parent_state = states.last().cloned().unwrap_or_default();
            let (excluded, state) = self.ctx.ignore.matches_under(&path, &parent_state);
            let more = queue.iter().any(|c| !c.is_empty() && c != ".");
            if stat.kind == RawKind::Symlink {
                if excluded {
                    return Err(not_found(source));
                }
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(ContextError::SymlinkLoop {
                        src: source.to_string(),
                    });
                }
                let target = parent
                    .readlink(OsStr::new(&comp))
                    .map_err(|e| self.io_err(&path, e))?;
                let target = target.into_string().map_err(|t| ContextError::NotUtf8 {
                    path: format!("{path} -> {}", t.to_string_lossy()),
                })?;
                if target.starts_with('/') {
                    if !self.ctx.rooted_symlinks {
                        return Err(outside(&Some((path, target))));
                    }
                    real.clear();
                    dirs.truncate(1);
                    states.truncate(1);
                }
                for part in target.split('/').rev() {
                    queue.push_front(part.to_string());
                }
                last_link = Some((path, target));
                continue;
            }
            if more {
                if stat.kind != RawKind::Dir {
                    return Err(not_found(source));
                }
                if dirs.len() > super::MAX_DEPTH {
                    return Err(ContextError::TooDeep {
                        path,
                        limit: super::MAX_DEPTH,
                    });
                }
                let sub = parent
                    .open_dir(OsStr::new(&comp))
                    .map_err(|e| self.io_err(&path, e))?;
                dirs.push(sub);
                real.push(comp);
                states.push(state);
                continue;
            }
            let parent = dirs.pop().ok_or_else(|| not_found(source))?;
            if !self.visible(&parent, &comp, &path, &stat, excluded, &state)? {
                return Err(not_found(source));
            }
            return Ok(Node {
                real: path,
                stat,
                parent,
                name: Some(comp),
                ignore_state: state,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::go_clean;

    #[test]
    fn sources_are_cleaned_against_the_root() {
        let ok = |s: &str| clean_source(s, false).unwrap().join("/");
        assert_eq!(ok("."), "");
        assert_eq!(ok("./a/b/"), "a/b");
        assert_eq!(ok("/a/../b"), "b");
        assert_eq!(ok("/../x"), "x");
        assert_eq!(ok("a/../b"), "b");
        for bad in ["..", "../x", "a/../../x", "./.."] {
            let err = clean_source(bad, false).unwrap_err().to_string();
            assert_eq!(
                clean_source(bad, true).unwrap().join("/"),
                go_clean(&format!("/{bad}")).trim_start_matches('/')
            );
            assert_eq!(err, format!("COPY source outside the build context: {bad}"));
        }
    }
}
