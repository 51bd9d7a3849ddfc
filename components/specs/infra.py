"""The infra node: chrony's server config, CoreDNS' Corefile, zone and hosts file."""

from __future__ import annotations

from typing import Mapping

from ..config import StackConfig
from ..render import chrony, coredns


def chrony_server_conf(cfg: StackConfig) -> str:
    return chrony.render_chrony_server(
        chrony.ChronyServerSpec(upstream=tuple(cfg.ntp.upstream), allow=tuple(str(n.cidr) for n in cfg.networks))
    )


def dns_records(cfg: StackConfig, node_ips: Mapping[str, str]) -> dict[str, str]:
    """Every node and both VIPs (api, ingress) under the one domain; '*.apps' is left to ingress."""
    records = dict(node_ips)
    records["api"] = str(cfg.load_balancer.api_vip)
    records["ingress"] = str(cfg.load_balancer.ingress_vip)
    return records


def dns_clients(cfg: StackConfig) -> tuple[str, ...]:
    """Who CoreDNS answers: every network of the stack, `dns.allowed_clients`, and the infra node itself.

    Pods reach it from their node's address (flannel masquerades what leaves
    the cluster), so the node networks cover the cluster too.
    """
    nets = [str(n.cidr) for n in cfg.networks] + [str(c) for c in cfg.dns.allowed_clients]
    return tuple(dict.fromkeys(nets)) + coredns.LOOPBACK_CLIENTS


def corefile(cfg: StackConfig) -> str:
    return coredns.render_corefile(
        coredns.CorefileSpec(
            domain=cfg.domain, forwarders=tuple(str(f) for f in cfg.dns.forwarders), allow=dns_clients(cfg)
        )
    )


def zone_file(cfg: StackConfig) -> str:
    """The domain's SOA-only zone; its nameserver is the infra node, whose address never changes."""
    infra = cfg.infra_node
    return coredns.render_zone(coredns.ZoneSpec(domain=cfg.domain, nameserver=infra.name, nameserver_ip=str(infra.ip)))


def hosts_file(cfg: StackConfig, node_ips: Mapping[str, str]) -> str:
    return coredns.render_hosts(coredns.HostsSpec(domain=cfg.domain, records=dns_records(cfg, node_ips)))
