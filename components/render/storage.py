"""Storage on the VMs: data disks, their mount units, NFS exports, what Longhorn needs.

Pure functions of frozen specs (no Pulumi). Every data disk of a node:

- reaches the guest with a serial (``render_disk_serial_xslt``, applied to the
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
import ipaddress
import re
import shlex
from dataclasses import dataclass
from typing import Optional, Sequence

from ._template import render

FSTYPE = "ext4"
DATA_ROOT = "/var/mnt"
LONGHORN_PATH = "/var/lib/longhorn"  # Longhorn's default data path
NFS_SUBDIR = "nfs"
LONGHORN_SUBDIR = "longhorn"
# root_squash maps a client's root to this uid/gid, so it must own the export
# for the NFS provisioner (root in its pod) to create volume directories.
NOBODY = 65534
EXPORT_OPTIONS = ("rw", "sync", "no_subtree_check", "root_squash")
# virtio-blk keeps 20 bytes of serial; ext4 labels are at most 16.
SERIAL_MAX = 20
LABEL_MAX = 16
LABEL_PREFIX = "mc-"

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_PATH = re.compile(r"^/[A-Za-z0-9._/-]*$")
_VOLUME = re.compile(r"^[A-Za-z0-9._-]+$")


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
        if not _PATH.match(self.device):
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
            if not _PATH.match(p):
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


# ---------------------------------------------------------------- NFS exports


@dataclass(frozen=True)
class ExportSpec:
    path: str
    clients: tuple[str, ...]  # network CIDRs
    options: tuple[str, ...] = EXPORT_OPTIONS

    def __post_init__(self):
        if not _PATH.match(self.path) or self.path == "/":
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


# ---------------------------------------------------------------- domain XML


@dataclass(frozen=True)
class DiskSerials:
    """(volume name, serial) of each data disk of one VM."""

    disks: tuple[tuple[str, str], ...]


def render_disk_serial_xslt(spec: DiskSerials) -> Optional[str]:
    """XSLT for the libvirt domain: ``<serial>`` on the disk whose source is each (volume name, serial).

    The provider (terraform-provider-libvirt 0.8) writes a pool volume disk as
    ``<disk type="volume" device="disk"><source pool=".." volume="NAME"/>``;
    the stylesheet adds (or replaces) its serial. None when there are no data disks.
    """
    disks = spec.disks
    if not disks:
        return None
    serials = [s for _, s in disks]
    if len(set(serials)) != len(serials):
        raise ValueError(f"data disk serials must be unique per VM: {serials}")
    for volume, serial in disks:
        if not _VOLUME.match(volume):
            raise ValueError(f"volume name {volume!r} has characters an XPath literal cannot carry")
        if not re.match(r"^[A-Za-z0-9_.+-]{1,20}$", serial):
            raise ValueError(f"serial {serial!r}: at most 20 of A-Z a-z 0-9 _ . + -")
    return render("disk_serial.xsl.j2", disks=list(disks))
