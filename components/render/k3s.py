"""K3s on a node: /etc/rancher/k3s/config.yaml, its systemd unit, and the idempotent install script.

The cluster token never appears in anything rendered here: config.yaml names
a root-only ``token-file``, and the install script writes that file from its
standard input (or copies it from a path on the node), so the token is in
neither config.yaml, a unit, a command line nor the script text.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
import shlex
import urllib.parse
from dataclasses import dataclass
from typing import Literal, Optional

import yaml

Role = Literal["server", "agent"]

CONFIG_PATH = "/etc/rancher/k3s/config.yaml"
TOKEN_FILE = "/etc/rancher/k3s/token"
DATA_DIR = "/var/lib/rancher/k3s"  # K3s' own default, written out so it is visible
# Flatcar's /usr is read-only; /opt/bin is on its PATH. Elsewhere the usual place.
FLATCAR_BIN_DIR = "/opt/bin"
BIN_DIR = "/usr/local/bin"
UNIT_DIR = "/etc/systemd/system"
# Ingress comes from our HAProxy to Traefik NodePorts; load balancing from the VIPs.
DISABLED_COMPONENTS = ("traefik", "servicelb")
# The tarball keeps its compression suffix: K3s picks the decoder by file name.
IMAGES_PREFIX = "microcloud-airgap-images"

# The config.yaml keys this module writes, per role. A key in config.yaml is
# the CLI flag without its leading "--" (https://docs.k3s.io/installation/configuration#configuration-file).
# Agent flags (https://docs.k3s.io/cli/agent): --token-file, --server,
# --data-dir, --node-name, --node-label, --node-taint, --node-ip.
# Servers run an agent too, so they accept all of those, plus the server-only
# flags (https://docs.k3s.io/cli/server): --cluster-init, --tls-san,
# --disable, --write-kubeconfig-mode, --https-listen-port.
# Embedded etcd needs no key: it follows from --cluster-init (server 1) or
# from joining such a server (servers 2..n).
AGENT_KEYS = frozenset({"server", "token-file", "data-dir", "node-name", "node-label", "node-taint", "node-ip"})
SERVER_KEYS = AGENT_KEYS | {"cluster-init", "tls-san", "disable", "write-kubeconfig-mode", "https-listen-port"}
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
    data_dir: str = DATA_DIR


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

    ``token_path`` None: the token arrives on the script's standard input
    (a remote command's ``stdin``); otherwise it is copied from that path on
    the node. ``root`` exists for the tests: every file lands under it, while
    the files still name their real paths.
    """

    node: K3sNodeSpec
    version: str
    binary: Artifact
    images: Optional[Artifact]
    bin_dir: str
    token_path: Optional[str] = None
    start_timeout: int = 300
    # Seconds to wait, after a (re)start, for the node to report Ready; 0: do not wait.
    ready_timeout: int = 0
    # The bootstrap run of server 1: a node that already holds etcd data is
    # left alone (its own, later run owns its files from then on).
    bootstrap: bool = False
    root: str = "/"


def server_url(spec: K3sNodeSpec) -> str:
    return f"https://{spec.api_vip}:{spec.api_port}"


def unit_name(role: Role) -> str:
    """The unit names of K3s' own installer, so operators find what they expect."""
    return "k3s.service" if role == "server" else "k3s-agent.service"


def k3s_config(spec: K3sNodeSpec) -> dict:
    """config.yaml as a dict: only keys K3s accepts for the node's role (``ALLOWED_KEYS``)."""
    _check_node(spec)
    doc: dict = {
        "node-name": spec.node_name,
        "node-ip": spec.node_ip,
        "token-file": spec.token_file,
        "data-dir": spec.data_dir,
    }
    if spec.node_labels:
        doc["node-label"] = sorted(spec.node_labels)
    if spec.node_taints:
        doc["node-taint"] = sorted(spec.node_taints)
    if spec.cluster_init:
        doc["cluster-init"] = True
    else:
        doc["server"] = server_url(spec)
    if spec.role == "server":
        doc["tls-san"] = [spec.api_vip, f"api.{spec.domain}"]
        doc["disable"] = sorted(spec.disable)
        doc["https-listen-port"] = spec.api_port
        # The admin kubeconfig holds a client key: root only.
        doc["write-kubeconfig-mode"] = "0600"
    extra = set(doc) - ALLOWED_KEYS[spec.role]
    if extra:
        raise ValueError(f"k3s: {spec.node_name}: keys {sorted(extra)} are not {spec.role} flags")
    return doc


def render_k3s_config(spec: K3sNodeSpec) -> str:
    """/etc/rancher/k3s/config.yaml: sorted keys, so equal specs give equal text (and hash)."""
    head = "# Rendered by microcloud (components/render/k3s.py). The token is in token-file, never here.\n"
    return head + yaml.safe_dump(k3s_config(spec), sort_keys=True, default_flow_style=False)


def render_k3s_unit(spec: K3sUnitSpec) -> str:
    """The systemd unit K3s' own installer writes, minus its environment files.

    Servers tell systemd when they are ready (Type=notify); agents do not.
    KillMode=process keeps the containers running across a K3s restart, so a
    config change does not take the node's workloads down.
    """
    if spec.role not in ("server", "agent"):
        raise ValueError(f"k3s: role {spec.role!r} is neither server nor agent")
    binary = posixpath.join(spec.bin_dir, "k3s")
    kind = "notify" if spec.role == "server" else "exec"
    return (
        "# Rendered by microcloud (components/render/k3s.py).\n"
        "[Unit]\n"
        f"Description=K3s {spec.role}\n"
        "Documentation=https://docs.k3s.io\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n\n"
        "[Service]\n"
        f"Type={kind}\n"
        "KillMode=process\n"
        "Delegate=yes\n"
        "LimitNOFILE=1048576\n"
        "LimitNPROC=infinity\n"
        "LimitCORE=infinity\n"
        "TasksMax=infinity\n"
        "TimeoutStartSec=0\n"
        "Restart=always\n"
        "RestartSec=5s\n"
        "ExecStartPre=-/sbin/modprobe br_netfilter\n"
        "ExecStartPre=-/sbin/modprobe overlay\n"
        f"ExecStart={binary} {spec.role}\n\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def render_k3s_install(spec: K3sInstallSpec) -> str:
    """POSIX sh, run as root on the node; idempotent.

    1. waits for first boot (cloud-init, where it runs);
    2. checks the sha256 of the binary and of the images tarball, fetched
       (https, to a file, never into a shell) or from their path on the
       node, before installing anything: a mismatch installs nothing;
    3. installs binary, images, token file (0600), config.yaml and unit,
       each only when its content differs;
    4. restarts the unit only when something changed (starts it when it is
       not running), waiting at most ``start_timeout`` seconds; a unit that
       does not come up gets the previous files back, is restarted with
       them, and the script fails naming the node.

    A second run with the same spec changes nothing and restarts nothing.
    """
    node, unit = spec.node, unit_name(spec.node.role)
    _check_install(spec)
    q = shlex.quote
    root = spec.root.rstrip("/")
    binary = posixpath.join(spec.bin_dir, "k3s")
    images_dir = posixpath.join(node.data_dir, "agent", "images")
    images_target = posixpath.join(images_dir, IMAGES_PREFIX + _suffix(spec.images.file_name)) if spec.images else ""
    config = render_k3s_config(node)
    unit_text = render_k3s_unit(K3sUnitSpec(role=node.role, bin_dir=spec.bin_dir))
    lines = [
        "#!/bin/sh",
        f"# K3s {spec.version} {node.role} on {node.node_name}; rendered by microcloud (components/render/k3s.py).",
        "set -eu",
        "umask 077",
        f"node={q(node.node_name)}",
        f"unit={q(unit)}",
        'fail() { echo "microcloud: $node: k3s: $*" >&2; exit 1; }',
        "sha_ok() { [ -f \"$2\" ] && [ \"$(sha256sum < \"$2\" | cut -d' ' -f1)\" = \"$1\" ]; }",
        # Same content? Hash both: cmp is not on every node (Flatcar has no diffutils).
        'same() { [ -f "$2" ] && [ "$(sha256sum < "$1")" = "$(sha256sum < "$2")" ]; }',
        'work=$(mktemp -d); trap \'rm -rf "$work"\' EXIT',
        "changed=0",
    ]
    if spec.bootstrap:
        lines += [
            "# Bootstrap only: once the node holds etcd data it is a member, and its own run keeps it converged.",
            f"if [ -d {q(root + posixpath.join(node.data_dir, 'server', 'db', 'etcd'))} ]; then",
            '  echo "microcloud: $node: k3s: already a cluster member; nothing to bootstrap"; exit 0',
            "fi",
            "# A cluster that already answers at the VIP (this node is new, or another one bootstrapped it)",
            "# is joined by the node's own run; a second cluster-init would split it.",
            f"if curl -ksf --max-time 5 -o /dev/null {q(server_url(node) + '/cacerts')}; then",
            '  echo "microcloud: $node: k3s: a cluster already answers at the API VIP; not initializing another"; exit 0',
            "fi",
        ]
    lines += [
        "# First boot must be over (Ignition ran before sshd on Flatcar; cloud-init elsewhere).",
        'if [ -e /run/cloud-init/enabled ] && command -v cloud-init >/dev/null 2>&1; then',
        '  rc=0; cloud-init status --wait >/dev/null 2>&1 || rc=$?',
        '  [ "$rc" -ne 1 ] || fail "first boot failed: cloud-init reported an error"',
        "fi",
        "# 1. Every pinned file is checked before anything is installed.",
    ]
    lines += _fetch("bin", spec.binary, root + binary)
    if spec.images:
        lines += _fetch("images", spec.images, root + images_target)
    lines.append("# 2. The token: from stdin or a root-only file, never an argument.")
    if spec.token_path is None:
        lines.append('cat > "$work/token"')
    else:
        lines.append(f'cat {q(spec.token_path)} > "$work/token"')
    lines += [
        '[ -s "$work/token" ] || fail "no cluster token given; nothing installed"',
        f"printf '%s' {q(config)} > \"$work/config\"",
        f"printf '%s' {q(unit_text)} > \"$work/unit\"",
        "# 3. Install what differs, keeping what it replaces until the unit runs the new files.",
        ': > "$work/undo"; n=0',
        "put() { # file target mode; status 1: already there",
        '  if same "$1" "$2"; then return 1; fi',
        "  n=$((n + 1))",
        '  if [ -e "$2" ]; then cp -p "$2" "$work/prev.$n"; echo "$n $2" >> "$work/undo"; else echo "- $2" >> "$work/undo"; fi',
        '  mkdir -p "$(dirname "$2")"',
        '  cp "$1" "$2.microcloud-new" && chmod "$3" "$2.microcloud-new" && mv -f "$2.microcloud-new" "$2"',
        "  changed=1",
        "}",
        "undo() {",
        '  while read -r k target; do',
        '    if [ "$k" = - ]; then rm -f "$target"; else mv -f "$work/prev.$k" "$target"; fi',
        '  done < "$work/undo"',
        "}",
        f'if [ -n "$bin_new" ]; then put "$bin_new" {q(root + binary)} 0755 || true; fi',
    ]
    if spec.images:
        lines.append(f'if [ -n "$images_new" ]; then put "$images_new" {q(root + images_target)} 0644 || true; fi')
    lines += [
        f'put "$work/token" {q(root + node.token_file)} 0600 || true',
        f'put "$work/config" {q(root + CONFIG_PATH)} 0600 || true',
        "unit_changed=0",
        f'if put "$work/unit" {q(root + posixpath.join(UNIT_DIR, unit))} 0644; then unit_changed=1; fi',
        "# 4. Restart only for a change (start when it is not running); a start that fails puts",
        "#    the previous files back and starts them again, so the node keeps what it ran.",
        "activate() {",
        '  [ "$unit_changed" = 0 ] || systemctl daemon-reload',
        '  systemctl is-enabled -q "$unit" 2>/dev/null || systemctl enable -q "$unit"',
        f'  timeout {int(spec.start_timeout)} systemctl restart "$unit" && systemctl is-active -q "$unit"',
        "}",
        'if [ "$changed" = 0 ] && systemctl is-active -q "$unit"; then',
        f'  echo "microcloud: $node: k3s {spec.version}: already installed, nothing changed"; exit 0',
        "fi",
        "if ! activate; then",
        '  if [ -s "$work/undo" ]; then',
        '    undo; unit_changed=1; activate >/dev/null 2>&1 || true',
        f'    fail "$unit did not start within {int(spec.start_timeout)}s with the new files; the previous ones are back (journalctl -u $unit)"',
        "  fi",
        f'  fail "$unit did not start within {int(spec.start_timeout)}s (journalctl -u $unit)"',
        "fi",
    ]
    if spec.ready_timeout > 0:
        kubeconfig = root + posixpath.join(node.data_dir, "agent", "kubelet.kubeconfig")
        jsonpath = "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"
        lines += [
            "# 5. Ready again before the next node is touched: the node's own kubelet credentials may read its Node.",
            "i=0",
            "while :; do",
            f'  st=$({q(root + binary)} kubectl --kubeconfig {q(kubeconfig)} get node "$node" -o {q(jsonpath)} 2>/dev/null) || st=',
            '  [ "$st" = True ] && break',
            f"  [ $i -lt {int(spec.ready_timeout)} ] || fail "
            f'"node $node is not Ready {int(spec.ready_timeout)}s after $unit started (kubectl describe node $node; journalctl -u $unit)"',
            "  i=$((i + 5)); sleep 5",
            "done",
        ]
    if spec.images:
        lines += [
            "# Only this version's tarball: K3s imports every file in the directory.",
            f"for f in {q(root + images_dir)}/{IMAGES_PREFIX}*; do",
            f'  if [ -e "$f" ] && [ "$f" != {q(root + images_target)} ]; then rm -f "$f"; fi',
            "done",
        ]
    lines += [
        "# kubectl, crictl and ctr are the same multi-call binary.",
        "for tool in kubectl crictl ctr; do",
        f'  link={q(root + spec.bin_dir)}/"$tool"',
        '  [ -e "$link" ] || [ -L "$link" ] || ln -s k3s "$link"',
        "done",
        f'echo "microcloud: $node: k3s {spec.version}: $unit runs the new files"',
    ]
    return "\n".join(lines) + "\n"


def _fetch(var: str, art: Artifact, target: str) -> list[str]:
    """Shell that sets ``${var}_new`` to a checked copy, or leaves it empty when ``target`` already matches."""
    q = shlex.quote
    name = art.file_name
    lines = [f"{var}_new=", f"if ! sha_ok {art.sha256} {q(target)}; then"]
    if art.url:
        lines += [
            f'  curl -fsSL --proto =https --retry 3 -o "$work/{var}" {q(art.url)} '
            f'|| fail "{name}: download from {art.url} failed; nothing installed"',
        ]
    else:
        lines += [
            f'  [ -f {q(art.path)} ] || fail "{name}: {art.path} is not on the node; nothing installed"',
            f'  cp {q(art.path)} "$work/{var}"',
        ]
    lines += [
        f'  sha_ok {art.sha256} "$work/{var}" || fail "{name}: sha256 is not {art.sha256}; nothing installed"',
        f'  {var}_new="$work/{var}"',
        "fi",
    ]
    return lines


def _suffix(name: str) -> str:
    for ext in (".tar.zst", ".tar.gz", ".tar.lz4", ".tar.bz2", ".tar"):
        if name.endswith(ext):
            return ext
    raise ValueError(f"k3s: airgap images {name!r} are not a .tar, .tar.zst, .tar.gz, .tar.lz4 or .tar.bz2 file")


def _check_node(spec: K3sNodeSpec) -> None:
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
    for path in (spec.token_file, spec.data_dir):
        if not path.startswith("/"):
            raise ValueError(f"{who}: {path!r} is not an absolute path")


def _check_install(spec: K3sInstallSpec) -> None:
    who = f"k3s: {spec.node.node_name}"
    if not _VERSION.match(spec.version):
        raise ValueError(f"{who}: {spec.version!r} is not a K3s release like v1.33.5+k3s1")
    if not spec.bin_dir.startswith("/"):
        raise ValueError(f"{who}: bin_dir {spec.bin_dir!r} is not an absolute path")
    if spec.bootstrap and not (spec.node.role == "server" and spec.node.cluster_init):
        raise ValueError(f"{who}: only the cluster-init server has a bootstrap run")
    if spec.ready_timeout < 0:
        raise ValueError(f"{who}: ready_timeout {spec.ready_timeout} is negative")
    if spec.token_path is not None and not spec.token_path.startswith("/"):
        raise ValueError(f"{who}: token_path {spec.token_path!r} is not an absolute path")
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
        _suffix(spec.images.file_name)
