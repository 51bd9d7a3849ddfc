"""Traefik: the default TLS certificate (generated unless supplied), the dashboard's basic-auth Secret, the chart."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pulumi
import pulumi_kubernetes as k8s
import pulumi_tls as tls

from components.render.platform.traefik import TRAEFIK_NAMESPACE, TraefikSpec, traefik_values

if TYPE_CHECKING:
    from .component import Platform

TRAEFIK_CERT_SECRET = "traefik-default-cert"
TRAEFIK_AUTH_SECRET = "traefik-dashboard-auth"
_ONE_YEAR_H = 365 * 24  # the generated certificate's lifetime


def create(p: "Platform") -> None:
    """Both Secrets and the chart; sets ``default_certificate`` and ``dashboard_password``."""
    n, a = p._name, p._args
    ns = TRAEFIK_NAMESPACE
    if a.default_certificate is None:
        key = tls.PrivateKey(
            f"{n}-ingress-key",
            algorithm="ECDSA",
            ecdsa_curve="P256",
            opts=pulumi.ResourceOptions.merge(
                p._child,
                pulumi.ResourceOptions(additional_secret_outputs=["private_key_pem", "private_key_openssh", "private_key_pem_pkcs8"]),
            ),
        )
        cert = tls.SelfSignedCert(
            f"{n}-ingress-cert",
            private_key_pem=key.private_key_pem,
            subject=tls.SelfSignedCertSubjectArgs(common_name=f"*.{a.domain}", organization="microcloud"),
            dns_names=[f"*.{a.domain}", a.domain],
            validity_period_hours=_ONE_YEAR_H,
            early_renewal_hours=30 * 24,
            allowed_uses=["key_encipherment", "digital_signature", "server_auth"],
            opts=p._child,
        )
        cert_pem, key_pem = cert.cert_pem, key.private_key_pem
    else:
        cert_pem, key_pem = a.default_certificate.cert_pem, a.default_certificate.key_pem
    cert_secret = k8s.core.v1.Secret(
        f"{n}-ingress-cert",
        metadata={"name": TRAEFIK_CERT_SECRET, "namespace": ns},
        type="kubernetes.io/tls",
        string_data={"tls.crt": cert_pem, "tls.key": pulumi.Output.secret(key_pem)},
        opts=p._k8s_opts(delete_before_replace=True),
    )
    password = p._password("dashboard", 24)
    # Traefik reads htpasswd lines from the `users` key: only the bcrypt hash is in the cluster.
    auth_secret = k8s.core.v1.Secret(
        f"{n}-dashboard-auth",
        metadata={"name": TRAEFIK_AUTH_SECRET, "namespace": ns},
        type="Opaque",
        string_data={"users": pulumi.Output.secret(password.bcrypt_hash).apply(lambda h: f"admin:{h}")},
        opts=p._k8s_opts(delete_before_replace=True),
    )
    spec = TraefikSpec(
        domain=a.domain,
        http_nodeport=a.http_nodeport,
        https_nodeport=a.https_nodeport,
        default_cert_secret=TRAEFIK_CERT_SECRET,
        dashboard_auth_secret=TRAEFIK_AUTH_SECRET,
        namespace=ns,
        replicas=a.traefik_replicas,
    )
    # The values name both Secrets (fixed names, no data flow); Traefik reads them when it starts.
    p._chart("traefik", "traefik", ns, traefik_values(spec), depends_on=[cert_secret, auth_secret, *p._network_policies("traefik")])
    p.default_certificate = pulumi.Output.from_input(cert_pem)
    p.dashboard_password = pulumi.Output.secret(password.result)
