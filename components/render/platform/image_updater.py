"""Argo CD Image Updater (chart argocd-image-updater 1.x, Image Updater v1): its values, the one ImageUpdater
object the program makes, the registry-credentials Secret, and the per-app opt-in file.

An app of ``gitops/apps/<app>/`` opts in with ``image-updates.yaml`` beside its manifests (``check_opt_in``
is its schema). The ApplicationSet (gitops/root/applicationset.yaml) merges that file into the app's
generator parameters and, for an app that has one, labels its Application ``OPT_IN_LABEL`` and writes the
annotations Image Updater reads (``image-list``, ``<alias>.update-strategy``, ``<alias>.allow-tags``,
``write-back-method: argocd``). The ImageUpdater object selects exactly the labelled Applications and
reads their annotations (``useAnnotations``), so the app's own file, in Git, is the one place that says
which images move. Write-back ``argocd``: Image Updater sets the new tag as a parameter of the Application
itself (no commit to Git); Argo CD then syncs it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

from .argocd import ARGOCD_NAMESPACE

IMAGE_UPDATER_RELEASE = "argocd-image-updater"
IMAGE_UPDATER_CR = "microcloud-apps"
API_VERSION = "argocd-image-updater.argoproj.io/v1alpha1"
# The Secret the program makes with each registry's "<user>:<token>", read by Image Updater (credentials: secret:...).
REGISTRY_SECRET = "argocd-image-updater-registries"
OPT_IN_FILE = "image-updates.yaml"
OPT_IN_LABEL = "microcloud.io/image-updates"
ANNOTATION_PREFIX = "argocd-image-updater.argoproj.io/"
# Image Updater's strategies (v1 names; "latest" and "name" are its older aliases of newest-build and alphabetical).
STRATEGIES = ("semver", "newest-build", "digest", "alphabetical")
# The original's tags: the commit SHA (the app pipeline pushes sha-<7 hex>).
SHA_TAGS = "regexp:^sha-[0-9a-f]{7}$"

_ALIAS = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-._]*$")
_IMAGE = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*$")


@dataclass(frozen=True)
class RegistryCredential:
    """One registry Image Updater lists tags from: its host (``ghcr.io``) and the key of its "<user>:<token>" in REGISTRY_SECRET."""

    host: str


@dataclass(frozen=True)
class ImageUpdaterSpec:
    namespace: str = ARGOCD_NAMESPACE
    keep_crds: bool = False
    registries: tuple[RegistryCredential, ...] = ()
    # On its pod: a changed value restarts it (it reads the credentials Secret when it starts a registry client).
    pod_annotations: Mapping[str, str] = field(default_factory=dict)


def registry_conf(spec: ImageUpdaterSpec) -> list[dict]:
    """``config.registries``: each registry with credentials from the Secret the program makes."""
    return [
        {
            "name": r.host,
            "api_url": f"https://{r.host}",
            "prefix": r.host,
            "ping": True,
            "credentials": f"secret:{spec.namespace}/{REGISTRY_SECRET}#{r.host}",
        }
        for r in sorted(spec.registries, key=lambda r: r.host)
    ]


def image_updater_values(spec: ImageUpdaterSpec) -> dict:
    return {
        "crds": {"install": True, "keep": spec.keep_crds},
        "config": {"registries": registry_conf(spec), "log.level": "info"},
        # Its metrics are served over TLS behind Kubernetes authorization (controller-runtime's secure
        # metrics): no ServiceMonitor for now, so nothing has to reach its pod (argocd's default deny).
        "metrics": {"enabled": False, "serviceMonitor": {"enabled": False}},
        "podAnnotations": dict(spec.pod_annotations),
    }


def image_updater_object(spec: ImageUpdaterSpec) -> dict:
    """The ImageUpdater: every Application labelled OPT_IN_LABEL=enabled, configured by its own annotations."""
    return {
        "apiVersion": API_VERSION,
        "kind": "ImageUpdater",
        "metadata": {"name": IMAGE_UPDATER_CR, "namespace": spec.namespace},
        "spec": {
            "applicationRefs": [
                {"namePattern": "*", "labelSelectors": {"matchLabels": {OPT_IN_LABEL: "enabled"}}, "useAnnotations": True},
            ],
        },
    }


def registry_secret_data(creds: Mapping[str, tuple[str, str]]) -> dict[str, str]:
    """host -> "<user>:<token>" (what Image Updater's ``secret:`` credentials read)."""
    out = {}
    for host, (user, token) in sorted(creds.items()):
        if ":" in user or not user or not token or "\n" in token:
            raise ValueError(f"image updater: the credentials for {host} are not a user and a one-line token")
        out[host] = f"{user}:{token}"
    return out


# ------------------------------------------------------------------ the per-app opt-in file


def check_opt_in(doc: object, where: str = OPT_IN_FILE) -> list[dict]:
    """An app's image-updates.yaml: ``images``, each ``alias``, ``image`` (no tag), ``updateStrategy``, ``allowTags``.

    Returns the images; raises ValueError naming ``where`` and the entry on anything else (the
    ApplicationSet would write it into annotations unchecked).
    """
    if not isinstance(doc, dict) or set(doc) != {"images"}:
        raise ValueError(f"{where}: one key, images")
    images = doc["images"]
    if not isinstance(images, list) or not images:
        raise ValueError(f"{where}: images is a non-empty list")
    seen = set()
    for i, img in enumerate(images):
        at = f"{where}: images[{i}]"
        if not isinstance(img, dict):
            raise ValueError(f"{at} is not a mapping")
        unknown = set(img) - {"alias", "image", "updateStrategy", "allowTags"}
        if unknown or not {"alias", "image", "updateStrategy", "allowTags"} <= set(img):
            raise ValueError(f"{at}: give alias, image, updateStrategy and allowTags (and nothing else: {sorted(unknown)})")
        if not isinstance(img["alias"], str) or not _ALIAS.match(img["alias"]) or img["alias"] in seen:
            raise ValueError(f"{at}: alias {img['alias']!r} is not a unique name (letters, digits, '-', '.', '_')")
        seen.add(img["alias"])
        if not isinstance(img["image"], str) or not _IMAGE.match(img["image"]):
            raise ValueError(f"{at}: image {img['image']!r} is not an image name without a tag (ghcr.io/owner/app)")
        if img["updateStrategy"] not in STRATEGIES:
            raise ValueError(f"{at}: updateStrategy {img['updateStrategy']!r} is not one of {', '.join(STRATEGIES)}")
        tags = img["allowTags"]
        if not isinstance(tags, str) or not tags.startswith("regexp:"):
            raise ValueError(f"{at}: allowTags is 'regexp:<pattern>' (e.g. {SHA_TAGS})")
        try:
            re.compile(tags.removeprefix("regexp:"))
        except re.error as err:
            raise ValueError(f"{at}: allowTags {tags!r} is not a regular expression ({err})") from None
        if "'" in tags or "\n" in tags:
            raise ValueError(f"{at}: allowTags may not hold a quote or a newline")
    return images


def expected_annotations(images: list[dict]) -> dict[str, str]:
    """What the ApplicationSet must write on the Application of an app with these images (Image Updater's annotations)."""
    out = {ANNOTATION_PREFIX + "image-list": ",".join(f"{i['alias']}={i['image']}" for i in images),
           ANNOTATION_PREFIX + "write-back-method": "argocd"}
    for i in images:
        out[f"{ANNOTATION_PREFIX}{i['alias']}.update-strategy"] = i["updateStrategy"]
        out[f"{ANNOTATION_PREFIX}{i['alias']}.allow-tags"] = i["allowTags"]
    return out
