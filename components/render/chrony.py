"""chrony.conf: the NTP server on the infra node, and the client on EL9 nodes."""

from __future__ import annotations

from typing import Optional, Sequence

from ._template import render


def render_chrony_server(
    *,
    upstream: Sequence[str],
    allow: Sequence[str],
    state_dir: str = "/var/lib/chrony",
    bind_address: Optional[str] = None,
    port: Optional[int] = None,
) -> str:
    """The infra node's chrony: syncs from ``upstream`` and serves ``allow`` networks."""
    if not upstream:
        raise ValueError("chrony: at least one upstream server is required")
    if not allow:
        raise ValueError("chrony: a server must allow at least one network")
    return render(
        "chrony.conf.j2",
        servers=list(upstream),
        allow=sorted(set(allow)),
        serve=True,
        state_dir=state_dir,
        bind_address=bind_address,
        port=port,
    )


def render_chrony_client(*, server: str, state_dir: str = "/var/lib/chrony") -> str:
    """An EL9 node's chrony: the infra node is its only time source."""
    return render(
        "chrony.conf.j2",
        servers=[server],
        allow=[],
        serve=False,
        state_dir=state_dir,
        bind_address=None,
        port=0,
    )
