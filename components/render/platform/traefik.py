"""Traefik's Helm values (chart 41.x): NodePorts behind HAProxy, the default certificate, the dashboard behind basic auth."""

from __future__ import annotations

from dataclasses import dataclass

TRAEFIK_NAMESPACE = "kube-system"
TRAEFIK_DASHBOARD_MIDDLEWARE = "traefik-dashboard-auth"  # basic auth in front of the dashboard


@dataclass(frozen=True)
class TraefikSpec:
    """Traefik behind HAProxy: ``http_nodeport``/``https_nodeport`` are the ports HAProxy targets.

    ``default_cert_secret`` is a kubernetes.io/tls Secret and
    ``dashboard_auth_secret`` a kubernetes.io/basic-auth Secret, both in
    ``namespace``.
    """

    domain: str
    http_nodeport: int
    https_nodeport: int
    default_cert_secret: str
    dashboard_auth_secret: str
    ingress_class: str = "traefik"
    namespace: str = TRAEFIK_NAMESPACE
    replicas: int = 2


def traefik_values(spec: TraefikSpec) -> dict:
    if spec.http_nodeport == spec.https_nodeport:
        raise ValueError("traefik: the web and websecure NodePorts must differ")
    for port in (spec.http_nodeport, spec.https_nodeport):
        if not 30000 <= port <= 32767:
            raise ValueError(f"traefik: NodePort {port} is outside 30000-32767")
    middleware = {
        "apiVersion": "traefik.io/v1alpha1",
        "kind": "Middleware",
        "metadata": {"name": TRAEFIK_DASHBOARD_MIDDLEWARE, "namespace": spec.namespace},
        "spec": {"basicAuth": {"secret": spec.dashboard_auth_secret}},
    }
    return {
        "deployment": {"replicas": spec.replicas},
        # 41.x reads the Service type from service.spec.type; service.type is ignored silently.
        "service": {"spec": {"type": "NodePort"}},
        "ports": {
            "web": {
                "nodePort": spec.http_nodeport,
                "http": {"redirections": {"entryPoint": {"to": "websecure", "scheme": "https", "permanent": True}}},
            },
            "websecure": {"nodePort": spec.https_nodeport},
        },
        "ingressClass": {"enabled": True, "isDefaultClass": True, "name": spec.ingress_class},
        "tlsStore": {"default": {"defaultCertificate": {"secretName": spec.default_cert_secret}}},
        "ingressRoute": {
            "dashboard": {
                "enabled": True,
                "matchRule": f"Host(`traefik.{spec.domain}`)",
                "entryPoints": ["websecure"],
                "middlewares": [{"name": TRAEFIK_DASHBOARD_MIDDLEWARE}],
            }
        },
        "extraObjects": [middleware],
    }
