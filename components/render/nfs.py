"""NFS: /etc/exports of a storage node, checked by the real exportfs without touching what the node exports.

Every export is limited to client network CIDRs with ``root_squash``, ``sync``
and ``no_subtree_check``; nothing gives a client root or insecure access.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass
from typing import Sequence

from ._template import render
from .storage import PLAIN_PATH

EXPORT_OPTIONS = ("rw", "sync", "no_subtree_check", "root_squash")


@dataclass(frozen=True)
class ExportSpec:
    path: str
    clients: tuple[str, ...]  # network CIDRs
    options: tuple[str, ...] = EXPORT_OPTIONS

    def __post_init__(self):
        if not PLAIN_PATH.match(self.path) or self.path == "/":
            raise ValueError(f"export {self.path!r}: not an absolute path of plain characters")
        if not self.clients:
            raise ValueError(f"export {self.path}: no client network")
        for c in self.clients:
            try:
                ipaddress.ip_network(c, strict=True)
            except ValueError:
                raise ValueError(f"export {self.path}: client {c!r} is not a network CIDR like 10.27.4.0/24") from None
        if any("no_root_squash" in o or "insecure" == o or o.startswith("all_squash") for o in self.options):
            raise ValueError(f"export {self.path}: {self.options} gives clients root or insecure access")
        for must in ("root_squash", "sync", "no_subtree_check"):
            if must not in self.options:
                raise ValueError(f"export {self.path}: needs {must}")


@dataclass(frozen=True)
class ExportsFile:
    """/etc/exports of one storage node."""

    node: str
    exports: tuple[ExportSpec, ...]


def render_exports(spec: ExportsFile) -> str:
    """/etc/exports: one line per exported path, one entry per client network."""
    node, exports = spec.node, spec.exports
    if len({e.path for e in exports}) != len(exports):
        raise ValueError(f"{node}: a path is exported twice")
    lines = []
    for e in exports:
        opts = ",".join(e.options)
        lines.append(e.path + " " + " ".join(f"{c}({opts})" for c in e.clients))
    return render("exports.j2", node=node, lines=lines)


def exports_validate_command(file: str) -> str:
    """Shell that checks an exports file with the real ``exportfs`` without changing what the node exports.

    In a private mount namespace the file is bound over /etc/exports and a
    scratch tmpfs over /var/lib/nfs (and /etc/exports.d), so ``exportfs -ra``
    parses it, stats every path and asks the kernel whether each can be
    exported, and writes its table only into the scratch directory. It fails
    on any error (an unknown option, a missing directory).
    """
    inner = (
        "set -e; mount --make-rprivate /; mount --bind \"$1\" /etc/exports; "
        "mount -t tmpfs tmpfs /var/lib/nfs; "
        "if [ -d /etc/exports.d ]; then mount -t tmpfs tmpfs /etc/exports.d; fi; "
        "exportfs -ra"
    )
    # The bind mount needs a file to cover, and exportfs its state directory.
    # No braces: day2.install_script formats a validator with str.format.
    return (
        "( [ -e /etc/exports ] || : > /etc/exports ) && mkdir -p /var/lib/nfs && "
        f"unshare -m sh -c {shlex.quote(inner)} sh {file}"
    )


def exports_verify_command(exports: Sequence[ExportSpec]) -> str:
    """Shell that succeeds only when ``exportfs -v`` shows every path to every client network with root_squash."""
    checks = []
    awk = (
        "/^\\// { path = $1; if (NF < 2) next; spec = $2 } "
        "!/^\\// { spec = $1 } "
        "path == p && index(spec, c \"(\") == 1 && spec ~ /[(,]root_squash[,)]/ && spec ~ /[(,]sync[,)]/ { found = 1 } "
        "END { exit !found }"
    )
    for e in exports:
        for c in e.clients:
            checks.append(f"exportfs -v | awk -v p={shlex.quote(e.path)} -v c={shlex.quote(c)} {shlex.quote(awk)}")
    return " && ".join(checks)


@dataclass(frozen=True)
class NfsMountSpec:
    """A client's mount of one export (NFSv4 over TCP, hard: a server away stalls I/O, never corrupts it)."""

    server: str  # IPv4 address
    export: str
    where: str
    description: str
    # Mount options besides the fixed ones, e.g. an SELinux context for every file of the mount.
    extra_options: tuple[str, ...] = ()


def render_nfs_mount(spec: NfsMountSpec) -> str:
    ipaddress.IPv4Address(spec.server)
    for p in (spec.export, spec.where):
        if not PLAIN_PATH.match(p) or p == "/":
            raise ValueError(f"nfs mount: {p!r} is not an absolute path of plain characters")
    for o in spec.extra_options:
        if not re.match(r'^[a-z_]+=("[a-z0-9_:]+"|[a-z0-9_.]+)$', o):
            raise ValueError(f"nfs mount {spec.where}: option {o!r} is not key=value")
    if not all(c.isalnum() or c in " ()._,:/-" for c in spec.description):
        raise ValueError(f"nfs mount {spec.where}: description {spec.description!r} has characters a unit file would mangle")
    return (
        f"# Generated by microcloud: {spec.description}.\n"
        "# Do not edit: `pulumi up` rewrites it.\n"
        "[Unit]\n"
        f"Description={spec.description}\n"
        "After=network-online.target\n"
        "Wants=network-online.target\n"
        "\n[Mount]\n"
        f"What={spec.server}:{spec.export}\n"
        f"Where={spec.where}\n"
        "Type=nfs4\n"
        f"Options={','.join(('vers=4.2', 'proto=tcp', 'hard', 'noatime', '_netdev', 'nofail', *spec.extra_options))}\n"
        "TimeoutSec=120\n"
        "\n[Install]\n"
        "WantedBy=remote-fs.target\n"
    )
