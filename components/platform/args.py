"""The platform layer's inputs (PlatformArgs), every mistake in them found before any resource (check_args), and the stack config mapped onto them (platform_args)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional

import pulumi
import pulumi_kubernetes as k8s

from components.chart_pins import CHARTS
from components.config.platform import ROTATABLE, check_chart_version, check_keepers, check_known_charts
from components.render.node_exporter import NODE_EXPORTER_PORT
from components.render.platform.gitops import GitOpsSpec
from components.render.platform.longhorn import LONGHORN_DATA_PATH

from .charts import ChartSource, chart_sources, needed_charts

if TYPE_CHECKING:
    from components.config import StackConfig



@dataclass(frozen=True)
class DefaultCertificate:
    """A supplied default TLS certificate for Traefik (PEM); the key is secret."""

    cert_pem: pulumi.Input[str]
    key_pem: pulumi.Input[str]


@dataclass(frozen=True)
class GitOps:
    """The Git repository Argo CD's root Application follows: ``<path>/root`` holds the ApplicationSet.

    ``app_repos``: more repositories the apps' project allows (the root's allows ``repo_url`` only).
    """

    repo_url: str
    revision: str
    path: str = "gitops"
    app_repos: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlatformArgs:
    """The platform layer's inputs (see docs/platform.md).

    ``http_nodeport``/``https_nodeport`` are the NodePorts HAProxy targets
    (cfg.load_balancer.ingress_http_nodeport / ingress_https_nodeport).
    ``charts``: chart name -> ChartSource (``chart_sources``); every needed chart pinned.
    ``kubeconfig`` (secret) runs Longhorn's uninstall on destroy; needed
    unless ``protect_data``.
    ``service_monitors`` needs the monitoring CRDs (Argo CD then waits for
    kube-prometheus-stack). ``skip_await`` does not wait for workloads to
    become ready (an API server with no nodes).
    ``argocd_ci_account``: the local account CI syncs with; its token is ``Platform.argocd_ci_token``.
    ``argocd_password_mtime``: bump it with the password's rotation, Argo CD
    then rejects tokens issued before it; a fixed value keeps re-previews empty.
    ``protect_data`` (prod): the sealing key, Longhorn and Grafana's volume are
    protected and kept on delete; storage classes retain volumes.
    ``rotation``: keeper per generated password (keys ``ROTATABLE``); a new
    value makes a new password on the next ``up``.
    ``values``: extra Helm values per chart, merged over ours (site tweaks).
    ``network_policies``: the program's NetworkPolicies (render/platform/network_policies.py).
    """

    domain: str
    http_nodeport: int
    https_nodeport: int
    provider: k8s.Provider
    charts: Mapping[str, ChartSource] = field(default_factory=lambda: chart_sources(None))
    kubeconfig: Optional[pulumi.Input[str]] = None
    argocd: bool = True
    keep_crds: bool = False
    service_monitors: bool = True
    skip_await: bool = False
    traefik_replicas: int = 2
    default_certificate: Optional[DefaultCertificate] = None
    argocd_password_mtime: str = "2026-01-01T00:00:00Z"
    # Argo CD's CI account (API tokens only; get and sync on the apps' project); None: none.
    argocd_ci_account: Optional[str] = "github-actions"
    # Argo CD Image Updater (with argocd), for the apps that opt in (gitops/apps/<app>/image-updates.yaml).
    image_updater: bool = True
    # registry host -> (user, token: secret) Image Updater lists tags with (k3s.registries' auth).
    registry_credentials: Mapping[str, tuple[str, pulumi.Input[str]]] = field(default_factory=dict)
    longhorn_data_path: str = LONGHORN_DATA_PATH
    longhorn_replicas: int = 3
    nfs_server: Optional[str] = None
    nfs_path: str = "/srv/nfs"
    scrape_targets: Mapping[str, str] = field(default_factory=dict)
    gitops: Optional[GitOps] = None
    protect_data: bool = False
    rotation: Mapping[str, str] = field(default_factory=dict)
    values: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    network_policies: bool = True


def check_args(args: PlatformArgs) -> None:
    """Every mistake in the inputs as one ValueError, before any resource is registered.

    PlatformArgs may come from a program without the stack config: the chart, keeper and
    values rules are the config's own functions (components/config/platform.py), not copies.
    """
    def fail(what: str, exc: ValueError) -> None:
        raise ValueError(f"platform: {what}{exc}") from None

    for chart in needed_charts(args):
        src = args.charts.get(chart)
        if src is None:
            raise ValueError(f"platform: chart {chart}: no source given (pinned version {CHARTS[chart].version})")
        try:
            check_chart_version(src.version or "")
        except ValueError as exc:
            fail(f"chart {chart}: ", exc)
    for what, check, names in (("rotation: ", check_keepers, args.rotation), ("values: ", check_known_charts, args.values)):
        try:
            check(names)
        except ValueError as exc:
            fail(what, exc)
    if not args.protect_data and args.kubeconfig is None:
        raise ValueError("platform: kubeconfig is needed to run Longhorn's uninstall on destroy (or set protect_data)")
    if args.gitops is not None and not args.argocd:
        raise ValueError("platform: gitops needs argocd")
    if args.gitops is not None:
        g = args.gitops
        try:
            GitOpsSpec(repo_url=g.repo_url, revision=g.revision, path=g.path, app_repos=tuple(g.app_repos))
        except ValueError as exc:
            fail("", exc)


def platform_args(
    cfg: "StackConfig",
    *,
    provider: k8s.Provider,
    kubeconfig: pulumi.Input[str],
    nfs_path: Optional[str],
    longhorn_path: str,
    monitored: Iterable[str],
    registry_passwords: Optional[Mapping[str, pulumi.Input[str]]] = None,
) -> PlatformArgs:
    """The stack config as PlatformArgs.

    ``nfs_path``/``longhorn_path``: what the Storage component mounted (no
    NFS export: no NFS StorageClass); ``monitored``: the nodes outside the
    cluster whose node_exporter Prometheus scrapes; ``registry_passwords``: k3s.registries' password keys
    -> their secret values (the same the nodes get), for Image Updater.
    """
    pc = cfg.platform
    # Chart sources: the stack's overrides, else $MICROCLOUD_CHART_DIR/<name>-<version>
    # (an air-gapped site's unpacked charts), else each chart's pinned repository.
    chart_root = os.environ.get("MICROCLOUD_CHART_DIR") or os.path.expanduser("~/.cache/microcloud-charts")
    charts = chart_sources(
        chart_root,
        {
            name: ChartSource(
                version=c.version or CHARTS[name].version,
                repo=c.repo,
                path=os.path.expanduser(c.path) if c.path else None,
            )
            for name, c in pc.charts.items()
        },
    )
    nodes_by_name = {n.name: n for n in cfg.nodes}
    longhorn_nodes = [n for n in cfg.nodes if n.uses_longhorn]
    storage_node = next(iter(cfg.nodes_with("storage")), None)
    return PlatformArgs(
        domain=cfg.domain,
        # The NodePorts HAProxy targets: one source of truth.
        http_nodeport=cfg.load_balancer.ingress_http_nodeport,
        https_nodeport=cfg.load_balancer.ingress_https_nodeport,
        provider=provider,
        charts=charts,
        kubeconfig=kubeconfig,
        nfs_server=str(storage_node.ip) if storage_node is not None and nfs_path else None,
        nfs_path=nfs_path or "/srv/nfs",
        longhorn_data_path=longhorn_path,
        longhorn_replicas=pc.longhorn_replicas or max(1, min(3, len(longhorn_nodes))),
        # The VMs outside the cluster, by their static addresses.
        scrape_targets={name: f"{nodes_by_name[name].ip}:{NODE_EXPORTER_PORT}" for name in monitored},
        gitops=GitOps(repo_url=pc.gitops.repo_url, revision=pc.gitops.revision, path=pc.gitops.path,
                      app_repos=tuple(pc.gitops.app_repos)) if pc.gitops else None,
        protect_data=cfg.protect_data,
        rotation=dict(pc.rotation),
        argocd_password_mtime=pc.argocd_password_mtime,
        argocd_ci_account=pc.ci_account,
        image_updater=pc.image_updater,
        registry_credentials={
            host: (c.auth.username, (registry_passwords or {})[c.auth.password_key])
            for host, c in sorted(cfg.k3s.registries.configs.items())
            if c.auth is not None and host != "*" and c.auth.password_key in (registry_passwords or {})
        },
        values={name: dict(v) for name, v in pc.values.items()},
        network_policies=pc.network_policies,
    )
