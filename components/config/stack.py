"""StackConfig: the whole value of ``microcloud:config``, and the views the components read."""

from __future__ import annotations

import hashlib
import re
from functools import cached_property
from typing import Literal, Optional

from pydantic import Field, field_validator

from .base import DOMAIN_LABEL, K3S_ROLES, OsName, _Model
from .load_balancer import LoadBalancerConfig
from .network import NetworkConfig
from .nodes import NodeConfig
from .monitoring import MonitoringConfig
from .platform import PlatformConfig
from .access import ConsoleConfig, SshConfig
from .images import ImageConfig, UpdatesConfig
from .infra import DnsConfig, NtpConfig
from .k3s import K3sConfig
from .firewall import FirewallConfig
from .database import DatabaseConfig


class StackConfig(_Model):
    libvirt_uri: str = Field(default="qemu:///system", description="libvirt connection, e.g. `qemu:///system` or `qemu+ssh://user@host/system`.")
    domain: str = Field(description="The one DNS domain of every node and VIP (`<node>.<domain>`, `api.<domain>`, `ingress.<domain>`).")
    pool_path: str = Field(description="Directory of this stack's libvirt storage pool on the libvirt host, a directory of its own.")
    ssh: SshConfig = Field(default=SshConfig(), description="Login on the nodes.")
    console: ConsoleConfig = Field(default=ConsoleConfig(), description="The VMs' consoles: Flatcar's autologin, a VNC display.")
    images: dict[OsName, ImageConfig] = Field(
        description="One cloud image per OS in use (`flatcar`, `rocky9`, `alma9`, `debian12`); every node's `os` needs one, unused ones are rejected."
    )
    networks: tuple[NetworkConfig, ...] = Field(min_length=1, description="The libvirt networks, in order.")
    nodes: tuple[NodeConfig, ...] = Field(min_length=1, description="The VMs.")
    load_balancer: LoadBalancerConfig = Field(description="The HAProxy + Keepalived pair and its two VIPs.")
    dns: DnsConfig = Field(description="CoreDNS on the infra node: the zone of `domain`, forwarding the rest.")
    ntp: NtpConfig = Field(description="chrony on the infra node.")
    k3s: K3sConfig = Field(description="The K3s cluster.")
    platform: PlatformConfig = Field(default=PlatformConfig(), description="What runs on the cluster (with `k3s.enabled`): chart sources, the GitOps repository, password keepers.")
    monitoring: MonitoringConfig = Field(
        default=MonitoringConfig(),
        description="What the in-cluster Prometheus scrapes outside Kubernetes: the node_exporter binary of the load balancers and the infra node.",
    )
    database: Optional[DatabaseConfig] = Field(
        default=None, description="PostgreSQL on the node with role `database` (docs/delivery.md#postgresql): set it exactly when there is one."
    )
    firewall: FirewallConfig = Field(default=FirewallConfig(), description="Each node's own firewall from first boot, by role (docs/firewall.md).")
    updates: UpdatesConfig = Field(default=UpdatesConfig(), description="Flatcar update and reboot policy (instead of masking locksmithd).")
    protect_data: bool = Field(
        default=True, description="Data disks are `protect`ed: `pulumi destroy` stops before deleting them. Set false only for throwaway (dev) stacks."
    )
    allow_replace: tuple[str, ...] = Field(
        default=(),
        description=(
            "Nodes whose VM, volumes or first-boot config this change may replace or delete, past the policy pack's data-node and "
            "K3s-quorum policies (`python policy/guard.py`). Name them for the one change that needs it, then remove them."
        ),
    )
    virt_type: Literal["kvm", "qemu"] = Field(default="kvm", description="`kvm` where the host has `/dev/kvm`; `qemu` (plain emulation) otherwise.")

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str) -> str:
        labels = v.split(".")
        if len(v) > 253 or len(labels) < 2 or not all(DOMAIN_LABEL.match(l) for l in labels):
            raise ValueError(f"{v!r} is not a DNS domain like microcloud.lan (lowercase labels, at least two)")
        if labels[-1].isdigit():
            raise ValueError(f"{v!r} ends in a number; the last label must be a name")
        return v

    @field_validator("allow_replace")
    @classmethod
    def _allow(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        # Names, not patterns: a node that is no longer in `nodes` (being removed) may be named too.
        for name in v:
            if not DOMAIN_LABEL.match(name):
                raise ValueError(f"{name!r} is not a node name (allow_replace lists node names, e.g. [storage1])")
        return v

    @field_validator("libvirt_uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        if not re.match(r"^(qemu|qemu\+ssh|qemu\+tcp|qemu\+tls|test)://", v):
            raise ValueError(f"{v!r} is not a libvirt URI like qemu:///system")
        return v

    @field_validator("pool_path")
    @classmethod
    def _pool(cls, v: str) -> str:
        if not v.startswith("/") or v.rstrip("/") in ("", "/var", "/var/lib", "/home"):
            raise ValueError(f"{v!r} must be an absolute directory of its own, e.g. /var/lib/libvirt/images/microcloud-dev")
        return v

    # ----- derived views used by the components -----

    def secret_keys(self) -> dict[str, str]:
        """Config key -> the setting that names it (its value is a secret set with `pulumi config set --secret`)."""
        return {key: f"k3s.registries.configs.{host}.auth.password_key" for key, host in self.k3s.registries.secret_keys().items()}

    @cached_property
    def network_by_name(self) -> dict[str, NetworkConfig]:
        return {n.name: n for n in self.networks}

    def nodes_with(self, *roles: str) -> list[NodeConfig]:
        return [n for n in self.nodes if n.role in roles]

    @property
    def load_balancers(self) -> list[NodeConfig]:
        return self.nodes_with("load_balancer")

    @property
    def infra_node(self) -> NodeConfig:
        return self.nodes_with("infra")[0]

    @property
    def database_node(self) -> Optional[NodeConfig]:
        found = self.nodes_with("database")
        return found[0] if found else None

    @property
    def servers(self) -> list[NodeConfig]:
        return self.nodes_with("server")

    @property
    def ingress_nodes(self) -> list[NodeConfig]:
        return [n for n in self.nodes if n.role in K3S_ROLES and n.takes_ingress]

    def vnc_of(self, node: NodeConfig) -> bool:
        """Whether the VM gets a (password-protected, loopback-only) VNC display: the node's setting, else the stack's."""
        return self.console.vnc if node.vnc is None else node.vnc

    def fqdn(self, name: str) -> str:
        return f"{name}.{self.domain}"

    def mac_of(self, node: NodeConfig) -> str:
        """Configured MAC, or a stable one derived from domain and node name."""
        if node.mac:
            return node.mac
        h = hashlib.sha256(f"{self.domain}/{node.name}".encode()).digest()
        return "52:54:00:%02x:%02x:%02x" % (h[0], h[1], h[2])


def vrrp_priority(c: StackConfig, node: NodeConfig) -> int:
    """Configured priority, else 110 for the load balancer whose name sorts first and 100 for the other.

    By name, not list position: reordering the node list must not move the VIPs.
    """
    if node.vrrp_priority is not None:
        return node.vrrp_priority
    return 110 if node.name == min(n.name for n in c.load_balancers) else 100
