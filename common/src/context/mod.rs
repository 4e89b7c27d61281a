//! The build context: the directory `imgfarm build` is pointed at, seen
//! through `.dockerignore`, and the exact file selection each COPY/ADD makes
//! from it, with a content digest for cache keys.
//!
//! Rules followed (BuildKit `dockerfile2llb` + fsutil `copy`):
//! - a source is cleaned relative to the context root (`/x` and `./x` mean
//!   `x`); one that climbs out with `..` is an error;
//! - a source segment with `*`, `?` or `[` is a Go `filepath.Match` pattern,
//!   matched one path segment at a time;
//! - symlinks in a source path, the last one included, are followed inside
//!   the context (BuildKit's `FollowSymlinks`); one that points outside
//!   (absolute target, or `..` above the root) is an error; symlinks inside a
//!   copied directory are entries, never followed;
//! - a directory source selects its contents recursively;
//! - `.dockerignore`d paths do not exist; `--exclude` patterns are matched
//!   relative to each source, below its root, with the same matcher.
//!
//! Every read goes through directory handles opened with `O_NOFOLLOW`, so
//! nothing outside the root is ever read or followed.

pub mod cache;
mod digest;
mod fsys;
mod resolve;
mod walk;

use crate::dockerfile::ignore::{IgnoreError, IgnoreMatcher};
use crate::oci::Digest;
use cache::DigestCache;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Default bound on entries one [`BuildContext::select`] may visit.
pub const MAX_ENTRIES: usize = 1_000_000;

/// Deepest directory nesting walked (each level holds one open directory).
pub const MAX_DEPTH: usize = 256;

/// Symlinks followed while resolving one source path: Linux's own limit,
/// [`crate::path::MAX_SYMLINKS`].
pub const MAX_SYMLINK_HOPS: usize = crate::path::MAX_SYMLINKS;

/// Why a context could not be opened or a selection made.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The context directory itself cannot be opened.
    #[error("cannot open build context {root}: {source}")]
    OpenRoot {
        /// The directory given.
        root: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Reading something inside the context failed.
    #[error("reading {path:?} in the build context: {source}")]
    Io {
        /// Context-relative path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A source path leaves the context.
    #[error("COPY source outside the build context: {src}{detail}")]
    Outside {
        /// The source as written.
        src: String,
        /// Which symlink leads out, if one does.
        detail: String,
    },
    /// A source names nothing that exists (or only `.dockerignore`d paths).
    #[error("{src}: not found in the build context (check the path, and that .dockerignore does not exclude it)")]
    NotFound {
        /// The source as written.
        src: String,
    },
    /// All sources were wildcards and none matched anything.
    #[error("no source files were specified: {} matched nothing in the build context", .sources.join(" "))]
    NoSourceFiles {
        /// The sources as written.
        sources: Vec<String>,
    },
    /// A wildcard source is not valid Go `filepath.Match` syntax.
    #[error("COPY source {src:?} is not a valid pattern: {reason}")]
    BadSource {
        /// The source as written.
        src: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A bad `--exclude` pattern.
    #[error(transparent)]
    Exclude(#[from] IgnoreError),
    /// Symlinks that point at each other.
    #[error("too many levels of symbolic links while resolving COPY source {src}")]
    SymlinkLoop {
        /// The source as written.
        src: String,
    },
    /// The selection visited more entries than allowed.
    #[error("the build context selection has more than {limit} entries; narrow the COPY sources or exclude paths in .dockerignore")]
    TooManyEntries {
        /// The bound.
        limit: usize,
    },
    /// Directories nested deeper than [`MAX_DEPTH`].
    #[error("{path:?} in the build context is nested more than {limit} directories deep")]
    TooDeep {
        /// Context-relative path.
        path: String,
        /// The bound.
        limit: usize,
    },
    /// A name or symlink target that is not UTF-8.
    #[error("{path:?} in the build context has a name or link target that is not valid UTF-8; rename it or exclude it in .dockerignore")]
    NotUtf8 {
        /// Context-relative path, with invalid bytes replaced.
        path: String,
    },
    /// A socket or device node named as a COPY source.
    #[error("{path:?} is a socket or device node, which cannot be copied from the build context")]
    Special {
        /// Context-relative path.
        path: String,
    },
    /// A file changed (type, identity or size) while it was being read.
    #[error(
        "{path:?} changed while it was read; build again once the context is not being modified"
    )]
    Changed {
        /// Context-relative path.
        path: String,
    },
}

/// The kind of a selected entry. Sockets and device nodes are skipped, as
/// BuildKit's tar-based context transfer cannot carry them either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link, copied as a link.
    Symlink,
    /// A named pipe.
    Fifo,
}

/// One selected path. Owner ids are not recorded: BuildKit resets them to
/// 0:0 unless `--chown` says otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the source's root (`""` for the root itself), `/`-separated.
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits including setuid, setgid and sticky (`0o7777` mask).
    pub mode: u32,
    /// Size in bytes of a regular file; 0 otherwise.
    pub size: u64,
    /// A symlink's target, verbatim.
    pub link_target: Option<String>,
    /// sha256 of a regular file's content.
    pub digest: Option<Digest>,
    /// For a regular file that is a hard link to an earlier entry of the same
    /// source match: that entry's path (BuildKit keeps such links).
    pub hardlink_to: Option<String>,
    /// Modification time from `lstat`, in nanoseconds since the epoch. COPY
    /// keeps a file's mtime; it is not part of [`Selection::digest`].
    pub mtime_ns: i128,
}

/// What one source (or one match of a wildcard source) selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceMatch {
    /// The source as written in the Dockerfile.
    pub source: String,
    /// The context-relative path it matched, before following a final
    /// symlink (`""` for the context root); its base name names the copy.
    pub path: String,
    /// The context-relative path actually read after following symlinks;
    /// entry paths are relative to it.
    pub resolved: String,
    /// The root (`path == ""`) first, then, for a directory, its contents
    /// depth-first in byte order of names.
    pub entries: Vec<Entry>,
}

/// The result of [`BuildContext::select`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selection {
    /// One item per source, or per wildcard match (in sorted order), in the
    /// order of the sources.
    pub matches: Vec<SourceMatch>,
}

impl Selection {
    /// Content digest of exactly the selected entries: matched path, entry
    /// paths, kinds, mode bits, symlink targets, hard links and file content
    /// digests, in the order above; never mtimes, owners or inode numbers,
    /// nor the mode of a directory source itself (its contents are copied
    /// into a destination BuildKit creates). Equal content gives an equal
    /// digest on any machine.
    pub fn digest(&self) -> Digest {
        digest::selection_digest(self)
    }

    /// Number of entries over all matches.
    pub fn entry_count(&self) -> usize {
        self.matches.iter().map(|m| m.entries.len()).sum()
    }
}

/// Identity of a file's content at hashing time; a change invalidates the
/// cached digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

/// An opened build context.
#[derive(Debug)]
pub struct BuildContext {
    root: PathBuf,
    root_dir: fsys::DirHandle,
    ignore: IgnoreMatcher,
    max_entries: usize,
    /// Resolve symlinks as if the root were `/` (a stage's filesystem).
    rooted_symlinks: bool,
    /// (dev, inode) → digest, so a file selected twice (or hard-linked) is
    /// read once per context.
    file_digests: Mutex<HashMap<(u64, u64), (FileStamp, Digest)>>,
    /// Digests remembered by earlier builds (see [`cache`]).
    persisted: Option<DigestCache>,
    /// Regular files read and hashed so far.
    files_hashed: AtomicUsize,
}

impl BuildContext {
    /// Opens `root` (following it if it is itself a symlink) with the
    /// `.dockerignore` patterns in `ignore`.
    pub fn open(root: &Path, ignore: IgnoreMatcher) -> Result<Self, ContextError> {
        let root_dir =
            fsys::DirHandle::open_root(root).map_err(|source| ContextError::OpenRoot {
                root: root.to_path_buf(),
                source,
            })?;
        Ok(Self {
            root: root.to_path_buf(),
            root_dir,
            ignore,
            max_entries: MAX_ENTRIES,
            rooted_symlinks: false,
            file_digests: Mutex::new(HashMap::new()),
            persisted: None,
            files_hashed: AtomicUsize::new(0),
        })
    }

    /// Uses (and fills) `cache`, the digests earlier builds computed for
    /// this directory, so unchanged files are checked by `lstat` only.
    /// Write it back with [`Self::save_digest_cache`].
    pub fn with_digest_cache(mut self, cache: DigestCache) -> Self {
        self.persisted = Some(cache);
        self
    }

    /// How many regular files were read to hash them (the rest came from
    /// a cache).
    pub fn files_hashed(&self) -> usize {
        self.files_hashed.load(Ordering::Relaxed)
    }

    /// The persisted digest cache in use, if any.
    pub fn digest_cache(&self) -> Option<&DigestCache> {
        self.persisted.as_ref()
    }

    /// Writes the digest cache back once the selections are made (only if
    /// something changed). `Ok(None)` when no cache is attached.
    pub fn save_digest_cache(&self) -> Result<Option<cache::SaveOutcome>, cache::CacheError> {
        self.persisted.as_ref().map(DigestCache::save).transpose()
    }

    /// Lowers (or raises) the bound on entries one selection may visit
    /// (default [`MAX_ENTRIES`]).
    pub fn with_max_entries(mut self, max_entries: usize) -> Self {
        self.max_entries = max_entries;
        self
    }

    /// Treats the directory as a whole filesystem, for `COPY --from=<stage>`:
    /// symlinks in source paths resolve as if the root were `/` (an absolute
    /// target starts again at the root, `..` stops at it) and a source that
    /// climbs above the root stays at it, as BuildKit's `fs.RootPath` does.
    /// Nothing outside the directory is read either way. The build context
    /// keeps the default, which refuses such paths with an error.
    pub fn with_rooted_symlinks(mut self) -> Self {
        self.rooted_symlinks = true;
        self
    }

    /// The context directory as given.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `.dockerignore` patterns in force.
    pub fn ignore(&self) -> &IgnoreMatcher {
        &self.ignore
    }

    /// Selects what `COPY [--exclude=...] <sources...> <dest>` copies from
    /// this context (see the module docs for the rules). A literal source
    /// that does not exist is an error; a wildcard that matches nothing is
    /// allowed as long as some source selects something.
    pub fn select(
        &self,
        sources: &[String],
        excludes: &[String],
    ) -> Result<Selection, ContextError> {
        let exclude = IgnoreMatcher::from_patterns(excludes, "COPY --exclude")?;
        let mut session = resolve::Session::new(self, &exclude);
        let mut selection = Selection::default();
        for source in sources {
            selection.matches.extend(session.select_source(source)?);
        }
        if selection.matches.is_empty() {
            return Err(ContextError::NoSourceFiles {
                sources: sources.to_vec(),
            });
        }
        Ok(selection)
    }

    /// Opens a regular file of the context for reading, e.g. a selected
    /// entry at `<resolved>/<entry path>`, walking every directory with
    /// `O_NOFOLLOW` so a symlink can't redirect the read.
    pub fn open_file(&self, rel_path: &str) -> Result<File, ContextError> {
        let io_err = |source| ContextError::Io {
            path: rel_path.to_string(),
            source,
        };
        let mut parts =
            crate::path::strict_components(rel_path).ok_or_else(|| ContextError::Outside {
                src: rel_path.to_string(),
                detail: String::new(),
            })?;
        let name = parts.pop().ok_or_else(|| ContextError::NotFound {
            src: rel_path.to_string(),
        })?;
        let dir = self.root_dir.open_path(parts).map_err(io_err)?;
        let (file, stat) = dir.open_file(OsStr::new(name)).map_err(io_err)?;
        if stat.kind != fsys::RawKind::File {
            return Err(ContextError::Changed {
                path: rel_path.to_string(),
            });
        }
        Ok(file)
    }
}
