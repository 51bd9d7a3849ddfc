# shellcheck shell=bash
# Source this (bash or zsh) after .ci/toolchain.sh to use the project's Pulumi:
#
#   source .ci/env.sh
#
# Puts the CLI that toolchain.sh chose (and its language host) first on PATH
# and points Pulumi at the project-local plugin store. Sets no secret: a stack
# still needs PULUMI_CONFIG_PASSPHRASE(_FILE) and a backend (PULUMI_BACKEND_URL).
# Safe to source repeatedly and under `set -euo pipefail`.

_mc_repo=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
export PULUMI_HOME="$_mc_repo/.pulumi-home"
if [ -r "$PULUMI_HOME/toolchain-bin" ]; then
  _mc_bin=$(cat "$PULUMI_HOME/toolchain-bin")
  case ":$PATH:" in
    *":$_mc_bin:"*) ;;
    *) export PATH="$_mc_bin:$PATH" ;;
  esac
  unset _mc_bin
else
  echo "env.sh: no Pulumi toolchain yet: run bash .ci/toolchain.sh" >&2
fi
unset _mc_repo
# No update check, no downloads behind our back, and no pulumi-resource-* from
# PATH: only the plugins installed into PULUMI_HOME (and the language host and
# scripts bundled next to the CLI) are used.
export PULUMI_SKIP_UPDATE_CHECK=true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
export PULUMI_IGNORE_AMBIENT_PLUGINS=true
