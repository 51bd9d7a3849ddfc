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

# download NAME VERSION -> 0 if the CLI downloaded and installed it; else the reason in $why
download() {
  local out rc=0
  log "$1 v$2 is not in $PLUGIN_DIR: downloading it with the CLI (at most ${TIMEOUT}s)"
  out=$(timeout --kill-after=5 "$TIMEOUT" pulumi plugin install resource "$1" "$2" 2>&1) || rc=$?
  printf '%s\n' "$out" >>"$LOG"
  ((rc == 0)) && installed "$1" "$2" && return 0
  if ((rc == 124 || rc == 137)); then
    why="download timed out after ${TIMEOUT}s"
  else
    why="download failed: $(grep -v '^[[:space:]]*$' <<<"$out" | tail -n 1 | cut -c1-200)"
  fi
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
  installed "$name" "$ver" && continue
  bin=$PLUGIN_DIR/$name-v$ver/pulumi-resource-$name
  why=
  if [[ -x $bin ]]; then
    log "installing $name v$ver from $bin"
    pulumi plugin install resource "$name" "$ver" --file "$bin" >>"$LOG" 2>&1 && continue
    why="pulumi plugin install --file failed (see $LOG)"
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
