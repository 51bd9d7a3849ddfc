"""The flags K3s accepts, per release line and role, and the checks of ``k3s.extra_args``: the escape hatch for flags we did not foresee.

Neutral ground like chart_pins: data and checks, importing nothing of the
program. The config refuses a bad ``extra_args`` when it loads (one line
naming the key); the K3s renderer checks again against what it writes.

A config.yaml key is a CLI flag without its ``--`` (https://docs.k3s.io/installation/configuration#configuration-file).
The sets below are the flags of ``k3s server`` and ``k3s agent`` of each
release line (https://docs.k3s.io/cli/server, https://docs.k3s.io/cli/agent;
the source's pkg/cli/cmds/server.go and agent.go), the hidden and deprecated
ones left out. A release line that is not here takes no extra arguments: the
run stops rather than hand K3s a flag nobody checked.

What ``extra_args`` may not set: the keys this program writes (the node's
identity, join, TLS SANs, the hardening profile: relax that with
``k3s.hardening``, never behind its back), and the ``*-arg`` entries whose
component flag the profile sets.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import urllib.parse
from typing import Mapping, Union

FlagValue = Union[bool, int, str, list]

_AGENT_V1_34 = frozenset({
    "config", "debug", "v", "vmodule", "log", "alsologtostderr",
    "token", "token-file", "server", "data-dir",
    "node-name", "with-node-id", "node-label", "node-taint",
    "image-credential-provider-bin-dir", "image-credential-provider-config",
    "docker", "container-runtime-endpoint", "default-runtime", "image-service-endpoint",
    "disable-default-registry-endpoint", "nonroot-devices", "pause-image", "snapshotter",
    "private-registry", "airgap-extra-registry",
    "node-ip", "node-external-ip", "node-internal-dns", "node-external-dns", "resolv-conf",
    "flannel-iface", "flannel-conf", "flannel-cni-conf-file", "vpn-auth", "vpn-auth-file",
    "kubelet-arg", "kube-proxy-arg", "protect-kernel-defaults",
    "rootless", "prefer-bundled-bin", "selinux", "lb-server-port", "enable-pprof",
})
_SERVER_ONLY_V1_34 = frozenset({
    "bind-address", "https-listen-port", "supervisor-port", "apiserver-port", "apiserver-bind-address",
    "advertise-address", "advertise-port", "tls-san", "tls-san-security",
    "cluster-cidr", "service-cidr", "service-node-port-range", "cluster-dns", "cluster-domain",
    "flannel-backend", "flannel-ipv6-masq", "flannel-external-ip", "egress-selector-mode", "servicelb-namespace",
    "write-kubeconfig", "write-kubeconfig-mode", "write-kubeconfig-group", "helm-job-image",
    "agent-token", "agent-token-file", "cluster-init", "cluster-reset", "cluster-reset-restore-path",
    "kube-apiserver-arg", "etcd-arg", "kube-controller-manager-arg", "kube-scheduler-arg", "kube-cloud-controller-manager-arg",
    "datastore-endpoint", "datastore-cafile", "datastore-certfile", "datastore-keyfile",
    "etcd-expose-metrics", "etcd-disable-snapshots", "etcd-snapshot-name", "etcd-snapshot-schedule-cron",
    "etcd-snapshot-retention", "etcd-snapshot-dir", "etcd-snapshot-compress",
    "etcd-s3", "etcd-s3-endpoint", "etcd-s3-endpoint-ca", "etcd-s3-skip-ssl-verify", "etcd-s3-access-key",
    "etcd-s3-secret-key", "etcd-s3-bucket", "etcd-s3-region", "etcd-s3-folder", "etcd-s3-insecure",
    "etcd-s3-timeout", "etcd-s3-proxy", "etcd-s3-config-secret", "etcd-s3-session-token",
    "default-local-storage-path", "disable", "disable-scheduler", "disable-cloud-controller",
    "disable-kube-proxy", "disable-network-policy", "disable-helm-controller", "embedded-registry",
    "supervisor-metrics", "system-default-registry",
    "secrets-encryption", "secrets-encryption-provider",
})
FLAGS: Mapping[str, Mapping[str, frozenset[str]]] = {
    "1.34": {"agent": _AGENT_V1_34, "server": _AGENT_V1_34 | _SERVER_ONLY_V1_34},
}
# Flags whose value is a list of ``name=value`` arguments for one component.
ARG_LISTS = frozenset({
    "kubelet-arg", "kube-proxy-arg", "kube-apiserver-arg", "etcd-arg",
    "kube-controller-manager-arg", "kube-scheduler-arg", "kube-cloud-controller-manager-arg",
})
# Never through extra_args: this program owns them (identity, join, PKI, datastore, profile).
MANAGED = frozenset({
    "config", "token", "token-file", "agent-token", "agent-token-file", "server", "data-dir",
    "node-name", "node-ip", "node-label", "node-taint", "cluster-init", "cluster-reset",
    "cluster-reset-restore-path", "tls-san", "disable", "https-listen-port", "write-kubeconfig-mode",
    "datastore-endpoint", "datastore-cafile", "datastore-certfile", "datastore-keyfile",
    "secrets-encryption", "secrets-encryption-provider", "protect-kernel-defaults", "rootless",
    # k3s.registries writes K3s' default registries.yaml; another path would hide it.
    "private-registry",
})
# The component flags the hardening profile (render/k3s_hardening.py) may set, per *-arg list:
# extra_args may not set them again (relax the profile with k3s.hardening instead).
PROFILE_ARGS: Mapping[str, frozenset[str]] = {
    "kubelet-arg": frozenset({"anonymous-auth", "streaming-connection-idle-timeout", "tls-cipher-suites"}),
    "kube-apiserver-arg": frozenset({
        "enable-admission-plugins", "admission-control-config-file", "service-account-extend-token-expiration",
        "audit-policy-file", "audit-log-path", "audit-log-maxage", "audit-log-maxbackup", "audit-log-maxsize",
    }),
    "kube-controller-manager-arg": frozenset({"terminated-pod-gc-threshold"}),
}
_ARG = re.compile(r"^[a-z0-9][a-z0-9-]*=.*$")
_VERSION = re.compile(r"^v(\d+)\.(\d+)\.\d+\+k3s\d+$")

# Kubernetes' DNS-1123 label: a namespace's name (the Pod Security exemptions name namespaces).
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def release_line(version: str) -> str:
    m = _VERSION.match(version)
    if not m:
        raise ValueError(f"k3s: {version!r} is not a K3s release like v1.34.2+k3s1")
    return f"{m.group(1)}.{m.group(2)}"


def check_extra_args(version: str, role: str, extra: Mapping[str, FlagValue], ours: Mapping[str, FlagValue]) -> None:
    """Refuse what K3s ``version`` would not accept for ``role``, what this program owns, and overrides of ``ours``.

    ``ours``: the config.yaml keys the program renders for the node (the
    ``*-arg`` lists among them are what an extra entry may not re-set).
    """
    if not extra:
        return
    line = release_line(version)
    if line not in FLAGS:
        raise ValueError(
            f"k3s.extra_args: the flags of K3s {line} are not known to this program (known: {', '.join(sorted(FLAGS))}); "
            "drop extra_args or use a known release"
        )
    known = FLAGS[line][role]
    for key, value in extra.items():
        where = f"k3s.extra_args.{role}.{key}"
        if key in MANAGED:
            raise ValueError(f"{where}: the program sets {key} itself (see k3s.hardening and the node settings)")
        if key not in known:
            near = difflib.get_close_matches(key, sorted(known), n=3)
            other = "server" if role == "agent" else "agent"
            hint = f"; a {other} flag" if key in FLAGS[line][other] else ""
            raise ValueError(f"{where}: not a K3s {line} {role} flag{hint}" + (f" (did you mean {', '.join(near)}?)" if near else ""))
        if key in ARG_LISTS:
            if not isinstance(value, list) or not all(isinstance(a, str) and _ARG.match(a) for a in value):
                raise ValueError(f"{where}: a list of name=value arguments")
            set_ = {a.partition("=")[0] for a in ours.get(key, [])} | PROFILE_ARGS.get(key, frozenset())
            for a in value:
                name = a.partition("=")[0]
                if name in set_:
                    raise ValueError(f"{where}: {name} is set by the hardening profile; relax it with k3s.hardening")
        elif isinstance(value, list):
            if not all(isinstance(a, (str, int)) and not isinstance(a, bool) for a in value):
                raise ValueError(f"{where}: a list of strings")
        elif not isinstance(value, (bool, int, str)):
            raise ValueError(f"{where}: a string, number, boolean or list")
        if key in ours and key not in ARG_LISTS:
            raise ValueError(f"{where}: the program sets {key} itself")


def merge_extra_args(ours: Mapping[str, FlagValue], extra: Mapping[str, FlagValue]) -> dict:
    """ours + extra: ``*-arg`` lists appended after ours, other keys added (``check_extra_args`` refused conflicts)."""
    out = dict(ours)
    for key, value in extra.items():
        if key in ARG_LISTS:
            out[key] = [*out.get(key, []), *value]
        else:
            out[key] = value
    return out


# A registry as containerd names it in registries.yaml: a host with an optional port, or "*"
# (every registry without an entry of its own). Read by k3s.registries and render/k3s_registries.py.
_HOST_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_REGISTRY = re.compile(rf"^({_HOST_LABEL})(\.{_HOST_LABEL})*(:\d{{1,5}})?$")


def check_registry_name(name: str) -> str:
    """A registry key of registries.yaml: ``host``, ``host:port`` or ``*``."""
    if name != "*" and not _REGISTRY.match(name):
        raise ValueError(f"{name!r} is not a registry host (like ghcr.io or registry.lan:5000), nor '*'")
    if ":" in name and not 0 < int(name.rsplit(":", 1)[1]) < 65536:
        raise ValueError(f"{name!r}: the port is not 1-65535")
    return name


def check_registry_endpoint(url: str) -> str:
    """A mirror endpoint: an http(s) URL with a host and at most a path (no credentials, query or fragment)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL with a host")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError(f"{url!r}: an endpoint carries no credentials, query or fragment (credentials go in configs)")
    try:
        parts.port
    except ValueError:
        raise ValueError(f"{url!r}: the port is not a number 1-65535") from None
    return url


def plain_http(url: str) -> bool:
    """An endpoint that sends credentials and images in clear (http to anything but the node itself)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        return False
    try:
        return not ipaddress.ip_address(parts.hostname or "").is_loopback
    except ValueError:
        return parts.hostname != "localhost"
