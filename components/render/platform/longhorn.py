"""Longhorn's Helm values (chart 1.10+), the StorageClass the program owns, and the uninstall Job its pre-delete hook would run."""

from __future__ import annotations

from dataclasses import dataclass

from .common import ReclaimPolicy

LONGHORN_NAMESPACE = "longhorn-system"
LONGHORN_STORAGE_CLASS = "longhorn"
# With createDefaultDiskLabeledNodes, Longhorn puts its default disk only on nodes with this label.
LONGHORN_DISK_LABEL = "node.longhorn.io/create-default-disk=true"
LONGHORN_DATA_PATH = "/var/lib/longhorn"
K3S_KUBELET_ROOT = "/var/lib/kubelet"


@dataclass(frozen=True)
class LonghornSpec:
    """``data_path``: where Longhorn keeps replicas on its nodes (the mounted data disk).

    ``allow_uninstall`` sets Longhorn's deleting-confirmation flag, without
    which it refuses removal (dev: true, so ``pulumi destroy`` works).
    The StorageClass is the program's (``longhorn_storage_class``), not the
    one longhorn-manager would make from a ConfigMap: so Pulumi owns it,
    ``destroy`` removes it, and its reclaim policy is ours.
    """

    replica_count: int
    reclaim_policy: ReclaimPolicy
    allow_uninstall: bool
    data_path: str = LONGHORN_DATA_PATH
    default_class: bool = True
    namespace: str = LONGHORN_NAMESPACE
    storage_class: str = LONGHORN_STORAGE_CLASS


def longhorn_values(spec: LonghornSpec) -> dict:
    if spec.replica_count < 1:
        raise ValueError("longhorn: at least one replica")
    if not spec.data_path.startswith("/"):
        raise ValueError(f"longhorn: data path {spec.data_path!r} is not absolute")
    return {
        "persistence": {
            # The StorageClass is longhorn_storage_class(spec), made by the program.
            "createStorageClass": False,
            "defaultClass": spec.default_class,
            "defaultClassReplicaCount": spec.replica_count,
            "reclaimPolicy": spec.reclaim_policy,
        },
        "defaultSettings": {
            "defaultDataPath": spec.data_path,
            # Only nodes labelled LONGHORN_DISK_LABEL store replicas.
            "createDefaultDiskLabeledNodes": True,
            "defaultReplicaCount": spec.replica_count,
            "deletingConfirmationFlag": spec.allow_uninstall,
        },
        # A pre-upgrade hook Job: hooks never run under the provider.
        "preUpgradeChecker": {"jobEnabled": False},
        "csi": {"kubeletRootDir": K3S_KUBELET_ROOT},
        # Longhorn's own policies: the manager API (9500, no authentication) only from Longhorn's
        # components; network_policies.py denies the rest of the namespace.
        "networkPolicies": {"restrictInternalTraffic": True},
    }


def longhorn_storage_class(spec: LonghornSpec) -> dict:
    """The StorageClass the chart would have had longhorn-manager make (its storageclass.yaml), as ours."""
    return {
        "metadata": {
            "name": spec.storage_class,
            "annotations": {"storageclass.kubernetes.io/is-default-class": str(spec.default_class).lower()},
        },
        "provisioner": "driver.longhorn.io",
        "allowVolumeExpansion": True,
        "reclaimPolicy": spec.reclaim_policy,
        "volumeBindingMode": "Immediate",
        # The chart's defaults for these (checked against its storageclass.yaml in tests/test_platform_longhorn_render.py).
        "parameters": {
            "numberOfReplicas": str(spec.replica_count),
            "staleReplicaTimeout": "30",
            "fromBackup": "",
            "fsType": "ext4",
            "dataLocality": "disabled",
            "unmapMarkSnapChainRemoved": "ignored",
            "disableRevisionCounter": "true",
            "dataEngine": "v1",
            "backupTargetName": "default",
        },
    }


LONGHORN_MANAGER = "longhorn-manager"  # the DaemonSet whose image the uninstall Job runs
LONGHORN_UNINSTALL_JOB = "longhorn-uninstall"


def longhorn_uninstall_job(namespace: str, image: str, pull_policy: str = "IfNotPresent") -> dict:
    """The chart's pre-delete hook (templates/uninstall-job.yaml), which helm.v4.Chart never runs.

    ``longhorn-manager uninstall --force`` removes every Longhorn object
    (volumes, engines, the CSI driver, its webhooks and StorageClass) and
    their finalizers while the manager still runs; without it the CRDs and
    namespace hang in Terminating on finalizers nothing clears.
    """
    labels = {"app.kubernetes.io/name": "longhorn", "app.kubernetes.io/component": "uninstall"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": LONGHORN_UNINSTALL_JOB, "namespace": namespace, "labels": labels},
        "spec": {
            "activeDeadlineSeconds": 900,
            "backoffLimit": 1,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{
                        "name": "longhorn-uninstall",
                        "image": image,
                        "imagePullPolicy": pull_policy,
                        "command": ["longhorn-manager", "uninstall", "--force"],
                        "env": [{"name": "LONGHORN_NAMESPACE",
                                 "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
                    }],
                    "restartPolicy": "Never",
                    "serviceAccountName": "longhorn-service-account",
                },
            },
        },
    }
