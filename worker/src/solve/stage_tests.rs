//! `COPY --from` through a partial stage unpack gives the same layer as
//! through the whole stage: one file out of a busybox-like stage, a
//! wildcard, sources under a symlinked directory and a hardlink leaving
//! the filter (whole unpack), and a source whose parent a whiteout deleted.

use super::copy::{copy_layer, SourceFs};
use super::layers::LayerWriter;
use super::result::LayerRef;
use super::stage::{unpack_for_sources, unpack_prefixes};
use super::view::ChainView;
use imgfarm_common::context::BuildContext;
use imgfarm_common::graph::op::{CopyAction, CopySource};
use imgfarm_common::oci::layer::open_layer;
use imgfarm_common::oci::store::ContentStore;
use std::collections::BTreeMap;
use std::io::Read;
use tar::EntryType;

const D: EntryType = EntryType::Directory;
const F: EntryType = EntryType::Regular;
const S: EntryType = EntryType::Symlink;

fn layer(s: &ContentStore, entries: &[(String, EntryType, u32, u64, String)]) -> LayerRef {
    let mut w = LayerWriter::new(s).unwrap();
    for (p, kind, mode, uid, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(*mode);
        h.set_uid(*uid);
        h.set_gid(*uid);
        h.set_mtime(1_600_000_000);
        if *kind == S || *kind == EntryType::Link {
            h.set_size(0);
            w.append_link(&mut h, p, data).unwrap();
        } else {
            h.set_size(data.len() as u64);
            w.append(&mut h, p, data.as_bytes()).unwrap();
        }
    }
    w.finish().unwrap()
}

fn e(
    p: &str,
    kind: EntryType,
    mode: u32,
    uid: u64,
    data: &str,
) -> (String, EntryType, u32, u64, String) {
    (p.into(), kind, mode, uid, data.into())
}

/// A stage: busybox with 400 applet links, a real dir behind a symlink,
/// and a directory deleted by a whiteout and made again.
fn stage(s: &ContentStore) -> Vec<LayerRef> {
    let mut l1 = vec![
        e("bin/", D, 0o755, 0, ""),
        e("bin/busybox", F, 0o755, 0, "bb"),
        e("s1/", D, 0o750, 7, ""),
        e("s1/file", F, 0o640, 7, "one"),
        e("data/", D, 0o755, 0, ""),
        e("data/a.txt", F, 0o644, 1, "a"),
        e("data/b.txt", F, 0o644, 2, "b"),
        e("data/c.bin", F, 0o644, 3, "c"),
        e("real/", D, 0o755, 0, ""),
        e("real/x", F, 0o644, 0, "x"),
        e("link", S, 0o777, 0, "/real"),
        e("gone/", D, 0o755, 0, ""),
        e("gone/f", F, 0o644, 0, "old"),
    ];
    for i in 0..400 {
        l1.push(e(&format!("bin/applet{i}"), S, 0o777, 0, "busybox"));
    }
    let l2 = vec![
        e(".wh.gone", F, 0o644, 0, ""),
        e("gone/", D, 0o700, 5, ""),
        e("gone/new", F, 0o600, 5, "new"),
        e("hard/", D, 0o755, 0, ""),
        e("hard/bb", EntryType::Link, 0o755, 0, "bin/busybox"),
    ];
    vec![layer(s, &l1), layer(s, &l2)]
}

/// Path → (type, mode, uid, gid, content or link target) of a layer.
type Listing = BTreeMap<String, (u8, u32, u64, u64, String)>;

fn listing(s: &ContentStore, l: &LayerRef) -> Listing {
    let mut out = BTreeMap::new();
    let mut ar = tar::Archive::new(open_layer(s, l).unwrap());
    for en in ar.entries().unwrap() {
        let mut en = en.unwrap();
        let h = en.header().clone();
        let mut body = String::new();
        en.read_to_string(&mut body).unwrap();
        if let Ok(Some(t)) = en.link_name() {
            body = t.to_string_lossy().into_owned();
        }
        out.insert(
            String::from_utf8_lossy(&en.path_bytes()).into_owned(),
            (
                h.entry_type().as_byte(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                body,
            ),
        );
    }
    out
}

fn action(sources: &[&str], dest: &str) -> CopyAction {
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

fn copy_from(
    s: &ContentStore,
    dir: &std::path::Path,
    sview: &ChainView,
    a: &CopyAction,
) -> Result<Listing, String> {
    let ctx = BuildContext::open(dir, Default::default())
        .unwrap()
        .with_rooted_symlinks();
    let paths: Vec<String> = a.sources.iter().map(|x| x.path.clone()).collect();
    let sel = ctx.select(&paths, &[]).map_err(|e| e.to_string())?;
    let dest = ChainView::default();
    let fs = SourceFs {
        ctx: &ctx,
        owners: Some(sview),
    };
    let l = copy_layer(s, &dest, a, &[(fs, sel.matches)]).map_err(|e| e.to_string())?;
    Ok(listing(s, &l))
}

fn count_entries(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for en in std::fs::read_dir(dir).unwrap() {
        let en = en.unwrap();
        n += 1;
        if en.file_type().unwrap().is_dir() {
            n += count_entries(&en.path());
        }
    }
    n
}

/// Copies `sources` from the stage through the partial and the whole
/// unpack; asserts equal results and returns them with the partial
/// unpack's entry count.
fn both_ways(sources: &[&str]) -> (Result<Listing, String>, usize) {
    let d = tempfile::tempdir().unwrap();
    let s = ContentStore::open(d.path()).unwrap();
    let chain = stage(&s);
    let sview = ChainView::load(&s, &chain).unwrap();
    let a = action(sources, "/out/");
    let paths: Vec<String> = sources.iter().map(|p| p.to_string()).collect();
    let part = unpack_for_sources(&s, &chain, &sview, &paths).unwrap();
    let whole = unpack_for_sources(&s, &chain, &sview, &["/".into()]).unwrap();
    let got = copy_from(&s, part.path(), &sview, &a);
    let want = copy_from(&s, whole.path(), &sview, &a);
    assert_eq!(got, want, "sources {sources:?}");
    (got, count_entries(part.path()))
}

#[test]
fn one_file_from_a_stage_with_many_symlinks_unpacks_only_its_path() {
    let (got, n) = both_ways(&["/s1/file"]);
    let got = got.unwrap();
    assert_eq!(got["out/file"].4, "one");
    assert_eq!((got["out/file"].1, got["out/file"].2), (0o640, 7));
    assert_eq!(n, 2, "s1 and s1/file only");
    let (got, n) = both_ways(&["/s1"]);
    assert!(got.unwrap().contains_key("out/file"));
    assert_eq!(n, 2);
}

#[test]
fn a_wildcard_source_unpacks_its_static_prefix() {
    let (got, n) = both_ways(&["/data/*.txt"]);
    let got = got.unwrap();
    assert!(got.contains_key("out/a.txt") && got.contains_key("out/b.txt"));
    assert!(!got.contains_key("out/c.bin"), "{got:?}");
    assert_eq!(n, 4, "data and its three files");
    // A wildcard at the top needs the whole stage.
    let (got, n) = both_ways(&["/s*/file"]);
    assert!(got.unwrap().contains_key("out/file"));
    assert!(n > 400);
}

#[test]
fn a_source_through_a_symlinked_dir_unpacks_the_whole_stage() {
    let (got, n) = both_ways(&["/link/x"]);
    assert_eq!(got.unwrap()["out/x"].4, "x");
    assert!(n > 400, "{n}");
    let (got, n) = both_ways(&["/link"]);
    assert!(got.unwrap().contains_key("out/x"));
    assert!(n > 400, "{n}");
}

#[test]
fn a_hardlink_to_a_path_outside_the_sources_unpacks_the_whole_stage() {
    let (got, n) = both_ways(&["/hard/bb"]);
    assert_eq!(got.unwrap()["out/bb"].4, "bb");
    assert!(n > 400, "{n}");
}

#[test]
fn a_source_whose_parent_a_whiteout_deleted() {
    let (got, n) = both_ways(&["/gone/f"]);
    let err = got.unwrap_err();
    assert!(err.contains("not found"), "{err}");
    assert_eq!(n, 1, "only the recreated gone/");
    let (got, _) = both_ways(&["/gone/new"]);
    let got = got.unwrap();
    assert_eq!(got["out/new"], (b'0', 0o600, 5, 5, "new".into()));
}

#[test]
fn prefixes_stop_at_wildcards_and_refuse_symlinks_and_the_root() {
    let d = tempfile::tempdir().unwrap();
    let s = ContentStore::open(d.path()).unwrap();
    let chain = stage(&s);
    let v = ChainView::load(&s, &chain).unwrap();
    let p = |src: &[&str]| {
        let src: Vec<String> = src.iter().map(|x| x.to_string()).collect();
        unpack_prefixes(&src, &v)
    };
    assert_eq!(
        p(&["/s1/file", "./data/*.txt"]),
        Some(vec!["s1/file".into(), "data".into()])
    );
    assert_eq!(p(&["/data/[ab].txt"]), Some(vec!["data".into()]));
    assert_eq!(p(&["/"]), None);
    assert_eq!(p(&["."]), None);
    assert_eq!(p(&["*"]), None);
    assert_eq!(p(&["/s1/../data"]), None);
    assert_eq!(p(&["/link/x"]), None);
    // A wildcard whose matches could be followed links.
    assert_eq!(p(&["/bin/app*"]), None);
    assert_eq!(p(&["/bin/busybox"]), Some(vec!["bin/busybox".into()]));
}

#[test]
fn layers_with_nothing_at_under_or_above_the_prefixes_are_skipped() {
    use super::view::layer_touches;
    let d = tempfile::tempdir().unwrap();
    let s = ContentStore::open(d.path()).unwrap();
    let chain = stage(&s);
    let touches = |p: &str| -> Vec<bool> {
        chain
            .iter()
            .map(|l| layer_touches(&s, l, &[p.to_string()]).unwrap())
            .collect()
    };
    // s1 is only in the first layer; gone/new only in the second, whose
    // whiteout of `gone` also concerns the first layer's `gone`.
    assert_eq!(touches("s1/file"), [true, false]);
    assert_eq!(touches("gone/new"), [true, true]);
    // An entry above the prefix (`hard` over `hard/bb`) counts; elsewhere nothing.
    assert_eq!(touches("hard/bb/x"), [false, true]);
    assert_eq!(touches("nowhere/x"), [false, false]);
    // The skip changes nothing: one file out of the second layer alone.
    let (got, _) = both_ways(&["/gone/new"]);
    assert_eq!(got.unwrap()["out/new"].4, "new");
}

#[test]
fn one_layer_holds_a_source_only_when_nothing_else_touches_it() {
    use super::layer_index::sole_holder;
    let d = tempfile::tempdir().unwrap();
    let s = ContentStore::open(d.path()).unwrap();
    let chain = stage(&s);
    let holder = |p: &str| sole_holder(&s, &chain, &[p.to_string()]).unwrap();
    assert_eq!(holder("s1"), Some(0), "only the first layer has s1");
    assert_eq!(holder("hard"), Some(1), "only the second layer has hard");
    // The second layer whites out gone (and refills it): its snapshot holds whiteouts.
    assert_eq!(holder("gone/new"), None);
    assert_eq!(holder("gone"), None);
    // Entries of both layers under the root.
    assert_eq!(holder(""), None);
    assert_eq!(
        holder("nowhere"),
        None,
        "no layer holds it: nothing to read in place"
    );
}
