"""The cluster's own PKI as K3s reads it: the CA file layout, the secure join tokens, the join input, the admin kubeconfig.

Pure: PEM text and secrets in, file contents out. The CAs and keys are made
by pulumi-tls (components/cluster_pki.py); this module only decides where
each lands and what the tokens and the kubeconfig say.

K3s' custom-CA layout (https://docs.k3s.io/cli/certificate#using-custom-ca-certificates):
every file below ``<data-dir>/server/tls`` on the first server before K3s
first starts; the other servers get them from the datastore when they join.

The secure token (https://docs.k3s.io/cli/token) is
``K10<CA hash>::<user>:<password>``. For a server CA file holding one
certificate, K3s' hash is the sha256 of that file's bytes
(pkg/clientaccess/token.go, hashCA), which is what a joining node computes
over ``/cacerts`` before it sends its credentials. The server token's user is
``server``; the agent token's is ``node`` (K3s' passwd users).
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from typing import Mapping, Optional

import yaml

from .k3s_hardening import CRED_FILES

# CA -> (certificate, key), relative to <data-dir>/server/tls.
CA_FILES: dict[str, tuple[str, str]] = {
    "server": ("server-ca.crt", "server-ca.key"),
    "client": ("client-ca.crt", "client-ca.key"),
    "request-header": ("request-header-ca.crt", "request-header-ca.key"),
    "etcd-server": ("etcd/server-ca.crt", "etcd/server-ca.key"),
    "etcd-peer": ("etcd/peer-ca.crt", "etcd/peer-ca.key"),
}
# The service-account signing key (K3s: an RSA key, PEM).
SERVICE_KEY = "service.key"
TLS_FILES: tuple[str, ...] = tuple(sorted({p for pair in CA_FILES.values() for p in pair} | {SERVICE_KEY}))
SERVER_CA = CA_FILES["server"][0]

TOKEN_USERS = ("server", "node")
_CERT = re.compile(r"-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+-----END CERTIFICATE-----\n")
_SECRET = re.compile(r"^[A-Za-z0-9]{32,}$")
_LINE_VALUE = re.compile(r"^\S+$")


def _one_cert(pem: str, what: str) -> str:
    if not isinstance(pem, str) or _CERT.fullmatch(pem) is None:
        raise ValueError(f"k3s pki: {what} is not exactly one PEM certificate ending in a newline")
    return pem


def ca_hash(server_ca_pem: str) -> str:
    """The CA hash of K3s' secure token: the sha256 of server-ca.crt's bytes (one self-signed certificate)."""
    return hashlib.sha256(_one_cert(server_ca_pem, "the server CA").encode()).hexdigest()


def secure_token(server_ca_pem: str, user: str, password: str) -> str:
    """``K10<CA hash>::<user>:<password>``: a joining node checks the cluster's CA before it sends the password."""
    if user not in TOKEN_USERS:
        raise ValueError(f"k3s pki: token user {user!r} is neither server nor node")
    if not _SECRET.match(password or ""):
        raise ValueError("k3s pki: a token password must be at least 32 letters and digits")
    return f"K10{ca_hash(server_ca_pem)}::{user}:{password}"


@dataclass(frozen=True)
class JoinInput:
    """What a node's install command reads on its standard input.

    ``token``: the node's own join token (servers: the server token; agents:
    the agent token). ``agent_token``: servers only, the token they accept
    from agents; they get its password alone (``agent-token-file`` is K3s'
    short form: a server keeps it as the ``node`` user's password, while the
    agents' secure form names the CA to check). ``files``: the cluster-init server only, ``TLS_FILES`` path ->
    content, written before K3s' first start.
    """

    token: str
    agent_token: Optional[str] = None
    files: Mapping[str, str] = field(default_factory=dict)
    # The cluster-init server only: <data-dir>/server/cred files (the secrets encryption config).
    creds: Mapping[str, str] = field(default_factory=dict)
    # Every node: K3s' registries.yaml (render/k3s_registries.py), it holds registry passwords; "" for none.
    registries: str = field(default="", repr=False)
    # Every node: the disruption budget's kubeconfig (render/budget.py; its client key inside); "" for none.
    budget_kubeconfig: str = field(default="", repr=False)


def join_input_for(role: str, cluster_init: bool, *, server_token: str, agent_token: str, files: Mapping[str, str],
                   creds: Optional[Mapping[str, str]] = None, registries: str = "", budget_kubeconfig: str = "") -> JoinInput:
    """What a node of ``role`` gets: agents only the agent token; servers both tokens; the cluster-init server also the CAs and creds.

    Every node gets ``registries`` (K3s' registries.yaml, or "" for none).
    """
    if role == "agent":
        return JoinInput(token=agent_token, registries=registries, budget_kubeconfig=budget_kubeconfig)
    if role != "server":
        raise ValueError(f"k3s pki: role {role!r} is neither server nor agent")
    if not cluster_init:
        return JoinInput(token=server_token, agent_token=agent_token, registries=registries, budget_kubeconfig=budget_kubeconfig)
    return JoinInput(token=server_token, agent_token=agent_token, files=dict(files), creds=dict(creds or {}), registries=registries,
                     budget_kubeconfig=budget_kubeconfig)


def render_join_input(spec: JoinInput) -> str:
    """One line a value: ``token <t>``, ``agent-token <t>``, ``file <path> <base64>``; the install script parses it."""
    lines = []
    for kind, value in (("token", spec.token), ("agent-token", spec.agent_token)):
        if value is None:
            continue
        if not _LINE_VALUE.match(value) or not value.startswith("K10"):
            raise ValueError(f"k3s pki: the {kind} is not one secure-form token (K10...)")
    lines.append(f"token {spec.token}")
    if spec.agent_token is not None:
        hash_, _, creds = spec.agent_token.partition("::")
        if hash_ != spec.token.partition("::")[0] or not creds.startswith("node:"):
            raise ValueError("k3s pki: the agent token is not the node token of the same cluster CA")
        lines.append(f"agent-token {creds.removeprefix('node:')}")
    files = dict(spec.files)
    unknown = sorted(set(files) - set(TLS_FILES))
    if unknown:
        raise ValueError(f"k3s pki: {unknown} are not K3s CA files ({', '.join(TLS_FILES)})")
    if files and set(files) != set(TLS_FILES):
        raise ValueError(f"k3s pki: custom CAs need every file; missing {sorted(set(TLS_FILES) - set(files))}")
    if files and spec.token and not spec.token.startswith(f"K10{ca_hash(files[SERVER_CA])}::"):
        raise ValueError("k3s pki: the token's CA hash is not the hash of the server CA given")
    for path in sorted(files):
        lines.append(f"file {path} {base64.b64encode(files[path].encode()).decode()}")
    unknown = sorted(set(spec.creds) - set(CRED_FILES))
    if unknown:
        raise ValueError(f"k3s pki: {unknown} are not K3s cred files ({', '.join(CRED_FILES)})")
    if spec.creds and not files:
        raise ValueError("k3s pki: cred files go to the cluster-init server only, with the CAs")
    for name in sorted(spec.creds):
        lines.append(f"cred {name} {base64.b64encode(spec.creds[name].encode()).decode()}")
    if spec.registries:
        lines.append(f"registries {base64.b64encode(spec.registries.encode()).decode()}")
    if spec.budget_kubeconfig:
        lines.append(f"budget {base64.b64encode(spec.budget_kubeconfig.encode()).decode()}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class KubeconfigSpec:
    """An admin kubeconfig: its name, the API server URL, the server CA and the client certificate and key (PEM)."""

    name: str
    server: str
    ca_pem: str
    cert_pem: str
    key_pem: str
    # The user entry's name; "" for ``<name>-admin``.
    user: str = ""


def render_kubeconfig(spec: KubeconfigSpec) -> str:
    """An admin kubeconfig with the certificates inline: trusts only the cluster's server CA."""
    name, server, ca_pem, cert_pem, key_pem = spec.name, spec.server, spec.ca_pem, spec.cert_pem, spec.key_pem
    user = spec.user or f"{name}-admin"
    if not server.startswith("https://"):
        raise ValueError(f"k3s pki: the API server {server!r} is not an https URL")
    if "PRIVATE KEY-----" not in key_pem:
        raise ValueError("k3s pki: the client key is not a PEM private key")

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": b64(_one_cert(ca_pem, "the server CA"))}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(_one_cert(cert_pem, "the admin certificate")), "client-key-data": b64(key_pem)}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": user}}],
        "current-context": name,
    }
    return yaml.safe_dump(doc, sort_keys=False)
