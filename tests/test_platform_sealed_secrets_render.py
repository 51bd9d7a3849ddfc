"""Sealed Secrets' values (components/render/platform/sealed_secrets.py): the kept sealing key, never renewed.

Plain Python (``unit``).
"""

from __future__ import annotations

import pytest

from components.render import platform as pv

unit = pytest.mark.unit


@unit
def test_sealed_secrets_uses_the_kept_key_and_never_renews():
    spec = pv.SealedSecretsSpec(key_secret="sealed-secrets-key-microcloud")
    v = pv.sealed_secrets_values(spec)
    assert v["fullnameOverride"] == "sealed-secrets-controller" and v["namespace"] == "kube-system"
    assert v["keyrenewperiod"] == "0" and v["secretName"] == spec.key_secret
    meta = pv.sealing_key_metadata(spec)
    assert meta["labels"] == {"sealedsecrets.bitnami.com/sealed-secrets-key": "active"}
    assert (meta["name"], meta["namespace"]) == (spec.key_secret, v["namespace"])
