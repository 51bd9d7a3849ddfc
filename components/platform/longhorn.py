"""Longhorn: its namespace and chart, the StorageClass the program owns, and the command that uninstalls it on destroy."""

from __future__ import annotations

import shlex
import sys
from typing import TYPE_CHECKING

import pulumi
import pulumi_command as command
import pulumi_kubernetes as k8s

from components.render.platform.longhorn import LonghornSpec, longhorn_storage_class, longhorn_values

if TYPE_CHECKING:
    from .component import Platform


def create(p: "Platform") -> None:
    """Sets ``longhorn_spec``, ``longhorn`` (the chart), ``storage_class`` and ``longhorn_uninstall`` (None with protect_data)."""
    n, a = p._name, p._args
    p.longhorn_spec = spec = LonghornSpec(
        replica_count=a.longhorn_replicas,
        reclaim_policy="Retain" if a.protect_data else "Delete",
        allow_uninstall=not a.protect_data,
        data_path=a.longhorn_data_path,
    )
    ns = p._namespace("longhorn", spec.namespace, **p._data_opts())
    chart = p._chart("longhorn", "longhorn", ns.metadata.name, longhorn_values(spec),
                     depends_on=p._network_policies("longhorn", ns), **p._data_opts())
    sc = longhorn_storage_class(spec)
    # StorageClass parameters are immutable: a change replaces it (a fixed name: delete first).
    p.storage_class = k8s.storage.v1.StorageClass(
        f"{n}-longhorn",
        metadata=sc["metadata"],
        provisioner=sc["provisioner"],
        allow_volume_expansion=sc["allowVolumeExpansion"],
        reclaim_policy=sc["reclaimPolicy"],
        volume_binding_mode=sc["volumeBindingMode"],
        parameters=sc["parameters"],
        opts=p._k8s_opts(depends_on=[chart], delete_before_replace=True, **p._data_opts()),
    )
    p.longhorn = chart
    if a.protect_data:
        p.longhorn_uninstall = None
        return
    # Deleted before the chart (it depends on it): runs Longhorn's pre-delete hook while the manager still runs.
    python = shlex.quote(sys.executable)
    p.longhorn_uninstall = command.local.Command(
        f"{n}-longhorn-uninstall",
        create="true",
        update="true",
        delete=f"{python} -c 'from components.platform import uninstall_longhorn_main as m; m()'",
        # On destroy: its progress is for a failure's error, which carries it anyway; the kubeconfig
        # is in its environment, never in its output.
        logging=command.local.Logging.NONE,
        environment={
            "MICROCLOUD_KUBECONFIG": pulumi.Output.secret(a.kubeconfig),
            "LONGHORN_NAMESPACE": spec.namespace,
        },
        opts=pulumi.ResourceOptions.merge(p._child, pulumi.ResourceOptions(
            depends_on=[chart, p.storage_class],
            additional_secret_outputs=["environment"],
        )),
    )
