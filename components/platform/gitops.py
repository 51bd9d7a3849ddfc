"""The GitOps root Application (app-of-apps) Argo CD syncs ``<path>/root`` from."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pulumi_kubernetes as k8s

from components.render.platform.gitops import GitOpsSpec, root_application

if TYPE_CHECKING:
    from .component import Platform


def create(p: "Platform") -> None:
    """Sets ``root_app``; needs Argo CD's chart (the Application CRD comes with it)."""
    a = p._args
    g = a.gitops
    spec = GitOpsSpec(repo_url=g.repo_url, revision=g.revision, path=g.path, cascade=not a.protect_data)
    app = root_application(spec)
    # The Application CRD comes with the chart; on delete the root app goes first, while Argo CD still runs.
    p.root_app = k8s.apiextensions.CustomResource(
        f"{p._name}-root-app",
        api_version=app["apiVersion"],
        kind=app["kind"],
        metadata=app["metadata"],
        spec=app["spec"],
        opts=p._k8s_opts(depends_on=[p.argocd]),
    )
