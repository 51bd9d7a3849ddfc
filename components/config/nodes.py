"""The VMs of a stack: one NodeConfig each."""

from __future__ import annotations

import ipaddress
from typing import Optional

from pydantic import Field, field_validator

from .base import LABEL_KEY, LABEL_VALUE, MAC, TAINT, DiskName, Hostname, OsName, Role, _Model

# DNS names the stack gives its VIPs (see specs.dns_records).
RESERVED_NAMES = ("api", "ingress")
# Smallest memory each role is known to run with; below it K3s, Longhorn or
# the package installs of cloud-init fail in ways that look like other bugs.
MIN_MEMORY_MIB = {
    "load_balancer": 512,
    "infra": 512,
    "generic": 512,
    "database": 1024,
    "server": 2048,
    "agent": 1024,
    "storage": 2048,
}


class DataDisk(_Model):
    name: DiskName = Field(description="Name of the disk, unique per node; part of its volume name.")
    size_gib: int = Field(ge=1, le=65536, description="Size in GiB. `protect`ed while `protect_data` is true.")


class NodeConfig(_Model):
    name: Hostname = Field(description="Hostname, unique; `api` and `ingress` are taken by the VIPs.")
    role: Role = Field(
        description="One `infra`, two `load_balancer`, an odd number of `server` (K3s servers), any `agent` (K3s agents), `storage` (NFS + Longhorn), `database` (PostgreSQL, see `database`), `generic` (a plain VM)."
    )
    os: OsName = Field(description="Image the node boots; `images` needs an entry for it. Load balancers and the infra node need a packaged OS (not flatcar).")
    network: str = Field(description="`name` of the network the node is on.")
    ip: ipaddress.IPv4Address = Field(description="Static address: a host address of its network, outside the DHCP range, unique.")
    mac: Optional[str] = Field(default=None, description="MAC address. Default: stable, derived from `domain` and the node name.")
    vcpu: int = Field(default=1, ge=1, le=256, description="Virtual CPUs.")
    memory_mib: int = Field(
        default=1024, ge=128, description="Memory in MiB; at least 512 (load_balancer, infra, generic), 1024 (agent, database), 2048 (server, storage)."
    )
    disk_gib: int = Field(default=20, ge=8, le=65536, description="Root disk in GiB, a copy-on-write layer over the OS image.")
    data_disks: tuple[DataDisk, ...] = Field(default=(), description="Extra disks; storage nodes and Longhorn nodes need at least one.")
    # Agents take ingress by default; the storage node only when asked (the
    # original put it behind the ingress VIP by accident).
    ingress: Optional[bool] = Field(
        default=None, description="Whether the node is a backend of the ingress VIP (K3s nodes only). Default: true for agents, false otherwise."
    )
    longhorn: Optional[bool] = Field(default=None, description="Whether Longhorn stores volumes on the node (K3s nodes only). Default: true for storage nodes, false otherwise.")
    labels: dict[str, str] = Field(
        default={},
        description="K3s node labels (K3s nodes only), applied in place one node at a time. Longhorn nodes get `node.longhorn.io/create-default-disk=true` besides.",
    )
    taints: tuple[str, ...] = Field(default=(), description="K3s node taints like `dedicated=db:NoSchedule` (K3s nodes only), applied in place one node at a time.")
    vnc: Optional[bool] = Field(
        default=None, description="A VNC display on the libvirt host's loopback, with a generated password, for this VM. Default: `console.vnc`."
    )
    vrrp_priority: Optional[int] = Field(
        default=None, ge=1, le=254, description="Keepalived priority (load balancers only); the higher one is MASTER. Default: 110 for the first, 100 for the second."
    )

    @field_validator("mac")
    @classmethod
    def _mac(cls, v: Optional[str]) -> Optional[str]:
        if v is None:
            return v
        v = v.lower()
        if not MAC.match(v):
            raise ValueError(f"{v!r} is not a MAC address like 52:54:00:12:34:56")
        if int(v[:2], 16) & 1:
            raise ValueError(f"{v!r} is a multicast MAC; the first octet must be even")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not LABEL_KEY.match(key) or len(key.split("/")[-1]) > 63:
                raise ValueError(f"{key!r} is not a Kubernetes label key like example.com/tier")
            if not LABEL_VALUE.match(value):
                raise ValueError(f"{value!r} (label {key}) is not a Kubernetes label value")
        return v

    @field_validator("taints")
    @classmethod
    def _taints(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for taint in v:
            if not TAINT.match(taint):
                raise ValueError(f"{taint!r} is not a taint like key=value:NoSchedule (effects NoSchedule, PreferNoSchedule, NoExecute)")
        return v

    @property
    def takes_ingress(self) -> bool:
        if self.ingress is not None:
            return self.ingress
        return self.role == "agent"

    @property
    def uses_longhorn(self) -> bool:
        if self.longhorn is not None:
            return self.longhorn
        return self.role == "storage"

    @property
    def is_flatcar(self) -> bool:
        return self.os == "flatcar"
