#!/usr/bin/env bash
# Scale past this machine, by simulation (issue 14): the coordinator engine
# driven through FarmSim (coordinator/src/engine/sim.rs) by simulated
# workers -- 40% amd64, 40% arm64, 20% amd64 emulating arm64, 4 slots each;
# every other round one dies or goes silent and one joins -- and concurrent
# builds of 100 vertices each (2 platforms: image, 48 RUN steps in a DAG,
# export). No network: what is measured is the engine (placement, result
# bookkeeping, progress messages, jobs with their input results) plus the
# simulator's own bookkeeping, so the figures are an upper bound.
# Prints, per size: engine time per vertex run (target <= 1 ms), memory
# (target <= 1 GB), and the journal's writes (the persisted queue's rate).
# Usage: bench/farm_scale.sh [SIZES...]   (default: 10 100 1000; each size N
# means N workers and N concurrent builds, 100 vertices each)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p imgfarm-coordinator --example farm_scale
bin=target/release/examples/farm_scale
echo "$(nproc) cores; engine single-threaded (one task owns it)"
for n in "${@:-10 100 1000}"; do
    for size in $n; do
        echo "== $size workers, $size builds"
        "$bin" "$size" "$size" 100
    done
done
