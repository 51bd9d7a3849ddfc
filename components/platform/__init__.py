"""Platform: what runs on the cluster, deployed through one explicit Kubernetes provider.

Sealed Secrets (with a sealing key pair Pulumi generates and keeps), Traefik
(NodePorts HAProxy targets, a default TLS certificate, dashboard behind basic
auth), Longhorn (the default StorageClass), an NFS StorageClass
(nfs-subdir-external-provisioner), kube-prometheus-stack and Argo CD with a
root Application (app-of-apps) over ``gitops/``. Charts come pinned from
their repositories or from local chart directories / ``.tgz`` files
(``ChartSource``); values come from ``components/render/platform/``.

The provider renders charts without Helm hooks, so what a hook would have made
(argocd-redis, argocd-secret) is made here from generated secrets, and
Longhorn's pre-delete uninstall Job is run by a command on ``destroy``.

    component           the Platform ComponentResource: checks, chart sources, the addons in order
    args                PlatformArgs, check_args, platform_args (the stack config as PlatformArgs)
    charts              ChartSource, chart_dir, chart_sources, merge_values, needed_charts
    sealed_secrets      the sealing key pair, its Secret, the controller
    traefik             the default certificate, the dashboard's auth, Traefik
    longhorn            Longhorn, its StorageClass, the uninstall command on destroy
    nfs                 the NFS provisioner
    monitoring          Grafana's admin Secret and volume, kube-prometheus-stack
    argocd              argocd-secret, argocd-redis, Argo CD
    gitops              the root Application
    longhorn_uninstall  what that command runs (uninstall_longhorn_main)

Everything is re-exported here: ``from components.platform import X`` is the
import path, and Longhorn's delete command (in every stack's state) runs
``from components.platform import uninstall_longhorn_main``.
"""

from components.chart_pins import CHART_VERSIONS, CHARTS

from .args import ROTATABLE, DefaultCertificate, GitOps, PlatformArgs, check_args, platform_args
from .argocd import ARGOCD_PART_OF
from .charts import ChartSource, chart_dir, chart_sources, merge_values, needed_charts
from .component import ROTATION_ANNOTATION, Platform
from .longhorn_uninstall import uninstall_longhorn_main
from .monitoring import GRAFANA_ADMIN_SECRET, GRAFANA_CLAIM
from .nfs import NFS_NAMESPACE
from .sealed_secrets import SEALING_KEY_SECRET
from .traefik import TRAEFIK_AUTH_SECRET, TRAEFIK_CERT_SECRET

__all__ = [
    "ARGOCD_PART_OF", "CHARTS", "CHART_VERSIONS", "GRAFANA_ADMIN_SECRET", "GRAFANA_CLAIM", "NFS_NAMESPACE", "ROTATABLE",
    "ROTATION_ANNOTATION", "SEALING_KEY_SECRET", "TRAEFIK_AUTH_SECRET", "TRAEFIK_CERT_SECRET", "ChartSource",
    "DefaultCertificate", "GitOps", "Platform", "PlatformArgs", "chart_dir", "chart_sources", "check_args",
    "merge_values", "needed_charts", "platform_args", "uninstall_longhorn_main",
]
