"""The Platform component (components/platform.py) under Pulumi mocks: its graph, not the charts' contents.

Chart directories are stand-ins (a Chart.yaml each) in a temp dir: under
mocks a helm.v4.Chart registers as one resource and renders nothing. What the
charts render against a real API server is tests/k8s/test_platform_engine.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s
import pytest
import yaml
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from components.platform import CHART_VERSIONS, Platform, PlatformArgs, chart_dir
from harness import Mocks, RecordingMonitor, Run

pytestmark = pytest.mark.graph

CHART = "kubernetes:helm.sh/v4:Chart"
SECRET = "kubernetes:core/v1:Secret"


def fake_charts(base: Path, versions: dict[str, str]) -> dict[str, str]:
    out = {}
    for name, ver in versions.items():
        d = base / f"{name}-{ver}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "Chart.yaml").write_text(yaml.safe_dump({"apiVersion": "v2", "name": name, "version": ver}))
        out[name] = str(d)
    return out


def run_platform(charts: dict[str, str], **kw) -> Run:
    monitor = RecordingMonitor(Mocks())
    pulumi.runtime.settings.set_root_resource(None)
    pulumi.runtime.set_mocks(Mocks(), project="platform-graph", stack="t", preview=False, monitor=monitor)
    root = pulumi.runtime.get_root_resource()
    error = None

    def program():
        provider = k8s.Provider("k8s", kubeconfig="{}", cluster_identifier="t")
        p = Platform("platform", PlatformArgs(domain="example.test", http_nodeport=30080, https_nodeport=30443,
                                              provider=provider, charts=charts, **kw))
        pulumi.export("sealing_certificate", p.sealing_certificate)
        pulumi.export("dashboard_password", p.dashboard_password)
        if p.argocd_admin_password is not None:
            pulumi.export("argocd_admin_password", p.argocd_admin_password)

    try:
        _sync_await(run_pulumi_func(program))
    except Exception as exc:
        error = exc
    return Run(monitor=monitor, outputs=dict(getattr(root, "outputs", {}) or {}), error=error)


@pytest.fixture(scope="module")
def graph(tmp_path_factory) -> Run:
    run = run_platform(fake_charts(tmp_path_factory.mktemp("charts"), dict(CHART_VERSIONS)))
    assert run.error is None, run.error
    return run


def test_every_kubernetes_resource_uses_the_explicit_provider(graph):
    k8s_resources = [r for r in graph.resources if r.type.startswith("kubernetes:") and r.type != "pulumi:providers:kubernetes"]
    assert {r.type for r in k8s_resources} >= {CHART, SECRET, "kubernetes:core/v1:Namespace"}
    component = graph.one("microcloud:platform:Platform", "platform")
    for r in k8s_resources:
        assert r.parent == component.urn, r.name
        assert "providers:kubernetes::k8s" in r.provider, (r.name, r.provider)


def test_charts_wait_for_the_secrets_they_name(graph):
    deps = {r.name: set(r.dependencies) for r in graph.by_type(CHART)}
    urn = {r.name: r.urn for r in graph.by_type(SECRET)}
    assert urn["platform-sealing-key"] in deps["platform-sealed-secrets"]
    assert {urn["platform-ingress-cert"], urn["platform-dashboard-auth"]} <= deps["platform-traefik"]
    assert {urn["platform-argocd-secret"], urn["platform-argocd-redis"]} <= deps["platform-argocd"]
    argocd = graph.one(CHART, "platform-argocd")
    assert graph.urn_of("kubernetes:core/v1:Namespace", "platform-argocd") in argocd.dependencies


def test_generated_secrets_are_secret(graph):
    for name in ("platform-sealing-key", "platform-ingress-key"):
        key = graph.one("tls:index/privateKey:PrivateKey", name)
        assert "privateKeyPem" in key.additional_secret_outputs
    for r in graph.by_type(SECRET):
        assert "stringData" in r.secret_inputs, r.name
    for name in ("dashboard_password", "argocd_admin_password"):
        value, secret = graph.output_value(name)
        assert secret and value, name
    _, secret = graph.output_value("sealing_certificate")
    assert not secret
    for r in graph.resources:
        for name, value in r.inputs.items():
            if name not in r.secret_inputs:
                assert "m0ckPass" not in json.dumps(value) and "mock-pem" not in json.dumps(value), (r.name, name)


def test_sealing_key_is_rsa_4096_and_labelled_active(graph):
    key = graph.one("tls:index/privateKey:PrivateKey", "platform-sealing-key")
    assert key.inputs["algorithm"] == "RSA" and key.inputs["rsaBits"] == 4096
    secret = graph.one(SECRET, "platform-sealing-key")
    assert secret.inputs["metadata"]["labels"] == {"sealedsecrets.bitnami.com/sealed-secrets-key": "active"}
    assert secret.inputs["metadata"]["namespace"] == "kube-system"
    assert secret.delete_before_replace  # a fixed name


def test_traefik_values_carry_the_nodeports(graph):
    values = graph.one(CHART, "platform-traefik").inputs["values"]
    assert values["service"]["spec"]["type"] == "NodePort"
    assert (values["ports"]["web"]["nodePort"], values["ports"]["websecure"]["nodePort"]) == (30080, 30443)


def test_argocd_is_optional(tmp_path):
    run = run_platform(fake_charts(tmp_path, {k: v for k, v in CHART_VERSIONS.items() if k != "argo-cd"}), argocd=False)
    assert run.error is None, run.error
    assert {r.name for r in run.by_type(CHART)} == {"platform-sealed-secrets", "platform-traefik"}


def test_a_chart_of_another_version_fails_naming_chart_wanted_and_found(tmp_path):
    charts = fake_charts(tmp_path, {**CHART_VERSIONS, "traefik": "40.0.0"})
    with pytest.raises(ValueError) as err:
        chart_dir("traefik", charts["traefik"], "41.3.0")
    msg = str(err.value)
    assert "\n" not in msg and "traefik" in msg and "41.3.0" in msg and "40.0.0" in msg, msg
    run = run_platform(charts)
    assert isinstance(run.error, ValueError) and "40.0.0" in str(run.error)
    with pytest.raises(ValueError, match="no Chart.yaml"):
        chart_dir("traefik", str(tmp_path / "nowhere"), "41.3.0")
