#!/usr/bin/env bash
# Real-world Dockerfiles on a Debian bookworm base (issue 12): imgfarm (release build,
# daemonless, rootless as the farm user) against BuildKit (a warm private dockerd 20.10,
# rootful), cold and fully cached, side by side in one run; medians and ratios.
#
#   sudo bench/realworld.sh [CASE...]     cases of bench/realworld/: gcc context apt-cache apt
#   RUNS=5 sudo bench/realworld.sh gcc
#
# Bases: the testkit's Debian layout (made by `scripts/setup.sh --dev` and any test that uses
# DebianBase, e.g. `cargo test -p imgfarm-testkit --test debian_fixture`): `bookworm` minbase
# and `bookworm-dev` (gcc), seeded into imgfarm's store and pulled into dockerd before timing.
# apt installs come from a loopback apt repository (the cached jq/libcap2-bin .debs, indexed
# with dpkg-scanpackages, served by python's http.server on 127.0.0.1); both builders use the
# host network. The `context` case builds a 20,000-file context (generated here).
# "cold" = nothing cached but the base, present and unpacked in both (imgfarm: a fresh state
# with the bases seeded and unpacked by a `RUN true`; dockerd: pulled, then `builder prune
# -af`, which also drops cache mounts); UNPACKED_BASE=0 leaves imgfarm's base packed (each
# cold run then pays the unpack). "cached" = the same build again. "change" = the build
# after a one-line change to the copied source (gcc: hello.c; context: one of the 20,000
# files); the apt cases copy nothing and have no such phase.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CASES=("$@")
[ ${#CASES[@]} -eq 0 ] && CASES=(gcc context apt-cache apt)
# shellcheck source=bench/lib/reference.sh
. "$ROOT/bench/lib/reference.sh"
require_reference_tools dpkg-scanpackages
LAYOUT=$(ls -d /tmp/imgfarm-testkit-*/debian-*/oci 2>/dev/null | head -1 || true)
[ -n "$LAYOUT" ] && [ -f "$LAYOUT/index.json" ] ||
    die "no Debian layout: run \`cargo test -p imgfarm-testkit --test debian_fixture\` once"
APT_DEBS=${IMGFARM_APT_DIR:-/var/cache/imgfarm/apt}
ls "$APT_DEBS"/jq_*_amd64.deb >/dev/null 2>&1 || die "no cached .debs in $APT_DEBS (scripts/setup.sh --dev)"
build_imgfarm_release

# --- loopback apt repository ---------------------------------------------------------------
APT_PID=""
mkdir -p "$WORK/apt"
cp "$APT_DEBS"/*.deb "$WORK/apt/"
(cd "$WORK/apt" && dpkg-scanpackages -m . > Packages 2>/dev/null)
APT_PORT=$(free_port)
/usr/bin/python3 -m http.server "$APT_PORT" --bind 127.0.0.1 --directory "$WORK/apt" \
    >"$WORK/apt.log" 2>&1 &
APT_PID=$!
EXTRA_CLEANUP+=('[ -n "$APT_PID" ] && kill "$APT_PID" 2>/dev/null')
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$APT_PORT/Packages" >/dev/null && break; sleep 0.1; done
APT_SOURCES="deb [trusted=yes] http://127.0.0.1:$APT_PORT/ ./"

# --- registry and warm dockerd with both bases -----------------------------------------------
start_registry
push_layout "$LAYOUT" bookworm debian:bookworm
push_layout "$LAYOUT" bookworm-dev debian:bookworm-dev
start_dockerd
REG="127.0.0.1:$PORT"
$DOCKER pull -q --platform linux/amd64 "$REG/debian:bookworm" >/dev/null
$DOCKER pull -q "$REG/debian:bookworm-dev" >/dev/null

user_dir
cp -aL "$LAYOUT" "$WORK/user/debian-oci"
chown -R "$FARM_USER:" "$WORK/user/debian-oci"

# A state with both bases in the store and unpacked, as dockerd has them after `docker pull`
# (containerd unpacks on pull): one `RUN true` on each base, whose cache the timed builds
# never use.
imgfarm_fresh_state() {
    local s="$WORK/user/state-$1" ref w
    for ref in bookworm bookworm-dev; do
        as_user "$IMGFARM" --state "$s" debug import-layout "$WORK/user/debian-oci" \
            --ref "$ref" --name "$REG/debian:$ref" >/dev/null
        if [ "${UNPACKED_BASE:-1}" = 1 ]; then
            w="$WORK/user/warm-$ref"
            mkdir -p "$w"
            printf 'FROM %s\nRUN true\n' "$REG/debian:$ref" > "$w/Dockerfile"
            chown -R "$FARM_USER:" "$w"
            as_user "$IMGFARM" --state "$s" build --progress quiet --platform linux/amd64 "$w" \
                >/dev/null 2>&1 || die "warming $ref failed"
        fi
    done
    echo "$s"
}
BUILD_ARGS=(--build-arg "BASE=$REG/debian:bookworm" --build-arg "DEV=$REG/debian:bookworm-dev"
    --build-arg "APT_SOURCES=$APT_SOURCES")
imgfarm_build() { # state ctx
    as_user "$IMGFARM" --state "$1" build --progress plain --platform linux/amd64 \
        "${BUILD_ARGS[@]}" -t bench/rw "$2" >"$WORK/last.log" 2>&1 ||
        { cat "$WORK/last.log" >&2; die "imgfarm build failed"; }
}
docker_build() { # ctx
    $DOCKER build -q --network host --platform linux/amd64 "${BUILD_ARGS[@]}" \
        -t bench/rw "$1" >"$WORK/last.log" 2>&1 ||
        { cat "$WORK/last.log" >&2; die "docker build failed"; }
}

make_context() { # dir: the context case plus 20,000 small files in 200 dirs
    cp -a "$ROOT/bench/realworld/context/." "$1/"
    /usr/bin/python3 - "$1" <<'PY'
import os, sys
root = sys.argv[1]
for d in range(200):
    p = os.path.join(root, "files", f"d{d:03}")
    os.makedirs(p, exist_ok=True)
    for f in range(100):
        with open(os.path.join(p, f"f{f:03}.txt"), "w") as fh:
            fh.write(f"file {d}/{f}\n" * (1 + f % 7))
PY
}

printf '%-10s %-7s %9s %9s %10s\n' case phase imgfarm buildkit imgfarm/bk
for case in "${CASES[@]}"; do
    src="$ROOT/bench/realworld/$case"
    [ -f "$src/Dockerfile" ] || die "no such case: $src"
    ctx="$WORK/user/ctx-$case"
    mkdir -p "$ctx"
    if [ "$case" = context ]; then make_context "$ctx"; else cp -a "$src/." "$ctx/"; fi
    chown -R "$FARM_USER:" "$ctx"
    case $case in
        gcc) changed="$ctx/hello.c" ;;
        context) changed="$ctx/files/d000/f000.txt" ;;
        *) changed="" ;;
    esac
    declare -a ic=() ih=() ix=() kc=() kh=() kx=()
    for r in $(seq "$RUNS"); do
        st=$(imgfarm_fresh_state "$case-$r")
        ic+=("$(timed imgfarm_build "$st" "$ctx")")
        ih+=("$(timed imgfarm_build "$st" "$ctx")")
        [ -n "$changed" ] && echo "// imgfarm change $r" >>"$changed" &&
            ix+=("$(timed imgfarm_build "$st" "$ctx")")
        docker_cold_reset bench/rw
        kc+=("$(timed docker_build "$ctx")")
        kh+=("$(timed docker_build "$ctx")")
        [ -n "$changed" ] && echo "// buildkit change $r" >>"$changed" &&
            kx+=("$(timed docker_build "$ctx")")
    done
    for phase in cold cached change; do
        case $phase in
            cold) i=$(median "${ic[@]}"); k=$(median "${kc[@]}") ;;
            cached) i=$(median "${ih[@]}"); k=$(median "${kh[@]}") ;;
            change) [ -n "$changed" ] || continue
                i=$(median "${ix[@]}"); k=$(median "${kx[@]}") ;;
        esac
        printf '%-10s %-7s %8.3fs %8.3fs %9sx\n' "$case" "$phase" "$i" "$k" "$(ratio "$i" "$k")"
    done
    echo "  (medians of $RUNS; imgfarm cold: ${ic[*]}; cached: ${ih[*]}; change: ${ix[*]:-}; BuildKit cold: ${kc[*]}; cached: ${kh[*]}; change: ${kx[*]:-})" >&2
done
echo "targets: imgfarm cold <= 1.0x BuildKit, cached <= 0.5x, change <= 1.0x on each case" >&2
