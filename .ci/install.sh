#!/usr/bin/env bash
# Install what the program and its tests need on a fresh Debian 12 machine.
# Idempotent: a second run only checks. Prints no secret.
set -euo pipefail
cd "$(dirname "$0")/.."

# The real programs that read our rendered files, and the tools the tests drive.
DEBIAN_PACKAGES=(
  haproxy keepalived chrony cloud-init ignition prometheus  # validators (promtool from prometheus) and daemons for the LB tests
  xsltproc iproute2 sudo dnsutils procps         # libvirt XSLT, network namespaces, day-2 script, DNS queries
  shellcheck jq                                  # the K3s install script and the PR workflow's steps; jq: the workflow's comment filter
  nfs-kernel-server xfsprogs fdisk e2fsprogs mount  # exportfs reads the rendered exports; the disk script's tools on loop devices
  python3 python3-venv                           # the venv below (Debian splits venv/ensurepip out of python3)
  openssh-client openssh-server                  # the program's host-key check (ssh-keyscan, ssh-keygen); a real sshd for its test
  nftables firewalld iputils-ping                # the node firewalls: nft checks and loads the table, firewall-offline-cmd reads the zones; ping probes them
  postgresql-15 postgresql-client-15 openssl     # the database node's files read by the server itself (tests/test_postgresql_real.py)
  python3-dnf                                    # dnf-automatic's own config reader checks the EL9 nodes' updater config
)
if [ "${MICROCLOUD_WITH_LIBVIRT:-0}" = 1 ]; then
  DEBIAN_PACKAGES+=(libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils dnsmasq-base iptables util-linux libxml2-utils)
fi

missing=()
for p in "${DEBIAN_PACKAGES[@]}"; do
  [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install: Debian packages: ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  # Services must not start from package scripts: tests start their own daemons.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PY=${PYTHON:-python3}
if [ ! -x venv/bin/python ]; then
  "$PY" -m venv venv
fi
# pip only checks when everything pinned is already there.
venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
echo "install: ok (python $(venv/bin/python -c 'import sys; print(sys.version.split()[0])'), pulumi SDK $(venv/bin/python -c 'import pulumi, importlib.metadata as m; print(m.version("pulumi"))'))"
