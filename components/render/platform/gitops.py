"""The GitOps root Application (Argo CD app-of-apps), Argo CD's projects and the alert rules on GitOps' signals.

Every AppProject is made here and by Pulumi, none in the GitOps repository:
whoever can push to it can change what Argo CD syncs, but not what it is
allowed to sync.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

from .argocd import ARGOCD_NAMESPACE
from .image_updater import OPT_IN_FILE

ROOT_APP = "root"
APPSET = "apps"  # gitops/root/applicationset.yaml
ROOT_PROJECT = "microcloud-root"  # the root Application's
APP_PROJECT = "microcloud-apps"  # the Applications the ApplicationSet makes
DEFAULT_PROJECT = "default"  # Argo CD's own, emptied
IN_CLUSTER = "https://kubernetes.default.svc"
# What root may create: the kinds in gitops/root (tests/test_platform_gitops_render.py checks both ways).
ROOT_KINDS = (("argoproj.io", "ApplicationSet"),)
# An app's namespace is its directory's name behind this prefix. The list of apps is known only in Git
# when Argo CD syncs, so the apps' project allows the pattern, and the ApplicationSet's template (patched
# in by the root Application) names namespaces by it: both from this one constant.
APP_NAMESPACE_PREFIX = "app-"
APP_NAMESPACE_TEMPLATE = APP_NAMESPACE_PREFIX + "{{.path.basename}}"
APP_NAMESPACES = APP_NAMESPACE_PREFIX + "*"
# Namespaced kinds an app must not bring, each for a reason:
APP_DENIED_KINDS = (
    # the platform's limits on an app's namespace, not the app's own
    ("", "ResourceQuota"),
    ("", "LimitRange"),
    # hand-written endpoints send a Service's traffic to any address, e.g. another namespace's pods (CVE-2021-25740)
    ("", "Endpoints"),
    ("discovery.k8s.io", "EndpointSlice"),
    # Argo CD's own objects: the app-of-apps is root's alone
    ("argoproj.io", "*"),
)
# Deleting an Application with this finalizer deletes what it deployed first.
CASCADE_FINALIZER = "resources-finalizer.argocd.argoproj.io"
SYNC_WAVE = "argocd.argoproj.io/sync-wave"


@dataclass(frozen=True)
class GitOpsSpec:
    """The root Application: ``<repo_url>@<revision>``, directory ``<path>/root``; the apps are ``<path>/apps/*``.

    The files in ``<path>/root`` name a placeholder repository, project and
    namespace: the root Application patches the configured repository and
    the apps' project and namespace in (Kustomize patches), so the stack
    config is the one place the repository is named, and this module the
    one place the projects and the namespaces they allow are.
    ``cascade`` puts Argo CD's resources finalizer on the root app (dev:
    ``destroy`` removes what Argo CD deployed; prod: it stays).
    ``app_repos``: more repositories (exact URLs) the apps' project allows
    beside ``repo_url``; the root's project allows ``repo_url`` only.
    """

    repo_url: str
    revision: str
    path: str = "gitops"
    namespace: str = ARGOCD_NAMESPACE
    cascade: bool = True
    app_repos: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # The projects' sourceRepos are Argo CD globs: an exact URL allows that repository and no other.
        for url in (self.repo_url, *self.app_repos):
            if not url or any(c.isspace() or c in "*?[]!" for c in url):
                raise ValueError(f"gitops: repository URL {url!r} is empty or not one exact URL (spaces, globs, !)")
        if len({self.repo_url, *self.app_repos}) != 1 + len(self.app_repos):
            raise ValueError("gitops: app_repos repeats a repository")
        if not self.revision:
            raise ValueError("gitops: revision is empty (name a branch, tag or commit)")
        if self.path.startswith("/") or ".." in self.path.split("/") or not self.path.strip("/"):
            raise ValueError(f"gitops: path {self.path!r} must be relative inside the repository")


def _gitops_dir(spec: GitOpsSpec, sub: str) -> str:
    return f"{spec.path.strip('/')}/{sub}"


def root_patch_ops(spec: GitOpsSpec) -> list[dict]:
    """JSON patch ops on gitops/root/applicationset.yaml: the configured repository, revision and apps directory."""
    apps, updates = "/spec/generators/0/merge/generators/0/git", "/spec/generators/0/merge/generators/1/git"
    return [
        {"op": "replace", "path": f"{apps}/repoURL", "value": spec.repo_url},
        {"op": "replace", "path": f"{apps}/revision", "value": spec.revision},
        {"op": "replace", "path": f"{apps}/directories/0/path", "value": _gitops_dir(spec, "apps/*")},
        {"op": "replace", "path": f"{updates}/repoURL", "value": spec.repo_url},
        {"op": "replace", "path": f"{updates}/revision", "value": spec.revision},
        {"op": "replace", "path": f"{updates}/files/0/path", "value": _gitops_dir(spec, f"apps/*/{OPT_IN_FILE}")},
        {"op": "replace", "path": "/spec/template/spec/source/repoURL", "value": spec.repo_url},
        {"op": "replace", "path": "/spec/template/spec/source/targetRevision", "value": spec.revision},
        {"op": "replace", "path": "/spec/template/spec/project", "value": APP_PROJECT},
        {"op": "replace", "path": "/spec/template/spec/destination/namespace", "value": APP_NAMESPACE_TEMPLATE},
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
            "project": ROOT_PROJECT,
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


# ------------------------------------------------------------------ projects


def _project(name: str, namespace: str, spec: dict) -> dict:
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def _kinds(pairs) -> list[dict]:
    return [{"group": g, "kind": k} for g, k in pairs]


# sourceNamespaces is left out of both: only Applications in Argo CD's own namespace may use them.
def root_project(spec: GitOpsSpec) -> dict:
    """The root Application's project: ``repo_url`` only, into Argo CD's namespace, ApplicationSets only.

    Nothing cluster-scoped, and no other kind: with Argo CD's namespace as
    its destination, a ConfigMap or Secret there would be Argo CD's own
    configuration (argocd-rbac-cm, repository and cluster Secrets).
    """
    return _project(ROOT_PROJECT, spec.namespace, {
        "description": f"The root Application {ROOT_APP}: {_gitops_dir(spec, 'root')}, ApplicationSets only",
        "sourceRepos": [spec.repo_url],
        "destinations": [{"server": IN_CLUSTER, "namespace": spec.namespace}],
        "clusterResourceWhitelist": [],
        "namespaceResourceWhitelist": _kinds(ROOT_KINDS),
    })


def apps_project(spec: GitOpsSpec) -> dict:
    """The project of the ApplicationSet's Applications: the configured repositories, the ``app-*`` namespaces.

    The only cluster-scoped kind is an app's own Namespace (which
    CreateNamespace needs), by the same pattern, so an app cannot adopt,
    and on prune delete, a namespace that is not an app's.
    """
    return _project(APP_PROJECT, spec.namespace, {
        "description": f"Applications of the ApplicationSet {APPSET} from {_gitops_dir(spec, 'apps/*')}",
        "sourceRepos": [spec.repo_url, *spec.app_repos],
        "destinations": [{"server": IN_CLUSTER, "namespace": APP_NAMESPACES}],
        "clusterResourceWhitelist": [{"group": "", "kind": "Namespace", "name": APP_NAMESPACES}],
        "namespaceResourceBlacklist": _kinds(APP_DENIED_KINDS),
    })


def default_project(namespace: str = ARGOCD_NAMESPACE) -> dict:
    """Argo CD's ``default`` project, emptied as Argo CD's docs describe: no source, no destination, no kind.

    Argo CD makes it (allowing everything) when it is missing, so it cannot
    be deleted; and an ApplicationSet may put its Applications in any project.
    """
    return _project(DEFAULT_PROJECT, namespace, {
        "description": "Emptied: every Application belongs to a project of its own",
        "sourceRepos": [],
        "sourceNamespaces": [],
        "destinations": [],
        "clusterResourceWhitelist": [],
        "namespaceResourceBlacklist": [{"group": "*", "kind": "*"}],
    })


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
