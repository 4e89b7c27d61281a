//! Benchmark: parsing plus graph construction for a generated Dockerfile of
//! 1,000 instructions in 20 stages (issue 3 target: <= 10 ms).
//!
//! Run with `cargo bench -p imgfarm-common --bench graph_build` (or
//! `bench/graph/run.sh`). The context is an in-memory selector so the
//! figure is the frontend alone, not file hashing.

use imgfarm_common::dockerfile::frontend::{build_graph, BuildRequest, ContextSelector};
use imgfarm_common::dockerfile::parser::parse;
use imgfarm_common::oci::Digest;
use imgfarm_common::platform::Platform;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

const STAGES: usize = 20;
const PER_STAGE: usize = 50;

/// 20 stages x 50 instructions (FROM included) = 1,000 instructions. Every
/// stage is needed by the last, so nothing is pruned.
fn generate() -> String {
    let mut s = String::from("ARG BASE=alpine:3.20\nARG VERSION=1.0\n");
    for i in 0..STAGES {
        let from = if i % 4 == 1 {
            format!("s{}", i - 1)
        } else {
            "${BASE}".to_string()
        };
        let platform = if i % 5 == 2 {
            "--platform=$BUILDPLATFORM "
        } else {
            ""
        };
        s.push_str(&format!("FROM {platform}{from} AS s{i}\n"));
        let mut n = 1;
        let mut k = 0;
        while n < PER_STAGE {
            let line = match k % 12 {
                0 => format!("ARG VERSION\nENV STAGE_{i}_{k}=v$VERSION"),
                1 => format!("WORKDIR /work/{i}/{k}"),
                2 => format!("RUN echo stage {i} step {k} && make -j4 target-{k}"),
                3 => format!("COPY src/file-{k}.txt ./f{k}"),
                4 => format!("LABEL org.example.s{i}.k{k}=\"value {k}\""),
                5 => format!("RUN --mount=type=cache,target=/root/.cache/{k},sharing=locked build --step {k}"),
                6 => {
                    if i > 0 {
                        format!("COPY --from=s{} /work /from/{k}", (i + k) % i)
                    } else {
                        format!("COPY src/other-{k}.txt /other/")
                    }
                }
                7 => format!("EXPOSE {}", 8000 + k),
                8 => format!("USER {}", 1000 + k),
                9 => format!("ADD --chmod=0644 src/archive-{k}.tar.gz /opt/{k}/"),
                10 => format!("RUN [\"/bin/sh\", \"-c\", \"test -f /work/{i}/{k}\"]"),
                _ => format!("CMD [\"/app\", \"--stage\", \"{i}\"]"),
            };
            // Line 0 holds two instructions.
            n += line.lines().count();
            s.push_str(&line);
            s.push('\n');
            k += 1;
        }
    }
    // The last stage needs every other one.
    for j in 0..STAGES - 1 {
        s.push_str(&format!("COPY --from=s{j} /work /all/{j}\n"));
    }
    s
}

struct MemContext;

impl ContextSelector for MemContext {
    fn select(&self, sources: &[String], excludes: &[String]) -> Result<Digest, String> {
        Ok(Digest::sha256_of(
            format!("{sources:?}{excludes:?}").as_bytes(),
        ))
    }
}

fn once(text: &str, platforms: &[Platform]) -> usize {
    let pr = parse(text.as_bytes()).expect("generated Dockerfile parses");
    let req = BuildRequest {
        dockerfile: &pr,
        file_name: "Dockerfile".into(),
        build_args: BTreeMap::new(),
        target: None,
        platforms: platforms.to_vec(),
        build_platform: Platform::linux_amd64(),
        labels: BTreeMap::new(),
        context: &MemContext,
        resolved_images: BTreeMap::new(),
    };
    build_graph(&req)
        .expect("generated Dockerfile builds")
        .len()
}

/// CPU time of this thread: what the work costs, whatever else the machine runs.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid pointer given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Returns the median CPU time per run.
fn measure(name: &str, text: &str, platforms: &[Platform], iters: usize) -> Duration {
    let vertices = once(text, platforms);
    for _ in 0..10 {
        black_box(once(text, platforms));
    }
    let mut wall = Vec::with_capacity(iters);
    let mut cpu = Vec::with_capacity(iters);
    for _ in 0..iters {
        let (t, c) = (Instant::now(), thread_cpu());
        black_box(once(black_box(text), platforms));
        cpu.push(thread_cpu() - c);
        wall.push(t.elapsed());
    }
    wall.sort();
    cpu.sort();
    println!(
        "{name}: {vertices} vertices; CPU median {:.3} ms (min {:.3}); wall median {:.3} ms (min {:.3}, p90 {:.3}) over {iters} runs",
        ms(cpu[iters / 2]),
        ms(cpu[0]),
        ms(wall[iters / 2]),
        ms(wall[0]),
        ms(wall[iters * 9 / 10]),
    );
    cpu[iters / 2]
}

fn main() {
    let text = generate();
    let instructions = parse(text.as_bytes())
        .map(|p| p.ast.children.len())
        .unwrap_or(0);
    let meta = 2;
    println!(
        "generated Dockerfile: {} instructions in {STAGES} stages (+{meta} global ARGs + {} final COPYs), {} bytes",
        STAGES * PER_STAGE,
        STAGES - 1,
        text.len()
    );
    assert!(instructions >= STAGES * PER_STAGE);
    let t = Instant::now();
    let pr = parse(text.as_bytes()).expect("parses");
    black_box(pr);
    println!(
        "parse alone (cold): {:.3} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let one = measure(
        "parse+graph, 1 platform (linux/amd64)",
        &text,
        &[Platform::linux_amd64()],
        200,
    );
    let two = measure(
        "parse+graph, 2 platforms (linux/amd64,linux/arm64)",
        &text,
        &[Platform::linux_amd64(), Platform::linux_arm64()],
        100,
    );
    let target = Duration::from_millis(10);
    println!(
        "target <= 10 ms (median CPU time): 1 platform {} ({:.2}x of target), 2 platforms {} ({:.2}x)",
        if one <= target { "MET" } else { "MISSED" },
        one.as_secs_f64() / target.as_secs_f64(),
        if two <= target { "MET" } else { "MISSED" },
        two.as_secs_f64() / target.as_secs_f64(),
    );
}
