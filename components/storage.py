"""Storage: data disks, NFS on the storage nodes, what Longhorn needs on its nodes; configured in place.

Per node with data disks, over SSH with the day-2 helpers (each command keyed
on its content's digest and on the VM's domain id, so a new VM gets it all
again and an unchanged file is a no-op):

- ``<node>-disk-<disk>``: the disk preparation script, checked by ``sh -n``,
  run; it formats a blank disk once and refuses anything else, untouched;
- ``<node>-mount-<disk>``: the disk's mount unit (by filesystem label),
  checked by ``systemd-analyze verify``, mounted, verified with findmnt;
- Longhorn nodes: ``<node>-longhorn-mount`` bind-mounts ``<disk>/longhorn`` at
  Longhorn's default data path; ``<node>-iscsi`` loads iscsi_tcp and enables
  iscsid;
- storage nodes: ``<node>-exports``: /etc/exports, checked by the real
  ``exportfs`` in a private mount namespace, applied with ``exportfs -ra``,
  verified with ``exportfs -v``.

Which disk serves what: the disk named ``nfs`` (else the first) holds the NFS
export, the disk named ``longhorn`` (else the first) holds Longhorn's data.
Every other disk is prepared and mounted at /var/mnt/<disk> for the operator.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional

import pulumi
from pulumi_command import remote

from .config import StackConfig
from .day2 import NOTICES, NodeAccess, apply_file
from .render import storage as st
from .render.firewalld import firewalld_script
from .specs.storage import NodeStorage, plan, steps

NFS_PORT = 2049  # NFSv4: one TCP port, no portmapper


@dataclass(frozen=True)
class StorageArgs:
    stack: StackConfig
    # Every node with storage is reached through it.
    access: NodeAccess


class Storage(pulumi.ComponentResource):
    # The first storage node's address, known once its export is live; None without a storage node.
    nfs_server: Optional[pulumi.Output[str]]
    nfs_path: Optional[str]
    longhorn_path: str

    def __init__(self, name: str, args: StorageArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("microcloud:storage:Storage", name, None, opts)
        self._args = args
        self.longhorn_path = st.LONGHORN_PATH
        self.nfs_server = None
        self.nfs_path = None
        for ns in plan(args.stack):
            exported = self._configure(ns)
            if exported is not None and self.nfs_server is None:
                self.nfs_server = pulumi.Output.all(exported.id, args.access.ips[ns.node]).apply(lambda a: a[1])
                self.nfs_path = ns.exports[0].path
        self.register_outputs({"nfs_server": self.nfs_server, "nfs_path": self.nfs_path})

    def _configure(self, ns: NodeStorage) -> Optional[remote.Command]:
        """Every command of one node; returns its exports command, if it exports."""
        a = self._args
        conn = a.access.conn(ns.node)
        made: dict[str, remote.Command] = {}
        for step in steps(ns):
            made[step.res] = apply_file(
                f"{ns.node}-{step.res}",
                conn=conn,
                node=ns.node,
                content=step.content,
                path=step.path,
                mode=step.mode,
                validate=step.validate,
                activate=step.activate,
                verify=step.verify,
                replace_with=[a.access.domain_ids[ns.node]],
                # The order on the node (a disk before its mount, a mount
                # before what lives on it); no data flows between them.
                opts=pulumi.ResourceOptions(parent=self, depends_on=[made[r] for r in step.after]),
            )
        if ns.exports and ns.os != "flatcar":
            # EL9 runs firewalld where the image enables it: NFSv4 is one port, opened to the export's networks only.
            sources = sorted({c for e in ns.exports for c in e.clients})
            script = firewalld_script(ns.node, NFS_PORT, sources, without_firewalld="the export itself admits only the K3s networks")
            remote.Command(
                f"{ns.node}-nfs-firewall",
                connection=conn.args(),
                create=script,
                triggers=[hashlib.sha256(script.encode()).hexdigest(), a.access.domain_ids[ns.node]],
                # One line when firewalld is not running; the marker on stdout is for the program.
                logging=NOTICES,
                opts=conn.options(pulumi.ResourceOptions(parent=self, additional_secret_outputs=["stdout", "stderr"])),
            )
        return made.get("exports")
