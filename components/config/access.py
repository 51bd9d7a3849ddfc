"""How people and the day-2 commands reach the nodes: the login user and SSH keys, and the VMs' consoles."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from .base import _Model


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


class ConsoleConfig(_Model):
    autologin: bool = Field(
        default=False,
        description=(
            "Flatcar nodes keep the image's console autologin (`flatcar.autologin`: `core` on the serial console and the "
            "display, root in the emergency shell, no password). Off (the default), first boot removes the kernel argument "
            "and masks its generator, so a console asks for a password the user does not have: SSH is the way in. For a dev "
            "stack whose network you debug from the console; part of first boot, so changing it replaces the Flatcar VMs."
        ),
    )
    vnc: bool = Field(
        default=False,
        description=(
            "Every VM gets a VNC display on the libvirt host's loopback (127.0.0.1, a port libvirt picks: `virsh vncdisplay`) "
            "with a generated password (pulumi-random, 8 characters: all VNC authentication reads; secret output "
            "`vnc_passwords`). Off (the default), the VMs have no display at all, only the serial console (`virsh console`, "
            "root on the host). `nodes[].vnc` overrides it per node. Changing it replaces the VM's domain (its disks stay)."
        ),
    )
