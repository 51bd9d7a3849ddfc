"""nfs-subdir-external-provisioner's Helm values (chart 4.x): one StorageClass whose volumes are directories of one export."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .common import ReclaimPolicy


@dataclass(frozen=True)
class NfsProvisionerSpec:
    """nfs-subdir-external-provisioner: one StorageClass whose volumes are directories of one export."""

    server: str
    path: str
    reclaim_policy: ReclaimPolicy
    storage_class: str = "nfs"
    archive_on_delete: bool = True
    mount_options: tuple[str, ...] = ("nfsvers=4.1",)


def nfs_provisioner_values(spec: NfsProvisionerSpec) -> dict:
    ipaddress.IPv4Address(spec.server)
    if not spec.path.startswith("/"):
        raise ValueError(f"nfs: export path {spec.path!r} is not absolute")
    return {
        "nfs": {
            "server": spec.server,
            "path": spec.path,
            "mountOptions": list(spec.mount_options),
            # The provisioner's view of the export itself, never its data.
            "reclaimPolicy": "Retain",
        },
        "storageClass": {
            "name": spec.storage_class,
            "defaultClass": False,
            "reclaimPolicy": spec.reclaim_policy,
            "archiveOnDelete": spec.archive_on_delete,
            "accessModes": "ReadWriteMany",
        },
    }
