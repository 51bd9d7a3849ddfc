"""Storage, planned from the stack config alone: what each node with data disks gets, and in which order.

``plan`` says per node which disk holds the NFS export and which Longhorn's
data, their mount units and the bind mount; ``steps`` turns one node's plan
into the files the Storage component delivers (``day2.apply_file``), each
with the command that validates, activates and verifies it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Mapping, Optional

from ..config import K3S_ROLES, NodeConfig, StackConfig
from ..render import k3s, nfs
from ..render import storage as st
from ..render.os_family import family_of

SCRIPT_DIR = "/var/lib/microcloud/storage"
UNIT_DIR = "/etc/systemd/system"
EXPORTS = "/etc/exports"


@dataclass(frozen=True)
class NodeStorage:
    """What one node gets. Pure data, from the stack config alone."""

    node: str
    os: str
    disks: tuple[st.DiskSpec, ...]
    mounts: tuple[st.MountSpec, ...]  # one per disk, same order
    # disk name -> the subdirectories of its mount the services use
    subdirs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    longhorn: Optional[st.MountSpec] = None  # the bind mount at LONGHORN_PATH
    exports: tuple[nfs.ExportSpec, ...] = ()

    @property
    def services(self) -> st.StorageServices:
        return st.SERVICES["flatcar" if self.os == "flatcar" else family_of(self.os).name]


def _pick(node: NodeConfig, name: str) -> str:
    names = [d.name for d in node.data_disks]
    return name if name in names else names[0]


def cluster_networks(cfg: StackConfig) -> tuple[str, ...]:
    """CIDRs of the networks the K3s nodes are on: the only clients of the NFS export (kubelet mounts from the node)."""
    nets = {n.network for n in cfg.nodes if n.role in K3S_ROLES}
    return tuple(str(net.cidr) for net in cfg.networks if net.name in nets)


def database_export(cfg: StackConfig, node: NodeConfig) -> Optional[nfs.ExportSpec]:
    """The database node's directory on the first storage node's NFS disk, exported to its address alone."""
    db = cfg.database_node
    storage = cfg.nodes_with("storage")
    if db is None or cfg.database is None or not storage or node.name != storage[0].name or not cfg.k3s.enabled:
        return None
    return nfs.ExportSpec(path=f"{st.mount_point(_pick(node, 'nfs'))}/{st.DATABASE_SUBDIR}", clients=(f"{db.ip}/32",))


def plan(cfg: StackConfig) -> list[NodeStorage]:
    """Every node with data disks, in config order."""
    out = []
    clients = cluster_networks(cfg)
    for node in cfg.nodes:
        if not node.data_disks:
            continue
        nfs_disk = _pick(node, "nfs") if node.role == "storage" else None
        lh_disk = _pick(node, "longhorn") if node.uses_longhorn else None
        subdirs: dict[str, tuple[str, ...]] = {}
        for disk, sub in ((nfs_disk, st.NFS_SUBDIR), (lh_disk, st.LONGHORN_SUBDIR)):
            if disk:
                subdirs[disk] = (*subdirs.get(disk, ()), sub)
        services = st.SERVICES["flatcar" if node.is_flatcar else family_of(node.os).name]
        mounts = tuple(
            # The NFS server starts after the disk it exports is mounted.
            st.data_disk_mount(node.name, d.name, before=(services.nfs_server_unit,) if d.name == nfs_disk else ())
            for d in node.data_disks
        )
        longhorn = None
        if lh_disk:
            longhorn = st.bind_mount(
                f"{st.mount_point(lh_disk)}/{st.LONGHORN_SUBDIR}",
                st.LONGHORN_PATH,
                f"Longhorn data path on data disk {lh_disk} of {node.name}",
                # K3s (and with it Longhorn) starts after its data path is there.
                before=(k3s.unit_name("server"), k3s.unit_name("agent")),
            )
        exports = ()
        if nfs_disk:
            exports = (nfs.ExportSpec(path=f"{st.mount_point(nfs_disk)}/{st.NFS_SUBDIR}", clients=clients),)
            db_export = database_export(cfg, node)
            if db_export is not None:
                exports += (db_export,)
                subdirs[nfs_disk] = (*subdirs[nfs_disk], st.DATABASE_SUBDIR)
        out.append(
            NodeStorage(
                node=node.name,
                os=node.os,
                disks=tuple(st.disk_spec(node.name, d.name) for d in node.data_disks),
                mounts=mounts,
                subdirs=subdirs,
                longhorn=longhorn,
                exports=exports,
            )
        )
    return out


@dataclass(frozen=True)
class Step:
    """One file delivered to a node by ``day2.apply_file``; ``after`` names earlier steps of the same node."""

    res: str
    content: str
    path: str
    validate: Optional[str]
    activate: str
    verify: str
    mode: str = "0644"
    after: tuple[str, ...] = ()


def steps(ns: NodeStorage) -> list[Step]:
    """What one node gets, in order: per disk its script and mount unit, then Longhorn's and NFS's files."""
    out: list[Step] = []
    for disk, mount in zip(ns.disks, ns.mounts):
        script = f"{SCRIPT_DIR}/prepare-disk-{disk.disk}.sh"
        out.append(
            Step(
                f"disk-{disk.disk}",
                st.render_prepare_script(disk),
                script,
                mode="0700",
                validate="sh -n {file}",
                activate=f"sh {shlex.quote(script)}",
                # The label the mount unit names now leads to this disk (and no other).
                verify=f'[ "$(readlink -f /dev/disk/by-label/{disk.label})" = "$(readlink -f {shlex.quote(disk.device)})" ]',
            )
        )
        subdirs = ns.subdirs.get(disk.disk, ())
        out.append(
            Step(
                f"mount-{disk.disk}",
                st.render_mount_unit(mount),
                f"{UNIT_DIR}/{mount.unit_name}",
                validate=st.unit_validator(mount.unit_name),
                activate=st.mount_activate(ns.node, mount, subdirs),
                verify=st.mount_verify(mount, subdirs),
                after=(f"disk-{disk.disk}",),
            )
        )
    if ns.longhorn is not None:
        holder = next(d for d, subs in ns.subdirs.items() if st.LONGHORN_SUBDIR in subs)
        lh = ns.longhorn
        out.append(
            Step(
                "longhorn-mount",
                st.render_mount_unit(lh),
                f"{UNIT_DIR}/{lh.unit_name}",
                validate=st.unit_validator(lh.unit_name),
                activate=st.bind_activate(ns.node, lh),
                verify=st.bind_verify(lh),
                after=(f"mount-{holder}",),
            )
        )
        iscsid = shlex.quote(ns.services.iscsid_unit)
        out.append(
            Step(
                "iscsi",
                st.LONGHORN_MODULES_CONF,
                st.LONGHORN_MODULES_FILE,
                # modprobe resolves each module as systemd-modules-load would (libkmod).
                validate="grep -v '^#' {file} | while read -r m; do [ -z \"$m\" ] || modprobe -n -q \"$m\" || exit 1; done",
                activate=f"systemctl restart systemd-modules-load && systemctl enable -q --now {iscsid}",
                verify=" && ".join([*(f"[ -d /sys/module/{m} ]" for m in st.LONGHORN_MODULES), f"systemctl is-active -q {iscsid}"]),
            )
        )
    if ns.exports:
        nfs_unit = shlex.quote(ns.services.nfs_server_unit)
        holder = next(d for d, subs in ns.subdirs.items() if st.NFS_SUBDIR in subs)
        out.append(
            Step(
                "exports",
                nfs.render_exports(nfs.ExportsFile(ns.node, tuple(ns.exports))),
                EXPORTS,
                validate=nfs.exports_validate_command("{file}"),
                activate=f"systemctl enable -q {nfs_unit} && systemctl start {nfs_unit} && exportfs -ra",
                verify=nfs.exports_verify_command(ns.exports),
                after=(f"mount-{holder}",),
            )
        )
    return out
