"""What the cluster and platform render tests share: the stack configs, the renderers' specs built from them, tools.

Used by tests/test_k3s_render.py and the tests/test_platform_*_render.py files
(one per values module of components/render/platform/, and one for the chart
pins and the values checked against the charts themselves).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

from components.config import StackConfig, parse_config
from components.render import platform as pv
from components.render.platform.image_updater import ImageUpdaterSpec, RegistryCredential, image_updater_values
from support.harness import EDGE_STACKS, stack_model

CONFIGS: dict[str, StackConfig] = {n: parse_config(stack_model(n)) for n in ("dev", "prod", *EDGE_STACKS)}
NAMES = sorted(CONFIGS)


# ------------------------------------------------------------------ specs from the stack configs
# (what components/specs.py will do once the platform layer is wired in)


def traefik_spec(cfg: StackConfig) -> pv.TraefikSpec:
    lb = cfg.load_balancer
    return pv.TraefikSpec(
        domain=cfg.domain,
        http_nodeport=lb.ingress_http_nodeport,
        https_nodeport=lb.ingress_https_nodeport,
        default_cert_secret="traefik-default-cert",
        dashboard_auth_secret="traefik-dashboard-auth",
    )


def monitoring_spec(cfg: StackConfig, **kw) -> pv.MonitoringSpec:
    vms = cfg.nodes_with("load_balancer", "infra")
    args = dict(
        domain=cfg.domain,
        grafana_admin_secret="grafana-admin",
        node_exporter_targets=tuple(pv.ScrapeTarget(n.name, f"{n.ip}:9100", n.role) for n in vms),
        storage_class=pv.LONGHORN_STORAGE_CLASS,
        admission_webhooks=False,
        grafana_claim="grafana",
    )
    return pv.MonitoringSpec(**{**args, **kw})


def longhorn_spec(cfg: StackConfig) -> pv.LonghornSpec:
    nodes = [n for n in cfg.nodes if n.uses_longhorn]
    return pv.LonghornSpec(replica_count=max(1, min(3, len(nodes))), reclaim_policy="Retain", allow_uninstall=False)


def nfs_spec(cfg: StackConfig) -> pv.NfsProvisionerSpec:
    storage = cfg.nodes_with("storage") or cfg.servers
    return pv.NfsProvisionerSpec(server=str(storage[0].ip), path="/srv/nfs/shared", reclaim_policy="Retain")


def chart_values(cfg: StackConfig) -> dict[str, dict]:
    """Chart name (as in ``<name>-<version>/`` of the chart directory) -> our values."""
    return {
        "traefik": pv.traefik_values(traefik_spec(cfg)),
        "sealed-secrets": pv.sealed_secrets_values(pv.SealedSecretsSpec(key_secret="sealed-secrets-key-microcloud")),
        "argo-cd": pv.argocd_values(pv.ArgoCdSpec(domain=cfg.domain, keep_crds=True)),
        "kube-prometheus-stack": pv.monitoring_values(monitoring_spec(cfg)),
        "longhorn": pv.longhorn_values(longhorn_spec(cfg)),
        "nfs-subdir-external-provisioner": pv.nfs_provisioner_values(nfs_spec(cfg)),
        "argocd-image-updater": image_updater_values(ImageUpdaterSpec(registries=(RegistryCredential("ghcr.io"),))),
    }


# ------------------------------------------------------------------ the real readers


def need(tool: str) -> str:
    path = shutil.which(tool)
    assert path, f"{tool} is not installed; run .ci/run (it installs the validators from Debian packages)"
    return path


def render_gitops_rules(spec: pv.GitOpsAlertsSpec) -> str:
    """The rule groups as a Prometheus rules file (what ``promtool check rules`` reads)."""
    return yaml.safe_dump({"groups": pv.gitops_alert_groups(spec)}, sort_keys=True, default_flow_style=False)


# ------------------------------------------------------------------ the charts

CHART_DIR = Path(os.environ.get("MICROCLOUD_CHART_DIR") or Path.home() / ".cache" / "microcloud-charts")
