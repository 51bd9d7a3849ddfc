"""The libvirt networks of a stack."""

from __future__ import annotations

import ipaddress
from typing import Any, Optional

from pydantic import Field, field_validator

from .base import IFNAME, NetworkMode, NetworkName, _Model, check_cidr


class Dhcp(_Model):
    start: ipaddress.IPv4Address = Field(description="First address libvirt's DHCP server hands out.")
    end: ipaddress.IPv4Address = Field(description="Last address libvirt's DHCP server hands out; node IPs and VIPs must lie outside the range.")


class DnsHost(_Model):
    hostname: str = Field(description="Name libvirt's DNS server on this network answers for.")
    ip: ipaddress.IPv4Address = Field(description="Its address, inside the network's `cidr`.")


class NetworkConfig(_Model):
    name: NetworkName = Field(description="Name the nodes and `load_balancer.network` refer to; unique.")
    mode: NetworkMode = Field(
        description="`nat`, `route` and `isolated`: libvirt owns the network; `bridge`: an existing host bridge on the LAN."
    )
    cidr: ipaddress.IPv4Network = Field(description="Address range, e.g. `10.27.0.0/24` (a /29 or larger, disjoint from the other networks).")
    gateway: Optional[ipaddress.IPv4Address] = Field(
        default=None,
        description="The router of the network. nat/route/isolated: the libvirt host, always the first host address (the default). bridge: the LAN router, required.",
    )
    bridge: Optional[str] = Field(default=None, description="Host bridge to attach to (bridge mode, required there), e.g. `br0`.")
    dhcp: Optional[Dhcp] = Field(default=None, description="DHCP range served by libvirt; not allowed in bridge mode. Default: no DHCP.")
    dns_hosts: tuple[DnsHost, ...] = Field(default=(), description="Extra names libvirt's DNS answers on this network.")
    mtu: Optional[int] = Field(default=None, ge=576, le=9000, description="MTU of the network and of its nodes' interfaces. Default: libvirt's.")

    @field_validator("cidr", mode="before")
    @classmethod
    def _cidr(cls, v: Any) -> Any:
        return check_cidr(v)

    @field_validator("bridge")
    @classmethod
    def _bridge(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not IFNAME.match(v):
            raise ValueError(f"{v!r} is not a Linux interface name (1-15 characters)")
        return v

    @property
    def router(self) -> ipaddress.IPv4Address:
        return self.gateway or next(self.cidr.hosts())

    def in_dhcp(self, ip: ipaddress.IPv4Address) -> bool:
        return self.dhcp is not None and self.dhcp.start <= ip <= self.dhcp.end
