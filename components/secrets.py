"""Generated secrets shared by the stack: the SSH key pair and the VRRP password."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_random as random
import pulumi_tls as tls


@dataclass(frozen=True)
class SecretsArgs:
    # Extra public keys from the stack config, for people; the generated key
    # is always installed because Pulumi itself needs a private key for the
    # day-2 commands.
    extra_public_keys: Sequence[str] = ()


class Secrets(pulumi.ComponentResource):
    ssh_public_keys: pulumi.Output[list]
    ssh_private_key: pulumi.Output[str]
    vrrp_auth: pulumi.Output[str]

    def __init__(self, name: str, args: SecretsArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("microcloud:security:Secrets", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        key = tls.PrivateKey(
            f"{name}-ssh",
            algorithm="ED25519",
            opts=pulumi.ResourceOptions.merge(
                child,
                pulumi.ResourceOptions(additional_secret_outputs=["private_key_openssh", "private_key_pem"]),
            ),
        )
        # VRRP PASS authentication only uses 8 characters.
        vrrp = random.RandomPassword(f"{name}-vrrp-auth", length=8, special=False, opts=child)
        extra = list(args.extra_public_keys)
        self.ssh_public_keys = key.public_key_openssh.apply(lambda k: [k.strip(), *extra])
        self.ssh_private_key = pulumi.Output.secret(key.private_key_openssh)
        self.vrrp_auth = pulumi.Output.secret(vrrp.result)
        self.register_outputs(
            {"ssh_public_keys": self.ssh_public_keys, "ssh_private_key": self.ssh_private_key, "vrrp_auth": self.vrrp_auth}
        )
