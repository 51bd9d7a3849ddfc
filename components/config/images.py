"""What the nodes boot: the pinned OS images, and how Flatcar nodes update and reboot."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from .base import _Model, check_pinned, check_pinned_path


class ImageConfig(_Model):
    source: str = Field(description="URL (http/https) or absolute path on the libvirt host of the qcow2 cloud image; not a moving alias like `current`.")
    version: str = Field(description="Exact version of the image, e.g. `4230.2.3`; `latest`, `current`, wildcards are rejected.")

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        return check_pinned(v, "image version")

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if not (v.startswith(("http://", "https://", "/"))):
            raise ValueError(f"{v!r} must be an http(s) URL or an absolute path")
        return check_pinned_path(v, "image source")


class UpdatesConfig(_Model):
    """Flatcar update/reboot strategy (instead of masking locksmithd)."""

    group: Literal["stable", "beta", "alpha", "lts"] = Field(default="stable", description="Flatcar release channel the nodes update from.")
    strategy: Literal["reboot", "etcd-lock", "off"] = Field(
        default="reboot", description="locksmithd's REBOOT_STRATEGY after an update: `reboot` (in the node's window), `etcd-lock`, or `off` (never reboot)."
    )
    # Each node gets its own day of the week so no two nodes of a role reboot
    # together; the window starts at this time.
    window_start: str = Field(
        default="03:00",
        description="Start (HH:MM) of each Flatcar node's reboot window. The weekday comes from the node's name (server1, server2, ... reboot on consecutive days).",
    )
    window_length: str = Field(default="1h", description="Length of the reboot window, e.g. `1h` or `30m`.")

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
