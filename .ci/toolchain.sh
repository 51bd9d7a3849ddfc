#!/usr/bin/env bash
# Make the Pulumi CLI, its Python language host and the provider plugins that
# requirements.txt pins available to this project: the normal Pulumi path for
# a connected machine, and a fully offline one (air-gapped mode).
#
#   bash .ci/toolchain.sh [--with-kubernetes] [--strict] [--retry] [--airgapped]
#
# Mode (said on the first line): connected by default; air-gapped with
# --airgapped or MICROCLOUD_AIRGAPPED=1, where nothing is downloaded (no
# release tarball, no plugin) and only local builds and directories are used.
#
# The CLI, in this order:
#   1. `pulumi` already on PATH at or above the pinned SDK's version
#      (PULUMI_VERSION in pins.sh), used as it is; an older one is named and
#      passed over;
#   2. a finished build of CLI_VERSION in the cache (stamp + version checked);
#   3. connected only: the official release tarball of CLI_VERSION,
#      checksum-verified, when its host answers within seconds
#      (MICROCLOUD_PULUMI_RELEASES: an https mirror of that download);
#   4. a build from Go modules: a wrapper module (in the cache, never in the
#      repo) that requires github.com/pulumi/pulumi/pkg/v3 and sdk/v3 at one
#      version and repeats pkg/v3's non-local replace directives, built like
#      upstream's release (-trimpath, tags osusergo,grpcnotrace, version ldflag).
#
# The Python language host: the upstream module
# github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3 is not
# served by that proxy (asked by commit and by its pseudo-version), so step 4
# builds a small host of our own, .ci/langhost (main.go, its go.mod pinning
# sdk/v3 at CLI_VERSION, and a Go test run before each new build is
# installed), on the sdk/v3 packages the upstream host uses (python/toolchain:
# pip, poetry or uv, and virtualenvs), next to the upstream scripts copied
# from the sdk/v3 module: pulumi-language-python-exec (runs the program) and
# pulumi-resource-pulumi-python (dynamic providers). The stamp records a hash
# of the host's sources: when they change, only the host is rebuilt.
#
# Provider plugins: .ci/plugins.sh installs each into the project-local
# PULUMI_HOME ($repo/.pulumi-home) from the plugin directory,
#
#   $MICROCLOUD_PLUGIN_DIR/NAME-vVERSION/pulumi-resource-NAME
#
# (default $MICROCLOUD_TOOLCHAIN_CACHE/plugins). That directory is how an
# air-gapped site brings the binaries of its own mirror, and the only source
# of libvirt, command, random and tls here: their provider modules are not
# served by the Go module proxy. kubernetes is built into it from Go modules
# (--with-kubernetes; heavy: ~10 min and ~4 GB on 2 cores). In connected mode
# a plugin the directory lacks is downloaded by the CLI itself (`pulumi plugin
# install resource NAME VERSION --checksum`, bounded in time) when its release
# archive is pinned (.ci/plugin-sums, MICROCLOUD_PLUGIN_SUMS). Plugins still missing are
# named in one message; --strict (or MICROCLOUD_TOOLCHAIN_STRICT=1) makes that
# an error (exit 3).
#
# Idempotent. A warm run only checks stamps and versions (seconds). Progress
# goes to stderr as short "toolchain.sh: ..." lines; Go's own output to
# $CACHE/logs/; the final report (`pulumi version`, `pulumi plugin ls`) to
# stdout. A download or module the network refused is not asked for again
# for a day (the line says so); --retry asks again. Prints and stores no secret.
#
#   MICROCLOUD_TOOLCHAIN_CACHE   cache root (default ~/.cache/microcloud-toolchain)
#   MICROCLOUD_PLUGIN_DIR        plugin binaries (default $MICROCLOUD_TOOLCHAIN_CACHE/plugins)
#   MICROCLOUD_WITH_KUBERNETES=1 same as --with-kubernetes
#   MICROCLOUD_AIRGAPPED=1       same as --airgapped
#   GO                           go binary (default: see mc_find_go in pins.sh)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=pins.sh
source "$REPO/.ci/pins.sh"
# shellcheck source-path=SCRIPTDIR source=lib/gomod.sh
source "$REPO/.ci/lib/gomod.sh"
MC_LOG_NAME=toolchain.sh

# pulumi-kubernetes has no provider tags: the commit of release 4.25.0, and the
# sdk module its go.mod replaces with ../sdk.
K8S_PROVIDER_MODULE=github.com/pulumi/pulumi-kubernetes/provider/v4@v4.0.0-20260115033456-f47bc2d6f199
K8S_SDK_MODULE=github.com/pulumi/pulumi-kubernetes/sdk/v4@v4.25.0
req_pin=$(sed -n 's/^pulumi==\([0-9.]*\).*/\1/p' "$REPO/requirements.txt" 2>/dev/null || true)
if [[ -n $req_pin && $req_pin != "$PULUMI_VERSION" ]]; then
  echo "toolchain.sh: WARNING: requirements.txt pins pulumi==$req_pin, .ci/pins.sh $PULUMI_VERSION" >&2
fi

WITH_K8S=${MICROCLOUD_WITH_KUBERNETES:-0}
STRICT=${MICROCLOUD_TOOLCHAIN_STRICT:-0}
RETRY=0
for arg in "$@"; do
  case $arg in
    --with-kubernetes) WITH_K8S=1 ;;
    --strict) STRICT=1 ;;
    --retry) RETRY=1 ;;
    --airgapped) export MICROCLOUD_AIRGAPPED=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "toolchain.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

CACHE=${MICROCLOUD_TOOLCHAIN_CACHE:-$HOME/.cache/microcloud-toolchain}
PLUGIN_DIR=${MICROCLOUD_PLUGIN_DIR:-$CACHE/plugins}
LOGS=$CACHE/logs
LANGHOST=$REPO/.ci/langhost
export PULUMI_HOME=$REPO/.pulumi-home
POINTER=$PULUMI_HOME/toolchain-bin   # read by .ci/env.sh and tests/support/cli.py
NEGATIVE_TTL=$((24 * 3600))          # how long a refused download is not retried

log() { printf 'toolchain.sh: %s\n' "$*" >&2; }
detail() { printf '  %s\n' "$*" >&2; }   # not a progress line: .ci/dev keeps it in its log only
die() { log "$*"; exit 1; }

case $(uname -m) in
  x86_64|amd64) ARCH=x64 ;;
  aarch64|arm64) ARCH=arm64 ;;
  *) die "unsupported machine $(uname -m)" ;;
esac

mkdir -p "$CACHE" "$PULUMI_HOME" "$LOGS"
if mc_airgapped; then
  log "mode: air-gapped (MICROCLOUD_AIRGAPPED=1): nothing is downloaded; the CLI from PATH, the cache or Go modules, plugins from $PLUGIN_DIR"
else
  log "mode: connected: the CLI's release and missing plugins may be downloaded (MICROCLOUD_AIRGAPPED=1 for none)"
fi

# "Don't ask again for a while" markers for things the network refused.
refused_recently() { # key what
  local f=$CACHE/refused/$1
  [[ $RETRY == 0 && -f $f ]] && (($(date +%s) - $(stat -c %Y "$f") < NEGATIVE_TTL)) || return 1
  log "$2: refused within the last day ($(cat "$f")); --retry to ask again"
}
mark_refused() { mkdir -p "$CACHE/refused"; printf '%s\n' "${2:-refused}" >"$CACHE/refused/$1"; }

# --- Go ------------------------------------------------------------------------
# The shared helper (.ci/lib/gomod.sh): the go of pins.sh, offline first.
GO=$(mc_find_go)
go_env() { mc_go_setup || exit 1; }
GOBUILD=(build -p 2 -trimpath)

# --- the language host (.ci/langhost) ----------------------------------------------
# What the build depends on: the sources, not the test.
langhost_hash() { cat "$LANGHOST/main.go" "$LANGHOST/go.mod" "$LANGHOST/go.sum" | sha256sum | cut -c1-16; }

# Test, then build .ci/langhost into $2 (atomically: running hosts keep the old file).
build_langhost() { # version out
  local v=$1 out=$2 golog=$LOGS/langhost.log
  grep -q "^[[:space:]]*github.com/pulumi/pulumi/sdk/v3 v$v\$" "$LANGHOST/go.mod" ||
    die ".ci/langhost/go.mod does not require github.com/pulumi/pulumi/sdk/v3 v$v (the CLI's version): run, in .ci/langhost, go get github.com/pulumi/pulumi/sdk/v3@v$v && go mod tidy"
  go_env
  log "building the Python language host from .ci/langhost, testing it first (go output: $golog)"
  # -mod=readonly: go.mod and go.sum are committed; the build writes nothing into the checkout.
  if ! (cd "$LANGHOST" && export GOFLAGS="-mod=readonly -buildvcs=false" &&
        mc_offline_first "$GO" test -p 2 . &&
        mc_offline_first "$GO" "${GOBUILD[@]}" -ldflags "-X main.version=v$v" -o "$out.tmp" .) >"$golog" 2>&1; then
    rm -f "$out.tmp"
    log "the Python language host failed its test or build; last lines of $golog:"
    tail -n 15 "$golog" >&2
    return 1
  fi
  mv -f "$out.tmp" "$out"
}

# 0 if the host at $1 starts and prints its port (how the CLI talks to it).
langhost_answers() {
  local fd pid port=
  exec {fd}< <(exec "$1")
  pid=$!
  read -r -t 20 port <&"$fd" || true
  kill "$pid" 2>/dev/null || true
  exec {fd}<&-
  [[ $port =~ ^[0-9]+$ ]] && detail "language host answered (port $port)"
}

# --- the CLI -------------------------------------------------------------------
CLI_BINARIES=(pulumi pulumi-language-python pulumi-language-python-exec pulumi-resource-pulumi-python)
stamp_get() { sed -n "s/^$2=//p" "$1/stamp"; }

cli_core_current() { # version -> 0 if $CACHE/pulumi-v$version has the CLI and its binaries
  local dir=$CACHE/pulumi-v$1 f
  [[ -f $dir/stamp && $(stamp_get "$dir" version) == "v$1" ]] || return 1
  for f in "${CLI_BINARIES[@]}"; do [[ -x $dir/bin/$f ]] || return 1; done
  [[ $(PULUMI_SKIP_UPDATE_CHECK=true "$dir/bin/pulumi" version 2>/dev/null) == "v$1" ]]
}
langhost_current() { # version -> 0 unless our host is there but built from other sources
  local dir=$CACHE/pulumi-v$1
  [[ $(stamp_get "$dir" source) != go || $(stamp_get "$dir" langhost) == "$(langhost_hash)" ]]
}
cli_current() { cli_core_current "$1" && langhost_current "$1"; }

# The CLI is current, .ci/langhost changed: rebuild only the host (a minute, not four).
langhost_update() { # version
  local v=$1 dir=$CACHE/pulumi-v$1 start=$SECONDS
  log "language host sources changed since the cached build: rebuilding only the host"
  build_langhost "$v" "$dir/bin/pulumi-language-python" || return 1
  langhost_answers "$dir/bin/pulumi-language-python" || { log "the new language host does not start"; return 1; }
  printf 'version=v%s\nsource=go\nlanghost=%s\ngo=%s\n' "$v" "$(langhost_hash)" "$("$GO" env GOVERSION)" >"$dir/stamp.tmp"
  mv -f "$dir/stamp.tmp" "$dir/stamp"
  log "rebuilt the language host in $((SECONDS - start))s"
}

RELEASES=${MICROCLOUD_PULUMI_RELEASES:-https://get.pulumi.com/releases/sdk}
[[ $RELEASES == https://* ]] || die "MICROCLOUD_PULUMI_RELEASES=$RELEASES is not an https URL"
official_reachable() {
  if mc_airgapped; then log "air-gapped: not asking for the official Pulumi release"; return 1; fi
  refused_recently official "the official Pulumi release download" && return 1
  if curl -fsSI --proto =https --connect-timeout 3 --max-time 6 -o /dev/null \
      "$RELEASES/pulumi-v$CLI_VERSION-linux-$ARCH.tar.gz" 2>/dev/null; then
    return 0
  fi
  mark_refused official "$RELEASES unreachable or refused"
  log "the official Pulumi release download is unreachable; building from Go modules"
  return 1
}

cli_from_official() { # version
  local v=$1 dir=$CACHE/pulumi-v$1 tmp sum want
  official_reachable || return 1
  log "downloading the official Pulumi v$v release"
  tmp=$(mktemp -d)
  local base=$RELEASES
  if ! curl -fsSL --proto =https --max-time 300 -o "$tmp/p.tgz" "$base/pulumi-v$v-linux-$ARCH.tar.gz" ||
     ! curl -fsSL --proto =https --max-time 60 -o "$tmp/sums" "$base/pulumi-$v-checksums.txt"; then
    rm -rf "$tmp"; log "official download failed"; return 1
  fi
  want=$(awk -v f="pulumi-v$v-linux-$ARCH.tar.gz" '$2 == f {print $1}' "$tmp/sums")
  sum=$(sha256sum "$tmp/p.tgz" | cut -d' ' -f1)
  if [[ -z $want || $want != "$sum" ]]; then rm -rf "$tmp"; log "checksum mismatch for the official tarball"; return 1; fi
  rm -rf "$dir"; mkdir -p "$dir/bin"
  tar -xzf "$tmp/p.tgz" -C "$dir/bin" --strip-components=1
  rm -rf "$tmp"
  printf 'version=v%s\nsource=official\n' "$v" >"$dir/stamp"
}

cli_from_go() { # version
  local v=$1 dir=$CACHE/pulumi-v$1 work pkgmod sdkdir start=$SECONDS
  refused_recently "pkg-v$v" "github.com/pulumi/pulumi/pkg/v3@v$v" && return 1
  go_env
  log "resolving github.com/pulumi/pulumi/pkg/v3@v$v"
  local pkgjson pkgdir
  pkgjson=$(mc_mod_json "github.com/pulumi/pulumi/pkg/v3@v$v") || pkgjson=
  pkgmod=$(mc_json_field "$pkgjson" GoMod)
  pkgdir=$(mc_json_field "$pkgjson" Dir)
  if [[ -z $pkgmod || ! -f $pkgmod ]]; then
    log "the module proxy does not serve github.com/pulumi/pulumi/pkg/v3@v$v"
    mark_refused "pkg-v$v" "pkg/v3@v$v not served"
    return 1
  fi
  sdkdir=$(mc_mod_dir "github.com/pulumi/pulumi/sdk/v3@v$v" || true)
  [[ -n $sdkdir && -f $sdkdir/python/cmd/pulumi-language-python-exec ]] ||
    { log "the module proxy does not serve github.com/pulumi/pulumi/sdk/v3@v$v"; return 1; }

  local gover replaces golog=$LOGS/pulumi-v$v.log
  gover=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$pkgmod")
  mc_version_ge "$(mc_go_version "$GO")" "$gover" ||
    die "pkg/v3@v$v needs go >= $gover, $GO is go$(mc_go_version "$GO") (raise GO_MIN in .ci/pins.sh to $gover)"
  log "building pulumi v$v from Go modules with $("$GO" env GOVERSION) (~4 min on 2 cores; go output: $golog)"
  work=$CACHE/work/pulumi-v$v
  rm -rf "$work" "$dir.tmp"
  mkdir -p "$work/cli" "$dir.tmp/bin"

  # Wrapper module: pkg/v3 + sdk/v3 at v, plus pkg/v3's non-local replaces
  # (upstream replaces sdk/v3 with ../sdk; the require below stands for it).
  replaces=$(awk '
    /^replace \(/ {blk=1; next}
    blk && /^\)/ {blk=0; next}
    blk {print "replace " $0; next}
    /^replace / {print}' "$pkgmod" |
    awk '{t = $0; sub(/^[^>]*=>[ \t]*/, "", t)} t !~ /^(\.\.?)?\//')
  {
    printf 'module microcloud.local/pulumi-cli\n\ngo %s\n\n' "$gover"
    printf 'require (\n\tgithub.com/pulumi/pulumi/pkg/v3 v%s\n\tgithub.com/pulumi/pulumi/sdk/v3 v%s\n)\n\n' "$v" "$v"
    if [[ -n $replaces ]]; then printf '%s\n' "$replaces"; fi
  } >"$work/cli/go.mod"
  # Upstream's go.sum (pkg/v3's and sdk/v3's) seeds the wrapper's: the same dependency
  # graph, so `go mod tidy` checks every module against those sums and asks the checksum
  # database for none (it is not always reachable: a cold build once failed on one lookup).
  cat "$pkgdir/go.sum" "$sdkdir/go.sum" 2>/dev/null | sort -u >"$work/cli/go.sum"
  printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"\n' >"$work/cli/tools.go"
  detail "wrapper go.mod: go $gover; replaces: ${replaces:-none}"
  (cd "$work/cli" && mc_offline_first "$GO" mod tidy &&
    mc_offline_first "$GO" "${GOBUILD[@]}" -tags osusergo,grpcnotrace \
      -ldflags "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$v" \
      -o "$dir.tmp/bin/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi) >"$golog" 2>&1 ||
    { log "building the Pulumi CLI v$v failed; last lines of $golog:"; tail -n 15 "$golog" >&2; return 1; }

  build_langhost "$v" "$dir.tmp/bin/pulumi-language-python" || return 1
  install -m 0755 "$sdkdir/python/cmd/pulumi-language-python-exec" "$dir.tmp/bin/"
  install -m 0755 "$sdkdir/python/dist/pulumi-resource-pulumi-python" "$dir.tmp/bin/"
  langhost_answers "$dir.tmp/bin/pulumi-language-python" || { log "the new language host does not start"; return 1; }
  printf 'version=v%s\nsource=go\nlanghost=%s\ngo=%s\n' "$v" "$(langhost_hash)" "$("$GO" env GOVERSION)" >"$dir.tmp/stamp"
  rm -rf "$dir"; mv "$dir.tmp" "$dir"
  log "built pulumi v$v in $((SECONDS - start))s"
}

find_cli() { # sets BIN
  local p v dir=$CACHE/pulumi-v$CLI_VERSION
  # 1. a CLI on PATH at or above the SDK's version, as it is
  if p=$(command -v pulumi 2>/dev/null); then
    v=$(PULUMI_SKIP_UPDATE_CHECK=true pulumi version 2>/dev/null || true)
    if mc_cli_usable; then
      BIN=$(dirname "$(readlink -f "$p")")
      log "using pulumi $v on PATH ($BIN): at or above the pinned SDK $PULUMI_VERSION"
      return 0
    fi
    log "pulumi on PATH ($p) is ${v:-of no version}, older than the pinned SDK $PULUMI_VERSION: not used"
  fi
  # 2. a finished build in the cache; 3./4. the official release, else Go modules
  if cli_current "$CLI_VERSION"; then BIN=$dir/bin; log "using the cached pulumi v$CLI_VERSION ($BIN)"; return 0; fi
  exec 9>"$CACHE/.lock"; flock 9
  if cli_current "$CLI_VERSION"; then BIN=$dir/bin; log "using the cached pulumi v$CLI_VERSION ($BIN)"; return 0; fi
  if cli_core_current "$CLI_VERSION" && [[ $(stamp_get "$dir" source) == go ]] &&
     langhost_update "$CLI_VERSION" && cli_current "$CLI_VERSION"; then
    BIN=$dir/bin; return 0
  fi
  if cli_from_official "$CLI_VERSION" || { cli_from_go "$CLI_VERSION" && cli_current "$CLI_VERSION"; }; then
    BIN=$dir/bin; log "using pulumi v$CLI_VERSION ($(stamp_get "$dir" source) build, $BIN)"; return 0
  fi
  die "no Pulumi CLI: none on PATH at or above $PULUMI_VERSION, v$CLI_VERSION not cached, $(mc_airgapped && echo "no download in air-gapped mode" || echo "official download unreachable"), Go build failed (logs: $LOGS)"
}

BIN=
find_cli
printf '%s\n' "$BIN" >"$POINTER"
# The same environment .ci/env.sh gives a shell (without its stacks and passphrase).
case ":$PATH:" in *":$BIN:"*) ;; *) export PATH="$BIN:$PATH" ;; esac
export PULUMI_SKIP_UPDATE_CHECK=true PULUMI_IGNORE_AMBIENT_PLUGINS=true
# Plugins come from plugins.sh only (checked against their pins), never from the engine itself.
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
v=$(pulumi version)
mc_version_ge "${v#v}" "$PULUMI_VERSION" || die "pulumi on PATH is $v, older than the pinned SDK $PULUMI_VERSION"
[[ -x $BIN/pulumi-language-python ]] || command -v pulumi-language-python >/dev/null ||
  log "WARNING: no pulumi-language-python next to $BIN/pulumi or on PATH"

# --- provider plugins ----------------------------------------------------------
# pulumi-resource-kubernetes from Go modules into the plugin directory: the
# provider module at the commit of the release, its ../sdk replace swapped for
# the served sdk module, the schema embedded by the module's own go generate.
kubernetes_from_go() { # version out
  local ver=$1 out=$2 dir work golog=$LOGS/kubernetes-v$1.log start=$SECONDS
  go_env
  dir=$(mc_mod_dir "$K8S_PROVIDER_MODULE") || { log "kubernetes: the module proxy does not serve $K8S_PROVIDER_MODULE"; return 1; }
  log "kubernetes: building v$ver from $K8S_PROVIDER_MODULE (go output: $golog)"
  work=$CACHE/work/kubernetes-v$ver
  rm -rf "$work"; mkdir -p "$(dirname "$work")"
  cp -r "$dir" "$work"; chmod -R u+w "$work"
  (cd "$work" &&
    "$GO" mod edit -dropreplace=github.com/pulumi/pulumi-kubernetes/sdk/v4 -require="$K8S_SDK_MODULE" &&
    mc_offline_first "$GO" mod tidy &&
    VERSION=$ver mc_offline_first "$GO" generate ./cmd/pulumi-resource-kubernetes &&
    mc_offline_first "$GO" "${GOBUILD[@]}" -ldflags "-X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$ver" \
      -o "$out" ./cmd/pulumi-resource-kubernetes) >"$golog" 2>&1 ||
    { log "kubernetes: build failed; last lines of $golog:"; tail -n 15 "$golog" >&2; return 1; }
  rm -rf "$work"
  log "kubernetes: built v$ver in $((SECONDS - start))s"
}

plugin_args=()
if [[ $WITH_K8S == 1 ]]; then
  plugin_args+=(--with-kubernetes)
  read -r name ver <<<"$KUBERNETES"
  bin=$PLUGIN_DIR/$name-v$ver/pulumi-resource-$name
  if [[ ! -x $PULUMI_HOME/plugins/resource-$name-v$ver/pulumi-resource-$name && ! -x $bin ]]; then
    exec 9>"$CACHE/.lock"; flock 9   # one builder at a time
    if [[ ! -x $bin ]]; then
      mkdir -p "$(dirname "$bin")"
      kubernetes_from_go "$ver" "$bin.tmp" && mv -f "$bin.tmp" "$bin"
    fi
  fi
fi
plugins_rc=0
MICROCLOUD_PLUGIN_DIR=$PLUGIN_DIR bash "$REPO/.ci/plugins.sh" "${plugin_args[@]}" || plugins_rc=$?
((plugins_rc == 0 || plugins_rc == 3)) || die "plugins.sh failed (exit $plugins_rc)"

# --- report --------------------------------------------------------------------
echo "pulumi: $(command -v pulumi) $(pulumi version)"
echo "language host: $(command -v pulumi-language-python || echo "$BIN/pulumi-language-python")"
echo "PULUMI_HOME=$PULUMI_HOME"
pulumi plugin ls
if ((plugins_rc == 3)); then
  echo "MISSING provider plugins (named above by plugins.sh; see docs/toolchain.md)"
  [[ $STRICT == 1 ]] && exit 3
fi
exit 0
