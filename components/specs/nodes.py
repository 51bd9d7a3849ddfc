"""Each VM's first-boot config: network settings, Ignition (Flatcar) and NoCloud (EL9, Debian) documents."""

from __future__ import annotations

from typing import Optional, Sequence

from ..config import K3S_ROLES, NodeConfig, StackConfig
from ..render import cloud_init, ignition, storage
from ..render.host_key import HostKey
from ..render.network import NetworkSettings
from ..render.os_family import family_of
from .firewall import firewall_spec


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


def flatcar_node(cfg: StackConfig, node: NodeConfig, ssh_keys: Sequence[str],
                 host_key: Optional[HostKey] = None) -> ignition.FlatcarNode:
    u = cfg.updates
    return ignition.FlatcarNode(
        hostname=node.name,
        fqdn=cfg.fqdn(node.name),
        user=cfg.ssh.user,
        ssh_keys=tuple(ssh_keys),
        network=network_settings(cfg, node),
        ntp_server=str(cfg.infra_node.ip),
        kubernetes=node.role in K3S_ROLES,
        updates=ignition.UpdatePolicy(group=u.group),
        host_key=host_key,
        autologin=cfg.console.autologin,
        kubelet_sysctls=kubelet_sysctls(cfg, node),
        firewall=firewall_spec(cfg, node),
    )


def kubelet_sysctls(cfg: StackConfig, node: NodeConfig) -> bool:
    """First boot writes the kubelet's sysctls on K3s nodes when the profile protects kernel defaults."""
    return node.role in K3S_ROLES and cfg.k3s.enabled and cfg.k3s.hardening.protect_kernel_defaults


def cloud_init_node(cfg: StackConfig, node: NodeConfig, ssh_keys: Sequence[str],
                    host_key: Optional[HostKey] = None) -> cloud_init.CloudInitNode:
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
        host_key=host_key,
        kubelet_sysctls=kubelet_sysctls(cfg, node),
        firewall=firewall_spec(cfg, node),
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


def ignition_json(cfg: StackConfig, node: NodeConfig, ssh_keys: Sequence[str], host_key: Optional[HostKey] = None) -> str:
    return ignition.render_ignition(flatcar_node(cfg, node, ssh_keys, host_key))


def cloud_init_docs(cfg: StackConfig, node: NodeConfig, ssh_keys: Sequence[str], instance_id: str,
                    host_key: Optional[HostKey] = None) -> dict[str, str]:
    """The NoCloud documents (user-data, network-config, meta-data) of one cloud-init (EL9 or Debian) node."""
    spec = cloud_init_node(cfg, node, ssh_keys, host_key)
    return {
        "user-data": cloud_init.render_user_data(spec),
        "network-config": cloud_init.render_network_config(spec.network),
        "meta-data": cloud_init.render_meta_data(cloud_init.MetaDataSpec(instance_id=instance_id, hostname=node.name)),
    }
