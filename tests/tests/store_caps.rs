//! Bounded stores (issue 15, deliverable 1): the coordinator's content
//! store stays within `--store-max` and a worker's blobs and snapshots
//! within `--cache-max`, plus what running builds need; a build running
//! while the coordinator collects succeeds; builds whose results were
//! collected run again and succeed; `imgfarm prune --keep-storage` keeps
//! the newest results, which still build from cache.
//!
//! Two forms run in CI: 6 builds of a 4 MB layer under 10 MB caps (with
//! collected results built again), and the issue's own, 20 builds of 20 MB
//! under 100 MB (`twenty_builds_of_twenty_megabytes_stay_within_the_caps`,
//! about 30 s here). The uncapped comparison is `#[ignore]`d.

mod farm_support;

use farm_support::{Farm, Proc};
use std::path::Path;
use std::time::{Duration, Instant};

/// Apparent bytes under `dir` (hard links once), as `du -sb` counts them.
fn du(dir: &Path) -> u64 {
    if !dir.exists() {
        return 0;
    }
    let out = std::process::Command::new("du")
        .arg("-sb")
        .arg(dir)
        .output()
        .expect("du");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The coordinator's blobs.
fn coordinator_bytes(farm: &Farm) -> u64 {
    du(&farm.coordinator_state.join("blobs"))
}

/// A worker's blobs and snapshots.
fn worker_bytes(farm: &Farm, name: &str) -> u64 {
    let s = farm.worker_state(name);
    du(&s.join("blobs")) + du(&s.join("snapshots"))
}

/// Polls until `f() <= limit` or `within` passed; the last value.
fn settles(within: Duration, limit: u64, f: impl Fn() -> u64) -> u64 {
    let t0 = Instant::now();
    loop {
        let v = f();
        if v <= limit || t0.elapsed() > within {
            return v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

const MB: u64 = 1_000_000;

/// A Dockerfile whose RUN writes `bytes` of random data (incompressible),
/// varied per build by `--build-arg N`.
fn dockerfile(bytes: u64, sleep: u32) -> String {
    format!(
        "FROM busybox\nARG N\nRUN sleep {sleep}; head -c {bytes} /dev/urandom > /f; echo $N > /n\n"
    )
}

/// `builds` builds of a `layer`-byte layer under `cap` (both stores), with
/// one slow build running across the first collections.
fn stores_stay_within_caps(test: &str, builds: u32, layer: u64, cap_mb: u64) {
    let Some(farm) = Farm::new(test, &["amd1"]) else {
        return;
    };
    let cap = format!("{cap_mb}MB");
    let coordinator = farm.start_coordinator_with(6, &["--store-max", &cap, "--log-level", "info"]);
    let amd1 = farm.start_worker_with(
        "amd1",
        None,
        2,
        &["--cache-max", &cap, "--log-level", "info"],
    );
    let ctx = farm
        .env
        .context("caps", &[("Dockerfile", &dockerfile(layer, 0))]);
    let slow_ctx = farm
        .env
        .context("slow", &[("Dockerfile", &dockerfile(layer, 8))]);
    let ctx = ctx.to_str().expect("utf-8").to_string();
    let dest = |n: &str| farm.env.work.path().join(format!("out-{n}"));
    let out_arg = |n: &str| format!("type=local,dest={}", dest(n).display());
    let build = |n: &str| {
        farm.build(&[
            "--build-arg",
            &format!("N={n}"),
            "--output",
            &out_arg(n),
            &ctx,
        ])
    };
    build("0");
    // Busybox, contexts, indexes: small blobs kept besides the cap.
    let slack = 6 * MB;
    let cap_bytes = cap_mb * MB;
    // A build that runs across the collections of the next builds.
    let mut slow: Proc = farm.start_build(&[
        "--build-arg",
        "N=slow",
        "--output",
        &out_arg("slow"),
        slow_ctx.to_str().expect("utf-8"),
    ]);
    let t0 = Instant::now();
    let mut peak = 0;
    for i in 1..builds {
        build(&i.to_string());
        // Within the cap plus the running build's layer, once the collection
        // that follows the build ran.
        let now = settles(Duration::from_secs(10), cap_bytes + layer + slack, || {
            coordinator_bytes(&farm)
        });
        peak = peak.max(now);
        assert!(
            now <= cap_bytes + layer + slack,
            "after build {i}: coordinator store {now} bytes, cap {cap_bytes}"
        );
    }
    let status = slow.wait(Duration::from_secs(300));
    assert!(
        status.success(),
        "the build running during collections failed:\n{}",
        slow.output()
    );
    let f = std::fs::read(dest("slow").join("f")).expect("slow build output");
    assert_eq!(f.len() as u64, layer);
    let elapsed = t0.elapsed();
    let coord = settles(Duration::from_secs(10), cap_bytes + slack, || {
        coordinator_bytes(&farm)
    });
    // The worker collects when idle, after its jobs.
    build(&builds.to_string());
    let worker = settles(Duration::from_secs(20), cap_bytes + 2 * slack, || {
        worker_bytes(&farm, "amd1")
    });
    eprintln!(
        "{builds} builds of {layer} bytes, caps {cap_bytes}: coordinator peak {peak} (during a slow build), \
         after {coord}; worker after {worker}; {:.1}s",
        elapsed.as_secs_f64()
    );
    for (who, p) in [("coordinator", &coordinator), ("worker", &amd1)] {
        let out = p.output();
        let runs: Vec<&str> = out
            .lines()
            .filter(|l| l.contains(" collection: "))
            .collect();
        eprintln!("{who}: {} collections, last: {:?}", runs.len(), runs.last());
    }
    assert!(
        coord <= cap_bytes + slack,
        "coordinator store {coord} bytes, cap {cap_bytes}"
    );
    assert!(
        worker <= cap_bytes + 2 * slack,
        "worker blobs and snapshots {worker} bytes, cap {cap_bytes}"
    );
    // The first build's results were collected everywhere: it runs again
    // and succeeds (no "the coordinator does not hold blob").
    let again = build("0");
    assert!(!again.contains("does not hold"), "{again}");
    let f = std::fs::read(dest("0").join("n")).expect("rebuilt output");
    assert_eq!(String::from_utf8_lossy(&f).trim(), "0");
}

#[test]
fn stores_stay_within_their_caps_and_collected_results_build_again() {
    stores_stay_within_caps(
        "stores_stay_within_their_caps_and_collected_results_build_again",
        6,
        4 * MB,
        10,
    );
}

#[test]
fn twenty_builds_of_twenty_megabytes_stay_within_the_caps() {
    stores_stay_within_caps(
        "twenty_builds_of_twenty_megabytes_stay_within_the_caps",
        20,
        20 * MB,
        100,
    );
}

/// Whether the step whose title contains `needle` was CACHED (`None`: not shown).
fn step_cached(progress: &str, needle: &str) -> Option<bool> {
    let title = progress
        .lines()
        .find(|l| l.starts_with('#') && l.contains(needle))?;
    let n = title.split_whitespace().next()?;
    Some(progress.lines().any(|l| l == format!("{n} CACHED")))
}

#[test]
fn prune_keep_storage_keeps_the_newest_results_which_build_from_cache() {
    let Some(env) = farm_support::Env::new("prune_keep_storage_keeps_the_newest_results") else {
        return;
    };
    let layer = 5 * MB;
    let ctx = env.context("prune", &[("Dockerfile", &dockerfile(layer, 0))]);
    let ctx = ctx.to_str().expect("utf-8").to_string();
    let dest = env.work.path().join("out");
    let out_arg = format!("type=local,dest={}", dest.display());
    let build = |n: &str| {
        farm_support::ok(&env.run(&[
            "build",
            "--progress",
            "plain",
            "--build-arg",
            &format!("N={n}"),
            "--output",
            &out_arg,
            &ctx,
        ]))
    };
    for n in ["1", "2", "3"] {
        build(n);
    }
    let state = env.state.path();
    let before = du(&state.join("blobs")) + du(&state.join("snapshots"));
    // Room for busybox and about one result (a result is its layer twice:
    // the blob and the snapshot).
    let out = farm_support::ok(&env.run(&["prune", "--keep-storage", "20MB"]));
    let after = du(&state.join("blobs")) + du(&state.join("snapshots"));
    eprintln!("prune --keep-storage 20MB: {before} -> {after} bytes\n{out}");
    assert!(after < before, "{out}");
    assert!(
        after <= 20 * MB + 2 * MB,
        "{after} bytes after prune --keep-storage 20MB:\n{out}"
    );
    // The newest result is kept and builds from cache; the oldest ran again.
    let newest = build("3");
    assert_eq!(step_cached(&newest, "RUN sleep"), Some(true), "{newest}");
    let oldest = build("1");
    assert_eq!(step_cached(&oldest, "RUN sleep"), Some(false), "{oldest}");
    // The busybox image was kept.
    assert!(
        env.refs().iter().any(|(name, _)| name.contains("busybox")),
        "{:?}",
        env.refs()
    );
}

/// A tmpfs of `size` mounted on `dir` (as root), unmounted on drop.
struct SmallFs(std::path::PathBuf);

impl SmallFs {
    fn mount(dir: &Path, size: &str, uid: u32, gid: u32) -> Option<SmallFs> {
        std::fs::create_dir_all(dir).expect("mkdir");
        let opts = format!("size={size},mode=0755,uid={uid},gid={gid}");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &opts, "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: cannot mount a tmpfs (needs root)");
            return None;
        }
        Some(SmallFs(dir.to_path_buf()))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Files under `dir` (recursively), for "nothing partial is left".
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_worker_out_of_disk_fails_the_step_clearly_keeps_nothing_partial_and_stays_up() {
    let test = "a_worker_out_of_disk_fails_the_step_clearly";
    let Some(farm) = Farm::new(test, &["small", "big"]) else {
        return;
    };
    let state = farm.worker_state("small");
    let Some(_fs) = SmallFs::mount(&state, "16m", farm.env.user.uid(), farm.env.user.gid()) else {
        return;
    };
    let _coordinator = farm.start_coordinator(6);
    let mut small = farm.start_worker("small", None, 1);
    let ctx = farm
        .env
        .context("enospc", &[("Dockerfile", &dockerfile(24 * MB, 0))]);
    let dest = farm.env.work.path().join("out-enospc");
    let mut client = farm.start_build(&[
        "--output",
        &format!("type=local,dest={}", dest.display()),
        ctx.to_str().expect("utf-8"),
    ]);
    // The step fails on `small` for lack of space; the coordinator requeues it
    // and drains `small`, so it runs on `big` once that joins.
    small.wait_for("No space left on device", Duration::from_secs(120));
    let _big = farm.start_worker("big", None, 1);
    let status = client.wait(Duration::from_secs(300));
    assert!(status.success(), "{}", client.output());
    let f = std::fs::read(dest.join("f")).expect("output");
    assert_eq!(f.len() as u64, 24 * MB);
    // `small` is still up, says what happened, and kept nothing partial.
    let log = small.output();
    assert!(!log.contains("session with the coordinator ended"), "{log}");
    assert!(log.contains("out of disk space"), "{log}");
    let ingest = files_under(&state.join("ingest"));
    assert!(ingest.is_empty(), "partial blobs left: {ingest:?}");
    let active = files_under(&state.join("snapshots").join("active"));
    assert!(active.is_empty(), "partial snapshots left: {active:?}");
    for blob in files_under(&state.join("blobs").join("sha256")) {
        let out = std::process::Command::new("sha256sum")
            .arg(&blob)
            .output()
            .expect("sha256sum");
        let sum = String::from_utf8_lossy(&out.stdout);
        let name = blob
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(
            sum.starts_with(&name),
            "blob {} is not whole",
            blob.display()
        );
    }
    drop(small);
}

#[test]
#[ignore = "comparison for the figures in the report: the same 20 builds with caps far above their size"]
fn twenty_builds_of_twenty_megabytes_without_a_binding_cap() {
    stores_stay_within_caps(
        "twenty_builds_of_twenty_megabytes_without_a_binding_cap",
        20,
        20 * MB,
        1_000_000,
    );
}
