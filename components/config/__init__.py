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
    services       images, ssh, dns/CoreDNS, ntp, k3s, Flatcar updates
    monitoring     the node_exporter binary of the VMs outside the cluster
    platform       charts, GitOps, the platform layer's settings
    stack          StackConfig and vrrp_priority
    checks         cross-field checks
    errors         ConfigError, key naming (nodes by name), suggestions
    loader         parse_config, load, the stack-key check, local files
    doc            the README config table, generated from the model
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
from .loader import check_local_files, check_stack_keys, fail, file_sha256, load, parse_config
from .network import Dhcp, DnsHost, NetworkConfig
from .nodes import MIN_MEMORY_MIB, RESERVED_NAMES, DataDisk, NodeConfig
from .services import CorednsBinary, DnsConfig, ImageConfig, K3sConfig, NtpConfig, SshConfig, UpdatesConfig
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
    "LoadBalancerConfig",
    "NetworkConfig",
    "NetworkMode",
    "NodeConfig",
    "NtpConfig",
    "OsName",
    "Role",
    "SshConfig",
    "StackConfig",
    "StackKeyError",
    "UpdatesConfig",
    "VrrpConfig",
    "check_local_files",
    "check_stack_keys",
    "file_sha256",
    "load",
    "parse_config",
    "vrrp_priority",
]
