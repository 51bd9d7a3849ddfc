"""ImageStore: the stack's storage pool and one base volume per OS in use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import pulumi
import pulumi_libvirt as libvirt

from .config import ImageConfig


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
            # The version is in the name: a new release is a new base volume, and
            # as root volumes are clones of it, preview shows their nodes replaced.
            # Flatcar nodes update in place instead (update.conf), so bumping
            # the image is only needed for new nodes of a fresh stack.
            vol = libvirt.Volume(
                f"base-{os_name}",
                name=f"{args.prefix}-base-{os_name}-{image.version}.qcow2",
                pool=pool.name,
                source=image.source,
                format="qcow2",
                opts=fixed_name,
            )
            self.base_volume_ids[os_name] = vol.id
        self.register_outputs({"pool_name": self.pool_name, "base_volume_ids": self.base_volume_ids})
