"""Each node's own firewall (nftables on Flatcar and Debian, firewalld on EL9): who may reach what, by role."""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import Field, field_validator

from .base import Cidr, Hostname, Role, _Model, not_everyone

_RANGE = re.compile(r"^(\d{1,5})-(\d{1,5})$")


class FirewallAllow(_Model):
    """One extra opening: ``ports`` of ``proto`` from ``sources``, on the nodes named or of the roles given."""

    why: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9 ,.:;()/_+'-]+$",
                     description="What it is for; it becomes the rule's comment on the node (and names the entry: no list index is written).")
    proto: Literal["tcp", "udp"] = Field(default="tcp", description="`tcp` or `udp`.")
    ports: tuple[Union[int, str], ...] = Field(min_length=1, description="Ports or ranges, e.g. `[8080, \"9000-9010\"]`.")
    sources: tuple[Cidr, ...] = Field(min_length=1, description="Source networks (CIDR); `0.0.0.0/0` for anyone.")
    nodes: tuple[Hostname, ...] = Field(default=(), description="The nodes that open it. Default (with `roles` empty): every node.")
    roles: tuple[Role, ...] = Field(default=(), description="Or: every node of these roles.")

    @field_validator("why")
    @classmethod
    def _why(cls, v: str) -> str:
        if "--" in v:
            raise ValueError("may not hold \"--\" (it becomes an XML comment on EL9 nodes)")
        return v

    @field_validator("ports")
    @classmethod
    def _ports(cls, v: tuple[Union[int, str], ...]) -> tuple[Union[int, str], ...]:
        for p in v:
            lo, hi = _span(p)
            if not 0 < lo <= hi < 65536:
                raise ValueError(f"{p!r} is not a port 1-65535 or a range like \"9000-9010\"")
        return v

    def spans(self) -> tuple[tuple[int, int], ...]:
        return tuple(sorted(_span(p) for p in self.ports))


def _span(p: Union[int, str]) -> tuple[int, int]:
    if isinstance(p, int):
        return p, p
    m = _RANGE.match(str(p))
    if m is None:
        return (int(p), int(p)) if str(p).isdigit() else (0, 0)
    return int(m.group(1)), int(m.group(2))


class FirewallConfig(_Model):
    enabled: bool = Field(
        default=True,
        description=(
            "Every node runs its own firewall from first boot (docs/firewall.md): SSH from `ssh_from`, each role's ports from "
            "the networks that need them, everything else new dropped. `false` leaves the nodes open (warned on every run); "
            "changing it replaces the VMs (first boot)."
        ),
    )
    ssh_from: Annotated[tuple[Cidr, ...], not_everyone("SSH for the whole internet; name the admin networks")] = Field(
        default=(),
        description=(
            "Who may open SSH to the nodes (the Pulumi host, operators). Default: the libvirt host's own address on each "
            "`nat`/`route` network (the machine running Pulumi with local libvirt), the whole network on a `bridge` network. "
            "Required with a remote `libvirt_uri` (Pulumi would lock itself out). Changing it replaces the VMs."
        ),
    )
    allow: tuple[FirewallAllow, ...] = Field(
        default=(), description="Extra openings, e.g. a hostPort service: `{why, proto, ports, sources, nodes|roles}`. Changing them replaces the VMs they name."
    )


    def relaxations(self) -> list[str]:
        return [] if self.enabled else ["firewall.enabled is off: the nodes answer every port to whoever reaches them"]
