"""XSLT for libvirt XML, for what the provider has no field for: a network's DHCP range, a data disk's serial."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Optional

from ._template import render

# A volume name an XPath string literal can carry.
_VOLUME = re.compile(r"^[A-Za-z0-9._-]+$")


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
class DiskSerials:
    """(volume name, serial) of each data disk of one VM."""

    disks: tuple[tuple[str, str], ...]


def render_disk_serial_xslt(spec: DiskSerials) -> Optional[str]:
    """XSLT for the libvirt domain: ``<serial>`` on the disk whose source is each (volume name, serial).

    The provider (terraform-provider-libvirt 0.8) writes a pool volume disk as
    ``<disk type="volume" device="disk"><source pool=".." volume="NAME"/>``;
    the stylesheet adds (or replaces) its serial. None when there are no data disks.
    """
    disks = spec.disks
    if not disks:
        return None
    serials = [s for _, s in disks]
    if len(set(serials)) != len(serials):
        raise ValueError(f"data disk serials must be unique per VM: {serials}")
    for volume, serial in disks:
        if not _VOLUME.match(volume):
            raise ValueError(f"volume name {volume!r} has characters an XPath literal cannot carry")
        if not re.match(r"^[A-Za-z0-9_.+-]{1,20}$", serial):
            raise ValueError(f"serial {serial!r}: at most 20 of A-Z a-z 0-9 _ . + -")
    return render("disk_serial.xsl.j2", disks=list(disks))
