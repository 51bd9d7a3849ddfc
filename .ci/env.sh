# shellcheck shell=bash
# Source this in the project (bash or zsh) after .ci/dev has run once:
#
#   source .ci/env.sh
#   pulumi preview --diff -s dev      # and README's other plain pulumi lines
#
# Sets, for this shell:
#   PATH                          the CLI and Python language host of .ci/toolchain.sh first
#   PULUMI_HOME                   $repo/.pulumi-home (the plugins installed for this checkout)
#   PULUMI_BACKEND_URL            file://$repo/.pulumi-state, no Pulumi Cloud login
#                                 (MICROCLOUD_BACKEND_URL to use another backend)
#   PULUMI_CONFIG_PASSPHRASE_FILE ~/.config/microcloud/passphrase, generated once, mode 0600
#                                 (MICROCLOUD_PASSPHRASE_FILE to use another file);
#                                 PULUMI_CONFIG_PASSPHRASE is unset, it would win over the file
#   no update check, no pulumi-resource-* from PATH, no plugin downloads by
#   the engine (plugins.sh installs them, pinned)
# then runs .ci/workspace.sh: creates the missing stacks (dev, prod) and
# installs the provider plugins from MICROCLOUD_PLUGIN_DIR, naming all that
# are missing in one message. Returns its status (0 ready, 2 no CLI yet,
# 3 plugins missing, 4 a stack could not be created). Prints no secret.
# Safe to source repeatedly, and under `set -u`.

_mc_repo=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
export PULUMI_HOME="$_mc_repo/.pulumi-home"
export PULUMI_BACKEND_URL="${MICROCLOUD_BACKEND_URL:-file://$_mc_repo/.pulumi-state}"
unset PULUMI_CONFIG_PASSPHRASE
export PULUMI_CONFIG_PASSPHRASE_FILE="${MICROCLOUD_PASSPHRASE_FILE:-${XDG_CONFIG_HOME:-$HOME/.config}/microcloud/passphrase}"
export PULUMI_SKIP_UPDATE_CHECK=true
export PULUMI_IGNORE_AMBIENT_PLUGINS=true
# The engine never fetches a plugin by itself: plugins.sh installs them, each
# checked against its pin (.ci/plugin-sums) where it has one.
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
if [ "${MICROCLOUD_AIRGAPPED:-0}" = 1 ]; then
  echo "env.sh: mode: air-gapped (MICROCLOUD_AIRGAPPED=1): no plugin is downloaded" >&2
else
  echo "env.sh: mode: connected: plugins missing from MICROCLOUD_PLUGIN_DIR are downloaded by plugins.sh when pinned (MICROCLOUD_AIRGAPPED=1 for none)" >&2
fi

# The CLI toolchain.sh chose for this checkout (a pulumi on PATH at or above the
# SDK's version, or the cached build), else the cached build of the pinned version.
_mc_bin=
[ -r "$PULUMI_HOME/toolchain-bin" ] && _mc_bin=$(cat "$PULUMI_HOME/toolchain-bin")
if [ -z "$_mc_bin" ] || [ ! -x "$_mc_bin/pulumi" ]; then
  _mc_bin="${MICROCLOUD_TOOLCHAIN_CACHE:-$HOME/.cache/microcloud-toolchain}/pulumi-v$(sed -n 's/^CLI_VERSION=\([0-9.]*\).*/\1/p' "$_mc_repo/.ci/pins.sh")/bin"
fi
if [ -x "$_mc_bin/pulumi" ]; then
  case ":$PATH:" in
    *":$_mc_bin:"*) ;;
    *) export PATH="$_mc_bin:$PATH" ;;
  esac
fi

_mc_rc=0
bash "$_mc_repo/.ci/workspace.sh" || _mc_rc=$?
unset _mc_repo _mc_bin
# `exit` only when run instead of sourced.
eval "unset _mc_rc; return $_mc_rc 2>/dev/null || exit $_mc_rc"
