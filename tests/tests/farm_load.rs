//! Load suite (issue 15, deliverable 4): many builds from several client processes at once
//! against three workers, with real processes.
//!
//! Every build shares a first stage with all the others and a second stage with a quarter of
//! them, and has a last stage of its own (build arg `N`). Checked: every build completes;
//! each output holds its own `N` and group (nothing mixed between builds); no vertex was
//! placed twice (shared vertices ran once: the coordinator's `vertex placed` lines); the
//! coordinator's peak RSS (`VmHWM`) stays bounded.
//!
//! The bounded form runs in `cargo test` (20 builds, 4 clients). `bench/farm_load.sh` runs
//! the full form (`IMGFARM_LOAD_BUILDS=100 IMGFARM_LOAD_CLIENTS=10`) and prints the figures:
//! throughput; p50/p99 queue wait of builds (the coordinator's `build started ...
//! queue_wait_ms` line: admission to first placed step) and of vertices (`vertex placed ...
//! queue_wait_ms`: from when its last input finished to its placement); p50/p99 client wall
//! time; peak RSS.

mod farm_support;

use farm_support::{Farm, Proc};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DOCKERFILE: &str = "\
FROM busybox AS common
RUN echo shared > /shared && sleep 1
FROM common AS group
ARG G
RUN echo group-$G > /g && sleep 1
FROM group
ARG N
RUN echo build-$N > /n
";

/// Groups of builds sharing the second stage.
const GROUPS: usize = 4;
/// The coordinator's peak RSS must stay under this (it holds no blob in memory).
const RSS_LIMIT_KIB: u64 = 256 * 1024;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `line` without ANSI colour sequences (`ESC [ ... m`; tracing colours fields).
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut it = line.chars();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            for c in it.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The value of field `key` in a log line (tracing's fmt output: `key=value`).
fn field(line: &str, key: &str) -> Option<String> {
    let line = plain(line);
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..].split_whitespace().next().map(str::to_string)
}

/// The `p`-th percentile (0..=100) of sorted `v`, nearest rank.
fn percentile(v: &[u64], p: usize) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let rank = (p * v.len()).div_ceil(100).max(1);
    v[rank - 1]
}

/// `VmHWM` of `pid` in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM")
}

#[test]
fn many_builds_from_many_clients_share_stages_and_stay_apart() {
    let name = "many_builds_from_many_clients_share_stages_and_stay_apart";
    let builds = env_usize("IMGFARM_LOAD_BUILDS", 20);
    let clients = env_usize("IMGFARM_LOAD_CLIENTS", 4).clamp(1, builds);
    let Some(farm) = Farm::new(name, &["w1", "w2", "w3"]) else {
        return;
    };
    let coordinator = farm.start_coordinator_with(6, &["--log-level", "info"]);
    let _workers: Vec<Proc> = ["w1", "w2", "w3"]
        .iter()
        .map(|w| farm.start_worker(w, Some("linux/amd64"), 2))
        .collect();
    let ctx = farm.env.context("load", &[("Dockerfile", DOCKERFILE)]);
    let states: Vec<PathBuf> = (0..clients)
        .map(|c| farm.client_state(&c.to_string()))
        .collect();

    // Client c runs builds c, c + clients, ... one after the other.
    let walls = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    std::thread::scope(|s| {
        for (c, state) in states.iter().enumerate() {
            let (farm, ctx, walls) = (&farm, &ctx, Arc::clone(&walls));
            s.spawn(move || {
                for n in (c..builds).step_by(clients) {
                    let dest = farm.env.work.path().join(format!("out-{n}"));
                    let t = Instant::now();
                    let mut p = farm.start_build_as(
                        state,
                        &[
                            "--platform",
                            "linux/amd64",
                            "--build-arg",
                            &format!("N={n}"),
                            "--build-arg",
                            &format!("G={}", n % GROUPS),
                            "--output",
                            &format!("type=local,dest={}", dest.display()),
                            ctx.to_str().expect("utf-8"),
                        ],
                    );
                    let status = p.wait(Duration::from_secs(600));
                    assert!(status.success(), "build {n} failed:\n{}", p.output());
                    walls
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(t.elapsed().as_millis() as u64);
                }
            });
        }
    });
    let elapsed = start.elapsed();

    // Each output is its own.
    for n in 0..builds {
        let dest = farm.env.work.path().join(format!("out-{n}"));
        let read = |f: &str| {
            std::fs::read_to_string(dest.join(f))
                .unwrap_or_else(|e| panic!("build {n}: /{f}: {e}"))
                .trim()
                .to_string()
        };
        assert_eq!(read("n"), format!("build-{n}"), "build {n}");
        assert_eq!(read("g"), format!("group-{}", n % GROUPS), "build {n}");
        assert_eq!(read("shared"), "shared", "build {n}");
    }

    // Shared vertices ran once: no key was placed twice.
    let log = coordinator.output();
    let mut placed: BTreeMap<String, usize> = BTreeMap::new();
    let mut vertex_waits: Vec<u64> = Vec::new();
    for l in log.lines().filter(|l| l.contains("vertex placed")) {
        *placed.entry(field(l, "key").expect("key=")).or_default() += 1;
        vertex_waits.extend(field(l, "queue_wait_ms").and_then(|w| w.parse::<u64>().ok()));
    }
    vertex_waits.sort_unstable();
    assert_eq!(vertex_waits.len(), placed.values().sum::<usize>());
    let twice: Vec<_> = placed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "vertices placed more than once: {twice:?}"
    );
    // At most: the base image, the shared RUN, one RUN per group, and per build its RUN and
    // its export.
    let most = 2 + GROUPS + 2 * builds;
    assert!(
        placed.len() <= most,
        "{} placements, expected at most {most}",
        placed.len()
    );

    let mut waits: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("build started"))
        .filter_map(|l| field(l, "queue_wait_ms")?.parse().ok())
        .collect();
    waits.sort_unstable();
    assert_eq!(waits.len(), builds, "one `build started` line per build");
    let mut walls = walls.lock().unwrap_or_else(|p| p.into_inner()).clone();
    walls.sort_unstable();
    let rss = peak_rss_kib(coordinator.pid());
    let per_min = builds as f64 / elapsed.as_secs_f64() * 60.0;
    let report = format!(
        "farm_load: builds={builds} clients={clients} workers=3 slots=2 elapsed_s={:.1} \
         builds_per_min={per_min:.1} queue_wait_ms_p50={} queue_wait_ms_p99={} \
         vertex_wait_ms_p50={} vertex_wait_ms_p99={} \
         wall_ms_p50={} wall_ms_p99={} placements={} coordinator_peak_rss_kib={rss}",
        elapsed.as_secs_f64(),
        percentile(&waits, 50),
        percentile(&waits, 99),
        percentile(&vertex_waits, 50),
        percentile(&vertex_waits, 99),
        percentile(&walls, 50),
        percentile(&walls, 99),
        placed.len(),
    );
    // Straight to stderr, so it shows without --nocapture too.
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{report}");
    if let Ok(path) = std::env::var("IMGFARM_LOAD_REPORT") {
        std::fs::write(path, format!("{report}\n")).expect("report");
    }
    assert!(
        rss < RSS_LIMIT_KIB,
        "coordinator peak RSS {rss} KiB >= {RSS_LIMIT_KIB} KiB"
    );
}

#[test]
fn percentile_is_nearest_rank() {
    let v: Vec<u64> = (1..=100).collect();
    assert_eq!(percentile(&v, 50), 50);
    assert_eq!(percentile(&v, 99), 99);
    assert_eq!(percentile(&[7], 99), 7);
    assert_eq!(percentile(&[], 50), 0);
    assert_eq!(
        field(
            "x INFO build started build=ab queue_wait_ms=12",
            "queue_wait_ms"
        ),
        Some("12".to_string())
    );
    assert_eq!(
        field("\u{1b}[3mkey\u{1b}[0m\u{1b}[2m=\u{1b}[0msha256:ab x", "key"),
        None,
        "a field needs a space before it"
    );
    assert_eq!(
        field(
            "a \u{1b}[3mkey\u{1b}[0m\u{1b}[2m=\u{1b}[0msha256:ab x",
            "key"
        ),
        Some("sha256:ab".to_string())
    );
}
