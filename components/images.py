"""ImageStore: the stack's storage pool and one base volume per OS in use, each made only from a checked file.

Before libvirt sees an image, a local command on the machine that runs
Pulumi checks it against the digest pinned in stack config (an https source
is fetched into a content-addressed cache first; components/render/image_check.py)
and prints the checked file's path; that path is the base volume's source.
The command runs again only when the pin (digest or source) changes, so
another machine running the stack later neither downloads nor changes the
volume. Its script names no path of this machine (the cache is found when
it runs), and its text should stay as it is: a change to it updates the
command, whose output preview cannot know, so preview would show every base
volume and node replaced although `up` prints the same path and replaces
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import pulumi
import pulumi_libvirt as libvirt
from pulumi_command import local

from .config import ImageConfig
from .specs import image_check_script


@dataclass(frozen=True)
class ImageStoreArgs:
    prefix: str
    pool_path: str
    images: Mapping[str, ImageConfig]
    provider: pulumi.ProviderResource


class ImageStore(pulumi.ComponentResource):
    pool_name: pulumi.Output[str]
    base_volume_ids: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: ImageStoreArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("microcloud:compute:ImageStore", name, None, opts)
        fixed_name = pulumi.ResourceOptions(parent=self, provider=args.provider, delete_before_replace=True)
        pool = libvirt.Pool(
            "pool",
            name=args.prefix,
            type="dir",
            target=libvirt.PoolTargetArgs(path=args.pool_path),
            opts=fixed_name,
        )
        self.pool_name = pool.name
        self.base_volume_ids = {}
        for os_name, image in sorted(args.images.items()):
            checked = self._check(os_name, image)
            # The version is in the name: a new release is a new base volume, and
            # as root volumes are clones of it, preview shows their nodes replaced.
            # Flatcar nodes update in place instead (update.conf), so bumping
            # the image is only needed for new nodes of a fresh stack.
            vol = libvirt.Volume(
                f"base-{os_name}",
                name=f"{args.prefix}-base-{os_name}-{image.version}.qcow2",
                pool=pool.name,
                source=checked,
                format="qcow2",
                opts=fixed_name,
            )
            self.base_volume_ids[os_name] = vol.id
        self.register_outputs({"pool_name": self.pool_name, "base_volume_ids": self.base_volume_ids})

    def _check(self, os_name: str, image: ImageConfig) -> pulumi.Output[str]:
        """The path of the file, on this machine, whose digest is the pinned one (the script's only stdout)."""
        algorithm, digest = image.digest()
        cmd = local.Command(
            f"check-{os_name}",
            create=image_check_script(os_name, image),
            interpreter=["/bin/sh", "-c"],
            # A new pin is a new file: check (and fetch) it again.
            triggers=[f"{algorithm}:{digest}", image.source],
            # stderr only: "fetching it again" when a cached file changed, and a
            # failure's reason; stdout (the path) is state, not display.
            logging=local.Logging.STDERR,
            opts=pulumi.ResourceOptions(parent=self),
        )
        return cmd.stdout
