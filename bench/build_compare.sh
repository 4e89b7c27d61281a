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
RUNS=${RUNS:-3}
CASES=("$@")
[ ${#CASES[@]} -eq 0 ] && CASES=(multistage)
FARM_USER=${FARM_USER:-imgfarm-test}
DOCKER=/usr/bin/docker

die() { echo "build_compare: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (dockerd and buildah are rootful; imgfarm runs as $FARM_USER)"
id "$FARM_USER" >/dev/null 2>&1 || die "no user $FARM_USER: run scripts/setup.sh --dev or any e2e test once"
for t in /usr/sbin/dockerd $DOCKER buildah skopeo docker-registry /usr/sbin/runc setpriv; do
    command -v "$t" >/dev/null || die "$t is missing (scripts/setup.sh --dev)"
done
LAYOUT=$(ls -d /tmp/imgfarm-testkit-0/base-*/oci 2>/dev/null | head -1 || true)
[ -n "$LAYOUT" ] && [ -f "$LAYOUT/index.json" ] ||
    die "no base-image layout: run \`cargo test -p imgfarm-e2e --test base_images_roundtrip\` once"

if [ -z "${IMGFARM:-}" ]; then   # IMGFARM=/path/to/release/imgfarm skips the build
    echo "building imgfarm (release)..." >&2
    (cd "$ROOT" && cargo build --release -q -p imgfarm) || die "cargo build --release failed"
    IMGFARM="$ROOT/target/release/imgfarm"
fi

WORK=$(mktemp -d /tmp/imgfarm-bench-XXXXXX)
chmod 755 "$WORK"
REG_PID="" DOCKERD_PID=""
cleanup() {
    set +e
    if [ -n "$DOCKERD_PID" ]; then
        kill -TERM "$DOCKERD_PID" 2>/dev/null
        for _ in $(seq 200); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.1; done
    fi
    [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null
    for br in "$WORK"/buildah/r*; do
        [ -d "$br" ] || continue
        buildah --root "$br/root" --runroot "$br/run" rm -a >/dev/null 2>&1
        buildah --root "$br/root" --runroot "$br/run" rmi -af >/dev/null 2>&1
    done
    # The user's state holds files owned by its subordinate ids: empty it inside its userns.
    [ -d "$WORK/user" ] && setpriv --reuid="$FARM_USER" --regid="$FARM_USER" --init-groups -- \
        unshare --map-auto --map-root-user sh -c 'rm -rf "$1"/* "$1"/.[!.]*' sh "$WORK/user" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- loopback registry with busybox ---------------------------------------------------------
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/registry"
cat > "$WORK/registry/config.yml" <<EOF
version: 0.1
storage: {filesystem: {rootdirectory: $WORK/registry/data}}
http: {addr: 127.0.0.1:$PORT}
log: {level: error}
EOF
docker-registry serve "$WORK/registry/config.yml" >"$WORK/registry/log" 2>&1 &
REG_PID=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.1; done
BASE="127.0.0.1:$PORT/busybox:latest"
skopeo copy -q --dest-tls-verify=false "oci:$LAYOUT:latest" "docker://$BASE" ||
    skopeo copy -q --all --dest-tls-verify=false "oci:$LAYOUT:latest" "docker://$BASE"

# --- warm dockerd ----------------------------------------------------------------------------
D="$WORK/dockerd"
mkdir -p "$D"
setsid /usr/sbin/dockerd --data-root "$D/root" --exec-root "$D/exec" -H "unix://$D/docker.sock" \
    --pidfile "$D/dockerd.pid" --iptables=false --ip-masq=false --bridge=none \
    --insecure-registry "127.0.0.1:$PORT" >"$D/log" 2>&1 &
DOCKERD_PID=$!
mkdir -p "$D/cli" && echo "{}" > "$D/cli/config.json"
export DOCKER_HOST="unix://$D/docker.sock" DOCKER_BUILDKIT=1 DOCKER_CONFIG="$D/cli"
for _ in $(seq 300); do $DOCKER version >/dev/null 2>&1 && break; sleep 0.1; done
$DOCKER version >/dev/null 2>&1 || die "dockerd did not start: $(tail -5 "$D/log")"
$DOCKER pull -q "$BASE" >/dev/null   # warm: the base is local, like a seeded imgfarm store

# --- helpers ---------------------------------------------------------------------------------
now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2-$1:.3f}')"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
as_user() { setpriv --reuid="$FARM_USER" --regid="$FARM_USER" --init-groups -- env HOME="$WORK/user" "$@"; }

mkdir -p "$WORK/user"
chown "$FARM_USER:" "$WORK/user"
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
docker_cold_reset() {
    $DOCKER rmi -f bench/x >/dev/null 2>&1 || true
    $DOCKER builder prune -af >/dev/null 2>&1 || true
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
timed() { local t0; t0=$(now); "$@"; elapsed "$t0" "$(now)"; }

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
        docker_cold_reset
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
            "$(python3 -c "print($i/$k)")" "$(python3 -c "print($b/$k)")"
    done
    echo "  (medians of $RUNS; imgfarm cold runs: ${ic[*]}; cached: ${ih[*]})" >&2
done
echo "targets: imgfarm cached <= 1.0x BuildKit, cold <= 1.5x BuildKit" >&2
