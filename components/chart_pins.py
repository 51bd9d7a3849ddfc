"""The charts this program is written and tested against: name, exact version, public chart repository.

Neutral ground, importing nothing of the program: the config (which chart
names exist), the platform layer (where each chart comes from) and the
platform renderers all read the pins here.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping


@dataclass(frozen=True)
class ChartPin:
    """A chart this program is written and tested against: its name, exact version and public chart repository."""

    name: str
    version: str
    repo: str


CHARTS: Mapping[str, ChartPin] = MappingProxyType({
    p.name: p
    for p in (
        ChartPin("traefik", "41.3.0", "https://traefik.github.io/charts"),
        ChartPin("sealed-secrets", "2.18.5", "https://bitnami-labs.github.io/sealed-secrets"),
        ChartPin("argo-cd", "10.1.1", "https://argoproj.github.io/argo-helm"),
        ChartPin("argocd-image-updater", "1.2.4", "https://argoproj.github.io/argo-helm"),
        ChartPin("longhorn", "1.12.1", "https://charts.longhorn.io"),
        ChartPin("kube-prometheus-stack", "88.5.3", "https://prometheus-community.github.io/helm-charts"),
        ChartPin("nfs-subdir-external-provisioner", "4.0.18",
                 "https://kubernetes-sigs.github.io/nfs-subdir-external-provisioner"),
    )
})
CHART_VERSIONS: Mapping[str, str] = MappingProxyType({n: p.version for n, p in CHARTS.items()})
