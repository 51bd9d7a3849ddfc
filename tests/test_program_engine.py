"""The whole program - VMs, K3s, storage, node_exporter, platform - previewed by the real engine for dev and prod, with the policy pack.

The first real `pulumi preview` of the infrastructure layer once failed where
mocks passed; this keeps the whole graph honest under the real CLI, language
host and provider plugins (libvirt, command, random, tls, kubernetes), with
the libvirt provider talking to a private libvirtd (tests/e2e/sandbox.py).
Charts come from the pinned local chart directory (MICROCLOUD_CHART_DIR, or
~/.cache/microcloud-charts); the kubeconfig is unknown at preview, as on a
first `up`. Nothing is created: no VM boots.

Skips, naming what is missing: root, libvirt, the toolchain, a plugin, a chart.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from pathlib import Path

import pytest

from components.config import parse_config
from components.chart_pins import CHARTS
from components.specs import k3s_bootstrap_server, k3s_install_order
from support.cli import plugin_versions_missing, toolchain_bin
from support.harness import ROOT, stack_model

pytestmark = pytest.mark.engine

PLUGINS = ("command", "libvirt", "random", "tls", "kubernetes")


def chart_root() -> Path:
    return Path(os.environ.get("MICROCLOUD_CHART_DIR") or Path.home() / ".cache" / "microcloud-charts")


def _missing() -> list[str]:
    from e2e.sandbox import tools_missing

    out = []
    if os.geteuid() != 0:
        out.append("root (a private libvirtd in its own namespaces)")
    out += [f"{t} (MICROCLOUD_WITH_LIBVIRT=1 bash .ci/install.sh)" for t in tools_missing() if t not in ("qemu-system-x86_64", "qemu-img", "ssh")]
    if toolchain_bin() is None:
        out.append("the Pulumi toolchain (bash .ci/toolchain.sh)")
    out += [f"plugin {n}@{v}" if v else f"the pulumi_{n} SDK" for n, v in plugin_versions_missing(PLUGINS)]
    out += [f"chart {n}-{p.version} in {chart_root()}" for n, p in CHARTS.items() if not (chart_root() / f"{n}-{p.version}" / "Chart.yaml").is_file()]
    return out


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    missing = _missing()
    if missing:
        pytest.skip("not available: " + "; ".join(missing))
    from e2e.sandbox import Sandbox

    with Sandbox(tmp_path_factory.mktemp("preview-sandbox")) as sb:
        yield sb


def _model(stack: str, base: Path) -> dict:
    m = stack_model(stack)
    fake = base / "fake-binary"
    fake.write_bytes(b"stands in for a binary the program uploads; nothing is created here\n")
    m["dns"]["coredns"] = {"path": str(fake)}
    m["monitoring"] = {"node_exporter": {"path": str(fake)}}
    m["pool_path"] = str(base / "pool")
    m["libvirt_uri"] = "qemu:///system"  # the sandbox's libvirtd
    return m


# prod previews with a private registry whose token is a secret config key (docs/delivery.md).
REGISTRY_TOKEN = "ghp_" + "PrevIewT0ken" * 3


def _preview(sandbox, tmp_path: Path, stack: str) -> tuple[dict, str, float]:
    from e2e.stack import Stack

    model = _model(stack, tmp_path)
    if stack == "prod":
        model["k3s"]["registries"] = {"configs": {"ghcr.io": {"auth": {"username": "microcloud-bot", "password_key": "ghcr_token"}}}}
    st = Stack.create(sandbox, tmp_path, model)
    if stack == "prod":
        st.set_secret("ghcr_token", REGISTRY_TOKEN)
    st.env["MICROCLOUD_CHART_DIR"] = str(chart_root())
    t0 = time.monotonic()
    # With the project's policy pack: the real program must pass every mandatory policy.
    res = st.pulumi("preview", "--json", "--policy-pack", str(ROOT / "policy"), timeout=900)
    secs = time.monotonic() - t0
    assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    (tmp_path / "preview.json").write_text(res.stdout)
    # The display a reviewer reads (policy notes are shown there, not in --json).
    shown = st.pulumi("preview", "--diff", "--policy-pack", str(ROOT / "policy"), timeout=900)
    assert shown.returncode == 0, f"{shown.stdout[-3000:]}\n{shown.stderr[-3000:]}"
    return json.loads(res.stdout), res.stdout + res.stderr + shown.stdout + shown.stderr, secs


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_whole_program_previews_under_the_real_engine(sandbox, tmp_path, stack):
    plan, text, secs = _preview(sandbox, tmp_path, stack)
    cfg = parse_config(stack_model(stack))
    steps = plan["steps"]
    ops = Counter(s["op"] for s in steps)
    assert set(ops) == {"create"}, ops
    names = {s["urn"].rsplit("::", 1)[1]: s for s in steps}
    # K3s: its PKI (a CA, both token passwords, the admin certificate), the bootstrap run,
    # one install per node, the readiness check; then the one provider.
    want = {f"{n.name}-k3s" for n in k3s_install_order(cfg)} | {"k3s-ready", "k3s-pki-server-ca", "k3s-pki-server-token", "k3s-pki-node-token", "k3s-pki-admin"}
    if len(cfg.servers) > 1:
        want.add(f"{k3s_bootstrap_server(cfg).name}-k3s-bootstrap")
    assert want <= set(names), sorted(want - set(names))
    provider = names["k3s"]
    assert provider["urn"].split("::")[-2].endswith("pulumi:providers:kubernetes")
    # Every chart, pinned, from the local chart directory; every Kubernetes resource through that provider.
    charts = [s for s in steps if s["urn"].split("::")[-2].endswith("kubernetes:helm.sh/v4:Chart")]
    assert len(charts) == len(CHARTS) - (0 if cfg.nodes_with("storage") else 1)
    # (a Chart is a component: its provider reaches the objects it renders, checked in tests/k8s)
    k8s = [s for s in steps if s["urn"].split("::")[-2].split("$")[-1].startswith("kubernetes:") and s["newState"].get("custom")]
    assert len(k8s) >= 5
    for s in k8s:
        used = s["newState"].get("provider") or s.get("provider") or ""
        assert used.startswith(provider["urn"] + "::"), (s["urn"], used)
    # Storage and node_exporter commands are in the plan too.
    assert any(n.endswith("-exports") for n in names) and any(n.endswith("-node-exporter-unit") for n in names)
    # The policy pack ran and had nothing to say: no violation, and no "can't run" note for values unknown at preview.
    assert "can't run policy" not in text and "[advisory]" not in text, text[-2000:]
    # The plan policies (policy/plan.py) on the whole program: no input named like a secret in clear, nothing destroyed.
    from policy import plan as plan_policies

    assert not plan_policies.check(plan), plan_policies.check(plan)
    # No secret in clear anywhere in what the CLI printed.
    assert "BEGIN OPENSSH PRIVATE KEY" not in text and "BEGIN RSA PRIVATE KEY" not in text
    assert not re.search(r"K10[0-9a-f]{20,}", text)
    assert REGISTRY_TOKEN not in text and REGISTRY_TOKEN not in (tmp_path / "preview.json").read_text()
    # The image updater chart and its object, the CI account's token issue time: planned like the rest.
    assert "platform-argocd-image-updater" in names and "platform-image-updater" in names
    if stack == "prod":
        assert "platform-image-updater-registries" in names
    print(f"{stack}: {len(steps)} steps previewed in {secs:.1f}s")
