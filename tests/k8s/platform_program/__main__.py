"""Platform against a test Kubernetes API: the provider from a kubeconfig file, the charts from a directory.

Config (or environment): ``kubeconfig`` (MICROCLOUD_TEST_KUBECONFIG), a path
to an admin kubeconfig; ``chartDir`` (MICROCLOUD_CHART_DIR), the directory of
``<name>-<version>/`` charts (a chart not there comes from its pinned
repository); ``domain``, ``httpNodePort``, ``httpsNodePort``, ``nfsServer``,
``scrapeTargets`` (JSON: node -> ip:port), ``gitRepo``, ``gitRevision``;
``extraValues`` (JSON: chart -> Helm values merged over ours, the bad-value test).
CRDs are removed on destroy (keep_crds off), and nothing is protected (a dev stack).
"""

import json
import os
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

from components.platform import GitOps, Platform, PlatformArgs, chart_sources

cfg = pulumi.Config()
kubeconfig_path = cfg.get("kubeconfig") or os.environ["MICROCLOUD_TEST_KUBECONFIG"]
chart_dir = cfg.get("chartDir") or os.environ.get("MICROCLOUD_CHART_DIR") or str(Path.home() / ".cache/microcloud-charts")
kubeconfig = pulumi.Output.secret(Path(kubeconfig_path).read_text())

provider = k8s.Provider(
    "test-cluster",
    kubeconfig=kubeconfig,
    # A stable identity: a changed kubeconfig must not replace every object under the provider.
    cluster_identifier="microcloud-test",
    delete_unreachable=False,
)

git_repo = cfg.get("gitRepo")
platform = Platform(
    "platform",
    PlatformArgs(
        domain=cfg.get("domain") or "microcloud.test",
        http_nodeport=cfg.get_int("httpNodePort") or 30080,
        https_nodeport=cfg.get_int("httpsNodePort") or 30443,
        provider=provider,
        kubeconfig=kubeconfig,
        charts=chart_sources(chart_dir),
        argocd=cfg.get_bool("argocd") is not False,
        keep_crds=False,
        service_monitors=True,
        longhorn_replicas=2,
        longhorn_data_path=cfg.get("longhornDataPath") or "/var/lib/longhorn",
        nfs_server=cfg.get("nfsServer"),
        nfs_path=cfg.get("nfsPath") or "/srv/nfs",
        scrape_targets=json.loads(cfg.get("scrapeTargets") or "{}"),
        gitops=GitOps(repo_url=git_repo, revision=cfg.get("gitRevision") or "main") if git_repo else None,
        values=json.loads(cfg.get("extraValues") or "{}"),
    ),
)

for name in ("sealing_certificate", "default_certificate", "dashboard_password", "grafana_admin_password"):
    pulumi.export(name, getattr(platform, name))
if platform.argocd_admin_password is not None:
    pulumi.export("argocd_admin_password", platform.argocd_admin_password)
if platform.argocd_ci_token is not None:
    pulumi.export("argocd_ci_token", platform.argocd_ci_token)
