"""kube-prometheus-stack: its namespace, Grafana's admin Secret and volume (a Longhorn PVC), the chart."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pulumi
import pulumi_kubernetes as k8s

from components.render.platform.longhorn import LONGHORN_STORAGE_CLASS
from components.render.platform.monitoring import (GRAFANA_ADMIN_KEYS, MONITORING_NAMESPACE, MonitoringSpec, grafana_claim,
                                                   monitoring_values, scrape_targets)

if TYPE_CHECKING:
    from .component import Platform

GRAFANA_ADMIN_SECRET = "grafana-admin"
GRAFANA_CLAIM = "grafana"


def create(p: "Platform") -> None:
    """Sets ``grafana_claim`` (the PVC) and ``grafana_admin_password``; needs Longhorn's chart and StorageClass first."""
    n, a = p._name, p._args
    ns = p._namespace("monitoring", MONITORING_NAMESPACE)
    namespace = ns.metadata.name
    password = p._password("grafana-admin", 24)
    user_key, password_key = GRAFANA_ADMIN_KEYS
    admin = k8s.core.v1.Secret(
        f"{n}-grafana-admin",
        metadata={"name": GRAFANA_ADMIN_SECRET, "namespace": namespace},
        type="Opaque",
        string_data={user_key: "admin", password_key: pulumi.Output.secret(password.result)},
        opts=p._k8s_opts(delete_before_replace=True),
    )
    spec = MonitoringSpec(
        domain=a.domain,
        grafana_admin_secret=GRAFANA_ADMIN_SECRET,
        node_exporter_targets=scrape_targets(a.scrape_targets, "vm"),
        storage_class=LONGHORN_STORAGE_CLASS,
        # The chart's webhook certificates come from hook Jobs that never run.
        admission_webhooks=False,
        grafana_claim=GRAFANA_CLAIM,
        retain_volumes=a.protect_data,
        grafana_pod_annotations=p._restart_on("grafana-admin"),
    )
    claim = grafana_claim(spec)
    pvc = k8s.core.v1.PersistentVolumeClaim(
        f"{n}-grafana",
        metadata={**claim["metadata"], "namespace": namespace},
        spec={**claim["spec"], "storageClassName": p.storage_class.metadata.name},
        opts=p._k8s_opts(depends_on=[p.longhorn], **p._data_opts()),
    )
    p.grafana_claim = pvc
    p._chart("kube-prometheus-stack", "kube-prometheus-stack", namespace, monitoring_values(spec),
             depends_on=[admin, pvc, p.longhorn, p.storage_class, *p._network_policies("monitoring", ns)])
    p.grafana_admin_password = pulumi.Output.secret(password.result)
