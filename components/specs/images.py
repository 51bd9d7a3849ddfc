"""The OS images: the check each one passes on this machine before a base volume is made from it."""

from __future__ import annotations

from ..config import ImageConfig
from ..render.image_check import ImageCheckSpec, render_image_check


def image_check_spec(os_name: str, image: ImageConfig) -> ImageCheckSpec:
    algorithm, digest = image.digest()
    return ImageCheckSpec(os_name=os_name, source=image.source, algorithm=algorithm, digest=digest)


def image_check_script(os_name: str, image: ImageConfig) -> str:
    return render_image_check(image_check_spec(os_name, image))
