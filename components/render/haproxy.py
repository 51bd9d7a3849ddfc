"""haproxy.cfg for the load-balancer pair: API VIP -> K3s servers, ingress VIP -> ingress nodes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

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


@dataclass(frozen=True)
class HaproxySpec:
    """What haproxy.cfg says.

    VIPs, backends and ports always come from the stack config
    (``specs.haproxy_cfg``), so they have no default here; the health-check
    timers and process settings are not in the config and default here.
    """

    api_vip: str
    ingress_vip: str
    servers: tuple[Backend, ...]
    ingress_nodes: tuple[Backend, ...]
    api_port: int
    http_nodeport: int
    https_nodeport: int
    stats_port: int
    maxconn: int = 4096
    check_inter: str = "3s"
    check_fall: int = 3
    check_rise: int = 2
    # False drops user/chroot for running it unprivileged in tests.
    run_as_service: bool = True
    pidfile: Optional[str] = None


def render_haproxy(spec: HaproxySpec) -> str:
    """Render haproxy.cfg.

    Backends are sorted by name so the text, and the hash that triggers the
    day-2 update, only changes when the set of backends does.
    """
    if not spec.servers:
        raise ValueError("haproxy: at least one K3s server is required")
    if not spec.ingress_nodes:
        raise ValueError("haproxy: at least one ingress node is required")
    api = tuple(sorted(spec.servers, key=lambda b: b.name))
    ingress = tuple(sorted(spec.ingress_nodes, key=lambda b: b.name))
    frontends = [
        Frontend("k3s_api", spec.api_vip, spec.api_port, spec.api_port, api),
        Frontend("ingress_http", spec.ingress_vip, 80, spec.http_nodeport, ingress),
        Frontend("ingress_https", spec.ingress_vip, 443, spec.https_nodeport, ingress),
    ]
    return render(
        "haproxy.cfg.j2",
        maxconn=spec.maxconn,
        check_inter=spec.check_inter,
        check_fall=spec.check_fall,
        check_rise=spec.check_rise,
        stats_port=spec.stats_port,
        run_as_service=spec.run_as_service,
        pidfile=spec.pidfile,
        frontends=frontends,
    )
