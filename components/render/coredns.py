"""CoreDNS on the infra node: the stack's one domain from a hosts file, the rest forwarded, to the stack's networks only."""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass
from typing import Mapping, Optional

from ._template import render
from .shell import output_matches

CONF_DIR = "/etc/coredns"
# The infra node's own queries: the day-2 checks ask 127.0.0.1 (dig_check), and
# a query to loopback leaves from the address it was sent to.
LOOPBACK_CLIENTS = ("127.0.0.1/32", "::1/128")


@dataclass(frozen=True)
class CorefileSpec:
    """The Corefile. ``port`` and ``bind`` exist for the tests (loopback, unprivileged)."""

    domain: str
    forwarders: tuple[str, ...]  # in order; host or host:port
    # Source networks (CIDR) whose queries are answered; every other source gets REFUSED.
    allow: tuple[str, ...]
    hosts_path: str = f"{CONF_DIR}/hosts"
    zone_path: str = f"{CONF_DIR}/zone.db"
    port: int = 53
    bind: Optional[str] = None
    reload: bool = True


@dataclass(frozen=True)
class HostsSpec:
    domain: str
    records: Mapping[str, str]  # short name -> IPv4 address


@dataclass(frozen=True)
class ZoneSpec:
    domain: str
    nameserver: str  # short name of the node that serves the zone
    nameserver_ip: str
    negative_ttl: int = 30


@dataclass(frozen=True)
class CoreDnsUnitSpec:
    binary: str
    conf_dir: str = CONF_DIR


def render_corefile(spec: CorefileSpec) -> str:
    """The Corefile. It never lists records, so adding a node only changes the hosts file.

    The domain's zone answers authoritatively and is never forwarded: a name
    the hosts file lacks falls through to an SOA-only zone file, so a typo is
    a cacheable NXDOMAIN (the hosts plugin alone, having no SOA, can only
    answer SERVFAIL), never a query leaked to a public resolver. Everything
    else is forwarded in the configured order.

    Both server blocks answer only sources in ``allow`` (the acl plugin, ahead
    of cache, hosts, file and forward in CoreDNS' plugin order); any other
    source gets REFUSED, so the node is no open resolver and tells nobody
    else the stack's names either.
    """
    if not spec.forwarders:
        raise ValueError("coredns: at least one forwarder is required")
    return render(
        "Corefile.j2",
        domain=spec.domain,
        forwarders=" ".join(spec.forwarders),
        allow=" ".join(_clients(spec.allow)),
        hosts_path=spec.hosts_path,
        zone_path=spec.zone_path,
        port=spec.port,
        bind=spec.bind,
        reload=spec.reload,
    )


def _clients(allow: tuple[str, ...]) -> list[str]:
    if not allow:
        raise ValueError("coredns: at least one client network is required (an empty acl answers nobody)")
    out = []
    for cidr in allow:
        net = ipaddress.ip_network(cidr)  # strict: host bits set is an error, not a silent widening
        if net.prefixlen == 0:
            raise ValueError(f"coredns: client network {cidr} is every address: an open resolver")
        out.append(str(net))
    return list(dict.fromkeys(out))


def render_hosts(spec: HostsSpec) -> str:
    """hosts(5) file with one FQDN line per node and VIP, sorted by name for a stable hash.

    Only the FQDN: a short alias would also become a second PTR answer and an
    A record for a single-label name. Short names still resolve on the nodes
    through their search domain.
    """
    lines = ["# Rendered by microcloud: every node and VIP of the stack"]
    for name in sorted(spec.records):
        ip = ipaddress.IPv4Address(spec.records[name])
        lines.append(f"{ip} {name}.{spec.domain}")
    return "\n".join(lines) + "\n"


def render_zone(spec: ZoneSpec) -> str:
    """The domain's SOA-only zone (plus its NS): what the hosts plugin falls through to.

    It holds no node records, so it never changes when nodes come and go;
    ``negative_ttl`` (the SOA minimum) bounds how long a resolver caches the
    NXDOMAIN for a node that is about to be added.
    """
    ns = f"{spec.nameserver}.{spec.domain}."
    ip = ipaddress.IPv4Address(spec.nameserver_ip)
    return render(
        "zone.db.j2", domain=spec.domain, ns=ns, ns_label=spec.nameserver, ns_ip=ip, negative_ttl=spec.negative_ttl
    )


def render_unit(spec: CoreDnsUnitSpec) -> str:
    """systemd unit for the CoreDNS binary: no container runtime, no registry.

    A transient user of its own (DynamicUser), only CAP_NET_BIND_SERVICE (port
    53), read-only view of the system: CoreDNS only reads its files and
    answers on the network.
    """
    return (
        "# Rendered by microcloud (components/render/coredns.py).\n"
        "[Unit]\n"
        "Description=CoreDNS for the microcloud domain\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n\n"
        "[Service]\n"
        f"ExecStart={spec.binary} -conf {spec.conf_dir}/Corefile\n"
        "Restart=on-failure\n"
        "RestartSec=2s\n"
        "DynamicUser=yes\n"
        "AmbientCapabilities=CAP_NET_BIND_SERVICE\n"
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n"
        "NoNewPrivileges=yes\n"
        "ProtectSystem=strict\n"
        "ProtectHome=yes\n"
        "PrivateTmp=yes\n"
        "PrivateDevices=yes\n"
        "ProtectKernelTunables=yes\n"
        "ProtectKernelModules=yes\n"
        "ProtectControlGroups=yes\n"
        "ProtectClock=yes\n"
        "ProtectHostname=yes\n"
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK\n"
        "RestrictNamespaces=yes\n"
        "RestrictRealtime=yes\n"
        "LockPersonality=yes\n"
        "MemoryDenyWriteExecute=yes\n"
        "SystemCallArchitectures=native\n\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def dig_check(name: str, rtype: str = "A", port: int = 53) -> str:
    """Shell: the local CoreDNS answers ``name`` ``rtype`` with NOERROR (dig's whole answer read, then matched)."""
    at = "@127.0.0.1" if port == 53 else f"@127.0.0.1 -p {port}"
    return output_matches(f"dig +time=1 +tries=1 {at} {shlex.quote(name)} {rtype}", "status: NOERROR", fixed=True)


def version_check(binary: str, version: str) -> str:
    """Shell: ``binary -version`` names exactly CoreDNS ``version`` (``v1.12.1``) on a line of its own."""
    return output_matches(f"{binary} -version", f"^CoreDNS-{version.lstrip('v')}$")
