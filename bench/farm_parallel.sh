#!/usr/bin/env bash
# Farm parallelism (issue 6 target): 4 independent 2-second stages on 4 worker slots
# (two workers x 2 slots) should take at most 1.15x one such stage, end to end through
# `imgfarm build --farm` (client upload, coordinator placement, rootless RUN on the
# workers, layer upload, index merge, download).
#
#   bench/farm_parallel.sh            (as root: coordinator and workers run as imgfarm-test)
#   RUNS=5 IMGFARM=target/release/imgfarm bench/farm_parallel.sh
#
# Each run changes a build arg so every RUN executes again (nothing cached).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}
FARM_USER=${FARM_USER:-imgfarm-test}
die() { echo "farm_parallel: $*" >&2; exit 1; }

if [ -z "${IMGFARM:-}" ]; then
    echo "building imgfarm (release)..." >&2
    (cd "$ROOT" && cargo build --release -q -p imgfarm) || die "cargo build --release failed"
    IMGFARM="$ROOT/target/release/imgfarm"
fi
AS=()
if [ "$(id -u)" = 0 ]; then
    id "$FARM_USER" >/dev/null 2>&1 || die "no user $FARM_USER: run scripts/setup.sh --dev"
    AS=(setpriv --reuid="$FARM_USER" --regid="$FARM_USER" --init-groups --)
fi
WORK=$(mktemp -d /tmp/imgfarm-farm-bench-XXXXXX)
chmod 755 "$WORK"
[ ${#AS[@]} -gt 0 ] && chown "$FARM_USER:" "$WORK"
PIDS=()
cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    # Worker state holds files owned by sub-ids: remove them inside the user's namespace.
    "${AS[@]}" unshare --map-auto --map-root-user rm -rf "$WORK" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
run() { (cd "$WORK" && exec "${AS[@]}" env HOME="$WORK" "$IMGFARM" "$@"); }
# For `start ... &`: the background subshell execs imgfarm, so $! is imgfarm's own PID
# and the cleanup stops exactly the processes this script started.
start() { cd "$WORK" && exec "${AS[@]}" env HOME="$WORK" "$IMGFARM" "$@"; }

PORT=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ADDR=127.0.0.1:$PORT
run farm init --dir "$WORK/tls" --san 127.0.0.1 >/dev/null
for w in w1 w2; do run farm issue --dir "$WORK/tls" --worker $w >/dev/null; done
run farm issue --dir "$WORK/tls" --client bench >/dev/null
run --state "$WORK/client" debug seed-busybox >/dev/null

start --state "$WORK/coord" coordinator --listen "$ADDR" --tls-dir "$WORK/tls" >"$WORK/coord.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q "listening on" "$WORK/coord.log" && break; sleep 0.1; done
for w in w1 w2; do
    start --state "$WORK/$w" worker --coordinator "quic://$ADDR" --tls-dir "$WORK/tls" \
        --name $w --slots 2 --platforms linux/amd64 >"$WORK/$w.log" 2>&1 &
    PIDS+=($!)
done
for w in w1 w2; do
    for _ in $(seq 200); do grep -q "connected" "$WORK/$w.log" && break; sleep 0.1; done
done

mkdir -p "$WORK/one" "$WORK/four"
cat >"$WORK/one/Dockerfile" <<'DF'
FROM busybox
ARG NONCE
RUN sleep 2 && echo $NONCE > /one
DF
{
    for i in 1 2 3 4; do
        printf 'FROM busybox AS s%s\nARG NONCE\nRUN sleep 2 && echo $NONCE > /s%s\n' $i $i
    done
    printf 'FROM busybox\n'
    for i in 1 2 3 4; do printf 'COPY --from=s%s /s%s /s%s\n' $i $i $i; done
} >"$WORK/four/Dockerfile"
[ ${#AS[@]} -gt 0 ] && chown -R "$FARM_USER:" "$WORK"

build() {  # build DIR NONCE -> seconds
    local t0 t1
    t0=$(date +%s.%N)
    run --state "$WORK/client" build --farm "quic://$ADDR" --tls-dir "$WORK/tls" --progress quiet \
        --platform linux/amd64 --build-arg NONCE="$2" -t "bench/$(basename "$1"):x" "$1" >/dev/null 2>"$WORK/build.err" ||
        { cat "$WORK/build.err" >&2; die "build of $1 failed"; }
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}'
}
build "$WORK/one" warm >/dev/null   # uploads the base image once
if [ -n "${SHOW:-}" ]; then
    run --state "$WORK/client" build --farm "quic://$ADDR" --tls-dir "$WORK/tls" --progress plain \
        --platform linux/amd64 --build-arg NONCE=show -t bench/four:x "$WORK/four" 2>&1 | grep -E "^#[0-9]+ (DONE|\[)|worker"
fi
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ONE=() FOUR=()
for r in $(seq "$RUNS"); do
    ONE+=("$(build "$WORK/one" "one-$r-$$")")
    FOUR+=("$(build "$WORK/four" "four-$r-$$")")
done
m1=$(printf '%s\n' "${ONE[@]}" | median)
m4=$(printf '%s\n' "${FOUR[@]}" | median)
echo "$(nproc) cores; 2 workers x 2 slots; runs: one stage ${ONE[*]} s; four stages ${FOUR[*]} s"
printf 'one 2-second stage: %.2f s (median)\nfour 2-second stages: %.2f s (median)\nratio: %.2fx (target <= 1.15x)\n' \
    "$m1" "$m4" "$(awk -v a="$m4" -v b="$m1" 'BEGIN {print a / b}')"
# SHOW=1 prints the four-stage build's step lines with the worker of each step.
