"""What Argo CD asks an AppProject before it syncs an object: the tests ask the projects the program renders.

Written after Argo CD's own checks (pkg/apis/application/v1alpha1,
``IsSourcePermitted``, ``IsDestinationPermitted``, ``IsResourcePermitted``,
``IsGroupKindNamePermitted`` of 3.x): a namespaced kind is allowed unless a
non-empty ``namespaceResourceWhitelist`` leaves it out (an empty one allows
nothing) or ``namespaceResourceBlacklist`` names it, and its namespace must be
a destination; a cluster-scoped kind only when ``clusterResourceWhitelist``
names it (and its ``name`` pattern, when given, matches). Kinds, groups and
names match as Go's filepath.Match globs, destinations as Argo CD's globs,
repositories as globs split at ``/``. Negated (``!``) rules are not modelled:
the program writes none, and ``permits`` refuses a project that has them.

Used by tests/test_platform_gitops_render.py. It is a model: Argo CD itself
does not run here (docs/testing.md says what stays unproven).
"""

from __future__ import annotations

import fnmatch
import re
from typing import Optional

# The cluster-scoped kinds the tests use; everything else is namespaced.
CLUSTER_SCOPED = {("", "Namespace"), ("rbac.authorization.k8s.io", "ClusterRole"),
                  ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
                  ("apiextensions.k8s.io", "CustomResourceDefinition"), ("", "PersistentVolume"),
                  ("storage.k8s.io", "StorageClass"), ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration")}


def group_of(api_version: str) -> str:
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


def _match(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value, pattern)


def _repo_match(pattern: str, url: str) -> bool:
    # A `*` stops at `/`, `**` does not.
    rx = "".join(".*" if part == "**" else "[^/]*" if part == "*" else re.escape(part)
                 for part in re.split(r"(\*\*|\*)", pattern))
    return re.fullmatch(rx, url) is not None


def _in(items: list[dict], group: str, kind: str, name: Optional[str] = None) -> bool:
    return any(_match(i["kind"], kind) and _match(i["group"], group)
               and (name is None or not i.get("name") or _match(i["name"], name)) for i in items)


def _no_negation(spec: dict) -> None:
    rules = list(spec.get("sourceRepos", [])) + [d.get("namespace", "") for d in spec.get("destinations", [])]
    rules += [d.get("server", "") for d in spec.get("destinations", [])]
    assert not [r for r in rules if r.startswith("!")], "negated rules are not modelled"


def source_permitted(project: dict, repo_url: str) -> bool:
    _no_negation(project["spec"])
    return any(_repo_match(p, repo_url) for p in project["spec"].get("sourceRepos") or [])


def destination_permitted(project: dict, server: str, namespace: str) -> bool:
    _no_negation(project["spec"])
    return any(_match(d.get("server", ""), server) and _match(d.get("namespace", ""), namespace)
               for d in project["spec"].get("destinations") or [])


def permits(project: dict, obj: dict, *, namespace: str, server: str) -> bool:
    """Would Argo CD sync ``obj`` (an Application's manifest) into ``namespace`` (the Application's) of ``server``?"""
    spec = project["spec"]
    group, kind = group_of(obj["apiVersion"]), obj["kind"]
    if (group, kind) in CLUSTER_SCOPED:
        white = spec.get("clusterResourceWhitelist") or []
        black = spec.get("clusterResourceBlacklist") or []
        name = obj["metadata"]["name"]
        return bool(white) and _in(white, group, kind, name) and not _in(black, group, kind, name)
    white = spec.get("namespaceResourceWhitelist")
    black = spec.get("namespaceResourceBlacklist") or []
    allowed = white is None or (bool(white) and _in(white, group, kind))
    ns = obj["metadata"].get("namespace") or namespace
    return allowed and not _in(black, group, kind) and destination_permitted(project, server, ns)


def application_permitted(project: dict, app: dict) -> bool:
    """Argo CD's check of an Application against its project: the source and the destination."""
    spec = app["spec"]
    dest = spec["destination"]
    return (spec["project"] == project["metadata"]["name"] and source_permitted(project, spec["source"]["repoURL"])
            and destination_permitted(project, dest["server"], dest["namespace"]))
