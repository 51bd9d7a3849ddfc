"""Argo CD Image Updater: the registry-credentials Secret (from the same secret config keys as the nodes'
registries.yaml), the chart, and the one ImageUpdater that selects the apps that opted in."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pulumi
import pulumi_kubernetes as k8s

from components.render.platform.argocd import ARGOCD_NAMESPACE
from components.render.platform.image_updater import (
    IMAGE_UPDATER_RELEASE,
    REGISTRY_SECRET,
    ImageUpdaterSpec,
    RegistryCredential,
    image_updater_object,
    image_updater_values,
    registry_secret_data,
)

if TYPE_CHECKING:
    from .component import Platform


def create(p: "Platform") -> None:
    """After Argo CD (its namespace and the Applications' CRD); sets ``image_updater``."""
    n, a = p._name, p._args
    hosts = sorted(a.registry_credentials)
    spec = ImageUpdaterSpec(namespace=ARGOCD_NAMESPACE, keep_crds=a.keep_crds, registries=tuple(RegistryCredential(h) for h in hosts))
    deps: list[pulumi.Resource] = [p.argocd]
    if hosts:
        users = [a.registry_credentials[h][0] for h in hosts]
        creds = pulumi.Output.all(*(a.registry_credentials[h][1] for h in hosts)).apply(
            lambda tokens: registry_secret_data({h: (u, t) for h, u, t in zip(hosts, users, tokens)})
        )
        deps.append(k8s.core.v1.Secret(
            f"{n}-image-updater-registries",
            metadata={"name": REGISTRY_SECRET, "namespace": spec.namespace},
            type="Opaque",
            string_data=pulumi.Output.secret(creds),
            opts=p._k8s_opts(depends_on=[p.argocd]),
        ))
    p.image_updater = p._chart("argocd-image-updater", IMAGE_UPDATER_RELEASE, spec.namespace, image_updater_values(spec), depends_on=deps)
    obj = image_updater_object(spec)
    # Its CRD comes with the chart.
    p.image_updater_object = k8s.apiextensions.CustomResource(
        f"{n}-image-updater",
        api_version=obj["apiVersion"],
        kind=obj["kind"],
        metadata=obj["metadata"],
        spec=obj["spec"],
        opts=p._k8s_opts(depends_on=[p.image_updater]),
    )
