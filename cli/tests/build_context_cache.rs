//! `imgfarm build` keeps the context's file digests in the state
//! (`cache/context/`), and a cache it cannot write is a warning, never a
//! failed build.

use assert_cmd::Command;
use std::path::Path;
use std::time::Duration;

fn build(state: &Path, ctx: &Path) -> std::process::Output {
    Command::cargo_bin("imgfarm")
        .expect("the imgfarm binary is built")
        .arg("--state")
        .arg(state)
        .args(["build", "--progress", "plain"])
        .arg(ctx)
        .timeout(Duration::from_secs(120))
        .output()
        .expect("runs")
}

fn cache_files(state: &Path) -> Vec<std::path::PathBuf> {
    let Ok(dir) = std::fs::read_dir(state.join("cache/context")) else {
        return Vec::new();
    };
    dir.map(|e| e.unwrap().path()).collect()
}

#[test]
fn digests_persist_and_an_unwritable_cache_only_warns() {
    let state = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nCOPY . /ctx\n").unwrap();
    for i in 0..20 {
        std::fs::write(ctx.path().join(format!("f{i}")), format!("{i}\n")).unwrap();
    }
    // Files changed in the last two seconds are not persisted (a write in
    // the same timestamp tick could go unseen); let these age.
    std::thread::sleep(Duration::from_millis(2100));

    let out = build(state.path(), ctx.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files = cache_files(state.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let first = std::fs::metadata(&files[0]).unwrap().modified().unwrap();

    // Unchanged context: the cache file is not rewritten.
    let out = build(state.path(), ctx.path());
    assert!(out.status.success());
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().modified().unwrap(),
        first
    );

    // The cache directory's place is taken; a removed file makes the cache
    // change. The build still succeeds, with a warning naming the file.
    std::fs::remove_dir_all(state.path().join("cache/context")).unwrap();
    std::fs::write(state.path().join("cache/context"), "in the way").unwrap();
    std::fs::remove_file(ctx.path().join("f3")).unwrap();
    let out = build(state.path(), ctx.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("WARNING: writing the build context digest cache")
            && err.contains("the next build reads the whole context again"),
        "{err}"
    );
}
