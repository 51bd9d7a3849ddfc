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
# Idempotent: a second run with a warm cache only checks the stamp and the
# binary's version, then prints the path (no go, no network). Prints the
# binary's path on stdout; progress goes to stderr.
#
#   --cached-only               only answer whether it is built (exit 1 if not); never build
#   MICROCLOUD_TOOLCHAIN_CACHE  cache root (default ~/.cache/microcloud-toolchain)
#   GO                          go binary (default: see mc_find_go in pins.sh)
#   ACTIONLINT_BUILD_JOBS       go build -p (default 1: the machine's cores are shared)
set -euo pipefail

VERSION=v1.7.12
MODULE=github.com/rhysd/actionlint

CACHE=${MICROCLOUD_TOOLCHAIN_CACHE:-$HOME/.cache/microcloud-toolchain}
DIR=$CACHE/actionlint-$VERSION
BIN=$DIR/actionlint
STAMP=$DIR/actionlint.stamp
WANT="$MODULE@$VERSION CGO_ENABLED=0"

log() { printf 'actionlint.sh: %s\n' "$*" >&2; }

is_current() {
    local v
    [[ -x $BIN && -f $STAMP && "$(cat "$STAMP")" == "$WANT" ]] || return 1
    # Whole output first, then match: no pipe into grep -q (SIGPIPE + pipefail).
    v=$("$BIN" -version 2>&1) || return 1
    [[ $v == "${VERSION#v}"$'\n'* ]]
}

if is_current; then
    echo "$BIN"
    exit 0
fi
if [[ ${1:-} == --cached-only ]]; then
    log "$BIN is not built (run .ci/actionlint.sh)"
    exit 1
fi

mkdir -p "$DIR"
# Two concurrent runs (parallel CI jobs sharing a cache) build once.
exec 9>"$DIR/.lock"
flock 9
if is_current; then
    echo "$BIN"
    exit 0
fi

# shellcheck source-path=SCRIPTDIR source=pins.sh
source "$(dirname "${BASH_SOURCE[0]}")/pins.sh"
GO=$(mc_find_go)
[[ -n $GO && -x $GO ]] || { log "no go toolchain (looked for \$GO, go on PATH, /usr/local/go/bin/go); bash .ci/prereqs.sh says what to install"; exit 1; }
# Never fetch another toolchain: build with the installed one or fail
# (actionlint's go.mod asks for less than GO_MIN).
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
jobs=${ACTIONLINT_BUILD_JOBS:-1}
log "building actionlint $VERSION with $("$GO" env GOVERSION) (-p $jobs)"
start=$SECONDS

SRC=$DIR/src
ERR=$DIR/.build.log
# Offline first: with every module in Go's module cache nothing is fetched
# (GOPROXY=off makes that certain); only a missing module goes to the proxy.
offline_then_online() { # cmd... (stderr to $ERR)
    if GOPROXY=off "$@" 2>"$ERR"; then
        return 0
    elif grep -q 'GOPROXY=off' "$ERR"; then
        log "not all modules are in Go's module cache: downloading them"
        "$@" 2>"$ERR" && return 0
    fi
    cat "$ERR" >&2
    return 1
}
cd "$DIR"  # no go.mod around: `go mod download m@v` outside any module
json=$(offline_then_online "$GO" mod download -json "$MODULE@$VERSION") ||
    { log "could not download $MODULE@$VERSION"; exit 1; }
UP=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$json" | tail -n 1)
[[ -n $UP && -f $UP/go.mod && -f $UP/go.sum && -f $UP/cmd/actionlint/main.go ]] ||
    { log "$MODULE@$VERSION has no cmd/actionlint at ${UP:-?}"; exit 1; }

# Upstream's module as the main module: its go.mod and go.sum, read-only, so
# the dependency set is exactly upstream's release.
rm -rf "$SRC"
cp -r "$UP" "$SRC"
chmod -R u+w "$SRC"
cd "$SRC"
export GOFLAGS="-mod=readonly -buildvcs=false"
offline_then_online "$GO" build -p "$jobs" -trimpath \
    -ldflags "-s -w -X $MODULE.version=${VERSION#v} -X '$MODULE.installedFrom=built from Go modules by .ci/actionlint.sh'" \
    -o "$BIN.tmp" ./cmd/actionlint || { log "go build of $MODULE@$VERSION failed"; exit 1; }
cd "$DIR"
rm -rf "$SRC" "$ERR"
"$BIN.tmp" -version >&2
mv -f "$BIN.tmp" "$BIN"
echo "$WANT" >"$STAMP"
is_current || { log "$BIN does not report version ${VERSION#v}"; exit 1; }
log "built $BIN in $((SECONDS - start))s"
echo "$BIN"
