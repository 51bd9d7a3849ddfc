"""The policy pack (policy/) under the real CLI and our language host: it starts, flags what it must, passes what it must.

A small program of Kubernetes resources is previewed with `--policy-pack
policy`: a resource on the default provider and floating container images
fail the preview as mandatory violations naming each resource; the same
program with an explicit provider and pinned images passes. No cluster is
contacted: preview only (KUBECONFIG points nowhere). The whole program with
the pack is tests/test_program_engine.py.

Skips, naming what is missing: the toolchain, the kubernetes plugin, pulumi-policy in the venv.
"""

from __future__ import annotations

import importlib.util
import subprocess
import textwrap
from pathlib import Path

import pytest

from support.cli import cli_env, plugin_versions_missing, toolchain_bin
from support.harness import ROOT

pytestmark = pytest.mark.engine

PROGRAM = """
import pulumi
import pulumi_kubernetes as k8s

explicit = k8s.Provider("explicit", kubeconfig="{{}}", cluster_identifier="policy-test")
on = pulumi.ResourceOptions(provider=explicit)
k8s.core.v1.ConfigMap("settings", metadata={{"name": "a", "namespace": "default"}}, data={{"k": "v"}}, opts={cm_opts})
k8s.apps.v1.Deployment(
    "web",
    metadata={{"name": "web", "namespace": "default"}},
    spec={{
        "selector": {{"matchLabels": {{"app": "web"}}}},
        "template": {{
            "metadata": {{"labels": {{"app": "web"}}}},
            "spec": {{"containers": [{{"name": "web", "image": "{image}"}}, {{"name": "side", "image": "{side}"}}]}},
        }},
    }},
    opts=on,
)
"""


def _run(tmp_path: Path, name: str, **fmt: str) -> subprocess.CompletedProcess:
    missing = []
    if toolchain_bin() is None:
        missing.append("the Pulumi toolchain (bash .ci/toolchain.sh)")
    missing += [f"plugin {n}@{v}" for n, v in plugin_versions_missing(("kubernetes",))]
    if importlib.util.find_spec("pulumi_policy") is None:
        missing.append("pulumi-policy in the venv (requirements.txt)")
    if missing:
        pytest.skip("not available: " + "; ".join(missing))
    base = tmp_path / name
    base.mkdir()
    env = cli_env(base, toolchain_bin(), KUBECONFIG=str(base / "no-kubeconfig"))
    work = base / "program"
    work.mkdir()
    (work / "Pulumi.yaml").write_text(f"name: policytest\nruntime:\n  name: python\n  options:\n    virtualenv: {ROOT / 'venv'}\n")
    (work / "__main__.py").write_text(textwrap.dedent(PROGRAM.format(**fmt)))
    init = subprocess.run(["pulumi", "stack", "init", "t", "--secrets-provider", "passphrase"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    return subprocess.run(["pulumi", "preview", "--non-interactive", "--color=never", "--policy-pack", str(ROOT / "policy")],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)


def test_violations_fail_the_preview_naming_each_resource(tmp_path):
    res = _run(tmp_path, "bad", cm_opts="None", image="nginx:latest", side="busybox")
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "microcloud@" in out and "[mandatory]  explicit-kubernetes-provider  (kubernetes:core/v1:ConfigMap: settings)" in out, out
    assert "settings (kubernetes:core/v1:ConfigMap) uses the default kubernetes provider" in out
    assert "web: container image nginx:latest has no exact tag or digest" in out
    assert "web: container image busybox has no exact tag or digest" in out
    assert out.count("[mandatory]") == 3, out


def test_an_explicit_provider_and_pinned_images_pass(tmp_path):
    res = _run(tmp_path, "good", cm_opts="on", image="docker.io/library/nginx:1.27.3", side="busybox:1.36.1")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "microcloud@" in out and "[mandatory]" not in out, out
