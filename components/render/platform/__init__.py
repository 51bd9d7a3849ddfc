"""Helm values of the platform charts, as dicts, and the GitOps root app and alert rules: one module per chart.

Each ``*_values(spec)`` returns the values handed to ``kubernetes.helm.v4.Chart``.
Key paths follow the charts' values.yaml (checked against the chart
directories in tests/test_platform_charts_render.py): traefik 41.x, sealed-secrets
2.x, argo-cd 10.x, kube-prometheus-stack 88.x, longhorn 1.10+,
nfs-subdir-external-provisioner 4.x.

The provider renders charts with Helm hooks disabled, so every value that
only works through a hook is turned off here, and what the hook would have
made is a Secret the program creates (the ``*_SECRET`` names).

    traefik         Traefik: NodePorts behind HAProxy, default certificate, dashboard auth
    sealed_secrets  Sealed Secrets and the sealing key Secret's metadata
    argocd          Argo CD and the Secrets its hook Jobs would have made
    gitops          the root Application (app-of-apps), Argo CD's projects, the GitOps alert rules
    monitoring      kube-prometheus-stack: Grafana, the VMs' node-exporters, the alerts
    longhorn        Longhorn, its StorageClass and its uninstall Job
    nfs             nfs-subdir-external-provisioner
    network_policies  the NetworkPolicies: ingress denied in the platform's namespaces, the allows each component needs
    common          what several charts share (Ingress annotations, reclaim policy)

The chart pins (``CHARTS``) live in ``components/chart_pins.py`` and are
re-exported here with everything else, so ``platform.X`` names any of it.
"""

from components.chart_pins import CHART_VERSIONS, CHARTS, ChartPin

from .argocd import (APPLICATION_HEALTH_LUA, ARGOCD_NAMESPACE, ARGOCD_REDIS_SECRET, ARGOCD_SECRET, CI_ACCOUNT, CI_ROLE,
                     ArgoCdSpec, argocd_host, argocd_values, ci_policy_csv)
from .common import TRAEFIK_TLS_ANNOTATIONS, ReclaimPolicy
from .image_updater import OPT_IN_FILE as IMAGE_UPDATES_FILE
from .gitops import (APP_DENIED_KINDS, APP_NAMESPACE_PREFIX, APP_NAMESPACE_TEMPLATE, APP_NAMESPACES, APP_PROJECT,
                     APPSET, CASCADE_FINALIZER, DEFAULT_PROJECT, IN_CLUSTER, ROOT_APP, ROOT_KINDS, ROOT_PROJECT,
                     SYNC_WAVE, GitOpsAlertsSpec, GitOpsSpec, apps_project, default_project, gitops_alert_groups,
                     root_application, root_patch_ops, root_project)
from .longhorn import (K3S_KUBELET_ROOT, LONGHORN_DATA_PATH, LONGHORN_DISK_LABEL, LONGHORN_MANAGER, LONGHORN_NAMESPACE,
                       LONGHORN_STORAGE_CLASS, LONGHORN_UNINSTALL_JOB, LonghornSpec, longhorn_storage_class,
                       longhorn_uninstall_job, longhorn_values)
from .monitoring import (GRAFANA_ADMIN_KEYS, MONITORING_NAMESPACE, NODE_EXPORTER_JOB, MonitoringSpec, ScrapeTarget,
                         admission_secret, grafana_claim, monitoring_values, node_exporter_scrape_configs, scrape_targets)
from .network_policies import NetworkPolicySpec, all_network_policies, network_policies
from .nfs import NfsProvisionerSpec, nfs_provisioner_values
from .sealed_secrets import (SEALED_SECRETS_CONTROLLER, SEALED_SECRETS_NAMESPACE, SEALING_KEY_LABEL, SealedSecretsSpec,
                             sealed_secrets_values, sealing_key_metadata)
from .traefik import TRAEFIK_DASHBOARD_MIDDLEWARE, TRAEFIK_NAMESPACE, TraefikSpec, traefik_values

__all__ = [
    "APPLICATION_HEALTH_LUA", "APPSET", "APP_DENIED_KINDS", "APP_NAMESPACES", "APP_NAMESPACE_PREFIX",
    "APP_NAMESPACE_TEMPLATE", "APP_PROJECT", "ARGOCD_NAMESPACE", "ARGOCD_REDIS_SECRET", "ARGOCD_SECRET",
    "CASCADE_FINALIZER", "CHARTS", "CHART_VERSIONS", "DEFAULT_PROJECT", "GRAFANA_ADMIN_KEYS", "IN_CLUSTER",
    "K3S_KUBELET_ROOT", "LONGHORN_DATA_PATH", "LONGHORN_DISK_LABEL", "LONGHORN_MANAGER", "LONGHORN_NAMESPACE",
    "LONGHORN_STORAGE_CLASS", "LONGHORN_UNINSTALL_JOB", "MONITORING_NAMESPACE", "NODE_EXPORTER_JOB", "ROOT_APP",
    "ROOT_KINDS", "ROOT_PROJECT", "SEALED_SECRETS_CONTROLLER", "SEALED_SECRETS_NAMESPACE", "SEALING_KEY_LABEL",
    "SYNC_WAVE", "TRAEFIK_DASHBOARD_MIDDLEWARE", "TRAEFIK_NAMESPACE", "TRAEFIK_TLS_ANNOTATIONS", "ArgoCdSpec",
    "ChartPin", "GitOpsAlertsSpec", "GitOpsSpec", "LonghornSpec", "MonitoringSpec", "NetworkPolicySpec", "NfsProvisionerSpec",
    "ReclaimPolicy", "ScrapeTarget", "SealedSecretsSpec", "TraefikSpec", "admission_secret", "all_network_policies", "apps_project",
    "IMAGE_UPDATES_FILE", "argocd_host", "argocd_values", "ci_policy_csv", "CI_ACCOUNT", "CI_ROLE", "default_project", "gitops_alert_groups", "grafana_claim",
    "longhorn_storage_class", "longhorn_uninstall_job", "longhorn_values", "monitoring_values", "network_policies",
    "nfs_provisioner_values", "node_exporter_scrape_configs", "root_application", "root_patch_ops", "root_project",
    "scrape_targets", "sealed_secrets_values", "sealing_key_metadata", "traefik_values",
]
