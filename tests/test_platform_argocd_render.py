"""Argo CD's values (components/render/platform/argocd.py): ingress, the Secrets its hooks would make, health, metrics.

Plain Python (``unit``).
"""

from __future__ import annotations

import dataclasses

import pytest

from components.render import platform as pv

unit = pytest.mark.unit


@unit
def test_argocd_values():
    spec = pv.ArgoCdSpec(domain="microcloud.lan", keep_crds=False)
    v = pv.argocd_values(spec)
    assert v["configs"]["params"]["server.insecure"] is True
    assert v["configs"]["secret"]["createSecret"] is False
    assert v["redisSecretInit"]["enabled"] is False
    assert v["crds"]["keep"] is False
    ing = v["server"]["ingress"]
    assert ing["enabled"] and ing["hostname"] == "argocd.microcloud.lan" == v["global"]["domain"]
    assert ing["ingressClassName"] == spec.ingress_class
    assert "obj.status.health.status" in v["configs"]["cm"]["resource.customizations.health.argoproj.io_Application"]
    off = pv.argocd_values(dataclasses.replace(spec, service_monitors=False))
    assert all(not off[c]["metrics"]["serviceMonitor"]["enabled"] for c in ("server", "controller", "repoServer"))
