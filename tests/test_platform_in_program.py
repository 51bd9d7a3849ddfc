"""The platform layer inside the whole program (__main__.py) under mocks: provider, order, pins, sources, protection.

What the Platform component holds in detail is tests/test_platform_graph.py;
here: that the program wires it as the issue asks, for the real stacks.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

from components.config import parse_config
from components.chart_pins import CHARTS
from support.harness import Run, run_program, stack_model

pytestmark = pytest.mark.graph

CHART = "kubernetes:helm.sh/v4:Chart"
PLATFORM = "microcloud:platform:Platform"


@pytest.fixture(scope="module", autouse=True)
def no_local_charts(tmp_path_factory):
    """Charts from their pinned repositories unless a test puts them in a chart dir."""
    old = os.environ.get("MICROCLOUD_CHART_DIR")
    os.environ["MICROCLOUD_CHART_DIR"] = str(tmp_path_factory.mktemp("empty-chart-dir"))
    yield
    if old is None:
        os.environ.pop("MICROCLOUD_CHART_DIR", None)
    else:
        os.environ["MICROCLOUD_CHART_DIR"] = old


@pytest.fixture(scope="module")
def runs(no_local_charts) -> dict[str, Run]:
    out = {}
    for stack in ("dev", "prod"):
        run = run_program(stack)
        assert run.error is None, (stack, run.error)
        out[stack] = run
    return out


def test_every_kubernetes_resource_uses_the_clusters_provider(runs):
    for stack, run in runs.items():
        k8s = [r for r in run.resources if r.type.startswith("kubernetes:")]
        assert len({r.type for r in k8s}) >= 4, stack
        for r in k8s:
            assert "pulumi:providers:kubernetes::k3s::" in r.provider, (stack, r.name, r.provider)


def test_platform_waits_for_storage_exporters_and_the_cluster(runs):
    for stack, run in runs.items():
        platform = run.one(PLATFORM, "platform")
        storage = run.urn_of("microcloud:storage:Storage", "storage")
        exporters = run.urn_of("microcloud:monitoring:NodeExporters", "node-exporters")
        waited = set(platform.dependencies)
        children = lambda urn: {r.urn for r in run.resources if r.parent == urn}  # noqa: E731
        assert children(storage) <= waited and children(exporters) <= waited, stack
        for chart in run.by_type(CHART):
            # every chart through the provider built from k3s-ready's kubeconfig
            assert chart.parent == platform.urn


def test_chart_pins_and_repositories_by_default(runs):
    for stack, run in runs.items():
        charts = {r.inputs["chart"]: r for r in run.by_type(CHART)}
        cfg = parse_config(stack_model(stack))
        want = set(CHARTS) - (set() if cfg.nodes_with("storage") else {"nfs-subdir-external-provisioner"})
        assert set(charts) == want, stack
        for name, r in charts.items():
            assert r.inputs["version"] == CHARTS[name].version
            assert r.inputs["repositoryOpts"]["repo"] == CHARTS[name].repo


def test_nodeports_and_nfs_come_from_the_stack(runs):
    run, cfg = runs["prod"], parse_config(stack_model("prod"))
    traefik = next(r for r in run.by_type(CHART) if r.inputs["chart"] == "traefik").inputs["values"]
    ports = {p["nodePort"] for p in (traefik["ports"]["web"], traefik["ports"]["websecure"])}
    assert ports == {cfg.load_balancer.ingress_http_nodeport, cfg.load_balancer.ingress_https_nodeport}
    nfs = next(r for r in run.by_type(CHART) if r.inputs["chart"] == "nfs-subdir-external-provisioner").inputs["values"]
    storage = cfg.nodes_with("storage")[0]
    assert nfs["nfs"]["server"] == str(storage.ip) and nfs["nfs"]["path"].startswith("/var/mnt/")


def test_local_chart_dir_and_stack_overrides(tmp_path, monkeypatch):
    for name, pin in CHARTS.items():
        d = tmp_path / f"{name}-{pin.version}"
        d.mkdir()
        (d / "Chart.yaml").write_text(yaml.safe_dump({"apiVersion": "v2", "name": name, "version": pin.version}))
    monkeypatch.setenv("MICROCLOUD_CHART_DIR", str(tmp_path))
    model = copy.deepcopy(stack_model("dev"))
    model["platform"] = {"charts": {"traefik": {"repo": "https://charts.mirror.lan/traefik"}}}
    run = run_program("dev", model)
    assert run.error is None, run.error
    charts = {r.name: r.inputs for r in run.by_type(CHART)}
    assert charts["platform-traefik"]["repositoryOpts"]["repo"] == "https://charts.mirror.lan/traefik"
    assert charts["platform-traefik"]["version"] == CHARTS["traefik"].version
    longhorn = charts["platform-longhorn"]["chart"]
    assert Path(longhorn) == (tmp_path / f"longhorn-{CHARTS['longhorn'].version}").resolve()
    # a local chart of another version is refused, naming it
    (tmp_path / f"longhorn-{CHARTS['longhorn'].version}" / "Chart.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v2", "name": "longhorn", "version": "1.0.0"}))
    model["platform"] = {"charts": {"longhorn": {"path": str(tmp_path / f"longhorn-{CHARTS['longhorn'].version}")}}}
    bad = run_program("dev", model)
    assert bad.error is not None and "1.0.0" in str(bad.error) and CHARTS["longhorn"].version in str(bad.error)
    assert str(bad.error).startswith("platform: chart longhorn: ") and "\n" not in str(bad.error)


def test_passwords_and_keys_are_secret_outputs(runs):
    for stack, run in runs.items():
        value, secret = run.output_value("passwords")
        assert secret and set(value) == {"traefik_dashboard", "grafana_admin", "argocd_admin"}, stack
        assert "sealing_certificate" in run.outputs and "ingress_certificate" in run.outputs


def test_prod_protects_data_and_dev_does_not(runs):
    prod = {(r.type, r.name) for r in runs["prod"].resources if r.protect}
    dev = {(r.type, r.name) for r in runs["dev"].resources if r.protect}
    assert ("tls:index/privateKey:PrivateKey", "platform-sealing-key") in prod
    assert any(t == "libvirt:index/volume:Volume" for t, _ in prod)
    assert not dev


def test_a_rotation_keeper_changes_only_its_password(runs):
    model = copy.deepcopy(stack_model("dev"))
    model["platform"] = {"rotation": {"grafana-admin": "2026-11"}}
    after = run_program("dev", model)
    assert after.error is None, after.error
    before = {r.urn: r.inputs for r in runs["dev"].resources}
    changed = {r.name for r in after.resources if r.urn in before and before[r.urn] != r.inputs}
    assert "platform-grafana-admin" in changed
    assert not {n for n in changed if "argocd" in n or "dashboard" in n or n.endswith("-k3s")}, changed


def test_platform_off_keeps_the_cluster(runs):
    model = copy.deepcopy(stack_model("dev"))
    model["platform"] = {"enabled": False}
    run = run_program("dev", model)
    assert run.error is None, run.error
    assert not run.by_type(PLATFORM) and run.by_type("pulumi:providers:kubernetes")
    assert "passwords" not in run.outputs
