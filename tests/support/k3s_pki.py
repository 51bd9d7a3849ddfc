"""A real cluster PKI for the tests of the K3s join input: the CA files of K3s' custom-CA layout, made once by openssl.

The program makes these with pulumi-tls (components/cluster_pki.py); the
tests that run the install script need real certificates of the same shape
(one self-signed ECDSA P-256 CA per file pair, an RSA service-account key),
so that the CA hash in the token is that of a real certificate.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

from components.render import k3s, k3s_hardening, k3s_pki

# 32 bytes, base64: the shape of the program's key (k3s_hardening.key_from_seed).
ENCRYPTION_KEY = "bWljcm9jbG91ZC10ZXN0LWVuY3J5cHRpb24ta2V5ISE="
SERVER_PASSWORD = "s" * 8 + "0123456789abcdef0123456789abcdef"
AGENT_PASSWORD = "a" * 8 + "0123456789abcdef0123456789abcdef"


def _openssl(*args: str) -> None:
    tool = shutil.which("openssl")
    assert tool, "openssl is not installed (Debian package openssl)"
    subprocess.run([tool, *args], check=True, capture_output=True, timeout=60)


def tls_files(name: str = "test") -> dict[str, str]:
    """K3s' TLS_FILES path -> PEM: a CA of its own for each of the five, and the service key. ``name``: another PKI."""
    return dict(_tls_files(name))


@functools.lru_cache(maxsize=None)
def _tls_files(name: str) -> dict[str, str]:
    out: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="mc-k3s-pki-") as d:
        base = Path(d)
        cnf = base / "ca.cnf"
        cnf.write_text(
            "[req]\ndistinguished_name = dn\n[dn]\n"
            "[ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign,digitalSignature\n"
            "subjectKeyIdentifier = hash\n"
        )
        for ca, (cert, key) in k3s_pki.CA_FILES.items():
            c, k = base / f"{ca}.crt", base / f"{ca}.key"
            _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                     "-days", "2", "-subj", f"/CN=microcloud-{name}-{ca}-ca", "-config", str(cnf), "-extensions", "ca",
                     "-keyout", str(k), "-out", str(c))
            out[cert], out[key] = c.read_text(), k.read_text()
        sa = base / "service.key"
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(sa))
        out[k3s_pki.SERVICE_KEY] = sa.read_text()
    return out


def server_token(name: str = "test") -> str:
    return k3s_pki.secure_token(tls_files(name)[k3s_pki.SERVER_CA], "server", SERVER_PASSWORD)


def agent_token(name: str = "test") -> str:
    return k3s_pki.secure_token(tls_files(name)[k3s_pki.SERVER_CA], "node", AGENT_PASSWORD)


def encryption_config(key_b64: str = ENCRYPTION_KEY) -> str:
    return k3s_hardening.render_encryption_config(k3s_hardening.EncryptionKey(key_b64=key_b64))


def join_input(node: k3s.K3sNodeSpec, name: str = "test", key_b64: str = ENCRYPTION_KEY, registries: str = "") -> str:
    """The join input the program gives ``node`` (the same choice K3sCluster and ClusterPki make), as its install command's stdin.

    ``registries``: K3s' registries.yaml text (render/k3s_registries.py), "" for none.
    """
    encrypt = node.hardening is not None and node.hardening.secrets_encryption
    spec = k3s_pki.join_input_for(
        node.role, node.cluster_init, server_token=server_token(name), agent_token=agent_token(name), files=tls_files(name),
        creds={k3s_hardening.ENCRYPTION_CONFIG: encryption_config(key_b64)} if encrypt else {},
        registries=registries,
    )
    return k3s_pki.render_join_input(spec)
