"""One typed model of a stack's config, and its validation.

The whole stack is the single config key ``microcloud:config`` in
``Pulumi.<stack>.yaml``. Defaults live only here. ``parse_config`` is pure
(no Pulumi) so tests can feed it dicts; ``load`` reads the Pulumi config and
turns any mistake into one line without a traceback.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from functools import cached_property
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

CONFIG_KEY = "microcloud:config"

OsName = Literal["flatcar", "rocky9", "alma9", "debian12"]
Role = Literal["load_balancer", "infra", "server", "agent", "storage", "generic"]
NetworkMode = Literal["nat", "route", "bridge", "isolated"]

EL9 = ("rocky9", "alma9")
# OSes with a package manager and cloud-init: they can run the packaged
# services of the load balancers and the infra node.
PACKAGED_OS = (*EL9, "debian12")
# DNS names the stack gives its VIPs (see specs.dns_records).
RESERVED_NAMES = ("api", "ingress")
K3S_ROLES = ("server", "agent", "storage")
# Smallest memory each role is known to run with; below it K3s, Longhorn or
# the package installs of cloud-init fail in ways that look like other bugs.
MIN_MEMORY_MIB = {
    "load_balancer": 512,
    "infra": 512,
    "generic": 512,
    "server": 2048,
    "agent": 1024,
    "storage": 2048,
}
# A version must be exact; a source path must not name a moving alias.
UNPINNED_VERSION = re.compile(r"^(latest|current|stable|beta|alpha|main|master|head|edge)$|^$|\*|\bx\b", re.I)
UNPINNED_PATH = re.compile(r"(^|[/:_.-])(latest|current)($|[/:_.-])", re.I)
HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
DOMAIN_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
IFNAME = re.compile(r"^[a-zA-Z0-9_.-]{1,15}$")


class ConfigError(Exception):
    """A config mistake: ``key`` is the dotted path below microcloud:config."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{CONFIG_KEY}.{key}: {message}")
        self.key = key
        self.message = message


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_pinned(value: str, what: str) -> str:
    if UNPINNED_VERSION.search(value.strip()):
        raise ValueError(f"{what} {value!r} is not pinned; name an exact version")
    return value


def _check_pinned_path(value: str, what: str) -> str:
    if UNPINNED_PATH.search(value):
        raise ValueError(f"{what} {value!r} names a moving alias; point it at an exact release")
    return value


class Dhcp(_Model):
    start: ipaddress.IPv4Address
    end: ipaddress.IPv4Address


class DnsHost(_Model):
    hostname: str
    ip: ipaddress.IPv4Address


class NetworkConfig(_Model):
    name: str
    mode: NetworkMode
    cidr: ipaddress.IPv4Network
    # The router of the network. For nat/route/isolated it is the libvirt
    # host's address on the bridge and defaults to the first host address.
    gateway: Optional[ipaddress.IPv4Address] = None
    bridge: Optional[str] = None
    dhcp: Optional[Dhcp] = None
    dns_hosts: tuple[DnsHost, ...] = ()
    mtu: Optional[int] = Field(default=None, ge=576, le=9000)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not HOSTNAME.match(v):
            raise ValueError(f"{v!r} is not a valid name; use lowercase letters, digits and '-'")
        return v

    @field_validator("cidr", mode="before")
    @classmethod
    def _cidr(cls, v: Any) -> Any:
        try:
            ipaddress.IPv4Network(v)
        except ValueError as err:
            if "host bits set" in str(err):
                exact = ipaddress.IPv4Network(v, strict=False)
                raise ValueError(f"{v} has host bits set; did you mean {exact}?") from None
            raise ValueError(f"{v!r} is not a valid IPv4 network like 10.17.3.0/24") from None
        return v

    @field_validator("bridge")
    @classmethod
    def _bridge(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not IFNAME.match(v):
            raise ValueError(f"{v!r} is not a Linux interface name (1-15 characters)")
        return v

    @property
    def router(self) -> ipaddress.IPv4Address:
        return self.gateway or next(self.cidr.hosts())

    def in_dhcp(self, ip: ipaddress.IPv4Address) -> bool:
        return self.dhcp is not None and self.dhcp.start <= ip <= self.dhcp.end


class DataDisk(_Model):
    name: str
    size_gib: int = Field(ge=1, le=65536)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not HOSTNAME.match(v):
            raise ValueError(f"{v!r} is not a valid disk name; use lowercase letters, digits and '-'")
        return v


class NodeConfig(_Model):
    name: str
    role: Role
    os: OsName
    network: str
    ip: ipaddress.IPv4Address
    mac: Optional[str] = None
    vcpu: int = Field(default=1, ge=1, le=256)
    memory_mib: int = Field(default=1024, ge=128)
    disk_gib: int = Field(default=20, ge=8, le=65536)
    data_disks: tuple[DataDisk, ...] = ()
    # Agents take ingress by default; the storage node only when asked (the
    # original put it behind the ingress VIP by accident).
    ingress: Optional[bool] = None
    longhorn: Optional[bool] = None
    vrrp_priority: Optional[int] = Field(default=None, ge=1, le=254)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not HOSTNAME.match(v):
            raise ValueError(f"{v!r} is not a valid hostname; use lowercase letters, digits and '-'")
        return v

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


class ImageConfig(_Model):
    # URL or absolute path on the libvirt host of a qcow2 cloud image.
    source: str
    version: str

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        return _check_pinned(v, "image version")

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if not (v.startswith(("http://", "https://", "/"))):
            raise ValueError(f"{v!r} must be an http(s) URL or an absolute path")
        return _check_pinned_path(v, "image source")


class SshConfig(_Model):
    user: str = "core"
    # Empty: a key pair is generated and its private key is a secret output.
    public_keys: tuple[str, ...] = ()

    @field_validator("user")
    @classmethod
    def _user(cls, v: str) -> str:
        if not re.match(r"^[a-z_][a-z0-9_-]{0,31}$", v) or v == "root":
            raise ValueError(f"{v!r} is not a valid non-root login name")
        return v

    @field_validator("public_keys")
    @classmethod
    def _keys(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for key in v:
            if not re.match(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp\d+) [A-Za-z0-9+/=]+( .*)?$", key):
                raise ValueError(f"{key[:30]!r}... is not an OpenSSH public key")
        return v


class CorednsBinary(_Model):
    """The CoreDNS binary copied to the infra node: no container runtime, no registry."""

    # Exact release, e.g. v1.12.1 (what `.ci/coredns.sh` builds from Go modules).
    version: str = "v1.12.1"
    # Absolute path on the machine that runs Pulumi. Default: the build of
    # `.ci/coredns.sh` for this version in the toolchain cache.
    path: Optional[str] = None
    # Expected sha256 of the file; when set, a different file stops the run.
    sha256: Optional[str] = None

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        _check_pinned(v, "CoreDNS version")
        if not re.match(r"^v\d+\.\d+\.\d+$", v):
            raise ValueError(f"{v!r} is not a CoreDNS release like v1.12.1")
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not v.startswith(("/", "~/")):
            raise ValueError(f"{v!r} must be an absolute path on the machine that runs Pulumi")
        return v

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not re.match(r"^[0-9a-f]{64}$", v.lower()):
            raise ValueError(f"{v!r} is not a sha256 hex digest")
        return v.lower() if v else v

    def local_path(self) -> str:
        if self.path:
            return os.path.expanduser(self.path)
        cache = os.environ.get("MICROCLOUD_TOOLCHAIN_CACHE") or os.path.expanduser("~/.cache/microcloud-toolchain")
        return os.path.join(cache, f"coredns-{self.version}", "coredns")


class DnsConfig(_Model):
    forwarders: tuple[ipaddress.IPv4Address, ...] = Field(min_length=1)
    coredns: CorednsBinary = CorednsBinary()


class NtpConfig(_Model):
    upstream: tuple[str, ...] = Field(min_length=1)

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for s in v:
            if not re.match(r"^[A-Za-z0-9.-]+$", s):
                raise ValueError(f"{s!r} is not a hostname or IPv4 address")
        return v


class VrrpConfig(_Model):
    interface: str = "eth0"
    api_router_id: int = Field(default=51)
    ingress_router_id: int = Field(default=52)
    advert_int: int = Field(default=1, ge=1, le=255)
    preempt: bool = True

    @field_validator("api_router_id", "ingress_router_id")
    @classmethod
    def _rid(cls, v: int) -> int:
        if not 1 <= v <= 255:
            raise ValueError(f"VRRP router id {v} is out of range; use 1-255")
        return v

    @field_validator("interface")
    @classmethod
    def _iface(cls, v: str) -> str:
        if not IFNAME.match(v):
            raise ValueError(f"{v!r} is not a Linux interface name")
        return v


class LoadBalancerConfig(_Model):
    network: str
    api_vip: ipaddress.IPv4Address
    ingress_vip: ipaddress.IPv4Address
    vrrp: VrrpConfig = VrrpConfig()
    api_port: int = Field(default=6443, ge=1, le=65535)
    ingress_http_nodeport: int = Field(default=32591, ge=30000, le=32767)
    ingress_https_nodeport: int = Field(default=31541, ge=30000, le=32767)
    stats_port: int = Field(default=8404, ge=1024, le=65535)


class K3sConfig(_Model):
    version: str

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        _check_pinned(v, "K3s version")
        if not re.match(r"^v\d+\.\d+\.\d+\+k3s\d+$", v):
            raise ValueError(f"{v!r} is not a K3s release like v1.33.5+k3s1")
        return v


class UpdatesConfig(_Model):
    """Flatcar update/reboot strategy (instead of masking locksmithd)."""

    group: Literal["stable", "beta", "alpha", "lts"] = "stable"
    strategy: Literal["reboot", "etcd-lock", "off"] = "reboot"
    # Each node gets its own day of the week so no two nodes of a role reboot
    # together; the window starts at this time.
    window_start: str = "03:00"
    window_length: str = "1h"

    @field_validator("window_start")
    @classmethod
    def _start(cls, v: str) -> str:
        if not re.match(r"^([01]\d|2[0-3]):[0-5]\d$", v):
            raise ValueError(f"{v!r} is not a time like 03:00")
        return v

    @field_validator("window_length")
    @classmethod
    def _length(cls, v: str) -> str:
        if not re.match(r"^\d+[hm]$", v):
            raise ValueError(f"{v!r} is not a duration like 1h or 30m")
        return v


class StackConfig(_Model):
    libvirt_uri: str = "qemu:///system"
    domain: str
    # Where this stack's volumes live on the libvirt host.
    pool_path: str
    ssh: SshConfig = SshConfig()
    images: dict[OsName, ImageConfig]
    networks: tuple[NetworkConfig, ...] = Field(min_length=1)
    nodes: tuple[NodeConfig, ...] = Field(min_length=1)
    load_balancer: LoadBalancerConfig
    dns: DnsConfig
    ntp: NtpConfig
    k3s: K3sConfig
    updates: UpdatesConfig = UpdatesConfig()
    # Data disks survive `pulumi destroy` unless this is false (dev stacks).
    protect_data: bool = True
    # kvm where the host has /dev/kvm; qemu (plain emulation) otherwise.
    virt_type: Literal["kvm", "qemu"] = "kvm"

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str) -> str:
        labels = v.split(".")
        if len(v) > 253 or len(labels) < 2 or not all(DOMAIN_LABEL.match(l) for l in labels):
            raise ValueError(f"{v!r} is not a DNS domain like microcloud.lan (lowercase labels, at least two)")
        if labels[-1].isdigit():
            raise ValueError(f"{v!r} ends in a number; the last label must be a name")
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
    def servers(self) -> list[NodeConfig]:
        return self.nodes_with("server")

    @property
    def ingress_nodes(self) -> list[NodeConfig]:
        return [n for n in self.nodes if n.role in ("agent", "storage", "server") and n.takes_ingress]

    def fqdn(self, name: str) -> str:
        return f"{name}.{self.domain}"

    def mac_of(self, node: NodeConfig) -> str:
        """Configured MAC, or a stable one derived from domain and node name."""
        if node.mac:
            return node.mac
        h = hashlib.sha256(f"{self.domain}/{node.name}".encode()).digest()
        return "52:54:00:%02x:%02x:%02x" % (h[0], h[1], h[2])


# ---------------------------------------------------------------- checks


def _cross_check(c: StackConfig) -> None:
    _check_networks(c)
    _check_nodes(c)
    _check_roles(c)
    _check_load_balancer(c)


def _check_networks(c: StackConfig) -> None:
    seen: dict[str, int] = {}
    for i, net in enumerate(c.networks):
        key = f"networks[{i}]"
        if net.name in seen:
            raise ConfigError(f"{key}.name", f"network {net.name!r} is defined twice (also networks[{seen[net.name]}])")
        seen[net.name] = i
        if net.cidr.prefixlen > 29:
            raise ConfigError(f"{key}.cidr", f"{net.cidr} is too small; use a /29 or larger")
        for j, other in enumerate(c.networks[:i]):
            if net.cidr.overlaps(other.cidr):
                raise ConfigError(f"{key}.cidr", f"{net.cidr} overlaps networks[{j}] ({other.name}, {other.cidr}); use disjoint ranges")
        hosts = (net.cidr.network_address, net.cidr.broadcast_address)
        if net.gateway is not None and (net.gateway not in net.cidr or net.gateway in hosts):
            raise ConfigError(f"{key}.gateway", f"{net.gateway} is not a host address of {net.cidr}")
        if net.mode != "bridge" and net.gateway is not None and net.gateway != next(net.cidr.hosts()):
            raise ConfigError(f"{key}.gateway", f"libvirt gives the host the first address of {net.cidr}; use {next(net.cidr.hosts())} or leave gateway out")
        if net.mode == "bridge":
            if not net.bridge:
                raise ConfigError(f"{key}.bridge", "bridge mode needs the name of an existing host bridge, e.g. br0")
            if net.dhcp is not None:
                raise ConfigError(f"{key}.dhcp", "libvirt cannot serve DHCP on a bridge-mode network; remove dhcp (the LAN's router does it)")
            if net.gateway is None:
                raise ConfigError(f"{key}.gateway", "bridge mode needs the LAN router's address as gateway")
        if net.dhcp is not None:
            for end in ("start", "end"):
                ip = getattr(net.dhcp, end)
                if ip not in net.cidr or ip in hosts:
                    raise ConfigError(f"{key}.dhcp.{end}", f"{ip} is not a host address of {net.cidr}")
            if net.dhcp.start > net.dhcp.end:
                raise ConfigError(f"{key}.dhcp", f"start {net.dhcp.start} is after end {net.dhcp.end}")
            if net.in_dhcp(net.router):
                raise ConfigError(f"{key}.dhcp", f"range contains the gateway {net.router}; start it after the gateway")
        for k, host in enumerate(net.dns_hosts):
            if host.ip not in net.cidr:
                raise ConfigError(f"{key}.dns_hosts[{k}].ip", f"{host.ip} is outside {net.cidr}")


def _check_nodes(c: StackConfig) -> None:
    names: dict[str, int] = {}
    ips: dict[ipaddress.IPv4Address, str] = {}
    macs: dict[str, str] = {}
    for net in c.networks:
        ips[net.router] = f"the gateway of network {net.name!r}"
    for i, node in enumerate(c.nodes):
        key = f"nodes[{i}]"
        if node.name in names:
            raise ConfigError(f"{key}.name", f"node name {node.name!r} is used twice (also nodes[{names[node.name]}])")
        names[node.name] = i
        if node.name in RESERVED_NAMES:
            raise ConfigError(f"{key}.name", f"{node.name!r} is reserved for a VIP's DNS record; pick another name")
        net = c.network_by_name.get(node.network)
        if net is None:
            raise ConfigError(f"{key}.network", f"no network named {node.network!r}; defined: {', '.join(c.network_by_name)}")
        if node.ip not in net.cidr or node.ip in (net.cidr.network_address, net.cidr.broadcast_address):
            raise ConfigError(f"{key}.ip", f"{node.ip} is not a host address of network {net.name!r} ({net.cidr})")
        if net.in_dhcp(node.ip):
            raise ConfigError(f"{key}.ip", f"{node.ip} is inside the DHCP range {net.dhcp.start}-{net.dhcp.end} of {net.name!r}; pick a static address outside it")
        if node.ip in ips:
            raise ConfigError(f"{key}.ip", f"{node.ip} is already {ips[node.ip]}")
        ips[node.ip] = f"the address of node {node.name!r}"
        mac = c.mac_of(node)
        if mac in macs:
            raise ConfigError(f"{key}.mac", f"{mac} is already the MAC of node {macs[mac]!r}; set a unique mac")
        macs[mac] = node.name
        if node.os not in c.images:
            raise ConfigError(f"images.{node.os}", f"node {node.name!r} runs {node.os} but no image source is configured for it")
        need = MIN_MEMORY_MIB[node.role]
        if node.memory_mib < need:
            raise ConfigError(f"{key}.memory_mib", f"{node.memory_mib} MiB is below the {need} MiB a {node.role} node needs")
        disks = [d.name for d in node.data_disks]
        if len(set(disks)) != len(disks):
            raise ConfigError(f"{key}.data_disks", "data disk names must be unique per node")
        if (node.uses_longhorn or node.role == "storage") and not node.data_disks:
            what = "NFS and Longhorn" if node.role == "storage" else "Longhorn"
            raise ConfigError(f"{key}.data_disks", f"{node.name!r} serves {what} storage but has no data disk; add one")
        if node.longhorn and node.role not in K3S_ROLES:
            raise ConfigError(f"{key}.longhorn", f"Longhorn runs only on K3s nodes, not on a {node.role} node")
        if node.ingress and node.role not in K3S_ROLES:
            raise ConfigError(f"{key}.ingress", f"ingress runs only on K3s nodes, not on a {node.role} node")
        if node.role in ("load_balancer", "infra") and node.os not in PACKAGED_OS:
            raise ConfigError(f"{key}.os", f"a {node.role} node runs packaged services; use {', '.join(PACKAGED_OS)}")
        if node.vrrp_priority is not None and node.role != "load_balancer":
            raise ConfigError(f"{key}.vrrp_priority", "only load_balancer nodes take part in VRRP")
    for name, img in c.images.items():
        if not any(n.os == name for n in c.nodes):
            raise ConfigError(f"images.{name}", f"no node runs {name}; remove the image or use it")


def _check_roles(c: StackConfig) -> None:
    servers = len(c.servers)
    if servers == 0 or servers % 2 == 0:
        hint = "no K3s server is defined" if servers == 0 else f"{servers} servers cannot keep etcd quorum"
        raise ConfigError("nodes", f"{hint}; use 1, 3 or 5 nodes with role server")
    if len(c.load_balancers) != 2:
        raise ConfigError("nodes", f"{len(c.load_balancers)} load_balancer nodes defined; the HA pair needs exactly 2")
    if len(c.nodes_with("infra")) != 1:
        raise ConfigError("nodes", f"{len(c.nodes_with('infra'))} infra nodes defined; DNS and NTP need exactly 1")
    if not c.ingress_nodes:
        raise ConfigError("nodes", "no node takes ingress; add an agent or set ingress: true on a K3s node")


def _check_load_balancer(c: StackConfig) -> None:
    lb = c.load_balancer
    net = c.network_by_name.get(lb.network)
    if net is None:
        raise ConfigError("load_balancer.network", f"no network named {lb.network!r}; defined: {', '.join(c.network_by_name)}")
    for i, node in enumerate(c.nodes):
        if node.role == "load_balancer" and node.network != lb.network:
            raise ConfigError(f"nodes[{i}].network", f"load balancer {node.name!r} must be on the VIP network {lb.network!r}")
    node_ips = {n.ip: n.name for n in c.nodes}
    for field in ("api_vip", "ingress_vip"):
        vip = getattr(lb, field)
        key = f"load_balancer.{field}"
        if vip not in net.cidr or vip in (net.cidr.network_address, net.cidr.broadcast_address):
            raise ConfigError(key, f"{vip} is outside the load-balancer network {net.name!r} ({net.cidr})")
        if vip in node_ips:
            raise ConfigError(key, f"{vip} is the address of node {node_ips[vip]!r}; a VIP needs an unused address")
        if vip == net.router:
            raise ConfigError(key, f"{vip} is the gateway of {net.name!r}; a VIP needs an unused address")
        if net.in_dhcp(vip):
            raise ConfigError(key, f"{vip} is inside the DHCP range {net.dhcp.start}-{net.dhcp.end}; pick an address outside it")
    if lb.api_vip == lb.ingress_vip:
        raise ConfigError("load_balancer.ingress_vip", "the ingress VIP must differ from the API VIP")
    v = lb.vrrp
    if v.api_router_id == v.ingress_router_id:
        raise ConfigError("load_balancer.vrrp.ingress_router_id", f"router id {v.ingress_router_id} is also the API instance's; VRRP ids must differ")
    if lb.ingress_http_nodeport == lb.ingress_https_nodeport:
        raise ConfigError("load_balancer.ingress_https_nodeport", "must differ from ingress_http_nodeport")
    prios = [vrrp_priority(c, n) for n in c.load_balancers]
    if len(set(prios)) != len(prios):
        i = c.nodes.index(c.load_balancers[1])
        raise ConfigError(f"nodes[{i}].vrrp_priority", f"both load balancers have priority {prios[0]}; give the MASTER a higher one")


def vrrp_priority(c: StackConfig, node: NodeConfig) -> int:
    """Configured priority, else 110 for the first load balancer and 100 for the second."""
    if node.vrrp_priority is not None:
        return node.vrrp_priority
    return 110 if c.load_balancers.index(node) == 0 else 100


# ---------------------------------------------------------------- entry points


def _format_validation_error(err: ValidationError) -> ConfigError:
    first = err.errors()[0]
    parts: list[str] = []
    for p in first["loc"]:
        if p == "[key]":
            continue
        if isinstance(p, int):
            parts[-1] = f"{parts[-1]}[{p}]" if parts else f"[{p}]"
        else:
            parts.append(str(p))
    key = ".".join(parts) or "(root)"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key; check its spelling against the documented config"
    elif first["type"] == "missing":
        msg = "is required"
    elif first["type"] == "literal_error":
        msg = f"{first.get('input')!r} is not allowed; {msg.lower()}"
    elif "input" in first and first["type"] not in ("value_error",):
        msg = f"{first['input']!r}: {msg}" if not isinstance(first["input"], (dict, list)) else msg
    return ConfigError(key, msg)


def parse_config(raw: Any) -> StackConfig:
    """Parse and validate a stack config dict; raise ConfigError (one line) on any mistake."""
    if not isinstance(raw, dict):
        raise ConfigError("(root)", f"must be a mapping, got {type(raw).__name__}; see Pulumi.dev.yaml")
    try:
        cfg = StackConfig.model_validate(raw)
    except ValidationError as err:
        raise _format_validation_error(err) from None
    _cross_check(cfg)
    return cfg


def check_local_files(cfg: StackConfig) -> None:
    """Files on the machine that runs Pulumi which the config names: present, and as pinned."""
    spec = cfg.dns.coredns
    path = spec.local_path()
    if not os.path.isfile(path):
        key = "dns.coredns.path" if spec.path else "dns.coredns"
        raise ConfigError(key, f"no CoreDNS binary at {path}; run bash .ci/coredns.sh or set dns.coredns.path")
    if spec.sha256:
        got = file_sha256(path)
        if got != spec.sha256:
            raise ConfigError("dns.coredns.sha256", f"{path} has sha256 {got}, not the pinned {spec.sha256}")


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load() -> StackConfig:
    """Read ``microcloud:config`` from the stack; config mistakes end the run in one line."""
    import pulumi  # local import keeps parse_config usable without Pulumi

    raw = pulumi.Config("microcloud").get_object("config")
    if raw is None:
        raise pulumi.RunError(f"{CONFIG_KEY}: is not set; copy the shape of Pulumi.dev.yaml into Pulumi.<stack>.yaml")
    try:
        cfg = parse_config(raw)
        check_local_files(cfg)
        return cfg
    except ConfigError as err:
        raise pulumi.RunError(str(err)) from None
