# shellcheck shell=bash
# Build a pinned Go module: offline first, online only for what is missing,
# cached and stamped. One copy of that logic for every script that builds from
# Go modules (coredns.sh, node-exporter.sh, actionlint.sh, k8s.sh,
# toolchain.sh); sourced after pins.sh (bash only).
#
# Offline first: with every module in Go's module cache nothing is fetched
# (GOPROXY=off makes that certain). When the offline run fails because a
# module is not in the cache, the same command runs again with the configured
# GOPROXY. `go mod download -json` reports that failure as an "Error" field in
# the JSON on STDOUT, not on stderr, so both streams are read: a helper that
# looked at stderr only gave up on every empty module cache while the proxy
# served the module (tests/test_gomod.py runs this file against an empty
# GOMODCACHE and a module proxy on loopback so that cannot come back).
#
# The checksum database is the other thing an offline run can lack. A module
# that is in the cache but in no go.sum (etcd's sibling modules: its go.sum
# replaces them with local directories) is checked against GOSUMDB, and with
# GOPROXY=off the go command asks the database directly instead of through
# the proxy; a machine that reaches the proxy only fails with "verifying
# module: ... dial tcp". That is a miss too: online, the go command asks the
# database through GOPROXY (the proxy protocol's /sumdb/ endpoint).
#
# The caller names itself in MC_LOG_NAME ("node-exporter.sh: ..." lines on
# stderr). Functions return non-zero after saying why; none prints a secret.
#
#   mc_go_setup                      GO=<the go to use>, GOTOOLCHAIN=local, CGO off; or why not
#   mc_offline_first CMD...          CMD with GOPROXY=off, then online if a module was missing
#   mc_mod_json MODULE@VERSION       `go mod download -json` of it (offline first), checked
#   mc_json_field JSON FIELD         one string field of that JSON ("Dir", "GoMod", "Hash")
#   mc_mod_dir MODULE@VERSION        the unpacked module in Go's module cache
#   mc_build_upstream MOD VER PKG OUT LDFLAGS [JOBS]
#                                    build PKG of MOD@VER as the main module, with its own
#                                    go.mod and go.sum (-mod=readonly), into OUT
#   mc_stamp_ok FILE WANT / mc_stamp_write FILE WANT
#   mc_cached_build DIR [--cached-only]
#                                    the skeleton: mc_current (caller's) -> print MC_RESULT;
#                                    else lock DIR, mc_go_setup, mc_build (caller's), check again

mc_log() { printf '%s: %s\n' "${MC_LOG_NAME:-gomod.sh}" "$*" >&2; }

mc_go_setup() {
  local v
  GO=$(mc_find_go)
  if [[ -z $GO || ! -x $GO ]]; then
    mc_log "no go toolchain (looked for \$GO, go on PATH, /usr/local/go/bin/go); bash .ci/prereqs.sh says what to install"
    return 1
  fi
  if ! v=$(mc_go_version "$GO") || [[ -z $v ]]; then mc_log "$GO does not run"; return 1; fi
  if ! mc_version_ge "$v" "$GO_MIN"; then
    mc_log "$GO is go$v, the builds need go >= $GO_MIN; bash .ci/prereqs.sh says what to install"
    return 1
  fi
  # Never fetch another toolchain; static binaries; no VCS stamping of the cache dirs.
  export GO GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="${MC_GOFLAGS:--mod=mod} -buildvcs=false"
}

# Both streams of a failed GOPROXY=off run are searched for the reason: a
# module missing from the cache, or a checksum the database was never asked
# for (any "verifying" failure offline; a real mismatch fails online again).
_mc_offline_miss() { grep -qsE 'GOPROXY=off|module lookup disabled' "$@"; }
_mc_offline_unverified() { grep -qsE 'verifying [^ ]+: |verifying module' "$@"; }

mc_offline_first() {
  local out err rc=0 why=
  out=$(mktemp) err=$(mktemp)
  GOPROXY=off "$@" >"$out" 2>"$err" || rc=$?
  if ((rc != 0)); then
    if _mc_offline_miss "$out" "$err"; then
      why="not all modules are in Go's module cache: downloading them"
    elif _mc_offline_unverified "$out" "$err"; then
      why="not all modules in Go's module cache are checked against the checksum database: asking it through GOPROXY"
    fi
  fi
  if [[ -n $why ]]; then
    mc_log "$why"
    rc=0
    "$@" >"$out" 2>"$err" || rc=$?
  fi
  cat "$out"
  ((rc == 0)) || cat "$err" >&2
  rm -f "$out" "$err"
  return "$rc"
}

mc_json_field() { sed -n "s/^[[:space:]]*\"$2\": \"\\(.*\\)\",\\{0,1\\}\$/\\1/p" <<<"$1" | tail -n 1; }

mc_mod_json() {
  local json rc=0 tmp why
  # Outside any module: `go mod download m@v` then only downloads m@v.
  tmp=$(mktemp -d)
  json=$(cd "$tmp" && mc_offline_first "$GO" mod download -json "$1") || rc=$?
  rmdir "$tmp"
  why=$(mc_json_field "$json" Error)
  if ((rc != 0)) || [[ -n $why ]]; then
    mc_log "could not download $1: ${why:-go mod download failed}"
    return 1
  fi
  printf '%s\n' "$json"
}

mc_mod_dir() {
  local json dir
  json=$(mc_mod_json "$1") || return 1
  dir=$(mc_json_field "$json" Dir)
  [[ -n $dir && -d $dir ]] || { mc_log "$1: go mod download named no module directory"; return 1; }
  printf '%s\n' "$dir"
}

mc_build_upstream() {
  local mod=$1 ver=$2 pkg=$3 out=$4 ldflags=$5 jobs=${6:-1} up src rc=0
  up=$(mc_mod_dir "$mod@$ver") || return 1
  [[ -f $up/go.mod && -d $up/${pkg#./} ]] || { mc_log "$mod@$ver has no package $pkg"; return 1; }
  # Upstream's module as the main module: its go.mod and go.sum, read-only,
  # so the dependency set is exactly upstream's release.
  src=$(mktemp -d "$(dirname "$out")/.src.XXXXXX")
  cp -r "$up/." "$src"
  chmod -R u+w "$src"
  (cd "$src" && GOFLAGS="-mod=readonly -buildvcs=false" mc_offline_first \
      "$GO" build -p "$jobs" -trimpath -ldflags "$ldflags" -o "$out.tmp" "$pkg") || rc=$?
  rm -rf "$src"
  if ((rc != 0)); then rm -f "$out.tmp"; mc_log "go build of $mod@$ver failed"; return 1; fi
  mv -f "$out.tmp" "$out"
}

mc_stamp_ok() { [[ -f $1 && "$(cat "$1")" == "$2" ]]; }
mc_stamp_write() { printf '%s\n' "$2" >"$1.tmp" && mv -f "$1.tmp" "$1"; }

mc_cached_build() {
  local dir=$1 start=$SECONDS
  if mc_current; then printf '%s\n' "$MC_RESULT"; return 0; fi
  if [[ ${2:-} == --cached-only ]]; then
    mc_log "$MC_RESULT is not built (bash .ci/$MC_LOG_NAME builds it)"
    return 1
  fi
  mkdir -p "$dir"
  # Two concurrent runs (parallel CI jobs sharing a cache) build once.
  exec 9>"$dir/.lock"
  flock 9
  if mc_current; then printf '%s\n' "$MC_RESULT"; return 0; fi
  mc_go_setup || return 1
  mc_build || return 1
  mc_current || { mc_log "$MC_RESULT does not pass its check after the build"; return 1; }
  mc_log "built $MC_RESULT in $((SECONDS - start))s"
  printf '%s\n' "$MC_RESULT"
}
