//! The path filter of [`super::ApplyOptions::only`]: which archive paths a
//! partial unpack touches.
//!
//! A path is *related* to a prefix when it equals it, lies under it, or is
//! one of its ancestor directories. Every change the image spec's
//! "Applying Changesets" rules make to a related path depends only on
//! related paths: an entry's parents are its ancestors, and a whiteout or
//! opaque marker at an unrelated path removes only unrelated paths (if a
//! removed path had a related descendant it would itself be related). So
//! applying only the related entries of each layer, in order, yields the
//! full result restricted to the related paths, with one exception handled
//! by the applier: a hardlink whose target is unrelated.

/// Clean relative prefixes, split into components.
#[derive(Debug, Clone)]
pub(super) struct PathFilter {
    prefixes: Vec<Vec<Vec<u8>>>,
}

impl PathFilter {
    /// From the option's strings; `None` when one of them is the root (the
    /// filter would keep everything). Components `.` and empty ones are
    /// dropped; `..` cannot climb above the root (as archive paths).
    pub(super) fn new(prefixes: &[String]) -> Option<Self> {
        let mut out = Vec::with_capacity(prefixes.len());
        for p in prefixes {
            let (comps, _) = crate::path::tar_member(p.as_bytes());
            if comps.is_empty() {
                return None;
            }
            out.push(comps);
        }
        Some(Self { prefixes: out })
    }

    /// Is the cleaned path `comps` equal to, under, or an ancestor of a
    /// prefix? The root (no components) is an ancestor of every prefix.
    pub(super) fn related(&self, comps: &[Vec<u8>]) -> bool {
        self.prefixes.iter().any(|p| {
            let n = p.len().min(comps.len());
            p[..n] == comps[..n]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::PathFilter;

    fn comps(p: &str) -> Vec<Vec<u8>> {
        p.split('/')
            .filter(|c| !c.is_empty())
            .map(|c| c.as_bytes().to_vec())
            .collect()
    }

    #[test]
    fn relates_prefixes_their_subtrees_and_ancestors_only() {
        let f = PathFilter::new(&["/usr/lib/x".into(), "./etc//os-release".into()]).unwrap();
        for yes in [
            "",
            "usr",
            "usr/lib",
            "usr/lib/x",
            "usr/lib/x/y/z",
            "etc",
            "etc/os-release",
        ] {
            assert!(f.related(&comps(yes)), "{yes}");
        }
        for no in ["bin", "usr/bin", "usr/lib/xy", "usr/libx", "etc/passwd"] {
            assert!(!f.related(&comps(no)), "{no}");
        }
    }

    #[test]
    fn a_root_prefix_means_no_filter() {
        assert!(PathFilter::new(&["/".into()]).is_none());
        assert!(PathFilter::new(&["a".into(), ".".into()]).is_none());
        assert!(PathFilter::new(&["..".into()]).is_none());
        let none = PathFilter::new(&[]).unwrap();
        assert!(!none.related(&comps("a")));
    }
}

#[cfg(test)]
mod apply_tests {
    use crate::oci::layer::{apply, ApplyOptions, ApplyReport, LayerError};
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    /// (path, type, mode, data or link target)
    type Spec<'a> = &'a [(&'a str, tar::EntryType, u32, &'a str)];

    fn layer(entries: Spec<'_>) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, mode, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(*mode);
            h.set_mtime(1_600_000_000);
            if kind.is_symlink() || kind.is_hard_link() {
                h.set_size(0);
                b.append_link(&mut h, path, data).unwrap();
            } else {
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, data.as_bytes()).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    fn unpack(layers: &[Vec<u8>], only: Option<&[&str]>) -> Result<tempfile::TempDir, LayerError> {
        let dir = tempfile::tempdir().unwrap();
        let opts = ApplyOptions {
            ownership: false,
            only: only.map(|o| o.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        };
        for l in layers {
            apply(l.as_slice(), dir.path(), &opts)?;
        }
        Ok(dir)
    }

    /// Relative path → (kind, mode, content or link target).
    fn tree(root: &Path) -> BTreeMap<String, (char, u32, String)> {
        fn walk(root: &Path, at: &Path, out: &mut BTreeMap<String, (char, u32, String)>) {
            let mut names: Vec<_> = std::fs::read_dir(at).unwrap().map(|e| e.unwrap()).collect();
            names.sort_by_key(|e| e.file_name());
            for e in names {
                let p = e.path();
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                let m = std::fs::symlink_metadata(&p).unwrap();
                let mode = m.permissions().mode() & 0o7777;
                if m.file_type().is_symlink() {
                    let t = std::fs::read_link(&p).unwrap();
                    out.insert(rel, ('l', 0, t.to_string_lossy().into_owned()));
                } else if m.is_dir() {
                    out.insert(rel, ('d', mode, String::new()));
                    walk(root, &p, out);
                } else {
                    out.insert(rel, ('f', mode, std::fs::read_to_string(&p).unwrap()));
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(root, root, &mut out);
        out
    }

    /// The filtered unpack equals the full one restricted to related paths.
    fn assert_restriction(
        layers: &[Vec<u8>],
        only: &[&str],
    ) -> BTreeMap<String, (char, u32, String)> {
        let full = tree(unpack(layers, None).unwrap().path());
        let part = tree(unpack(layers, Some(only)).unwrap().path());
        let filter =
            super::PathFilter::new(&only.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let want: BTreeMap<_, _> = full
            .into_iter()
            .filter(|(p, _)| filter.related(&crate::path::tar_member(p.as_bytes()).0))
            .collect();
        assert_eq!(part, want);
        part
    }

    const D: tar::EntryType = tar::EntryType::Directory;
    const F: tar::EntryType = tar::EntryType::Regular;
    const S: tar::EntryType = tar::EntryType::Symlink;
    const H: tar::EntryType = tar::EntryType::Link;

    #[test]
    fn only_the_prefix_and_its_parents_are_unpacked() {
        let mut spec = vec![
            ("usr/", D, 0o751, ""),
            ("usr/lib/", D, 0o700, ""),
            ("usr/lib/x", F, 0o640, "x!"),
            ("usr/lib/x2", F, 0o644, "no"),
            ("usr/bin/", D, 0o755, ""),
            ("usr/bin/busybox", F, 0o755, "bb"),
            ("bin", S, 0o777, "usr/bin"),
        ];
        let names: Vec<String> = (0..300).map(|i| format!("usr/bin/applet{i}")).collect();
        spec.extend(names.iter().map(|n| (n.as_str(), S, 0o777, "busybox")));
        let l = [layer(&spec)];
        let part = assert_restriction(&l, &["usr/lib/x"]);
        assert_eq!(part.len(), 3, "{part:?}");
        assert_eq!(part["usr"], ('d', 0o751, String::new()));
        assert_eq!(part["usr/lib"], ('d', 0o700, String::new()));
        assert_eq!(part["usr/lib/x"], ('f', 0o640, "x!".into()));
        let dir = tempfile::tempdir().unwrap();
        let opts = ApplyOptions {
            ownership: false,
            only: Some(vec!["/usr/lib/x".into()]),
            ..Default::default()
        };
        let r: ApplyReport = apply(l[0].as_slice(), dir.path(), &opts).unwrap();
        assert_eq!(r.symlinks, 0);
        assert_eq!(r.filtered_out, 304);
        // A directory prefix brings its whole subtree.
        assert_restriction(&l, &["usr/bin"]);
        // A root prefix means everything.
        let all = tree(unpack(&l, Some(&["/"])).unwrap().path());
        assert_eq!(all, tree(unpack(&l, None).unwrap().path()));
    }

    #[test]
    fn whiteouts_and_opaque_markers_keep_their_meaning_inside_the_filter() {
        let l1 = layer(&[
            ("a/", D, 0o755, ""),
            ("a/b/", D, 0o755, ""),
            ("a/b/f", F, 0o644, "old"),
            ("a/b/g", F, 0o644, "old"),
            ("c/", D, 0o755, ""),
            ("c/g", F, 0o644, "c"),
            ("o/", D, 0o755, ""),
            ("o/keep", F, 0o644, "lower"),
        ]);
        // The prefix's parent is deleted and recreated; a whiteout outside
        // the filter is skipped; an opaque directory drops lower content.
        let l2 = layer(&[
            ("a/.wh.b", F, 0o644, ""),
            ("a/b/", D, 0o700, ""),
            ("a/b/g", F, 0o600, "new"),
            (".wh.c", F, 0o644, ""),
            ("o/.wh..wh..opq", F, 0o644, ""),
            ("o/mine", F, 0o644, "upper"),
        ]);
        let part = assert_restriction(&[l1.clone(), l2.clone()], &["a/b/f", "a/b/g", "o"]);
        assert!(!part.contains_key("a/b/f"), "{part:?}");
        assert_eq!(part["a/b"], ('d', 0o700, String::new()));
        assert_eq!(part["a/b/g"], ('f', 0o600, "new".into()));
        assert!(
            !part.contains_key("o/keep") && part.contains_key("o/mine"),
            "{part:?}"
        );
        // Whole parent deleted and not recreated: the prefix is gone.
        let l3 = layer(&[(".wh.a", F, 0o644, "")]);
        let part = assert_restriction(&[l1.clone(), l3.clone()], &["a/b/f"]);
        assert!(part.is_empty(), "{part:?}");
        // A whiteout elsewhere is skipped, not applied to what is kept.
        let part = assert_restriction(&[l1, l3], &["c/g"]);
        assert_eq!(part["c/g"].2, "c");
    }

    #[test]
    fn a_hardlink_to_a_skipped_target_fails_safely() {
        let l1 = layer(&[("etc/", D, 0o755, ""), ("etc/f", F, 0o644, "data")]);
        let l2 = layer(&[("usr/", D, 0o755, ""), ("usr/h", H, 0o644, "etc/f")]);
        let layers = [l1, l2];
        match unpack(&layers, Some(&["usr/h"])) {
            Err(LayerError::OutsideFilter { path, target }) => {
                assert_eq!((path.as_str(), target.as_str()), ("usr/h", "etc/f"));
            }
            other => panic!("expected OutsideFilter, got {:?}", other.map(|_| ())),
        }
        // With its target in the filter the link is made.
        let part = assert_restriction(&layers, &["usr/h", "etc/f"]);
        assert_eq!(part["usr/h"].2, "data");
        // Only the target kept: the link is skipped.
        let part = assert_restriction(&layers, &["etc"]);
        assert!(!part.contains_key("usr/h"), "{part:?}");
    }
}
