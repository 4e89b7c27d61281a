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
# Usage: bench/farm_scale.sh [WORKERS...]   (default: 10 100 1000 workers,
# each against 1,000 concurrent builds of 100 vertices: 100,000 vertices)
# IMGFARM_SCALE_BUILDS changes the number of builds.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p imgfarm-coordinator --example farm_scale
bin=target/release/examples/farm_scale
echo "$(nproc) cores; engine single-threaded (one task owns it)"
builds=${IMGFARM_SCALE_BUILDS:-1000}
for workers in ${@:-10 100 1000}; do
    echo "== $workers workers, $builds builds"
    "$bin" "$workers" "$builds" 100
done
