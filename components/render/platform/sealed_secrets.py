"""Sealed Secrets' Helm values (chart 2.x) and the metadata of the sealing key Secret the program keeps."""

from __future__ import annotations

from dataclasses import dataclass

SEALED_SECRETS_NAMESPACE = "kube-system"
SEALED_SECRETS_CONTROLLER = "sealed-secrets-controller"  # the name kubeseal looks for
# The controller decrypts with every Secret in its namespace carrying this label.
SEALING_KEY_LABEL = ("sealedsecrets.bitnami.com/sealed-secrets-key", "active")


@dataclass(frozen=True)
class SealedSecretsSpec:
    """``key_secret``: the kubernetes.io/tls Secret holding the sealing key pair the program keeps.

    It carries ``SEALING_KEY_LABEL`` (see ``sealing_key_metadata``), so the
    controller decrypts with it; it never makes keys of its own
    (``keyrenewperiod`` 0), so every SealedSecret in Git stays sealed to the
    key in the program's state, and a rebuilt cluster decrypts them all.
    """

    key_secret: str
    namespace: str = SEALED_SECRETS_NAMESPACE
    fullname: str = SEALED_SECRETS_CONTROLLER


def sealing_key_metadata(spec: SealedSecretsSpec) -> dict:
    key, value = SEALING_KEY_LABEL
    return {"name": spec.key_secret, "namespace": spec.namespace, "labels": {key: value}}


def sealed_secrets_values(spec: SealedSecretsSpec) -> dict:
    return {
        "fullnameOverride": spec.fullname,
        "namespace": spec.namespace,
        # The prefix of keys the controller would generate; with renewal off it only names ours.
        "secretName": spec.key_secret,
        "keyrenewperiod": "0",
    }
