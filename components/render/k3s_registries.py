"""K3s' /etc/rancher/k3s/registries.yaml: registry mirrors and per-registry credentials for containerd.

K3s reads the file when it starts (https://docs.k3s.io/installation/private-registry)
and writes containerd's config from it, so every pod on the node pulls from a
private registry without a pull secret in its namespace. The shape is K3s'
own (its loader's types: ``mirrors.<registry>.endpoint``/``rewrite``,
``configs.<registry>.auth.username``/``password``, ``configs.<registry>.tls``);
tests/test_k3s_registries.py reads every rendered file with that loader.

The file holds passwords: the install script gets it on its standard input
(in the join input, ``registries <base64>``), writes it 0600 and restarts K3s
only when it differs; nothing of it is in a script, an argument or a log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping, Optional

import yaml

from ..k3s_flags import check_registry_endpoint, check_registry_name

REGISTRIES_PATH = "/etc/rancher/k3s/registries.yaml"
HEADER = "# Rendered by microcloud (components/render/k3s_registries.py). Holds registry passwords: root only.\n"

# Passwords and user names go into YAML quoted by the dumper; a newline or NUL could still end a
# value early in containerd's TOML, so both are refused.
_NO_CONTROL = re.compile(r"^[^\x00-\x1f\x7f]*$")


@dataclass(frozen=True)
class Mirror:
    """Where containerd pulls a registry's images from: endpoint URLs tried in order, then the registry itself."""

    endpoints: tuple[str, ...]
    # regexp on the image name (never the tag) -> replacement, applied on the mirror endpoints.
    rewrites: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RegistryAuth:
    """Basic auth for one registry: a user and its password or token (GHCR: a personal access token)."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class RegistryConfig:
    auth: Optional[RegistryAuth] = None
    # A path on the node (K3s reads it): the CA that signs the registry's certificate.
    ca_file: Optional[str] = None
    insecure_skip_verify: bool = False


@dataclass(frozen=True)
class RegistriesSpec:
    mirrors: Mapping[str, Mirror] = field(default_factory=dict)
    configs: Mapping[str, RegistryConfig] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.mirrors and not self.configs


def check_registries(spec: RegistriesSpec) -> None:
    for name, mirror in spec.mirrors.items():
        check_registry_name(name)
        if not mirror.endpoints:
            raise ValueError(f"registries: mirror {name}: give at least one endpoint")
        for url in mirror.endpoints:
            check_registry_endpoint(url)
        for pattern in mirror.rewrites:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"registries: mirror {name}: rewrite {pattern!r} is not a regular expression ({err})") from None
    for name, conf in spec.configs.items():
        check_registry_name(name)
        if conf.auth is not None:
            if not conf.auth.username or not _NO_CONTROL.match(conf.auth.username):
                raise ValueError(f"registries: {name}: the user name is empty or holds a control character")
            if not conf.auth.password or not _NO_CONTROL.match(conf.auth.password):
                # Never the value itself: it is a secret.
                raise ValueError(f"registries: {name}: the password is empty or holds a control character (a newline?)")
        if conf.ca_file is not None and not conf.ca_file.startswith("/"):
            raise ValueError(f"registries: {name}: ca_file {conf.ca_file!r} is not an absolute path on the node")
        if conf.auth is None and conf.ca_file is None and not conf.insecure_skip_verify:
            raise ValueError(f"registries: {name}: a config entry needs auth, ca_file or insecure_skip_verify")


def registries_doc(spec: RegistriesSpec) -> dict:
    check_registries(spec)
    doc: dict = {}
    if spec.mirrors:
        doc["mirrors"] = {}
        for name in sorted(spec.mirrors):
            m = spec.mirrors[name]
            entry: dict = {"endpoint": list(m.endpoints)}
            if m.rewrites:
                entry["rewrite"] = dict(sorted(m.rewrites.items()))
            doc["mirrors"][name] = entry
    if spec.configs:
        doc["configs"] = {}
        for name in sorted(spec.configs):
            c = spec.configs[name]
            entry = {}
            if c.auth is not None:
                entry["auth"] = {"username": c.auth.username, "password": c.auth.password}
            tls: dict = {}
            if c.ca_file is not None:
                tls["ca_file"] = c.ca_file
            if c.insecure_skip_verify:
                tls["insecure_skip_verify"] = True
            if tls:
                entry["tls"] = tls
            doc["configs"][name] = entry
    return doc


def render_registries(spec: RegistriesSpec) -> str:
    """registries.yaml, keys sorted (equal specs give equal text); empty string for an empty spec (no file)."""
    if spec.empty:
        return ""
    return HEADER + yaml.safe_dump(registries_doc(spec), sort_keys=False, default_flow_style=False)
