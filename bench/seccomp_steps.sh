#!/bin/sh
# Cost of the default seccomp profile per RUN step: 20 `RUN true` steps with --no-cache,
# sandboxed (filter installed) vs `--security=insecure` (no filter; every capability),
# plus one syscall-heavy step (2 million read/write calls through `dd bs=1`), as the
# unprivileged user. Prints the median of RUNS builds of each; the two kinds alternate.
#
# usage: sudo bench/seccomp_steps.sh [IMGFARM_BIN] [RUNS] [USER]
#   IMGFARM_BIN defaults to target/release/imgfarm, RUNS to 5, USER to imgfarm-test.
set -eu
BIN=$(realpath "${1:-target/release/imgfarm}")
RUNS=${2:-5}
USER_NAME=${3:-imgfarm-test}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
chown "$USER_NAME" "$WORK"
as_user() { setpriv --reuid="$USER_NAME" --regid="$USER_NAME" --init-groups -- "$@"; }
as_user "$BIN" --state "$WORK/state" debug seed-busybox >/dev/null
mk() { # dir, RUN flags, command
  mkdir -p "$WORK/$1"
  { echo "FROM busybox"; i=0; while [ $i -lt 20 ]; do echo "RUN $2 $3 # $i"; i=$((i+1)); done; } >"$WORK/$1/Dockerfile"
}
mk filtered "" true
mk unfiltered "--security=insecure" true
mkdir -p "$WORK/dd-filtered" "$WORK/dd-unfiltered"
printf 'FROM busybox\nRUN dd if=/dev/zero of=/dev/null bs=1 count=1000000 2>/dev/null\n' >"$WORK/dd-filtered/Dockerfile"
printf 'FROM busybox\nRUN --security=insecure dd if=/dev/zero of=/dev/null bs=1 count=1000000 2>/dev/null\n' >"$WORK/dd-unfiltered/Dockerfile"
chown -R "$USER_NAME" "$WORK"
now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# Filtered and unfiltered builds alternate, so a change in the machine's load hits both.
for pair in "filtered unfiltered" "dd-filtered dd-unfiltered"; do
  r=0
  while [ $r -lt "$RUNS" ]; do
    for case in $pair; do
      s=$(now)
      as_user "$BIN" --state "$WORK/state" build --progress plain --no-cache \
        "$WORK/$case" >"$WORK/$case.log" 2>&1 || { cat "$WORK/$case.log"; exit 1; }
      e=$(now)
      echo "$e - $s" | bc >>"$WORK/$case.times"
    done
    r=$((r+1))
  done
  for case in $pair; do
    median <"$WORK/$case.times" | xargs printf "%-14s %6.2f s (median of $RUNS)\n" "$case"
  done
done
