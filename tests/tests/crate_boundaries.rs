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
