"""What every part of the config model shares: the strict base model, fixed sets, and the field rules used in more than one place."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

OsName = Literal["flatcar", "rocky9", "alma9", "debian12"]
Role = Literal["load_balancer", "infra", "server", "agent", "storage", "database", "generic"]
NetworkMode = Literal["nat", "route", "bridge", "isolated"]

EL9 = ("rocky9", "alma9")
# OSes with a package manager and cloud-init: they can run the packaged
# services of the load balancers and the infra node.
PACKAGED_OS = (*EL9, "debian12")
K3S_ROLES = ("server", "agent", "storage")

# A version must be exact; a source path must not name a moving alias.
UNPINNED_VERSION = re.compile(r"^(latest|current|stable|beta|alpha|main|master|head|edge)$|^$|\*|\bx\b", re.I)
UNPINNED_PATH = re.compile(r"(^|[/:_.-])(latest|current)($|[/:_.-])", re.I)
# One DNS label: a hostname, a network or disk name, each label of the domain.
HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
DOMAIN_LABEL = HOSTNAME
MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
# Kubernetes label keys/values and taints (what K3s' --node-label/--node-taint accept).
LABEL_KEY = re.compile(r"^([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$")
TAINT = re.compile(r"^([a-z0-9.-]+/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?(=[A-Za-z0-9._-]{0,63})?:(NoSchedule|PreferNoSchedule|NoExecute)$")
IFNAME = re.compile(r"^[a-zA-Z0-9_.-]{1,15}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_pinned(value: str, what: str) -> str:
    if UNPINNED_VERSION.search(value.strip()):
        raise ValueError(f"{what} {value!r} is not pinned; name an exact version")
    return value


def check_pinned_path(value: str, what: str) -> str:
    if UNPINNED_PATH.search(value):
        raise ValueError(f"{what} {value!r} names a moving alias; point it at an exact release")
    return value


def check_cidr(v: Any) -> Any:
    """An IPv4 network as written; host bits set name the network that was probably meant."""
    try:
        ipaddress.IPv4Network(v)
    except ValueError as err:
        if "host bits set" in str(err):
            exact = ipaddress.IPv4Network(v, strict=False)
            raise ValueError(f"{v} has host bits set; did you mean {exact}?") from None
        raise ValueError(f"{v!r} is not a valid IPv4 network like 10.17.3.0/24") from None
    return v


def _label(what: str) -> AfterValidator:
    """The one hostname rule; ``what`` only names the thing in the message."""

    def check(v: str) -> str:
        if not HOSTNAME.match(v):
            raise ValueError(f"{v!r} is not a valid {what}; use lowercase letters, digits and '-'")
        return v

    return AfterValidator(check)


Hostname = Annotated[str, _label("hostname")]
NetworkName = Annotated[str, _label("name")]
DiskName = Annotated[str, _label("disk name")]
Cidr = Annotated[ipaddress.IPv4Network, BeforeValidator(check_cidr)]


def not_everyone(why: str) -> AfterValidator:
    """For a list of source networks: ``0.0.0.0/0`` is refused, the message saying ``why`` it would be wrong."""

    def check(v: tuple[ipaddress.IPv4Network, ...]) -> tuple[ipaddress.IPv4Network, ...]:
        for net in v:
            if net.prefixlen == 0:
                raise ValueError(f"{net} is every address: {why}")
        return v

    return AfterValidator(check)


def is_local_uri(uri: str) -> bool:
    """qemu:///system and qemu:///session run on this machine; qemu+ssh://host/... does not."""
    return "://" in uri and uri.split("://", 1)[1].startswith("/")
