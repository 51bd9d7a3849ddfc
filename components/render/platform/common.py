"""What more than one platform chart's values share: the Ingress annotations behind Traefik, the reclaim policies."""

from __future__ import annotations

from typing import Literal

# Route through websecure only, with TLS from Traefik's default certificate.
TRAEFIK_TLS_ANNOTATIONS = {
    "traefik.ingress.kubernetes.io/router.entrypoints": "websecure",
    "traefik.ingress.kubernetes.io/router.tls": "true",
    # Traefik's Service is a NodePort behind HAProxy: it has no load-balancer
    # address to publish, so no Ingress ever gets .status.loadBalancer and
    # pulumi-kubernetes would wait 10 minutes for it on every create.
    "pulumi.com/skipAwait": "true",
}

ReclaimPolicy = Literal["Delete", "Retain"]
