# Shared set-up of the side-by-side build benchmarks (sourced, not run): a work dir, a loopback
# docker-registry, a warm private dockerd 20.10 (BuildKit), timing helpers, and the farm user
# who runs imgfarm rootless. The caller sets ROOT and may set FARM_USER, RUNS, IMGFARM.
# Everything started here is stopped by PID on exit; subordinate-id files are removed from
# inside the user's namespace.

FARM_USER=${FARM_USER:-imgfarm-test}
RUNS=${RUNS:-3}
DOCKER=/usr/bin/docker
BENCH=${BENCH:-$(basename "$0" .sh)}

die() { echo "$BENCH: $*" >&2; exit 1; }

require_reference_tools() {
    [ "$(id -u)" = 0 ] || die "run as root (dockerd is rootful; imgfarm runs as $FARM_USER)"
    id "$FARM_USER" >/dev/null 2>&1 || die "no user $FARM_USER: run scripts/setup.sh --dev"
    for t in /usr/sbin/dockerd $DOCKER skopeo docker-registry setpriv "$@"; do
        command -v "$t" >/dev/null || die "$t is missing (scripts/setup.sh --dev)"
    done
}

build_imgfarm_release() {
    if [ -z "${IMGFARM:-}" ]; then # IMGFARM=/path/to/release/imgfarm skips the build
        echo "building imgfarm (release)..." >&2
        (cd "$ROOT" && cargo build --release -q -p imgfarm) || die "cargo build --release failed"
        IMGFARM="$ROOT/target/release/imgfarm"
    fi
}

WORK=$(mktemp -d /tmp/imgfarm-bench-XXXXXX)
chmod 755 "$WORK"
REG_PID="" DOCKERD_PID=""
EXTRA_CLEANUP=()
reference_cleanup() {
    set +e
    for c in "${EXTRA_CLEANUP[@]}"; do eval "$c"; done
    if [ -n "$DOCKERD_PID" ]; then
        kill -TERM "$DOCKERD_PID" 2>/dev/null
        for _ in $(seq 200); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.1; done
    fi
    [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null
    # The user's states hold files owned by its subordinate ids: empty them inside its userns.
    [ -d "$WORK/user" ] && setpriv --reuid="$FARM_USER" --regid="$FARM_USER" --init-groups -- \
        unshare --map-auto --map-root-user sh -c 'rm -rf "$1"/* "$1"/.[!.]*' sh "$WORK/user" 2>/dev/null
    rm -rf "$WORK"
}
trap reference_cleanup EXIT

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_registry: a plain-http docker-registry on 127.0.0.1:$PORT
start_registry() {
    PORT=$(free_port)
    mkdir -p "$WORK/registry"
    cat > "$WORK/registry/config.yml" <<REG
version: 0.1
storage: {filesystem: {rootdirectory: $WORK/registry/data}}
http: {addr: 127.0.0.1:$PORT}
log: {level: error}
REG
    docker-registry serve "$WORK/registry/config.yml" >"$WORK/registry/log" 2>&1 &
    REG_PID=$!
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.1; done
}

# push_layout LAYOUT REF NAME: push one ref of an OCI layout as 127.0.0.1:$PORT/NAME
push_layout() {
    skopeo copy -q --all --dest-tls-verify=false "oci:$1:$2" "docker://127.0.0.1:$PORT/$3"
}

# start_dockerd: a warm private dockerd (DOCKER_HOST exported), trusting the loopback registry
start_dockerd() {
    local D="$WORK/dockerd"
    mkdir -p "$D/cli"
    setsid /usr/sbin/dockerd --data-root "$D/root" --exec-root "$D/exec" -H "unix://$D/docker.sock" \
        --pidfile "$D/dockerd.pid" --iptables=false --ip-masq=false --bridge=none \
        --insecure-registry "127.0.0.1:$PORT" >"$D/log" 2>&1 &
    DOCKERD_PID=$!
    echo "{}" > "$D/cli/config.json"
    export DOCKER_HOST="unix://$D/docker.sock" DOCKER_BUILDKIT=1 DOCKER_CONFIG="$D/cli"
    for _ in $(seq 300); do $DOCKER version >/dev/null 2>&1 && break; sleep 0.1; done
    $DOCKER version >/dev/null 2>&1 || die "dockerd did not start: $(tail -5 "$D/log")"
}

docker_cold_reset() { # tag
    $DOCKER rmi -f "$1" >/dev/null 2>&1 || true
    $DOCKER builder prune -af >/dev/null 2>&1 || true
}

now() { date +%s.%N; }
elapsed() { /usr/bin/python3 -c "print(f'{$2-$1:.3f}')"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ratio() { /usr/bin/python3 -c "print(f'{$1/$2:.2f}')"; }
timed() { local t0; t0=$(now); "$@"; elapsed "$t0" "$(now)"; }
as_user() { setpriv --reuid="$FARM_USER" --regid="$FARM_USER" --init-groups -- env HOME="$WORK/user" "$@"; }

# user_dir: $WORK/user, owned by the farm user
user_dir() {
    mkdir -p "$WORK/user"
    chown "$FARM_USER:" "$WORK/user"
}
