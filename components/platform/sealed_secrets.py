"""Sealed Secrets: the sealing key pair Pulumi generates and keeps, its Secret, the controller's chart."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pulumi
import pulumi_kubernetes as k8s
import pulumi_tls as tls

from components.render.platform.sealed_secrets import SealedSecretsSpec, sealed_secrets_values, sealing_key_metadata

if TYPE_CHECKING:
    from .component import Platform

SEALING_KEY_SECRET = "sealed-secrets-key"
# The sealing certificate is renewed (same key, so every SealedSecret stays
# readable) by the `up` that runs within a year of its expiry.
_TEN_YEARS_H = 10 * 365 * 24
_ONE_YEAR_H = 365 * 24


def create(p: "Platform") -> None:
    """The sealing key (protected with protect_data), its self-signed certificate, the key Secret and the chart; sets ``sealing_certificate``."""
    n = p._name
    # The key decrypts every SealedSecret in Git: in prod it outlives the stack's resources.
    key_opts = {"protect": True} if p._args.protect_data else {}
    key = tls.PrivateKey(
        f"{n}-sealing-key",
        algorithm="RSA",
        rsa_bits=4096,
        opts=pulumi.ResourceOptions.merge(
            p._child,
            pulumi.ResourceOptions(additional_secret_outputs=["private_key_pem", "private_key_openssh", "private_key_pem_pkcs8"],
                                   **key_opts),
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
        opts=p._child,
    )
    spec = SealedSecretsSpec(key_secret=SEALING_KEY_SECRET)
    secret = k8s.core.v1.Secret(
        f"{n}-sealing-key",
        metadata=sealing_key_metadata(spec),
        type="kubernetes.io/tls",
        string_data={"tls.crt": cert.cert_pem, "tls.key": pulumi.Output.secret(key.private_key_pem)},
        # A fixed name: a replacement must delete the old Secret first.
        opts=p._k8s_opts(delete_before_replace=True),
    )
    # No data flows from the key Secret into the chart, but the controller
    # makes a key of its own when it starts and finds none labelled active.
    p._chart("sealed-secrets", "sealed-secrets", spec.namespace, sealed_secrets_values(spec),
             depends_on=[secret, *p._network_policies("sealed-secrets")])
    p.sealing_certificate = cert.cert_pem
