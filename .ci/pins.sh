# shellcheck shell=bash disable=SC2034  # the variables are for the scripts that source this
# The versions the setup scripts build, install and check, in one place:
# sourced by toolchain.sh, prereqs.sh and workspace.sh (bash only).

PULUMI_VERSION=3.272.0   # the Python SDK, as requirements.txt pins it
CLI_VERSION=3.274.1      # the CLI: newest pkg/v3 the Go module proxy serves, >= the SDK
# Provider plugins, "name version": exactly what each pinned SDK wheel's
# pulumi-plugin.json asks for, so the engine never warns about a mismatch.
PROVIDERS=("command 1.2.1" "libvirt 0.5.4" "random 4.18.4" "tls 5.2.2")
KUBERNETES="kubernetes 4.25.0"

# Go: the `go` line of github.com/pulumi/pulumi/pkg/v3@v$CLI_VERSION's go.mod
# (CoreDNS v1.12.1 needs only 1.23.0, the language host what pkg/v3 needs).
# Everything is built with GOTOOLCHAIN=local, so an older go stops the build
# instead of fetching a newer one. Debian 12's own golang (1.19) is too old.
GO_MIN=1.26.6

# Free memory the cold CLI build needs (2.1 GB peak RSS measured on 2 cores,
# with -p 2), and free disk while any cache is cold (the CLI's Go modules
# 1.3 GB unpacked plus their zips, Go's build cache, the image build's 2 GB
# raw disk and root tree, the venv 0.2 GB, the test Kubernetes API of .ci/k8s.sh:
# 1.3 GB modules, 4.1 GB build cache, 0.4 GB binaries), or once everything is built.
BUILD_MEM_MIB=2560
COLD_DISK_MIB=16384
WARM_DISK_MIB=1024

# mc_go_version GO -> "1.26.8" (empty if GO does not run)
mc_go_version() {
  local v
  v=$("$1" version 2>/dev/null) || return 1
  v=${v#go version go}
  printf '%s\n' "${v%% *}"
}

# mc_version_ge A B -> 0 if version A >= version B
mc_version_ge() { [[ $(printf '%s\n%s\n' "$1" "$2" | sort -V | tail -n 1) == "$1" ]]; }

# mc_find_go -> the go binary to build with: $GO if set; else the first of
# `go` on PATH and /usr/local/go/bin/go that is at least GO_MIN; else the
# first of them that exists (so that the caller can say it is too old).
mc_find_go() {
  if [[ -n ${GO:-} ]]; then printf '%s\n' "$GO"; return 0; fi
  local c v first=
  for c in "$(command -v go 2>/dev/null)" /usr/local/go/bin/go; do
    [[ -n $c && -x $c ]] || continue
    first=${first:-$c}
    v=$(mc_go_version "$c") && mc_version_ge "$v" "$GO_MIN" && { printf '%s\n' "$c"; return 0; }
  done
  [[ -n $first ]] && printf '%s\n' "$first"
  return 0
}

# mc_airgapped -> 0 in air-gapped mode (MICROCLOUD_AIRGAPPED=1): nothing is downloaded
mc_airgapped() { [[ ${MICROCLOUD_AIRGAPPED:-0} == 1 ]]; }

# mc_cli_usable -> 0 if `pulumi` on PATH is at or above the pinned SDK's version
mc_cli_usable() {
  local v
  v=$(PULUMI_SKIP_UPDATE_CHECK=true pulumi version 2>/dev/null) || return 1
  [[ $v =~ ^v[0-9]+\.[0-9]+\.[0-9]+ ]] && mc_version_ge "${v#v}" "$PULUMI_VERSION"
}

# mc_cli_cached CACHE -> 0 if a finished CLI build of CLI_VERSION is there
mc_cli_cached() { [[ -f $1/pulumi-v$CLI_VERSION/stamp && -x $1/pulumi-v$CLI_VERSION/bin/pulumi ]]; }

# The test Kubernetes API (.ci/k8s.sh, tests/k8s/): kube-apiserver,
# controller-manager and scheduler of K8S_VERSION, with every k8s.io staging
# module at K8S_STAGING_VERSION; etcd at the version that k8s.io/kubernetes'
# go.mod requires; kwok and helm whose go.mod use client-go 0.33.
K8S_VERSION=1.33.13
K8S_STAGING_VERSION=0.33.13
ETCD_VERSION=3.5.21
KWOK_VERSION=0.7.0
HELM_VERSION=3.18.6
