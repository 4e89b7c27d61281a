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

use oracle_support::tree::{diff_with, Kind, Node, Tree};
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
    for p in TIMESTAMPED {
        assert!(!p.starts_with('/'), "{p}: paths have no leading /");
    }
    assert!(timestamped("var/log/dpkg.log"));
    assert!(timestamped("var/cache/apt/pkgcache.bin"));
    for p in [
        "var/lib/dpkg/status",
        "etc/passwd",
        "etc/shadow",
        "var/log/dpkg.log.1",
        "var/cache/apt/archives/jq_1.6-2.1_amd64.deb",
        "usr/bin/jq",
    ] {
        assert!(!timestamped(p), "{p} must be compared in full");
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
