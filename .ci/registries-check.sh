#!/usr/bin/env bash
# Build .ci/registries-check, our reader of K3s' registries.yaml: K3s' own
# loader (github.com/rancher/wharfie/pkg/registries, pinned in its go.mod) plus
# a strict reading of the same types. tests/test_k3s_registries.py runs it on
# every rendered registries.yaml.
#
# Idempotent: a warm run only checks the stamp (the hash of the module's
# files and the go version) and prints the path. Offline first, online only
# for modules missing from Go's module cache (.ci/lib/gomod.sh). Prints the
# binary's path on stdout; progress goes to stderr.
#
#   --cached-only               only answer whether it is built (exit 1 if not); never build
#   MICROCLOUD_TOOLCHAIN_CACHE  cache root (default ~/.cache/microcloud-toolchain)
#   GO                          go binary (default: see mc_find_go in pins.sh)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=pins.sh
source "$HERE/pins.sh"
# shellcheck source-path=SCRIPTDIR source=lib/gomod.sh
source "$HERE/lib/gomod.sh"
MC_LOG_NAME=registries-check.sh

SRC=$HERE/registries-check
CACHE=${MICROCLOUD_TOOLCHAIN_CACHE:-$HOME/.cache/microcloud-toolchain}
DIR=$CACHE/registries-check
MC_RESULT=$DIR/k3s-registries-check
WANT="$(cat "$SRC/main.go" "$SRC/go.mod" "$SRC/go.sum" | sha256sum | cut -c1-16) CGO_ENABLED=0"

mc_current() {
  [[ -x $MC_RESULT ]] && mc_stamp_ok "$MC_RESULT.stamp" "$WANT"
}

mc_build() {
  mc_log "building k3s-registries-check with $("$GO" env GOVERSION)"
  (cd "$SRC" && GOFLAGS="-mod=readonly -buildvcs=false" mc_offline_first \
      "$GO" build -p 1 -trimpath -o "$MC_RESULT.tmp" .) || { rm -f "$MC_RESULT.tmp"; mc_log "go build failed"; return 1; }
  mv -f "$MC_RESULT.tmp" "$MC_RESULT"
  mc_stamp_write "$MC_RESULT.stamp" "$WANT"
}

mc_cached_build "$DIR" "${1:-}"
