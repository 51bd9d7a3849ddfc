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
import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, Mapping, Optional

import yaml


# ------------------------------------------------------------------ chart pins


@dataclass(frozen=True)
class ChartPin:
    """A chart this program is written and tested against: its name, exact version and public chart repository."""

    name: str
    version: str
    repo: str


CHARTS: Mapping[str, ChartPin] = MappingProxyType({
    p.name: p
    for p in (
        ChartPin("traefik", "41.3.0", "https://traefik.github.io/charts"),
        ChartPin("sealed-secrets", "2.18.5", "https://bitnami-labs.github.io/sealed-secrets"),
        ChartPin("argo-cd", "10.1.1", "https://argoproj.github.io/argo-helm"),
        ChartPin("longhorn", "1.12.1", "https://charts.longhorn.io"),
        ChartPin("kube-prometheus-stack", "88.5.3", "https://prometheus-community.github.io/helm-charts"),
        ChartPin("nfs-subdir-external-provisioner", "4.0.18",
                 "https://kubernetes-sigs.github.io/nfs-subdir-external-provisioner"),
    )
})
CHART_VERSIONS: Mapping[str, str] = MappingProxyType({n: p.version for n, p in CHARTS.items()})

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
    # On every Argo CD pod: a changed value restarts them (they read the redis password at start).
    pod_annotations: Mapping[str, str] = field(default_factory=dict)


def argocd_host(spec: ArgoCdSpec) -> str:
    return f"argocd.{spec.domain}"


def argocd_values(spec: ArgoCdSpec) -> dict:
    metrics = {"enabled": spec.service_monitors, "serviceMonitor": {"enabled": spec.service_monitors}}
    return {
        "global": {"domain": argocd_host(spec), "podAnnotations": dict(spec.pod_annotations)},
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


# ------------------------------------------------------------------ GitOps (Argo CD app-of-apps)

ROOT_APP = "root"
APPSET = "apps"  # gitops/root/applicationset.yaml
APP_PROJECT = "microcloud-apps"  # gitops/root/project.yaml
IN_CLUSTER = "https://kubernetes.default.svc"
# Deleting an Application with this finalizer deletes what it deployed first.
CASCADE_FINALIZER = "resources-finalizer.argocd.argoproj.io"
SYNC_WAVE = "argocd.argoproj.io/sync-wave"


@dataclass(frozen=True)
class GitOpsSpec:
    """The root Application: ``<repo_url>@<revision>``, directory ``<path>/root``; the apps are ``<path>/apps/*``.

    The files in ``<path>/root`` name a placeholder repository: the root
    Application patches the configured one in (Kustomize patches), so the
    stack config is the one place the repository is named.
    ``cascade`` puts Argo CD's resources finalizer on the root app (dev:
    ``destroy`` removes what Argo CD deployed; prod: it stays).
    """

    repo_url: str
    revision: str
    path: str = "gitops"
    namespace: str = ARGOCD_NAMESPACE
    cascade: bool = True

    def __post_init__(self) -> None:
        if not self.repo_url or any(c.isspace() for c in self.repo_url):
            raise ValueError(f"gitops: repository URL {self.repo_url!r} is empty or has spaces")
        if not self.revision:
            raise ValueError("gitops: revision is empty (name a branch, tag or commit)")
        if self.path.startswith("/") or ".." in self.path.split("/") or not self.path.strip("/"):
            raise ValueError(f"gitops: path {self.path!r} must be relative inside the repository")


def _gitops_dir(spec: GitOpsSpec, sub: str) -> str:
    return f"{spec.path.strip('/')}/{sub}"


def root_patch_ops(spec: GitOpsSpec) -> list[dict]:
    """JSON patch ops on gitops/root/applicationset.yaml: the configured repository, revision and apps directory."""
    return [
        {"op": "replace", "path": "/spec/generators/0/git/repoURL", "value": spec.repo_url},
        {"op": "replace", "path": "/spec/generators/0/git/revision", "value": spec.revision},
        {"op": "replace", "path": "/spec/generators/0/git/directories/0/path", "value": _gitops_dir(spec, "apps/*")},
        {"op": "replace", "path": "/spec/template/spec/source/repoURL", "value": spec.repo_url},
        {"op": "replace", "path": "/spec/template/spec/source/targetRevision", "value": spec.revision},
    ]


def root_application(spec: GitOpsSpec) -> dict:
    """The app-of-apps the program creates; Argo CD syncs ``<path>/root`` (AppProject, ApplicationSet) from it."""
    metadata: dict = {"name": ROOT_APP, "namespace": spec.namespace}
    if spec.cascade:
        metadata["finalizers"] = [CASCADE_FINALIZER]
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": metadata,
        "spec": {
            "project": "default",
            "source": {
                "repoURL": spec.repo_url,
                "targetRevision": spec.revision,
                "path": _gitops_dir(spec, "root"),
                "kustomize": {"patches": [{
                    "target": {"group": "argoproj.io", "version": "v1alpha1", "kind": "ApplicationSet", "name": APPSET},
                    "patch": json.dumps(root_patch_ops(spec)),
                }]},
            },
            "destination": {"server": IN_CLUSTER, "namespace": spec.namespace},
            "syncPolicy": {"automated": {"prune": True, "selfHeal": True}},
        },
    }


def apply_patch_ops(obj: dict, ops: list[dict]) -> dict:
    """What Kustomize does with ``root_patch_ops`` (replace only; a missing path is an error, as in Kustomize)."""
    import copy

    out = copy.deepcopy(obj)
    for op in ops:
        if op["op"] != "replace":
            raise ValueError(f"gitops: only replace ops, not {op['op']}")
        *parents, last = [p for p in op["path"].split("/")[1:]]
        node = out
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = op["value"]
        elif last in node:
            node[last] = op["value"]
        else:
            raise KeyError(f"gitops: no {op['path']} to replace")
    return out


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


# ------------------------------------------------------------------ Longhorn


@dataclass(frozen=True)
class LonghornSpec:
    """``data_path``: where Longhorn keeps replicas on its nodes (the mounted data disk).

    ``allow_uninstall`` sets Longhorn's deleting-confirmation flag, without
    which it refuses removal (dev: true, so ``pulumi destroy`` works).
    The StorageClass is the program's (``longhorn_storage_class``), not the
    one longhorn-manager would make from a ConfigMap: so Pulumi owns it,
    ``destroy`` removes it, and its reclaim policy is ours.
    """

    replica_count: int
    reclaim_policy: ReclaimPolicy
    allow_uninstall: bool
    data_path: str = LONGHORN_DATA_PATH
    default_class: bool = True
    namespace: str = LONGHORN_NAMESPACE
    storage_class: str = LONGHORN_STORAGE_CLASS


def longhorn_values(spec: LonghornSpec) -> dict:
    if spec.replica_count < 1:
        raise ValueError("longhorn: at least one replica")
    if not spec.data_path.startswith("/"):
        raise ValueError(f"longhorn: data path {spec.data_path!r} is not absolute")
    return {
        "persistence": {
            # The StorageClass is longhorn_storage_class(spec), made by the program.
            "createStorageClass": False,
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


def longhorn_storage_class(spec: LonghornSpec) -> dict:
    """The StorageClass the chart would have had longhorn-manager make (its storageclass.yaml), as ours."""
    return {
        "metadata": {
            "name": spec.storage_class,
            "annotations": {"storageclass.kubernetes.io/is-default-class": str(spec.default_class).lower()},
        },
        "provisioner": "driver.longhorn.io",
        "allowVolumeExpansion": True,
        "reclaimPolicy": spec.reclaim_policy,
        "volumeBindingMode": "Immediate",
        # The chart's defaults for these (checked against its storageclass.yaml in tests/test_platform_render.py).
        "parameters": {
            "numberOfReplicas": str(spec.replica_count),
            "staleReplicaTimeout": "30",
            "fromBackup": "",
            "fsType": "ext4",
            "dataLocality": "disabled",
            "unmapMarkSnapChainRemoved": "ignored",
            "disableRevisionCounter": "true",
            "dataEngine": "v1",
            "backupTargetName": "default",
        },
    }


LONGHORN_MANAGER = "longhorn-manager"  # the DaemonSet whose image the uninstall Job runs
LONGHORN_UNINSTALL_JOB = "longhorn-uninstall"


def longhorn_uninstall_job(namespace: str, image: str, pull_policy: str = "IfNotPresent") -> dict:
    """The chart's pre-delete hook (templates/uninstall-job.yaml), which helm.v4.Chart never runs.

    ``longhorn-manager uninstall --force`` removes every Longhorn object
    (volumes, engines, the CSI driver, its webhooks and StorageClass) and
    their finalizers while the manager still runs; without it the CRDs and
    namespace hang in Terminating on finalizers nothing clears.
    """
    labels = {"app.kubernetes.io/name": "longhorn", "app.kubernetes.io/component": "uninstall"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": LONGHORN_UNINSTALL_JOB, "namespace": namespace, "labels": labels},
        "spec": {
            "activeDeadlineSeconds": 900,
            "backoffLimit": 1,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{
                        "name": "longhorn-uninstall",
                        "image": image,
                        "imagePullPolicy": pull_policy,
                        "command": ["longhorn-manager", "uninstall", "--force"],
                        "env": [{"name": "LONGHORN_NAMESPACE",
                                 "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
                    }],
                    "restartPolicy": "Never",
                    "serviceAccountName": "longhorn-service-account",
                },
            },
        },
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
