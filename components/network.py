"""Networks: the stack's libvirt networks (nat, route, bridge or isolated), and the host forwarding between them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_libvirt as libvirt
from pulumi_command import local

from .config import NetworkConfig
from .config.base import is_local_uri
from .render.host_forwarding import HostForwardingSpec, render_apply, render_delete
from .render.libvirt_xml import DhcpRangeSpec, render_dhcp_range_xslt

# libvirt calls an isolated network mode "none".
LIBVIRT_MODE = {"nat": "nat", "route": "route", "isolated": "none", "bridge": "bridge"}


@dataclass(frozen=True)
class NetworksArgs:
    prefix: str  # project-stack, so two stacks can share one libvirt host
    domain: str
    networks: Sequence[NetworkConfig]
    provider: pulumi.ProviderResource
    libvirt_uri: str = "qemu:///system"
    # What the host forwards (specs.host_forwarding); None: nothing.
    forwarding: Optional[HostForwardingSpec] = None


class Networks(pulumi.ComponentResource):
    ids: dict[str, pulumi.Output[str]]
    names: dict[str, str]

    def __init__(self, name: str, args: NetworksArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("microcloud:network:Networks", name, None, opts)
        self.ids = {}
        self.names = {}
        created = {net.name: self._create_network(args, net) for net in args.networks}
        forwarding = self._open_forwarding(args, list(created.values()))
        for name, res in created.items():
            # Whoever uses a network (every node) waits until the host forwards between them.
            self.ids[name] = pulumi.Output.all(res.id, forwarding).apply(lambda v: v[0]) if forwarding else res.id
            self.names[name] = f"{args.prefix}-{name}"
        self.register_outputs({"ids": self.ids})

    def _open_forwarding(self, args: NetworksArgs, networks: list[libvirt.Network]) -> Optional[pulumi.Output[str]]:
        """Let the stack's networks reach each other through the host (see render/host_forwarding.py)."""
        spec = args.forwarding
        if spec is None:
            return None
        if not is_local_uri(args.libvirt_uri):
            flows = sorted({f"{r.src} -> {r.dst}" for r in spec.rules})
            pulumi.log.warn(
                f"{args.libvirt_uri} is another host: open forwarding for {', '.join(flows)} on it yourself "
                "(libvirt rejects new connections into a nat network from the others); see docs/networks.md",
                resource=self,
            )
            return None
        script = render_apply(spec)
        cmd = local.Command(
            "host-forwarding",
            create=script,
            update=script,
            delete=render_delete(spec),
            interpreter=["/bin/sh", "-c"],
            # The nft/sysctl steps say nothing a person needs on success; a failure's error carries them.
            logging=local.Logging.NONE,
            opts=pulumi.ResourceOptions(parent=self, depends_on=networks),
        )
        return cmd.id

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
