#!/usr/bin/env bash
# Farm load (issue 15): BUILDS builds from CLIENTS client processes at once against 3 workers
# (2 slots each), real processes. Every build shares its first stage with all others and its
# second with a quarter of them; the last stage is its own (build arg N). The test
# (tests/tests/farm_load.rs) checks that each output is its own and that no vertex was placed
# twice; this script prints its figures for the CI form (20 builds, 4 clients) and the full
# form side by side:
#   throughput (builds/min); queue wait p50/p99 of builds (admission to the first placed
#   step, the coordinator's `build started ... queue_wait_ms` line) and of vertices (ready,
#   i.e. its last input finished, to placed: `vertex placed ... queue_wait_ms`); client wall
#   time p50/p99; the coordinator's peak RSS (VmHWM).
#
#   bench/farm_load.sh                       (as root: workers run as imgfarm-test)
#   BUILDS=100 CLIENTS=10 bench/farm_load.sh (the defaults)
#
# Debug binaries (what `cargo test` builds); the figures are the farm's, not the compiler's.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILDS=${BUILDS:-100}
CLIENTS=${CLIENTS:-10}
die() { echo "farm_load: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (the farm runs as the unprivileged imgfarm-test user)"

cd "$ROOT"
echo "building imgfarm and the test (debug)..." >&2
cargo build -q -p imgfarm -p imgfarm-worker --bins || die "cargo build failed"
cargo test -q -p imgfarm-e2e --test farm_load --no-run 2>/dev/null || die "cargo test --no-run failed"

OUT=$(mktemp -d /tmp/imgfarm-farm-load-XXXXXX)
trap 'rm -rf "$OUT"' EXIT
form() {  # form NAME BUILDS CLIENTS
    IMGFARM_LOAD_BUILDS=$2 IMGFARM_LOAD_CLIENTS=$3 IMGFARM_LOAD_REPORT="$OUT/$1" \
        cargo test -q -p imgfarm-e2e --test farm_load -- --exact \
        many_builds_from_many_clients_share_stages_and_stay_apart >"$OUT/$1.log" 2>&1 ||
        { tail -50 "$OUT/$1.log" >&2; die "the $1 form failed"; }
}
get() { tr ' ' '\n' <"$OUT/$1" | sed -n "s/^$2=//p"; }

echo "CI form: 20 builds, 4 clients..." >&2
form ci 20 4
echo "full form: $BUILDS builds, $CLIENTS clients..." >&2
form full "$BUILDS" "$CLIENTS"

echo "$(nproc) cores; 3 workers x 2 slots; debug binaries"
printf '%-28s %12s %12s %8s\n' "" "CI (20/4)" "full ($BUILDS/$CLIENTS)" "ratio"
row() {  # row LABEL KEY
    local a b
    a=$(get ci "$2"); b=$(get full "$2")
    printf '%-28s %12s %12s %8s\n' "$1" "$a" "$b" "$(awk -v a="$a" -v b="$b" 'BEGIN { if (a > 0) printf "%.2fx", b / a; else print "-" }')"
}
row "elapsed (s)" elapsed_s
row "throughput (builds/min)" builds_per_min
row "build queue wait p50 (ms)" queue_wait_ms_p50
row "build queue wait p99 (ms)" queue_wait_ms_p99
row "vertex queue wait p50 (ms)" vertex_wait_ms_p50
row "vertex queue wait p99 (ms)" vertex_wait_ms_p99
row "client wall p50 (ms)" wall_ms_p50
row "client wall p99 (ms)" wall_ms_p99
row "vertices placed" placements
row "coordinator peak RSS (KiB)" coordinator_peak_rss_kib
