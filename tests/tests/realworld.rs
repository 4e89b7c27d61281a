//! The real-world corpus (`tests/realworld/`): Dockerfiles people write on a Debian 12 base
//! (apt, useradd, ownership and modes, setcap, cache mounts, multi-stage gcc, pip, dpkg, a
//! 20,000-file context, arm64 under emulation, SIGPIPE pipelines), each built with imgfarm
//! (rootless, and as root for the ownership cases) and with BuildKit, compared file by file.
//! See `realworld_support` for the case table and the one written exception (`TIMESTAMPED`).
//!
//! Needs root (dockerd), docker.io, docker-registry, skopeo, the farm user, and the Debian base
//! and apt repo fixtures; elsewhere it prints `SKIPPED: ...` (and fails when `CI` is set).

mod build_support;
mod oracle_support;
mod realworld_support;

use oracle_support::tree::{diff_with, Kind, MayDiffer, Node, Tree};
use realworld_support::{glob_match, timestamped, TIMESTAMPED};

#[test]
fn realworld_corpus() {
    realworld_support::run_corpus("realworld_corpus");
}

#[test]
fn timestamp_rule_names_only_its_files() {
    assert!(glob_match(
        "var/cache/debconf/*-old",
        "var/cache/debconf/config.dat-old"
    ));
    assert!(!glob_match(
        "var/cache/debconf/*-old",
        "var/cache/debconf/x/y-old"
    ));
    assert!(!glob_match(
        "var/cache/debconf/*-old",
        "var/cache/debconf/config.dat"
    ));
    assert!(glob_match("a*b*c", "aXbYc"));
    assert!(!glob_match("a*", "ab/c"));
    for (p, _) in TIMESTAMPED {
        assert!(!p.starts_with('/'), "{p}: paths have no leading /");
    }
    assert_eq!(timestamped("var/log/dpkg.log"), MayDiffer::Content);
    assert_eq!(
        timestamped("var/cache/apt/pkgcache.bin"),
        MayDiffer::Content
    );
    assert_eq!(
        timestamped("usr/local/lib/python3.11/dist-packages/m/__pycache__/x.cpython-311.pyc"),
        MayDiffer::PycSourceMtime
    );
    for p in [
        "var/lib/dpkg/status",
        "etc/passwd",
        "etc/shadow",
        "var/log/dpkg.log.1",
        "var/cache/apt/archives/jq_1.6-2.1_amd64.deb",
        "usr/bin/jq",
        "usr/lib/python3.11/__pycache__/os.cpython-311.pyc",
    ] {
        assert_eq!(
            timestamped(p),
            MayDiffer::Nothing,
            "{p} must be compared in full"
        );
    }
}

fn file(hash: &str, mode: u32, uid: u64) -> Node {
    Node {
        kind: Kind::File(hash.repeat(64)),
        mode,
        uid,
        gid: 0,
        links: Vec::new(),
        xattrs: Default::default(),
        pyc_unstamped: None,
        text: None,
    }
}

#[test]
fn timestamped_files_may_differ_in_content_only() {
    let mut a = Tree::new();
    let mut b = Tree::new();
    a.insert("var/log/dpkg.log".into(), file("a", 0o644, 0));
    b.insert("var/log/dpkg.log".into(), file("b", 0o644, 0));
    assert!(diff_with(&a, &b, &timestamped).is_empty());
    // Mode and owner still count for a timestamped file...
    b.insert("var/log/dpkg.log".into(), file("b", 0o600, 0));
    assert_eq!(diff_with(&a, &b, &timestamped).len(), 1);
    b.insert("var/log/dpkg.log".into(), file("b", 0o644, 42));
    assert_eq!(diff_with(&a, &b, &timestamped).len(), 1);
    // ... and so do xattrs.
    let mut x = file("b", 0o644, 0);
    x.xattrs.insert("user.k".into(), b"v".to_vec());
    b.insert("var/log/dpkg.log".into(), x);
    assert_eq!(diff_with(&a, &b, &timestamped).len(), 1);
    // Any other file's content counts.
    a.insert("etc/passwd".into(), file("a", 0o644, 0));
    b.insert("etc/passwd".into(), file("b", 0o644, 0));
    b.insert("var/log/dpkg.log".into(), file("b", 0o644, 0));
    let d = diff_with(&a, &b, &timestamped);
    assert_eq!(d.len(), 1);
    assert!(d[0].contains("/etc/passwd"), "{d:?}");
}

#[test]
fn pyc_rule_lets_only_the_source_mtime_differ() {
    let pyc = "usr/local/lib/python3.11/dist-packages/m/__pycache__/m.cpython-311.pyc";
    let node = |hash: &str, unstamped: Option<&str>| Node {
        pyc_unstamped: unstamped.map(|u| u.repeat(64)),
        ..file(hash, 0o644, 0)
    };
    let mut a = Tree::new();
    let mut b = Tree::new();
    a.insert(pyc.into(), node("a", Some("u")));
    b.insert(pyc.into(), node("b", Some("u")));
    assert!(diff_with(&a, &b, &timestamped).is_empty());
    b.insert(pyc.into(), node("b", Some("v")));
    assert_eq!(diff_with(&a, &b, &timestamped).len(), 1, "the code differs");
    b.insert(pyc.into(), node("b", None));
    assert_eq!(
        diff_with(&a, &b, &timestamped).len(),
        1,
        "not a timestamped .pyc"
    );
}

#[test]
fn first_error_shows_the_commands_complaint() {
    let log = "imgfarm build failed (exit status: 1):\n#1 CACHED\n\n#2 [2/4] RUN chown 1000 /x\n\
               #2 0.030 chown: changing ownership of '/x': Invalid argument\n\
               #2 ERROR: process \"/bin/sh -c chown 1000 /x\" did not complete successfully\n";
    assert_eq!(
        realworld_support::first_error(log),
        "imgfarm build failed (exit status: 1): #2 0.030 chown: changing ownership of '/x': \
         Invalid argument | #2 ERROR: process \"/bin/sh -c chown 1000 /x\" did not complete \
         successfully"
    );
    let log = "imgfarm build failed (exit status: 1):\n#2 [2/4] RUN x\n#2 ERROR: layer: open /u: \
               Permission denied (os error 13)\n";
    assert_eq!(
        realworld_support::first_error(log),
        "imgfarm build failed (exit status: 1): #2 ERROR: layer: open /u: Permission denied (os \
         error 13)"
    );
}

#[test]
fn every_case_states_what_it_expects() {
    use realworld_support::{CASES, EXPECT};
    for (case, path, _) in EXPECT {
        assert!(CASES.iter().any(|c| c.name == *case), "EXPECT names {case}");
        assert!(!path.starts_with('/'), "{path}: no leading /");
    }
    for c in CASES {
        assert!(
            EXPECT.iter().any(|(case, _, _)| *case == c.name),
            "{} has no EXPECT entry: a pass could be vacuous",
            c.name
        );
    }
}
