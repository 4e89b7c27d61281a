//! `imgfarm debug parse FILE` prints BuildKit's dump byte for byte.

use assert_cmd::Command;
use std::fs;
use std::path::Path;

fn corpus() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../common/tests/conformance/buildkit-parser")
}

fn imgfarm() -> Command {
    Command::cargo_bin("imgfarm").expect("binary")
}

#[test]
fn prints_the_dump_of_every_positive_case() {
    let mut dirs: Vec<_> = fs::read_dir(corpus().join("testfiles"))
        .expect("corpus")
        .map(|e| e.expect("entry").path())
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 33);
    for d in dirs {
        let expected = fs::read(d.join("result")).expect("result");
        let out = imgfarm()
            .args(["debug", "parse"])
            .arg(d.join("Dockerfile"))
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{}: {}",
            d.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, expected, "{}", d.display());
    }
}

#[test]
fn reports_errors_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("Dockerfile.bad");
    fs::write(&file, "FROM a\nENV PATH\n").expect("write");
    let out = imgfarm()
        .args(["debug", "parse"])
        .arg(&file)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Dockerfile.bad:2: ENV must have two arguments"),
        "{err}"
    );

    let out = imgfarm()
        .args(["debug", "parse"])
        .arg(dir.path().join("missing"))
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read Dockerfile"));
}

#[test]
fn warnings_go_to_stderr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("Dockerfile");
    fs::write(&file, "FROM a\nRUN a \\\n\n  b\n").expect("write");
    let out = imgfarm()
        .args(["debug", "parse"])
        .arg(&file)
        .output()
        .expect("runs");
    assert!(out.status.success());
    assert_eq!(out.stdout, b"(from \"a\")\n(run \"a   b\")\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains(":4: Empty continuation line"));
}
