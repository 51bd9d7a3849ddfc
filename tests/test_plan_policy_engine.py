"""Every policy under the real engine: prod's day-2 changes through policy/guard.py, file backend.

prod's state is built as the engine plans it (tests/support/planned_state.py: the
real CLI, language host and libvirt/command/random/tls plugins against a
private libvirtd; the platform off, since no cluster answers here), and a
no-change preview of it must plan nothing. Then guard.py - the policy pack
and the plan policies, the way README and the PR workflow run them - on:

- the domain changed: stopped, by data-nodes-kept naming storage1 and the
  Longhorn workers and by k3s-quorum naming the three servers, each with
  the config change behind it;
- a worker added: passes with no violation;
- the same domain change with every affected node in allow_replace: passes;
- an unpinned OS image: stopped.

Skips, naming what is missing: root, libvirt, the toolchain, a plugin.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from support.cli import plugin_versions_missing, toolchain_bin
from support.harness import ROOT

pytestmark = pytest.mark.engine

PLUGINS = ("command", "libvirt", "random", "tls", "kubernetes")
# postgresql1: the database node holds data (its PostgreSQL; even when the files are on NFS, a replaced VM is an outage).
DATA_NODES = ("postgresql1", "storage1", "worker1", "worker2", "worker3")
SERVERS = ("master1", "master2", "master3")


def _missing() -> list[str]:
    from e2e.sandbox import tools_missing

    out = []
    if os.geteuid() != 0:
        out.append("root (a private libvirtd in its own namespaces)")
    out += [f"{t} (MICROCLOUD_WITH_LIBVIRT=1 bash .ci/install.sh)" for t in tools_missing() if t not in ("qemu-system-x86_64", "qemu-img", "ssh")]
    if toolchain_bin() is None:
        out.append("the Pulumi toolchain (bash .ci/toolchain.sh)")
    out += [f"plugin {n}@{v}" if v else f"the pulumi_{n} SDK" for n, v in plugin_versions_missing(PLUGINS)]
    return out


@pytest.fixture(scope="module")
def prod(tmp_path_factory):
    missing = _missing()
    if missing:
        pytest.skip("not available: " + "; ".join(missing))
    from e2e.sandbox import Sandbox
    from support.planned_state import PlannedStack

    base = tmp_path_factory.mktemp("plan-policy")
    with Sandbox(base / "sandbox") as sb:
        (base / "stack").mkdir()
        st = PlannedStack(base / "stack", "prod", "qemu:///system", runner=sb.run)
        st.sandbox = sb
        st.build()  # asserts that a no-change preview then plans nothing
        yield st


def guard(st, model: dict, tmp_path) -> tuple[int, str, str]:
    st.write(model)
    try:
        md = tmp_path / "comment.md"
        res = st.sandbox.run([str(ROOT / "venv" / "bin" / "python"), str(ROOT / "policy" / "guard.py"), "--stack", "prod",
                              "--cwd", str(st.work), "--comment", str(md)], cwd=st.work, env=st.env, timeout=900)
    finally:
        st.write(st.base_model)
    return res.returncode, res.stdout + res.stderr, md.read_text() if md.exists() else ""


def test_changing_prods_domain_is_stopped_naming_the_nodes(prod, tmp_path):
    from previews.record import domain

    rc, out, md = guard(prod, domain(prod.base_model), tmp_path)
    assert rc == 1, out
    cause = 'caused by config change domain: "microcloud.lan" → "cloud.example.org"'
    data = [l for l in out.splitlines() if l.startswith("[mandatory] data-nodes-kept: ")]
    assert sorted(l.split(": ", 1)[1].split(" ", 1)[0] for l in data) == sorted(DATA_NODES), out
    assert all(cause in l for l in data), data
    storage = next(l for l in data if ": storage1 (storage, holds data): " in l)
    assert "VM storage1 replaced" in storage and "first-boot config storage1-ignition replaced: `content` changed" in storage
    [quorum] = [l for l in out.splitlines() if l.startswith("[mandatory] k3s-quorum: ")]
    assert "3 of 3 K3s servers are replaced or deleted in one update (master1, master2, master3)" in quorum and cause in quorum
    assert out.rstrip().endswith("prod: stopped: fix the mandatory findings above (or name intended replacements in allow_replace)")
    assert md.startswith("<!-- microcloud-preview:prod -->") and "**Stopped at preview: 6 mandatory policy violation(s).**" in md


def test_adding_a_worker_passes_with_no_violation(prod, tmp_path):
    from previews.record import add_worker

    rc, out, md = guard(prod, add_worker(prod.base_model), tmp_path)
    assert rc == 0, out
    assert "[mandatory]" not in out and "[advisory]" not in out, out
    # the new Node and its children, its SSH host key among them
    assert "| Node worker4 | 6 |  |  |  |" in md.splitlines(), md


def test_the_allow_list_lets_an_intended_replacement_through(prod, tmp_path):
    from previews.record import domain

    m = {**domain(prod.base_model), "allow_replace": [*DATA_NODES, *SERVERS]}
    rc, out, md = guard(prod, m, tmp_path)
    assert rc == 0, out
    assert "[mandatory]" not in out, out
    assert "allowed by allow_replace: master1, master2, master3, postgresql1, storage1, worker1, worker2, worker3" in out
    assert "**Passes every mandatory policy.**" in md


def test_an_unpinned_version_is_stopped(prod, tmp_path):
    m = dict(prod.base_model)
    m["images"] = {**m["images"], "flatcar": {**m["images"]["flatcar"], "source": "https://stable.release.flatcar-linux.net/amd64-usr/current/flatcar_production_qemu_image.img"}}
    rc, out, md = guard(prod, m, tmp_path)
    assert rc == 1, out
    assert "current" in out and "prod: stopped" in out, out
    assert "**Stopped at preview:" in md
