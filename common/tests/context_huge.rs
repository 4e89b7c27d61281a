//! A context of very many files (issue 15, hostile input): the walk and
//! digest of `COPY . /` over 10^5 files stays within time and memory bounds
//! (run in CI), and 10^6 files are refused at the entry bound by default,
//! or walked when the bound is raised (`#[ignore]`d: minutes of disk
//! churn; figures in the test's output). Each test prints seconds and the
//! process's peak RSS; run one at a time for a clean peak:
//! `cargo test -p imgfarm-common --test context_huge -- --ignored --nocapture`.

use imgfarm_common::context::{BuildContext, ContextError, MAX_ENTRIES};
use imgfarm_common::dockerfile::ignore::IgnoreMatcher;
use std::path::Path;
use std::time::{Duration, Instant};

/// `files` empty files in directories of 1000 (empty files need inodes, no
/// data blocks, so the test stays light on disk).
fn tree(root: &Path, files: usize) {
    for i in 0..files {
        let dir = root.join(format!("d{:04}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir(&dir).unwrap();
        }
        std::fs::File::create(dir.join(format!("f{:04}", i % 1000))).unwrap();
    }
}

/// (current RSS, peak RSS) of this process in MiB, from /proc/self/status.
fn rss_mib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Walks and digests the whole context; returns (entries, time).
fn walk(root: &Path, max_entries: usize) -> Result<(usize, Duration), ContextError> {
    let start = Instant::now();
    let ctx = BuildContext::open(root, IgnoreMatcher::empty())?.with_max_entries(max_entries);
    let selection = ctx.select(&[".".to_string()], &[])?;
    let _digest = selection.digest();
    Ok((selection.entry_count(), start.elapsed()))
}

#[test]
fn context_of_100k_files_is_walked_in_bounded_time_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    tree(dir.path(), 100_000);
    let made = t.elapsed();
    let (rss_before, _) = rss_mib();
    let (entries, took) = walk(dir.path(), MAX_ENTRIES).unwrap();
    let (rss_after, peak) = rss_mib();
    eprintln!(
        "10^5 files: created in {made:.1?}; walk+digest {entries} entries in {took:.2?}; \
         RSS {rss_before} -> {rss_after} MiB, peak {peak} MiB"
    );
    assert_eq!(entries, 100_000 + 100 + 1);
    assert!(took < Duration::from_secs(120), "walk took {took:?}");
    assert!(peak < 1024, "peak RSS {peak} MiB");
}

#[test]
#[ignore = "10^6 files: about a minute to create and several to walk; figures in the output"]
fn context_of_a_million_files_is_refused_at_the_bound_or_walked_when_raised() {
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    tree(dir.path(), 1_000_000);
    let made = t.elapsed();
    // Default bound: 10^6 files plus their directories is over MAX_ENTRIES.
    let t = Instant::now();
    let err = walk(dir.path(), MAX_ENTRIES).unwrap_err();
    let refused = t.elapsed();
    assert!(
        matches!(err, ContextError::TooManyEntries { limit: MAX_ENTRIES }),
        "{err}"
    );
    let (_, peak_refused) = rss_mib();
    // Raised bound: the whole walk and digest.
    let (entries, took) = walk(dir.path(), 2 * MAX_ENTRIES).unwrap();
    let (_, peak) = rss_mib();
    eprintln!(
        "10^6 files: created in {made:.1?}; refused at the default bound after {refused:.2?} \
         (peak RSS {peak_refused} MiB): {err}; walk+digest with the bound raised: {entries} \
         entries in {took:.2?}, peak RSS {peak} MiB"
    );
    assert_eq!(entries, 1_000_000 + 1000 + 1);
}
