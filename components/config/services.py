"""What the nodes run and from where: images, SSH access, DNS, NTP, K3s, Flatcar updates."""

from __future__ import annotations

import ipaddress
import os
import re
import urllib.parse
from typing import ClassVar, Literal, Optional

from pydantic import Field, field_validator, model_validator

from .artifacts import PinnedFile, ReleaseBinary, https_url
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


class SshConfig(_Model):
    user: str = Field(default="core", description="Login user on every node (never root; no password anywhere).")
    public_keys: tuple[str, ...] = Field(
        default=(),
        description="Extra OpenSSH public keys for people. A generated ED25519 key is always installed (the day-2 commands need a private key Pulumi holds); its private key is the secret stack output `ssh_private_key`.",
    )

    @field_validator("user")
    @classmethod
    def _user(cls, v: str) -> str:
        if not re.match(r"^[a-z_][a-z0-9_-]{0,31}$", v) or v == "root":
            raise ValueError(f"{v!r} is not a valid non-root login name")
        return v

    @field_validator("public_keys")
    @classmethod
    def _keys(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for key in v:
            if not re.match(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp\d+) [A-Za-z0-9+/=]+( .*)?$", key):
                raise ValueError(f"{key[:30]!r}... is not an OpenSSH public key")
        return v


class CorednsBinary(ReleaseBinary):
    """The CoreDNS binary copied to the infra node: no container runtime, no registry."""

    NAME: ClassVar[str] = "coredns"
    LABEL: ClassVar[str] = "CoreDNS"
    SCRIPT: ClassVar[str] = ".ci/coredns.sh"
    BUILD_DIR: ClassVar[str] = "coredns-{version}"

    version: str = Field(default="v1.12.1", description="Exact CoreDNS release, e.g. `v1.12.1` (what `.ci/coredns.sh` builds from Go modules).")


class DnsConfig(_Model):
    forwarders: tuple[ipaddress.IPv4Address, ...] = Field(
        min_length=1, description="Upstream resolvers (IPv4) of the infra node's CoreDNS for names outside `domain`."
    )
    coredns: CorednsBinary = Field(default=CorednsBinary(), description="The CoreDNS binary uploaded to the infra node.")


class NtpConfig(_Model):
    upstream: tuple[str, ...] = Field(
        min_length=1, description="Upstream NTP servers (hostnames or IPv4) of the infra node's chrony; every other node syncs from the infra node."
    )

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for s in v:
            if not re.match(r"^[A-Za-z0-9.-]+$", s):
                raise ValueError(f"{s!r} is not a hostname or IPv4 address")
        return v


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
        description="Any string; change it to read the admin kubeconfig from the bootstrap server again (K3s renews its client certificate within 90 days of expiry, a year after install).",
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
    def _sources(self) -> "K3sConfig":
        if self.enabled and self.binary is None:
            raise ValueError("k3s.binary is required while k3s.enabled (url + sha256, or path)")
        for what, art in (("binary", self.binary), ("images", self.images)):
            if art is not None and art.url is not None:
                ver = urllib.parse.unquote(art.url)
                if self.version not in ver:
                    raise ValueError(f"k3s.{what}.url does not name version {self.version}: {art.url}")
        return self


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
