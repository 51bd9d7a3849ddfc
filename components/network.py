"""Networks: the stack's libvirt networks (nat, route, bridge or isolated)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_libvirt as libvirt

from .config import NetworkConfig
from .render.libvirt_xml import DhcpRangeSpec, render_dhcp_range_xslt

# libvirt calls an isolated network mode "none".
LIBVIRT_MODE = {"nat": "nat", "route": "route", "isolated": "none", "bridge": "bridge"}


@dataclass(frozen=True)
class NetworksArgs:
    prefix: str  # project-stack, so two stacks can share one libvirt host
    domain: str
    networks: Sequence[NetworkConfig]
    provider: pulumi.ProviderResource


class Networks(pulumi.ComponentResource):
    ids: dict[str, pulumi.Output[str]]
    names: dict[str, str]

    def __init__(self, name: str, args: NetworksArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("microcloud:network:Networks", name, None, opts)
        self.ids = {}
        self.names = {}
        for net in args.networks:
            res = self._create_network(args, net)
            self.ids[net.name] = res.id
            self.names[net.name] = f"{args.prefix}-{net.name}"
        self.register_outputs({"ids": self.ids})

    def _create_network(self, args: NetworksArgs, net: NetworkConfig) -> libvirt.Network:
        physical = f"{args.prefix}-{net.name}"
        opts = pulumi.ResourceOptions(
            parent=self,
            provider=args.provider,
            # libvirt names are fixed, so a replacement must free the name first.
            delete_before_replace=True,
        )
        if net.mode == "bridge":
            # A bridge network only points libvirt at the host bridge; the LAN
            # router owns addressing, DHCP and DNS.
            return libvirt.Network(net.name, name=physical, mode="bridge", bridge=net.bridge, autostart=True, opts=opts)
        xml = None
        if net.dhcp is not None:
            dhcp_range = DhcpRangeSpec(start=str(net.dhcp.start), end=str(net.dhcp.end))
            xml = libvirt.NetworkXmlArgs(xslt=render_dhcp_range_xslt(dhcp_range))
        return libvirt.Network(
            net.name,
            name=physical,
            mode=LIBVIRT_MODE[net.mode],
            bridge=net.bridge,
            domain=args.domain,
            addresses=[str(net.cidr)],
            mtu=net.mtu,
            autostart=True,
            dhcp=libvirt.NetworkDhcpArgs(enabled=net.dhcp is not None),
            dns=libvirt.NetworkDnsArgs(
                enabled=True,
                local_only=True,
                hosts=[libvirt.NetworkDnsHostArgs(hostname=h.hostname, ip=str(h.ip)) for h in net.dns_hosts],
            ),
            xml=xml,
            opts=opts,
        )
