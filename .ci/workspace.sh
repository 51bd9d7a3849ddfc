#!/usr/bin/env bash
# Run by `source .ci/env.sh` once the environment is set: makes README's
# plain `pulumi up -s dev`, `pulumi preview --diff -s prod` and
# `pulumi destroy -s dev` work in this checkout. Idempotent; a warm run
# only looks at files (and asks the CLI its version).
#
#   1. a CLI at or above the pinned SDK's version is first on PATH (the one
#      .ci/dev or .ci/toolchain.sh chose);
#   2. the passphrase file PULUMI_CONFIG_PASSPHRASE_FILE exists: generated
#      once (32 random bytes, base64, mode 0600), never printed;
#   3. every stack with a Pulumi.<stack>.yaml here (dev, prod) exists in the
#      backend PULUMI_BACKEND_URL: `pulumi stack init --secrets-provider
#      passphrase` for the missing ones, dev selected when it is new;
#   4. the provider plugins are installed (.ci/plugins.sh names all missing ones).
#
# Exit: 0 ready; 2 no CLI; 3 plugins missing (the stacks are usable for
# everything but preview/up/destroy); 4 a stack could not be created.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=pins.sh
source "$REPO/.ci/pins.sh"
cd "$REPO"
say() { printf 'env.sh: %s\n' "$*" >&2; }

# --- 1. the CLI
if ! mc_cli_usable; then
  say "no Pulumi CLI at or above the SDK's $PULUMI_VERSION for this checkout yet: run bash .ci/dev (it picks, builds or reuses one), then source .ci/env.sh again"
  exit 2
fi

# --- 2. the passphrase of this user's stacks
pass=${PULUMI_CONFIG_PASSPHRASE_FILE:?env.sh sets PULUMI_CONFIG_PASSPHRASE_FILE}
if [[ ! -s $pass ]]; then
  # Only a directory made here is tightened: never chmod one that exists (it may be /tmp).
  if [[ ! -d $(dirname "$pass") ]]; then (umask 077; mkdir -p "$(dirname "$pass")"); fi
  legacy=$(dirname "$pass")/dev.passphrase   # where .ci/dev kept it before env.sh did this
  if [[ -z ${MICROCLOUD_PASSPHRASE_FILE:-} && -s $legacy ]]; then
    (umask 077; cp "$legacy" "$pass.tmp") && mv -f "$pass.tmp" "$pass"
    say "using the passphrase .ci/dev generated earlier ($legacy), now in $pass"
  else
    (umask 077; head -c 32 /dev/urandom | base64 >"$pass.tmp") && mv -f "$pass.tmp" "$pass"
    say "generated the stacks' passphrase in $pass (mode 0600; keep it: it decrypts their secrets)"
  fi
fi
if [[ $(stat -c %a "$pass") != 600 ]]; then
  chmod 0600 "$pass"
  say "$pass was readable by others: now mode 0600"
fi

# --- 3. the stacks
project=$(sed -n 's/^name:[[:space:]]*["'\'']\{0,1\}\([A-Za-z0-9._-]*\).*/\1/p' Pulumi.yaml | head -n 1)
stacks=()
for f in Pulumi.*.yaml; do
  [[ -f $f ]] && stacks+=("$(basename "${f#Pulumi.}" .yaml)")
done
backend=${PULUMI_BACKEND_URL:?env.sh sets PULUMI_BACKEND_URL}
if [[ $backend == file://* ]]; then
  state=${backend#file://}
  mkdir -p "$state"
  exists() { [[ -f $state/.pulumi/stacks/$project/$1.json || -f $state/.pulumi/stacks/$project/$1.json.gz ||
                -f $state/.pulumi/stacks/$1.json || -f $state/.pulumi/stacks/$1.json.gz ]]; }
else
  listed=$(pulumi stack ls --json 2>/dev/null || true)
  exists() { grep -Eq "\"name\": \"([^\"]*/)?$1\"" <<<"$listed"; }
fi
created=()
for s in "${stacks[@]}"; do
  exists "$s" && continue
  if ! out=$(pulumi stack init "$s" --secrets-provider passphrase --no-select --non-interactive 2>&1); then
    say "could not create stack $s in $backend:"
    printf '%s\n' "$out" | sed 's/^/  /' >&2
    if grep -q '^encryptionsalt:' "Pulumi.$s.yaml" && grep -qi passphrase <<<"$out"; then
      say "Pulumi.$s.yaml carries an encryptionsalt made with another passphrase than $pass."
      say "If that stack's state is gone, delete the encryptionsalt line; else point MICROCLOUD_PASSPHRASE_FILE at the passphrase it was made with."
    fi
    exit 4
  fi
  created+=("$s")
done
if ((${#created[@]})); then
  [[ " ${created[*]} " == *" dev "* ]] && pulumi stack select dev >/dev/null 2>&1
  say "created stack(s) ${created[*]} in $backend (each Pulumi.<stack>.yaml got an encryptionsalt line: it belongs to your passphrase, do not commit it)"
fi

# --- 4. libvirt: preview and up talk to it (a warning: the tests start their own)
if command -v virsh >/dev/null 2>&1 && grep -qs 'libvirt_uri: qemu:///system' Pulumi.*.yaml &&
   ! virsh -c qemu:///system version >/dev/null 2>&1; then
  say "libvirtd does not answer on qemu:///system; pulumi preview/up need it: bash .ci/libvirtd.sh start"
fi

# --- 5. the provider plugins
exec bash "$REPO/.ci/plugins.sh"
