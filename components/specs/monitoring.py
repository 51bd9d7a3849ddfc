"""Monitoring outside the cluster: which VMs get node_exporter, and from which networks Prometheus scrapes them."""

from __future__ import annotations

from ..config import K3S_ROLES, StackConfig


def monitored_nodes(cfg: StackConfig) -> list[str]:
    """The VMs outside the cluster that get node_exporter: the load balancers and the infra node."""
    return [n.name for n in cfg.nodes_with("load_balancer", "infra")]


def scrape_sources(cfg: StackConfig) -> tuple[str, ...]:
    """CIDRs of the networks the K3s nodes are on.

    Prometheus runs in a pod; K3s' flannel masquerades its traffic to
    addresses outside the cluster to the node's own address, so a scrape
    arrives from one of these networks.
    """
    nets = {n.network for n in cfg.nodes if n.role in K3S_ROLES}
    return tuple(str(cfg.network_by_name[name].cidr) for name in sorted(nets))
