#!/usr/bin/env bash
# Build a pinned actionlint, the linter of GitHub Actions workflows, for .ci/run
# and tests/test_workflow.py (which lint .github/workflows/). When shellcheck
# is on PATH (.ci/install.sh installs it), actionlint also runs it on every
# `run:` block, so the workflow's shell is checked too.
#
# Built from Go modules as upstream's release is: the module itself as the main
# module, with its own go.mod and go.sum (no wrapper), CGO off, the version
# stamped with the same -X ldflag as upstream's .goreleaser.yaml, so
# `actionlint -version` prints it.
#
# Idempotent: a warm run only checks the stamp and the binary's version, then
# prints the path (no go, no network). Offline first, online only for modules
# missing from Go's module cache (.ci/lib/gomod.sh). Prints the binary's path
# on stdout; progress goes to stderr.
#
#   --cached-only               only answer whether it is built (exit 1 if not); never build
#   MICROCLOUD_TOOLCHAIN_CACHE  cache root (default ~/.cache/microcloud-toolchain)
#   GO                          go binary (default: see mc_find_go in pins.sh)
#   ACTIONLINT_BUILD_JOBS       go build -p (default 1: the machine's cores are shared)
set -euo pipefail
HERE=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source-path=SCRIPTDIR source=pins.sh
source "$HERE/pins.sh"
# shellcheck source-path=SCRIPTDIR source=lib/gomod.sh
source "$HERE/lib/gomod.sh"
MC_LOG_NAME=actionlint.sh

VERSION=v1.7.12
MODULE=github.com/rhysd/actionlint

CACHE=${MICROCLOUD_TOOLCHAIN_CACHE:-$HOME/.cache/microcloud-toolchain}
DIR=$CACHE/actionlint-$VERSION
MC_RESULT=$DIR/actionlint
WANT="$MODULE@$VERSION CGO_ENABLED=0"

mc_current() {
  local v
  [[ -x $MC_RESULT ]] && mc_stamp_ok "$MC_RESULT.stamp" "$WANT" || return 1
  # Whole output first, then match: no pipe into grep -q (SIGPIPE + pipefail).
  v=$("$MC_RESULT" -version 2>&1) || return 1
  [[ $v == "${VERSION#v}"$'\n'* ]]
}

mc_build() {
  mc_log "building actionlint $VERSION with $("$GO" env GOVERSION)"
  mc_build_upstream "$MODULE" "$VERSION" ./cmd/actionlint "$MC_RESULT" \
    "-s -w -X $MODULE.version=${VERSION#v} -X '$MODULE.installedFrom=built from Go modules by .ci/actionlint.sh'" \
    "${ACTIONLINT_BUILD_JOBS:-1}" || return 1
  mc_stamp_write "$MC_RESULT.stamp" "$WANT"
}

mc_cached_build "$DIR" "${1:-}"
