"""XSLT for libvirt XML, for what the provider has no field for: a network's DHCP range, a data disk's serial, a VM's display."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Optional

from ._template import render

# A volume name an XPath string literal can carry.
_VOLUME = re.compile(r"^[A-Za-z0-9._-]+$")
# libvirt refuses a VNC password over 8 characters ("only 8 permitted"): VNC's
# DES challenge-response reads no more. Letters and digits only, so it needs no
# escaping in an XSLT attribute value template.
VNC_PASSWORD = re.compile(r"^[A-Za-z0-9]{8}$")


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


@dataclass(frozen=True)
class DomainXslt:
    """What one VM's domain XML gets beyond the provider's fields.

    ``disks``: (volume name, serial) of each data disk. ``vnc_password``: None
    for no display at all, else the password of its one VNC display (8 letters
    and digits), which makes the stylesheet a secret.
    """

    disks: tuple[tuple[str, str], ...] = ()
    vnc_password: Optional[str] = None


def render_domain_xslt(spec: DomainXslt) -> str:
    """XSLT for the libvirt domain: disk serials, and the display.

    The provider (terraform-provider-libvirt 0.8) writes a pool volume disk as
    ``<disk type="volume" device="disk"><source pool=".." volume="NAME"/>``;
    the stylesheet adds (or replaces) its serial. Without a ``graphics`` block
    the provider writes a SPICE display with no password, so no display is a
    stylesheet that drops every ``graphics`` element; with VNC, the first one
    becomes VNC on 127.0.0.1 with ``passwd`` (libvirt hands it to QEMU over its
    monitor, never on QEMU's command line) and any other goes.
    """
    disks = spec.disks
    serials = [s for _, s in disks]
    if len(set(serials)) != len(serials):
        raise ValueError(f"data disk serials must be unique per VM: {serials}")
    for volume, serial in disks:
        if not _VOLUME.match(volume):
            raise ValueError(f"volume name {volume!r} has characters an XPath literal cannot carry")
        if not re.match(r"^[A-Za-z0-9_.+-]{1,20}$", serial):
            raise ValueError(f"serial {serial!r}: at most 20 of A-Z a-z 0-9 _ . + -")
    if spec.vnc_password is not None and not VNC_PASSWORD.match(spec.vnc_password):
        # Never the value: it is a secret.
        raise ValueError("VNC password: exactly 8 letters and digits (libvirt takes at most 8 characters)")
    return render("domain.xsl.j2", disks=list(disks), vnc_password=spec.vnc_password)
