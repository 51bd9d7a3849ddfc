"""The GitOps root Application (Argo CD app-of-apps) and the alert rules on GitOps' signals."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

from .argocd import ARGOCD_NAMESPACE

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
