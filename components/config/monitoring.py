"""Monitoring of the VMs outside the cluster: the node_exporter binary they run."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from .artifacts import ReleaseBinary
from .base import _Model


class NodeExporterBinary(ReleaseBinary):
    """The Prometheus node_exporter copied to the load balancers and the infra node: no package repository, no registry."""

    NAME: ClassVar[str] = "node_exporter"
    LABEL: ClassVar[str] = "node_exporter"
    SCRIPT: ClassVar[str] = ".ci/node-exporter.sh"
    BUILD_DIR: ClassVar[str] = "node-exporter-{version}"

    version: str = Field(
        default="v1.12.1",
        description="Exact node_exporter release, e.g. `v1.12.1` (what `.ci/node-exporter.sh` builds from Go modules).",
    )


class MonitoringConfig(_Model):
    """What the in-cluster Prometheus scrapes outside Kubernetes."""

    node_exporter: NodeExporterBinary = Field(
        default=NodeExporterBinary(),
        description="The node_exporter binary installed on the load balancers and the infra node (port 9100, reachable from the K3s nodes' networks only where firewalld runs).",
    )
