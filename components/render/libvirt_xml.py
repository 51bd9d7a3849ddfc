"""XSLT for libvirt network XML: the provider has no DHCP range field, so we set it here."""

from __future__ import annotations

import ipaddress

from ._template import render


def render_dhcp_range_xslt(*, start: str, end: str) -> str:
    """Replace the DHCP range the provider derives from the CIDR with the configured one."""
    s, e = ipaddress.IPv4Address(start), ipaddress.IPv4Address(end)
    if s > e:
        raise ValueError("dhcp range: start is after end")
    return render("dhcp_range.xsl.j2", start=str(s), end=str(e))
