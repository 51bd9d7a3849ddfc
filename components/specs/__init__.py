"""From the typed stack config to renderer inputs. Pure: no Pulumi. One module per subject:

    images         the check of each OS image before a base volume is made from it
    nodes          each VM's network settings and first-boot documents (Ignition, NoCloud)
    load_balancer  haproxy.cfg from the live backend addresses, keepalived.conf of both LBs
    infra          chrony's server config; CoreDNS' Corefile, zone and hosts file
    k3s            the bootstrap server, the install order, each node's config.yaml spec
    storage        what each node with data disks gets (plan) and the files that deliver it (steps)
    monitoring     the VMs that get node_exporter and the networks that may scrape them
    firewall       each node's own firewall, by role
    network        what the libvirt host forwards between the stack's networks and from the LAN to the VIPs
    database       PostgreSQL on the database node: where data and dumps live, the node's steps (by module)

The components call these inside ``Output.apply`` once generated values (SSH
keys, VRRP password) and node addresses are known; the real-validator tests
call them directly with the same configs, so what is checked is what ships.
Every function is re-exported here, so ``specs.X`` names any of them.
"""

from .images import image_check_script, image_check_spec
from .firewall import firewall_spec, role_allows, ssh_sources
from .infra import chrony_server_conf, corefile, dns_clients, dns_records, hosts_file, zone_file
from .k3s import budget_pool, k3s_bin_dir, k3s_bootstrap_server, k3s_budget, k3s_hardening, k3s_install_order, k3s_install_waves, needed_parallel, parallel_warning, k3s_node_spec, k3s_registries, servers_tainted
from .load_balancer import (CHECK_SCRIPT, haproxy_backends, haproxy_cfg, haproxy_spec, keepalived_check_script,
                            keepalived_confs, keepalived_specs)
from .monitoring import monitored_nodes, scrape_sources
from .network import forwarding_ends, forwarding_tag, host_forwarding, vip_client_rules
from .nodes import (cloud_init_docs, cloud_init_node, flatcar_node, ignition_json, kubelet_sysctls, network_settings,
                    storage_packages)
# Storage by module (specs.storage.plan, .steps): its names are too generic for this namespace.
from . import database, storage

__all__ = [
    "CHECK_SCRIPT", "chrony_server_conf", "cloud_init_docs", "cloud_init_node", "corefile", "dns_clients", "dns_records", "firewall_spec",
    "flatcar_node", "forwarding_ends", "forwarding_tag", "haproxy_backends", "host_forwarding", "haproxy_cfg", "haproxy_spec", "hosts_file", "ignition_json",
    "image_check_script", "image_check_spec", "k3s_bin_dir",
    "budget_pool", "k3s_bootstrap_server", "k3s_budget", "k3s_hardening", "k3s_install_order", "k3s_install_waves", "needed_parallel", "parallel_warning", "k3s_node_spec", "k3s_registries", "servers_tainted", "keepalived_check_script", "keepalived_confs",
    "keepalived_specs", "kubelet_sysctls", "monitored_nodes", "network_settings", "role_allows", "scrape_sources", "ssh_sources", "storage",
    "storage_packages", "vip_client_rules", "zone_file",
]
