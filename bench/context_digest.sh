#!/usr/bin/env bash
# Build-context digest speed: imgfarm's BuildContext::select(".") + digest
# against `find | sort | xargs sha256sum` on the same tree, warm page cache.
# Usage: bench/context_digest.sh [FILES] [BIG_FILES]
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-20000}
big=${2:-20}
tree=$(mktemp -d /tmp/imgfarm-bench-ctx.XXXXXX)
trap 'rm -rf "$tree"' EXIT

echo "building tree: $files small files (1-8 KiB) and $big files of 8 MiB in $tree"
python3 - "$tree" "$files" "$big" <<'PY'
import os, random, sys
root, n, big = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(42)
for i in range(n):
    d = os.path.join(root, f"d{i % 50:02d}", f"s{i % 7}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:06d}.txt"), "wb") as f:
        f.write(rng.randbytes(rng.randint(1024, 8192)))
for i in range(big):
    with open(os.path.join(root, f"big{i:02d}.bin"), "wb") as f:
        f.write(rng.randbytes(8 << 20))
PY
du -sh "$tree"

cargo test --release -q -p imgfarm-common --test context_bench --no-run 2>/dev/null
bin=$(cargo test --release -p imgfarm-common --test context_bench --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))/\1/p' | tail -1)

# Each run prints "wall cpu" seconds (cpu = user + sys), so a loaded machine
# can be read through the CPU figure.
run_imgfarm() {
    /usr/bin/time -f '%e %U %S' -o "$tree.time" env IMGFARM_BENCH_TREE="$tree" \
        "$bin" --ignored --nocapture --quiet 2>/dev/null | grep '^imgfarm-context' >"$tree.line"
    awk '{printf "%.3f %.3f\n", $1, $2 + $3}' "$tree.time"
}
run_baseline() {
    (cd "$tree" && /usr/bin/time -f '%e %U %S' -o "$tree.time" \
        sh -c 'find . -type f -print0 | sort -z | xargs -0 sha256sum >/dev/null')
    awk '{printf "%.3f %.3f\n", $1, $2 + $3}' "$tree.time"
}
trap 'rm -rf "$tree" "$tree.time" "$tree.line"' EXIT

run_imgfarm >/dev/null; run_baseline >/dev/null   # warm the page cache
best() { sort -n | head -1; }
imgfarm_runs=$(for _ in 1 2 3; do run_imgfarm; done)
baseline_runs=$(for _ in 1 2 3; do run_baseline; done)
cat "$tree.line"
iw=$(echo "$imgfarm_runs" | awk '{print $1}' | best); ic=$(echo "$imgfarm_runs" | awk '{print $2}' | best)
bw=$(echo "$baseline_runs" | awk '{print $1}' | best); bc_=$(echo "$baseline_runs" | awk '{print $2}' | best)
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
printf 'imgfarm select+digest:     wall %.3f s, cpu %.3f s (best of 3)\n' "$iw" "$ic"
printf 'find|sort|xargs sha256sum: wall %.3f s, cpu %.3f s (best of 3)\n' "$bw" "$bc_"
printf 'ratio imgfarm/baseline:    wall %.2f, cpu %.2f\n' "$(echo "$iw / $bw" | bc -l)" "$(echo "$ic / $bc_" | bc -l)"
