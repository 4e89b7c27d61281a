#!/usr/bin/env bash
# Apply site.yml FOR REAL to this host without changing it, twice, and check that the second run
# reports changed=0 (idempotence). The play runs in a private mount namespace whose / is an
# overlay over the host's / with its upper layer in a tmpfs, so users, /etc/subuid, units, the
# binary and apt's changes vanish when it ends. /proc/sys and /sys are the host's, mounted
# read-only (a missing binfmt registration makes the run fail instead of registering it on the
# host); the network is the host's.
#
#   sudo ansible/sandbox-apply.sh INVENTORY [ansible-playbook args...]
#   SANDBOX_CHECK='cmd' runs cmd inside the sandbox after the two runs (e.g. to look at the
#   result: runuser -u imgfarm-worker -- unshare --user --map-auto --map-root-user id -u).
set -euo pipefail
die() { echo "sandbox-apply: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (it needs mount namespaces)"

if [ "${1:-}" != --inside ]; then
  [ $# -ge 1 ] || die "usage: sandbox-apply.sh INVENTORY [ansible-playbook args...]"
  inv=$(readlink -f "$1"); shift
  [ -f "$inv" ] || die "no inventory at $inv"
  dir=$(mktemp -d /tmp/imgfarm-sandbox.XXXXXX)
  trap 'rmdir "$dir"' EXIT
  unshare --mount --propagation private "$(readlink -f "$0")" --inside "$dir" "$inv" "$@"
  exit
fi

shift; dir=$1; inv=$2; shift 2
playbooks=$(dirname "$(readlink -f "$0")")
mount -t tmpfs -o mode=0700 imgfarm-sandbox "$dir"
mkdir "$dir/upper" "$dir/work" "$dir/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$dir/upper,workdir=$dir/work" "$dir/root"
r=$dir/root
for m in proc dev sys; do mount --rbind "/$m" "$r/$m"; done
mount --rbind "$r/proc/sys" "$r/proc/sys"
mount -o remount,bind,ro "$r/proc/sys"
if mountpoint -q "$r/proc/sys/fs/binfmt_misc"; then
  mount -o remount,bind,ro "$r/proc/sys/fs/binfmt_misc"
fi
mount -o remount,bind,ro "$r/sys"
# pivot_root rather than chroot: a chrooted process may not create user namespaces, and the
# result should be checkable the way a worker uses it.
cd "$r"; mkdir -p .oldroot; pivot_root . .oldroot; umount -l /.oldroot; rmdir /.oldroot
cd "$playbooks"

export ANSIBLE_NOCOLOR=1 ANSIBLE_RETRY_FILES_ENABLED=0 ANSIBLE_LOCALHOST_WARNING=0
run=(ansible-playbook -i "$inv" -e ansible_python_interpreter=/usr/bin/python3 site.yml "$@")
for n in 1 2; do
  if ! out=$("${run[@]}" 2>&1); then
    echo "$out" | tail -40
    die "run $n failed"
  fi
  echo "$out" | grep -E '^[^ ]+ +: ok=' | sed "s/^/run $n: /"
done
if echo "$out" | grep -E '^[^ ]+ +: ok=' | grep -vq 'changed=0 '; then
  echo "$out" | grep -E '^(TASK|changed)' | grep -B1 '^changed'
  die "the second run changed something: not idempotent"
fi
echo "sandbox-apply: idempotent (second run changed=0)"
if [ -n "${SANDBOX_CHECK:-}" ]; then
  bash -c "$SANDBOX_CHECK"
fi
