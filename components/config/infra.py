"""The infra node's services: CoreDNS (its binary and forwarders) and chrony's upstream servers."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, ClassVar

from pydantic import Field, field_validator

from .artifacts import ReleaseBinary
from .base import Cidr, _Model, not_everyone


class CorednsBinary(ReleaseBinary):
    """The CoreDNS binary copied to the infra node: no container runtime, no registry."""

    NAME: ClassVar[str] = "coredns"
    LABEL: ClassVar[str] = "CoreDNS"
    SCRIPT: ClassVar[str] = ".ci/coredns.sh"
    BUILD_DIR: ClassVar[str] = "coredns-{version}"

    version: str = Field(default="v1.12.1", description="Exact CoreDNS release, e.g. `v1.12.1` (what `.ci/coredns.sh` builds from Go modules).")


class DnsConfig(_Model):
    forwarders: tuple[ipaddress.IPv4Address, ...] = Field(
        min_length=1, description="Upstream resolvers (IPv4) of the infra node's CoreDNS for names outside `domain`."
    )
    coredns: CorednsBinary = Field(default=CorednsBinary(), description="The CoreDNS binary uploaded to the infra node.")
    allowed_clients: Annotated[tuple[Cidr, ...], not_everyone("an open resolver; list the networks that may ask, e.g. 192.168.1.0/24")] = Field(
        default=(),
        description=(
            "Source networks (CIDR) answered besides the stack's own `networks` and the infra node itself; CoreDNS REFUSES "
            "every other source, for recursion and for `domain` alike. E.g. a LAN whose workstations resolve the stack's names "
            "through the infra node (it must also be routed there). Never `0.0.0.0/0`: that is an open resolver."
        ),
    )



class NtpConfig(_Model):
    upstream: tuple[str, ...] = Field(
        min_length=1, description="Upstream NTP servers (hostnames or IPv4) of the infra node's chrony; every other node syncs from the infra node."
    )

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for s in v:
            if not re.match(r"^[A-Za-z0-9.-]+$", s):
                raise ValueError(f"{s!r} is not a hostname or IPv4 address")
        return v
