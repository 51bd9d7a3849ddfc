"""Cross-field checks: what no single field can know (overlaps, uniqueness, counts, membership)."""

from __future__ import annotations

import ipaddress

from .base import K3S_ROLES, PACKAGED_OS, is_local_uri
from .errors import ConfigError, node_labels
from .database import VERSIONS_BY_OS
from .nodes import MIN_MEMORY_MIB, RESERVED_NAMES
from .stack import StackConfig, vrrp_priority


def cross_check(c: StackConfig) -> None:
    """Raise the first ConfigError of a parsed config, in a fixed order: networks, nodes, roles, load balancer."""
    labels = node_labels(c.nodes)
    _check_networks(c)
    _check_nodes(c, labels)
    _check_roles(c)
    _check_load_balancer(c, labels)
    _check_firewall(c)
    _check_database(c, labels)


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


def _check_nodes(c: StackConfig, labels: list[str]) -> None:
    names: dict[str, int] = {}
    ips: dict[ipaddress.IPv4Address, str] = {}
    macs: dict[str, str] = {}
    for net in c.networks:
        ips[net.router] = f"the gateway of network {net.name!r}"
    for i, node in enumerate(c.nodes):
        key = labels[i]
        if node.name in names:
            raise ConfigError(f"{key}.name", f"node name {node.name!r} is used twice (also {labels[names[node.name]]})")
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
        for field in ("labels", "taints"):
            if getattr(node, field) and node.role not in K3S_ROLES:
                raise ConfigError(f"{key}.{field}", f"K3s node {field} need a K3s node, not a {node.role} node")
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
    _check_server_taint(c)


def _check_server_taint(c: StackConfig) -> None:
    """Servers are tainted unless workloads_on_servers: then a cluster needs agents, and no server may carry workloads."""
    if not c.k3s.enabled or c.k3s.hardening.workloads_on_servers:
        return
    key = "k3s.hardening.workloads_on_servers"
    if not any(n.role in K3S_ROLES and n.role != "server" for n in c.nodes):
        raise ConfigError(key, "the stack has no agent, and servers are tainted so that workloads keep off etcd's nodes; "
                          "add an agent, or set it to true for a tiny cluster")
    for node in c.servers:
        for what in ("takes_ingress", "uses_longhorn"):
            if getattr(node, what):
                name = "longhorn" if what == "uses_longhorn" else "ingress"
                raise ConfigError(key, f"server {node.name!r} has {name} set, but servers are tainted (no workloads); "
                                  f"move {name} to an agent, or set it to true")


def _check_load_balancer(c: StackConfig, labels: list[str]) -> None:
    lb = c.load_balancer
    net = c.network_by_name.get(lb.network)
    if net is None:
        raise ConfigError("load_balancer.network", f"no network named {lb.network!r}; defined: {', '.join(c.network_by_name)}")
    for i, node in enumerate(c.nodes):
        if node.role == "load_balancer" and node.network != lb.network:
            raise ConfigError(f"{labels[i]}.network", f"load balancer {node.name!r} must be on the VIP network {lb.network!r}")
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
    if lb.clients and net.mode != "nat":
        raise ConfigError("load_balancer.clients", f"the VIPs' network {net.name!r} is a {net.mode} network: " + {
            "bridge": "its VIPs are on the LAN itself, nothing to forward",
            "route": "libvirt already forwards the LAN into it, to every address and port (only the node firewalls limit it)",
        }.get(net.mode, "nothing is forwarded into it"))
    for client in lb.clients:
        for other in c.networks:
            if client.overlaps(other.cidr):
                raise ConfigError("load_balancer.clients", f"{client} overlaps the stack's network {other.name!r} ({other.cidr}); "
                                  "list networks outside the stack")
    v = lb.vrrp
    if v.api_router_id == v.ingress_router_id:
        raise ConfigError("load_balancer.vrrp.ingress_router_id", f"router id {v.ingress_router_id} is also the API instance's; VRRP ids must differ")
    if lb.ingress_http_nodeport == lb.ingress_https_nodeport:
        raise ConfigError("load_balancer.ingress_https_nodeport", "must differ from ingress_http_nodeport")
    prios = [vrrp_priority(c, n) for n in c.load_balancers]
    if len(set(prios)) != len(prios):
        i = c.nodes.index(c.load_balancers[1])
        raise ConfigError(f"{labels[i]}.vrrp_priority", f"both load balancers have priority {prios[0]}; give the MASTER a higher one")


# K3s flags that move or add ports the node firewall does not follow (specs/firewall.py knows K3s' defaults):
# with the firewall on they are refused rather than left to fail at first boot.
FIREWALL_FIXED_FLAGS = {
    "flannel-backend": "flannel's VXLAN (8472/udp) only; another backend needs its own ports",
    "supervisor-port": "the supervisor on the API port only",
    "apiserver-port": "the API on load_balancer.api_port only",
    "embedded-registry": "no embedded registry (5001/tcp)",
}


def _check_firewall(c: StackConfig) -> None:
    fw = c.firewall
    if not fw.enabled:
        return
    if not fw.ssh_from and not is_local_uri(c.libvirt_uri):
        # The default admits SSH from the libvirt host only: Pulumi, elsewhere, would lock itself out at first boot.
        raise ConfigError("firewall.ssh_from", f"libvirt is on another host ({c.libvirt_uri}): name the network Pulumi "
                          "connects to the nodes from, e.g. [10.0.5.0/24] (the default admits only the libvirt host)")
    if fw.ssh_from and is_local_uri(c.libvirt_uri):
        # Local libvirt: Pulumi reaches a nat/route/isolated network's nodes from the host's own address there.
        for net in c.networks:
            if net.mode != "bridge" and any(n.network == net.name for n in c.nodes) and not any(net.router in s for s in fw.ssh_from):
                raise ConfigError("firewall.ssh_from", f"it leaves out {net.router}, the libvirt host's address on {net.name!r}, "
                                  "from where Pulumi connects to its nodes: add it (or the network), or Pulumi is locked out")
    for role in ("server", "agent"):
        extra = getattr(c.k3s.extra_args, role)
        for key, what in FIREWALL_FIXED_FLAGS.items():
            if key in extra and not (key == "flannel-backend" and extra[key] == "vxlan"):
                raise ConfigError(f"k3s.extra_args.{role}.{key}", f"the node firewall admits {what}: keep K3s' default, "
                                  "or set firewall.enabled: false and firewall the nodes yourself")
    names = {n.name for n in c.nodes}
    for i, allow in enumerate(c.firewall.allow):
        unknown = [n for n in allow.nodes if n not in names]
        if unknown:
            raise ConfigError(f"firewall.allow[{i}].nodes", f"no node named {', '.join(map(repr, unknown))}; nodes: {', '.join(sorted(names))}")
        if allow.nodes and allow.roles:
            raise ConfigError(f"firewall.allow[{i}]", "give `nodes` or `roles`, not both")
        spans = allow.spans()
        if any(b[0] <= a[1] for a, b in zip(spans, spans[1:])):
            raise ConfigError(f"firewall.allow[{i}].ports", f"ports {list(allow.ports)} overlap")


def _check_database(c: StackConfig, labels: list[str]) -> None:
    dbs = c.nodes_with("database")
    if c.database is None:
        if dbs:
            raise ConfigError(f"{labels[c.nodes.index(dbs[0])]}.role", f"{dbs[0].name!r} has role database but the stack has no "
                              "`database` setting; add `database: {}` for the defaults")
        return
    if len(dbs) != 1:
        raise ConfigError("nodes", f"{len(dbs)} nodes with role database; `database` needs exactly 1")
    node = dbs[0]
    key = labels[c.nodes.index(node)]
    allowed = VERSIONS_BY_OS.get(node.os)
    if allowed is None:
        raise ConfigError(f"{key}.os", f"PostgreSQL comes from the node OS's packages: use {', '.join(VERSIONS_BY_OS)}, not {node.os}")
    if c.database.version not in allowed:
        raise ConfigError("database.version", f"{node.os} carries PostgreSQL {', '.join(map(str, allowed))}, not {c.database.version}")
    if c.database.data == "nfs" and not c.nodes_with("storage"):
        raise ConfigError("database.data", "nfs needs a node with role storage; add one, or set data: local")
    if c.database.data == "nfs" and not c.k3s.enabled:
        raise ConfigError("database.data", "the storage node serves NFS with k3s.enabled only; set data: local")
    owners = [d.owner for d in c.database.databases]
    if len(set(owners)) != len(owners):
        raise ConfigError("database.databases", "each database needs an owner of its own (its password is its app's)")
