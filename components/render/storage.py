"""Storage on the VMs: data disks, their mount units, NFS exports, what Longhorn needs.

Pure functions of frozen specs (no Pulumi). Every data disk of a node:

- reaches the guest with a serial (``libvirt_xml.render_domain_xslt``, applied to the
  domain XML), so the guest names it ``/dev/disk/by-id/virtio-<serial>``,
  whatever order the kernel finds the disks in;
- is formatted once, as a whole (no partition table), by
  ``render_prepare_script``, which never formats a disk holding anything;
- is mounted at ``/var/mnt/<disk>`` by a systemd mount unit naming its
  filesystem label (``render_mount_unit``).

On top of that, subdirectories of the disks are what the services use:
``<disk>/nfs`` is the NFS export of a storage node (``render_exports``),
``<disk>/longhorn`` is bind-mounted at Longhorn's default data path. They
exist only on the disk, so when a disk is missing nothing is exported and the
bind mount fails, instead of serving the root disk's empty mount point.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass
from typing import Sequence

from ._template import render

FSTYPE = "ext4"
DATA_ROOT = "/var/mnt"
LONGHORN_PATH = "/var/lib/longhorn"  # Longhorn's default data path
NFS_SUBDIR = "nfs"
# The database node's data and dumps (specs/database.py), beside the cluster's export, exported to it alone.
DATABASE_SUBDIR = "postgresql"
LONGHORN_SUBDIR = "longhorn"
# root_squash maps a client's root to this uid/gid, so it must own the export
# for the NFS provisioner (root in its pod) to create volume directories.
NOBODY = 65534
# virtio-blk keeps 20 bytes of serial; ext4 labels are at most 16.
SERIAL_MAX = 20
LABEL_MAX = 16
LABEL_PREFIX = "mc-"

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
# An absolute path of plain characters (devices, mount points, exports).
PLAIN_PATH = re.compile(r"^/[A-Za-z0-9._/-]*$")


def _check_name(name: str, what: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"{what} {name!r}: use lowercase letters, digits and '-'")
    return name


def _short(name: str, limit: int, keep: int) -> str:
    """``name`` if it fits in ``limit``, else its first ``keep`` characters and a hash (stable, unique enough per node)."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()
    return f"{name[:keep].rstrip('-')}-{digest[: limit - keep - 1]}"


def disk_serial(disk: str) -> str:
    """The serial a data disk carries in the domain XML: its name, shortened to what virtio-blk keeps."""
    return _short(_check_name(disk, "disk name"), SERIAL_MAX, 11)


def device_path(disk: str) -> str:
    """Where the guest's udev names the disk with that serial."""
    return f"/dev/disk/by-id/virtio-{disk_serial(disk)}"


def fs_label(disk: str) -> str:
    """The filesystem label the disk is formatted with and mounted by."""
    return LABEL_PREFIX + _short(_check_name(disk, "disk name"), LABEL_MAX - len(LABEL_PREFIX), 7)


def mount_point(disk: str) -> str:
    return f"{DATA_ROOT}/{_check_name(disk, 'disk name')}"


def systemd_escape_path(path: str) -> str:
    """``systemd-escape --path``: the unit-name form of an absolute path."""
    if not path.startswith("/"):
        raise ValueError(f"{path!r} is not an absolute path")
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ValueError(f"{path!r} is not a normalized path")
    if not parts:
        return "-"
    out = []
    for i, ch in enumerate("/".join(parts)):
        if ch == "/":
            out.append("-")
        elif ch.isascii() and (ch.isalnum() or ch in ":_") or (ch == "." and i > 0):
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode())
    return "".join(out)


def mount_unit_name(path: str) -> str:
    return systemd_escape_path(path) + ".mount"


# ---------------------------------------------------------------- disk preparation


@dataclass(frozen=True)
class DiskSpec:
    node: str
    disk: str
    device: str  # a stable path, device_path(disk) on the VMs
    label: str
    fstype: str = FSTYPE
    wait_s: int = 120  # for the device to appear

    def __post_init__(self):
        _check_name(self.node, "node name")
        _check_name(self.disk, "disk name")
        if not PLAIN_PATH.match(self.device):
            raise ValueError(f"{self.node}: data disk {self.disk}: {self.device!r} is not an absolute device path")
        if not re.match(r"^[A-Za-z0-9_-]+$", self.label) or len(self.label.encode()) > LABEL_MAX:
            raise ValueError(f"{self.node}: data disk {self.disk}: label {self.label!r} is not a valid ext4 label (<= 16 of A-Z a-z 0-9 _ -)")
        if self.fstype != FSTYPE:
            raise ValueError(f"{self.node}: data disk {self.disk}: only {FSTYPE} is supported, not {self.fstype!r}")
        if self.wait_s < 1:
            raise ValueError("wait_s must be at least 1")


def disk_spec(node: str, disk: str) -> DiskSpec:
    return DiskSpec(node=node, disk=disk, device=device_path(disk), label=fs_label(disk))


def render_prepare_script(spec: DiskSpec) -> str:
    """POSIX sh that formats the disk when (and only when) it is blank; see the template's header."""
    q = shlex.quote
    return render(
        "storage_prepare_disk.sh.j2",
        node=spec.node,
        disk=spec.disk,
        label=spec.label,
        fstype=spec.fstype,
        serial=disk_serial(spec.disk) if spec.device == device_path(spec.disk) else "(set in the domain XML)",
        node_q=q(spec.node),
        disk_q=q(spec.disk),
        device_q=q(spec.device),
        label_q=q(spec.label),
        fstype_q=q(spec.fstype),
        wait_s=int(spec.wait_s),
    )


# ---------------------------------------------------------------- mount units


@dataclass(frozen=True)
class MountSpec:
    what: str
    where: str
    fstype: str
    description: str
    options: tuple[str, ...] = ("defaults", "noatime", "nofail")
    # Units that must wait for this mount at boot (only ordered: they still
    # start when the mount fails, e.g. without the disk).
    before: tuple[str, ...] = ()
    requires_mounts_for: tuple[str, ...] = ()
    wanted_by: str = "local-fs.target"

    def __post_init__(self):
        for p in (self.what, self.where, *self.requires_mounts_for):
            if not PLAIN_PATH.match(p):
                raise ValueError(f"mount: {p!r} is not an absolute path of plain characters")
        if self.where in ("/", "/var", "/usr", "/etc"):
            raise ValueError(f"mount: refusing to mount over {self.where}")
        if "nofail" not in self.options:
            # A missing data disk must not keep the VM from booting.
            raise ValueError(f"mount {self.where}: data mounts are nofail")
        if not all(re.match(r"^[a-z0-9_=,.-]+$", o) for o in self.options):
            raise ValueError(f"mount {self.where}: bad option in {self.options}")
        if not re.match(r"^[A-Za-z0-9 ()._,:/-]+$", self.description):
            raise ValueError(f"mount {self.where}: description {self.description!r} has characters a unit file would mangle")

    @property
    def unit_name(self) -> str:
        return mount_unit_name(self.where)


def data_disk_mount(node: str, disk: str, before: Sequence[str] = ()) -> MountSpec:
    """The mount unit of a data disk: by its filesystem label, never by /dev/vdX."""
    return MountSpec(
        what=f"/dev/disk/by-label/{fs_label(disk)}",
        where=mount_point(disk),
        fstype=FSTYPE,
        description=f"microcloud data disk {disk} of {node}",
        before=tuple(before),
    )


def bind_mount(source: str, target: str, description: str, before: Sequence[str] = ()) -> MountSpec:
    """``target`` shows ``source``; it waits for (and requires) whatever mount holds ``source``."""
    return MountSpec(
        what=source,
        where=target,
        fstype="none",
        description=description,
        options=("bind", "nofail"),
        before=tuple(before),
        requires_mounts_for=(source,),
    )


def render_mount_unit(spec: MountSpec) -> str:
    return render(
        "storage.mount.j2",
        description=spec.description,
        requires_mounts_for=spec.requires_mounts_for,
        before=" ".join(spec.before),
        what=spec.what,
        where=spec.where,
        fstype=spec.fstype,
        options=",".join(spec.options),
        wanted_by=spec.wanted_by,
    )


# ---------------------------------------------------------------- activating and verifying mounts


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


def mount_activate(node: str, spec: MountSpec, subdirs: tuple[str, ...] = ()) -> str:
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
        if sub == NFS_SUBDIR:
            # root_squash makes a client's root nobody: nobody owns the export.
            steps.append(f"install -d -m 0755 -o {NOBODY} -g {NOBODY} {path}")
        elif sub == DATABASE_SUBDIR:
            # Its data and backups directories belong to the database node's postgres (specs/database.py).
            steps.append(f"install -d -m 0755 -o root -g root {path}")
        else:
            steps.append(f"install -d -m 0700 -o root -g root {path}")
    return " && ".join(steps)


def mount_verify(spec: MountSpec, subdirs: tuple[str, ...] = ()) -> str:
    w = shlex.quote(spec.where)
    checks = [f'[ "$(findmnt -rn -o SOURCE -M {w})" = "$(readlink -f {shlex.quote(spec.what)})" ]']
    checks += [f"[ -d {shlex.quote(spec.where + '/' + s)} ]" for s in subdirs]
    return " && ".join(checks)


def bind_activate(node: str, spec: MountSpec) -> str:
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


def bind_verify(spec: MountSpec) -> str:
    w, s = shlex.quote(spec.where), shlex.quote(spec.what)
    return f'mountpoint -q {w} && [ "$(stat -c %d:%i {w})" = "$(stat -c %d:%i {s})" ]'


# ---------------------------------------------------------------- services per OS


@dataclass(frozen=True)
class StorageServices:
    """Unit and package names: Flatcar ships them all; packaged OSes install the packages at first boot."""

    nfs_server_unit: str
    iscsid_unit: str
    nfs_server_packages: tuple[str, ...]
    longhorn_packages: tuple[str, ...]


SERVICES = {
    "flatcar": StorageServices("nfs-server.service", "iscsid.service", (), ()),
    "el9": StorageServices("nfs-server.service", "iscsid.service", ("nfs-utils",), ("iscsi-initiator-utils", "nfs-utils")),
    # nfs-kernel-server's unit is nfs-server.service (nfs-kernel-server is its alias).
    "debian": StorageServices("nfs-server.service", "iscsid.service", ("nfs-kernel-server",), ("open-iscsi", "nfs-common")),
}

# Longhorn's iSCSI initiator talks to the kernel through iscsi_tcp.
LONGHORN_MODULES = ("iscsi_tcp",)
LONGHORN_MODULES_FILE = "/etc/modules-load.d/microcloud-longhorn.conf"


# /etc/modules-load.d file (constant: nothing in it depends on the stack)
LONGHORN_MODULES_CONF = "# Generated by microcloud: kernel modules Longhorn's iSCSI initiator needs.\n" + "".join(
    f"{m}\n" for m in LONGHORN_MODULES
)
