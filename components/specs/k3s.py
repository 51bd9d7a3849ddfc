"""K3s: the bootstrap server, the install order, each node's config.yaml spec and binary directory, the registries file."""

from __future__ import annotations

from typing import Mapping, Optional

from ..config import K3S_ROLES, NodeConfig, StackConfig
from ..render import budget, k3s
from ..render.k3s_registries import Mirror, RegistriesSpec, RegistryAuth, RegistryConfig
from ..render.k3s_hardening import SERVER_TAINT, AuditLog, Hardening
from ..render.platform.longhorn import LONGHORN_DISK_LABEL


def k3s_bootstrap_server(cfg: StackConfig) -> NodeConfig:
    """The server that initializes etcd: the first by name, so reordering the node list moves nothing."""
    return min(cfg.servers, key=lambda n: n.name)


def k3s_budget(cfg: StackConfig) -> budget.BudgetSpec:
    """The disruption budget's pools: ``server`` (one slot: etcd keeps quorum), ``agent`` (k3s.disruption.max_unavailable)."""
    d = cfg.k3s.disruption
    agents = [n for n in cfg.nodes_with(*K3S_ROLES) if n.role != "server"]
    return budget.BudgetSpec(
        pools=(("server", 1), ("agent", d.agent_slots(len(agents)))),
        lease_seconds=d.lease_seconds,
        wait_seconds=d.wait_seconds,
        failed_hold_seconds=d.failed_hold_seconds,
    )


def budget_pool(node: NodeConfig) -> str:
    """The pool a K3s node's disruptions take a slot of."""
    return "server" if node.role == "server" else "agent"


def k3s_install_waves(cfg: StackConfig) -> tuple[list[NodeConfig], list[NodeConfig]]:
    """The servers, installed one at a time (servers 2..n, then the bootstrap server), and the agents, all at once after them."""
    order = k3s_install_order(cfg)
    return [n for n in order if n.role == "server"], [n for n in order if n.role != "server"]


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
    taints = tuple(node.taints)
    role = "server" if node.role == "server" else "agent"
    if role == "server" and servers_tainted(cfg) and SERVER_TAINT not in taints:
        taints = (*taints, SERVER_TAINT)
    return k3s.K3sNodeSpec(
        role=role,
        node_name=node.name,
        node_ip=str(node.ip),
        api_vip=str(lb.api_vip),
        api_port=lb.api_port,
        domain=cfg.domain,
        cluster_init=bootstrap or lone,
        node_labels=tuple(f"{k}={v}" for k, v in sorted(labels.items())),
        node_taints=taints,
        hardening=k3s_hardening(cfg),
        extra_args=dict(getattr(cfg.k3s.extra_args, role)),
        version=cfg.k3s.version,
    )


def servers_tainted(cfg: StackConfig) -> bool:
    """Servers carry the control-plane NoSchedule taint unless k3s.hardening.workloads_on_servers."""
    return not cfg.k3s.hardening.workloads_on_servers


def k3s_hardening(cfg: StackConfig) -> Hardening:
    """The CIS profile of k3s.hardening, as the K3s renderers take it."""
    h = cfg.k3s.hardening
    ps, log = h.pod_security, h.audit_log
    return Hardening(
        secrets_encryption=h.secrets_encryption,
        protect_kernel_defaults=h.protect_kernel_defaults,
        enforce=ps.enforce,
        audit=ps.audit,
        warn=ps.warn,
        exemptions=dict(ps.exempt_namespaces),
        audit_log=AuditLog(max_age_days=log.max_age_days, max_backups=log.max_backups, max_size_mib=log.max_size_mib) if log.enabled else None,
    )


def k3s_bin_dir(node: NodeConfig) -> str:
    return k3s.FLATCAR_BIN_DIR if node.is_flatcar else k3s.BIN_DIR


def k3s_registries(cfg: StackConfig, passwords: Mapping[str, str]) -> RegistriesSpec:
    """registries.yaml of every K3s node: k3s.registries with each ``password_key`` resolved from ``passwords`` (key -> secret value)."""
    reg = cfg.k3s.registries
    missing = sorted(set(reg.secret_keys()) - set(passwords))
    if missing:
        raise ValueError(f"k3s.registries: no value for the secret keys {missing}")
    configs = {}
    for host, c in reg.configs.items():
        auth = None if c.auth is None else RegistryAuth(username=c.auth.username, password=passwords[c.auth.password_key])
        configs[host] = RegistryConfig(auth=auth, ca_file=c.ca_file, insecure_skip_verify=c.insecure_skip_verify)
    mirrors = {name: Mirror(endpoints=tuple(m.endpoints), rewrites=dict(m.rewrites)) for name, m in reg.mirrors.items()}
    return RegistriesSpec(mirrors=mirrors, configs=configs)


def needed_parallel(cfg: StackConfig) -> int:
    """What `pulumi up --parallel` a first up of ``cfg`` needs for its waves: two steps in flight per node,
    at least 64 (tests/bench/day1_bench.py: 3 servers + 100 workers lose 8% at 128, 36% at 64, 480% at 8)."""
    return max(64, 2 * len(cfg.nodes))


def parallel_warning(cfg: StackConfig, parallel: object) -> Optional[str]:
    """The warning for an engine that runs fewer steps at once than day 1's agent wave has agents; None otherwise."""
    agents = k3s_install_waves(cfg)[1]
    if not isinstance(parallel, int) or isinstance(parallel, bool) or not 0 < parallel < len(agents):
        return None
    return (f"pulumi runs at most {parallel} steps at once (--parallel): the {len(agents)} agents of day 1 join in "
            f"batches of that size; run `pulumi up --parallel {needed_parallel(cfg)}` (docs/scale.md#day-1-two-waves)")
