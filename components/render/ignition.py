"""Ignition (spec 3.3.0) for Flatcar nodes: only what never changes for the VM's life.

Spec 3.3.0 is the newest stable spec that Debian's ignition-validate (2.14)
and current Flatcar releases both accept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import quote

from . import host_firewall, host_key, k3s_hardening
from .host_key import HostKey
from .network import NetworkSettings

IGNITION_VERSION = "3.3.0"
# Flatcar's QEMU image (and others: its OEM grub.cfg) logs `core` in on every
# console and root in the emergency shell: flatcar.autologin on the kernel
# command line, turned into getty and emergency.service drop-ins by this generator.
AUTOLOGIN_ARG = "flatcar.autologin"
AUTOLOGIN_GENERATOR = "/etc/systemd/system-generators/flatcar-autologin-generator"


@dataclass(frozen=True)
class UpdatePolicy:
    """update_engine's channel. locksmithd never reboots on its own: the node's reboot agent
    (render/reboot.py) does, within the cluster's disruption budget, or nothing does (updates.strategy off)."""

    group: str = "stable"


@dataclass(frozen=True)
class FlatcarNode:
    hostname: str
    fqdn: str
    user: str
    ssh_keys: tuple[str, ...]
    network: NetworkSettings
    ntp_server: str
    kubernetes: bool
    updates: UpdatePolicy = field(default_factory=UpdatePolicy)
    # Pulumi's host key, in place before sshd's first start (Flatcar's key generation makes only missing ones).
    host_key: Optional[HostKey] = None
    # Keep the image's console autologin (a dev stack debugged from the console); off by default.
    autologin: bool = False
    # K3s' protect-kernel-defaults: the kubelet sysctls in place before K3s first starts.
    kubelet_sysctls: bool = False
    # The node's firewall (render/host_firewall.py), loaded before the network comes up; None: none.
    firewall: Optional[host_firewall.FirewallSpec] = None


def _file(path: str, text: str, mode: int = 0o644) -> dict:
    return {
        "path": path,
        "mode": mode,
        "overwrite": True,
        "contents": {"source": "data:," + quote(text, safe="")},
    }


def networkd_unit(net: NetworkSettings) -> str:
    """systemd-networkd .network for the node's NIC, matched by MAC (names can change)."""
    lines = ["[Match]", f"MACAddress={net.mac}", "", "[Link]"]
    if net.mtu:
        lines.append(f"MTUBytes={net.mtu}")
    lines += [
        "RequiredForOnline=yes",
        "",
        "[Network]",
        f"Address={net.address}/{net.prefix}",
        f"Gateway={net.gateway}",
        *[f"DNS={d}" for d in net.dns],
        f"Domains={net.search_domain}",
        "DHCP=no",
        "IPv6AcceptRA=no",
    ]
    return "\n".join(lines) + "\n"


def _sysctl(kubernetes: bool) -> str:
    lines = [
        "# Rendered by microcloud",
        # VIPs and Kubernetes services bind addresses not (yet) on this host.
        "net.ipv4.ip_nonlocal_bind = 1",
    ]
    if kubernetes:
        lines += ["net.ipv4.ip_forward = 1", "net.bridge.bridge-nf-call-iptables = 1"]
    return "\n".join(lines) + "\n"


def _update_conf(u: UpdatePolicy) -> str:
    return (
        f"GROUP={u.group}\n"
        "REBOOT_STRATEGY=off\n"
    )


def _no_autologin() -> tuple[dict, dict]:
    """``kernelArguments`` and a ``storage.links`` entry: no console logs anyone in.

    ``kernelArguments`` (spec 3.3.0; Flatcar since 3185) is Flatcar's documented
    way: its kargs helper drops the argument from the ``set linux_append=`` line
    of the OEM partition's grub.cfg and reboots once, inside first boot, before
    any file is written. The helper reads only that plain form, so the generator
    is masked as well (a /dev/null link in /etc wins over /usr/lib's): no getty
    or emergency shell autologin even where the argument stays on the command
    line (another OEM's form, or typed at the GRUB prompt).
    """
    return (
        {"shouldNotExist": [AUTOLOGIN_ARG]},
        {"path": AUTOLOGIN_GENERATOR, "target": "/dev/null", "hard": False, "overwrite": True},
    )


def render_ignition(node: FlatcarNode) -> str:
    """Ignition JSON for one Flatcar node, deterministic (sorted keys) so its hash is stable."""
    if not node.ssh_keys:
        raise ValueError("ignition: at least one SSH public key is required (no password login)")
    files = [
        _file("/etc/hostname", node.fqdn + "\n"),
        _file("/etc/systemd/network/00-microcloud.network", networkd_unit(node.network)),
        _file("/etc/sysctl.d/90-microcloud.conf", _sysctl(node.kubernetes)),
        _file(
            "/etc/systemd/timesyncd.conf.d/10-microcloud.conf",
            f"[Time]\nNTP={node.ntp_server}\nFallbackNTP=\n",
        ),
        # No compiled-in public fallback resolvers: the internal one comes first
        # and the libvirt gateway second, nothing else.
        _file(
            "/etc/systemd/resolved.conf.d/10-microcloud.conf",
            "[Resolve]\n" + f"DNS={' '.join(node.network.dns)}\n" + f"Domains={node.network.search_domain}\nFallbackDNS=\n",
        ),
        _file("/etc/flatcar/update.conf", _update_conf(node.updates), 0o644),
    ]
    if node.host_key is not None:
        files.append(_file(host_key.PRIVATE_PATH, node.host_key.private_openssh.rstrip("\n") + "\n", 0o600))
        files.append(_file(host_key.PUBLIC_PATH, node.host_key.public_openssh + "\n", 0o644))
    units = []
    if node.kubelet_sysctls:
        files.append(_file(k3s_hardening.SYSCTL_PATH, k3s_hardening.kubelet_sysctl_text()))
    if node.firewall is not None:
        files.append(_file(host_firewall.NFT_PATH, host_firewall.render_nftables(node.firewall), 0o600))
        units.append({"name": host_firewall.NFT_UNIT, "enabled": True, "contents": host_firewall.nft_unit()})
    if node.kubernetes:
        files.append(_file("/etc/modules-load.d/90-microcloud.conf", "br_netfilter\noverlay\n"))
        # Flatcar ships no swap, but nothing may add it later on a Kubernetes node.
        units.append({"name": "swap.target", "mask": True})
    config = {
        "ignition": {"version": IGNITION_VERSION},
        "passwd": {"users": [{"name": node.user, "sshAuthorizedKeys": list(node.ssh_keys)}]},
        "storage": {"files": files},
        "systemd": {"units": units},
    }
    if not node.autologin:
        args, link = _no_autologin()
        config["kernelArguments"] = args
        config["storage"]["links"] = [link]
    if node.user != "core":
        config["passwd"]["users"][0]["groups"] = ["sudo", "docker"]
    return json.dumps(config, sort_keys=True, separators=(",", ":"))
