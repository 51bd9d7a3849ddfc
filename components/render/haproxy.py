"""haproxy.cfg for the load-balancer pair: API VIP -> K3s servers, ingress VIP -> ingress nodes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from ._template import render


@dataclass(frozen=True)
class Backend:
    name: str
    ip: str


@dataclass(frozen=True)
class Frontend:
    name: str
    vip: str
    port: int
    target_port: int
    servers: tuple[Backend, ...]


def render_haproxy(
    *,
    api_vip: str,
    ingress_vip: str,
    servers: Sequence[Backend],
    ingress_nodes: Sequence[Backend],
    api_port: int = 6443,
    http_nodeport: int = 32591,
    https_nodeport: int = 31541,
    stats_port: int = 8404,
    maxconn: int = 4096,
    check_inter: str = "3s",
    check_fall: int = 3,
    check_rise: int = 2,
    run_as_service: bool = True,
    pidfile: Optional[str] = None,
) -> str:
    """Render haproxy.cfg.

    Backends are sorted by name so the text, and the hash that triggers the
    day-2 update, only changes when the set of backends does.
    ``run_as_service=False`` drops user/chroot for running it unprivileged in tests.
    """
    if not servers:
        raise ValueError("haproxy: at least one K3s server is required")
    if not ingress_nodes:
        raise ValueError("haproxy: at least one ingress node is required")
    api = tuple(sorted(servers, key=lambda b: b.name))
    ingress = tuple(sorted(ingress_nodes, key=lambda b: b.name))
    frontends = [
        Frontend("k3s_api", api_vip, api_port, api_port, api),
        Frontend("ingress_http", ingress_vip, 80, http_nodeport, ingress),
        Frontend("ingress_https", ingress_vip, 443, https_nodeport, ingress),
    ]
    return render(
        "haproxy.cfg.j2",
        maxconn=maxconn,
        check_inter=check_inter,
        check_fall=check_fall,
        check_rise=check_rise,
        stats_port=stats_port,
        run_as_service=run_as_service,
        pidfile=pidfile,
        frontends=frontends,
    )
