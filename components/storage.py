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
import shlex
from dataclasses import dataclass, field
from typing import Mapping, Optional

import pulumi
from pulumi_command import remote

from .config import K3S_ROLES, NodeConfig, StackConfig
from .day2 import NodeAccess, apply_file
from .render.firewalld import firewalld_script
from .render import k3s
from .render import storage as st
from .render.os_family import family_of

SCRIPT_DIR = "/var/lib/microcloud/storage"
NFS_PORT = 2049  # NFSv4: one TCP port, no portmapper
UNIT_DIR = "/etc/systemd/system"
EXPORTS = "/etc/exports"


# ---------------------------------------------------------------- the plan (pure)


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
    exports: tuple[st.ExportSpec, ...] = ()

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
            exports = (st.ExportSpec(path=f"{st.mount_point(nfs_disk)}/{st.NFS_SUBDIR}", clients=clients),)
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


def unit_validator(unit: str) -> str:
    """``systemd-analyze verify`` of the new unit under its real name (it checks Where= against the name).

    It fails on a non-zero exit and on any message naming the unit; messages
    about other units already on the node are not this file's fault.
    """
    u = shlex.quote(unit)
    return (
        f'd=$(mktemp -d); cp {{file}} "$d"/{u}; out=$(systemd-analyze verify "$d"/{u} 2>&1); rc=$?; rm -rf "$d"; '
        f'printf "%s\\n" "$out" >&2; [ $rc -eq 0 ] && ! printf "%s\\n" "$out" | grep -qF {u}'
    )


def _guard_mount_point(node: str, where: str) -> str:
    """Refuse to mount over a directory holding files on the root disk: they would be hidden, not lost, but unseen."""
    w = shlex.quote(where)
    return (
        f"{{ mountpoint -q {w} || [ ! -d {w} ] || [ -z \"$(ls -A {w})\" ] || "
        f"{{ echo \"microcloud: {node}: {where} holds files on the root disk; move them away, then run pulumi up again\" >&2; false; }}; }}"
    )


def mount_activate(node: str, spec: st.MountSpec, subdirs: tuple[str, ...] = ()) -> str:
    """Start (or remount) the unit, then make the service subdirectories on the mounted disk."""
    u, w = shlex.quote(spec.unit_name), shlex.quote(spec.where)
    steps = [
        "systemctl daemon-reload",
        _guard_mount_point(node, spec.where),
        f"systemctl enable -q {u}",
        # reload = remount with the new options: never unmounts a busy disk.
        f"systemctl reload-or-restart {u}",
        f"mountpoint -q {w}",
    ]
    for sub in subdirs:
        path = shlex.quote(f"{spec.where}/{sub}")
        if sub == st.NFS_SUBDIR:
            # root_squash makes a client's root nobody: nobody owns the export.
            steps.append(f"install -d -m 0755 -o {st.NOBODY} -g {st.NOBODY} {path}")
        else:
            steps.append(f"install -d -m 0700 -o root -g root {path}")
    return " && ".join(steps)


def mount_verify(spec: st.MountSpec, subdirs: tuple[str, ...] = ()) -> str:
    w = shlex.quote(spec.where)
    checks = [f'[ "$(findmnt -rn -o SOURCE -M {w})" = "$(readlink -f {shlex.quote(spec.what)})" ]']
    checks += [f"[ -d {shlex.quote(spec.where + '/' + s)} ]" for s in subdirs]
    return " && ".join(checks)


def bind_activate(node: str, spec: st.MountSpec) -> str:
    u, w = shlex.quote(spec.unit_name), shlex.quote(spec.where)
    return " && ".join(
        [
            "systemctl daemon-reload",
            _guard_mount_point(node, spec.where),
            # While unmounted, the mount point takes no writes: Longhorn finds
            # no disk instead of filling the root disk.
            f"{{ mountpoint -q {w} || {{ mkdir -p {w} && chattr +i {w}; }}; }}",
            f"systemctl enable -q {u}",
            f"systemctl reload-or-restart {u}",
        ]
    )


def bind_verify(spec: st.MountSpec) -> str:
    w, s = shlex.quote(spec.where), shlex.quote(spec.what)
    return f'mountpoint -q {w} && [ "$(stat -c %d:%i {w})" = "$(stat -c %d:%i {s})" ]'


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
                validate=unit_validator(mount.unit_name),
                activate=mount_activate(ns.node, mount, subdirs),
                verify=mount_verify(mount, subdirs),
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
                validate=unit_validator(lh.unit_name),
                activate=bind_activate(ns.node, lh),
                verify=bind_verify(lh),
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
        nfs = shlex.quote(ns.services.nfs_server_unit)
        holder = next(d for d, subs in ns.subdirs.items() if st.NFS_SUBDIR in subs)
        out.append(
            Step(
                "exports",
                st.render_exports(st.ExportsFile(ns.node, tuple(ns.exports))),
                EXPORTS,
                validate=st.exports_validate_command("{file}"),
                activate=f"systemctl enable -q {nfs} && systemctl start {nfs} && exportfs -ra",
                verify=st.exports_verify_command(ns.exports),
                after=(f"mount-{holder}",),
            )
        )
    return out


# ---------------------------------------------------------------- the component


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
                opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["stdout", "stderr"]),
            )
        return made.get("exports")
