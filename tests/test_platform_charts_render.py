"""The platform charts as a whole: every chart pinned exactly, and every values key known to its chart.

Each chart's values (components/render/platform/) are checked against the
chart's own values.yaml and templates in ``$MICROCLOUD_CHART_DIR``
(``validators``; a chart that is not there is skipped by name); the pins
and the key check itself are plain Python (``unit``).
"""

from __future__ import annotations

import dataclasses
import re
import tarfile
from pathlib import Path

import pytest
import yaml

from components.render import platform as pv
from support.platform_render import CHART_DIR, CONFIGS, chart_values

unit = pytest.mark.unit
validators = pytest.mark.validators


# ------------------------------------------------------------------ values against the real charts

# Maps a chart documents as free-form ("any values you put under ..."), whose
# keys no values.yaml can list.
OPEN_MAPS = {
    "argo-cd": {("configs", "params"), ("configs", "cm")},
}
_VALUES_REF = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


@dataclasses.dataclass
class ChartIndex:
    """What a chart knows: its defaults, every ``.Values.x.y`` its templates read, its subcharts."""

    name: str
    defaults: dict
    refs: set[str]
    subcharts: dict[str, "ChartIndex"]


def _index_files(name: str, files: dict[str, str]) -> ChartIndex:
    """``files``: path inside the chart -> text, for values.yaml, templates/** and charts/<sub>/**."""
    defaults = yaml.safe_load(files.get("values.yaml", "")) or {}
    refs = {m.group(1)[1:] for p, t in files.items() if p.startswith("templates/") for m in _VALUES_REF.finditer(t)}
    subs: dict[str, dict[str, str]] = {}
    for p, t in files.items():
        parts = p.split("/")
        if parts[0] == "charts" and len(parts) > 2:
            subs.setdefault(parts[1], {})["/".join(parts[2:])] = t
    return ChartIndex(name, defaults, refs, {s: _index_files(s, f) for s, f in subs.items()})


def index_chart(chart_dir: Path) -> ChartIndex:
    files: dict[str, str] = {}
    for p in chart_dir.rglob("*"):
        rel = p.relative_to(chart_dir).as_posix()
        if p.is_file() and (rel == "values.yaml" or rel.endswith((".yaml", ".tpl", ".yml", ".txt"))):
            files[rel] = p.read_text(errors="replace")
        elif p.is_file() and rel.startswith("charts/") and rel.endswith(".tgz") and rel.count("/") == 1:
            # A packaged subchart: charts/<name>-<version>.tgz holding <name>/...
            with tarfile.open(p) as tar:
                for m in tar.getmembers():
                    if m.isfile() and m.name.endswith((".yaml", ".tpl", ".yml")):
                        inner = m.name.split("/", 1)
                        if len(inner) == 2:
                            files[f"charts/{inner[0]}/{inner[1]}"] = tar.extractfile(m).read().decode(errors="replace")
    return _index_files(chart_dir.name, files)


_MISSING = object()


def _lookup(d, path: tuple[str, ...]):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return _MISSING
        d = d[k]
    return d


def unknown_keys(values: dict, chart: ChartIndex, open_maps: frozenset = frozenset(), prefix: tuple = ()) -> list[str]:
    """Key paths of ``values`` the chart neither declares in values.yaml nor reads in a template.

    Below a default that is empty, null or a list (a free-form value) nothing
    is checked; a subchart's section is checked against the subchart.
    """
    bad = []
    for key, val in values.items():
        path = prefix + (key,)
        if path in open_maps:
            continue
        default = _lookup(chart.defaults, path)
        if default is not _MISSING:
            if isinstance(val, dict) and isinstance(default, dict) and default:
                bad += unknown_keys(val, chart, open_maps, path)
            continue
        if ".".join(path) in chart.refs:
            continue
        sub = chart.subcharts.get(path[0])
        if sub is not None and len(path) == 1 and isinstance(val, dict):
            bad += [f"{key}.{k}" for k in unknown_keys(val, sub)]
        elif sub is not None and len(path) > 1:
            bad += [f"{path[0]}.{k}" for k in unknown_keys({key: val}, sub, frozenset(), path[1:-1])]
        else:
            bad.append(".".join(path))
    return bad


def chart_dirs(name: str) -> list[Path]:
    return sorted(p for p in CHART_DIR.glob(f"{name}-*") if p.is_dir() and (p / "values.yaml").exists()
                  and re.fullmatch(re.escape(name) + r"-\d[\w.+-]*", p.name))


@validators
@pytest.mark.parametrize("chart", sorted(chart_values(CONFIGS["dev"])))
def test_values_keys_exist_in_the_chart(chart):
    dirs = chart_dirs(chart)
    if not dirs:
        pytest.skip(f"chart {chart} is not in {CHART_DIR} (<name>-<version>/values.yaml); set MICROCLOUD_CHART_DIR")
    for d in dirs:
        index = index_chart(d)
        for name in ("dev", "prod"):
            bad = unknown_keys(chart_values(CONFIGS[name])[chart], index, OPEN_MAPS.get(chart, frozenset()))
            assert not bad, f"{d.name}: values the chart does not know: {bad}"


@unit
def test_values_key_check_can_fail():
    chart = _index_files(
        "demo",
        {
            "values.yaml": "service:\n  spec:\n    type: ClusterIP\nports:\n  web:\n    port: 80\nextra: {}\n",
            "templates/x.yaml": "{{ .Values.ports.web.nodePort }}",
            "charts/sub/values.yaml": "persistence:\n  enabled: false\n",
            "charts/sub/templates/pvc.yaml": "{{ .Values.persistence.storageClassName }}",
        },
    )
    ok = {"service": {"spec": {"type": "NodePort"}}, "ports": {"web": {"nodePort": 1}}, "extra": {"any": {"thing": 1}},
          "sub": {"persistence": {"enabled": True, "storageClassName": "longhorn"}}}
    assert unknown_keys(ok, chart) == []
    wrong = {"service": {"type": "NodePort"}, "ports": {"web": {"nodeport": 1}}, "sub": {"persistence": {"size": "1Gi"}}, "nope": 1}
    assert sorted(unknown_keys(wrong, chart)) == ["nope", "ports.web.nodeport", "service.type", "sub.persistence.size"]


# ------------------------------------------------------------------ pins


@unit
def test_every_chart_is_pinned_exactly_with_its_repository():
    assert set(pv.CHARTS) == {"traefik", "sealed-secrets", "argo-cd", "argocd-image-updater", "longhorn", "kube-prometheus-stack",
                              "nfs-subdir-external-provisioner"}
    for name, pin in pv.CHARTS.items():
        assert pin.name == name and re.fullmatch(r"\d+\.\d+\.\d+", pin.version), pin
        assert pin.repo.startswith("https://") and not pin.repo.endswith("/"), pin
        assert pv.CHART_VERSIONS[name] == pin.version


@validators
@pytest.mark.parametrize("name", ["dev", "prod"])
def test_local_chart_dirs_are_the_pins(name):
    """The charts in $MICROCLOUD_CHART_DIR that the tests use are the pinned versions (Chart.yaml)."""
    for chart, pin in pv.CHARTS.items():
        d = CHART_DIR / f"{chart}-{pin.version}"
        if not (d / "Chart.yaml").is_file():
            pytest.skip(f"chart {chart}-{pin.version} is not in {CHART_DIR}")
        meta = yaml.safe_load((d / "Chart.yaml").read_text())
        assert (meta["name"], str(meta["version"])) == (chart, pin.version)
