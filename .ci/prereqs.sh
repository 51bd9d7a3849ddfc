#!/usr/bin/env bash
# What .ci/dev and .ci/run need before they install or build anything, all
# checked at once and reported together, so that a fresh machine learns
# everything it lacks in one run instead of one failure per attempt.
#
#   bash .ci/prereqs.sh    -> stdout: one "prereqs: ok (...)" line, exit 0
#                             stderr: every missing prerequisite and its fix, exit 1
#
# Checked: root; a Go toolchain >= GO_MIN (pins.sh) for the CLI, language
# host and CoreDNS builds; ~2.5 GB available memory when the Pulumi CLI is
# not built yet; free disk for the cold caches; python3 with venv (which
# .ci/install.sh installs with apt when it is missing: reported, not fatal).
# Reads nothing secret and changes nothing.
#
#   GO                          go binary (default: see mc_find_go in pins.sh)
#   MICROCLOUD_TOOLCHAIN_CACHE  cache root (default ~/.cache/microcloud-toolchain)
#   MICROCLOUD_MEMINFO          meminfo file to read (default /proc/meminfo; tests fake it)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=pins.sh
source "$REPO/.ci/pins.sh"

CACHE=${MICROCLOUD_TOOLCHAIN_CACHE:-$HOME/.cache/microcloud-toolchain}
MEMINFO=${MICROCLOUD_MEMINFO:-/proc/meminfo}
missing=() ok=() notes=()
gib() { awk -v m="$1" 'BEGIN { printf "%.1f GiB", m / 1024 }'; }

# --- root: apt-get, libvirtd, the image build's mmdebstrap and loop mount
if [[ $(id -u) == 0 ]]; then
  ok+=(root)
else
  missing+=("root: run as root (apt-get installs packages, libvirtd runs as root, the Debian image is built with a loop mount)")
fi

# --- Go
go_bin=$(mc_find_go)
if [[ -z $go_bin || ! -x $go_bin ]]; then
  missing+=("go >= $GO_MIN: no go ${go_bin:+at $go_bin }(looked for \$GO, go on PATH, /usr/local/go/bin/go). Install the official Go release >= $GO_MIN into /usr/local/go, or set GO=/path/to/bin/go; Debian 12's golang package (1.19) is too old")
elif ! go_ver=$(mc_go_version "$go_bin") || [[ -z $go_ver ]]; then
  missing+=("go >= $GO_MIN: $go_bin does not run ('$go_bin version' failed)")
elif ! mc_version_ge "$go_ver" "$GO_MIN"; then
  missing+=("go >= $GO_MIN: $go_bin is go$go_ver; github.com/pulumi/pulumi/pkg/v3@v$CLI_VERSION needs go $GO_MIN and the builds never download a toolchain (GOTOOLCHAIN=local). Install the official Go release >= $GO_MIN into /usr/local/go, or set GO=/path/to/bin/go")
else
  ok+=("go$go_ver")
fi

# --- memory: only the cold CLI build needs much
if mc_cli_cached "$CACHE"; then
  ok+=("Pulumi CLI v$CLI_VERSION built")
else
  avail=$(awk '$1 == "MemAvailable:" { print int($2 / 1024) }' "$MEMINFO" 2>/dev/null || true)
  if [[ -z $avail ]]; then
    notes+=("memory: no MemAvailable in $MEMINFO; the Pulumi CLI build needs about $(gib "$BUILD_MEM_MIB")")
  elif ((avail < BUILD_MEM_MIB)); then
    missing+=("memory: $(gib "$avail") available; building the Pulumi CLI (not in $CACHE yet) needs about $(gib "$BUILD_MEM_MIB"). Stop other work, add swap, or use a bigger machine")
  else
    ok+=("$(gib "$avail") memory available")
  fi
fi

# --- disk: the caches (toolchain, Go modules and build cache, image) and the checkout
need=$WARM_DISK_MIB
if ! mc_cli_cached "$CACHE" || ! bash "$REPO/.ci/coredns.sh" --cached-only >/dev/null 2>&1 ||
   ! bash "$REPO/.ci/debian-image.sh" --cached-only >/dev/null 2>&1; then
  need=$COLD_DISK_MIB
fi
paths=("$REPO" "$HOME")
if [[ -n $go_bin && -x $go_bin ]]; then
  gomod=$(GOTOOLCHAIN=local "$go_bin" env GOMODCACHE 2>/dev/null || true)
  [[ -n $gomod ]] && paths+=("$gomod")
fi
declare -A seen=()
least=
for p in "${paths[@]}"; do
  while [[ ! -e $p ]]; do p=$(dirname "$p"); done
  read -r dev free < <(df -Pm "$p" | awk 'NR == 2 { print $1, $4 }')
  [[ -n ${seen[$dev]:-} ]] && continue
  seen[$dev]=1
  if ((free < need)); then
    missing+=("disk: $(gib "$free") free on $dev ($p); the $( ((need == COLD_DISK_MIB)) && echo "cold caches need" || echo "run needs") about $(gib "$need")")
  fi
  [[ -z $least ]] || ((free < least)) && least=$free
done
[[ -n $least ]] && ((least >= need)) && ok+=("$(gib "$least") free disk")

# --- python3 and its venv module (Debian splits venv/ensurepip into python3-venv)
if [[ -x $REPO/venv/bin/python ]]; then
  ok+=(venv)
elif ! command -v python3 >/dev/null; then
  notes+=("python3, python3-venv: not installed; .ci/install.sh installs them")
elif ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  notes+=("python3-venv: not installed; .ci/install.sh installs it")
else
  ok+=(python3-venv)
fi

if [[ -r /etc/os-release ]] && ! grep -qx 'VERSION_ID="12"' /etc/os-release; then
  notes+=("not Debian 12: package names and the image recipe are Debian 12's; untested elsewhere")
fi

if ((${#missing[@]})); then
  {
    echo "prereqs: ${#missing[@]} missing; nothing was installed or built:"
    printf '  - %s\n' "${missing[@]}"
    ((${#notes[@]})) && printf '  (note: %s)\n' "${notes[@]}"
  } >&2
  exit 1
fi
summary=$(IFS=,; echo "${ok[*]}")
summary=${summary//,/, }
if ((${#notes[@]})); then
  echo "prereqs: ok ($summary; $(IFS=';'; echo "${notes[*]}"))"
else
  echo "prereqs: ok ($summary)"
fi
