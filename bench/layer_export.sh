#!/usr/bin/env bash
# Layer export benchmark: imgfarm's layer::create (tar -> gzip -> sha256 of
# blob and of tar, into the content store) against
# `tar -c | gzip -6 | sha256sum` on the same tree, in the same run.
#
# usage: bench/layer_export.sh [MB] [WORKDIR]     (defaults: 500, a temp dir)
# Env: ROUNDS (default 2; the best of each side is used).
set -euo pipefail
MB=${1:-500}
WORK=${2:-$(mktemp -d /tmp/imgfarm-bench.XXXXXX)}
ROUNDS=${ROUNDS:-2}
HERE=$(cd "$(dirname "$0")/.." && pwd)
TREE=$WORK/tree
STORE=$WORK/store

cd "$HERE"
cargo build --release -q -p imgfarm-common --example layer_export
BIN=$HERE/target/release/examples/layer_export

if [ ! -d "$TREE" ]; then
  "$BIN" gen "$TREE" "$MB"
fi
echo "tree: $(du -sh "$TREE" | cut -f1), $(find "$TREE" -type f | wc -l) files"
# Warm the page cache so both sides read from memory.
tar -c -C "$TREE" . > /dev/null

best() { sort -n | head -1; }
secs_of() { sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$1" | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }'; }
rss_of() { sed -n 's/.*Maximum resident set size (kbytes): //p' "$1"; }
# CPU seconds (user + system): independent of how busy the machine is.
cpu_of() { awk -F': ' '/User time|System time/ { s += $2 } END { printf "%.2f", s }' "$1"; }

base_times=(); our_times=(); our1_times=(); single_times=(); base_cpu=(); our_cpu=(); single_cpu=()
for r in $(seq "$ROUNDS"); do
  /usr/bin/time -v -o "$WORK/base.time" sh -c "tar -c -C '$TREE' . | gzip -6 | sha256sum > '$WORK/base.sum'"
  base_times+=("$(secs_of "$WORK/base.time")"); base_cpu+=("$(cpu_of "$WORK/base.time")")

  rm -rf "$STORE"
  /usr/bin/time -v -o "$WORK/ours.time" "$BIN" export "$TREE" "$STORE" --level 6 > "$WORK/ours.out"
  our_times+=("$(secs_of "$WORK/ours.time")"); our_cpu+=("$(cpu_of "$WORK/ours.time")")
  OUR_RSS=$(rss_of "$WORK/ours.time")

  rm -rf "$STORE"
  /usr/bin/time -v -o "$WORK/ours1.time" "$BIN" export "$TREE" "$STORE" --level 6 --threads 1 > "$WORK/ours1.out"
  our1_times+=("$(secs_of "$WORK/ours1.time")")

  rm -rf "$STORE"
  /usr/bin/time -v -o "$WORK/single.time" "$BIN" export "$TREE" "$STORE" --level 6 --single > "$WORK/single.out"
  single_times+=("$(secs_of "$WORK/single.time")"); single_cpu+=("$(cpu_of "$WORK/single.time")")
done

B=$(printf '%s\n' "${base_times[@]}" | best)
O=$(printf '%s\n' "${our_times[@]}" | best)
O1=$(printf '%s\n' "${our1_times[@]}" | best)
S=$(printf '%s\n' "${single_times[@]}" | best)
echo "baseline tar|gzip -6|sha256sum: ${B}s (runs: ${base_times[*]})"
echo "ours, parallel gzip members (1 MiB), $(nproc) threads: ${O}s (runs: ${our_times[*]}) peak RSS ${OUR_RSS} KiB"
echo "ours, parallel gzip members, 1 thread: ${O1}s (runs: ${our1_times[*]})"
echo "ours, single gzip stream (zlib-rs -6): ${S}s (runs: ${single_times[*]})"
BC=$(printf '%s\n' "${base_cpu[@]}" | best)
OC=$(printf '%s\n' "${our_cpu[@]}" | best)
SC=$(printf '%s\n' "${single_cpu[@]}" | best)
echo "CPU seconds (user+sys): baseline ${BC}, ours parallel ${OC}, ours single-stream ${SC}"
echo "ours output: $(cat "$WORK/ours.out")"
echo "baseline blob size: $(tar -c -C "$TREE" . | gzip -6 | wc -c) bytes"
awk -v b="$B" -v o="$O" -v o1="$O1" -v s="$S" 'BEGIN {
  printf "wall-clock speedup vs baseline: parallel %.2fx, parallel-1-thread %.2fx, single-stream %.2fx\n", b/o, b/o1, b/s }'
awk -v b="$BC" -v o="$OC" -v s="$SC" 'BEGIN { printf "CPU-time ratio baseline/ours: parallel %.2fx, single-stream %.2fx\n", b/o, b/s }'
echo "load average during run: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -z "${2:-}" ]; then rm -rf "$WORK"; fi
