"""FlatcarMicroCloud: one resource graph per stack. Data flow decides the order."""

import os

import pulumi
import pulumi_kubernetes as k8s
import pulumi_libvirt as libvirt

from components import config
from components.cluster_pki import ClusterPki, ClusterPkiArgs
from components.database import Database, DatabaseArgs
from components.day2 import NodeAccess
from components.images import ImageStore, ImageStoreArgs
from components.infra_services import InfraServices, InfraServicesArgs
from components.k3s_cluster import K3sCluster, K3sClusterArgs
from components.load_balancer import LoadBalancerPair, LoadBalancerPairArgs
from components.network import Networks, NetworksArgs
from components.node import Node, NodeArgs
from components.node_exporter import NodeExporters, NodeExportersArgs
from components.reboots import Reboots, RebootsArgs
from components.platform import Platform, platform_args
from components.secrets import Secrets, SecretsArgs
from components.specs import database as database_plan, host_forwarding, monitored_nodes, scrape_sources
from components.storage import Storage, StorageArgs

cfg = config.load()  # a config mistake ends the run here, in one line
prefix = f"{pulumi.get_project()}-{pulumi.get_stack()}"
for relaxed in cfg.firewall.relaxations():  # never silently: every run says what is open
    pulumi.log.warn(relaxed)
provider = libvirt.Provider("libvirt", uri=cfg.libvirt_uri)
# NoCloud seed images are written here, on this machine, then uploaded.
seed_dir = os.environ.get("MICROCLOUD_SEED_DIR") or os.path.expanduser(f"~/.cache/microcloud/seeds/{prefix}")

secrets = Secrets("secrets", SecretsArgs(extra_public_keys=cfg.ssh.public_keys))
networks = Networks("networks", NetworksArgs(prefix, cfg.domain, cfg.networks, provider, cfg.libvirt_uri,
                                              forwarding=host_forwarding(cfg, prefix)))
images = ImageStore("images", ImageStoreArgs(prefix, cfg.pool_path, cfg.images, provider))

nodes = {
    n.name: Node(
        n.name,
        NodeArgs(
            prefix=prefix,
            stack=cfg,
            node=n,
            ssh_public_keys=secrets.ssh_public_keys,
            network_id=networks.ids[n.network],
            pool_name=images.pool_name,
            base_volume_id=images.base_volume_ids[n.os],
            provider=provider,
            seed_dir=seed_dir,
        ),
    )
    for n in cfg.nodes
}

# How every day-2 component reaches the nodes: their addresses and domain ids, one SSH identity.
access = NodeAccess(
    ips={name: node.ip for name, node in nodes.items()},
    domain_ids={name: node.domain_id for name, node in nodes.items()},
    user=cfg.ssh.user,
    private_key=secrets.ssh_private_key,
    host_keys={name: node.host_key for name, node in nodes.items()},
)
infra = InfraServices("infra-services", InfraServicesArgs(stack=cfg, access=access))
lbs = LoadBalancerPair("load-balancers", LoadBalancerPairArgs(stack=cfg, access=access, vrrp_auth=secrets.vrrp_auth))
# node_exporter on the VMs outside the cluster, reachable from the K3s networks only.
watched = monitored_nodes(cfg)
exporters = NodeExporters(
    "node-exporters",
    NodeExportersArgs(binary=cfg.monitoring.node_exporter, nodes=tuple(watched), access=access,
                      allowed_sources=scrape_sources(cfg)),
)

cluster = storage = None
if cfg.k3s.enabled:
    # Data disks formatted once and mounted, NFS on the storage node, what Longhorn needs on its nodes.
    storage = Storage("storage", StorageArgs(stack=cfg, access=access))
    # The cluster's own CAs, secure join tokens and admin certificate, before any K3s starts.
    pki = ClusterPki(
        "k3s-pki",
        ClusterPkiArgs(
            prefix=prefix,
            admin_validity_days=cfg.k3s.kubeconfig_validity_days,
            admin_renew_days=cfg.k3s.kubeconfig_renew_days,
            admin_keeper=cfg.k3s.kubeconfig_keeper,
            secrets_encryption=cfg.k3s.hardening.secrets_encryption,
        ),
    )
    # Registry tokens: secret config keys the config names (k3s.registries.configs.<host>.auth.password_key),
    # read by the nodes' registries.yaml and by Image Updater.
    registry_passwords = {key: config.secret_value(key) for key in cfg.k3s.registries.secret_keys()}
    cluster = K3sCluster(
        "k3s",
        K3sClusterArgs(
            stack=cfg,
            access=access,
            pki=pki,
            # Servers 2..n and the agents join through the API VIP, and resolve
            # names (downloads) through the infra node: both must answer first.
            wait_for=[*lbs.commands, infra],
            registry_passwords=registry_passwords,
        ),
    )
    # The one provider of every Kubernetes resource. cluster_identifier: a new
    # kubeconfig (a renewed admin certificate) updates the provider
    # instead of replacing it and, with it, everything it deployed.
    kube = k8s.Provider("k3s", kubeconfig=cluster.kubeconfig, cluster_identifier=prefix)

# Unattended updates on every packaged node; reboots: cluster nodes within the disruption budget (the same
# Leases K3s restarts take), the load balancers on disjoint days with the peer up, the rest on Sundays.
Reboots("reboots", RebootsArgs(stack=cfg, access=access, installs=cluster.installs if cluster is not None else {}))

# PostgreSQL on the database node: its data and dumps on the storage node's NFS disk (an export of its own).
database = None
db_plan = database_plan.plan(cfg)
if db_plan is not None:
    database = Database(
        "database",
        DatabaseArgs(prefix=prefix, plan=db_plan, access=access, keeper=cfg.database.password_keeper,
                     wait_for=[storage] if storage is not None and db_plan.nfs_mount else []),
    )

platform = None
if cluster is not None and cfg.platform.enabled:
    platform_inputs = platform_args(
        cfg,
        provider=kube,
        kubeconfig=cluster.kubeconfig,
        nfs_path=storage.nfs_path,
        longhorn_path=storage.longhorn_path,
        monitored=watched,
        registry_passwords=registry_passwords,
    )
    try:
        platform = Platform(
            "platform",
            platform_inputs,
            # Longhorn's data path and the NFS export must be mounted, and the
            # exporters answering, before the charts that use them start.
            opts=pulumi.ResourceOptions(depends_on=[storage, exporters]),
        )
    except ValueError as err:  # a chart that is not the pinned one, a bad keeper: one line, no traceback
        config.fail(str(err))

key_file = f"~/.ssh/{prefix}"
pulumi.export("nodes", access.ips)
pulumi.export("vips", {"api": lbs.api_vip, "ingress": lbs.ingress_vip})
pulumi.export("dns_server", infra.dns_server)
pulumi.export("node_exporter_targets", exporters.targets)
pulumi.export("ssh_private_key", secrets.ssh_private_key)
# known_hosts lines: every node's host key, as the program's own connections pin it.
pulumi.export("ssh_known_hosts", pulumi.Output.all(*(pulumi.Output.concat(str(n.ip), " ", nodes[n.name].host_key) for n in cfg.nodes)).apply(
    lambda lines: "\n".join(lines) + "\n"))
# The config this state was last applied with (nothing secret is in it): the
# plan policies (policy/plan.py) name the config change behind a replacement.
pulumi.export("config", cfg.model_dump(mode="json", exclude={"allow_replace"}))
pulumi.export(
    "ssh_commands",
    {
        "save_key": f"pulumi stack output --show-secrets ssh_private_key > {key_file} && chmod 600 {key_file}",
        "save_known_hosts": f"pulumi stack output ssh_known_hosts > {key_file}.known_hosts",
        **{name: node.ip.apply(lambda ip: f"ssh -i {key_file} -o UserKnownHostsFile={key_file}.known_hosts "
                                          f"-o StrictHostKeyChecking=yes {cfg.ssh.user}@{ip}") for name, node in nodes.items()},
    },
)
# The VMs with a VNC display (console.vnc, nodes[].vnc): on the libvirt host's loopback, `virsh vncdisplay <domain>`.
vnc = {name: node.vnc_password for name, node in nodes.items() if node.vnc_password is not None}
if vnc:
    pulumi.export("vnc_passwords", pulumi.Output.secret(vnc))
if cluster is not None:
    pulumi.export("kubeconfig", cluster.kubeconfig)
    # When the admin certificate in it ends (RFC 3339); an `up` in its last renew days makes a new one.
    pulumi.export("kubeconfig_expires_at", cluster.kubeconfig_expires_at)
    # What a joining node checks the cluster by (K3s' CA hash), and the CA kubectl trusts.
    pulumi.export("cluster_ca", {"certificate": pki.server_ca_pem, "sha256": pki.ca_hash})
if database is not None:
    # Host, port, the CA to verify it with, and each database's owner and generated password (secret).
    pulumi.export("database", database.connection)

if platform is not None:
    pulumi.export("sealing_certificate", platform.sealing_certificate)
    pulumi.export("ingress_certificate", platform.default_certificate)
    pulumi.export("passwords", {
        "traefik_dashboard": platform.dashboard_password,
        "grafana_admin": platform.grafana_admin_password,
        **({"argocd_admin": platform.argocd_admin_password} if platform.argocd_admin_password is not None else {}),
    })
    if platform.argocd_ci_token is not None:
        # The CI account's API token (secret): the app repositories' ARGOCD_AUTH_TOKEN (docs/delivery.md).
        pulumi.export("argocd_ci_token", platform.argocd_ci_token)
