//! Overlayfs snapshots: the unpacked parent layers as read-only lower dirs, an upper dir that
//! collects the step's changes (and becomes its layer diff), a work dir, and the merged view.
//!
//! Rules implemented (kernel Documentation/filesystems/overlayfs.rst):
//! - `lowerdir=` lists layers top first, separated by `:`; the caller gives them lowest
//!   first, as the image config's `rootfs.diff_ids` does.
//! - upper and work must be on the same filesystem; work must be empty and not inside upper.
//! - `userxattr` stores overlay metadata (opaque dirs, redirects) as `user.overlay.*`, which
//!   an unprivileged user namespace can write (trusted.* needs real CAP_SYS_ADMIN).
//! - the mount data is one page; long lists use paths relative to their common parent, with
//!   the mounting process chdir'ed there (containerd's workaround).
//! - with no lower layer (`FROM scratch`) the upper dir is bind-mounted as the root instead:
//!   there is nothing to hide, so every change lands in upper as plain files.

use std::path::{Path, PathBuf};

/// Longest mount data the kernel copies (one page, minus the terminating NUL).
pub const MAX_MOUNT_DATA: usize = 4095;

/// An overlay snapshot description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Unpacked parent layer dirs, lowest first.
    pub lowers: Vec<PathBuf>,
    /// Receives the changes.
    pub upper: PathBuf,
    /// Overlay work dir (empty, same filesystem as `upper`).
    pub work: PathBuf,
    /// Mount point of the merged view.
    pub merged: PathBuf,
}

/// How to mount a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotMount {
    /// `mount -t overlay overlay -o DATA MERGED`, run from `cwd` when set (relative paths).
    Overlay {
        /// Mount data (`lowerdir=..,upperdir=..,workdir=..,userxattr`).
        data: String,
        /// Directory to chdir to first, when `data` uses relative paths.
        cwd: Option<PathBuf>,
    },
    /// Bind mount `upper` on the merged dir (no lower layer).
    BindUpper,
}

/// A snapshot that cannot be mounted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// A path is not absolute, or has a character overlayfs treats as a separator.
    #[error(
        "overlay path {path:?} must be absolute and free of ',', ':' and '\\' \
         (overlayfs separators); move the state dir to a plain path"
    )]
    BadPath {
        /// The path.
        path: PathBuf,
    },
    /// Even with relative paths the option string exceeds one page.
    #[error(
        "{layers} lower layers do not fit in one overlay mount ({len} bytes of options, the \
         kernel takes {MAX_MOUNT_DATA}); squash the base image or use a shorter state dir"
    )]
    TooManyLayers {
        /// Number of lower layers.
        layers: usize,
        /// Length of the shortest option string built.
        len: usize,
    },
}

impl Snapshot {
    /// The mount to perform, checking paths and the option length.
    pub fn mount(&self) -> Result<SnapshotMount, SnapshotError> {
        for p in self
            .lowers
            .iter()
            .chain([&self.upper, &self.work, &self.merged])
        {
            check_path(p)?;
        }
        if self.lowers.is_empty() {
            return Ok(SnapshotMount::BindUpper);
        }
        let data = |lowers: Vec<String>, upper: String, work: String| {
            format!(
                "lowerdir={},upperdir={upper},workdir={work},userxattr",
                lowers.join(":")
            )
        };
        let abs = data(
            self.lowers.iter().rev().map(|p| s(p)).collect(),
            s(&self.upper),
            s(&self.work),
        );
        if abs.len() <= MAX_MOUNT_DATA {
            return Ok(SnapshotMount::Overlay {
                data: abs,
                cwd: None,
            });
        }
        let all: Vec<&Path> = self
            .lowers
            .iter()
            .chain([&self.upper, &self.work])
            .map(PathBuf::as_path)
            .collect();
        let base = common_parent(&all);
        let rel = |p: &Path| match p.strip_prefix(&base) {
            Ok(r) if !r.as_os_str().is_empty() => s(r),
            _ => ".".to_string(),
        };
        let short = data(
            self.lowers.iter().rev().map(|p| rel(p)).collect(),
            rel(&self.upper),
            rel(&self.work),
        );
        if short.len() > MAX_MOUNT_DATA {
            return Err(SnapshotError::TooManyLayers {
                layers: self.lowers.len(),
                len: short.len(),
            });
        }
        Ok(SnapshotMount::Overlay {
            data: short,
            cwd: Some(base),
        })
    }
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn check_path(p: &Path) -> Result<(), SnapshotError> {
    let text = p.to_str();
    match text {
        Some(t) if p.is_absolute() && !t.contains([',', ':', '\\']) => Ok(()),
        _ => Err(SnapshotError::BadPath { path: p.into() }),
    }
}

/// The longest common ancestor directory of absolute paths.
fn common_parent(paths: &[&Path]) -> PathBuf {
    let mut base: Option<PathBuf> = None;
    for p in paths {
        let parent = p.parent().unwrap_or(Path::new("/"));
        base = Some(match base {
            None => parent.to_path_buf(),
            Some(b) => b
                .components()
                .zip(parent.components())
                .take_while(|(a, c)| a == c)
                .map(|(a, _)| a)
                .collect(),
        });
    }
    base.unwrap_or_else(|| PathBuf::from("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(lowers: &[&str]) -> Snapshot {
        Snapshot {
            lowers: lowers.iter().map(PathBuf::from).collect(),
            upper: "/s/3/upper".into(),
            work: "/s/3/work".into(),
            merged: "/s/3/merged".into(),
        }
    }

    #[test]
    fn lowers_are_top_first() {
        let m = snap(&["/s/1/fs", "/s/2/fs"]).mount().expect("mount");
        assert_eq!(
            m,
            SnapshotMount::Overlay {
                data: "lowerdir=/s/2/fs:/s/1/fs,upperdir=/s/3/upper,workdir=/s/3/work,userxattr"
                    .into(),
                cwd: None
            }
        );
    }

    #[test]
    fn scratch_binds_upper() {
        assert_eq!(snap(&[]).mount(), Ok(SnapshotMount::BindUpper));
    }

    #[test]
    fn refuses_separators_and_relative_paths() {
        for bad in ["/a:b", "/a,b", "rel/dir", "/a\\b"] {
            assert!(
                matches!(snap(&[bad]).mount(), Err(SnapshotError::BadPath { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn long_lists_become_relative() {
        let long = format!("/{}", "d".repeat(200));
        let lowers: Vec<String> = (0..30).map(|i| format!("{long}/snap/{i}/fs")).collect();
        let s = Snapshot {
            lowers: lowers.iter().map(PathBuf::from).collect(),
            upper: format!("{long}/snap/31/upper").into(),
            work: format!("{long}/snap/31/work").into(),
            merged: format!("{long}/snap/31/merged").into(),
        };
        match s.mount().expect("mount") {
            SnapshotMount::Overlay { data, cwd } => {
                assert_eq!(cwd, Some(PathBuf::from(format!("{long}/snap"))));
                assert!(data.starts_with("lowerdir=29/fs:28/fs:"), "{data}");
                assert!(data.ends_with(",upperdir=31/upper,workdir=31/work,userxattr"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn too_many_layers_is_an_error() {
        let lowers: Vec<PathBuf> = (0..2000)
            .map(|i| PathBuf::from(format!("/s/{i}/fs")))
            .collect();
        let s = Snapshot {
            lowers,
            ..snap(&[])
        };
        assert!(matches!(
            s.mount(),
            Err(SnapshotError::TooManyLayers { layers: 2000, .. })
        ));
    }
}
