"""cloud-init for EL9 (Rocky/Alma) and Debian 12 nodes: user-data, network-config v2 and meta-data.

Only what never changes for the VM's life goes here (day 1); service configs
that follow the cluster (haproxy, keepalived, chrony server, CoreDNS) are
applied in place later by day-2 commands.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from . import host_firewall, k3s_hardening
from .chrony import ChronyClientSpec, render_chrony_client
from .host_key import HostKey
from .network import NetworkSettings
from .os_family import OsFamily


@dataclass(frozen=True)
class CloudInitNode:
    family: OsFamily
    hostname: str
    fqdn: str
    role: str
    user: str
    ssh_keys: tuple[str, ...]
    network: NetworkSettings
    # The infra node itself runs the chrony server (day 2); others sync from it.
    ntp_server: str | None
    extra_packages: tuple[str, ...] = field(default=())
    # Pulumi's host key: written before sshd starts, the image's keys deleted, no other ed25519 key generated.
    host_key: HostKey | None = None
    # K3s' protect-kernel-defaults: the kubelet sysctls, applied by runcmd's `sysctl --system` before K3s is installed.
    kubelet_sysctls: bool = False
    # The node's firewall (render/host_firewall.py): nftables on Debian, firewalld on EL9; None: none.
    firewall: host_firewall.FirewallSpec | None = None


@dataclass(frozen=True)
class MetaDataSpec:
    instance_id: str
    hostname: str


# The name network-config gives the NIC it matches by MAC.
INTERFACE = "eth0"


def _dump(doc: dict, header: str = "") -> str:
    return header + yaml.safe_dump(doc, sort_keys=True, default_flow_style=False)


def render_user_data(node: CloudInitNode) -> str:
    if not node.ssh_keys:
        raise ValueError("cloud-init: at least one SSH public key is required (no password login)")
    fam = node.family
    packages = sorted(set(fam.packages_for(node.role) + node.extra_packages + firewall_packages(node)))
    sysctl = "# Rendered by microcloud\nnet.ipv4.ip_forward = 1\nnet.ipv4.ip_nonlocal_bind = 1\n"
    files = [
        {"path": "/etc/sysctl.d/90-microcloud.conf", "content": sysctl, "permissions": "0644", "owner": "root:root"},
    ]
    if node.kubelet_sysctls:
        files.append({"path": k3s_hardening.SYSCTL_PATH, "content": k3s_hardening.kubelet_sysctl_text(), "permissions": "0644", "owner": "root:root"})
    if fam.write_resolv_conf:
        resolv = "# Rendered by microcloud\n" + "".join(f"nameserver {ip}\n" for ip in node.network.dns)
        resolv += f"search {node.network.search_domain}\n"
        files.append({"path": "/etc/resolv.conf", "content": resolv, "permissions": "0644", "owner": "root:root"})
    runcmd: list[list[str] | str] = [
        ["sysctl", "--system"],
        # Cloud images ship without swap; make sure nothing enables it.
        ["swapoff", "-a"],
        ["systemctl", "enable", "--now", "qemu-guest-agent"],
    ]
    if node.ntp_server:
        files.append(
            {
                "path": fam.chrony_conf,
                "content": render_chrony_client(ChronyClientSpec(server=node.ntp_server)),
                "permissions": "0644",
                "owner": "root:root",
            }
        )
        runcmd.append(["systemctl", "restart", fam.chrony_unit])
    runcmd.append(["systemctl", "enable", "--now", fam.chrony_unit])
    runcmd += _firewall(node, files)
    if node.role == "load_balancer" and fam.selinux:
        # SELinux keeps haproxy off the NodePort range unless allowed.
        runcmd.append(["setsebool", "-P", "haproxy_connect_any", "1"])
    doc = {
        "hostname": node.hostname,
        "fqdn": node.fqdn,
        "prefer_fqdn_over_hostname": True,
        "manage_etc_hosts": True,
        "users": [
            {
                "name": node.user,
                "groups": [fam.admin_group],
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "shell": "/bin/bash",
                "lock_passwd": True,
                "ssh_authorized_keys": list(node.ssh_keys),
            }
        ],
        "ssh_pwauth": False,
        "disable_root": True,
        "chpasswd": {"expire": False},
        "timezone": "UTC",
        "package_update": False,
        "packages": packages,
        "write_files": files,
        "runcmd": runcmd,
    }
    if node.host_key is not None:
        doc["ssh_deletekeys"] = True
        # Only the type it is given: that file exists, so cloud-init generates nothing.
        doc["ssh_genkeytypes"] = ["ed25519"]
        doc["ssh_keys"] = {"ed25519_private": node.host_key.private_openssh, "ed25519_public": node.host_key.public_openssh}
    return _dump(doc, "#cloud-config\n")


def uses_firewalld(node: CloudInitNode) -> bool:
    """firewalld on EL9 nodes outside the cluster; our nftables table on Debian and on every K3s node
    (K3s' docs have firewalld off on its nodes: its zones would sit between the NIC, flannel and the pods)."""
    return node.firewall is not None and node.family.firewall == "firewalld" and not node.firewall.pod_ranges


def firewall_packages(node: CloudInitNode) -> tuple[str, ...]:
    if node.firewall is None:
        return ()
    return ("firewalld",) if uses_firewalld(node) else ("nftables",)


def _firewall(node: CloudInitNode, files: list[dict]) -> list[list[str] | str]:
    """The firewall's files (added to ``files``) and the runcmd steps that start it, packages being installed by then."""
    spec = node.firewall
    if spec is None:
        return []

    def root_file(path: str, content: str, mode: str = "0644") -> dict:
        return {"path": path, "content": content, "permissions": mode, "owner": "root:root"}

    if uses_firewalld(node):
        files.append(root_file(f"{host_firewall.ZONE_DIR}/{host_firewall.ZONE}.xml", host_firewall.render_firewalld_zone(spec)))
        return [
            ["systemctl", "enable", "--now", "firewalld"],
            ["firewall-cmd", "--reload"],
            ["firewall-cmd", f"--set-default-zone={host_firewall.ZONE}"],
        ]
    files.append(root_file(host_firewall.NFT_PATH, host_firewall.render_nftables(spec), "0600"))
    files.append(root_file(f"/etc/systemd/system/{host_firewall.NFT_UNIT}", host_firewall.nft_unit()))
    steps: list[list[str] | str] = []
    if node.family.firewall == "firewalld":
        # An EL9 K3s node: an image that enables firewalld must not keep it running beside the table.
        steps.append("systemctl disable --now firewalld 2>/dev/null || true")
    return steps + [["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", host_firewall.NFT_UNIT]]


def render_network_config(net: NetworkSettings) -> str:
    """network-config v2 with a static address; the internal resolver first."""
    eth: dict = {
        "match": {"macaddress": net.mac},
        "set-name": INTERFACE,
        "addresses": [f"{net.address}/{net.prefix}"],
        # gateway4, not a 0.0.0.0/0 route: cloud-init's ifupdown (ENI) renderer
        # turns routes into `post-up route add ... || true`, which needs
        # net-tools and fails silently without it (measured on Debian 12: no
        # default route at all); gateway4 becomes ifupdown's own `gateway`.
        "gateway4": net.gateway,
        "nameservers": {"addresses": list(net.dns), "search": [net.search_domain]},
        "dhcp4": False,
        "dhcp6": False,
    }
    if net.mtu:
        eth["mtu"] = net.mtu
    return _dump({"version": 2, "ethernets": {INTERFACE: eth}})


def render_meta_data(spec: MetaDataSpec) -> str:
    return _dump({"instance-id": spec.instance_id, "local-hostname": spec.hostname})
