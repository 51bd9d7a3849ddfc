"""kube-prometheus-stack's Helm values (chart 88.x): Grafana's admin Secret and volume, the VMs' node-exporters, the GitOps alerts."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Mapping, Optional

from .common import TRAEFIK_TLS_ANNOTATIONS
from .gitops import GitOpsAlertsSpec, gitops_alert_groups

MONITORING_NAMESPACE = "monitoring"
GRAFANA_ADMIN_KEYS = ("admin-user", "admin-password")  # keys of grafana.admin.existingSecret


@dataclass(frozen=True)
class ScrapeTarget:
    """A VM outside Kubernetes whose node-exporter Prometheus scrapes: ``address`` is "ip:port"."""

    name: str
    address: str
    role: str = ""


def scrape_targets(targets: Mapping[str, str], role: str = "") -> tuple[ScrapeTarget, ...]:
    """Node name -> "ip:9100" (PlatformArgs.scrape_targets) as ScrapeTargets."""
    return tuple(ScrapeTarget(name, addr, role) for name, addr in targets.items())


def _check_address(t: ScrapeTarget) -> None:
    host, sep, port = t.address.rpartition(":")
    try:
        ipaddress.IPv4Address(host)
        ok = sep == ":" and port.isdigit() and 0 < int(port) < 65536
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"monitoring: scrape target {t.name}: {t.address!r} is not ip:port")


@dataclass(frozen=True)
class MonitoringSpec:
    """kube-prometheus-stack.

    ``storage_class`` None: no PVCs (an API server without a provisioner).
    ``grafana_claim``: an existing PVC (made by the program, so it can be
    protected) that Grafana keeps its database on; None with a storage class:
    the chart makes one. ``retain_volumes``: Prometheus' PVCs outlive its
    StatefulSet (prod); False deletes them with it (dev).
    ``admission_webhooks`` needs ``webhook_ca_bundle`` and a Secret
    ``admission_secret(spec)`` (keys ca, cert, key) made by the program: the
    chart's own certificate Jobs are hooks and never run.
    """

    domain: str
    grafana_admin_secret: str
    node_exporter_targets: tuple[ScrapeTarget, ...]
    storage_class: Optional[str]
    admission_webhooks: bool
    webhook_ca_bundle: Optional[str] = None
    grafana_claim: Optional[str] = None
    retain_volumes: bool = True
    alerts: GitOpsAlertsSpec = field(default_factory=GitOpsAlertsSpec)
    ingress_class: str = "traefik"
    namespace: str = MONITORING_NAMESPACE
    fullname: str = "kube-prometheus-stack"
    grafana_storage: str = "10Gi"
    prometheus_storage: str = "20Gi"
    retention: str = "10d"
    # On Grafana's pod: a changed value restarts it (it reads the admin Secret at start).
    grafana_pod_annotations: Mapping[str, str] = field(default_factory=dict)


def admission_secret(spec: MonitoringSpec) -> str:
    return f"{spec.fullname}-admission"


NODE_EXPORTER_JOB = "microcloud-node-exporter"


def node_exporter_scrape_configs(spec: MonitoringSpec) -> list[dict]:
    """One static target per VM, its node name as the ``instance`` label; sorted by name for a stable diff."""
    targets = sorted(spec.node_exporter_targets, key=lambda t: t.name)
    for t in targets:
        _check_address(t)
    if len({t.name for t in targets}) != len(targets):
        raise ValueError("monitoring: scrape target names must be unique")
    if not targets:
        return []

    def labels(t: ScrapeTarget) -> dict:
        out = {"instance": t.name, "node": t.name}
        if t.role:
            out["role"] = t.role
        return out

    return [{"job_name": NODE_EXPORTER_JOB,
             "static_configs": [{"targets": [t.address], "labels": labels(t)} for t in targets]}]


def grafana_claim(spec: MonitoringSpec) -> dict:
    """The PVC Grafana keeps its database on (``grafana_claim``), on ``storage_class``."""
    if not (spec.grafana_claim and spec.storage_class):
        raise ValueError("monitoring: a Grafana claim needs grafana_claim and storage_class")
    return {
        "metadata": {"name": spec.grafana_claim, "namespace": spec.namespace},
        "spec": {
            "storageClassName": spec.storage_class,
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": spec.grafana_storage}},
        },
    }


def monitoring_values(spec: MonitoringSpec) -> dict:
    if spec.admission_webhooks and not spec.webhook_ca_bundle:
        raise ValueError("monitoring: admission webhooks need webhook_ca_bundle (the chart's certificate Jobs never run)")
    webhooks: dict = {"enabled": spec.admission_webhooks, "patch": {"enabled": False}}
    if spec.admission_webhooks:
        webhooks["caBundle"] = spec.webhook_ca_bundle
    grafana: dict = {
        "podAnnotations": dict(spec.grafana_pod_annotations),
        "admin": {
            "existingSecret": spec.grafana_admin_secret,
            "userKey": GRAFANA_ADMIN_KEYS[0],
            "passwordKey": GRAFANA_ADMIN_KEYS[1],
        },
        "ingress": {
            "enabled": True,
            "ingressClassName": spec.ingress_class,
            "hosts": [f"grafana.{spec.domain}"],
            "annotations": dict(TRAEFIK_TLS_ANNOTATIONS),
        },
    }
    prometheus_spec: dict = {
        "retention": spec.retention,
        "additionalScrapeConfigs": node_exporter_scrape_configs(spec),
        # Select every ServiceMonitor/PodMonitor/PrometheusRule, not only this
        # release's: Argo CD's ServiceMonitors and the apps' rules come from elsewhere.
        "serviceMonitorSelectorNilUsesHelmValues": False,
        "podMonitorSelectorNilUsesHelmValues": False,
        "ruleSelectorNilUsesHelmValues": False,
    }
    if spec.storage_class:
        grafana["persistence"] = {
            "enabled": True,
            "type": "pvc",
            "storageClassName": spec.storage_class,
            "accessModes": ["ReadWriteOnce"],
            "size": spec.grafana_storage,
        }
        if spec.grafana_claim:
            grafana["persistence"]["existingClaim"] = spec.grafana_claim
        # A ReadWriteOnce volume attaches to one node: the old pod must go before the new one starts.
        grafana["deploymentStrategy"] = {"type": "Recreate"}
        prometheus_spec["storageSpec"] = {
            "volumeClaimTemplate": {
                "spec": {
                    "storageClassName": spec.storage_class,
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": spec.prometheus_storage}},
                }
            }
        }
        # StatefulSet PVCs outlive the StatefulSet unless told otherwise.
        when = "Retain" if spec.retain_volumes else "Delete"
        prometheus_spec["persistentVolumeClaimRetentionPolicy"] = {"whenDeleted": when, "whenScaled": "Retain"}
    return {
        "fullnameOverride": spec.fullname,
        "prometheusOperator": {"admissionWebhooks": webhooks, "tls": {"enabled": spec.admission_webhooks}},
        "grafana": grafana,
        "prometheus": {"prometheusSpec": prometheus_spec},
        "additionalPrometheusRulesMap": {"microcloud-gitops": {"groups": gitops_alert_groups(spec.alerts)}},
        # K3s runs these inside its one process: there are no pods for the
        # chart's Services to select, and their "down" alerts would fire forever.
        "kubeControllerManager": {"enabled": False},
        "kubeScheduler": {"enabled": False},
        "kubeProxy": {"enabled": False},
        "kubeEtcd": {"enabled": False},
    }
