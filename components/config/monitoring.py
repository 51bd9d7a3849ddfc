"""Monitoring of the VMs outside the cluster: the node_exporter binary they run."""

from __future__ import annotations

import os
import re
from typing import Optional

from pydantic import Field, field_validator

from .base import _Model, check_pinned
from .errors import ConfigError


class NodeExporterBinary(_Model):
    """The Prometheus node_exporter copied to the load balancers and the infra node: no package repository, no registry."""

    version: str = Field(
        default="v1.12.1",
        description="Exact node_exporter release, e.g. `v1.12.1` (what `.ci/node-exporter.sh` builds from Go modules).",
    )
    path: Optional[str] = Field(
        default=None,
        description="Absolute path of the binary on the machine that runs Pulumi. Default: the build of `.ci/node-exporter.sh` for `version` in the toolchain cache.",
    )
    sha256: Optional[str] = Field(default=None, description="Expected sha256 of the binary; when set, a different file stops the run.")

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        check_pinned(v, "node_exporter version")
        if not re.match(r"^v\d+\.\d+\.\d+$", v):
            raise ValueError(f"{v!r} is not a node_exporter release like v1.12.1")
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not v.startswith(("/", "~/")):
            raise ValueError(f"{v!r} must be an absolute path on the machine that runs Pulumi")
        return v

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not re.match(r"^[0-9a-f]{64}$", v.lower()):
            raise ValueError(f"{v!r} is not a sha256 hex digest")
        return v.lower() if v else v

    def local_path(self) -> str:
        if self.path:
            return os.path.expanduser(self.path)
        cache = os.environ.get("MICROCLOUD_TOOLCHAIN_CACHE") or os.path.expanduser("~/.cache/microcloud-toolchain")
        return os.path.join(cache, f"node-exporter-{self.version}", "node_exporter")

    def check_local_file(self, key: str = "monitoring.node_exporter") -> None:
        """The binary is on the machine that runs Pulumi, and is the pinned one; else a ConfigError naming ``key``."""
        from .loader import file_sha256  # loader imports the stack model, which may import this module

        path = self.local_path()
        if not os.path.isfile(path):
            raise ConfigError(
                f"{key}.path" if self.path else key,
                f"no node_exporter binary at {path}; run bash .ci/node-exporter.sh or set {key}.path",
            )
        if self.sha256:
            got = file_sha256(path)
            if got != self.sha256:
                raise ConfigError(f"{key}.sha256", f"{path} has sha256 {got}, not the pinned {self.sha256}")


class MonitoringConfig(_Model):
    """What the in-cluster Prometheus scrapes outside Kubernetes."""

    node_exporter: NodeExporterBinary = Field(
        default=NodeExporterBinary(),
        description="The node_exporter binary installed on the load balancers and the infra node (port 9100, reachable from the K3s nodes' networks only where firewalld runs).",
    )
