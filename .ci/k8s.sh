#!/usr/bin/env bash
# Build the test Kubernetes API from Go modules: kube-apiserver,
# kube-controller-manager, kube-scheduler, etcd, kwok (fake nodes), helm and
# kubectl, at the versions pinned in pins.sh. tests/k8s/ starts them on
# loopback (kubectl: the client the nodes' shell scripts run, as
# `k3s kubectl`, against that API).
# Container images cannot be pulled and K3s cannot be built here, but these can.
#
# Each tool is built in a wrapper main module generated in the cache (never
# in the repo) that requires the upstream module at its pin. k8s.io/kubernetes
# requires its staging modules (k8s.io/api, ...) at v0.0.0 and replaces them
# with ./staging/src/...: the wrapper repeats those replaces pointing at the
# published staging modules of the same release instead. kubectl is built
# from the same module the same way, as a tool of its own: its stamp is its
# own, so adding it rebuilt none of the others.
#
# Idempotent: with a warm cache it checks one stamp per tool (the module, the
# version and the build flags) and each binary's version, then prints the bin
# directory on stdout. Progress lines go to stderr, go's output to
# $DIR/logs/<tool>.log. Cold: about 20 minutes on 2 cores. Offline first,
# online only for modules missing from Go's module cache (.ci/lib/gomod.sh).
#
#   --cached-only        print the bin directory if everything is built, else
#                        name what is missing and exit 1; never build
#   MICROCLOUD_K8S_DIR   cache root (default ~/.cache/microcloud-k8s)
#   GO                   go binary (default: see mc_find_go in pins.sh)
set -euo pipefail

HERE=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source-path=SCRIPTDIR source=pins.sh
source "$HERE/pins.sh"
# shellcheck source-path=SCRIPTDIR source=lib/gomod.sh
source "$HERE/lib/gomod.sh"
MC_LOG_NAME=k8s.sh

ROOT=${MICROCLOUD_K8S_DIR:-$HOME/.cache/microcloud-k8s}
DIR=$ROOT/v$K8S_VERSION
BIN=$DIR/bin
LOGS=$DIR/logs

log() { mc_log "$@"; }
die() { log "$*"; exit 1; }

# What a stamp records, per tool: a change to any of it rebuilds that tool.
K8S_LDFLAGS=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  K8S_LDFLAGS+=" -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=${K8S_VERSION%%.*}"
  minor=${K8S_VERSION#*.}
  K8S_LDFLAGS+=" -X $pkg.gitMinor=${minor%%.*} -X $pkg.gitTreeState=clean"
done
K8S_LDFLAGS="-s -w$K8S_LDFLAGS"
helm_minor=${K8S_STAGING_VERSION#*.}; helm_minor=${helm_minor%%.*}
HELM_LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  HELM_LDFLAGS+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$helm_minor"
done
ETCD_LDFLAGS="-s -w"
KWOK_LDFLAGS="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=v$KWOK_VERSION -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=v$K8S_VERSION"

TOOLS=(etcd kubernetes kwok helm kubectl)
# tool -> binaries it makes
binaries() {
  case $1 in
    kubernetes) echo kube-apiserver kube-controller-manager kube-scheduler ;;
    *) echo "$1" ;;
  esac
}
want() {
  case $1 in
    etcd) echo "go.etcd.io/etcd/server/v3@v$ETCD_VERSION ldflags: $ETCD_LDFLAGS" ;;
    kubernetes) echo "k8s.io/kubernetes@v$K8S_VERSION staging: v$K8S_STAGING_VERSION ldflags: $K8S_LDFLAGS" ;;
    kubectl) echo "k8s.io/kubernetes@v$K8S_VERSION ./cmd/kubectl staging: v$K8S_STAGING_VERSION ldflags: $K8S_LDFLAGS" ;;
    kwok) echo "sigs.k8s.io/kwok@v$KWOK_VERSION ldflags: $KWOK_LDFLAGS" ;;
    helm) echo "helm.sh/helm/v3@v$HELM_VERSION ldflags: $HELM_LDFLAGS" ;;
  esac
}
# binary -> what its version output must contain
version_check() {
  local out
  case $1 in
    kube-*) out=$("$BIN/$1" --version 2>&1) && [[ $out == *"Kubernetes v$K8S_VERSION"* ]] ;;
    kubectl) out=$("$BIN/kubectl" version --client 2>&1) && [[ $out == *"Client Version: v$K8S_VERSION"* ]] ;;
    etcd) out=$("$BIN/etcd" --version 2>&1) && [[ $out == *"etcd Version: $ETCD_VERSION"* ]] ;;
    kwok) out=$("$BIN/kwok" --version 2>&1) && [[ $out == *"$KWOK_VERSION"* ]] ;;
    helm) out=$("$BIN/helm" version --short 2>&1) && [[ $out == "v$HELM_VERSION"* ]] ;;
  esac
}
is_current() {
  local b
  [[ -f $BIN/.stamp-$1 && "$(cat "$BIN/.stamp-$1")" == "$(want "$1")" ]] || return 1
  for b in $(binaries "$1"); do
    [[ -x $BIN/$b ]] && version_check "$b" || return 1
  done
}
missing() {
  local t out=()
  for t in "${TOOLS[@]}"; do is_current "$t" || out+=("$t"); done
  echo "${out[*]}"
}

todo=$(missing)
if [[ -z $todo ]]; then
  echo "$BIN"
  exit 0
fi
if [[ ${1:-} == --cached-only ]]; then
  log "not built in $BIN: $todo (bash .ci/k8s.sh builds them)"
  exit 1
fi

mkdir -p "$BIN" "$LOGS"
# Two concurrent runs (parallel CI jobs sharing a cache) build once.
exec 9>"$DIR/.lock"
flock 9

# Never fetch another toolchain: build with the installed one or fail.
# -p 2: the API server's link alone peaks at a few GB; 2 cores are all we assume.
mc_go_setup || exit 1

# wrapper TOOL MODULE VERSION -> a fresh wrapper module in $DIR/src/TOOL
# requiring MODULE@VERSION with the same go line, seeded with upstream's go.sum.
wrapper() {
  local tool=$1 mod=$2 ver=$3 up src=$DIR/src/$1
  up=$(mc_mod_dir "$mod@$ver") || return 1
  [[ -f $up/go.mod ]] || { log "$tool: $mod@$ver has no go.mod"; return 1; }
  rm -rf "$src"; mkdir -p "$src"
  {
    printf 'module microcloud.local/%s\n\ngo %s\n\nrequire %s %s\n' \
      "$tool" "$(sed -n 's/^go \(.*\)$/\1/p' "$up/go.mod")" "$mod" "$ver"
  } >"$src/go.mod"
  cp "$up/go.sum" "$src/go.sum"; chmod u+w "$src/go.sum"
  echo "$up"
}

build() {
  local tool=$1 start=$SECONDS golog=$LOGS/$1.log src=$DIR/src/$1 up ldflags pkgs=()
  case $tool in
    etcd)
      up=$(wrapper etcd go.etcd.io/etcd/server/v3 "v$ETCD_VERSION") || return 1
      ldflags=$ETCD_LDFLAGS; pkgs=(go.etcd.io/etcd/server/v3) ;;
    kubernetes|kubectl)
      up=$(wrapper "$tool" k8s.io/kubernetes "v$K8S_VERSION") || return 1
      # The staging replaces, re-pointed at the published modules.
      local staging
      staging=$(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/k8s.io/.*$#\1#p' "$up/go.mod")
      [[ -n $staging ]] || { log "$tool: no staging replaces in $up/go.mod"; return 1; }
      {
        echo
        grep '^godebug ' "$up/go.mod" || true   # upstream's runtime defaults, as its own build has them
        echo
        echo "replace ("
        local m; for m in $staging; do printf '\t%s => %s v%s\n' "$m" "$m" "$K8S_STAGING_VERSION"; done
        echo ")"
      } >>"$src/go.mod"
      ldflags=$K8S_LDFLAGS
      if [[ $tool == kubectl ]]; then
        pkgs=(k8s.io/kubernetes/cmd/kubectl)
      else
        pkgs=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler)
      fi ;;
    kwok)
      up=$(wrapper kwok sigs.k8s.io/kwok "v$KWOK_VERSION") || return 1
      ldflags=$KWOK_LDFLAGS; pkgs=(sigs.k8s.io/kwok/cmd/kwok) ;;
    helm)
      up=$(wrapper helm helm.sh/helm/v3 "v$HELM_VERSION") || return 1
      ldflags=$HELM_LDFLAGS; pkgs=(helm.sh/helm/v3/cmd/helm) ;;
  esac
  log "$tool: building $(want "$tool" | cut -d' ' -f1) (go output: $golog)"
  mkdir -p "$src/out"
  # One package per go build, so that -o names the binary after its tool
  # (etcd's main package is the module root, go.etcd.io/etcd/server/v3).
  local pkg b
  for pkg in "${pkgs[@]}"; do
    b=${pkg##*/}; [[ $tool == etcd ]] && b=etcd
    if ! (cd "$src" && mc_offline_first "$GO" build -p 2 -trimpath -ldflags "$ldflags" -o "out/$b" "$pkg") >>"$golog" 2>&1; then
      log "$tool: build failed; last lines of $golog:"; tail -n 15 "$golog" >&2; return 1
    fi
  done
  for b in $(binaries "$tool"); do mv -f "$src/out/$b" "$BIN/$b"; done
  for b in $(binaries "$tool"); do
    version_check "$b" || { log "$tool: $BIN/$b does not report the pinned version"; return 1; }
  done
  want "$tool" >"$BIN/.stamp-$tool"
  local made; read -ra made <<<"$(binaries "$tool")"
  log "$tool: built in $((SECONDS - start))s ($(cd "$BIN" && du -ch "${made[@]}" | tail -n 1 | cut -f1))"
}

log "building with $("$GO" env GOVERSION): $(missing)"
total=$SECONDS
failed=()
for t in "${TOOLS[@]}"; do
  is_current "$t" && continue
  : >"$LOGS/$t.log"
  build "$t" || failed+=("$t")
done
[[ ${#failed[@]} -eq 0 ]] || die "failed: ${failed[*]} (logs: $LOGS)"
log "all built in $((SECONDS - total))s: $BIN ($(du -sh "$BIN" | cut -f1))"
echo "$BIN"
