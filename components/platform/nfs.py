"""The NFS StorageClass: nfs-subdir-external-provisioner on the storage node's export."""

from __future__ import annotations

from typing import TYPE_CHECKING

from components.render.platform.nfs import NfsProvisionerSpec, nfs_provisioner_values

if TYPE_CHECKING:
    from .component import Platform

NFS_NAMESPACE = "kube-system"


def create(p: "Platform") -> None:
    """The provisioner's chart (only when PlatformArgs.nfs_server is set)."""
    a = p._args
    spec = NfsProvisionerSpec(
        server=a.nfs_server,
        path=a.nfs_path,
        reclaim_policy="Retain" if a.protect_data else "Delete",
        archive_on_delete=a.protect_data,
    )
    # Its volumes are directories on the NFS server: the data never lives in the cluster.
    p._chart("nfs-subdir-external-provisioner", "nfs-provisioner", NFS_NAMESPACE, nfs_provisioner_values(spec),
             depends_on=p._network_policies("nfs-provisioner"))
