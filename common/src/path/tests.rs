//! Property tests: no input leaves the root, cleaning is idempotent, and
//! symlink loops end with [`ResolveError::TooManyLinks`] after exactly
//! [`MAX_SYMLINKS`] links. Plus one test per error path, and the kernel's
//! `openat2(RESOLVE_IN_ROOT)` as an oracle on a real directory.

use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// A path from the awkward pieces: `..`, `.`, empty, names, maybe rooted.
fn path_strategy() -> impl Strategy<Value = String> {
    let comp = prop_oneof![
        Just("..".to_string()),
        Just(".".to_string()),
        Just(String::new()),
        Just("a".to_string()),
        Just("b".to_string()),
        Just("c".to_string()),
        Just("...".to_string()),
    ];
    (
        any::<bool>(),
        proptest::collection::vec(comp, 0..8),
        any::<bool>(),
    )
        .prop_map(|(rooted, comps, trailing)| {
            let mut p = comps.join("/");
            if rooted {
                p.insert(0, '/');
            }
            if trailing {
                p.push('/');
            }
            p
        })
}

/// A filesystem of names `a`, `b`, `c` (depth up to 2): some symlinks
/// (absolute and relative targets, so loops too), some plain entries.
#[derive(Debug, Clone)]
struct Table {
    links: BTreeMap<String, String>,
    present: BTreeSet<String>,
}

fn table_strategy() -> impl Strategy<Value = Table> {
    let key = proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c")], 1..3)
        .prop_map(|v| v.join("/"));
    (
        proptest::collection::btree_map(key.clone(), path_strategy(), 0..6),
        proptest::collection::btree_set(key, 0..6),
    )
        .prop_map(|(links, present)| Table { links, present })
}

impl Table {
    fn read(&self, resolved: &[Vec<u8>], name: &[u8]) -> Result<Node, std::convert::Infallible> {
        let mut key: Vec<&[u8]> = resolved.iter().map(Vec::as_slice).collect();
        key.push(name);
        let key = String::from_utf8(key.join(&b'/')).unwrap();
        Ok(match self.links.get(&key) {
            Some(t) => Node::Link(t.clone().into_bytes()),
            None if self.present.contains(&key) => Node::Other,
            None => Node::Missing,
        })
    }
}

fn clean_parts(parts: &[Vec<u8>]) -> bool {
    parts
        .iter()
        .all(|c| !c.is_empty() && c != b"." && c != b".." && !c.contains(&b'/'))
}

proptest! {
    #[test]
    fn cleaning_is_idempotent_and_stays_under_the_root(p in path_strategy()) {
        let g = go_clean(&p);
        prop_assert_eq!(go_clean(&g), g.clone());
        let r = clean_rooted(&p);
        prop_assert!(r.starts_with('/'));
        prop_assert_eq!(clean_rooted(&r), r.clone());
        prop_assert!(!r.split('/').any(|c| c == ".." || c == "."));
        let u = clean_under_root(&p).into_owned();
        prop_assert_eq!(clean_under_root(&u).into_owned(), u.clone());
        prop_assert!(!u.split('/').any(|c| c == ".."));
        let (parts, _) = tar_member(p.as_bytes());
        prop_assert!(clean_parts(&parts));
        prop_assert_eq!(tar_member(&parts.join(&b'/')), (parts.clone(), false));
        let s = strip_empty_and_dot(&p);
        prop_assert_eq!(strip_empty_and_dot(&s), s.clone());
        // A relative source either stays inside or is refused; rooted, it
        // always stays inside.
        if let Ok(c) = source_components(&p, false) {
            prop_assert!(!c.contains(&".."));
        }
        prop_assert!(!source_components(&p, true).unwrap().contains(&".."));
        // The variants agree with Go's Clean where they should.
        prop_assert_eq!(r, go_clean(&format!("/{p}")));
    }

    #[test]
    fn resolution_never_leaves_the_root(table in table_strategy(), p in path_strategy()) {
        for policy in [AfterMissing::Continue, AfterMissing::Stop] {
            let mut followed = 0;
            let got = resolve_in_root(p.as_bytes(), policy, |r, n| {
                let node = table.read(r, n);
                if matches!(node, Ok(Node::Link(_))) {
                    followed += 1;
                }
                node
            });
            match got {
                Ok(parts) => {
                    prop_assert!(clean_parts(&parts), "{:?}", parts);
                    prop_assert!(followed <= MAX_SYMLINKS);
                    let root = std::path::Path::new("/root");
                    let joined = parts.iter().fold(root.to_path_buf(), |acc, c| {
                        acc.join(std::str::from_utf8(c).unwrap())
                    });
                    prop_assert!(joined.starts_with(root));
                }
                Err(ResolveError::TooManyLinks) => prop_assert_eq!(followed, MAX_SYMLINKS + 1),
                Err(ResolveError::DotDotAfterMissing) => {
                    prop_assert_eq!(policy, AfterMissing::Stop)
                }
                Err(ResolveError::Read(never)) => match never {},
            }
        }
    }
}

fn table(links: &[(&str, &str)], present: &[&str]) -> Table {
    Table {
        links: links
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        present: present.iter().map(|s| s.to_string()).collect(),
    }
}

fn resolve(t: &Table, p: &str, policy: AfterMissing) -> Result<String, String> {
    resolve_in_root(p.as_bytes(), policy, |r, n| t.read(r, n))
        .map(|parts| String::from_utf8(parts.join(&b'/')).unwrap())
        .map_err(|e| e.to_string())
}

#[test]
fn links_are_rerooted_and_dotdot_is_clamped() {
    let t = table(
        &[("a", "/../../b"), ("b", "../../../c"), ("c/x", "y")],
        &["c"],
    );
    assert_eq!(
        resolve(&t, "/a/x", AfterMissing::Continue),
        Ok("c/y".into())
    );
    assert_eq!(resolve(&t, "../../a", AfterMissing::Stop), Ok("c".into()));
}

#[test]
fn exactly_forty_links_are_followed() {
    // l0 -> l1 -> ... -> l40 -> end: 41 links fail, 40 resolve.
    let links: Vec<(String, String)> = (0..=40)
        .map(|i| (format!("l{i}"), format!("l{}", i + 1)))
        .collect();
    let t = Table {
        links: links.into_iter().collect(),
        present: ["l41".to_string()].into(),
    };
    assert_eq!(resolve(&t, "l1", AfterMissing::Stop), Ok("l41".into()));
    let e = resolve(&t, "l0", AfterMissing::Stop).unwrap_err();
    assert_eq!(
        e,
        "too many levels of symbolic links (more than 40 followed)"
    );
}

#[test]
fn a_loop_is_an_error() {
    let t = table(&[("a", "b"), ("b", "/a")], &[]);
    for policy in [AfterMissing::Continue, AfterMissing::Stop] {
        assert!(matches!(
            resolve_in_root(b"a/x", policy, |r, n| t.read(r, n)),
            Err(ResolveError::TooManyLinks)
        ));
    }
}

#[test]
fn missing_components_continue_or_stop() {
    let t = table(&[("m/l", "/x")], &["x"]);
    // A view may hold `m/l` without `m`: Continue still reads it.
    assert_eq!(resolve(&t, "m/l", AfterMissing::Continue), Ok("x".into()));
    assert_eq!(resolve(&t, "m/l", AfterMissing::Stop), Ok("m/l".into()));
    assert_eq!(
        resolve(&t, "m/../x", AfterMissing::Continue),
        Ok("x".into())
    );
    assert!(matches!(
        resolve_in_root(b"m/../x", AfterMissing::Stop, |r, n| t.read(r, n)),
        Err(ResolveError::DotDotAfterMissing)
    ));
}

#[test]
fn reader_errors_are_passed_on() {
    let e = resolve_in_root(b"a/b", AfterMissing::Continue, |_, n| {
        if n == b"b" {
            Err("ENOTDIR")
        } else {
            Ok(Node::Other)
        }
    });
    assert!(matches!(e, Err(ResolveError::Read("ENOTDIR"))));
}

#[test]
fn climbing_sources_are_an_error() {
    assert_eq!(source_components("../x", false), Err(Climbs));
    assert_eq!(
        Climbs.to_string(),
        "the path climbs above its root with `..`"
    );
}

mod kernel_oracle {
    //! The real filesystem, read with `lstat`/`readlink`, must resolve as
    //! the kernel does with `openat2(RESOLVE_IN_ROOT)` whenever the kernel
    //! succeeds, and fail with too many links exactly when it says `ELOOP`.

    use super::*;
    use nix::errno::Errno;
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    /// Creates the table's entries without ever following a symlink (a
    /// link `a -> /` must not make `a/b` land outside the temporary root):
    /// an entry below a symlink or a file is skipped.
    fn build(dir: &Path, t: &Table) {
        let entries = t
            .present
            .iter()
            .map(|p| (p, None))
            .chain(t.links.iter().map(|(k, v)| (k, Some(v))));
        'entry: for (key, link) in entries {
            let comps: Vec<&str> = key.split('/').collect();
            let mut at = dir.to_path_buf();
            for c in &comps[..comps.len() - 1] {
                at.push(c);
                match std::fs::symlink_metadata(&at) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => continue 'entry,
                    Err(_) => std::fs::create_dir(&at).unwrap(),
                }
            }
            at.push(comps[comps.len() - 1]);
            if std::fs::symlink_metadata(&at).is_ok() {
                continue;
            }
            match link {
                // An empty target cannot be made (ENOENT): skipped.
                Some(v) => drop(std::os::unix::fs::symlink(v, &at)),
                None => std::fs::create_dir(&at).unwrap(),
            }
        }
    }

    fn fs_read(root: &Path, resolved: &[Vec<u8>], name: &[u8]) -> std::io::Result<Node> {
        use std::os::unix::ffi::{OsStrExt, OsStringExt};
        let mut at = root.to_path_buf();
        for c in resolved {
            at.push(std::ffi::OsStr::from_bytes(c));
        }
        at.push(std::ffi::OsStr::from_bytes(name));
        match std::fs::symlink_metadata(&at) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Node::Missing),
            Err(e) => Err(e),
            Ok(m) if m.file_type().is_symlink() => Ok(Node::Link(
                std::fs::read_link(&at)?.into_os_string().into_vec(),
            )),
            Ok(_) => Ok(Node::Other),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn agrees_with_resolve_in_root(table in table_strategy(), p in path_strategy()) {
            let dir = tempfile::tempdir().unwrap();
            build(dir.path(), &table);
            let root = nix::fcntl::open(dir.path(), OFlag::O_PATH | OFlag::O_DIRECTORY, nix::sys::stat::Mode::empty()).unwrap();
            let how = OpenHow::new()
                .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
                .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
            let path = if p.is_empty() { ".".to_string() } else { p.clone() };
            let kernel = openat2(root.as_fd(), path.as_str(), how);
            let ours = resolve_in_root(p.as_bytes(), AfterMissing::Stop, |r, n| fs_read(dir.path(), r, n));
            match kernel {
                Ok(fd) => {
                    let parts = ours.map_err(|e| TestCaseError::fail(format!("kernel resolved, we said {e}")))?;
                    let ours_at = parts.iter().fold(dir.path().to_path_buf(), |acc, c| acc.join(std::str::from_utf8(c).unwrap()));
                    let want = nix::sys::stat::fstat(fd.as_fd()).unwrap();
                    let got = std::fs::metadata(&ours_at).unwrap();
                    prop_assert_eq!((got.dev(), got.ino()), (want.st_dev as u64, want.st_ino as u64));
                }
                Err(Errno::ELOOP) => prop_assert!(matches!(ours, Err(ResolveError::TooManyLinks)), "{:?}", ours),
                Err(_) => {}
            }
        }
    }
}
