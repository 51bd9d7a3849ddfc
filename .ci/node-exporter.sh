#!/usr/bin/env bash
# Build a pinned Prometheus node_exporter for the VMs outside the cluster (the
# load balancers and the infra node), which components/node_exporter.py copies
# there, and for tests/test_node_exporter.py, which runs it on loopback.
#
# Built from Go modules exactly as upstream's release is: the module itself as
# the main module, with its own go.mod and go.sum (no wrapper), CGO off, the
# version stamped with the same -X ldflags as upstream's .promu.yml, so
# `node_exporter --version` prints it. No build date: two builds of the same
# version with the same Go are the same file (the sha256 the nodes check).
# A site with internet access can instead pin upstream's release in stack
# config (monitoring.node_exporter.url + sha256) and needs no Go at all.
#
# Idempotent: a warm run only checks the stamp and the binary's version, then
# prints the path (no go, no network). Offline first, online only for modules
# missing from Go's module cache (.ci/lib/gomod.sh). Prints the binary's path
# on stdout; progress goes to stderr.
#
#   --cached-only               only answer whether it is built (exit 1 if not); never build
#   MICROCLOUD_TOOLCHAIN_CACHE  cache root (default ~/.cache/microcloud-toolchain)
#   GO                          go binary (default: see mc_find_go in pins.sh)
#   NODE_EXPORTER_BUILD_JOBS    go build -p (default 1: the machine's cores are shared)
set -euo pipefail
HERE=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source-path=SCRIPTDIR source=pins.sh
source "$HERE/pins.sh"
# shellcheck source-path=SCRIPTDIR source=lib/gomod.sh
source "$HERE/lib/gomod.sh"
MC_LOG_NAME=node-exporter.sh

# Keep in sync with NodeExporterBinary.version in components/config/monitoring.py
# (tests/test_node_exporter.py checks that they agree).
VERSION=v1.12.1
MODULE=github.com/prometheus/node_exporter

CACHE=${MICROCLOUD_TOOLCHAIN_CACHE:-$HOME/.cache/microcloud-toolchain}
DIR=$CACHE/node-exporter-$VERSION
MC_RESULT=$DIR/node_exporter
WANT="$MODULE@$VERSION CGO_ENABLED=0"

mc_current() {
  local v
  [[ -x $MC_RESULT ]] && mc_stamp_ok "$MC_RESULT.stamp" "$WANT" || return 1
  # Whole output first, then match: no pipe into grep -q (SIGPIPE + pipefail).
  v=$("$MC_RESULT" --version 2>&1) || return 1
  [[ $v == "node_exporter, version ${VERSION#v} "* ]]
}

mc_build() {
  local p=github.com/prometheus/common/version
  mc_log "building node_exporter $VERSION with $("$GO" env GOVERSION)"
  mc_build_upstream "$MODULE" "$VERSION" . "$MC_RESULT" \
    "-s -w -X $p.Version=${VERSION#v} -X $p.Branch=HEAD -X $p.BuildUser=microcloud" \
    "${NODE_EXPORTER_BUILD_JOBS:-1}" || return 1
  mc_stamp_write "$MC_RESULT.stamp" "$WANT"
}

mc_cached_build "$DIR" "${1:-}"
