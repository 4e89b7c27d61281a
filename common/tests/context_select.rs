//! Build-context selection on real temporary directories: COPY source rules,
//! `.dockerignore` visibility, `--exclude`, symlinks, digests and bounds.

use imgfarm_common::context::{BuildContext, ContextError, EntryKind, Selection};
use imgfarm_common::dockerfile::ignore::{find_ignore_file, IgnoreMatcher};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, content).unwrap();
}

fn open(root: &Path, ignore: &str) -> BuildContext {
    BuildContext::open(root, IgnoreMatcher::parse(ignore).unwrap()).unwrap()
}

fn sel(ctx: &BuildContext, sources: &[&str], excludes: &[&str]) -> Result<Selection, ContextError> {
    let s: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
    let e: Vec<String> = excludes.iter().map(|s| s.to_string()).collect();
    ctx.select(&s, &e)
}

/// `match-path: entry, entry, ...` lines, directories marked with `/`.
fn listing(selection: &Selection) -> Vec<String> {
    selection
        .matches
        .iter()
        .map(|m| {
            let entries: Vec<String> = m
                .entries
                .iter()
                .map(|e| match e.kind {
                    EntryKind::Dir => format!("{}/", e.path),
                    EntryKind::Symlink => {
                        format!("{}->{}", e.path, e.link_target.as_deref().unwrap_or(""))
                    }
                    _ => e.path.clone(),
                })
                .collect();
            format!("{}: {}", m.path, entries.join(" "))
        })
        .collect()
}

fn sample(root: &Path) {
    write(root, "Dockerfile", "FROM scratch\n");
    write(root, "a.txt", "a");
    write(root, "b.md", "b");
    write(root, "src/main.rs", "fn main() {}");
    write(root, "src/lib/util.rs", "pub fn f() {}");
    write(root, "docs/README.md", "readme");
    write(root, "docs/guide.md", "guide");
    write(root, "node_modules/x/index.js", "x");
}

#[test]
fn directory_source_selects_contents_in_order() {
    let dir = tempfile::tempdir().unwrap();
    sample(dir.path());
    let ctx = open(dir.path(), "");
    let s = sel(&ctx, &["src"], &[]).unwrap();
    assert_eq!(listing(&s), ["src: / lib/ lib/util.rs main.rs"]);
    let file = &s.matches[0].entries[3];
    assert_eq!(file.kind, EntryKind::File);
    assert_eq!(file.size, 12);
    assert_eq!(
        file.digest.as_ref().unwrap().as_str(),
        imgfarm_common::oci::Digest::sha256_of(b"fn main() {}").as_str()
    );
}

#[test]
fn sources_are_cleaned_and_absolute_means_context_root() {
    let dir = tempfile::tempdir().unwrap();
    sample(dir.path());
    let ctx = open(dir.path(), "");
    for source in [
        "src/main.rs",
        "./src/main.rs",
        "/src/main.rs",
        "src/../src/main.rs",
        "src//main.rs",
    ] {
        let s = sel(&ctx, &[source], &[]).unwrap();
        assert_eq!(listing(&s), ["src/main.rs: "], "{source}");
        assert_eq!(s.matches[0].source, source);
    }
    let whole = sel(&ctx, &["."], &[]).unwrap();
    assert_eq!(whole.matches[0].path, "");
    assert!(whole.entry_count() > 8);
}

#[test]
fn dot_dot_source_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    sample(dir.path());
    let ctx = open(dir.path(), "");
    for source in ["../x", "..", "src/../../x"] {
        let err = sel(&ctx, &[source], &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("COPY source outside the build context: {source}")
        );
    }
}

#[test]
fn missing_and_ignored_sources_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    sample(dir.path());
    let ctx = open(dir.path(), "node_modules\n*.md\n");
    for source in ["nope.txt", "node_modules/x/index.js", "b.md", "a.txt/x"] {
        let err = sel(&ctx, &[source], &[]).unwrap_err();
        assert!(
            matches!(err, ContextError::NotFound { .. }),
            "{source}: {err}"
        );
        assert!(
            err.to_string().starts_with(&format!("{source}: not found")),
            "{err}"
        );
    }
}

#[test]
fn wildcards_match_per_segment_and_may_match_nothing_alongside_others() {
    let dir = tempfile::tempdir().unwrap();
    sample(dir.path());
    write(dir.path(), "dir1/f1", "1");
    write(dir.path(), "dir2/f2", "2");
    let ctx = open(dir.path(), "");
    let s = sel(&ctx, &["*.txt", "*.none", "dir*", "src/*/*.rs"], &[]).unwrap();
    assert_eq!(
        listing(&s),
        ["a.txt: ", "dir1: / f1", "dir2: / f2", "src/lib/util.rs: "]
    );

    let err = sel(&ctx, &["*.none", "zz*"], &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no source files were specified: *.none zz* matched nothing in the build context"
    );
    let bad = sel(&ctx, &["a[.txt"], &[]).unwrap_err();
    assert!(matches!(bad, ContextError::BadSource { .. }), "{bad}");
    let missing_base = sel(&ctx, &["nodir/*.txt"], &[]).unwrap_err();
    assert!(
        matches!(missing_base, ContextError::NotFound { .. }),
        "{missing_base}"
    );
}

#[test]
fn ignored_paths_are_invisible_and_exceptions_reinclude() {
    let dir = tempfile::tempdir().unwrap();
    sample(dir.path());
    write(dir.path(), "docs/api/keep.md", "k");
    let ctx = open(dir.path(), "docs\n!docs/README.md\nnode_modules\n");
    let s = sel(&ctx, &["."], &[]).unwrap();
    let all = listing(&s);
    assert_eq!(
        all,
        [": / Dockerfile a.txt b.md docs/ docs/README.md src/ src/lib/ src/lib/util.rs src/main.rs"]
    );
    // The ignored directory exists (it holds a re-included file) and can be named.
    let docs = sel(&ctx, &["docs"], &[]).unwrap();
    assert_eq!(listing(&docs), ["docs: / README.md"]);
    assert!(sel(&ctx, &["docs/guide.md"], &[]).is_err());
}

#[test]
fn double_star_ignores_at_any_depth() {
    let dir = tempfile::tempdir().unwrap();
    sample(dir.path());
    write(dir.path(), "src/lib/deep/x.log", "log");
    write(dir.path(), "top.log", "log");
    write(dir.path(), "src/lib/deep/keep.log", "keep");
    let ctx = open(dir.path(), "**/*.log\n!**/keep.log\n");
    let s = sel(
        &ctx,
        &["."],
        &["node_modules", "docs", "*.md", "Dockerfile"],
    )
    .unwrap();
    assert_eq!(
        listing(&s),
        [": / a.txt src/ src/lib/ src/lib/deep/ src/lib/deep/keep.log src/lib/util.rs src/main.rs"]
    );
}

#[test]
fn ignore_file_precedence_applies_to_the_context() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    sample(root);
    write(root, ".dockerignore", "a.txt\n");
    write(root, "build/app.Dockerfile", "FROM scratch\n");
    write(root, "build/app.Dockerfile.dockerignore", "b.md\n");
    let open_for = |dockerfile: &str| {
        let file = find_ignore_file(root, &root.join(dockerfile)).unwrap();
        BuildContext::open(root, IgnoreMatcher::from_file(&file).unwrap()).unwrap()
    };
    let custom = open_for("build/app.Dockerfile");
    assert!(sel(&custom, &["a.txt"], &[]).is_ok());
    assert!(sel(&custom, &["b.md"], &[]).is_err());
    let default = open_for("Dockerfile");
    assert!(sel(&default, &["a.txt"], &[]).is_err());
    assert!(sel(&default, &["b.md"], &[]).is_ok());
}

#[test]
fn exclude_patterns_apply_below_each_source_like_buildkit() {
    // The layout and expectations of BuildKit's testExcludedFilesOnCopy.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for (path, content) in [
        ("dir1/file-101.png", "2"),
        ("dir1/file-102.txt", "3"),
        ("dir1/file-103.jpeg", "4"),
        ("dir2/file-201.pdf", "6"),
        ("dir2/file-202.jpeg", "7"),
        ("dir2/file-203.png", "8"),
        ("dir3/file-301.mp3", "9"),
        ("dir3/file-302.mpeg", "10"),
    ] {
        write(root, path, content);
    }
    let ctx = open(root, "");
    let images = sel(&ctx, &["dir1", "dir2", "dir3"], &[]).unwrap();
    assert_eq!(images.entry_count(), 11);

    let s = sel(&ctx, &["."], &["*/*.png", "*/*.jpeg"]).unwrap();
    assert_eq!(
        listing(&s),
        [": / dir1/ dir1/file-102.txt dir2/ dir2/file-201.pdf dir3/ dir3/file-301.mp3 dir3/file-302.mpeg"]
    );
    let s = sel(&ctx, &["dir3/"], &["*.mp3"]).unwrap();
    assert_eq!(listing(&s), ["dir3: / file-302.mpeg"]);
    let s = sel(
        &ctx,
        &["dir*"],
        &["*.mp3", "*.jpeg", "*.png", "*.pdf", "*.txt"],
    )
    .unwrap();
    assert_eq!(listing(&s), ["dir1: /", "dir2: /", "dir3: / file-302.mpeg"]);
    let s = sel(&ctx, &["dir*"], &["*"]).unwrap();
    assert_eq!(listing(&s), ["dir1: /", "dir2: /", "dir3: /"]);
    let err = sel(&ctx, &["."], &["[x"]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("COPY --exclude: invalid pattern"),
        "{err}"
    );
}

#[test]
fn excluded_directory_reappears_only_for_reincluded_children() {
    let dir = tempfile::tempdir().unwrap();
    sample(dir.path());
    let ctx = open(dir.path(), "node_modules\nDockerfile\n");
    let s = sel(&ctx, &["."], &["docs", "!docs/guide.md", "src"]).unwrap();
    assert_eq!(listing(&s), [": / a.txt b.md docs/ docs/guide.md"]);
}

#[test]
fn symlinks_inside_a_directory_are_entries_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret", "top secret");
    let root = dir.path();
    write(root, "app/real.txt", "real");
    symlink("real.txt", root.join("app/rel")).unwrap();
    symlink(outside.path().join("secret"), root.join("app/abs")).unwrap();
    symlink(outside.path(), root.join("app/outdir")).unwrap();
    let ctx = open(root, "");
    let s = sel(&ctx, &["app"], &[]).unwrap();
    let abs = format!("abs->{}", outside.path().join("secret").display());
    let outdir = format!("outdir->{}", outside.path().display());
    assert_eq!(
        listing(&s),
        [format!("app: / {abs} {outdir} real.txt rel->real.txt")]
    );
    // Changing the file outside does not change the selection's digest.
    let before = s.digest();
    write(outside.path(), "secret", "changed");
    write(outside.path(), "new", "new");
    assert_eq!(
        open(root, "")
            .select(&["app".into()], &[])
            .unwrap()
            .digest(),
        before
    );
}

#[test]
fn symlinked_sources_are_followed_inside_the_context_only() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret", "top secret");
    let root = dir.path();
    write(root, "data/file.txt", "content");
    symlink("data/file.txt", root.join("link-file")).unwrap();
    symlink("data", root.join("link-dir")).unwrap();
    symlink("../../escape", root.join("data/up")).unwrap();
    symlink(outside.path().join("secret"), root.join("abs")).unwrap();
    symlink("loop2", root.join("loop1")).unwrap();
    symlink("loop1", root.join("loop2")).unwrap();
    let ctx = open(root, "");

    let s = sel(&ctx, &["link-file"], &[]).unwrap();
    assert_eq!(s.matches[0].path, "link-file");
    assert_eq!(s.matches[0].resolved, "data/file.txt");
    assert_eq!(s.matches[0].entries[0].kind, EntryKind::File);
    let s = sel(&ctx, &["link-dir/"], &[]).unwrap();
    assert_eq!(listing(&s), ["link-dir: / file.txt up->../../escape"]);

    let err = sel(&ctx, &["abs"], &[]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("COPY source outside the build context: abs (symlink abs -> "),
        "{err}"
    );
    let err = sel(&ctx, &["data/up"], &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "COPY source outside the build context: data/up (symlink data/up -> ../../escape leads out of the context)"
    );
    let err = sel(&ctx, &["loop1"], &[]).unwrap_err();
    assert!(matches!(err, ContextError::SymlinkLoop { .. }), "{err}");
}

#[test]
fn open_file_never_follows_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "data/file.txt", "content");
    symlink("data", root.join("link-dir")).unwrap();
    symlink("file.txt", root.join("data/link")).unwrap();
    let ctx = open(root, "");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut ctx.open_file("data/file.txt").unwrap(), &mut text).unwrap();
    assert_eq!(text, "content");
    assert!(ctx.open_file("link-dir/file.txt").is_err());
    assert!(ctx.open_file("data/link").is_err());
    assert!(matches!(
        ctx.open_file("../x").unwrap_err(),
        ContextError::Outside { .. }
    ));
}

#[test]
fn digest_is_stable_across_trees_and_ignores_mtime() {
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    sample(one.path());
    std::thread::sleep(std::time::Duration::from_millis(20));
    sample(two.path());
    let d1 = sel(&open(one.path(), ""), &["src", "a.txt"], &[])
        .unwrap()
        .digest();
    let d2 = sel(&open(two.path(), ""), &["src", "a.txt"], &[])
        .unwrap()
        .digest();
    assert_eq!(d1, d2);
    // Same tree, fresh context, touched file: same digest.
    let f = fs::File::options()
        .append(true)
        .open(two.path().join("a.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
    drop(f);
    assert_eq!(
        sel(&open(two.path(), ""), &["src", "a.txt"], &[])
            .unwrap()
            .digest(),
        d1
    );
    // The order of sources is part of the result.
    assert_ne!(
        sel(&open(one.path(), ""), &["a.txt", "src"], &[])
            .unwrap()
            .digest(),
        d1
    );
}

#[test]
fn digest_tracks_exactly_the_selected_entries() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    sample(root);
    let digest = || {
        sel(&open(root, "node_modules\n"), &["src", "docs"], &[])
            .unwrap()
            .digest()
    };
    let base = digest();

    write(root, "a.txt", "unselected change");
    write(root, "node_modules/y.js", "ignored");
    write(root, "other/new.txt", "unselected");
    assert_eq!(digest(), base, "unselected or ignored changes");

    write(root, "src/main.rs", "fn main() { changed() }");
    let changed = digest();
    assert_ne!(changed, base, "content");

    fs::set_permissions(root.join("src/main.rs"), fs::Permissions::from_mode(0o755)).unwrap();
    let chmod = digest();
    assert_ne!(chmod, changed, "mode");

    write(root, "src/added.rs", "");
    let added = digest();
    assert_ne!(added, chmod, "added file");

    fs::rename(root.join("src/added.rs"), root.join("src/renamed.rs")).unwrap();
    assert_ne!(digest(), added, "renamed file");

    fs::create_dir(root.join("src/empty")).unwrap();
    let with_dir = digest();
    fs::set_permissions(root.join("src/empty"), fs::Permissions::from_mode(0o700)).unwrap();
    let dir_mode = digest();
    assert_ne!(dir_mode, with_dir, "directory mode");

    // The selected directory's own mode is not copied, so it does not count.
    fs::set_permissions(root.join("src"), fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(digest(), dir_mode, "source directory's own mode");
}

#[test]
fn files_read_once_per_context_and_hardlinks_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "pkg/a.bin", "same bytes");
    fs::hard_link(root.join("pkg/a.bin"), root.join("pkg/b.bin")).unwrap();
    let ctx = open(root, "");
    let s = sel(&ctx, &["pkg", "pkg/a.bin"], &[]).unwrap();
    let entries = &s.matches[0].entries;
    assert_eq!(entries[1].path, "a.bin");
    assert_eq!(entries[2].hardlink_to.as_deref(), Some("a.bin"));
    assert_eq!(entries[1].digest, entries[2].digest);
    assert_eq!(s.matches[1].entries[0].digest, entries[1].digest);
    // Remove read permission: a cached digest is still served for the same
    // file (identity and timestamps unchanged) within this context.
    fs::set_permissions(root.join("pkg/a.bin"), fs::Permissions::from_mode(0o000)).unwrap();
    let again = sel(&ctx, &["pkg/b.bin"], &[]);
    fs::set_permissions(root.join("pkg/a.bin"), fs::Permissions::from_mode(0o644)).unwrap();
    if nix_is_root() {
        return;
    }
    // chmod changes ctime, so the cache refuses the stale stamp and rereads.
    assert!(again.is_err(), "stale cache entry was used");
}

fn nix_is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

#[test]
fn entry_bound_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..20 {
        write(dir.path(), &format!("many/f{i:02}"), "x");
    }
    let ctx = open(dir.path(), "").with_max_entries(10);
    let err = sel(&ctx, &["many"], &[]).unwrap_err();
    assert!(matches!(err, ContextError::TooManyEntries { limit: 10 }));
    assert!(err.to_string().contains("more than 10 entries"), "{err}");
    let ctx = open(dir.path(), "").with_max_entries(30);
    assert_eq!(sel(&ctx, &["many"], &[]).unwrap().entry_count(), 21);
}

#[test]
fn depth_bound_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let mut path = dir.path().to_path_buf();
    for _ in 0..(imgfarm_common::context::MAX_DEPTH + 2) {
        path.push("d");
    }
    fs::create_dir_all(&path).unwrap();
    let err = sel(&open(dir.path(), ""), &["d"], &[]).unwrap_err();
    assert!(matches!(err, ContextError::TooDeep { .. }), "{err}");
    let deep_source = vec!["d"; imgfarm_common::context::MAX_DEPTH + 2].join("/");
    let err = sel(&open(dir.path(), ""), &[deep_source.as_str()], &[]).unwrap_err();
    assert!(matches!(err, ContextError::TooDeep { .. }), "{err}");
}

#[test]
fn non_utf8_names_are_an_error_unless_ignored() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ok/a", "a");
    fs::write(
        dir.path()
            .join("ok")
            .join(std::ffi::OsStr::from_bytes(b"bad\xff")),
        "x",
    )
    .unwrap();
    let err = sel(&open(dir.path(), ""), &["ok"], &[]).unwrap_err();
    assert!(matches!(err, ContextError::NotUtf8 { .. }), "{err}");
    let s = sel(&open(dir.path(), "ok/bad*\n"), &["ok"], &[]).unwrap();
    assert_eq!(listing(&s), ["ok: / a"]);
}

#[test]
fn special_files_are_skipped_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "s/a", "a");
    let sock = dir.path().join("s/sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let ctx = open(dir.path(), "");
    assert_eq!(listing(&sel(&ctx, &["s"], &[]).unwrap()), ["s: / a"]);
    let err = sel(&ctx, &["s/sock"], &[]).unwrap_err();
    assert!(matches!(err, ContextError::Special { .. }), "{err}");
}

#[test]
fn missing_context_root_is_a_clear_error() {
    let err = BuildContext::open(
        Path::new("/nonexistent/imgfarm-ctx"),
        IgnoreMatcher::empty(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot open build context /nonexistent/imgfarm-ctx"),
        "{err}"
    );
}

#[test]
fn build_context_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<BuildContext>();
    assert_send_sync::<Selection>();
}

const TREE: &[&str] = &[
    "a/x.txt",
    "a/b/y.md",
    "a/b/c/z.txt",
    "d/e.txt",
    "top.md",
    "keep/k.txt",
    "keep/sub/m.md",
];
const PIECES: &[&str] = &[
    "a",
    "a/b",
    "*.md",
    "**/*.txt",
    "!a/b/c/z.txt",
    "!**/*.md",
    "keep",
    "!keep/k.txt",
    "d/*",
    "*",
    "!a/b",
    "**",
    "!keep/sub",
    "a/**/z.txt",
];

/// The walk's verdict for a file: parents' results handed down.
fn walk_excluded(m: &IgnoreMatcher, path: &str) -> bool {
    let mut state = imgfarm_common::dockerfile::ignore::ParentMatches::default();
    let mut prefix = String::new();
    let mut excluded = false;
    for part in path.split('/') {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(part);
        let (e, next) = m.matches_under(&prefix, &state);
        excluded = e;
        state = next;
    }
    excluded
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(48))]

    /// Pruning ignored directories never changes which files are selected:
    /// the selection equals "every file the pattern walk keeps".
    #[test]
    fn pruning_is_exact(picks in proptest::collection::vec(0..PIECES.len(), 1..6)) {
        let dir = tempfile::tempdir().unwrap();
        for path in TREE {
            write(dir.path(), path, path);
        }
        let text: Vec<&str> = picks.iter().map(|&i| PIECES[i]).collect();
        let text = text.join("\n");
        let ignore = IgnoreMatcher::parse(&text).unwrap();
        let mut want: Vec<String> =
            TREE.iter().filter(|p| !walk_excluded(&ignore, p)).map(|p| p.to_string()).collect();
        want.sort();
        let ctx = BuildContext::open(dir.path(), ignore).unwrap();
        let got = match ctx.select(&[".".to_string()], &[]) {
            Ok(s) => {
                let mut files: Vec<String> = s.matches[0]
                    .entries
                    .iter()
                    .filter(|e| e.kind == EntryKind::File)
                    .map(|e| e.path.clone())
                    .collect();
                files.sort();
                files
            }
            Err(e) => panic!("{text:?}: {e}"),
        };
        proptest::prop_assert_eq!(got, want, "patterns {:?}", text);

        // A directory is there when it is not ignored, or when something
        // below it is (fsutil's lazily emitted parents).
        let dirs = ["a", "a/b", "a/b/c", "d", "keep", "keep/sub"];
        let visible = |p: &str| !walk_excluded(ctx.ignore(), p);
        let mut want_dirs: Vec<String> = dirs
            .iter()
            .filter(|d| {
                visible(d)
                    || TREE.iter().chain(dirs.iter()).any(|p| p.starts_with(&format!("{d}/")) && visible(p))
            })
            .map(|d| d.to_string())
            .collect();
        want_dirs.sort();
        let selection = ctx.select(&[".".to_string()], &[]).unwrap();
        let mut got_dirs: Vec<String> = selection.matches[0]
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Dir && !e.path.is_empty())
            .map(|e| e.path.clone())
            .collect();
        got_dirs.sort();
        proptest::prop_assert_eq!(got_dirs, want_dirs, "patterns {:?}", text);
    }
}

#[test]
fn unreadable_directory_is_an_io_error_naming_it() {
    if nix_is_root() {
        eprintln!("skipped: root reads every directory");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "locked/f", "f");
    fs::set_permissions(dir.path().join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
    let result = sel(&open(dir.path(), ""), &["locked"], &[]);
    fs::set_permissions(dir.path().join("locked"), fs::Permissions::from_mode(0o755)).unwrap();
    let err = result.unwrap_err();
    assert!(matches!(err, ContextError::Io { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("reading \"locked\" in the build context"),
        "{err}"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(48))]

    /// `--exclude` keeps a directory when it is not excluded or when
    /// something below it is copied (fsutil's copier), and a file when it
    /// is not excluded.
    #[test]
    fn exclude_selection_matches_the_copier_model(picks in proptest::collection::vec(0..PIECES.len(), 1..5)) {
        let dir = tempfile::tempdir().unwrap();
        for path in TREE {
            write(dir.path(), path, path);
        }
        let excludes: Vec<String> = picks.iter().map(|&i| PIECES[i].to_string()).collect();
        let exclude = IgnoreMatcher::from_patterns(&excludes, "test").unwrap();
        let dirs = ["a", "a/b", "a/b/c", "d", "keep", "keep/sub"];
        let files: Vec<&str> = TREE.iter().copied().filter(|f| !walk_excluded(&exclude, f)).collect();
        let mut want: Vec<String> = files.iter().map(|f| f.to_string()).collect();
        for d in dirs {
            if !walk_excluded(&exclude, d) || files.iter().any(|f| f.starts_with(&format!("{d}/"))) {
                want.push(format!("{d}/"));
            }
        }
        want.sort();
        let ctx = open(dir.path(), "");
        let selection = ctx.select(&[".".to_string()], &excludes).unwrap();
        let mut got: Vec<String> = selection.matches[0]
            .entries
            .iter()
            .filter(|e| !e.path.is_empty())
            .map(|e| if e.kind == EntryKind::Dir { format!("{}/", e.path) } else { e.path.clone() })
            .collect();
        got.sort();
        proptest::prop_assert_eq!(got, want, "excludes {:?}", excludes);
    }
}

#[test]
fn rooted_mode_resolves_links_like_a_chroot_for_stage_filesystems() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "bin/busybox", "busybox");
    write(root, "etc/os-release", "ID=test");
    symlink("/bin/busybox", root.join("bin/sh")).unwrap();
    symlink("../../../../etc", root.join("bin/etc-up")).unwrap();
    let stage = BuildContext::open(root, IgnoreMatcher::empty())
        .unwrap()
        .with_rooted_symlinks();
    let s = sel(&stage, &["/bin/sh"], &[]).unwrap();
    assert_eq!(s.matches[0].resolved, "bin/busybox");
    let s = sel(
        &stage,
        &["bin/etc-up/os-release", "../../etc/os-release"],
        &[],
    )
    .unwrap();
    assert_eq!(s.matches[0].resolved, "etc/os-release");
    assert_eq!(s.matches[1].resolved, "etc/os-release");
    // The same tree as a build context refuses both.
    let context = open(root, "");
    assert!(matches!(
        sel(&context, &["bin/sh"], &[]).unwrap_err(),
        ContextError::Outside { .. }
    ));
    assert!(matches!(
        sel(&context, &["bin/etc-up/os-release"], &[]).unwrap_err(),
        ContextError::Outside { .. }
    ));
}
