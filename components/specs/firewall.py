"""Each node's firewall (render/host_firewall.py) from the stack config: what its role needs, from whom.

Sources are the networks that hold a role's nodes and the addresses of the
fixed pair (the LBs), never the node list at large nor the list of networks:
adding a worker, or a network without nodes, changes no other node's first
boot. What follows the networks (DNS and NTP clients) is left to the daemons'
own day-2 lists.
"""

from __future__ import annotations

from typing import Optional

from ..config import K3S_ROLES, NodeConfig, StackConfig
from ..render.host_firewall import Allow, FirewallSpec, NodePorts, port
from .storage import database_export

ANYONE = "0.0.0.0/0"
# K3s' defaults (k3s.extra_args.server can move them: cluster-cidr, service-cidr, service-node-port-range).
POD_RANGE, SERVICE_RANGE, NODE_PORT_RANGE = "10.42.0.0/16", "10.43.0.0/16", "30000-32767"
NODE_EXPORTER_PORT, NFS_PORT, POSTGRES_PORT = 9100, 2049, 5432


def _nets(cfg: StackConfig, roles: tuple[str, ...]) -> tuple[str, ...]:
    names = {n.network for n in cfg.nodes if n.role in roles}
    return tuple(str(cfg.network_by_name[name].cidr) for name in sorted(names))


def _lb_addresses(cfg: StackConfig) -> tuple[str, ...]:
    return tuple(f"{n.ip}/32" for n in cfg.load_balancers)


def ssh_sources(cfg: StackConfig, node: NodeConfig) -> tuple[str, ...]:
    """``firewall.ssh_from``; else the libvirt host on the node's nat/route network, the whole bridge network."""
    if cfg.firewall.ssh_from:
        return tuple(str(n) for n in cfg.firewall.ssh_from)
    net = cfg.network_by_name[node.network]
    return (str(net.cidr),) if net.mode == "bridge" else (f"{net.router}/32",)


def _k3s_arg(cfg: StackConfig, key: str, default: str) -> tuple[str, ...]:
    """An extra server flag's IPv4 values (K3s takes a comma list or a YAML list; IPv6 ones are left out)."""
    value = cfg.k3s.extra_args.server.get(key, default)
    items = value if isinstance(value, list) else str(value).split(",")
    return tuple(v for v in (str(i).strip() for i in items) if v and ":" not in v)


def _node_ports(cfg: StackConfig) -> tuple[int, int]:
    (value,) = _k3s_arg(cfg, "service-node-port-range", NODE_PORT_RANGE)
    lo, _, hi = value.partition("-")
    return int(lo), int(hi or lo)


def role_allows(cfg: StackConfig, node: NodeConfig) -> list[Allow]:
    """What the node's role needs to admit, each with the sources that need it."""
    k3s = _nets(cfg, K3S_ROLES)
    servers = _nets(cfg, ("server",))
    # The database node mounts its own export from the first storage node.
    db_export = database_export(cfg, node)
    nfs_db = db_export.clients if db_export is not None else ()
    lbs = _lb_addresses(cfg)
    out = [Allow("tcp", (port(22),), ssh_sources(cfg, node), "SSH: Pulumi and its operators")]
    exporter = (Allow("tcp", (port(NODE_EXPORTER_PORT),), k3s, "node_exporter: Prometheus on the K3s nodes"),) if k3s else ()
    lb = cfg.load_balancer
    if node.role == "load_balancer":
        peers = tuple(f"{n.ip}/32" for n in cfg.load_balancers if n.name != node.name)
        out.append(Allow("tcp", tuple(sorted({port(lb.api_port), port(80), port(443)})), (ANYONE,), "the VIPs: K3s API and ingress"))
        if peers:
            out.append(Allow("vrrp", (), peers, "VRRP adverts from the other load balancer"))
        out += exporter
    elif node.role == "infra":
        # Open here, filtered by the daemons' own lists (day-2 files that follow the networks and
        # dns.allowed_clients): adding a network or a DNS client must not replace the infra node.
        out.append(Allow("tcp", (port(53),), (ANYONE,), "DNS: CoreDNS, whose acl answers only the stack's networks"))
        out.append(Allow("udp", (port(53),), (ANYONE,), "DNS: CoreDNS, whose acl answers only the stack's networks"))
        out.append(Allow("udp", (port(123),), (ANYONE,), "NTP: chrony, whose allow list serves only the stack's networks"))
        out += exporter
    elif node.role in K3S_ROLES and cfg.k3s.enabled:
        if node.role == "server":
            out.append(Allow("tcp", (port(lb.api_port),), lbs + k3s, "K3s API and supervisor: the LB pair and the nodes"))
            out.append(Allow("tcp", ((2379, 2380),), servers, "etcd: the servers"))
        out.append(Allow("tcp", (port(10250),), k3s, "kubelet: the API servers and the nodes"))
        out.append(Allow("udp", (port(8472),), k3s, "flannel VXLAN between the nodes"))
        out += exporter
        if node.role == "storage":
            out.append(Allow("tcp", (port(NFS_PORT),), k3s + nfs_db, "NFSv4: the K3s nodes" + (" and the database node" if nfs_db else "")))
    elif node.role == "database" and cfg.database is not None:
        sources = tuple(sorted({*k3s, *(str(c) for c in cfg.database.clients)}))
        if sources:
            out.append(Allow("tcp", (port(POSTGRES_PORT),), sources, "PostgreSQL: the K3s nodes and database.clients (pg_hba: TLS and a password)"))
    elif node.role == "storage":
        out.append(Allow("tcp", (port(NFS_PORT),), k3s or (str(cfg.network_by_name[node.network].cidr),), "NFSv4: the K3s nodes"))
    for extra in cfg.firewall.allow:
        # Its reason alone names it: no list index, so removing one entry changes no other node's first boot.
        if (not extra.nodes and not extra.roles) or node.name in extra.nodes or node.role in extra.roles:
            out.append(Allow(extra.proto, extra.spans(), tuple(str(s) for s in extra.sources), f"firewall.allow: {extra.why}"))
    return out


def firewall_spec(cfg: StackConfig, node: NodeConfig) -> Optional[FirewallSpec]:
    """The node's firewall, or None with ``firewall.enabled`` off."""
    if not cfg.firewall.enabled:
        return None
    k3s_member = node.role in K3S_ROLES and cfg.k3s.enabled
    ranges = _k3s_arg(cfg, "cluster-cidr", POD_RANGE) + _k3s_arg(cfg, "service-cidr", SERVICE_RANGE) if k3s_member else ()
    node_ports = None
    if k3s_member:
        lo, hi = _node_ports(cfg)
        # The pods too: a pod reaching its own node's NodePort (or a ClusterIP on a port in the range) is DNATed
        # with its own address, and arrives here unmasqueraded.
        node_ports = NodePorts(lo, hi, _lb_addresses(cfg) + _nets(cfg, K3S_ROLES) + ranges)
    return FirewallSpec(
        node=node.name,
        role=node.role,
        allows=tuple(role_allows(cfg, node)),
        # Echo requests from anyone: no network list in first boot (adding a network replaces no VM).
        ping_from=(ANYONE,),
        pod_ranges=ranges,
        node_ports=node_ports,
    )
