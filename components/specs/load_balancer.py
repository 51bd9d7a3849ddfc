"""The load-balancer pair: haproxy.cfg from the live backend addresses, keepalived.conf of both, the check script."""

from __future__ import annotations

import dataclasses
from typing import Mapping

from ..config import StackConfig, vrrp_priority
from ..render import haproxy, keepalived

# Where the load balancers get the haproxy check; keepalived.conf tracks it.
CHECK_SCRIPT = keepalived.CHECK_SCRIPT


def haproxy_backends(cfg: StackConfig) -> list[str]:
    """Names of the nodes HAProxy sends traffic to: the K3s servers (API) and the ingress nodes."""
    return sorted({n.name for n in cfg.servers} | {n.name for n in cfg.ingress_nodes})


def haproxy_spec(cfg: StackConfig, node_ips: Mapping[str, str]) -> haproxy.HaproxySpec:
    """The haproxy.cfg spec from the live node addresses (``node_ips``: name -> IP of servers and ingress nodes)."""
    lb = cfg.load_balancer
    return haproxy.HaproxySpec(
        api_vip=str(lb.api_vip),
        ingress_vip=str(lb.ingress_vip),
        servers=tuple(haproxy.Backend(n.name, node_ips[n.name]) for n in cfg.servers),
        ingress_nodes=tuple(haproxy.Backend(n.name, node_ips[n.name]) for n in cfg.ingress_nodes),
        api_port=lb.api_port,
        http_nodeport=lb.ingress_http_nodeport,
        https_nodeport=lb.ingress_https_nodeport,
        stats_port=lb.stats_port,
    )


def haproxy_cfg(cfg: StackConfig, node_ips: Mapping[str, str], **overrides) -> str:
    """haproxy.cfg; ``overrides`` replace fields of the spec (the tests run it unprivileged, with other timers)."""
    return haproxy.render_haproxy(dataclasses.replace(haproxy_spec(cfg, node_ips), **overrides))


def keepalived_specs(cfg: StackConfig, auth_pass: str) -> dict[str, keepalived.KeepalivedSpec]:
    """The keepalived.conf spec of each load balancer, by name: each one's unicast peer is the other."""
    lb = cfg.load_balancer
    a, b = cfg.load_balancers
    instances = (
        keepalived.VrrpInstance("VI_API", lb.vrrp.api_router_id, str(lb.api_vip)),
        keepalived.VrrpInstance("VI_INGRESS", lb.vrrp.ingress_router_id, str(lb.ingress_vip)),
    )
    master = max((a, b), key=lambda n: vrrp_priority(cfg, n))
    return {
        me.name: keepalived.KeepalivedSpec(
            router_name=me.name,
            self_ip=str(me.ip),
            peer_ip=str(peer.ip),
            priority=vrrp_priority(cfg, me),
            master=me is master,
            instances=instances,
            auth_pass=auth_pass,
            interface=lb.vrrp.interface,
            advert_int=lb.vrrp.advert_int,
            preempt=lb.vrrp.preempt,
        )
        for me, peer in ((a, b), (b, a))
    }


def keepalived_confs(cfg: StackConfig, auth_pass: str, **overrides) -> dict[str, str]:
    """keepalived.conf per load balancer name, checked as a pair before anything uses them.

    ``overrides`` replace fields of both members' specs (the tests point
    ``check_script`` at their own copy).
    """
    confs = {
        name: keepalived.render_keepalived(dataclasses.replace(spec, **overrides))
        for name, spec in keepalived_specs(cfg, auth_pass).items()
    }
    keepalived.check_pair(*confs.values())
    return confs


def keepalived_check_script(cfg: StackConfig) -> str:
    return keepalived.render_check_script(keepalived.CheckScriptSpec(stats_port=cfg.load_balancer.stats_port))
