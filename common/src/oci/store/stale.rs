//! Temp files a dead writer left in `ingest/`. Each writer names its temp
//! file `<pid>-<suffix>.tmp` (`writer.rs`); one whose process no longer
//! exists (a crash, a SIGKILL mid-upload) is removed when a store is
//! opened, so no partial blob lingers. A live pid, or a name that is not
//! ours, is left alone: a reused pid only delays the cleanup.

use std::path::Path;

/// The writer pid a temp file name carries, if it is one of ours.
fn writer_pid(name: &str) -> Option<i32> {
    let stem = name.strip_suffix(".tmp")?;
    let (pid, _) = stem.split_once('-')?;
    pid.parse().ok().filter(|p| *p > 0)
}

/// Whether process `pid` exists (in this pid namespace, as `/proc` shows).
fn alive(pid: i32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Removes the temp files of dead writers in `ingest`; returns how many.
/// Errors are ignored: the files are garbage either way.
pub(super) fn remove_dead_writers(ingest: &Path) -> usize {
    let Ok(dir) = std::fs::read_dir(ingest) else {
        return 0;
    };
    let mut n = 0;
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(writer_pid) else {
            continue;
        };
        if !alive(pid) && std::fs::remove_file(e.path()).is_ok() {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dead_writers_files_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let me = std::process::id();
        for name in [
            format!("{dead}-a.tmp"),
            format!("{me}-b.tmp"),
            "notes.txt".into(),
            "x-1.tmp".into(),
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        assert_eq!(remove_dead_writers(dir.path()), 1);
        assert!(!dir.path().join(format!("{dead}-a.tmp")).exists());
        assert!(dir.path().join(format!("{me}-b.tmp")).exists());
        assert!(dir.path().join("notes.txt").exists());
        assert_eq!(writer_pid("12-ab.tmp"), Some(12));
        assert_eq!(writer_pid("0-ab.tmp"), None);
    }
}
