"""From the typed stack config to renderer inputs. Pure: no Pulumi.

The components call these inside ``Output.apply`` once generated values (SSH
keys, VRRP password) and node addresses are known; the real-validator tests
call them directly with the same configs, so what is checked is what ships.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Mapping, Sequence

from .config import K3S_ROLES, NodeConfig, StackConfig, vrrp_priority
from .render import chrony, cloud_init, coredns, haproxy, ignition, k3s, keepalived, storage
from .render.network import NetworkSettings
from .render.os_family import family_of
from .render.platform.longhorn import LONGHORN_DISK_LABEL

# Where the load balancers get the haproxy check; keepalived.conf tracks it.
CHECK_SCRIPT = keepalived.CHECK_SCRIPT


def network_settings(cfg: StackConfig, node: NodeConfig) -> NetworkSettings:
    net = cfg.network_by_name[node.network]
    infra = cfg.infra_node
    # Internal resolver first; the network's router (libvirt dnsmasq or the LAN
    # router) only as the second choice, e.g. while CoreDNS is being set up.
    dns = (str(infra.ip), str(net.router)) if node is not infra else (str(node.ip), str(net.router))
    # No routes to the other networks: the default route goes to the gateway
    # (the libvirt host or the LAN router), which routes between them.
    return NetworkSettings(
        mac=cfg.mac_of(node),
        address=str(node.ip),
        prefix=net.cidr.prefixlen,
        gateway=str(net.router),
        dns=dns,
        search_domain=cfg.domain,
        mtu=net.mtu,
    )


def reboot_slot(name: str) -> int:
    """A node's reboot weekday slot, from its name alone.

    First-boot config must not depend on the node's position in the list
    (inserting a node would replace the ones after it). A trailing number
    spreads server1..serverN over consecutive days; other names hash.
    """
    m = re.search(r"(\d+)$", name)
    return int(m.group(1)) if m else int(hashlib.sha256(name.encode()).hexdigest(), 16)


def flatcar_node(cfg: StackConfig, node: NodeConfig, ssh_keys: Sequence[str]) -> ignition.FlatcarNode:
    u = cfg.updates
    return ignition.FlatcarNode(
        hostname=node.name,
        fqdn=cfg.fqdn(node.name),
        user=cfg.ssh.user,
        ssh_keys=tuple(ssh_keys),
        network=network_settings(cfg, node),
        ntp_server=str(cfg.infra_node.ip),
        kubernetes=node.role in K3S_ROLES,
        updates=ignition.UpdatePolicy(
            group=u.group,
            strategy=u.strategy,
            window_start=ignition.reboot_window(u.window_start, reboot_slot(node.name)),
            window_length=u.window_length,
        ),
    )


def cloud_init_node(cfg: StackConfig, node: NodeConfig, ssh_keys: Sequence[str]) -> cloud_init.CloudInitNode:
    return cloud_init.CloudInitNode(
        family=family_of(node.os),
        hostname=node.name,
        fqdn=cfg.fqdn(node.name),
        role=node.role,
        user=cfg.ssh.user,
        ssh_keys=tuple(ssh_keys),
        network=network_settings(cfg, node),
        ntp_server=None if node.role == "infra" else str(cfg.infra_node.ip),
        extra_packages=storage_packages(node),
    )


def storage_packages(node: NodeConfig) -> tuple[str, ...]:
    """What the storage node's NFS server and a Longhorn node's iSCSI initiator need (Flatcar ships them)."""
    if node.is_flatcar:
        return ()
    services = storage.SERVICES[family_of(node.os).name]
    out: tuple[str, ...] = ()
    if node.role == "storage":
        out += services.nfs_server_packages
    if node.uses_longhorn:
        out += services.longhorn_packages
    return tuple(sorted(set(out)))


def ignition_json(cfg: StackConfig, node: NodeConfig, ssh_keys: Sequence[str]) -> str:
    return ignition.render_ignition(flatcar_node(cfg, node, ssh_keys))


def cloud_init_docs(cfg: StackConfig, node: NodeConfig, ssh_keys: Sequence[str], instance_id: str) -> dict[str, str]:
    """The NoCloud documents (user-data, network-config, meta-data) of one cloud-init (EL9 or Debian) node."""
    spec = cloud_init_node(cfg, node, ssh_keys)
    return {
        "user-data": cloud_init.render_user_data(spec),
        "network-config": cloud_init.render_network_config(spec.network),
        "meta-data": cloud_init.render_meta_data(cloud_init.MetaDataSpec(instance_id=instance_id, hostname=node.name)),
    }


def haproxy_backends(cfg: StackConfig) -> list[str]:
    """Names of the nodes HAProxy sends traffic to: the K3s servers (API) and the ingress nodes."""
    return sorted({n.name for n in cfg.servers} | {n.name for n in cfg.ingress_nodes})


def haproxy_spec(cfg: StackConfig, node_ips: Mapping[str, str]) -> haproxy.HaproxySpec:
    """The haproxy.cfg spec from the live node addresses (``node_ips``: name -> IP of servers and ingress nodes)."""
    lb = cfg.load_balancer
    return haproxy.HaproxySpec(
        api_vip=str(lb.api_vip),
        ingress_vip=str(lb.ingress_vip),
        servers=tuple(haproxy.Backend(n.name, node_ips[n.name]) for n in cfg.servers),
        ingress_nodes=tuple(haproxy.Backend(n.name, node_ips[n.name]) for n in cfg.ingress_nodes),
        api_port=lb.api_port,
        http_nodeport=lb.ingress_http_nodeport,
        https_nodeport=lb.ingress_https_nodeport,
        stats_port=lb.stats_port,
    )


def haproxy_cfg(cfg: StackConfig, node_ips: Mapping[str, str], **overrides) -> str:
    """haproxy.cfg; ``overrides`` replace fields of the spec (the tests run it unprivileged, with other timers)."""
    return haproxy.render_haproxy(dataclasses.replace(haproxy_spec(cfg, node_ips), **overrides))


def keepalived_specs(cfg: StackConfig, auth_pass: str) -> dict[str, keepalived.KeepalivedSpec]:
    """The keepalived.conf spec of each load balancer, by name: each one's unicast peer is the other."""
    lb = cfg.load_balancer
    a, b = cfg.load_balancers
    instances = (
        keepalived.VrrpInstance("VI_API", lb.vrrp.api_router_id, str(lb.api_vip)),
        keepalived.VrrpInstance("VI_INGRESS", lb.vrrp.ingress_router_id, str(lb.ingress_vip)),
    )
    master = max((a, b), key=lambda n: vrrp_priority(cfg, n))
    return {
        me.name: keepalived.KeepalivedSpec(
            router_name=me.name,
            self_ip=str(me.ip),
            peer_ip=str(peer.ip),
            priority=vrrp_priority(cfg, me),
            master=me is master,
            instances=instances,
            auth_pass=auth_pass,
            interface=lb.vrrp.interface,
            advert_int=lb.vrrp.advert_int,
            preempt=lb.vrrp.preempt,
        )
        for me, peer in ((a, b), (b, a))
    }


def keepalived_confs(cfg: StackConfig, auth_pass: str, **overrides) -> dict[str, str]:
    """keepalived.conf per load balancer name, checked as a pair before anything uses them.

    ``overrides`` replace fields of both members' specs (the tests point
    ``check_script`` at their own copy).
    """
    confs = {
        name: keepalived.render_keepalived(dataclasses.replace(spec, **overrides))
        for name, spec in keepalived_specs(cfg, auth_pass).items()
    }
    keepalived.check_pair(*confs.values())
    return confs


def keepalived_check_script(cfg: StackConfig) -> str:
    return keepalived.render_check_script(keepalived.CheckScriptSpec(stats_port=cfg.load_balancer.stats_port))


def chrony_server_conf(cfg: StackConfig) -> str:
    return chrony.render_chrony_server(
        chrony.ChronyServerSpec(upstream=tuple(cfg.ntp.upstream), allow=tuple(str(n.cidr) for n in cfg.networks))
    )


def dns_records(cfg: StackConfig, node_ips: Mapping[str, str]) -> dict[str, str]:
    """Every node and both VIPs (api, ingress) under the one domain; '*.apps' is left to ingress."""
    records = dict(node_ips)
    records["api"] = str(cfg.load_balancer.api_vip)
    records["ingress"] = str(cfg.load_balancer.ingress_vip)
    return records


def corefile(cfg: StackConfig) -> str:
    return coredns.render_corefile(
        coredns.CorefileSpec(domain=cfg.domain, forwarders=tuple(str(f) for f in cfg.dns.forwarders))
    )


def zone_file(cfg: StackConfig) -> str:
    """The domain's SOA-only zone; its nameserver is the infra node, whose address never changes."""
    infra = cfg.infra_node
    return coredns.render_zone(coredns.ZoneSpec(domain=cfg.domain, nameserver=infra.name, nameserver_ip=str(infra.ip)))


def hosts_file(cfg: StackConfig, node_ips: Mapping[str, str]) -> str:
    return coredns.render_hosts(coredns.HostsSpec(domain=cfg.domain, records=dns_records(cfg, node_ips)))


# ------------------------------------------------------------------ K3s


def k3s_bootstrap_server(cfg: StackConfig) -> NodeConfig:
    """The server that initializes etcd: the first by name, so reordering the node list moves nothing."""
    return min(cfg.servers, key=lambda n: n.name)


def k3s_install_order(cfg: StackConfig) -> list[NodeConfig]:
    """One node at a time: servers 2..n, then the bootstrap server (re-pointed at the VIP), then every agent.

    By name within each group, so inserting or reordering nodes in the config
    changes no other node's place relative to the ones it already follows.
    """
    first = k3s_bootstrap_server(cfg)
    others = sorted((n for n in cfg.servers if n.name != first.name), key=lambda n: n.name)
    agents = sorted((n for n in cfg.nodes_with(*K3S_ROLES) if n.role != "server"), key=lambda n: n.name)
    return [*others, first, *agents]


def k3s_node_spec(cfg: StackConfig, node: NodeConfig, *, bootstrap: bool = False) -> k3s.K3sNodeSpec:
    """config.yaml of one K3s node.

    ``bootstrap``: the bootstrap server's first start (``cluster-init``).
    Otherwise every node joins through the API VIP, the bootstrap server too
    once there is more than one server; a lone server keeps ``cluster-init``
    (there is no other member to join).
    """
    if node.role not in K3S_ROLES:
        raise ValueError(f"k3s: {node.name} is a {node.role} node, not a K3s node")
    lb = cfg.load_balancer
    lone = len(cfg.servers) == 1 and node.role == "server"
    labels = {**node.labels}
    if node.uses_longhorn:
        key, value = LONGHORN_DISK_LABEL.split("=", 1)
        labels[key] = value
    return k3s.K3sNodeSpec(
        role="server" if node.role == "server" else "agent",
        node_name=node.name,
        node_ip=str(node.ip),
        api_vip=str(lb.api_vip),
        api_port=lb.api_port,
        domain=cfg.domain,
        cluster_init=bootstrap or lone,
        node_labels=tuple(f"{k}={v}" for k, v in sorted(labels.items())),
        node_taints=tuple(node.taints),
    )


def k3s_bin_dir(node: NodeConfig) -> str:
    return k3s.FLATCAR_BIN_DIR if node.is_flatcar else k3s.BIN_DIR
