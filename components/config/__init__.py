"""One typed model of a stack's config, and its validation.

The whole stack is the single config key ``microcloud:config`` in
``Pulumi.<stack>.yaml``. Defaults live only in the model. ``parse_config`` is
pure (no Pulumi) so tests can feed it dicts; ``load`` reads the Pulumi config
and turns any mistake into one line without a traceback.

    base           strict base model, fixed sets, the hostname rule, pinning
    artifacts      pinned files here (PinnedFile, ReleaseBinary: path, release url + sha256, local build), file_sha256
    network        NetworkConfig (+ Dhcp, DnsHost)
    nodes          NodeConfig (+ DataDisk), memory per role, reserved names
    load_balancer  LoadBalancerConfig (+ VrrpConfig)
    images         ImageConfig (the OS images), UpdatesConfig (Flatcar updates and reboots)
    access         SshConfig: the login user and the people's SSH keys; ConsoleConfig: console autologin, VNC
    infra          the infra node's services: CorednsBinary, DnsConfig, NtpConfig
    k3s            K3sConfig and K3sArtifact (pinned binary and airgap images)
    firewall       FirewallConfig: each node's own firewall (ssh_from, extra allows)
    database       DatabaseConfig: PostgreSQL on the database node (version, data on NFS or local, databases, backups)
    monitoring     the node_exporter binary of the VMs outside the cluster
    platform       charts, GitOps, the platform layer's settings
    stack          StackConfig and vrrp_priority
    checks         cross-field checks
    errors         ConfigError, key naming (nodes by name), suggestions
    loader         parse_config, load, the stack-key check, local files
    doc            the config table of docs/config.md, generated from the model
"""

from .base import (
    DOMAIN_LABEL,
    EL9,
    HOSTNAME,
    IFNAME,
    K3S_ROLES,
    MAC,
    PACKAGED_OS,
    UNPINNED_PATH,
    UNPINNED_VERSION,
    NetworkMode,
    OsName,
    Role,
)
from .errors import CONFIG_KEY, ConfigError, StackKeyError
from .load_balancer import LoadBalancerConfig, VrrpConfig
from .monitoring import MonitoringConfig, NodeExporterBinary
from .platform import ChartConfig, GitOpsConfig, PlatformConfig
from .artifacts import PinnedFile, ReleaseBinary, file_sha256
from .loader import check_local_files, check_secret_keys, check_stack_keys, fail, load, parse_config, secret_value
from .network import Dhcp, DnsHost, NetworkConfig
from .nodes import MIN_MEMORY_MIB, RESERVED_NAMES, DataDisk, NodeConfig
from .access import ConsoleConfig, SshConfig
from .images import ImageConfig, UpdatesConfig
from .infra import CorednsBinary, DnsConfig, NtpConfig
from .k3s import K3sArtifact, K3sConfig
from .firewall import FirewallAllow, FirewallConfig
from .stack import StackConfig, vrrp_priority

__all__ = [
    "fail",
    "ChartConfig",
    "GitOpsConfig",
    "PlatformConfig",
    "MonitoringConfig",
    "NodeExporterBinary",
    "CONFIG_KEY",
    "DOMAIN_LABEL",
    "EL9",
    "HOSTNAME",
    "IFNAME",
    "K3S_ROLES",
    "MAC",
    "MIN_MEMORY_MIB",
    "PACKAGED_OS",
    "RESERVED_NAMES",
    "UNPINNED_PATH",
    "UNPINNED_VERSION",
    "ConfigError",
    "CorednsBinary",
    "DataDisk",
    "Dhcp",
    "DnsConfig",
    "DnsHost",
    "ImageConfig",
    "K3sConfig",
    "FirewallAllow",
    "FirewallConfig",
    "LoadBalancerConfig",
    "NetworkConfig",
    "NetworkMode",
    "NodeConfig",
    "NtpConfig",
    "OsName",
    "Role",
    "ConsoleConfig",
    "SshConfig",
    "K3sArtifact",
    "PinnedFile",
    "ReleaseBinary",
    "StackConfig",
    "StackKeyError",
    "UpdatesConfig",
    "VrrpConfig",
    "check_local_files",
    "check_secret_keys",
    "check_stack_keys",
    "secret_value",
    "file_sha256",
    "load",
    "parse_config",
    "vrrp_priority",
]
