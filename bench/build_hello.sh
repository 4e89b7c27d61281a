#!/bin/sh
# Cold and fully cached `imgfarm build` of examples/hello as an unprivileged
# user, with the time spent per RUN step (snapshot unpack, namespace setup,
# process, diff+compress) from the solver's info log.
#
# usage: sudo bench/build_hello.sh [IMGFARM_BIN] [PLATFORMS] [USER]
#   IMGFARM_BIN defaults to target/release/imgfarm, PLATFORMS to linux/amd64,
#   USER to imgfarm-test (made by scripts/setup.sh --dev).
set -eu
BIN=$(realpath "${1:-target/release/imgfarm}")
P=${2:-linux/amd64}
USER_NAME=${3:-imgfarm-test}
ROOT=$(dirname "$(realpath "$0")")/..
WORK=$(mktemp -d)
chown "$USER_NAME" "$WORK"
as_user() { setpriv --reuid="$USER_NAME" --regid="$USER_NAME" --init-groups -- "$@"; }
cp -r "$ROOT/examples/hello" "$WORK/hello"
chown -R "$USER_NAME" "$WORK/hello"
as_user "$BIN" --state "$WORK/state" debug seed-busybox >/dev/null
now() { date +%s.%N; }
s=$(now)
as_user env IMGFARM_LOG=info "$BIN" --state "$WORK/state" build --progress plain \
  --platform "$P" -t example/hello "$WORK/hello" >"$WORK/cold.log" 2>&1
e=$(now)
cold=$(echo "$e - $s" | bc)
s=$(now)
as_user "$BIN" --state "$WORK/state" build --progress plain \
  --platform "$P" -t example/hello "$WORK/hello" >"$WORK/cached.log" 2>&1
e=$(now)
cached=$(echo "$e - $s" | bc)
echo "platforms=$P cold=${cold}s cached=${cached}s"
echo "BuildKit (issue 5 figures, 2-stage/2 RUN/3 COPY): cold 0.32s cached 0.16s"
echo "ratio cold $(echo "scale=2; $cold / 0.32" | bc)x cached $(echo "scale=2; $cached / 0.16" | bc)x"
sed 's/\x1b\[[0-9;]*m//g' "$WORK/cold.log" | grep -o 'RUN timings.*\|unpacked .*' || true
grep -B1 ' DONE ' "$WORK/cold.log" | grep -v '^--' | paste - - | sed 's/\t/  ->  /'
as_user unshare --map-auto --map-root-user rm -rf "$WORK/state"
rm -rf "$WORK"
