"""The policy pack's checks as pure functions: (type, name, props, provider name) -> violation messages."""

from __future__ import annotations

import re
from typing import Any, Iterator, Optional

# A default provider's name (the engine makes one per package and version).
DEFAULT_PROVIDER = re.compile(r"^default(_\d+_\d+_\d+.*)?$")
# The pack runs without the program, so it keeps its own copies of two of the config's rules;
# tests/test_policy.py asserts they agree. An exact chart version: the config's
# EXACT_CHART_VERSION, with the leading v other programs' charts may carry.
EXACT = re.compile(r"^v?\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?$")
# A tag that moves (container images) and a path segment that does (OS image URLs:
# the config's UNPINNED_PATH; "stable" is a Flatcar channel host name there).
MOVING_TAG = re.compile(r"^(latest|current|stable|edge|main|master|head)$", re.I)
MOVING_PATH = re.compile(r"(^|[/:_.-])(latest|current)($|[/:_.-])", re.I)
WORKLOADS = ("apps/v1:Deployment", "apps/v1:StatefulSet", "apps/v1:DaemonSet", "batch/v1:Job", "batch/v1:CronJob", "core/v1:Pod")


def explicit_kubernetes_provider(rtype: str, name: str, props: dict, provider: Optional[str]) -> Iterator[str]:
    if rtype.startswith("kubernetes:") and provider is not None and DEFAULT_PROVIDER.match(provider):
        yield f"{name} ({rtype}) uses the default kubernetes provider; pass the stack's provider explicitly"


def _images(obj: Any) -> Iterator[str]:
    """Every `image` string in a pod template, wherever the workload nests it.

    The engine hands props as read-only proxies, not dicts and lists: walk by shape.
    """
    if hasattr(obj, "items"):
        for key, value in obj.items():
            if key == "image" and isinstance(value, str):
                yield value
            else:
                yield from _images(value)
    elif not isinstance(obj, (str, bytes)) and hasattr(obj, "__iter__"):
        for value in obj:
            yield from _images(value)


def image_is_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return False
    tag = last.rsplit(":", 1)[1]
    return bool(tag) and not MOVING_TAG.match(tag)


def pinned_versions(rtype: str, name: str, props: dict, provider: Optional[str]) -> Iterator[str]:
    if rtype == "kubernetes:helm.sh/v4:Chart":
        chart = str(props.get("chart") or "")
        if not chart:
            # A Chart is a component the provider builds: the engine hands the
            # analyzer no inputs for it. Its pin is enforced by the config and
            # the Platform; the workloads it renders have their images checked below.
            return
        local = chart.startswith("/") or chart.endswith(".tgz")
        version = str(props.get("version") or "")
        if not local and not EXACT.match(version):
            yield f"{name}: chart {chart} version {version or '(none)'} is not an exact version"
    elif rtype == "libvirt:index/volume:Volume":
        source = str(props.get("source") or "")
        if source and MOVING_PATH.search(source):
            yield f"{name}: image source {source} names a moving alias"
    elif any(rtype.endswith(w) for w in WORKLOADS):
        for image in _images(props.get("spec")):
            if not image_is_pinned(image):
                yield f"{name}: container image {image} has no exact tag or digest"
