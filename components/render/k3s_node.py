"""What a K3s node is, for the renderers in k3s.py: its specs, the config.yaml keys K3s accepts, the checks.

The renderers call ``check_node`` and ``check_install`` first, so a spec that
K3s would refuse (a flag of the wrong role, a label it cannot parse, an
artifact without its digest) never becomes a file.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Literal, Mapping, Optional

from ..k3s_flags import FlagValue, check_extra_args
from .budget import BudgetSpec
from .k3s_hardening import Hardening, check_hardening

Role = Literal["server", "agent"]

CONFIG_PATH = "/etc/rancher/k3s/config.yaml"
TOKEN_FILE = "/etc/rancher/k3s/token"
# Servers only: the token agents join with (K3s' --agent-token-file).
AGENT_TOKEN_FILE = "/etc/rancher/k3s/agent-token"
DATA_DIR = "/var/lib/rancher/k3s"  # K3s' own default, written out so it is visible
# Flatcar's /usr is read-only; /opt/bin is on its PATH. Elsewhere the usual place.
FLATCAR_BIN_DIR = "/opt/bin"
BIN_DIR = "/usr/local/bin"
UNIT_DIR = "/etc/systemd/system"
# Ingress comes from our HAProxy to Traefik NodePorts; load balancing from the VIPs.
# local-storage: one StorageClass (Longhorn's) may be the default; a claim without a
# class must not land on a node-local path.
DISABLED_COMPONENTS = ("local-storage", "servicelb", "traefik")
# The tarball keeps its compression suffix: K3s picks the decoder by file name.
IMAGES_PREFIX = "microcloud-airgap-images"

# The config.yaml keys this module writes, per role. A key in config.yaml is
# the CLI flag without its leading "--" (https://docs.k3s.io/installation/configuration#configuration-file).
# Agent flags (https://docs.k3s.io/cli/agent): --token-file, --server,
# --data-dir, --node-name, --node-label, --node-taint, --node-ip.
# Servers run an agent too, so they accept all of those, plus the server-only
# flags (https://docs.k3s.io/cli/server): --cluster-init, --tls-san,
# --disable, --write-kubeconfig-mode, --https-listen-port, --agent-token-file.
# Embedded etcd needs no key: it follows from --cluster-init (server 1) or
# from joining such a server (servers 2..n). The hardening profile
# (k3s_hardening.py) adds --protect-kernel-defaults and --kubelet-arg (both
# roles), --secrets-encryption, --kube-apiserver-arg and
# --kube-controller-manager-arg (servers); anything else comes from
# ``extra_args``, checked against the release's flags (k3s_flags.py).
AGENT_KEYS = frozenset({"server", "token-file", "data-dir", "node-name", "node-label", "node-taint", "node-ip",
                        "protect-kernel-defaults", "kubelet-arg"})
SERVER_KEYS = AGENT_KEYS | {"cluster-init", "tls-san", "disable", "write-kubeconfig-mode", "https-listen-port", "agent-token-file",
                            "secrets-encryption", "kube-apiserver-arg", "kube-controller-manager-arg"}
ALLOWED_KEYS: dict[str, frozenset[str]] = {"server": SERVER_KEYS, "agent": AGENT_KEYS}

_LABEL = re.compile(r"^([a-z0-9.-]+/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?=([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$")
_TAINT = re.compile(r"^([a-z0-9.-]+/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?(=[A-Za-z0-9._-]{0,63})?:(NoSchedule|PreferNoSchedule|NoExecute)$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^v\d+\.\d+\.\d+\+k3s\d+$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9._+-]+$")


@dataclass(frozen=True)
class K3sNodeSpec:
    """One node's config.yaml.

    ``cluster_init`` marks the bootstrap server: it starts the embedded etcd
    instead of joining through the API VIP. Once the other servers have
    joined, the same node is rendered with ``cluster_init=False`` and joins
    through the VIP like every other server, so no node stays special (K3s
    keeps an existing etcd member's data; the ``server`` key only matters to a
    node that has none).
    """

    role: Role
    node_name: str
    node_ip: str
    api_vip: str
    api_port: int
    domain: str
    cluster_init: bool = False
    node_labels: tuple[str, ...] = ()  # key=value
    node_taints: tuple[str, ...] = ()  # key[=value]:Effect
    disable: tuple[str, ...] = DISABLED_COMPONENTS
    token_file: str = TOKEN_FILE
    agent_token_file: str = AGENT_TOKEN_FILE
    data_dir: str = DATA_DIR
    # The CIS profile (k3s_hardening.py); None: K3s' own defaults (tests of the bare layout only).
    hardening: Optional[Hardening] = Hardening()
    # k3s.extra_args of the node's role, checked against ``version``'s flags.
    extra_args: Mapping[str, FlagValue] = field(default_factory=dict)
    version: Optional[str] = None


@dataclass(frozen=True)
class K3sUnitSpec:
    role: Role
    bin_dir: str


@dataclass(frozen=True)
class Artifact:
    """A pinned file: an https URL fetched on the node, or a path on the node it was copied to.

    Exactly one of ``url`` and ``path``; ``sha256`` is checked before anything is installed.
    """

    sha256: str
    url: Optional[str] = None
    path: Optional[str] = None

    @property
    def file_name(self) -> str:
        source = urllib.parse.urlsplit(self.url).path if self.url else self.path
        return posixpath.basename(urllib.parse.unquote(source or ""))


@dataclass(frozen=True)
class K3sInstallSpec:
    """The install script of one node.

    ``input_path`` None: the join input (``render/k3s_pki.py``: the node's
    token; on servers the agent token; on the cluster-init server the
    cluster CAs) arrives on the script's standard input (a remote command's
    ``stdin``); otherwise it is read from that root-only path on the node. ``root`` exists for the tests: every file lands under it, while
    the files still name their real paths.
    """

    node: K3sNodeSpec
    version: str
    binary: Artifact
    images: Optional[Artifact]
    bin_dir: str
    input_path: Optional[str] = None
    start_timeout: int = 300
    # Seconds to wait, after a (re)start, for the node to report Ready; 0: do not wait.
    ready_timeout: int = 0
    # The bootstrap run of server 1: a node that already holds etcd data is
    # left alone (its own, later run owns its files from then on).
    bootstrap: bool = False
    root: str = "/"
    # The disruption budget (render/budget.py): a restart of a running member takes a slot of
    # ``budget_pool`` first and frees it once the node is Ready again. None: no budget (tests of the script alone).
    budget: Optional[BudgetSpec] = None
    budget_pool: str = ""


def server_url(spec: K3sNodeSpec) -> str:
    return f"https://{spec.api_vip}:{spec.api_port}"


def unit_name(role: Role) -> str:
    """The unit names of K3s' own installer, so operators find what they expect."""
    return "k3s.service" if role == "server" else "k3s-agent.service"


def images_suffix(name: str) -> str:
    for ext in (".tar.zst", ".tar.gz", ".tar.lz4", ".tar.bz2", ".tar"):
        if name.endswith(ext):
            return ext
    raise ValueError(f"k3s: airgap images {name!r} are not a .tar, .tar.zst, .tar.gz, .tar.lz4 or .tar.bz2 file")


def check_node(spec: K3sNodeSpec) -> None:
    who = f"k3s: {spec.node_name}"
    if spec.role not in ALLOWED_KEYS:
        raise ValueError(f"{who}: role {spec.role!r} is neither server nor agent")
    if spec.cluster_init and spec.role != "server":
        raise ValueError(f"{who}: only a server can initialize the cluster")
    for what, ip in (("node_ip", spec.node_ip), ("api_vip", spec.api_vip)):
        try:
            ipaddress.IPv4Address(ip)
        except ValueError:
            raise ValueError(f"{who}: {what} {ip!r} is not an IPv4 address") from None
    if not 1 <= spec.api_port <= 65535:
        raise ValueError(f"{who}: api_port {spec.api_port} is not a port")
    for label in spec.node_labels:
        if not _LABEL.match(label):
            raise ValueError(f"{who}: node label {label!r} is not key=value")
    for taint in spec.node_taints:
        if not _TAINT.match(taint):
            raise ValueError(f"{who}: node taint {taint!r} is not key[=value]:NoSchedule|PreferNoSchedule|NoExecute")
    for path in (spec.token_file, spec.agent_token_file, spec.data_dir):
        if not path.startswith("/"):
            raise ValueError(f"{who}: {path!r} is not an absolute path")
    if spec.hardening is not None:
        check_hardening(spec.hardening)
    if spec.extra_args and spec.version is None:
        raise ValueError(f"{who}: extra_args need the K3s version they are checked against")


def check_extra(spec: K3sNodeSpec, ours: Mapping[str, FlagValue]) -> None:
    """extra_args against the release's flags and against what the program already writes (``ours``)."""
    if spec.extra_args:
        check_extra_args(spec.version or "", spec.role, spec.extra_args, ours)


def check_install(spec: K3sInstallSpec) -> None:
    who = f"k3s: {spec.node.node_name}"
    if not _VERSION.match(spec.version):
        raise ValueError(f"{who}: {spec.version!r} is not a K3s release like v1.33.5+k3s1")
    if not spec.bin_dir.startswith("/"):
        raise ValueError(f"{who}: bin_dir {spec.bin_dir!r} is not an absolute path")
    if spec.bootstrap and not (spec.node.role == "server" and spec.node.cluster_init):
        raise ValueError(f"{who}: only the cluster-init server has a bootstrap run")
    if spec.ready_timeout < 0:
        raise ValueError(f"{who}: ready_timeout {spec.ready_timeout} is negative")
    if spec.budget is not None:
        spec.budget.size(spec.budget_pool)
        if spec.ready_timeout == 0 and not spec.bootstrap:
            raise ValueError(f"{who}: a budget slot is freed when the node is Ready again: ready_timeout must be set")
    if spec.input_path is not None and not spec.input_path.startswith("/"):
        raise ValueError(f"{who}: input_path {spec.input_path!r} is not an absolute path")
    for what, art in (("binary", spec.binary), ("images", spec.images)):
        if art is None:
            continue
        if not _SHA256.match(art.sha256):
            raise ValueError(f"{who}: {what} sha256 {art.sha256!r} is not 64 lowercase hex digits")
        if (art.url is None) == (art.path is None):
            raise ValueError(f"{who}: {what} needs exactly one of url and path")
        if art.url is not None and not art.url.startswith("https://"):
            raise ValueError(f"{who}: {what} url {art.url!r} is not https")
        if art.path is not None and not art.path.startswith("/"):
            raise ValueError(f"{who}: {what} path {art.path!r} is not absolute on the node")
        if not _FILE_NAME.match(art.file_name):
            raise ValueError(f"{who}: {what} source {art.url or art.path!r} does not end in a plain file name")
    if spec.images is not None:
        images_suffix(spec.images.file_name)
