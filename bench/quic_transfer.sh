#!/usr/bin/env bash
# Blob transfer over QUIC on loopback against a raw TCP copy of the same bytes,
# in the same run (issue 6 target: QUIC >= 50% of TCP).
# One QUIC stream, 1 MiB chunks, with the farm's mutual TLS, transport
# settings and socket runtime (coordinator/src/server/transport.rs), counted
# only (transport alone) and sha256-verified on receipt (the farm's receive
# code); plus the full upload path into the coordinator's content store.
# Each phase runs ROUNDS times interleaved; the fastest round is printed with
# the process CPU time it used. Figures and history: bench/quic_transfer.md.
# Usage: bench/quic_transfer.sh [MIB] [ROUNDS]   (default 512 3)
set -euo pipefail
cd "$(dirname "$0")/.."
export IMGFARM_BENCH_MIB=${1:-512}
export IMGFARM_BENCH_ROUNDS=${2:-3}
cargo test --release -q -p imgfarm-e2e --test quic_transfer --no-run 2>/dev/null
bin=$(cargo test --release -p imgfarm-e2e --test quic_transfer --no-run 2>&1 |
    sed -n 's/.*Executable .*(\(.*\))/\1/p' | tail -1)
echo "payload: $IMGFARM_BENCH_MIB MiB, loopback, $(nproc) cores"
"$bin" --ignored --nocapture --test-threads 1 quic_vs_tcp_transfer 2>&1 |
    grep -E 'MiB|ratio|quic path|best of'
