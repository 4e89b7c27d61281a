#!/usr/bin/env bash
# Coordinator service figures (issue 6 targets):
# - VmRSS with a 1,000-vertex build queued and no worker (target <= 100 MB);
#   the figure is the whole test process: coordinator, QUIC endpoint, one
#   scripted client, tokio runtime;
# - scheduling overhead per vertex: a chain through one scripted worker that
#   answers at once (target <= 5 ms), each vertex = RunVertex out, VertexDone
#   back over loopback QUIC, result check, sqlite write, progress to the client.
# Usage: bench/coordinator_service.sh [VERTICES]   (chain length, default 500)
set -euo pipefail
cd "$(dirname "$0")/.."
export IMGFARM_BENCH_VERTICES=${1:-500}
cargo test --release -q -p imgfarm-coordinator --test service_bench --no-run 2>/dev/null
bin=$(cargo test --release -p imgfarm-coordinator --test service_bench --no-run 2>&1 |
    sed -n 's/.*Executable .*(\(.*\))/\1/p' | tail -1)
echo "$(nproc) cores, loopback"
"$bin" --ignored --nocapture --test-threads 1 rss_with_1000_queued_vertices 2>&1 | grep VmRSS
"$bin" --ignored --nocapture --test-threads 1 scheduling_overhead_per_vertex 2>&1 | grep 'per vertex'
