//! Prometheus metrics with real processes on loopback (issue 16): a
//! coordinator and two workers started with `--metrics-listen 127.0.0.1:0`,
//! a two-platform farm build with slow steps, and plain `GET /metrics`
//! scrapes during and after it.
//!
//! Both workers claim `linux/amd64` with one slot each, so the four RUN steps
//! (two stages per platform) queue for the two slots, and the arm64 steps
//! run emulated (qemu) when the host can emulate arm64 (the workers then
//! announce it); without emulation the build is amd64 only.

mod farm_support;

use farm_support::{Farm, Proc};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const DOCKERFILE: &str = "\
FROM busybox AS a
RUN sleep 3; echo a > /a
FROM busybox AS b
RUN sleep 3; echo b > /b
FROM busybox
COPY --from=a /a /a
COPY --from=b /b /b
";

/// One scrape: the status code and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the answer");
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP answer");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    if code == 200 {
        assert!(
            head.contains("Content-Type: application/openmetrics-text; version=1.0.0"),
            "{head}"
        );
    }
    (code, body.to_string())
}

/// Samples of an OpenMetrics text: `name{labels}` → value.
fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of the samples of `name` whose labels contain every one of
/// `labels` (`key="value"`).
fn sum(m: &BTreeMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    m.iter()
        .filter(|(k, _)| {
            let (n, rest) = k.split_once('{').unwrap_or((k.as_str(), ""));
            n == name && labels.iter().all(|l| rest.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}

/// Scrapes `addr` and parses it.
fn scrape(addr: SocketAddr) -> (BTreeMap<String, f64>, String) {
    let (code, body) = get(addr, "/metrics");
    assert_eq!(code, 200, "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    (parse(&body), body)
}

/// The address a process printed on its `metrics listening on` line.
fn metrics_addr(p: &mut Proc) -> SocketAddr {
    let line = p.wait_for("metrics listening on ", Duration::from_secs(30));
    let at = line.find("metrics listening on ").expect("the line") + "metrics listening on ".len();
    line[at..].trim().parse().expect("a socket address")
}

/// Lines of `text` mentioning any of `names` (an excerpt for the log).
fn excerpt(text: &str, names: &[&str]) -> String {
    text.lines()
        .filter(|l| !l.starts_with('#') && names.iter().any(|n| l.starts_with(n)))
        .filter(|l| !l.ends_with(" 0"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn metrics_follow_a_farm_build_while_it_runs_and_after() {
    let name = "metrics_follow_a_farm_build_while_it_runs_and_after";
    let t0 = Instant::now();
    let Some(farm) = Farm::new(name, &["w1", "w2"]) else {
        return;
    };
    // A bad address is refused with the form to use.
    let out = farm.env.run(&[
        "coordinator",
        "--listen",
        "127.0.0.1:0",
        "--tls-dir",
        farm.tls.to_str().expect("utf-8"),
        "--metrics-listen",
        "nowhere",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("--metrics-listen \"nowhere\"") && err.contains("IP:PORT"),
        "{err}"
    );

    let listen = ["--metrics-listen", "127.0.0.1:0"];
    let mut coordinator = farm.start_coordinator_with(6, &listen);
    let c_addr = metrics_addr(&mut coordinator);
    let mut w1 = farm.start_worker_with("w1", Some("linux/amd64"), 1, &listen);
    let mut w2 = farm.start_worker_with("w2", Some("linux/amd64"), 1, &listen);
    let w_addrs = [metrics_addr(&mut w1), metrics_addr(&mut w2)];
    let emulates_arm64 = w1
        .wait_for("worker w1 connected", Duration::from_secs(5))
        .contains("linux/arm64");
    let platforms = if emulates_arm64 {
        "linux/amd64,linux/arm64"
    } else {
        eprintln!("{name}: this host does not emulate linux/arm64; amd64 only");
        "linux/amd64"
    };

    // Only GET /metrics is served.
    assert_eq!(get(c_addr, "/").0, 404);
    assert_eq!(get(w_addrs[0], "/nope").0, 404);
    let (before, _) = scrape(c_addr);
    assert_eq!(before["imgfarm_coordinator_workers_connected"], 2.0);
    assert_eq!(before["imgfarm_coordinator_slots"], 2.0);
    assert_eq!(before["imgfarm_coordinator_slots_busy"], 0.0);
    assert_eq!(
        sum(
            &before,
            "imgfarm_coordinator_workers",
            &[
                "platform=\"linux/amd64\"",
                "emulation=\"native\"",
                "state=\"idle\""
            ]
        ),
        2.0
    );

    let ctx = farm.env.context("metrics", &[("Dockerfile", DOCKERFILE)]);
    let dest = farm.env.work.path().join("out");
    let mut build = farm.start_build(&[
        "--platform",
        platforms,
        "--output",
        &format!("type=local,dest={}", dest.display()),
        ctx.to_str().expect("utf-8"),
    ]);

    // During the build: scrape every 100 ms until it ends.
    let (mut max_busy, mut max_queue, mut max_worker_busy) = (0.0f64, 0.0f64, 0.0f64);
    let mut max_running = 0.0f64;
    let mut during = String::new();
    let mut scrapes = 0;
    let mut slowest = Duration::ZERO;
    while !build.exited() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "{}",
            build.output()
        );
        let t = Instant::now();
        let (m, text) = scrape(c_addr);
        slowest = slowest.max(t.elapsed());
        scrapes += 1;
        let busy = m["imgfarm_coordinator_slots_busy"];
        let queue = sum(&m, "imgfarm_coordinator_queue_vertices", &[]);
        max_running = max_running.max(sum(
            &m,
            "imgfarm_coordinator_builds_active",
            &["state=\"running\""],
        ));
        if busy + queue > max_busy + max_queue {
            during = text;
        }
        max_busy = max_busy.max(busy);
        max_queue = max_queue.max(queue);
        // Every worker stays counted for amd64, native, whatever its state.
        assert_eq!(
            sum(
                &m,
                "imgfarm_coordinator_workers",
                &["platform=\"linux/amd64\"", "emulation=\"native\""]
            ),
            2.0,
            "{}",
            excerpt(&during, &["imgfarm_coordinator_workers"])
        );
        for a in w_addrs {
            let (wm, _) = scrape(a);
            max_worker_busy = max_worker_busy.max(wm["imgfarm_worker_slots_busy"]);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = build.wait(Duration::from_secs(5));
    assert!(status.success(), "{}", build.output());
    println!(
        "scrape during the build ({scrapes} scrapes, slowest {} ms):\n{}",
        slowest.as_millis(),
        excerpt(
            &during,
            &[
                "imgfarm_coordinator_workers",
                "imgfarm_coordinator_slots",
                "imgfarm_coordinator_queue_vertices",
                "imgfarm_coordinator_builds_active",
                "imgfarm_coordinator_queue_wait_seconds_count",
                "imgfarm_coordinator_vertex_duration_seconds_count",
            ]
        )
    );
    assert_eq!(max_busy, 2.0, "both slots were busy at some scrape");
    assert!(max_queue >= 1.0, "steps queued for a slot: {during}");
    assert_eq!(max_running, 1.0);
    assert_eq!(max_worker_busy, 1.0);
    if emulates_arm64 {
        assert!(
            sum(
                &before,
                "imgfarm_coordinator_workers",
                &["platform=\"linux/arm64\"", "emulation=\"emulated\""]
            ) == 2.0,
            "both workers offer arm64 emulated"
        );
    }

    // After: durations by platform and emulation, outcomes, bytes.
    let (m, after) = scrape(c_addr);
    println!(
        "scrape after the build:\n{}",
        excerpt(
            &after,
            &[
                "imgfarm_coordinator_builds_total",
                "imgfarm_coordinator_vertex_duration_seconds_count",
                "imgfarm_coordinator_vertex_duration_seconds_sum",
                "imgfarm_coordinator_blob_relayed_bytes_total",
                "imgfarm_coordinator_store_bytes",
                "imgfarm_coordinator_cache_hits_total",
            ]
        )
    );
    assert_eq!(
        m["imgfarm_coordinator_builds_total{outcome=\"succeeded\"}"],
        1.0
    );
    assert_eq!(
        m["imgfarm_coordinator_builds_total{outcome=\"failed\"}"],
        0.0
    );
    assert_eq!(m["imgfarm_coordinator_slots_busy"], 0.0);
    let dur = |p: &str, e: &str| {
        sum(
            &m,
            "imgfarm_coordinator_vertex_duration_seconds_count",
            &[
                &format!("platform=\"{p}\""),
                &format!("emulation=\"{e}\""),
                "outcome=\"succeeded\"",
            ],
        )
    };
    assert!(dur("linux/amd64", "native") >= 2.0, "{after}");
    if emulates_arm64 {
        assert_eq!(
            dur("linux/arm64", "emulated"),
            2.0,
            "the two arm64 RUN steps: {after}"
        );
    }
    // The RUN steps slept 3 s each.
    assert!(
        sum(
            &m,
            "imgfarm_coordinator_vertex_duration_seconds_sum",
            &["platform=\"linux/amd64\""]
        ) >= 6.0,
        "{after}"
    );
    assert!(sum(&m, "imgfarm_coordinator_queue_wait_seconds_count", &[]) >= 4.0);
    let relayed = |d: &str| {
        sum(
            &m,
            "imgfarm_coordinator_blob_relayed_bytes_total",
            &[&format!("direction=\"{d}\"")],
        )
    };
    assert!(relayed("in") > 0.0 && relayed("out") > 0.0, "{after}");
    assert!(m["imgfarm_coordinator_store_bytes"] > 0.0);
    // The certificates come from `farm init` / `farm issue` with the default 365 days.
    let expires_in_days = |m: &BTreeMap<String, f64>, name: &str| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        (m[name] - now) / 86_400.0
    };
    let days = expires_in_days(
        &m,
        "imgfarm_coordinator_certificate_expiry_timestamp_seconds",
    );
    assert!((364.0..=365.5).contains(&days), "{days} days\n{after}");

    let mut worker_runs = 0.0;
    for (i, a) in w_addrs.into_iter().enumerate() {
        let (wm, text) = scrape(a);
        println!(
            "worker w{} after the build:\n{}",
            i + 1,
            excerpt(
                &text,
                &[
                    "imgfarm_worker_vertices_total",
                    "imgfarm_worker_vertex_duration_seconds_count",
                    "imgfarm_worker_vertex_duration_seconds_sum",
                    "imgfarm_worker_blob_transferred_bytes_total",
                    "imgfarm_worker_store_bytes",
                    "imgfarm_worker_connected",
                    "imgfarm_worker_slots",
                ]
            )
        );
        assert_eq!(wm["imgfarm_worker_connected"], 1.0, "{text}");
        assert_eq!(wm["imgfarm_worker_slots"], 1.0);
        assert_eq!(wm["imgfarm_worker_slots_busy"], 0.0);
        let days = expires_in_days(&wm, "imgfarm_worker_certificate_expiry_timestamp_seconds");
        assert!((364.0..=365.5).contains(&days), "{days} days\n{text}");
        assert!(wm["imgfarm_worker_store_bytes"] > 0.0, "{text}");
        worker_runs += sum(
            &wm,
            "imgfarm_worker_vertices_total",
            &["outcome=\"succeeded\""],
        );
        assert!(
            sum(&wm, "imgfarm_worker_blob_transferred_bytes_total", &[]) > 0.0,
            "{text}"
        );
    }
    assert!(worker_runs >= 4.0, "at least the four RUN steps ran");
    println!("{name}: {:.1} s", t0.elapsed().as_secs_f64());
}
