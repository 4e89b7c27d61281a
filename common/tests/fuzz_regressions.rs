//! Replays every minimized fuzz input under `fuzz/regressions/<target>/`
//! through the same check the cargo-fuzz target runs (`fuzz/src/checks.rs`,
//! included here), so CI keeps past crashers fixed without nightly or
//! libFuzzer. Add a crasher by copying `fuzz/artifacts/<target>/crash-*`
//! into `fuzz/regressions/<target>/` (see `fuzz/README.md`).

#[path = "../../fuzz/src/checks.rs"]
mod checks;

use std::path::Path;

#[test]
fn every_regression_input_passes_its_target() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    let mut replayed = 0;
    for (target, check) in checks::TARGETS {
        let sub = dir.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&sub)
            .unwrap_or_else(|e| panic!("{}: {e}", sub.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{}: no inputs", sub.display());
        for file in files {
            let data = std::fs::read(&file).unwrap();
            eprintln!("{target}: {}", file.display());
            check(&data);
            replayed += 1;
        }
    }
    assert!(replayed >= checks::TARGETS.len(), "replayed {replayed}");
}
