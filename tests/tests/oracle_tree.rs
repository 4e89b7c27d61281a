//! The oracle's own layer applier (tests/oracle_support/tree.rs) checked on hand-made layers:
//! whiteouts, opaque directories, hardlink groups, type replacement.

mod build_support;
mod oracle_support;

use oracle_support::tree::{apply_layer, diff, Kind, Tree};
use std::path::Path;

fn layer(
    dir: &Path,
    name: &str,
    entries: &[(&str, Option<&str>, Option<&str>)],
) -> std::path::PathBuf {
    // (path, Some(content) for a file / None for a dir, Some(target) for a hardlink)
    let p = dir.join(name);
    let mut b = tar::Builder::new(std::fs::File::create(&p).unwrap());
    for (path, content, link) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        if let Some(t) = link {
            h.set_entry_type(tar::EntryType::Link);
            h.set_size(0);
            b.append_link(&mut h, path, t).unwrap();
        } else if let Some(c) = content {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(c.len() as u64);
            b.append_data(&mut h, path, c.as_bytes()).unwrap();
        } else {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, path, &[][..]).unwrap();
        }
    }
    b.finish().unwrap();
    p
}

#[test]
fn whiteouts_opaque_dirs_and_hardlinks_apply_in_order() {
    let d = tempfile::tempdir().unwrap();
    let l1 = layer(
        d.path(),
        "1.tar",
        &[
            ("a/", None, None),
            ("a/x", Some("x"), None),
            ("a/y", Some("y"), None),
            ("b/", None, None),
            ("b/z", Some("z"), None),
            ("c", Some("c"), None),
        ],
    );
    let l2 = layer(
        d.path(),
        "2.tar",
        &[
            ("a/.wh.x", Some(""), None),
            ("b/.wh..wh..opq", Some(""), None),
            ("b/new", Some("n"), None),
            ("b/hl", None, Some("b/new")),
            ("c/", None, None),
        ],
    );
    let mut t = Tree::new();
    apply_layer(&mut t, &l1).unwrap();
    apply_layer(&mut t, &l2).unwrap();
    let keys: Vec<&str> = t.keys().map(String::as_str).collect();
    assert_eq!(keys, ["a", "a/y", "b", "b/hl", "b/new", "c"]);
    assert_eq!(t["c"].kind, Kind::Dir);
    assert_eq!(t["b/hl"].kind, t["b/new"].kind);
    assert_eq!(t["b/hl"].links, ["b/new"]);
    let mut other = t.clone();
    other.remove("a/y");
    other.get_mut("c").unwrap().uid = 5;
    let d = diff(&t, &other);
    assert_eq!(d.len(), 2, "{d:#?}");
    assert!(d[0].contains("only in imgfarm:  /a/y"), "{d:#?}");
    assert!(
        d[1].contains("owner 0:0") && d[1].contains("owner 5:0"),
        "{d:#?}"
    );
}

#[test]
fn pax_xattrs_are_read_and_compared() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("x.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&p).unwrap());
    // security.capability v2 for cap_net_raw+ep, as setcap writes it.
    let cap: &[u8] = &[
        0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    b.append_pax_extensions([("SCHILY.xattr.security.capability", cap)])
        .unwrap();
    for path in ["usr/bin/raw", "usr/bin/plain"] {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(2);
        b.append_data(&mut h, path, &b"hi"[..]).unwrap();
    }
    b.finish().unwrap();
    drop(b);
    let mut t = Tree::new();
    apply_layer(&mut t, &p).unwrap();
    assert_eq!(t["usr/bin/raw"].xattrs["security.capability"], cap);
    assert!(
        t["usr/bin/plain"].xattrs.is_empty(),
        "records apply to one entry"
    );
    let mut other = t.clone();
    other
        .get_mut("usr/bin/raw")
        .unwrap()
        .xattrs
        .get_mut("security.capability")
        .unwrap()[5] = 0x30;
    let d = diff(&t, &other);
    assert_eq!(d.len(), 1, "{d:#?}");
    assert!(
        d[0].contains("xattr security.capability=00000002002000"),
        "{d:#?}"
    );
}
