"""What differs between the cloud-init node OSes: packages, unit names, paths.

One table, read by the cloud-init renderer (day 1) and by the day-2 commands
(which unit to restart, where chrony reads its config), so a Debian node and
a Rocky node get the same services under their own names.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class OsFamily:
    name: str
    # Group whose members may sudo (the login user joins it).
    admin_group: str
    chrony_unit: str
    chrony_conf: str
    # Installed at first boot from the node's own repositories; on an
    # air-gapped site the image must already carry them (then apt/dnf only
    # checks). Keyed by role; BASE for every node.
    packages: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # SELinux: haproxy may connect to the NodePort range only when allowed.
    selinux: bool = False
    # cloud-init's ENI renderer (Debian's ifupdown) hands nameservers to
    # resolvconf, which a minimal image does not have: write resolv.conf.
    write_resolv_conf: bool = False
    # The node firewall outside the cluster (render/host_firewall.py): "nftables" (our table and unit) or
    # "firewalld" (our zone); K3s nodes load the nftables table everywhere (render/cloud_init.py).
    firewall: str = "nftables"

    def packages_for(self, role: str) -> tuple[str, ...]:
        return tuple(sorted(set(self.packages.get("BASE", ()) + self.packages.get(role, ()))))


EL9 = OsFamily(
    name="el9",
    admin_group="wheel",
    chrony_unit="chronyd",
    chrony_conf="/etc/chrony.conf",
    packages={
        "BASE": ("chrony", "qemu-guest-agent"),
        "load_balancer": ("haproxy", "keepalived", "policycoreutils-python-utils"),
        "infra": ("bind-utils",),
    },
    selinux=True,
    firewall="firewalld",
)

DEBIAN = OsFamily(
    name="debian",
    admin_group="sudo",
    chrony_unit="chrony",
    chrony_conf="/etc/chrony/chrony.conf",
    packages={
        "BASE": ("chrony", "qemu-guest-agent"),
        "load_balancer": ("haproxy", "keepalived"),
        "infra": ("dnsutils",),
    },
    write_resolv_conf=True,
)

FAMILIES = {"rocky9": EL9, "alma9": EL9, "debian12": DEBIAN}


def family_of(os_name: str) -> OsFamily:
    try:
        return FAMILIES[os_name]
    except KeyError:
        raise ValueError(f"{os_name!r} is not configured by cloud-init (one of {', '.join(sorted(FAMILIES))})") from None
