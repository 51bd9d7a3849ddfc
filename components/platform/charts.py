"""Where each chart comes from: a ChartSource per pinned chart, a local directory checked against its pin, site values merged over ours."""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

import yaml

from components.chart_pins import CHARTS

if TYPE_CHECKING:
    from .args import PlatformArgs


@dataclass(frozen=True)
class ChartSource:
    """Where a chart comes from: ``path`` (a chart directory or ``.tgz``) or ``repo`` + ``version``.

    ``version`` is exact (no ranges: never floating). A ``path``'s Chart.yaml
    must name the chart and this version; ``repo`` None with no ``path``: the
    chart's public repository (``CHARTS``).
    """

    version: str
    repo: Optional[str] = None
    path: Optional[str] = None


def _chart_meta(path: Path) -> dict:
    """Chart.yaml of a chart directory, or of a packaged chart (``<name>/Chart.yaml`` inside a .tgz)."""
    if path.is_dir():
        return yaml.safe_load((path / "Chart.yaml").read_text()) or {}
    with tarfile.open(path) as tar:
        member = next((m for m in tar.getmembers() if m.isfile() and m.name.count("/") == 1
                       and m.name.endswith("/Chart.yaml")), None)
        if member is None:
            raise OSError("no <name>/Chart.yaml in the archive")
        return yaml.safe_load(tar.extractfile(member).read()) or {}


def chart_dir(name: str, path: str, wanted: str) -> str:
    """``path`` (absolute) if it is a chart directory or .tgz of chart ``name`` at version ``wanted``; one-line ValueError otherwise."""
    try:
        meta = _chart_meta(Path(path))
    except (OSError, tarfile.TarError, yaml.YAMLError) as err:
        what = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"platform: chart {name}: no Chart.yaml in {path} ({what}; wanted version {wanted})") from None
    found = str(meta.get("version", ""))
    if meta.get("name") != name or found != wanted:
        raise ValueError(
            f"platform: chart {name}: {path} holds {meta.get('name')} {found or '(no version)'}, wanted {name} {wanted}"
        )
    return str(Path(path).resolve())


def chart_sources(chart_dir: Optional[str], overrides: Optional[Mapping[str, ChartSource]] = None) -> dict[str, ChartSource]:
    """A ChartSource for every pinned chart.

    ``overrides`` (chart name -> ChartSource, e.g. from stack config) win;
    otherwise ``<chart_dir>/<name>-<version>`` when it holds a Chart.yaml
    ($MICROCLOUD_CHART_DIR, for air-gapped sites), else the pinned repository.
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(CHARTS))
    if unknown:
        raise ValueError(f"platform: no chart named {', '.join(unknown)} (charts: {', '.join(CHARTS)})")
    out: dict[str, ChartSource] = {}
    for name, pin in CHARTS.items():
        if name in overrides:
            out[name] = overrides[name]
            continue
        local = Path(chart_dir) / f"{name}-{pin.version}" if chart_dir else None
        if local is not None and (local / "Chart.yaml").is_file():
            out[name] = ChartSource(version=pin.version, path=str(local))
        else:
            out[name] = ChartSource(version=pin.version, repo=pin.repo)
    return out


def merge_values(ours: dict, extra: Mapping[str, Any]) -> dict:
    """``extra`` over ``ours``: maps merge key by key, anything else replaces."""
    out = dict(ours)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge_values(out[key], value)
        else:
            out[key] = value
    return out


def needed_charts(args: PlatformArgs) -> list[str]:
    names = ["sealed-secrets", "traefik", "longhorn", "kube-prometheus-stack"]
    if args.nfs_server is not None:
        names.append("nfs-subdir-external-provisioner")
    if args.argocd:
        names.append("argo-cd")
        if args.image_updater:
            names.append("argocd-image-updater")
    return names
