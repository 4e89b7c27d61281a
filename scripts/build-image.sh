#!/usr/bin/env bash
# Build imgfarm's own image (the Dockerfile at the repository root) with imgfarm itself:
# linux/amd64 from target/PROFILE/imgfarm, plus linux/arm64 when
# target/aarch64-unknown-linux-gnu/PROFILE/imgfarm exists (see README.md, "imgfarm's own image").
#
#   scripts/build-image.sh [--profile release|debug] [--no-strip] [-t NAME:TAG] [IMGFARM BUILD FLAGS...]
#
# e.g. `scripts/build-image.sh -t registry.example/imgfarm:1 --push`. The build itself is rootless
# (run it as an ordinary user) and uses target/PROFILE/imgfarm (or $IMGFARM). The binaries are
# staged into a temp context (same layout as the repository's), without their debug info
# (release: 125 MB -> 24 MB) when strip (aarch64-linux-gnu-strip for arm64) is there.
set -euo pipefail

die() { echo "build-image.sh: $*" >&2; exit 2; }

PROFILE=release
TAG=imgfarm:latest
STRIP=1
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) [ $# -ge 2 ] || die "--profile needs a value (release or debug)"; PROFILE=$2; shift 2 ;;
    --profile=*) PROFILE=${1#*=}; shift ;;
    --no-strip) STRIP=0; shift ;;
    -t | --tag) [ $# -ge 2 ] || die "$1 needs a value (NAME:TAG)"; TAG=$2; shift 2 ;;
    -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) EXTRA+=("$1"); shift ;;
  esac
done
case "$PROFILE" in
  release | debug) ;;
  *) die "--profile $PROFILE: want release or debug" ;;
esac

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR=$REPO/$TARGET_DIR ;; esac

# The ELF machine of a binary (bytes 18-19, little-endian): 62 x86-64, 183 aarch64.
elf_machine() { od -An -t u2 -j 18 -N 2 "$1" 2>/dev/null | tr -d ' '; }

AMD64=$TARGET_DIR/$PROFILE/imgfarm
ARM64=$TARGET_DIR/aarch64-unknown-linux-gnu/$PROFILE/imgfarm
[ -f "$AMD64" ] || die "$AMD64 is missing: build it first (cargo build -p imgfarm$([ "$PROFILE" = release ] && echo ' --release'))"
[ "$(elf_machine "$AMD64")" = 62 ] ||
  die "$AMD64 is not an x86-64 binary: the image takes linux/amd64 from target/$PROFILE (build on an x86-64 host, or cross-build and copy it there)"
PLATFORMS=linux/amd64
if [ -f "$ARM64" ]; then
  [ "$(elf_machine "$ARM64")" = 183 ] || die "$ARM64 is not an aarch64 binary"
  PLATFORMS=linux/amd64,linux/arm64
fi

# The Dockerfile reads target/... in its context: stage the binaries in the same layout.
CONTEXT=$(mktemp -d)
trap 'rm -rf "$CONTEXT"' EXIT
cp "$REPO/.dockerignore" "$CONTEXT/"
stage() { # BINARY STRIP-TOOL
  local rel=${1#"$TARGET_DIR"/} dst
  dst=$CONTEXT/target/$rel
  mkdir -p "$(dirname "$dst")"
  if [ "$STRIP" = 1 ] && command -v "$2" >/dev/null && "$2" --strip-debug -o "$dst" "$1"; then
    return
  fi
  ln "$1" "$dst" 2>/dev/null || cp "$1" "$dst"
}
stage "$AMD64" strip
if [ -f "$ARM64" ]; then stage "$ARM64" aarch64-linux-gnu-strip; fi

IMGFARM=${IMGFARM:-$AMD64}
echo "build-image.sh: $TAG for $PLATFORMS ($PROFILE binaries)" >&2
"$IMGFARM" build --platform "$PLATFORMS" --build-arg "PROFILE=$PROFILE" -t "$TAG" \
  -f "$REPO/Dockerfile" ${EXTRA[@]+"${EXTRA[@]}"} "$CONTEXT"
