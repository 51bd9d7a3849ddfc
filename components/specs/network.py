"""The libvirt host's forwarding (render/host_forwarding.py): which flows the host lets through, from the config."""

from __future__ import annotations

import re
from typing import Optional

from ..config import StackConfig
from ..render.host_forwarding import ForwardRule, HostForwardingSpec, between

# Networks whose traffic the host forwards; isolated ones stay isolated.
FORWARDING_MODES = ("nat", "route", "bridge")


def forwarding_ends(cfg: StackConfig) -> dict[str, tuple[str, ...]]:
    """Each forwarding network's ends: a libvirt network (nat, route) holds only the stack's nodes, so its whole
    range; a ``bridge`` network is the LAN, so only the stack's addresses on it (its nodes, and the VIPs when
    they are there). A bridge network with none of them has no end: nothing is forwarded to or from it."""
    ends: dict[str, tuple[str, ...]] = {}
    lb = cfg.load_balancer
    for net in cfg.networks:
        if net.mode not in FORWARDING_MODES:
            continue
        if net.mode != "bridge":
            ends[net.name] = (str(net.cidr),)
            continue
        hosts = {n.ip for n in cfg.nodes if n.network == net.name}
        if lb.network == net.name:
            hosts |= {lb.api_vip, lb.ingress_vip}
        if hosts:
            ends[net.name] = tuple(f"{ip}/32" for ip in sorted(hosts))
    return ends


def vip_client_rules(cfg: StackConfig) -> tuple[ForwardRule, ...]:
    """``load_balancer.clients`` to the VIPs' ports only: the API VIP on ``api_port``, the ingress VIP on 80 and 443."""
    lb = cfg.load_balancer
    return tuple(
        ForwardRule(str(client), f"{vip}/32", ports)
        for client in lb.clients
        for vip, ports in ((lb.api_vip, (lb.api_port,)), (lb.ingress_vip, (80, 443)))
    )


def forwarding_tag(prefix: str) -> str:
    """The rules' comment tag from ``project-stack``: a stack name may hold '.', which iptables would quote."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", prefix)[:64]


def host_forwarding(cfg: StackConfig, prefix: str) -> Optional[HostForwardingSpec]:
    """The host's forwarding for the stack, or None when there is nothing to forward."""
    rules = between(forwarding_ends(cfg)) + vip_client_rules(cfg)
    return HostForwardingSpec(tag=forwarding_tag(prefix), rules=tuple(sorted(set(rules)))) if rules else None
