"""K3s' CIS hardening as files and config.yaml keys: Pod Security admission, audit policy, secrets encryption, kernel defaults.

Pure: a ``Hardening`` in, file contents and config.yaml keys out. What it
writes follows K3s' hardening guide (https://docs.k3s.io/security/hardening-guide)
for the pinned release line:

- ``secrets-encryption``, with the EncryptionConfiguration K3s would write
  itself at cluster-init (``<data-dir>/server/cred/encryption-config.json``,
  aescbc then identity) made from a key Pulumi generates, so the key is in
  the stack's state (secret) and every etcd snapshot can be read back with it;
- ``protect-kernel-defaults`` and the sysctls the kubelet then insists on,
  written by first boot (``/etc/sysctl.d/90-kubelet.conf``);
- an AdmissionConfiguration (``psa.yaml``): Pod Security enforced cluster-wide
  at ``enforce``, ``audit``/``warn`` at their levels, namespaces exempt only
  with a reason; and EventRateLimit, which the guide enables beside NodeRestriction;
- an audit policy (``audit.yaml``) with the log rotated by the API server;
- kubelet, API server and controller-manager arguments of the guide.

The same files are what tests/k8s/test_k3s_hardening.py starts a real
kube-apiserver with, through ``apiserver_flags``: the flags K3s passes for
these keys.
"""

from __future__ import annotations

import base64
import hashlib
import json
import posixpath
from dataclasses import dataclass, field
from typing import Mapping

import yaml

from ..k3s_flags import DNS_LABEL

LEVELS = ("privileged", "baseline", "restricted")
# The guide's kernel settings: the kubelet with protect-kernel-defaults refuses to start otherwise.
SYSCTLS: Mapping[str, str] = {
    "kernel.panic": "10",
    "kernel.panic_on_oops": "1",
    "vm.overcommit_memory": "1",
    "vm.panic_on_oom": "0",
}
SYSCTL_PATH = "/etc/sysctl.d/90-kubelet.conf"
# Relative to <data-dir>/server (K3s' guide puts them there).
PSA_FILE = "psa.yaml"
AUDIT_POLICY_FILE = "audit.yaml"
AUDIT_LOG = "logs/audit.log"
# Relative to <data-dir>/server/cred: the file K3s generates when it is missing.
ENCRYPTION_CONFIG = "encryption-config.json"
CRED_FILES: tuple[str, ...] = (ENCRYPTION_CONFIG,)
ENCRYPTION_KEY_NAME = "aescbckey"
ENCRYPTION_KEY_BYTES = 32
# Servers carry this taint unless workloads may run there (K3s labels them control-plane;
# its CoreDNS and metrics-server tolerate it, as do DaemonSets such as node-exporter).
SERVER_TAINT = "node-role.kubernetes.io/control-plane:NoSchedule"
# kubelet: the guide's cipher suites (TLS 1.2 AEAD only).
TLS_CIPHERS = (
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,"
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,"
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305,TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305"
)


@dataclass(frozen=True)
class AuditLog:
    max_age_days: int = 30
    max_backups: int = 10
    max_size_mib: int = 100


@dataclass(frozen=True)
class Hardening:
    """What a K3s node is born with; every field relaxes one thing of the CIS profile."""

    secrets_encryption: bool = True
    protect_kernel_defaults: bool = True
    enforce: str = "baseline"
    audit: str = "restricted"
    warn: str = "restricted"
    # namespace -> why its pods may break the enforced level
    exemptions: Mapping[str, str] = field(default_factory=dict)
    # None: no audit log
    audit_log: AuditLog | None = AuditLog()


def check_hardening(h: Hardening) -> None:
    for what, level in (("enforce", h.enforce), ("audit", h.audit), ("warn", h.warn)):
        if level not in LEVELS:
            raise ValueError(f"k3s hardening: pod security {what} level {level!r} is not one of {', '.join(LEVELS)}")
    for ns, why in h.exemptions.items():
        if not DNS_LABEL.match(ns):
            raise ValueError(f"k3s hardening: exempt namespace {ns!r} is not a namespace name")
        if not str(why).strip():
            raise ValueError(f"k3s hardening: exempt namespace {ns} needs a reason")
    if h.audit_log is not None:
        a = h.audit_log
        if min(a.max_age_days, a.max_backups, a.max_size_mib) < 1:
            raise ValueError("k3s hardening: audit log rotation values must be at least 1")


def server_path(data_dir: str, name: str) -> str:
    return posixpath.join(data_dir, "server", name)


def cred_path(data_dir: str, name: str) -> str:
    return posixpath.join(data_dir, "server", "cred", name)


# ------------------------------------------------------------------ files


def render_psa(h: Hardening) -> str:
    """The API server's AdmissionConfiguration: PodSecurity defaults and exemptions, EventRateLimit limits."""
    check_hardening(h)
    exempt = sorted(h.exemptions)
    reasons = "".join(f"#   {ns}: {' '.join(str(h.exemptions[ns]).split())}\n" for ns in exempt)
    doc = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AdmissionConfiguration",
        "plugins": [
            {
                "name": "PodSecurity",
                "configuration": {
                    "apiVersion": "pod-security.admission.config.k8s.io/v1",
                    "kind": "PodSecurityConfiguration",
                    "defaults": {
                        "enforce": h.enforce, "enforce-version": "latest",
                        "audit": h.audit, "audit-version": "latest",
                        "warn": h.warn, "warn-version": "latest",
                    },
                    "exemptions": {"usernames": [], "runtimeClasses": [], "namespaces": exempt},
                },
            },
            {
                "name": "EventRateLimit",
                "configuration": {
                    "apiVersion": "eventratelimit.admission.k8s.io/v1alpha1",
                    "kind": "Configuration",
                    # The guide's server-wide limit: a flood of events cannot starve etcd.
                    "limits": [{"type": "Server", "qps": 5000, "burst": 20000}],
                },
            },
        ],
    }
    head = "# Rendered by microcloud (components/render/k3s_hardening.py).\n"
    if exempt:
        head += "# Namespaces exempt from Pod Security, and why:\n" + reasons
    return head + yaml.safe_dump(doc, sort_keys=False)


def render_audit_policy(h: Hardening) -> str:
    """The audit policy (``h.audit_log`` set): Metadata for every request (who did what to which object, never a body: no Secret lands in the log)."""
    if h.audit_log is None:
        raise ValueError("k3s hardening: no audit log, so no audit policy")
    doc = {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [
            # Probes and events are noise; they change nothing anyone audits.
            {"level": "None", "nonResourceURLs": ["/healthz*", "/readyz*", "/livez*", "/version"]},
            {"level": "None", "resources": [{"group": "", "resources": ["events"]}, {"group": "events.k8s.io", "resources": ["events"]}]},
            {"level": "Metadata"},
        ],
    }
    return "# Rendered by microcloud (components/render/k3s_hardening.py).\n" + yaml.safe_dump(doc, sort_keys=False)


# The seed the key is made from: a generated password of this length (letters and digits, ~381 bits).
ENCRYPTION_SEED_LENGTH = 64


def key_from_seed(seed: str) -> str:
    """The 32-byte key, base64, from a generated password: its SHA-256.

    Not pulumi-random's RandomBytes: that resource's ID is its ``base64``
    value, so the key would sit in clear in the state (IDs are never secret)
    and on screen in every display that names the resource.
    """
    if len(seed) < ENCRYPTION_SEED_LENGTH:
        raise ValueError(f"k3s hardening: the encryption key seed must be at least {ENCRYPTION_SEED_LENGTH} characters")
    return base64.b64encode(hashlib.sha256(seed.encode()).digest()).decode()


@dataclass(frozen=True)
class EncryptionKey:
    """The secrets encryption key: 32 bytes, base64 (``key_from_seed`` of a generated password)."""

    key_b64: str


def render_encryption_config(spec: EncryptionKey) -> str:
    """The EncryptionConfiguration K3s writes for ``secrets-encryption``: aescbc with one 32-byte key, then identity."""
    key_b64 = spec.key_b64
    try:
        raw = base64.b64decode(key_b64, validate=True)
    except (ValueError, TypeError):
        raise ValueError("k3s hardening: the secrets encryption key is not base64") from None
    if len(raw) != ENCRYPTION_KEY_BYTES:
        raise ValueError(f"k3s hardening: the secrets encryption key must be {ENCRYPTION_KEY_BYTES} bytes, not {len(raw)}")
    doc = {
        "kind": "EncryptionConfiguration",
        "apiVersion": "apiserver.config.k8s.io/v1",
        "resources": [{
            "resources": ["secrets"],
            "providers": [{"aescbc": {"keys": [{"name": ENCRYPTION_KEY_NAME, "secret": key_b64}]}}, {"identity": {}}],
        }],
    }
    return json.dumps(doc, indent=2) + "\n"


def kubelet_sysctl_text() -> str:
    """/etc/sysctl.d/90-kubelet.conf, the same for every K3s node (first boot writes it; the install checks it)."""
    head = "# Rendered by microcloud (components/render/k3s_hardening.py): K3s' protect-kernel-defaults needs these.\n"
    return head + "".join(f"{k}={v}\n" for k, v in sorted(SYSCTLS.items()))


def render_sysctl(h: Hardening) -> str:
    """The kubelet sysctls of a profile with ``protect-kernel-defaults``."""
    if not h.protect_kernel_defaults:
        raise ValueError("k3s hardening: protect-kernel-defaults is off, so no kubelet sysctls")
    return kubelet_sysctl_text()


# ------------------------------------------------------------------ config.yaml


def hardening_keys(h: Hardening, role: str, data_dir: str) -> dict:
    """The config.yaml keys of the profile for one role (servers run an agent: they get the kubelet's too)."""
    check_hardening(h)
    keys: dict = {}
    kubelet = ["anonymous-auth=false", "streaming-connection-idle-timeout=5m", f"tls-cipher-suites={TLS_CIPHERS}"]
    if h.protect_kernel_defaults:
        keys["protect-kernel-defaults"] = True
    keys["kubelet-arg"] = kubelet
    if role != "server":
        return keys
    if h.secrets_encryption:
        keys["secrets-encryption"] = True
    api = [
        "enable-admission-plugins=NodeRestriction,EventRateLimit",
        f"admission-control-config-file={server_path(data_dir, PSA_FILE)}",
        "service-account-extend-token-expiration=false",
    ]
    if h.audit_log is not None:
        a = h.audit_log
        api += [
            f"audit-policy-file={server_path(data_dir, AUDIT_POLICY_FILE)}",
            f"audit-log-path={server_path(data_dir, AUDIT_LOG)}",
            f"audit-log-maxage={a.max_age_days}",
            f"audit-log-maxbackup={a.max_backups}",
            f"audit-log-maxsize={a.max_size_mib}",
        ]
    keys["kube-apiserver-arg"] = api
    keys["kube-controller-manager-arg"] = ["terminated-pod-gc-threshold=100"]
    return keys


def server_files(h: Hardening, data_dir: str) -> dict[str, str]:
    """Absolute path -> content of the files a server's API server reads (the install script writes them, 0600)."""
    files = {server_path(data_dir, PSA_FILE): render_psa(h)}
    if h.audit_log is not None:
        files[server_path(data_dir, AUDIT_POLICY_FILE)] = render_audit_policy(h)
    return files


def apiserver_flags(config: Mapping, data_dir: str, root: str) -> list[str]:
    """The kube-apiserver flags K3s derives from these config.yaml keys, with every path moved under ``root``.

    ``kube-apiserver-arg`` entries pass through as ``--name=value``;
    ``secrets-encryption`` becomes K3s' ``--encryption-provider-config`` of
    the cred file (and its automatic reload). For the test API server only.
    """
    prefix = data_dir.rstrip("/") + "/"

    def moved(value: str) -> str:
        return value.replace(prefix, root.rstrip("/") + prefix) if value.startswith(prefix) else value

    flags = []
    for arg in config.get("kube-apiserver-arg", []):
        name, _, value = arg.partition("=")
        flags.append(f"--{name}={moved(value)}")
    if config.get("secrets-encryption"):
        flags.append(f"--encryption-provider-config={moved(cred_path(data_dir, ENCRYPTION_CONFIG))}")
        flags.append("--encryption-provider-config-automatic-reload=true")
    return flags
