"""CoreDNS on the infra node: the stack's one domain from a hosts file, the rest forwarded."""

from __future__ import annotations

import ipaddress
from typing import Mapping, Optional, Sequence

from ._template import render


def render_corefile(
    *,
    domain: str,
    forwarders: Sequence[str],
    hosts_path: str = "/etc/coredns/hosts",
    port: int = 53,
    bind: Optional[str] = None,
    reload: bool = True,
) -> str:
    """The Corefile. It never lists records, so adding a node only changes the hosts file.

    The domain's zone answers authoritatively (no fallthrough: a typo is
    NXDOMAIN, not a query leaked to a public resolver); everything else is
    forwarded in the configured order.
    """
    if not forwarders:
        raise ValueError("coredns: at least one forwarder is required")
    return render(
        "Corefile.j2",
        domain=domain,
        forwarders=" ".join(forwarders),
        hosts_path=hosts_path,
        port=port,
        bind=bind,
        reload=reload,
    )


def render_hosts(*, domain: str, records: Mapping[str, str]) -> str:
    """hosts(5) file with one FQDN line per node and VIP, sorted by name for a stable hash."""
    lines = ["# Rendered by microcloud: every node and VIP of the stack"]
    for name in sorted(records):
        ip = ipaddress.IPv4Address(records[name])
        lines.append(f"{ip} {name}.{domain} {name}")
    return "\n".join(lines) + "\n"
