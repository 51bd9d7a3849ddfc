"""Helm values of the platform charts, as dicts, and the GitOps alert rules.

Each ``*_values(spec)`` returns the values handed to ``kubernetes.helm.v4.Chart``.
Key paths follow the charts' values.yaml (checked against the chart
directories in tests/test_platform_render.py): traefik 41.x, sealed-secrets
2.x, argo-cd 10.x, kube-prometheus-stack 88.x, longhorn 1.10+,
nfs-subdir-external-provisioner 4.x.

The provider renders charts with Helm hooks disabled, so every value that
only works through a hook is turned off here, and what the hook would have
made is a Secret the program creates (the ``*_SECRET`` names below).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal, Optional

import yaml

TRAEFIK_NAMESPACE = "kube-system"
TRAEFIK_DASHBOARD_MIDDLEWARE = "traefik-dashboard-auth"  # basic auth in front of the dashboard
SEALED_SECRETS_NAMESPACE = "kube-system"
SEALED_SECRETS_CONTROLLER = "sealed-secrets-controller"  # the name kubeseal looks for
# The controller decrypts with every Secret in its namespace carrying this label.
SEALING_KEY_LABEL = ("sealedsecrets.bitnami.com/sealed-secrets-key", "active")
ARGOCD_NAMESPACE = "argocd"
# With configs.secret.createSecret false the program creates argocd-secret:
# admin.password (bcrypt), admin.passwordMtime, server.secretkey.
ARGOCD_SECRET = "argocd-secret"
# Made by the redis-secret-init hook Job, which never runs: key "auth".
ARGOCD_REDIS_SECRET = ("argocd-redis", "auth")
MONITORING_NAMESPACE = "monitoring"
GRAFANA_ADMIN_KEYS = ("admin-user", "admin-password")  # keys of grafana.admin.existingSecret
LONGHORN_NAMESPACE = "longhorn-system"
LONGHORN_STORAGE_CLASS = "longhorn"
# With createDefaultDiskLabeledNodes, Longhorn puts its default disk only on nodes with this label.
LONGHORN_DISK_LABEL = "node.longhorn.io/create-default-disk=true"
LONGHORN_DATA_PATH = "/var/lib/longhorn"
K3S_KUBELET_ROOT = "/var/lib/kubelet"

# Route through websecure only, with TLS from Traefik's default certificate.
_TRAEFIK_TLS_ANNOTATIONS = {
    "traefik.ingress.kubernetes.io/router.entrypoints": "websecure",
    "traefik.ingress.kubernetes.io/router.tls": "true",
    # Traefik's Service is a NodePort behind HAProxy: it has no load-balancer
    # address to publish, so no Ingress ever gets .status.loadBalancer and
    # pulumi-kubernetes would wait 10 minutes for it on every create.
    "pulumi.com/skipAwait": "true",
}

ReclaimPolicy = Literal["Delete", "Retain"]


# ------------------------------------------------------------------ Traefik


@dataclass(frozen=True)
class TraefikSpec:
    """Traefik behind HAProxy: ``http_nodeport``/``https_nodeport`` are the ports HAProxy targets.

    ``default_cert_secret`` is a kubernetes.io/tls Secret and
    ``dashboard_auth_secret`` a kubernetes.io/basic-auth Secret, both in
    ``namespace``.
    """

    domain: str
    http_nodeport: int
    https_nodeport: int
    default_cert_secret: str
    dashboard_auth_secret: str
    ingress_class: str = "traefik"
    namespace: str = TRAEFIK_NAMESPACE
    replicas: int = 2


def traefik_values(spec: TraefikSpec) -> dict:
    if spec.http_nodeport == spec.https_nodeport:
        raise ValueError("traefik: the web and websecure NodePorts must differ")
    for port in (spec.http_nodeport, spec.https_nodeport):
        if not 30000 <= port <= 32767:
            raise ValueError(f"traefik: NodePort {port} is outside 30000-32767")
    middleware = {
        "apiVersion": "traefik.io/v1alpha1",
        "kind": "Middleware",
        "metadata": {"name": TRAEFIK_DASHBOARD_MIDDLEWARE, "namespace": spec.namespace},
        "spec": {"basicAuth": {"secret": spec.dashboard_auth_secret}},
    }
    return {
        "deployment": {"replicas": spec.replicas},
        # 41.x reads the Service type from service.spec.type; service.type is ignored silently.
        "service": {"spec": {"type": "NodePort"}},
        "ports": {
            "web": {
                "nodePort": spec.http_nodeport,
                "http": {"redirections": {"entryPoint": {"to": "websecure", "scheme": "https", "permanent": True}}},
            },
            "websecure": {"nodePort": spec.https_nodeport},
        },
        "ingressClass": {"enabled": True, "isDefaultClass": True, "name": spec.ingress_class},
        "tlsStore": {"default": {"defaultCertificate": {"secretName": spec.default_cert_secret}}},
        "ingressRoute": {
            "dashboard": {
                "enabled": True,
                "matchRule": f"Host(`traefik.{spec.domain}`)",
                "entryPoints": ["websecure"],
                "middlewares": [{"name": TRAEFIK_DASHBOARD_MIDDLEWARE}],
            }
        },
        "extraObjects": [middleware],
    }


# ------------------------------------------------------------------ Sealed Secrets


@dataclass(frozen=True)
class SealedSecretsSpec:
    """``key_secret``: the kubernetes.io/tls Secret holding the sealing key pair the program keeps.

    It carries ``SEALING_KEY_LABEL`` (see ``sealing_key_metadata``), so the
    controller decrypts with it; it never makes keys of its own
    (``keyrenewperiod`` 0), so every SealedSecret in Git stays sealed to the
    key in the program's state, and a rebuilt cluster decrypts them all.
    """

    key_secret: str
    namespace: str = SEALED_SECRETS_NAMESPACE
    fullname: str = SEALED_SECRETS_CONTROLLER


def sealing_key_metadata(spec: SealedSecretsSpec) -> dict:
    key, value = SEALING_KEY_LABEL
    return {"name": spec.key_secret, "namespace": spec.namespace, "labels": {key: value}}


def sealed_secrets_values(spec: SealedSecretsSpec) -> dict:
    return {
        "fullnameOverride": spec.fullname,
        "namespace": spec.namespace,
        # The prefix of keys the controller would generate; with renewal off it only names ours.
        "secretName": spec.key_secret,
        "keyrenewperiod": "0",
    }


# ------------------------------------------------------------------ Argo CD

# Argo CD 1.8+ no longer reports an Application's health to its parent; this
# is the documented customization that makes an app-of-apps wait for each
# sync wave's Applications to be Healthy before the next wave.
APPLICATION_HEALTH_LUA = """hs = {}
hs.status = "Progressing"
hs.message = ""
if obj.status ~= nil then
  if obj.status.health ~= nil then
    hs.status = obj.status.health.status
    if obj.status.health.message ~= nil then
      hs.message = obj.status.health.message
    end
  end
end
return hs
"""


@dataclass(frozen=True)
class ArgoCdSpec:
    """``keep_crds`` False lets ``pulumi destroy`` remove the CRDs (dev); True keeps them (prod)."""

    domain: str
    keep_crds: bool
    ingress_class: str = "traefik"
    namespace: str = ARGOCD_NAMESPACE
    # ServiceMonitors need the monitoring CRDs: on when kube-prometheus-stack is installed first.
    service_monitors: bool = True


def argocd_host(spec: ArgoCdSpec) -> str:
    return f"argocd.{spec.domain}"


def argocd_values(spec: ArgoCdSpec) -> dict:
    metrics = {"enabled": spec.service_monitors, "serviceMonitor": {"enabled": spec.service_monitors}}
    return {
        "global": {"domain": argocd_host(spec)},
        "crds": {"keep": spec.keep_crds},
        "configs": {
            # TLS ends at Traefik; the server speaks plain HTTP behind it.
            "params": {"server.insecure": True},
            "cm": {"resource.customizations.health.argoproj.io_Application": APPLICATION_HEALTH_LUA},
            # The admin password's bcrypt hash lives in argocd-secret, made by the program.
            "secret": {"createSecret": False},
        },
        "redisSecretInit": {"enabled": False},
        "dex": {"enabled": False},
        "server": {
            "ingress": {
                "enabled": True,
                "ingressClassName": spec.ingress_class,
                "hostname": argocd_host(spec),
                "annotations": dict(_TRAEFIK_TLS_ANNOTATIONS),
                "tls": False,
            },
            "metrics": metrics,
        },
        "controller": {"metrics": metrics},
        "repoServer": {"metrics": metrics},
        "applicationSet": {"metrics": metrics},
    }


# ------------------------------------------------------------------ GitOps alerts


@dataclass(frozen=True)
class GitOpsAlertsSpec:
    """The original's GitOps signals: sync failed, out of sync, degraded/unknown health, repository unreachable."""

    severity: str = "warning"
    out_of_sync_for: str = "15m"
    unhealthy_for: str = "10m"
    failure_window: str = "10m"
    absent_for: str = "15m"


def gitops_alert_groups(spec: GitOpsAlertsSpec) -> list[dict]:
    labels = {"severity": spec.severity}

    def rule(name: str, expr: str, summary: str, description: str, for_: Optional[str] = None) -> dict:
        r = {"alert": name, "expr": expr, "labels": dict(labels), "annotations": {"summary": summary, "description": description}}
        if for_:
            r["for"] = for_
        return r

    w = spec.failure_window
    rules = [
        rule(
            "ArgoCdAppSyncFailed",
            f'sum by (name, project) (increase(argocd_app_sync_total{{phase=~"Error|Failed"}}[{w}])) > 0',
            "Argo CD could not sync an Application",
            f"Application {{{{ $labels.name }}}} (project {{{{ $labels.project }}}}) had a failed sync in the last {w}.",
        ),
        rule(
            "ArgoCdAppOutOfSync",
            'argocd_app_info{sync_status="OutOfSync"} == 1',
            "An Application differs from Git",
            f"Application {{{{ $labels.name }}}} has been OutOfSync for {spec.out_of_sync_for}.",
            spec.out_of_sync_for,
        ),
        rule(
            "ArgoCdAppDegraded",
            'argocd_app_info{health_status="Degraded"} == 1',
            "An Application is Degraded",
            f"Application {{{{ $labels.name }}}} has been Degraded for {spec.unhealthy_for}.",
            spec.unhealthy_for,
        ),
        rule(
            "ArgoCdAppHealthUnknown",
            'argocd_app_info{health_status="Unknown"} == 1',
            "An Application's health is Unknown",
            f"Application {{{{ $labels.name }}}} has had Unknown health for {spec.unhealthy_for}.",
            spec.unhealthy_for,
        ),
        rule(
            "ArgoCdRepoUnreachable",
            f"sum by (repo) (increase(argocd_git_fetch_fail_total[{w}])) > 0"
            f" or sum by (repo) (increase(argocd_git_lsremote_fail_total[{w}])) > 0",
            "Argo CD cannot reach a Git repository",
            f"Fetching {{{{ $labels.repo }}}} failed in the last {w}; Applications from it are not updated.",
        ),
        # Without the controller's metrics every rule above is silent.
        rule(
            "ArgoCdMetricsAbsent",
            "absent(argocd_app_info)",
            "No Argo CD Application metrics",
            f"Prometheus has scraped no argocd_app_info for {spec.absent_for}: the GitOps alerts cannot fire.",
            spec.absent_for,
        ),
    ]
    return [{"name": "microcloud-gitops", "rules": rules}]


def render_gitops_rules(spec: GitOpsAlertsSpec) -> str:
    """The rule groups as a Prometheus rules file (what ``promtool check rules`` reads)."""
    return yaml.safe_dump({"groups": gitops_alert_groups(spec)}, sort_keys=True, default_flow_style=False)


# ------------------------------------------------------------------ kube-prometheus-stack


@dataclass(frozen=True)
class ScrapeTarget:
    """A VM outside Kubernetes whose node-exporter Prometheus scrapes."""

    name: str
    ip: str
    role: str


@dataclass(frozen=True)
class MonitoringSpec:
    """kube-prometheus-stack.

    ``storage_class`` None: no PVCs (an API server without a provisioner).
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
    alerts: GitOpsAlertsSpec = field(default_factory=GitOpsAlertsSpec)
    ingress_class: str = "traefik"
    namespace: str = MONITORING_NAMESPACE
    fullname: str = "kube-prometheus-stack"
    grafana_storage: str = "10Gi"
    prometheus_storage: str = "20Gi"
    retention: str = "10d"
    node_exporter_port: int = 9100


def admission_secret(spec: MonitoringSpec) -> str:
    return f"{spec.fullname}-admission"


def node_exporter_scrape_configs(spec: MonitoringSpec) -> list[dict]:
    """One static target per VM, labelled with its name and role; sorted by name for a stable diff."""
    targets = sorted(spec.node_exporter_targets, key=lambda t: t.name)
    for t in targets:
        ipaddress.IPv4Address(t.ip)
    if len({t.name for t in targets}) != len(targets):
        raise ValueError("monitoring: scrape target names must be unique")
    if not targets:
        return []
    return [
        {
            "job_name": "microcloud-node-exporter",
            "static_configs": [
                {"targets": [f"{t.ip}:{spec.node_exporter_port}"], "labels": {"node": t.name, "role": t.role}}
                for t in targets
            ],
        }
    ]


def monitoring_values(spec: MonitoringSpec) -> dict:
    if spec.admission_webhooks and not spec.webhook_ca_bundle:
        raise ValueError("monitoring: admission webhooks need webhook_ca_bundle (the chart's certificate Jobs never run)")
    webhooks: dict = {"enabled": spec.admission_webhooks, "patch": {"enabled": False}}
    if spec.admission_webhooks:
        webhooks["caBundle"] = spec.webhook_ca_bundle
    grafana: dict = {
        "admin": {
            "existingSecret": spec.grafana_admin_secret,
            "userKey": GRAFANA_ADMIN_KEYS[0],
            "passwordKey": GRAFANA_ADMIN_KEYS[1],
        },
        "ingress": {
            "enabled": True,
            "ingressClassName": spec.ingress_class,
            "hosts": [f"grafana.{spec.domain}"],
            "annotations": dict(_TRAEFIK_TLS_ANNOTATIONS),
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


# ------------------------------------------------------------------ Longhorn


@dataclass(frozen=True)
class LonghornSpec:
    """``data_path``: where Longhorn keeps replicas on its nodes (the mounted data disk).

    ``allow_uninstall`` sets Longhorn's deleting-confirmation flag, without
    which it refuses removal (dev: true, so ``pulumi destroy`` works).
    """

    replica_count: int
    reclaim_policy: ReclaimPolicy
    allow_uninstall: bool
    data_path: str = LONGHORN_DATA_PATH
    default_class: bool = True
    namespace: str = LONGHORN_NAMESPACE


def longhorn_values(spec: LonghornSpec) -> dict:
    if spec.replica_count < 1:
        raise ValueError("longhorn: at least one replica")
    if not spec.data_path.startswith("/"):
        raise ValueError(f"longhorn: data path {spec.data_path!r} is not absolute")
    return {
        "persistence": {
            "defaultClass": spec.default_class,
            "defaultClassReplicaCount": spec.replica_count,
            "reclaimPolicy": spec.reclaim_policy,
        },
        "defaultSettings": {
            "defaultDataPath": spec.data_path,
            # Only nodes labelled LONGHORN_DISK_LABEL store replicas.
            "createDefaultDiskLabeledNodes": True,
            "defaultReplicaCount": spec.replica_count,
            "deletingConfirmationFlag": spec.allow_uninstall,
        },
        # A pre-upgrade hook Job: hooks never run under the provider.
        "preUpgradeChecker": {"jobEnabled": False},
        "csi": {"kubeletRootDir": K3S_KUBELET_ROOT},
    }


# ------------------------------------------------------------------ NFS provisioner


@dataclass(frozen=True)
class NfsProvisionerSpec:
    """nfs-subdir-external-provisioner: one StorageClass whose volumes are directories of one export."""

    server: str
    path: str
    reclaim_policy: ReclaimPolicy
    storage_class: str = "nfs"
    archive_on_delete: bool = True
    mount_options: tuple[str, ...] = ("nfsvers=4.1",)


def nfs_provisioner_values(spec: NfsProvisionerSpec) -> dict:
    ipaddress.IPv4Address(spec.server)
    if not spec.path.startswith("/"):
        raise ValueError(f"nfs: export path {spec.path!r} is not absolute")
    return {
        "nfs": {
            "server": spec.server,
            "path": spec.path,
            "mountOptions": list(spec.mount_options),
            # The provisioner's view of the export itself, never its data.
            "reclaimPolicy": "Retain",
        },
        "storageClass": {
            "name": spec.storage_class,
            "defaultClass": False,
            "reclaimPolicy": spec.reclaim_policy,
            "archiveOnDelete": spec.archive_on_delete,
            "accessModes": "ReadWriteMany",
        },
    }
