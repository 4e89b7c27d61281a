//! Listing a resolved source: the root entry, then for a directory every
//! entry below it that `.dockerignore` lets through and `--exclude` does not
//! remove, in depth-first byte order of names.
//!
//! Directory rules follow fsutil: an excluded directory is skipped whole
//! unless an exception may re-include something inside it; then it is
//! entered, and it appears only if something below it does (or, for an
//! ignored directory that still holds a re-included path, if `--exclude`
//! leaves it in).

use super::digest::file_digest;
use super::fsys::{DirHandle, RawKind, RawStat};
use super::resolve::{join, Node, Session};
use super::{ContextError, Entry, EntryKind, SourceMatch, MAX_DEPTH};
use crate::dockerfile::ignore::ParentMatches;
use std::collections::HashMap;
use std::ffi::OsStr;

/// Hard-link bookkeeping for one source match: (dev, inode) → first path.
type Links = HashMap<(u64, u64), String>;

/// Where the walk stands in a directory.
struct Place<'p> {
    dir: &'p DirHandle,
    /// Context-relative path of `dir`.
    ctx_path: &'p str,
    /// Path of `dir` relative to the source root.
    rel_path: &'p str,
    ignore: &'p ParentMatches,
    exclude: &'p ParentMatches,
    depth: usize,
}

fn entry_kind(kind: RawKind) -> Option<EntryKind> {
    match kind {
        RawKind::File => Some(EntryKind::File),
        RawKind::Dir => Some(EntryKind::Dir),
        RawKind::Symlink => Some(EntryKind::Symlink),
        RawKind::Fifo => Some(EntryKind::Fifo),
        RawKind::Other => None,
    }
}

impl Session<'_> {
    /// The entries one resolved source selects.
    pub(super) fn collect(
        &mut self,
        source: &str,
        path: String,
        node: Node,
    ) -> Result<SourceMatch, ContextError> {
        let mut entries = Vec::new();
        let mut links = Links::new();
        match node.stat.kind {
            RawKind::Dir => {
                entries.push(self.plain_entry(String::new(), EntryKind::Dir, &node.stat));
                let dir = node.open_dir().map_err(|e| ContextError::Io {
                    path: node.real.clone(),
                    source: e,
                })?;
                let place = Place {
                    dir: &dir,
                    ctx_path: &node.real,
                    rel_path: "",
                    ignore: &node.ignore_state,
                    exclude: &ParentMatches::default(),
                    depth: 0,
                };
                self.walk_dir(&place, &mut entries, &mut links)?;
            }
            RawKind::Other => return Err(ContextError::Special { path: node.real }),
            _ => {
                let name = node.name.as_deref().unwrap_or_default();
                let entry = self.leaf_entry(
                    &node.parent,
                    name,
                    String::new(),
                    &node.real,
                    &node.stat,
                    &mut links,
                )?;
                entries.push(entry);
            }
        }
        Ok(SourceMatch {
            source: source.to_string(),
            path,
            resolved: node.real,
            entries,
        })
    }

    fn plain_entry(&self, path: String, kind: EntryKind, stat: &RawStat) -> Entry {
        Entry {
            path,
            kind,
            mode: stat.perm,
            size: 0,
            link_target: None,
            digest: None,
            hardlink_to: None,
            mtime_ns: stat.mtime_ns,
        }
    }

    /// A non-directory entry: hashes files, reads link targets.
    fn leaf_entry(
        &mut self,
        dir: &DirHandle,
        name: &str,
        rel: String,
        ctx_path: &str,
        stat: &RawStat,
        links: &mut Links,
    ) -> Result<Entry, ContextError> {
        let Some(kind) = entry_kind(stat.kind) else {
            return Err(ContextError::Special {
                path: ctx_path.to_string(),
            });
        };
        let mut entry = self.plain_entry(rel, kind, stat);
        match kind {
            EntryKind::File => {
                entry.size = stat.size;
                entry.digest = Some(file_digest(
                    self.ctx,
                    dir,
                    OsStr::new(name),
                    stat,
                    ctx_path,
                )?);
                if stat.nlink > 1 {
                    match links.get(&(stat.dev, stat.ino)) {
                        Some(first) => entry.hardlink_to = Some(first.clone()),
                        None => {
                            links.insert((stat.dev, stat.ino), entry.path.clone());
                        }
                    }
                }
            }
            EntryKind::Symlink => {
                let target = dir
                    .readlink(OsStr::new(name))
                    .map_err(|e| ContextError::Io {
                        path: ctx_path.to_string(),
                        source: e,
                    })?;
                let target = target.into_string().map_err(|t| ContextError::NotUtf8 {
                    path: format!("{ctx_path} -> {}", t.to_string_lossy()),
                })?;
                entry.link_target = Some(target);
            }
            EntryKind::Dir | EntryKind::Fifo => {}
        }
        Ok(entry)
    }

    /// Appends the selected entries below `place` to `out`. Returns whether
    /// anything below exists in the context as transferred (not ignored),
    /// which decides whether an ignored directory itself exists.
    fn walk_dir(
        &mut self,
        place: &Place<'_>,
        out: &mut Vec<Entry>,
        links: &mut Links,
    ) -> Result<bool, ContextError> {
        if place.depth >= MAX_DEPTH {
            return Err(ContextError::TooDeep {
                path: place.ctx_path.to_string(),
                limit: MAX_DEPTH,
            });
        }
        let io_err = |path: &str, source| ContextError::Io {
            path: path.to_string(),
            source,
        };
        let mut names = place
            .dir
            .names(self.remaining())
            .map_err(|e| io_err(place.ctx_path, e))?;
        names.sort();
        let ignore = &self.ctx.ignore;
        let exclude = self.exclude;
        let mut any_visible = false;
        for os_name in names {
            self.tick()?;
            let Some(name) = os_name.to_str() else {
                let lossy = join(place.ctx_path, &os_name.to_string_lossy());
                if ignore.matches_under(&lossy, place.ignore).0 {
                    continue;
                }
                return Err(ContextError::NotUtf8 { path: lossy });
            };
            let ctx_path = join(place.ctx_path, name);
            let rel_path = join(place.rel_path, name);
            let stat = match place.dir.lstat(&os_name) {
                Ok(stat) => stat,
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => continue,
                Err(e) => return Err(io_err(&ctx_path, e)),
            };
            let (ignored, ignore_state) = ignore.matches_under(&ctx_path, place.ignore);
            let (excluded, exclude_state) = exclude.matches_under(&rel_path, place.exclude);
            if stat.kind == RawKind::Other {
                continue;
            }
            if stat.kind != RawKind::Dir {
                if ignored {
                    continue;
                }
                any_visible = true;
                if !excluded {
                    out.push(self.leaf_entry(place.dir, name, rel_path, &ctx_path, &stat, links)?);
                }
                continue;
            }
            if ignored && !ignore.may_reinclude_under(&ctx_path) {
                continue;
            }
            if !ignored && excluded && !exclude.may_reinclude_under(&rel_path) {
                any_visible = true;
                continue;
            }
            let sub = place
                .dir
                .open_dir(&os_name)
                .map_err(|e| io_err(&ctx_path, e))?;
            let mark = out.len();
            out.push(self.plain_entry(rel_path.clone(), EntryKind::Dir, &stat));
            let child = Place {
                dir: &sub,
                ctx_path: &ctx_path,
                rel_path: &rel_path,
                ignore: &ignore_state,
                exclude: &exclude_state,
                depth: place.depth + 1,
            };
            let below_visible = self.walk_dir(&child, out, links)?;
            let exists = !ignored || below_visible;
            let copied = exists && (!excluded || out.len() > mark + 1);
            if !copied {
                out.truncate(mark);
            }
            any_visible |= exists;
        }
        Ok(any_visible)
    }
}
