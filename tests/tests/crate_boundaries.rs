//! The coordinator and the worker are siblings over `common` and `transport` (DESIGN.md):
//! neither may name the other among its dependencies, dev-dependencies included, so a
//! worker build never links the service and a service edit never rebuilds the worker.

use std::path::Path;

fn manifest(krate: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("Cargo.toml");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn coordinator_and_worker_never_depend_on_each_other() {
    for (krate, other) in [
        ("worker", "imgfarm-coordinator"),
        ("coordinator", "imgfarm-worker"),
    ] {
        let text = manifest(krate);
        let named: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with(other))
            .collect();
        assert!(
            named.is_empty(),
            "{krate}/Cargo.toml depends on {other}: {named:?}"
        );
    }
    assert!(manifest("transport")
        .lines()
        .all(|l| !l.starts_with("imgfarm-coordinator") && !l.starts_with("imgfarm-worker")));
}

/// Issue 14, "done when": the worker's whole normal dependency closure (not
/// only its manifest) holds neither SQLite nor the coordinator, as
/// `cargo tree -p imgfarm-worker -e normal` shows it.
#[test]
fn the_worker_links_neither_sqlite_nor_the_coordinator() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-p",
            "imgfarm-worker",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .expect("running cargo tree");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && tree.contains("imgfarm-worker"),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for banned in ["rusqlite", "imgfarm-coordinator"] {
        assert!(
            !tree.lines().any(|l| l.starts_with(banned)),
            "the worker links {banned}:\n{tree}"
        );
    }
}
