"""Argo CD's values (components/render/platform/argocd.py): ingress, the Secrets its hooks would make, health, metrics;
and its `default` project, emptied (components/render/platform/gitops.py makes every project).

Plain Python (``unit``).
"""

from __future__ import annotations

import dataclasses

import pytest

from components.render import platform as pv
from support.argocd_project import application_permitted, permits

unit = pytest.mark.unit


@unit
def test_argocd_values():
    spec = pv.ArgoCdSpec(domain="microcloud.lan", keep_crds=False)
    v = pv.argocd_values(spec)
    assert v["configs"]["params"]["server.insecure"] is True
    assert v["configs"]["params"]["applicationsetcontroller.enable.scm.providers"] is False
    assert v["configs"]["secret"]["createSecret"] is False
    assert v["redisSecretInit"]["enabled"] is False
    assert v["crds"]["keep"] is False
    ing = v["server"]["ingress"]
    assert ing["enabled"] and ing["hostname"] == "argocd.microcloud.lan" == v["global"]["domain"]
    assert ing["ingressClassName"] == spec.ingress_class
    assert "obj.status.health.status" in v["configs"]["cm"]["resource.customizations.health.argoproj.io_Application"]
    off = pv.argocd_values(dataclasses.replace(spec, service_monitors=False))
    assert all(not off[c]["metrics"]["serviceMonitor"]["enabled"] for c in ("server", "controller", "repoServer"))


@unit
def test_default_project_is_emptied():
    """Argo CD's `default` allows everything and cannot be deleted: the program empties it, as Argo CD's docs do."""
    proj = pv.default_project()
    assert proj == {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject",
        "metadata": {"name": "default", "namespace": "argocd"},
        "spec": {
            "description": "Emptied: every Application belongs to a project of its own",
            "sourceRepos": [],
            "sourceNamespaces": [],
            "destinations": [],
            "clusterResourceWhitelist": [],
            "namespaceResourceBlacklist": [{"group": "*", "kind": "*"}],
        },
    }
    # Nothing gets through it: no source, no destination, no kind.
    app = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": {"name": "any"},
           "spec": {"project": "default", "source": {"repoURL": "https://git.example.test/x.git"},
                    "destination": {"server": pv.IN_CLUSTER, "namespace": "app-x"}}}
    assert not application_permitted(proj, app)
    for obj in ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}},
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "app-x"}}):
        assert not permits(proj, obj, namespace="app-x", server=pv.IN_CLUSTER), obj["kind"]
    assert pv.default_project("elsewhere")["metadata"]["namespace"] == "elsewhere"
