"""The static addressing of one node's NIC: the spec both first-boot renderers take."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NetworkSettings:
    """Static IPv4 on the node's own network, matched by MAC.

    Only the node's own network: one default route through its gateway, which
    is the libvirt host (nat/route/isolated) or the LAN router (bridge). Routes
    to the stack's other networks are the host's job, not the node's, so
    adding a network never changes a node's first-boot config.
    """

    mac: str
    address: str  # IPv4 address
    prefix: int
    gateway: str
    dns: tuple[str, ...]  # in order: the internal resolver first
    search_domain: str
    mtu: int | None = None
