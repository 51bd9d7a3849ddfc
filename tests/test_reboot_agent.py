"""The disruption budget in the K3s install script and the reboot agent, checked by the programs that read them.

The lock itself is proven against a real API server in
tests/k8s/test_disruption_budget.py; here: the install script takes a slot
only to restart a running member (never on a node's first install), frees it
once Ready, keeps it when the node is not back; the reboot agent's script
passes dash and shellcheck, its units systemd-analyze, on every OS.
"""

from __future__ import annotations

import base64
import dataclasses
import shutil
import subprocess

import pytest

from components import specs
from components.specs.reboots import reboot_spec
from components.render import budget, k3s, reboot
from support.k3s_node import Node, k3s_nodes
from support.k3s_pki import join_input
from support.platform_render import CONFIGS

pytestmark = pytest.mark.validators

# k3s stand-in: `kubectl` with the budget's kubeconfig keeps Leases as files ($STATE/leases/<name>; create refuses
# one that exists, replace needs the resourceVersion read), logs each call and each document written; with the
# kubelet's kubeconfig it prints Ready once $READY is set.
FAKE_K3S = r"""#!/usr/bin/env python3
import json, os, sys
a = sys.argv[1:]
state = os.environ["STATE"]
if a[:1] != ["kubectl"]:
    print("k3s version (fake)"); sys.exit(0)
if not any("budget.kubeconfig" in x for x in a):
    if os.environ.get("READY"):
        sys.stdout.write("True")
    sys.exit(0)
with open(os.path.join(state, "budget.calls"), "a") as f:
    f.write(" ".join(a) + "\n")
leases = os.path.join(state, "leases"); os.makedirs(leases, exist_ok=True)
if "get" in a:
    name = a[a.index("lease") + 1]
    path = os.path.join(leases, name)
    if not os.path.exists(path):
        sys.exit(0)
    d = json.load(open(path)); sp = d["spec"]
    sys.stdout.write(f'{d["metadata"]["resourceVersion"]} {sp["renewTime"]} {sp["leaseDurationSeconds"]} {sp["acquireTime"]} {sp["holderIdentity"]}')
    sys.exit(0)
doc = json.loads(sys.stdin.read())
with open(os.path.join(state, "budget.docs"), "a") as f:
    f.write(json.dumps(doc, separators=(",", ":")) + "\n\n")
path = os.path.join(leases, doc["metadata"]["name"])
have = json.load(open(path)) if os.path.exists(path) else None
if "create" in a:
    if have is not None:
        sys.exit(1)
    doc["metadata"]["resourceVersion"] = "1"
else:
    if have is None or doc["metadata"].get("resourceVersion") != have["metadata"]["resourceVersion"]:
        sys.exit(1)
    doc["metadata"]["resourceVersion"] = str(int(have["metadata"]["resourceVersion"]) + 1)
json.dump(doc, open(path, "w"))
"""

KUBECONFIG = "apiVersion: v1\nkind: Config\n"


def agent_box(tmp_path) -> tuple[Node, k3s.K3sInstallSpec, str]:
    box = Node(tmp_path)
    box.binary.write_text(FAKE_K3S)
    box.binary.chmod(0o755)
    cfg = CONFIGS["prod"]
    node = next(n for n in k3s_nodes(cfg) if n.role == "agent")
    spec = box.spec(node, ready_timeout=10, budget=specs.k3s_budget(cfg), budget_pool="agent")
    stdin = join_input(node).rstrip("\n") + "\nbudget " + base64.b64encode(KUBECONFIG.encode()).decode() + "\n"
    return box, spec, stdin


def budget_calls(box: Node) -> list[str]:
    path = box.state / "budget.calls"
    return path.read_text().splitlines() if path.exists() else []


def test_first_install_takes_no_slot_and_writes_the_budget_credentials(tmp_path):
    box, spec, stdin = agent_box(tmp_path)
    res = box.run(spec, stdin=stdin, READY="1")
    assert res.returncode == 0, res.stderr
    # Not yet a member: nothing of the cluster is taken down, no one is waited for.
    assert budget_calls(box) == []
    kc = box.path(budget.KUBECONFIG)
    assert kc.read_text() == KUBECONFIG and oct(kc.stat().st_mode & 0o777) == "0o600"


def test_a_restart_of_a_running_member_takes_a_slot_and_frees_it_when_ready(tmp_path):
    box, spec, stdin = agent_box(tmp_path)
    assert box.run(spec, stdin=stdin, READY="1").returncode == 0
    changed = k3s.K3sInstallSpec(**{**spec.__dict__, "node": dataclasses.replace(spec.node, node_labels=("x=1",))})
    res = box.run(changed, stdin=stdin, READY="1")
    assert res.returncode == 0, res.stderr
    calls = budget_calls(box)
    assert any(" create " in c for c in calls), calls
    docs = (box.state / "budget.docs").read_text().split("\n\n")
    # Taken as agent-0 by this node, then freed (holder empty) after Ready.
    assert f'"name":"agent-0"' in docs[0] and f'"holderIdentity":"{spec.node.node_name}"' in docs[0]
    assert '"holderIdentity":""' in (box.state / "budget.docs").read_text()
    # The same spec again: nothing changed, nothing restarted, no slot.
    before = len(budget_calls(box))
    assert box.run(changed, stdin=stdin, READY="1").returncode == 0
    assert len(budget_calls(box)) == before


def test_a_member_that_is_not_ready_again_keeps_its_slot(tmp_path):
    box, spec, stdin = agent_box(tmp_path)
    assert box.run(spec, stdin=stdin, READY="1").returncode == 0
    changed = k3s.K3sInstallSpec(**{**spec.__dict__, "node": dataclasses.replace(spec.node, node_labels=("x=2",)), "ready_timeout": 5})
    res = box.run(changed, stdin=stdin)
    assert res.returncode == 1
    assert "stays held for 3600s" in res.stderr and "is not Ready" in res.stderr
    text = (box.state / "budget.docs").read_text()
    assert '"leaseDurationSeconds":3600' in text and '"holderIdentity":""' not in text


def test_no_budget_kubeconfig_installs_nothing(tmp_path):
    box, spec, _ = agent_box(tmp_path)
    res = box.run(spec, stdin=join_input(spec.node), READY="1")
    assert res.returncode == 1 and "no kubeconfig of the disruption budget" in res.stderr
    assert box.installed() == [] or all("budget" not in str(p) for p in box.installed())


def test_install_with_budget_passes_shellcheck(tmp_path):
    tool = shutil.which("shellcheck")
    assert tool, "shellcheck is not installed; run .ci/install.sh (Debian package shellcheck)"
    box, spec, _ = agent_box(tmp_path)
    path = tmp_path / "install.sh"
    path.write_text(k3s.render_k3s_install(spec))
    res = subprocess.run([tool, "-s", "sh", "-e", "SC2086", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


# ------------------------------------------------------------------ the reboot agent


def _nodes_by_os():
    out = {}
    for stack in ("prod", "dev", "edge-alma-isolated"):
        cfg = CONFIGS.get(stack)
        if cfg is None:
            continue
        for n in cfg.nodes_with("server", "agent", "storage"):
            out.setdefault(reboot_spec(cfg, n).os, (cfg, n))
    return out


def test_every_os_has_a_reboot_agent_in_the_stacks():
    assert {"flatcar"} <= set(_nodes_by_os())


@pytest.mark.parametrize("os_kind", sorted(reboot.NEEDS_REBOOT))
def test_reboot_script_passes_dash_and_shellcheck(os_kind, tmp_path):
    cfg = CONFIGS["prod"]
    node = cfg.servers[0]
    spec = dataclasses.replace(reboot_spec(cfg, node), os=os_kind)
    path = tmp_path / "reboot.sh"
    path.write_text(reboot.render_script(spec))
    assert subprocess.run(["dash", "-n", str(path)], capture_output=True).returncode == 0
    tool = shutil.which("shellcheck")
    assert tool, "shellcheck is not installed; run .ci/install.sh (Debian package shellcheck)"
    res = subprocess.run([tool, "-s", "sh", "-e", "SC2086", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout
    # The agent takes the node's own pool; a server's is the pool of one.
    assert f"budget_acquire {spec.pool}" in path.read_text() and spec.pool == "server"


def test_reboot_units_pass_systemd_analyze(tmp_path):
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is not installed (Debian package systemd)"
    cfg = CONFIGS["prod"]
    node = next(n for n in cfg.nodes_with("agent"))
    script = tmp_path / "microcloud-reboot"
    spec = dataclasses.replace(reboot_spec(cfg, node), script=str(script))
    script.write_text(reboot.render_script(spec))
    script.chmod(0o755)
    units = reboot.render_units(spec)
    for name, text in units.items():
        (tmp_path / name).write_text(text)
    res = subprocess.run([tool, "verify", *(str(tmp_path / n) for n in units)], capture_output=True, text=True)
    # Only our units: systemd-analyze also reports on units they name that this machine lacks (k3s-agent).
    ours = [line for line in (res.stdout + res.stderr).splitlines() if "microcloud-reboot" in line]
    assert not ours, ours
    assert f"OnCalendar=*-*-* {cfg.updates.window_start}:00" in units[reboot.TIMER_UNIT]
    # A broken unit is refused: the check can fail.
    (tmp_path / reboot.CHECK_UNIT).write_text(units[reboot.CHECK_UNIT].replace("Type=oneshot", "Type=oneshoot"))
    bad = subprocess.run([tool, "verify", str(tmp_path / reboot.CHECK_UNIT)], capture_output=True, text=True)
    assert "oneshoot" in bad.stdout + bad.stderr


def test_reboot_agent_refuses_bad_input():
    cfg = CONFIGS["prod"]
    spec = reboot_spec(cfg, cfg.servers[0])
    for bad, what in (({"os": "windows"}, "os"), ({"pool": "nope"}, "no pool"), ({"window_start": "25:00"}, "HH:MM")):
        with pytest.raises(ValueError, match=what):
            reboot.render_script(dataclasses.replace(spec, **bad))


# ------------------------------------------------------------------ outside the cluster, and the updaters


def test_the_load_balancers_reboot_on_disjoint_days_and_only_with_the_peer_up():
    for stack in ("dev", "prod"):
        cfg = CONFIGS[stack]
        a, b = (reboot_spec(cfg, n) for n in sorted(cfg.load_balancers, key=lambda n: n.name))
        assert a.budget is None and b.budget is None
        assert a.days and b.days and not set(a.days.split(",")) & set(b.days.split(",")), (stack, a.days, b.days)
        ips = {n.name: str(n.ip) for n in cfg.load_balancers}
        assert (a.peer, b.peer) == (ips[b.node], ips[a.node])
        for spec in (a, b):
            text = reboot.render_script(spec)
            assert f"ping -q -c 3 -W 2 {spec.peer}" in text and "budget_acquire" not in text
            units = reboot.render_units(spec)
            assert reboot.BOOT_UNIT not in units
            assert f"OnCalendar={spec.days} *-*-* {cfg.updates.window_start}:00" in units[reboot.TIMER_UNIT]
        # The infra node (and the database node) on a day of neither load balancer.
        other = reboot_spec(cfg, cfg.infra_node)
        assert other.budget is None and not set(other.days.split(",")) & set(a.days.split(",") + b.days.split(","))


@pytest.mark.parametrize("os_kind", ["debian", "el9"])
def test_host_reboot_script_passes_dash_shellcheck_and_systemd_analyze(os_kind, tmp_path):
    cfg = CONFIGS["prod"]
    lb = sorted(cfg.load_balancers, key=lambda n: n.name)[0]
    script = tmp_path / "microcloud-reboot"
    spec = dataclasses.replace(reboot_spec(cfg, lb), os=os_kind, script=str(script))
    script.write_text(reboot.render_script(spec))
    script.chmod(0o755)
    assert subprocess.run(["dash", "-n", str(script)], capture_output=True).returncode == 0
    res = subprocess.run([shutil.which("shellcheck") or "shellcheck", "-s", "sh", str(script)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout
    units = reboot.render_units(spec)
    for name, text in units.items():
        (tmp_path / name).write_text(text)
    res = subprocess.run(["systemd-analyze", "verify", *(str(tmp_path / n) for n in units)], capture_output=True, text=True)
    assert not [line for line in (res.stdout + res.stderr).splitlines() if "microcloud-reboot" in line], res.stdout + res.stderr


def test_the_host_agent_reboots_only_when_needed_and_the_peer_answers(tmp_path):
    """The Debian agent run for real under dash, with systemctl and ping as stand-ins that log."""
    cfg = CONFIGS["prod"]
    lb = sorted(cfg.load_balancers, key=lambda n: n.name)[0]
    spec = dataclasses.replace(reboot_spec(cfg, lb), os="debian")
    flag = tmp_path / "reboot-required"
    text = reboot.render_script(spec).replace("[ -e /run/reboot-required ]", f"[ -e {flag} ]")
    script = tmp_path / "agent.sh"
    script.write_text(text)
    fake = tmp_path / "bin"
    fake.mkdir()
    log = tmp_path / "log"
    (fake / "systemctl").write_text(f'#!/bin/sh\necho "systemctl $*" >> {log}\n')
    (fake / "ping").write_text(f'#!/bin/sh\necho "ping $*" >> {log}\n[ -e {tmp_path}/peer-up ]\n')
    for f in fake.iterdir():
        f.chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin"}

    def run():
        log.write_text("")
        res = subprocess.run(["dash", str(script), "check"], env=env, capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stderr
        return log.read_text(), res.stderr

    assert run()[0] == ""  # no reboot needed: nothing asked, nothing done
    flag.write_text("")
    out, err = run()
    assert f"ping -q -c 3 -W 2 {spec.peer}" in out and "systemctl reboot" not in out and "does not answer" in err
    (tmp_path / "peer-up").write_text("")
    out, _ = run()
    assert "systemctl reboot" in out


@pytest.mark.parametrize("packages", ["security", "all"])
def test_updater_configs_are_read_by_their_programs(packages, tmp_path):
    from components.render import updates

    deb = updates.UpdatesSpec(family="debian", packages=packages)
    path = tmp_path / "apt.conf"
    path.write_text(updates.render(deb))
    env = {"PATH": "/usr/bin:/bin"}
    res = subprocess.run(["sh", "-c", updates.VALIDATE["debian"].format(file=str(path))], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    dump = subprocess.run(["apt-config", "-c", str(path), "dump"], capture_output=True, text=True).stdout
    assert 'Unattended-Upgrade::Automatic-Reboot "false";' in dump and 'APT::Periodic::Unattended-Upgrade "1";' in dump
    assert ("-updates" in dump) is (packages == "all")
    path.write_text(updates.render(deb).replace('Automatic-Reboot "false";', 'Automatic-Reboot "false"'))
    bad = subprocess.run(["sh", "-c", updates.VALIDATE["debian"].format(file=str(path))], env=env, capture_output=True, text=True)
    assert bad.returncode != 0

    el = updates.UpdatesSpec(family="el9", packages=packages)
    path = tmp_path / "automatic.conf"
    path.write_text(updates.render(el))
    check = updates.VALIDATE["el9"].format(file=str(path))
    res = subprocess.run(["sh", "-c", check], env=env, capture_output=True, text=True)
    assert res.returncode == 0, "python3-dnf (dnf-automatic's config reader) is needed: .ci/install.sh\n" + res.stderr
    probe = "import sys, dnf.automatic.main as m; c = m.AutomaticConfig(sys.argv[1]).commands; print(c.upgrade_type, c.apply_updates)"
    got = subprocess.run(["/usr/bin/python3", "-c", probe, str(path)], capture_output=True, text=True).stdout.split()
    assert got == [("security" if packages == "security" else "default"), "True"]
    path.write_text(updates.render(el).replace("apply_updates = yes", "apply_updates = perhaps"))
    assert subprocess.run(["sh", "-c", check], env=env, capture_output=True).returncode != 0


def test_packaged_nodes_get_the_updater_flatcar_does_not():
    from components.specs.reboots import updates_spec

    cfg = CONFIGS["prod"]
    for n in cfg.nodes:
        spec = updates_spec(cfg, n)
        assert (spec is None) is n.is_flatcar, n.name
