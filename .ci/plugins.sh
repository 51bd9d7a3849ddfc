#!/usr/bin/env bash
# Install the provider plugins of pins.sh into this checkout's PULUMI_HOME,
# each from the first of: already installed; the plugin directory; in
# connected mode, the CLI's own download (`pulumi plugin install resource
# NAME VERSION`, at most MICROCLOUD_PLUGIN_DOWNLOAD_TIMEOUT seconds, default
# 120). Every one still missing is named in ONE message, with why. Air-gapped
# mode (MICROCLOUD_AIRGAPPED=1) never downloads. Used by toolchain.sh (after
# it has the CLI) and by workspace.sh (what `source .ci/env.sh` runs), so both
# say the same thing.
#
#   bash .ci/plugins.sh [--with-kubernetes]      exit 0: all installed
#                                                exit 3: some missing (listed on stderr)
#
# Each plugin is one binary, $MICROCLOUD_PLUGIN_DIR/NAME-vVERSION/pulumi-resource-NAME
# (default dir: $MICROCLOUD_TOOLCHAIN_CACHE/plugins, i.e. ~/.cache/microcloud-toolchain/plugins),
# installed with `pulumi plugin install resource NAME VERSION --file`. Needs
# the CLI on PATH (toolchain.sh, env.sh); a warm run only looks at files.
#
# Pinned digests (sha256sum lines; .ci/plugin-sums says which files they name)
# come from .ci/plugin-sums and the site's own MICROCLOUD_PLUGIN_SUMS file:
#   - a download is the official release archive, checked by the CLI against
#     its pin (--checksum; a mismatch installs nothing); an archive without a
#     pin is not downloaded, unless MICROCLOUD_PLUGIN_UNPINNED=1;
#   - a binary of the plugin directory with a pin must have it, or it is not
#     installed; one without a pin (a site's own build or mirror) is installed
#     and said to be unpinned;
#   - an installed plugin whose binary has a pin and differs from it is
#     removed, then installed again (from the directory or a pinned download).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=pins.sh
source "$REPO/.ci/pins.sh"

WITH_K8S=${MICROCLOUD_WITH_KUBERNETES:-0}
for arg in "$@"; do
  case $arg in
    --with-kubernetes) WITH_K8S=1 ;;
    *) echo "plugins.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

CACHE=${MICROCLOUD_TOOLCHAIN_CACHE:-$HOME/.cache/microcloud-toolchain}
PLUGIN_DIR=${MICROCLOUD_PLUGIN_DIR:-$CACHE/plugins}
export PULUMI_HOME=${PULUMI_HOME:-$REPO/.pulumi-home}
LOG=$PULUMI_HOME/plugin-install.log
TIMEOUT=${MICROCLOUD_PLUGIN_DOWNLOAD_TIMEOUT:-120}
log() { printf 'plugins: %s\n' "$*" >&2; }

SUMS=("$REPO/.ci/plugin-sums")
if [[ -n ${MICROCLOUD_PLUGIN_SUMS:-} ]]; then
  [[ -f $MICROCLOUD_PLUGIN_SUMS ]] || { log "MICROCLOUD_PLUGIN_SUMS=$MICROCLOUD_PLUGIN_SUMS is not a file"; exit 2; }
  SUMS+=("$MICROCLOUD_PLUGIN_SUMS")
fi
case $(uname -m) in aarch64|arm64) ARCH=arm64 ;; *) ARCH=amd64 ;; esac

# pin FILE -> the sha256 pinned for FILE (a name as .ci/plugin-sums writes it), or nothing
pin() { awk -v f="$1" '$1 ~ /^[0-9a-f]+$/ && length($1) == 64 && ($2 == f || $2 == "*" f) { print $1; exit }' "${SUMS[@]}"; }
sha_of() { sha256sum <"$1" | cut -d' ' -f1; }

# download NAME VERSION -> 0 if the CLI downloaded and installed it; else the reason in $why
download() {
  local out rc=0 archive=pulumi-resource-$1-v$2-linux-$ARCH.tar.gz sum check=()
  sum=$(pin "$archive")
  if [[ -n $sum ]]; then
    check=(--checksum "$sum")
  elif [[ ${MICROCLOUD_PLUGIN_UNPINNED:-0} == 1 ]]; then
    log "$archive has no pinned sha256: downloading it unchecked (MICROCLOUD_PLUGIN_UNPINNED=1)"
  else
    why="not in the plugin directory, and no pinned sha256 of $archive (.ci/plugin-sums, MICROCLOUD_PLUGIN_SUMS): not downloaded"
    return 1
  fi
  log "$1 v$2 is not in $PLUGIN_DIR: downloading it with the CLI (at most ${TIMEOUT}s)${sum:+, checked against its pinned sha256}"
  out=$(timeout --kill-after=5 "$TIMEOUT" pulumi plugin install resource "$1" "$2" "${check[@]}" 2>&1) || rc=$?
  printf '%s\n' "$out" >>"$LOG"
  ((rc == 0)) && installed "$1" "$2" && binary_ok "$1" "$2" && return 0
  if ((rc == 0)); then
    why="the downloaded binary is not its pinned one: $why; removed"
    rm -rf "$PULUMI_HOME/plugins/resource-$1-v$2" "$PULUMI_HOME/plugins/resource-$1-v$2.lock"
  elif ((rc == 124 || rc == 137)); then
    why="download timed out after ${TIMEOUT}s"
  else
    why="download failed: $(grep -v '^[[:space:]]*$' <<<"$out" | tail -n 1 | cut -c1-200)"
  fi
  return 1
}

# binary_ok NAME VERSION [FILE] -> 0 unless FILE (default: the installed binary) differs from its pin; why in $why
binary_ok() {
  local file=${3:-$PULUMI_HOME/plugins/resource-$1-v$2/pulumi-resource-$1} sum got
  sum=$(pin "$1-v$2/pulumi-resource-$1")
  [[ -z $sum ]] && return 0
  got=$(sha_of "$file")
  [[ $got == "$sum" ]] && return 0
  why="$file has sha256 $got, not the pinned $sum"
  return 1
}

installed() { # name version
  local d=$PULUMI_HOME/plugins/resource-$1-v$2
  [[ -x $d/pulumi-resource-$1 && ! -e $d.partial ]]
}

# The program deploys the platform through the kubernetes provider whenever
# K3s is on (the default): preview and up need it as much as the other four.
# --with-kubernetes is kept for callers that still pass it.
: "$WITH_K8S"
list=("${PROVIDERS[@]}" "$KUBERNETES")

missing=() reasons=()
mkdir -p "$PULUMI_HOME"
for p in "${list[@]}"; do
  read -r name ver <<<"$p"
  why=
  if installed "$name" "$ver"; then
    binary_ok "$name" "$ver" && continue
    # Removed first: whatever happens next, the engine never runs it.
    log "installed $name v$ver is not its pinned binary ($why): removed, installing it again"
    rm -rf "$PULUMI_HOME/plugins/resource-$name-v$ver" "$PULUMI_HOME/plugins/resource-$name-v$ver.lock"
  fi
  bin=$PLUGIN_DIR/$name-v$ver/pulumi-resource-$name
  why=
  if [[ -x $bin ]]; then
    if ! binary_ok "$name" "$ver" "$bin"; then
      why="$why: not installed"
    else
      if [[ -n $(pin "$name-v$ver/pulumi-resource-$name") ]]; then
        log "installing $name v$ver from $bin (its pinned sha256)"
      else
        log "installing $name v$ver from $bin (no pinned sha256: the site's own binary; MICROCLOUD_PLUGIN_SUMS pins it)"
      fi
      pulumi plugin install resource "$name" "$ver" --file "$bin" >>"$LOG" 2>&1 && continue
      why="pulumi plugin install --file failed (see $LOG)"
    fi
  elif [[ ${MICROCLOUD_AIRGAPPED:-0} == 1 ]]; then
    why="not in the plugin directory; air-gapped: not downloaded"
  else
    download "$name" "$ver" && { log "downloaded $name v$ver"; continue; }
  fi
  missing+=("$name $ver")
  reasons+=("$why")
done

# The versions above must be the ones the installed SDK wheels ask for (the venv may not exist yet).
for p in "${list[@]}"; do
  read -r name ver <<<"$p"
  for json in "$REPO"/venv/lib/python3*/site-packages/pulumi_"$name"/pulumi-plugin.json; do
    [[ -f $json ]] || continue
    got=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$json")
    [[ $got == "$ver" ]] || log "WARNING: the pulumi_$name wheel wants plugin v$got, .ci/pins.sh says v$ver"
  done
done

if ((${#missing[@]})); then
  names=$(printf '%s, ' "${missing[@]}")
  {
    echo "plugins: missing ${#missing[@]} provider plugin(s): ${names%, }."
    echo "plugins: put each binary at MICROCLOUD_PLUGIN_DIR/NAME-vVERSION/pulumi-resource-NAME, here:"
    for i in "${!missing[@]}"; do
      read -r name ver <<<"${missing[$i]}"
      echo "plugins:   $PLUGIN_DIR/$name-v$ver/pulumi-resource-$name  (${reasons[$i]})"
    done
    echo "plugins: (MICROCLOUD_PLUGIN_DIR=$PLUGIN_DIR; the providers' release archives carry these binaries;"
    echo "plugins:  docs/toolchain.md), then run the same command again. Preview and up need all of them."
  } >&2
  exit 3
fi
exit 0
