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

run_imgfarm() {
    IMGFARM_BENCH_TREE="$tree" "$bin" --ignored --nocapture --quiet 2>/dev/null | grep '^imgfarm-context'
}
run_baseline() {
    local start end
    start=$(date +%s.%N)
    (cd "$tree" && find . -type f -print0 | sort -z | xargs -0 sha256sum >/dev/null)
    end=$(date +%s.%N)
    echo "$end - $start" | bc -l
}

run_imgfarm >/dev/null; run_baseline >/dev/null   # warm the page cache
best_i=999; best_b=999
for _ in 1 2 3; do
    line=$(run_imgfarm)
    t=$(echo "$line" | sed -n 's/.*seconds=\([0-9.]*\).*/\1/p')
    best_i=$(echo "if ($t < $best_i) $t else $best_i" | bc -l)
    b=$(run_baseline)
    best_b=$(echo "if ($b < $best_b) $b else $best_b" | bc -l)
done
echo "$line"
printf 'imgfarm select+digest: %.3f s (best of 3)\n' "$best_i"
printf 'find|sort|xargs sha256sum: %.3f s (best of 3)\n' "$best_b"
printf 'ratio imgfarm/baseline: %.2f\n' "$(echo "$best_i / $best_b" | bc -l)"
