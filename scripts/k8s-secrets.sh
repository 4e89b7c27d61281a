#!/usr/bin/env bash
# Kubernetes Secrets for deploy/kubernetes from a farm directory (`imgfarm farm init` /
# `imgfarm farm issue`), made first if it does not exist.
#
#   scripts/k8s-secrets.sh --farm-dir DIR --out OUT [options]
#
#   --farm-dir DIR     the farm directory. Missing or without ca.crt: `imgfarm farm init` makes it
#                      (CA + coordinator certificate for the in-cluster names and every --san).
#                      Existing: used as it is; missing worker/client certificates are issued
#                      when DIR holds ca.key, else it is an error. ca.key never leaves DIR.
#   --out OUT          where to write the Secret manifests (mode 0600) and a kustomization.yaml
#                      listing them: `kubectl apply -k OUT`. Made with mode 0700 when missing;
#                      an existing OUT keeps its mode (a warning when others can use it).
#   --namespace NS     namespace of the Secrets and of the coordinator's DNS names [imgfarm]
#   --san NAME         another name or IP for the coordinator's certificate (clients outside the
#                      cluster, e.g. the LoadBalancer's address); repeatable; only for a new DIR
#   --client NAME      also a Secret for client NAME (imgfarm-client-NAME-tls); repeatable.
#                      NAME must fit a Secret's name: a-z 0-9 - and ., dot-separated parts
#                      starting and ending with a letter or digit, at most 63 characters
#   --imgfarm BIN      the imgfarm binary [imgfarm on PATH]
#   --stdout           also print the manifests (they hold private keys) to stdout, for
#                      `| kubectl apply -f -`: progress always goes to stderr
#
# Secrets (each a volume in the manifests, mounted as the --tls-dir; keys are file names):
#   imgfarm-coordinator-tls      ca.crt coordinator.crt coordinator.key
#   imgfarm-worker-amd64-tls     ca.crt worker-pool-amd64.crt worker-pool-amd64.key
#   imgfarm-worker-arm64-tls     ca.crt worker-pool-arm64.crt worker-pool-arm64.key
#   imgfarm-client-NAME-tls      ca.crt client-NAME.crt client-NAME.key
# Every replica of a worker Deployment shares its pool's certificate and name (pool-ARCH).
# Without --stdout nothing secret is printed: only the files written (on stderr).
set -euo pipefail

die() { echo "k8s-secrets.sh: $*" >&2; exit 2; }

FARM_DIR=
OUT=
NAMESPACE=imgfarm
IMGFARM=imgfarm
STDOUT=0
SANS=()
CLIENTS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --farm-dir) FARM_DIR=${2:?--farm-dir DIR}; shift 2 ;;
    --out) OUT=${2:?--out OUT}; shift 2 ;;
    --namespace) NAMESPACE=${2:?--namespace NS}; shift 2 ;;
    --san) SANS+=("${2:?--san NAME}"); shift 2 ;;
    --client) CLIENTS+=("${2:?--client NAME}"); shift 2 ;;
    --imgfarm) IMGFARM=${2:?--imgfarm BIN}; shift 2 ;;
    --stdout) STDOUT=1; shift ;;
    # The comment block at the top, up to the first line that is not a comment.
    -h | --help) sed -n '1d;/^#/!q;p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (try --help)" ;;
  esac
done
[ -n "$FARM_DIR" ] || die "--farm-dir DIR is required (try --help)"
[ -n "$OUT" ] || die "--out OUT is required (try --help)"
[[ "$NAMESPACE" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || die "--namespace $NAMESPACE: not a namespace name"
command -v "$IMGFARM" >/dev/null 2>&1 || die "no imgfarm binary at '$IMGFARM' (pass --imgfarm BIN)"
# A client's name is in its Secret's name (imgfarm-client-NAME-tls), a DNS-1123 subdomain, and
# in file names here; imgfarm's own rule ([A-Za-z0-9._-], 1-63) allows names Kubernetes refuses.
# Checked before anything is made.
label='[a-z0-9]([-a-z0-9]*[a-z0-9])?'
for c in ${CLIENTS[@]+"${CLIENTS[@]}"}; do
  if ! [[ "$c" =~ ^$label(\.$label)*$ ]] || [ "${#c}" -gt 63 ]; then
    die "--client '$c': not usable in a Secret's name (a-z 0-9 - and ., dot-separated parts starting and ending with a letter or digit, at most 63 characters)"
  fi
done

# The pools of deploy/kubernetes/base (one worker Deployment, certificate and name per arch).
POOLS=(amd64 arm64)
umask 077

if [ ! -f "$FARM_DIR/ca.crt" ]; then
  # The names workers (and in-cluster clients) dial: the Service imgfarm-coordinator.
  svc=imgfarm-coordinator
  names=("$svc" "$svc.$NAMESPACE" "$svc.$NAMESPACE.svc" "$svc.$NAMESPACE.svc.cluster.local")
  args=()
  for n in "${names[@]}" ${SANS[@]+"${SANS[@]}"}; do args+=(--san "$n"); done
  "$IMGFARM" farm init --dir "$FARM_DIR" "${args[@]}" >&2
elif [ "${#SANS[@]}" -gt 0 ]; then
  die "--san only applies to a new farm directory: $FARM_DIR already has ca.crt"
fi

# Issues worker-NAME / client-NAME in FARM_DIR when missing (needs ca.key there).
ensure_leaf() { # role name
  [ -f "$FARM_DIR/$1-$2.crt" ] && [ -f "$FARM_DIR/$1-$2.key" ] && return 0
  [ -f "$FARM_DIR/ca.key" ] ||
    die "$FARM_DIR has no $1-$2.{crt,key} and no ca.key to issue them: run \`imgfarm farm issue --dir DIR --$1 $2\` where ca.key is"
  "$IMGFARM" farm issue --dir "$FARM_DIR" "--$1" "$2" >&2
}
for f in ca.crt coordinator.crt coordinator.key; do
  [ -f "$FARM_DIR/$f" ] || die "$FARM_DIR/$f is missing: is it a farm directory made by \`imgfarm farm init\`?"
done
for a in "${POOLS[@]}"; do ensure_leaf worker "pool-$a"; done
for c in ${CLIENTS[@]+"${CLIENTS[@]}"}; do ensure_leaf client "$c"; done

if [ -d "$OUT" ]; then
  # Not chmod-ed: it may be a directory of the user's (--out .). The files are 0600.
  # shellcheck disable=SC2012 # one directory, -d: only its fixed-width mode string is used
  perms=$(ls -ld -- "$OUT")
  perms=${perms:4:6}
  [ "$perms" = ------ ] ||
    echo "k8s-secrets.sh: warning: $OUT is accessible to group/others (${perms}); the Secrets in it are mode 0600, but consider chmod 0700 $OUT" >&2
else
  mkdir -p -- "$OUT"
  chmod 0700 "$OUT"
fi
# Every manifest is written to OUT/.NAME.tmp first and renamed once all are complete; the
# temporary files (key material) are removed however the script ends.
TMPS=()
cleanup() {
  local t
  for t in ${TMPS[@]+"${TMPS[@]}"}; do rm -f -- "$t"; done
}
trap cleanup EXIT
WRITTEN=()
WHAT=()
# secret NAME FILE...: OUT/.NAME.yaml.tmp, an Opaque Secret whose keys are the files' names.
secret() {
  local name=$1; shift
  local f v tmp="$OUT/.$name.yaml.tmp"
  TMPS+=("$tmp")
  {
    echo "# Made by scripts/k8s-secrets.sh from $FARM_DIR. Holds a private key: keep it out of git."
    echo "apiVersion: v1"
    echo "kind: Secret"
    echo "metadata:"
    echo "  name: $name"
    echo "  namespace: $NAMESPACE"
    echo "  labels:"
    echo "    app.kubernetes.io/name: imgfarm"
    echo "    app.kubernetes.io/part-of: imgfarm"
    echo "type: Opaque"
    echo "data:"
    for f in "$@"; do
      # On its own line: a failing substitution inside echo's argument does not trip set -e.
      # Plain base64 with the newlines removed (macOS's base64 has no -w).
      v=$(base64 <"$FARM_DIR/$f" | tr -d '\n') ||
        die "could not base64-encode $FARM_DIR/$f for Secret $name"
      [ -n "$v" ] || die "$FARM_DIR/$f encoded to nothing (empty file?) for Secret $name"
      echo "  $f: $v"
    done
  } >"$tmp"
  WRITTEN+=("$name.yaml")
  WHAT+=("Secret $NAMESPACE/$name: $*")
}

secret imgfarm-coordinator-tls ca.crt coordinator.crt coordinator.key
for a in "${POOLS[@]}"; do
  secret "imgfarm-worker-$a-tls" ca.crt "worker-pool-$a.crt" "worker-pool-$a.key"
done
for c in ${CLIENTS[@]+"${CLIENTS[@]}"}; do
  secret "imgfarm-client-$c-tls" ca.crt "client-$c.crt" "client-$c.key"
done
TMPS+=("$OUT/.kustomization.yaml.tmp")
{
  echo "# Made by scripts/k8s-secrets.sh: kubectl apply -k $OUT"
  echo "apiVersion: kustomize.config.k8s.io/v1beta1"
  echo "kind: Kustomization"
  echo "resources:"
  printf '  - %s\n' "${WRITTEN[@]}"
} >"$OUT/.kustomization.yaml.tmp"
for i in "${!WRITTEN[@]}"; do
  mv -- "$OUT/.${WRITTEN[$i]}.tmp" "$OUT/${WRITTEN[$i]}"
  echo "wrote $OUT/${WRITTEN[$i]} (${WHAT[$i]})" >&2
done
mv -- "$OUT/.kustomization.yaml.tmp" "$OUT/kustomization.yaml"
echo "wrote $OUT/kustomization.yaml: kubectl apply -k $OUT (after the namespace exists)" >&2

if [ "$STDOUT" = 1 ]; then
  for f in "${WRITTEN[@]}"; do
    echo "---"
    cat "$OUT/$f"
  done
fi
