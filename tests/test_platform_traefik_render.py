"""Traefik's values (components/render/platform/traefik.py): the NodePorts HAProxy targets, the default certificate, the dashboard.

Plain Python (``unit``) over the dev, prod and edge stack configs.
"""

from __future__ import annotations

import dataclasses

import pytest

from components.render import platform as pv
from support.platform_render import CONFIGS, NAMES, traefik_spec

unit = pytest.mark.unit


@unit
@pytest.mark.parametrize("name", NAMES)
def test_traefik_nodeports_are_the_ones_haproxy_targets(name):
    cfg = CONFIGS[name]
    spec = traefik_spec(cfg)
    v = pv.traefik_values(spec)
    assert v["service"]["spec"]["type"] == "NodePort"
    assert v["ports"]["web"]["nodePort"] == cfg.load_balancer.ingress_http_nodeport
    assert v["ports"]["websecure"]["nodePort"] == cfg.load_balancer.ingress_https_nodeport
    assert v["ports"]["web"]["http"]["redirections"]["entryPoint"] == {"to": "websecure", "scheme": "https", "permanent": True}
    assert v["tlsStore"]["default"]["defaultCertificate"]["secretName"] == spec.default_cert_secret
    dash = v["ingressRoute"]["dashboard"]
    assert dash["matchRule"] == f"Host(`traefik.{cfg.domain}`)" and dash["entryPoints"] == ["websecure"]
    (mw,) = [o for o in v["extraObjects"] if o["kind"] == "Middleware"]
    assert dash["middlewares"] == [{"name": mw["metadata"]["name"]}]
    assert mw["spec"]["basicAuth"]["secret"] == spec.dashboard_auth_secret
    assert mw["metadata"]["namespace"] == spec.namespace
    with pytest.raises(ValueError, match="must differ"):
        pv.traefik_values(dataclasses.replace(spec, https_nodeport=spec.http_nodeport))
