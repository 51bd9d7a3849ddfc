"""What the nodes boot: the pinned OS images, and how Flatcar nodes update and reboot."""

from __future__ import annotations

import re
from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from .artifacts import hex_digest, https_url
from .base import _Model, check_pinned, check_pinned_path


class ImageConfig(_Model):
    """A pinned OS image: where it is, its exact version, and the digest it must have before any VM boots from it."""

    source: str = Field(
        description="https URL of the qcow2 cloud image, or its absolute path on the machine that runs Pulumi (uploaded to the pool from there); not a moving alias like `current`; `http://` is refused."
    )
    version: str = Field(description="Exact version of the image, e.g. `4593.2.4`; `latest`, `current`, wildcards are rejected.")
    sha256: Optional[str] = Field(
        default=None,
        description="sha256 of the image file, as the distribution publishes it (Rocky's and Alma's `CHECKSUM`). Exactly one of `sha256` and `sha512`; a file with another digest is never used.",
    )
    sha512: Optional[str] = Field(
        default=None,
        description="sha512 of the image file, for distributions that publish that one (Flatcar's `.DIGESTS`, Debian's `SHA512SUMS`).",
    )

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        return check_pinned(v, "image version")

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if v.startswith("/"):
            return check_pinned_path(v, "image source")
        if v.startswith(("http://", "https://")):
            return https_url(v, "image source") or v
        raise ValueError(f"{v!r} must be an https URL or an absolute path")

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, v: Optional[str]) -> Optional[str]:
        return hex_digest(v, "sha256")

    @field_validator("sha512")
    @classmethod
    def _sha512(cls, v: Optional[str]) -> Optional[str]:
        return hex_digest(v, "sha512")

    @model_validator(mode="after")
    def _one_digest(self) -> "ImageConfig":
        if self.sha256 is None and self.sha512 is None:
            raise ValueError("needs the image's sha256 (or sha512, as its distribution publishes it); nothing boots from an unchecked image")
        if self.sha256 is not None and self.sha512 is not None:
            raise ValueError("give one of sha256 and sha512, not both")
        return self

    def digest(self) -> tuple[str, str]:
        """(algorithm, hex digest) the file must have."""
        return ("sha256", self.sha256) if self.sha256 else ("sha512", self.sha512 or "")


class UpdatesConfig(_Model):
    """OS updates and reboots of the cluster nodes (docs/scale.md#reboots)."""

    group: Literal["stable", "beta", "alpha", "lts"] = Field(default="stable", description="Flatcar release channel the nodes update from.")
    strategy: Literal["coordinated", "off"] = Field(
        default="coordinated",
        description="`coordinated`: a node that needs a reboot (Flatcar: an update applied; EL9: `dnf needs-restarting -r`; "
        "Debian: /run/reboot-required) takes a slot of the disruption budget (k3s.disruption), is drained, reboots, "
        "and frees the slot once Ready again. `off`: nodes never reboot by themselves.",
    )
    packages: Literal["security", "all", "off"] = Field(
        default="security",
        description="Unattended package updates on the EL9 and Debian nodes (dnf-automatic, unattended-upgrades; they never reboot): "
        "`security` updates only, `all` updates, or `off`. Flatcar nodes update by update_engine (`group`).",
    )
    window_start: str = Field(
        default="03:00",
        description="Start (HH:MM, the node's clock) of the daily window in which cluster nodes may reboot; the budget decides how many at once.",
    )
    window_length: str = Field(default="1h", description="Length of the reboot window, e.g. `1h` or `30m`: a node that gets no slot within it tries the next day.")

    @field_validator("strategy", mode="before")
    @classmethod
    def _strategy(cls, v):
        if v == "reboot":
            raise ValueError("updates.strategy `reboot` rebooted each Flatcar node on its own, with no lock: use `coordinated` (reboots within the disruption budget) or `off`")
        if v == "etcd-lock":
            raise ValueError("updates.strategy `etcd-lock` needs an etcd of locksmithd's own, which K3s' embedded etcd is not: use `coordinated` (a lock held in the cluster) or `off`")
        return v

    @field_validator("window_start")
    @classmethod
    def _start(cls, v: str) -> str:
        if not re.match(r"^([01]\d|2[0-3]):[0-5]\d$", v):
            raise ValueError(f"{v!r} is not a time like 03:00")
        return v

    @field_validator("window_length")
    @classmethod
    def _length(cls, v: str) -> str:
        if not re.match(r"^\d+[hm]$", v):
            raise ValueError(f"{v!r} is not a duration like 1h or 30m")
        return v

    def window_seconds(self) -> int:
        """The window's length in seconds (at least a minute)."""
        n, unit = int(self.window_length[:-1]), self.window_length[-1]
        return max(60, n * (3600 if unit == "h" else 60))
