"""chrony.conf: the NTP server on the infra node, and the client on cloud-init (EL9, Debian) nodes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ._template import render

STATE_DIR = "/var/lib/chrony"


@dataclass(frozen=True)
class ChronyServerSpec:
    """The infra node's chrony. ``bind_address`` and ``port`` exist for the tests."""

    upstream: tuple[str, ...]
    allow: tuple[str, ...]  # networks (CIDR) it serves
    state_dir: str = STATE_DIR
    bind_address: Optional[str] = None
    port: Optional[int] = None


@dataclass(frozen=True)
class ChronyClientSpec:
    server: str
    state_dir: str = STATE_DIR


def render_chrony_server(spec: ChronyServerSpec) -> str:
    """The infra node's chrony: syncs from ``upstream`` and serves ``allow`` networks."""
    if not spec.upstream:
        raise ValueError("chrony: at least one upstream server is required")
    if not spec.allow:
        raise ValueError("chrony: a server must allow at least one network")
    return render(
        "chrony.conf.j2",
        servers=list(spec.upstream),
        allow=sorted(set(spec.allow)),
        serve=True,
        state_dir=spec.state_dir,
        bind_address=spec.bind_address,
        port=spec.port,
    )


def render_chrony_client(spec: ChronyClientSpec) -> str:
    """A cloud-init node's chrony: the infra node is its only time source."""
    return render(
        "chrony.conf.j2",
        servers=[spec.server],
        allow=[],
        serve=False,
        state_dir=spec.state_dir,
        bind_address=None,
        port=0,
    )
