"""Platform: what runs on the cluster, deployed through one explicit Kubernetes provider.

Sealed Secrets (with a sealing key pair Pulumi generates and keeps), Traefik
(NodePorts HAProxy targets, a default TLS certificate, dashboard behind basic
auth) and Argo CD. Charts come from local chart directories whose version
must equal the pin; values come from ``components/render/platform_values``.

The provider renders charts without Helm hooks, so what a hook would have made
(argocd-redis, argocd-secret) is made here from generated secrets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
import pulumi_tls as tls
import yaml

from components.render import platform_values as pv

# The chart versions this program is written and tested against.
CHART_VERSIONS: Mapping[str, str] = {
    "sealed-secrets": "2.18.5",
    "traefik": "41.3.0",
    "argo-cd": "10.1.1",
}

SEALING_KEY_SECRET = "sealed-secrets-key"
TRAEFIK_CERT_SECRET = "traefik-default-cert"
TRAEFIK_AUTH_SECRET = "traefik-dashboard-auth"
ARGOCD_PART_OF = {"app.kubernetes.io/part-of": "argocd"}  # argocd-server only reads Secrets with this label
# The sealing certificate is renewed (same key, so every SealedSecret stays
# readable) by the `up` that runs within a year of its expiry.
_TEN_YEARS_H = 10 * 365 * 24
_ONE_YEAR_H = 365 * 24


def chart_dir(name: str, path: str, wanted: str) -> str:
    """``path`` if it is a chart directory whose Chart.yaml has version ``wanted``; one-line ValueError otherwise."""
    chart_yaml = Path(path) / "Chart.yaml"
    try:
        meta = yaml.safe_load(chart_yaml.read_text()) or {}
    except OSError:
        raise ValueError(f"platform: chart {name}: no Chart.yaml in {path} (wanted version {wanted})") from None
    found = str(meta.get("version", ""))
    if meta.get("name") != name or found != wanted:
        raise ValueError(
            f"platform: chart {name}: {path} holds {meta.get('name')} {found or '(no version)'}, wanted {name} {wanted}"
        )
    return str(Path(path).resolve())


@dataclass(frozen=True)
class DefaultCertificate:
    """A supplied default TLS certificate for Traefik (PEM); the key is secret."""

    cert_pem: pulumi.Input[str]
    key_pem: pulumi.Input[str]


@dataclass(frozen=True)
class PlatformArgs:
    """``charts``: chart name -> local chart directory (each checked against ``chart_versions``).

    ``http_nodeport``/``https_nodeport`` are the NodePorts HAProxy targets
    (cfg.load_balancer.ingress_http_nodeport / ingress_https_nodeport).
    ``service_monitors`` needs the monitoring CRDs (off where
    kube-prometheus-stack is not installed first). ``skip_await`` does not
    wait for workloads to become ready (an API server with no nodes).
    ``argocd_password_mtime``: bump it with the password's rotation, Argo CD
    then rejects tokens issued before it; a fixed value keeps re-previews empty.
    """

    domain: str
    http_nodeport: int
    https_nodeport: int
    provider: k8s.Provider
    charts: Mapping[str, str]
    chart_versions: Mapping[str, str] = field(default_factory=lambda: dict(CHART_VERSIONS))
    argocd: bool = True
    keep_crds: bool = False
    service_monitors: bool = True
    skip_await: bool = False
    traefik_replicas: int = 2
    default_certificate: Optional[DefaultCertificate] = None
    argocd_password_mtime: str = "2026-01-01T00:00:00Z"


class Platform(pulumi.ComponentResource):
    sealing_certificate: pulumi.Output[str]
    default_certificate: pulumi.Output[str]
    dashboard_password: pulumi.Output[str]
    argocd_admin_password: Optional[pulumi.Output[str]]

    def __init__(self, name: str, args: PlatformArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("microcloud:platform:Platform", name, None, opts)
        # Fail before any resource is registered on a missing or mis-versioned chart.
        needed = ["sealed-secrets", "traefik"] + (["argo-cd"] if args.argocd else [])
        self._charts = {}
        for chart in needed:
            if chart not in args.charts:
                raise ValueError(f"platform: chart {chart}: no chart directory given (wanted version {args.chart_versions[chart]})")
            self._charts[chart] = chart_dir(chart, args.charts[chart], args.chart_versions[chart])
        self._name = name
        self._args = args
        self._k8s = pulumi.ResourceOptions(parent=self, provider=args.provider)
        self._child = pulumi.ResourceOptions(parent=self)

        self._create_sealed_secrets()
        self._create_traefik()
        self.argocd_admin_password = self._create_argocd() if args.argocd else None

        outputs = {
            "sealing_certificate": self.sealing_certificate,
            "default_certificate": self.default_certificate,
            "dashboard_password": self.dashboard_password,
        }
        if self.argocd_admin_password is not None:
            outputs["argocd_admin_password"] = self.argocd_admin_password
        self.register_outputs(outputs)

    def _k8s_opts(self, **kw) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions.merge(self._k8s, pulumi.ResourceOptions(**kw))

    def _chart(self, chart: str, release: str, namespace: pulumi.Input[str], values: dict, **kw) -> k8s.helm.v4.Chart:
        return k8s.helm.v4.Chart(
            f"{self._name}-{release}",
            chart=self._charts[chart],
            name=release,
            namespace=namespace,
            values=values,
            skip_await=self._args.skip_await,
            opts=self._k8s_opts(**kw),
        )

    # ------------------------------------------------------------ Sealed Secrets

    def _create_sealed_secrets(self) -> None:
        n = self._name
        key = tls.PrivateKey(
            f"{n}-sealing-key",
            algorithm="RSA",
            rsa_bits=4096,
            opts=pulumi.ResourceOptions.merge(
                self._child,
                pulumi.ResourceOptions(additional_secret_outputs=["private_key_pem", "private_key_openssh", "private_key_pem_pkcs8"]),
            ),
        )
        # The subject the controller gives the keys it makes itself.
        cert = tls.SelfSignedCert(
            f"{n}-sealing-cert",
            private_key_pem=key.private_key_pem,
            subject=tls.SelfSignedCertSubjectArgs(common_name="sealed-secret", organization="sealed-secret"),
            validity_period_hours=_TEN_YEARS_H,
            early_renewal_hours=_ONE_YEAR_H,
            allowed_uses=["key_encipherment", "digital_signature", "data_encipherment", "cert_signing"],
            is_ca_certificate=True,
            opts=self._child,
        )
        spec = pv.SealedSecretsSpec(key_secret=SEALING_KEY_SECRET)
        secret = k8s.core.v1.Secret(
            f"{n}-sealing-key",
            metadata=pv.sealing_key_metadata(spec),
            type="kubernetes.io/tls",
            string_data={"tls.crt": cert.cert_pem, "tls.key": pulumi.Output.secret(key.private_key_pem)},
            # A fixed name: a replacement must delete the old Secret first.
            opts=self._k8s_opts(delete_before_replace=True),
        )
        # No data flows from the key Secret into the chart, but the controller
        # makes a key of its own when it starts and finds none labelled active.
        self._chart("sealed-secrets", "sealed-secrets", spec.namespace, pv.sealed_secrets_values(spec), depends_on=[secret])
        self.sealing_certificate = cert.cert_pem

    # ------------------------------------------------------------ Traefik

    def _create_traefik(self) -> None:
        n, a = self._name, self._args
        ns = pv.TRAEFIK_NAMESPACE
        if a.default_certificate is None:
            key = tls.PrivateKey(
                f"{n}-ingress-key",
                algorithm="ECDSA",
                ecdsa_curve="P256",
                opts=pulumi.ResourceOptions.merge(
                    self._child,
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
                opts=self._child,
            )
            cert_pem, key_pem = cert.cert_pem, key.private_key_pem
        else:
            cert_pem, key_pem = a.default_certificate.cert_pem, a.default_certificate.key_pem
        cert_secret = k8s.core.v1.Secret(
            f"{n}-ingress-cert",
            metadata={"name": TRAEFIK_CERT_SECRET, "namespace": ns},
            type="kubernetes.io/tls",
            string_data={"tls.crt": cert_pem, "tls.key": pulumi.Output.secret(key_pem)},
            opts=self._k8s_opts(delete_before_replace=True),
        )
        password = random.RandomPassword(
            f"{n}-dashboard-password",
            length=24,
            special=False,
            opts=pulumi.ResourceOptions.merge(self._child, pulumi.ResourceOptions(additional_secret_outputs=["bcrypt_hash"])),
        )
        # Traefik reads htpasswd lines from the `users` key: only the bcrypt hash is in the cluster.
        auth_secret = k8s.core.v1.Secret(
            f"{n}-dashboard-auth",
            metadata={"name": TRAEFIK_AUTH_SECRET, "namespace": ns},
            type="Opaque",
            string_data={"users": pulumi.Output.secret(password.bcrypt_hash).apply(lambda h: f"admin:{h}")},
            opts=self._k8s_opts(delete_before_replace=True),
        )
        spec = pv.TraefikSpec(
            domain=a.domain,
            http_nodeport=a.http_nodeport,
            https_nodeport=a.https_nodeport,
            default_cert_secret=TRAEFIK_CERT_SECRET,
            dashboard_auth_secret=TRAEFIK_AUTH_SECRET,
            namespace=ns,
            replicas=a.traefik_replicas,
        )
        # The values name both Secrets (fixed names, no data flow); Traefik reads them when it starts.
        self._chart("traefik", "traefik", ns, pv.traefik_values(spec), depends_on=[cert_secret, auth_secret])
        self.default_certificate = pulumi.Output.from_input(cert_pem)
        self.dashboard_password = pulumi.Output.secret(password.result)

    # ------------------------------------------------------------ Argo CD

    def _create_argocd(self) -> pulumi.Output[str]:
        n, a = self._name, self._args
        spec = pv.ArgoCdSpec(domain=a.domain, keep_crds=a.keep_crds, service_monitors=a.service_monitors)
        ns = k8s.core.v1.Namespace(f"{n}-argocd", metadata={"name": spec.namespace}, opts=self._k8s_opts())
        namespace = ns.metadata.name
        secret_opts = pulumi.ResourceOptions.merge(self._child, pulumi.ResourceOptions(additional_secret_outputs=["bcrypt_hash"]))
        admin = random.RandomPassword(f"{n}-argocd-admin", length=24, special=False, opts=secret_opts)
        server_key = random.RandomPassword(f"{n}-argocd-server-key", length=48, special=False, opts=secret_opts)
        redis = random.RandomPassword(f"{n}-argocd-redis", length=32, special=False, opts=secret_opts)
        argocd_secret = k8s.core.v1.Secret(
            f"{n}-argocd-secret",
            metadata={"name": pv.ARGOCD_SECRET, "namespace": namespace, "labels": dict(ARGOCD_PART_OF)},
            type="Opaque",
            string_data={
                "admin.password": pulumi.Output.secret(admin.bcrypt_hash),
                "admin.passwordMtime": a.argocd_password_mtime,
                "server.secretkey": pulumi.Output.secret(server_key.result),
            },
            opts=self._k8s_opts(delete_before_replace=True),
        )
        redis_name, redis_key = pv.ARGOCD_REDIS_SECRET
        redis_secret = k8s.core.v1.Secret(
            f"{n}-argocd-redis",
            metadata={"name": redis_name, "namespace": namespace, "labels": dict(ARGOCD_PART_OF)},
            type="Opaque",
            string_data={redis_key: pulumi.Output.secret(redis.result)},
            opts=self._k8s_opts(delete_before_replace=True),
        )
        # The chart's pods mount both Secrets by their fixed names.
        self._chart("argo-cd", "argocd", namespace, pv.argocd_values(spec), depends_on=[argocd_secret, redis_secret])
        return pulumi.Output.secret(admin.result)
