"""K3s: the release, its pinned binary and airgap images, the admin certificate's lifetime and keeper, the join order settings."""

from __future__ import annotations

import re
import urllib.parse
from typing import Optional

from pydantic import Field, field_validator, model_validator

from .artifacts import PinnedFile, https_url
from .base import _Model, check_pinned


class K3sArtifact(PinnedFile):
    """A pinned K3s file: fetched by the node from an https URL, or copied from this machine; checked by sha256 before install."""

    url: Optional[str] = Field(default=None, description="https URL the node downloads the file from (your mirror for an air-gapped site).")
    path: Optional[str] = Field(default=None, description="Absolute path of the file on the machine that runs Pulumi; it is copied to each node.")
    sha256: Optional[str] = Field(
        default=None, description="sha256 of the file (the release's `sha256sum-amd64.txt`). Required with `url`; with `path`, when set, a different file stops the run."
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: Optional[str]) -> Optional[str]:
        return https_url(v, "K3s download")

    @model_validator(mode="after")
    def _one_source(self) -> "K3sArtifact":
        if (self.url is None) == (self.path is None):
            raise ValueError("give exactly one of url and path")
        if self.url is not None and self.sha256 is None:
            raise ValueError("a url needs its sha256; nothing is installed unchecked")
        return self


class K3sConfig(_Model):
    version: str = Field(description="Exact K3s release, e.g. `v1.34.2+k3s1`.")
    enabled: bool = Field(
        default=True, description="Install K3s on the server/agent/storage nodes. `false`: the VMs only (no K3s, no platform), e.g. nodes without an OS yet."
    )
    binary: Optional[K3sArtifact] = Field(
        default=None, description="The `k3s` binary of `version` (amd64): `url` + `sha256`, or `path` on this machine. Required while `enabled`."
    )
    images: Optional[K3sArtifact] = Field(
        default=None,
        description="The airgap image tarball of `version` (`k3s-airgap-images-amd64.tar.zst`): `url` + `sha256`, or `path`. Without it the nodes pull K3s' images from their registries.",
    )
    kubeconfig_keeper: str = Field(
        default="1",
        max_length=64,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Any short string (letters, digits, `.` `_` `-`); change it to issue a new admin client certificate (the kubeconfig output) at once.",
    )
    kubeconfig_validity_days: int = Field(
        default=90,
        ge=7,
        le=825,
        description="Days the admin client certificate Pulumi signs is valid (Kubernetes cannot revoke one: keep it short). Its end is the stack output `kubeconfig_expires_at`.",
    )
    kubeconfig_renew_days: int = Field(
        default=30,
        ge=1,
        description="The first `pulumi up` within this many days of the admin certificate's end issues a new one. Less than `kubeconfig_validity_days`.",
    )
    ready_timeout: int = Field(default=600, ge=30, le=7200, description="Seconds each node may take to be Ready after its K3s (re)start before the run fails naming it.")

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        check_pinned(v, "K3s version")
        if not re.match(r"^v\d+\.\d+\.\d+\+k3s\d+$", v):
            raise ValueError(f"{v!r} is not a K3s release like v1.34.2+k3s1")
        return v

    @model_validator(mode="after")
    def _renewal(self) -> "K3sConfig":
        if self.kubeconfig_renew_days >= self.kubeconfig_validity_days:
            raise ValueError(
                f"k3s.kubeconfig_renew_days ({self.kubeconfig_renew_days}) must be less than k3s.kubeconfig_validity_days ({self.kubeconfig_validity_days})"
            )
        return self

    @model_validator(mode="after")
    def _sources(self) -> "K3sConfig":
        if self.enabled and self.binary is None:
            raise ValueError("k3s.binary is required while k3s.enabled (url + sha256, or path)")
        for what, art in (("binary", self.binary), ("images", self.images)):
            if art is not None and art.url is not None:
                ver = urllib.parse.unquote(art.url)
                if self.version not in ver:
                    raise ValueError(f"k3s.{what}.url does not name version {self.version}: {art.url}")
        return self
