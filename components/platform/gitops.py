"""The GitOps root Application (app-of-apps) Argo CD syncs ``<path>/root`` from, and the projects of it and its apps."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pulumi_kubernetes as k8s

from components.render.platform.gitops import GitOpsSpec, apps_project, root_application, root_project

if TYPE_CHECKING:
    from .component import Platform


def _custom(p: "Platform", key: str, obj: dict, **kw) -> k8s.apiextensions.CustomResource:
    return k8s.apiextensions.CustomResource(
        f"{p._name}-{key}", api_version=obj["apiVersion"], kind=obj["kind"], metadata=obj["metadata"], spec=obj["spec"],
        opts=p._k8s_opts(**kw),
    )


def create(p: "Platform") -> None:
    """Sets ``root_project``, ``apps_project`` and ``root_app``; needs Argo CD's chart (the CRDs come with it)."""
    a = p._args
    g = a.gitops
    spec = GitOpsSpec(repo_url=g.repo_url, revision=g.revision, path=g.path, app_repos=tuple(g.app_repos),
                      cascade=not a.protect_data)
    p.root_project = _custom(p, "root-project", root_project(spec), depends_on=[p.argocd])
    p.apps_project = _custom(p, "apps-project", apps_project(spec), depends_on=[p.argocd])
    app = root_application(spec)
    # The root app lives in its project (data flows); on delete it goes first, while Argo CD still runs
    # and while the apps' project exists: root's cascade deletes the apps, which need their project for it.
    app["spec"]["project"] = p.root_project.metadata.apply(lambda m: m["name"])
    p.root_app = _custom(p, "root-app", app, depends_on=[p.argocd, p.apps_project])
