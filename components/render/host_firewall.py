"""Each node's own firewall, written by first boot: nftables (Flatcar, Debian) or a firewalld zone (EL9).

One frozen spec per node (``FirewallSpec``, built by specs/firewall.py from
the stack config): what it admits, each allow with the sources that need it
and why; everything else that is new and addressed to the node is dropped.
Replies (conntrack established/related) and loopback always pass.

nftables: one table of our own, ``inet microcloud``, never ``flush ruleset``
(K3s, flannel and kube-proxy keep their own tables beside it; a packet any
base chain drops is dropped). The file deletes and recreates only that
table, so loading it again is idempotent. Its ``input`` chain has policy
drop; on K3s nodes a ``forward`` chain drops NodePort connections (DNATed
by kube-proxy, matched by their original port) from sources outside the
NodePort clients, and traffic from the pod and service ranges is admitted
as K3s' own docs require. A oneshot unit (``microcloud-firewall.service``)
loads it before the network comes up.

firewalld (EL9 nodes outside the cluster: the LB pair, infra, generic): the
zone ``microcloud`` (target DROP, rich rules per allow) becomes the default
zone. K3s nodes load the nftables table on every OS, EL9 included, with
firewalld off, as K3s' docs have it.

Pure (no Pulumi): checked by ``nft -c``, loaded into a network namespace and
probed, and the zones read by ``firewall-offline-cmd`` (tests/test_host_firewall.py).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Optional
from xml.sax.saxutils import quoteattr

TABLE = "microcloud"
NFT_PATH = "/etc/microcloud/firewall.nft"
NFT_UNIT = "microcloud-firewall.service"
ZONE = "microcloud"
ZONE_DIR = "/etc/firewalld/zones"
PROTOCOLS = ("tcp", "udp", "vrrp")
# Interfaces K3s' flannel makes: pod traffic to the node arrives on them.
K3S_INTERFACES = ("cni0", "flannel.1")
# Plain text: it becomes an nft comment and an XML comment (which may not hold "--").
_WHY = re.compile(r"^(?!.*--)[A-Za-z0-9 ,.:;()/_+'\[\]-]{1,120}$")


def _net(value: str, what: str) -> str:
    try:
        return str(ipaddress.IPv4Network(value))
    except ValueError:
        raise ValueError(f"firewall: {what} {value!r} is not an IPv4 network (a.b.c.d/n, host bits zero)") from None


@dataclass(frozen=True)
class Allow:
    """New connections of ``proto`` to ``ports`` (one port, or (first, last) as a range) from ``sources``."""

    proto: str
    ports: tuple[tuple[int, int], ...]
    sources: tuple[str, ...]
    why: str

    def __post_init__(self) -> None:
        if self.proto not in PROTOCOLS:
            raise ValueError(f"firewall: protocol {self.proto!r} is not one of {', '.join(PROTOCOLS)}")
        if (self.proto == "vrrp") != (not self.ports):
            raise ValueError(f"firewall: {self.why}: vrrp takes no ports, tcp and udp need at least one")
        for lo, hi in self.ports:
            if not 0 < lo <= hi < 65536:
                raise ValueError(f"firewall: {self.why}: port range {lo}-{hi} is not within 1-65535")
        if not self.sources:
            raise ValueError(f"firewall: {self.why}: no source; an allow without sources admits nobody")
        object.__setattr__(self, "sources", _networks(self.sources, "source"))
        spans = sorted(self.ports)
        if any(b[0] <= a[1] for a, b in zip(spans, spans[1:])):
            raise ValueError(f"firewall: {self.why}: ports {spans} overlap")
        if not _WHY.match(self.why):
            raise ValueError(f"firewall: reason {self.why!r} must be 1-120 plain characters (it becomes a comment)")


def _networks(values: tuple[str, ...], what: str) -> tuple[str, ...]:
    """Sorted, each once, none inside another listed one (a /32 inside a listed /24 goes): nftables refuses
    overlapping intervals in one set. Adjacent ones stay apart, as written (two LBs stay two /32s)."""
    nets = sorted({ipaddress.IPv4Network(_net(v, what)) for v in values})
    return tuple(str(n) for n in nets if not any(n != o and n.subnet_of(o) for o in nets))


def port(p: int) -> tuple[int, int]:
    return (p, p)


@dataclass(frozen=True)
class NodePorts:
    """K3s' NodePort range and who may open connections to it (the LB pair, the cluster's own networks)."""

    first: int
    last: int
    sources: tuple[str, ...]

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.last < 65536:
            raise ValueError(f"firewall: NodePort range {self.first}-{self.last} is not within 1-65535")
        object.__setattr__(self, "sources", _networks(self.sources, "NodePort client"))


@dataclass(frozen=True)
class FirewallSpec:
    node: str
    role: str
    allows: tuple[Allow, ...]
    # Networks whose echo requests are answered (the stack's own; others get nothing back).
    ping_from: tuple[str, ...] = ()
    # K3s nodes: the pod and service ranges (admitted, as K3s requires) and the NodePorts' clients.
    pod_ranges: tuple[str, ...] = ()
    node_ports: Optional[NodePorts] = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", self.node):
            raise ValueError(f"firewall: node name {self.node!r} is not a DNS label")
        object.__setattr__(self, "ping_from", _networks(self.ping_from, "ping source"))
        object.__setattr__(self, "pod_ranges", _networks(self.pod_ranges, "pod range"))
        if not any(a.proto == "tcp" and any(lo <= 22 <= hi for lo, hi in a.ports) for a in self.allows):
            raise ValueError(f"firewall: node {self.node} would admit no SSH: Pulumi could not reach it again")


# ------------------------------------------------------------------ nftables


def _set(values: tuple[str, ...]) -> str:
    return values[0] if len(values) == 1 else "{ " + ", ".join(values) + " }"


def _ports(ports: tuple[tuple[int, int], ...]) -> str:
    items = tuple(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ports)
    return _set(items)


def _comment(text: str) -> str:
    return f'comment "{text}"'


def render_nftables(spec: FirewallSpec) -> str:
    """The node's table for ``nft -f``: replaces ``inet microcloud`` and touches nothing else."""
    lines = [
        f"# Rendered by microcloud: the firewall of {spec.node} ({spec.role}); loaded by {NFT_UNIT}.",
        "# Only this table: K3s, flannel and kube-proxy keep their own tables beside it.",
        f"table inet {TABLE}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        "  chain input {",
        "    type filter hook input priority filter; policy drop;",
        '    iif "lo" accept',
        "    ct state established,related accept",
        "    ct state invalid drop",
        # Neighbour discovery and the like; the stack is IPv4, nothing else answers over IPv6.
        "    meta nfproto ipv6 icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } accept",
    ]
    if spec.ping_from:
        lines.append(f"    ip saddr {_set(spec.ping_from)} icmp type echo-request accept")
    if spec.pod_ranges:
        lines.append(f"    iifname {_set(tuple(chr(34) + i + chr(34) for i in K3S_INTERFACES))} accept {_comment('K3s: pods to their node')}")
        lines.append(f"    ip saddr {_set(spec.pod_ranges)} accept {_comment('K3s: the pod and service ranges')}")
    for a in spec.allows:
        src = f"ip saddr {_set(a.sources)}"
        if a.proto == "vrrp":
            lines.append(f"    {src} ip protocol vrrp accept {_comment(a.why)}")
        else:
            lines.append(f"    {src} {a.proto} dport {_ports(a.ports)} accept {_comment(a.why)}")
    lines.append("  }")
    if spec.node_ports is not None:
        np = spec.node_ports
        lines += [
            "  chain forward {",
            # Before the filter chains of K3s (kube-router's policies, flannel's accepts): a drop here is final.
            "    type filter hook forward priority filter - 5; policy accept;",
            f"    ct state new ct status dnat meta l4proto {{ tcp, udp }} ct original proto-dst {np.first}-{np.last} "
            f"ip saddr != {_set(np.sources)} drop {_comment('NodePorts: only the LB pair and the cluster')}",
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def nft_unit() -> str:
    """systemd unit that loads the table at boot, before the network is up (Flatcar and Debian alike)."""
    return "\n".join([
        "[Unit]",
        "Description=microcloud node firewall (nftables table inet microcloud)",
        "DefaultDependencies=no",
        "Before=network-pre.target shutdown.target",
        "Wants=network-pre.target",
        "Conflicts=shutdown.target",
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        f"ExecStart=/usr/sbin/nft -f {NFT_PATH}",
        "",
        "[Install]",
        "WantedBy=sysinit.target",
        "",
    ])


# ------------------------------------------------------------------ firewalld


def rich_rule(source: str, proto: str, ports: Optional[tuple[int, int]] = None) -> str:
    """One rich rule as firewall-cmd lists it (the day-2 fragments of render/firewalld.py write the same form)."""
    src = f'rule family="ipv4" source address="{source}"'
    if proto == "vrrp":
        return f'{src} protocol value="vrrp" accept'
    lo, hi = ports
    value = str(lo) if lo == hi else f"{lo}-{hi}"
    return f'{src} port port="{value}" protocol="{proto}" accept'


def render_firewalld_zone(spec: FirewallSpec) -> str:
    """The node's default zone, ``/etc/firewalld/zones/microcloud.xml``: target DROP, one rich rule per source and port."""
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<zone target="DROP">',
        f"  <short>{ZONE}</short>",
        f"  <description>Rendered by microcloud: the firewall of {spec.node} ({spec.role}).</description>",
    ]
    for src in spec.ping_from:
        lines.append(f'  <rule family="ipv4"><source address={quoteattr(src)}/><icmp-type name="echo-request"/><accept/></rule>')
    for a in spec.allows:
        lines.append(f"  <!-- {a.why} -->")
        for src in a.sources:
            if a.proto == "vrrp":
                lines.append(f'  <rule family="ipv4"><source address={quoteattr(src)}/><protocol value="vrrp"/><accept/></rule>')
                continue
            for lo, hi in a.ports:
                value = str(lo) if lo == hi else f"{lo}-{hi}"
                lines.append(
                    f'  <rule family="ipv4"><source address={quoteattr(src)}/>'
                    f'<port port="{value}" protocol="{a.proto}"/><accept/></rule>'
                )
    lines.append("</zone>")
    return "\n".join(lines) + "\n"
