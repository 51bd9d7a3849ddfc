"""XSLT for libvirt network XML: the provider has no DHCP range field, so we set it here."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ._template import render


@dataclass(frozen=True)
class DhcpRangeSpec:
    start: str  # IPv4 address
    end: str  # IPv4 address


def render_dhcp_range_xslt(spec: DhcpRangeSpec) -> str:
    """Replace the DHCP range the provider derives from the CIDR with the configured one."""
    s, e = ipaddress.IPv4Address(spec.start), ipaddress.IPv4Address(spec.end)
    if s > e:
        raise ValueError("dhcp range: start is after end")
    return render("dhcp_range.xsl.j2", start=str(s), end=str(e))
