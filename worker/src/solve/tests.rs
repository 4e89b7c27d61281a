//! Unit tests of the solver's file logic on a real content store in a temp
//! dir: chain views with whiteouts, `--chown` resolution, COPY destination
//! rules and WORKDIR.

use super::copy::{copy_layer, mkdir_layer, SourceFs};
use super::layers::LayerWriter;
use super::result::LayerRef;
use super::view::ChainView;
use imgfarm_common::context::BuildContext;
use imgfarm_common::dockerfile::ignore::IgnoreMatcher;
use imgfarm_common::graph::op::{CopyAction, CopySource};
use imgfarm_common::oci::layer::open_layer;
use imgfarm_common::oci::store::ContentStore;
use std::collections::BTreeMap;

fn store() -> (tempfile::TempDir, ContentStore) {
    let d = tempfile::tempdir().unwrap();
    let s = ContentStore::open(d.path()).unwrap();
    (d, s)
}

fn hdr(kind: tar::EntryType, mode: u32, uid: u64, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(uid);
    h.set_size(size);
    h
}

fn layer(s: &ContentStore, entries: &[(&str, tar::EntryType, &str)]) -> LayerRef {
    let mut w = LayerWriter::new(s).unwrap();
    for (p, k, data) in entries {
        let mut h = hdr(*k, 0o755, 0, data.len() as u64);
        w.append(&mut h, p, data.as_bytes()).unwrap();
    }
    w.finish().unwrap()
}

/// Paths → (mode, uid, gid) of a layer.
fn listing(s: &ContentStore, l: &LayerRef) -> BTreeMap<String, (u32, u64, u64)> {
    let mut out = BTreeMap::new();
    let mut ar = tar::Archive::new(open_layer(s, l).unwrap());
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        out.insert(
            String::from_utf8_lossy(&e.path_bytes()).into_owned(),
            (h.mode().unwrap(), h.uid().unwrap(), h.gid().unwrap()),
        );
    }
    out
}

const DIR: tar::EntryType = tar::EntryType::Directory;
const FILE: tar::EntryType = tar::EntryType::Regular;

#[test]
fn view_applies_whiteouts_and_opaque_dirs() {
    let (_d, s) = store();
    let l1 = layer(
        &s,
        &[
            ("a/", DIR, ""),
            ("a/x", FILE, "1"),
            ("a/y", FILE, "2"),
            ("b/", DIR, ""),
            ("b/z", FILE, "3"),
        ],
    );
    let l2 = layer(
        &s,
        &[
            ("a/.wh.x", FILE, ""),
            ("b/", DIR, ""),
            ("b/.wh..wh..opq", FILE, ""),
        ],
    );
    let v = ChainView::load(&s, &[l1, l2]).unwrap();
    assert!(v.get("a/x").is_none());
    assert!(v.get("a/y").is_some());
    assert!(v.get("b/z").is_none());
    assert!(v.is_dir("/b"));
}

#[test]
fn chown_names_resolve_through_passwd_and_group() {
    let (_d, s) = store();
    let l = layer(
        &s,
        &[
            ("etc/", DIR, ""),
            (
                "etc/passwd",
                FILE,
                "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
            ),
            ("etc/group", FILE, "root:x:0:\nstaff:x:50:\n"),
        ],
    );
    let v = ChainView::load(&s, &[l]).unwrap();
    assert_eq!(v.resolve_user("app").unwrap(), (1000, 1001));
    assert_eq!(v.resolve_user("app:staff").unwrap(), (1000, 50));
    assert_eq!(v.resolve_user("7").unwrap(), (7, 7));
    assert_eq!(v.resolve_user("7:8").unwrap(), (7, 8));
    let e = v.resolve_user("nobody").unwrap_err().to_string();
    assert!(e.contains("unable to find user nobody"), "{e}");
}

fn copy_action(sources: &[&str], dest: &str) -> CopyAction {
    CopyAction {
        sources: sources
            .iter()
            .map(|p| CopySource {
                input: 0,
                path: p.to_string(),
                extract_archives: false,
            })
            .collect(),
        dest: dest.into(),
        chown: None,
        chmod: None,
        link: false,
        parents: false,
        excludes: Vec::new(),
        is_add: false,
        keep_git_dir: false,
    }
}

fn copy_into(
    view: &ChainView,
    s: &ContentStore,
    action: &CopyAction,
) -> BTreeMap<String, (u32, u64, u64)> {
    let ctx_dir = tempfile::tempdir().unwrap();
    std::fs::write(ctx_dir.path().join("f.txt"), "hi").unwrap();
    std::fs::create_dir(ctx_dir.path().join("dir")).unwrap();
    std::fs::write(ctx_dir.path().join("dir/inner"), "in").unwrap();
    let ctx = BuildContext::open(ctx_dir.path(), IgnoreMatcher::empty()).unwrap();
    let paths: Vec<String> = action.sources.iter().map(|x| x.path.clone()).collect();
    let sel = ctx.select(&paths, &[]).unwrap();
    let l = copy_layer(
        s,
        view,
        action,
        &[(
            SourceFs {
                ctx: &ctx,
                owners: None,
            },
            sel.matches,
        )],
    )
    .unwrap();
    listing(s, &l)
}

#[test]
fn copy_destination_rules() {
    let (_d, s) = store();
    let base = layer(&s, &[("app/", DIR, "")]);
    let v = ChainView::load(&s, &[base]).unwrap();
    // A file to a path that is not a directory: that path.
    let l = copy_into(&v, &s, &copy_action(&["f.txt"], "/out.txt"));
    assert!(l.contains_key("out.txt"), "{l:?}");
    // To an existing directory: inside it, parent kept with its metadata.
    let l = copy_into(&v, &s, &copy_action(&["f.txt"], "/app"));
    assert!(l.contains_key("app/f.txt"), "{l:?}");
    assert_eq!(l["app/"].0 & 0o7777, 0o755);
    // A directory source copies its contents; missing parents are created 0755.
    let l = copy_into(&v, &s, &copy_action(&["dir"], "/new/place/"));
    assert!(l.contains_key("new/place/inner"), "{l:?}");
    assert!(!l.keys().any(|k| k.contains("dir")), "{l:?}");
    assert_eq!(l["new/"].0 & 0o7777, 0o755);
    // Context files are owned by root; --chown and --chmod apply.
    let mut a = copy_action(&["f.txt"], "/app/");
    a.chown = Some("5:6".into());
    a.chmod = Some(0o600);
    let l = copy_into(&v, &s, &a);
    assert_eq!(l["app/f.txt"], (0o600, 5, 6));
}

#[test]
fn workdir_creates_only_missing_dirs_owned_by_the_user() {
    let (_d, s) = store();
    let base = layer(&s, &[("srv/", DIR, "")]);
    let v = ChainView::load(&s, &[base]).unwrap();
    let l = mkdir_layer(&s, &v, "/srv/app/data", 0o755, "12:34").unwrap();
    let l = listing(&s, &l);
    assert_eq!(l["srv/app/data/"], (0o755, 12, 34));
    assert_eq!(l["srv/"].1, 0, "existing dir keeps its owner");
}

/// A layer with directories `dirs` and symlinks `links` (path, target).
fn layer_with_links(s: &ContentStore, dirs: &[&str], links: &[(&str, &str)]) -> LayerRef {
    let mut w = LayerWriter::new(s).unwrap();
    for d in dirs {
        let mut h = hdr(DIR, 0o755, 0, 0);
        w.append(&mut h, d, std::io::empty()).unwrap();
    }
    for (p, t) in links {
        let mut h = hdr(tar::EntryType::Symlink, 0o777, 0, 0);
        w.append_link(&mut h, p, t).unwrap();
    }
    w.finish().unwrap()
}

#[test]
fn paths_resolve_through_symlinks_inside_the_root() {
    let (_d, s) = store();
    let base = layer_with_links(
        &s,
        &["d/", "usr/", "usr/lib/"],
        &[
            ("dlink", "d"),
            ("abs", "/usr/lib"),
            ("up", "../../../../usr"),
            ("loop", "loop"),
        ],
    );
    let v = ChainView::load(&s, &[base]).unwrap();
    assert_eq!(v.resolve_in_root("/dlink/x").unwrap(), "d/x");
    assert_eq!(v.resolve_in_root("dlink").unwrap(), "d");
    assert_eq!(v.resolve_in_root("/abs/y").unwrap(), "usr/lib/y");
    // `..` in a link never climbs above the root.
    assert_eq!(v.resolve_in_root("/up/lib").unwrap(), "usr/lib");
    assert_eq!(v.resolve_in_root("/missing/z").unwrap(), "missing/z");
    let e = v.resolve_in_root("/loop/z").unwrap_err().to_string();
    assert!(e.contains("too many levels of symbolic links"), "{e}");
}

#[test]
fn copy_follows_a_directory_symlink_in_the_destination() {
    let (_d, s) = store();
    let base = layer_with_links(&s, &["d/"], &[("dlink", "d"), ("esc", "/../../d")]);
    let v = ChainView::load(&s, &[base]).unwrap();
    let l = copy_into(&v, &s, &copy_action(&["f.txt"], "/dlink/through.txt"));
    assert!(l.contains_key("d/through.txt"), "{l:?}");
    assert!(!l.keys().any(|k| k.starts_with("dlink")), "{l:?}");
    // A destination that is a symlink to a directory: into the directory.
    let l = copy_into(&v, &s, &copy_action(&["f.txt"], "/dlink"));
    assert!(l.contains_key("d/f.txt"), "{l:?}");
    // An absolute link climbing out stays inside the root.
    let l = copy_into(&v, &s, &copy_action(&["f.txt"], "/esc/x"));
    assert!(l.contains_key("d/x"), "{l:?}");
}
