#!/usr/bin/env bash
# Build the same Dockerfiles with imgfarm (daemonless, rootless, release build, as the farm
# user), BuildKit (a warm private dockerd 20.10, rootful) and buildah 1.28 (rootful, runc,
# --network none), cold and fully cached, side by side in one run, and print medians and
# ratios against BuildKit.
#
#   sudo bench/build_compare.sh [CASE...]        (cases of tests/oracle/; default: multistage)
#   RUNS=5 sudo bench/build_compare.sh multistage copy_from
#
# All three builders start FROM the same busybox (the testkit base-image layout, built by any
# e2e test run, e.g. `cargo test -p imgfarm-e2e --test base_images_roundtrip`): seeded into
# imgfarm's store, pushed to a loopback docker-registry for dockerd and buildah.
# "cold" = nothing cached except the base image (imgfarm: fresh state dir with busybox seeded;
# dockerd: `builder prune -af` and the image removed; buildah: fresh --root with the base pulled).
# "cached" = the same build again, unchanged.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CASES=("$@")
[ ${#CASES[@]} -eq 0 ] && CASES=(multistage)
# shellcheck source=bench/lib/reference.sh
. "$ROOT/bench/lib/reference.sh"
require_reference_tools buildah /usr/sbin/runc
LAYOUT=$(ls -d /tmp/imgfarm-testkit-0/base-*/oci 2>/dev/null | head -1 || true)
[ -n "$LAYOUT" ] && [ -f "$LAYOUT/index.json" ] ||
    die "no base-image layout: run \`cargo test -p imgfarm-e2e --test base_images_roundtrip\` once"
build_imgfarm_release

buildah_cleanup() {
    for br in "$WORK"/buildah/r*; do
        [ -d "$br" ] || continue
        buildah --root "$br/root" --runroot "$br/run" rm -a >/dev/null 2>&1
        buildah --root "$br/root" --runroot "$br/run" rmi -af >/dev/null 2>&1
    done
}
EXTRA_CLEANUP+=(buildah_cleanup)

# --- loopback registry with busybox, warm dockerd --------------------------------------------
start_registry
BASE="127.0.0.1:$PORT/busybox:latest"
push_layout "$LAYOUT" latest busybox:latest
start_dockerd
$DOCKER pull -q "$BASE" >/dev/null   # warm: the base is local, like a seeded imgfarm store

user_dir
cp -a "$LAYOUT" "$WORK/user/busybox-oci"
chown -R "$FARM_USER:" "$WORK/user/busybox-oci"

imgfarm_fresh_state() {
    local s="$WORK/user/state-$1"
    as_user "$IMGFARM" --state "$s" debug import-layout "$WORK/user/busybox-oci" \
        --ref latest --name busybox:latest >/dev/null
    echo "$s"
}
imgfarm_build() { # state ctx
    as_user "$IMGFARM" --state "$1" build --progress plain --platform linux/amd64 \
        --build-arg BASE=busybox:latest -t "bench/x" $(extra_args "$2") "$2" >"$WORK/last.log" 2>&1 ||
        { cat "$WORK/last.log" >&2; die "imgfarm build failed"; }
}
docker_build() { # ctx
    $DOCKER build -q --network none --platform linux/amd64 --build-arg "BASE=$BASE" \
        -t bench/x $(extra_args "$1") "$1" >"$WORK/last.log" 2>&1 ||
        { cat "$WORK/last.log" >&2; die "docker build failed"; }
}
BUILDAH_N=0
buildah_fresh_root() {
    BUILDAH_N=$((BUILDAH_N + 1))
    BR="$WORK/buildah/r$BUILDAH_N"
    mkdir -p "$BR"
    buildah --root "$BR/root" --runroot "$BR/run" pull -q --tls-verify=false "$BASE" >/dev/null
}
buildah_build() { # ctx
    buildah --root "$BR/root" --runroot "$BR/run" bud --layers --runtime /usr/sbin/runc \
        --network none --tls-verify=false --platform linux/amd64 --build-arg "BASE=$BASE" \
        -t bench/x $(extra_args "$1") "$1" >"$WORK/last.log" 2>&1 ||
        { cat "$WORK/last.log" >&2; die "buildah bud failed"; }
}
extra_args() { # ctx: tests/oracle/<case>/oracle.args, one arg a line, {dir} = the ctx
    [ -f "$1/oracle.args" ] || return 0
    grep -v '^#' "$1/oracle.args" | sed "s#{dir}#$1#g"
}

printf '%-14s %-8s %9s %9s %9s %10s %10s\n' case phase imgfarm buildkit buildah imgfarm/bk buildah/bk
for case in "${CASES[@]}"; do
    src="$ROOT/tests/oracle/$case"
    [ -f "$src/Dockerfile" ] || die "no such case: $src"
    ctx="$WORK/user/ctx-$case"
    cp -a "$src" "$ctx"
    chown -R "$FARM_USER:" "$ctx"
    declare -a ic=() ih=() kc=() kh=() bc=() bh=()
    for r in $(seq "$RUNS"); do
        st=$(imgfarm_fresh_state "$case-$r")
        ic+=("$(timed imgfarm_build "$st" "$ctx")")
        ih+=("$(timed imgfarm_build "$st" "$ctx")")
        docker_cold_reset bench/x
        kc+=("$(timed docker_build "$ctx")")
        kh+=("$(timed docker_build "$ctx")")
        buildah_fresh_root
        bc+=("$(timed buildah_build "$ctx")")
        bh+=("$(timed buildah_build "$ctx")")
    done
    for phase in cold cached; do
        if [ $phase = cold ]; then i=$(median "${ic[@]}"); k=$(median "${kc[@]}"); b=$(median "${bc[@]}")
        else i=$(median "${ih[@]}"); k=$(median "${kh[@]}"); b=$(median "${bh[@]}"); fi
        printf '%-14s %-8s %8.3fs %8.3fs %8.3fs %9.2fx %9.2fx\n' "$case" "$phase" "$i" "$k" "$b" \
            "$(ratio "$i" "$k")" "$(ratio "$b" "$k")"
    done
    echo "  (medians of $RUNS; imgfarm cold runs: ${ic[*]}; cached: ${ih[*]})" >&2
done
echo "targets: imgfarm cached <= 1.0x BuildKit, cold <= 1.5x BuildKit" >&2
