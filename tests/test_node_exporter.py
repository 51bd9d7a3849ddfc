"""node_exporter on the VMs outside the cluster: the real binary, its unit, the on-node checks, the graph.

The binary is the one .ci/node-exporter.sh builds from Go modules (the file
the program copies to the nodes); tests that need it skip, naming the script,
when it is not built. It runs on 127.0.0.1 on a free port, in a temp dir of
its own, with exactly the flags of the rendered unit but the listen address,
and is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import runpy
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pulumi
import pytest
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from components.config import parse_config
from components.config.monitoring import MonitoringConfig, NodeExporterBinary
from components.day2 import trigger_digest
from components.node_exporter import SYSUSERS_PATH, NodeExporters, NodeExportersArgs
from components.specs import monitored_nodes, scrape_sources
from components.render.firewalld import firewalld_commands, tracks_connections
from components.render.node_exporter import (
    binary_check,
    metrics_check,
    CONNTRACK_COLLECTOR,
    NODE_EXPORTER_PORT,
    SERVICE_USER,
    VM_COLLECTORS,
    NodeExporterUnitSpec,
    exporter_args,
    node_collectors,
    SYSUSERS_CONF,
    render_unit,
)
from support.harness import (FAKE_NODE_EXPORTER as FAKE_EXPORTER, MAIN, PROJECT, Mocks, RecordingMonitor, Run,
                             assert_stacks_pin_build, stack_config, stack_model, with_stand_in_binaries)

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / ".ci" / "node-exporter.sh"
LOOPBACK = "127.0.0.1"


def _pinned_version() -> str:
    m = re.search(r"^VERSION=(v[0-9.]+)$", BUILD_SCRIPT.read_text(), re.M)
    assert m, f"no VERSION=vX.Y.Z line in {BUILD_SCRIPT}"
    return m.group(1)


VERSION = _pinned_version()


@pytest.fixture(scope="module")
def exporter_bin() -> Path:
    path = Path(NodeExporterBinary().local_path())
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.skip(f"no node_exporter binary at {path}: run bash .ci/node-exporter.sh (about a minute cold on 2 cores)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """Stop our exporter by its PID: SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def unit_argv(unit: str) -> list[str]:
    """ExecStart of a rendered unit as argv (continuation lines joined; the renderer uses no $ or %)."""
    m = re.search(r"^ExecStart=((?:.*\\\n)*.*)$", unit, re.M)
    assert m, unit
    return shlex.split(m.group(1).replace("\\\n", " "))


# A node's unit as the program renders it (dev stack, lb1).
DEV = parse_config(stack_model("dev"))
LB1 = next(n for n in DEV.nodes if n.name == "lb1")
SPEC = NodeExporterUnitSpec(
    binary="/usr/local/lib/microcloud/node_exporter-v1.12.1/node_exporter",
    listen_address=str(LB1.ip),
    allowed_sources=scrape_sources(DEV),
)



# ------------------------------------------------------------------ real exporter


class Exporter:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path):
        self.proc, self.port, self.log = proc, port, log

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/metrics"

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url, timeout=10) as r:
            assert r.status == 200
            return r.read().decode()


@contextlib.contextmanager
def running_exporter(binary: Path, workdir: Path, spec: NodeExporterUnitSpec = SPEC, extra: tuple[str, ...] = ()) -> Iterator[Exporter]:
    """The binary with the unit's flags (plus ``extra``) on a free loopback port; always stopped on exit."""
    for attempt in range(3):
        port = free_port()
        argv = [str(binary), *exporter_args(spec, listen=f"{LOOPBACK}:{port}"), *extra]
        log = workdir / f"node_exporter-{attempt}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(argv, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            exp = Exporter(proc, port, log)
            deadline = time.monotonic() + 20
            while proc.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    exp.metrics()
                    break
                time.sleep(0.2)
            else:
                if proc.poll() is not None and "address already in use" in log.read_text():
                    continue
                pytest.fail(f"node_exporter did not answer (exit {proc.poll()}):\n{log.read_text()}")
            yield exp
            return
        finally:
            _stop(proc)
    pytest.fail("node_exporter could not bind a free port three times")


@pytest.fixture(scope="module")
def exporter(exporter_bin, tmp_path_factory) -> Iterator[Exporter]:
    with running_exporter(exporter_bin, tmp_path_factory.mktemp("node-exporter")) as exp:
        yield exp


def _samples(text: str, name: str) -> dict[str, float]:
    """{labels: value} of one metric."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels, _, value = line[len(name):].rpartition(" ")
            out[labels] = float(value)
    return out


@pytest.mark.unit
def test_pinned_version_is_the_stack_default():
    """.ci/node-exporter.sh builds the version the model uploads to the nodes."""
    assert NodeExporterBinary().version == VERSION, f"{BUILD_SCRIPT} builds {VERSION}, the model pins {NodeExporterBinary().version}"
    assert MonitoringConfig().node_exporter.version == VERSION


@pytest.mark.validators
def test_binary_is_the_pinned_version(exporter_bin):
    res = subprocess.run([str(exporter_bin), "--version"], capture_output=True, text=True, timeout=30)
    out = res.stdout + res.stderr
    assert res.returncode == 0 and out.startswith(f"node_exporter, version {VERSION[1:]} "), out


@pytest.mark.validators
def test_both_stacks_pin_this_build(exporter_bin):
    """The build is reproducible (-trimpath, no date): dev and prod hold the nodes to its sha256."""
    assert_stacks_pin_build(exporter_bin, "monitoring.node_exporter")


@pytest.mark.unit
def test_the_test_runs_the_units_flags():
    """The loopback exporter below gets the unit's ExecStart, only the listen address differs."""
    argv = unit_argv(render_unit(SPEC))
    assert argv[0] == SPEC.binary
    assert argv[1:] == exporter_args(SPEC)
    assert argv[1] == f"--web.listen-address={LB1.ip}:{NODE_EXPORTER_PORT}"
    assert exporter_args(SPEC, listen="127.0.0.1:1")[1:] == argv[2:]


@pytest.mark.validators
def test_answers_node_metrics(exporter):
    text = exporter.metrics()
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line.startswith("node_")}
    for want in ("node_cpu_seconds_total", "node_memory_MemAvailable_bytes", "node_filesystem_avail_bytes",
                 "node_network_receive_bytes_total", "node_load1", "node_timex_sync_status", "node_uname_info"):
        assert want in names, f"{want} missing from /metrics"
    build = _samples(text, "node_exporter_build_info")
    assert len(build) == 1 and f'version="{VERSION[1:]}"' in next(iter(build)), build


@pytest.mark.validators
def test_only_the_units_collectors_run_and_they_succeed(exporter):
    """Exactly VM_COLLECTORS; each succeeds here, but systemd where there is no systemd (this test machine)."""
    success = _samples(exporter.metrics(), "node_scrape_collector_success")
    got = {re.search(r'collector="([^"]+)"', k).group(1): v for k, v in success.items()}
    assert set(got) == set(VM_COLLECTORS), sorted(got)
    booted_with_systemd = Path("/run/systemd/system").is_dir()
    failed = {c for c, v in got.items() if v != 1}
    allowed = set() if booted_with_systemd else {"systemd"}
    assert failed <= allowed, f"collectors failed: {failed}\n{exporter.log.read_text()[-2000:]}"


def _fake_procfs(root: Path, conntrack_table: bool) -> Path:
    """A /proc with (or without) what the conntrack collector reads: the table's size and its per-CPU stats."""
    root.mkdir()
    if conntrack_table:
        nf = root / "sys" / "net" / "netfilter"
        nf.mkdir(parents=True)
        (nf / "nf_conntrack_count").write_text("3\n")
        (nf / "nf_conntrack_max").write_text("4096\n")
        (root / "net" / "stat").mkdir(parents=True)
        header = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart"
        (root / "net" / "stat" / "nf_conntrack").write_text(header + "\n" + " ".join(["00000003"] + ["00000000"] * 16) + "\n")
    return root


@pytest.mark.validators
@pytest.mark.parametrize("table", [True, False], ids=["table", "no-table"])
def test_conntrack_collector_fails_without_a_table(exporter_bin, tmp_path, table):
    """Why conntrack is collected only where the node tracks connections: without nf_conntrack loaded
    the collector has no data and reports success 0 on every scrape (what the Debian LBs showed)."""
    spec = NodeExporterUnitSpec(binary="/x", listen_address="10.0.0.1", collectors=(CONNTRACK_COLLECTOR,))
    procfs = _fake_procfs(tmp_path / "proc", table)
    with running_exporter(exporter_bin, tmp_path, spec, extra=(f"--path.procfs={procfs}",)) as exp:
        text = exp.metrics()
    assert _samples(text, "node_scrape_collector_success") == {'{collector="conntrack"}': 1.0 if table else 0.0}
    assert (_samples(text, "node_nf_conntrack_entries_limit") == {"": 4096.0}) is table


@pytest.mark.unit
def test_conntrack_only_where_the_node_tracks_connections():
    assert CONNTRACK_COLLECTOR not in VM_COLLECTORS
    assert node_collectors(False) == VM_COLLECTORS
    assert node_collectors(True) == (*VM_COLLECTORS, CONNTRACK_COLLECTOR)
    on = render_unit(NodeExporterUnitSpec(binary="/x", listen_address="10.0.0.1", collectors=node_collectors(True)))
    assert "--collector.conntrack" in unit_argv(on) and "--collector.conntrack" not in unit_argv(render_unit(SPEC))
    # The firewall step's report, as the component reads it: only its last line counts.
    assert tracks_connections("microcloud: lb1: no firewalld running: ...\nmicrocloud-conntrack=yes\n")
    for no in ("microcloud-conntrack=no\n", "", None, "microcloud-conntrack=yes\nsomething else\n"):
        assert not tracks_connections(no), no


@pytest.mark.validators
def test_unknown_flag_is_refused(exporter_bin, tmp_path):
    """The check can fail: node_exporter exits on a flag it does not know (a collector renamed upstream)."""
    bad = NodeExporterUnitSpec(binary="/x", listen_address="10.0.0.1", collectors=("cpu", "no_such_collector"))
    res = subprocess.run([str(exporter_bin), *exporter_args(bad, listen=f"{LOOPBACK}:{free_port()}")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert res.returncode != 0 and "no_such_collector" in res.stderr, res.stderr


# ------------------------------------------------------------------ unit


@pytest.mark.validators
def test_unit_verifies(exporter_bin, tmp_path):
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is not installed (Debian package systemd)"
    spec = NodeExporterUnitSpec(binary=str(exporter_bin), listen_address=SPEC.listen_address, allowed_sources=SPEC.allowed_sources)
    unit = tmp_path / "node_exporter.service"
    unit.write_text(render_unit(spec))
    res = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stderr.strip() == "", res.stderr
    # The check can fail: the binary is not there.
    unit.write_text(render_unit(NodeExporterUnitSpec(binary=str(tmp_path / "missing"), listen_address="10.0.0.1")))
    res = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "not executable" in res.stderr


@pytest.mark.unit
def test_unit_admits_only_the_scrapers_and_itself():
    text = render_unit(SPEC)
    assert "IPAddressDeny=any" in text
    allow = re.search(r"^IPAddressAllow=(.*)$", text, re.M).group(1).split()
    assert allow == ["localhost", f"{LB1.ip}/32", "10.27.4.0/24"], allow
    assert re.search(r"^CapabilityBoundingSet=$", text, re.M)
    # timex needs adjtimex(2); ProtectClock would deny it.
    assert "ProtectClock" not in text and "adjtimex" in text
    # Without sources: no IP restriction at all (not an empty allow list).
    assert "IPAddress" not in render_unit(NodeExporterUnitSpec(binary="/x", listen_address="10.0.0.1"))


@pytest.mark.unit
def test_unit_runs_as_its_own_system_user_in_the_dynamic_user_sandbox():
    """Not DynamicUser=: dbus-daemon drops a peer whose UID it cannot resolve, and PID 1 starts it
    with SYSTEMD_NSS_DYNAMIC_BYPASS=1 (systemd >= 250.4), so the systemd collector failed on Debian 12.
    Everything DynamicUser= implied stays, set explicitly."""
    text = render_unit(SPEC)
    assert "DynamicUser" not in text
    service = dict(line.split("=", 1) for line in text.split("[Service]")[1].split("[Install]")[0].splitlines() if "=" in line and not line.startswith(" "))
    assert service["User"] == SERVICE_USER and service["Group"] == SERVICE_USER
    for key, value in {"ProtectSystem": "strict", "ProtectHome": "read-only", "PrivateTmp": "yes", "RemoveIPC": "yes",
                       "RestrictSUIDSGID": "yes", "NoNewPrivileges": "yes", "CapabilityBoundingSet": ""}.items():
        assert service.get(key) == value, (key, service.get(key))
    assert SERVICE_USER in SYSUSERS_CONF


@pytest.mark.validators
def test_sysusers_entry_makes_an_unprivileged_system_user(tmp_path):
    """The real systemd-sysusers: the node's check (--dry-run, as the install runs it) accepts the entry,
    and applied to a scratch root it makes a system user and group that cannot log in."""
    tool = shutil.which("systemd-sysusers")
    assert tool, "systemd-sysusers is not installed (Debian package systemd)"
    conf = tmp_path / "microcloud-node-exporter.conf"
    conf.write_text(SYSUSERS_CONF)
    assert Path(SYSUSERS_PATH).parent == Path("/etc/sysusers.d") and SYSUSERS_PATH.endswith(".conf")
    res = subprocess.run([tool, "--dry-run", str(conf)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    res = subprocess.run([tool, f"--root={root}", str(conf)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    users = {f[0]: f for f in (line.split(":") for line in (root / "etc" / "passwd").read_text().splitlines())}
    name, _, uid, gid, _, home, shell = users[SERVICE_USER]
    assert 0 < int(uid) < 1000 and home == "/" and shell.endswith("/nologin"), users[SERVICE_USER]
    groups = {f[0]: f[2] for f in (line.split(":") for line in (root / "etc" / "group").read_text().splitlines())}
    assert groups[SERVICE_USER] == gid
    # The check can fail: a malformed entry is refused.
    conf.write_text(SYSUSERS_CONF.replace(" - ", " not-a-uid "))
    assert subprocess.run([tool, "--dry-run", str(conf)], capture_output=True, timeout=60).returncode != 0


@pytest.mark.unit
@pytest.mark.parametrize("address", ["0.0.0.0", "127.0.0.1", "not-an-ip"])
def test_unit_listens_on_the_nodes_own_address(address):
    with pytest.raises(ValueError):
        render_unit(NodeExporterUnitSpec(binary="/x", listen_address=address))


@pytest.mark.unit
def test_scrape_sources_are_the_k3s_networks():
    prod = parse_config(stack_model("prod"))
    assert scrape_sources(DEV) == ("10.27.4.0/24",)
    assert scrape_sources(prod) == (str(prod.network_by_name["cluster"].cidr),)
    assert monitored_nodes(DEV) == ["lb1", "lb2", "infra"]


# ------------------------------------------------------------------ on-node checks


def _tools_dir(tmp_path: Path, tools: tuple[str, ...]) -> Path:
    """A PATH with only ``tools`` (symlinks), so a check can be run without curl and wget."""
    d = tmp_path / "bin"
    d.mkdir()
    for t in tools:
        src = sys_python() if t == "python3" else shutil.which(t)
        assert src, t
        (d / t).symlink_to(src)
    return d


def sys_python() -> str:
    import sys

    return sys.executable


@pytest.mark.validators
@pytest.mark.parametrize("client", ["curl", "wget", "python3"])
def test_metrics_check_fetches_the_units_address(exporter, tmp_path, client):
    """day2's verify of the unit, against the real exporter: with curl, with wget only, with neither (python3)."""
    unit = tmp_path / "node_exporter.service"
    unit.write_text(render_unit(NodeExporterUnitSpec(binary="/x", listen_address="10.0.0.1")).replace(
        "10.0.0.1:9100", f"{LOOPBACK}:{exporter.port}"))
    base = ("sh", "bash", "sed", "grep", "cat", "mktemp", "rm")
    tools = base + ({"curl": ("curl",), "wget": ("wget",), "python3": ("python3",)}[client])
    if client != "python3" and not shutil.which(client):
        pytest.skip(f"{client} is not installed here")
    env = {"PATH": str(_tools_dir(tmp_path, tools)), "path": str(unit)}
    run = lambda script: subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=60)  # noqa: E731
    res = run(metrics_check(VERSION))
    assert (res.returncode, res.stderr) == (0, ""), res.stderr
    # Under pipefail too, and still nothing on stderr: the whole /metrics is read before it is matched,
    # so no client dies writing to a reader that stopped at the first match (python3's BrokenPipeError).
    res = subprocess.run(["bash", "-o", "pipefail", "-c", metrics_check(VERSION)], env=env, capture_output=True, text=True, timeout=60)
    assert (res.returncode, res.stderr) == (0, ""), res.stderr
    # The check can fail: another version answers, or nothing listens where the unit says.
    assert run(metrics_check("v0.0.1")).returncode != 0
    unit.write_text(unit.read_text().replace(f":{exporter.port}", f":{free_port()}"))
    assert run(metrics_check(VERSION)).returncode != 0


@pytest.mark.validators
def test_binary_check(exporter_bin):
    for shell in (["sh", "-c"], ["bash", "-o", "pipefail", "-c"]):
        ok = subprocess.run([*shell, binary_check(str(exporter_bin), VERSION)], capture_output=True, text=True, timeout=30)
        assert (ok.returncode, ok.stderr) == (0, ""), ok.stderr
    for wrong in (binary_check(str(exporter_bin), "v1.1.0"), binary_check("/nonexistent/node_exporter", VERSION)):
        assert subprocess.run(["sh", "-c", wrong], capture_output=True, timeout=30).returncode != 0


FAKE_FIREWALL_CMD = r"""#!/bin/sh
# Stand-in for firewall-cmd: permanent rich rules in $STATE/permanent, runtime in $STATE/runtime.
echo "firewall-cmd $*" >> "$STATE/log"
perm=; q=
for a in "$@"; do case $a in --permanent) perm=1;; -q) q=1;; esac; done
f="$STATE/runtime"; [ -n "$perm" ] && f="$STATE/permanent"
touch "$STATE/permanent" "$STATE/runtime"
for a in "$@"; do
  case $a in
    --list-rich-rules) cat "$f";;
    --add-rich-rule=*) r=${a#--add-rich-rule=}; grep -qxF "$r" "$f" || printf '%s\n' "$r" >> "$f";;
    --remove-rich-rule=*) r=${a#--remove-rich-rule=}; grep -vxF "$r" "$f" > "$f.new" || true; mv "$f.new" "$f";;
    --reload) cp "$STATE/permanent" "$STATE/runtime";;
  esac
done
"""


@pytest.mark.validators
def test_firewalld_rules_converge(tmp_path):
    """With a (stand-in) firewalld: the port opens to the sources only, stale rules for it go, others stay."""
    state = tmp_path / "state"
    state.mkdir()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "firewall-cmd").write_text(FAKE_FIREWALL_CMD)
    (bindir / "systemctl").write_text('#!/bin/sh\n[ "$FIREWALLD" = active ]\n')
    for f in bindir.iterdir():
        f.chmod(0o755)
    ssh = 'rule family="ipv4" source address="10.0.0.0/8" port port="22" protocol="tcp" accept'
    stale = 'rule family="ipv4" source address="10.27.9.0/24" port port="9100" protocol="tcp" accept'
    (state / "permanent").write_text(f"{ssh}\n{stale}\n")
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "STATE": str(state), "FIREWALLD": "active"}
    table = tmp_path / "nf_conntrack_max"  # stands for /proc/sys/net/netfilter/nf_conntrack_max
    table.write_text("4096\n")  # firewalld tracks connections
    script = firewalld_commands("lb1", 9100, ("10.27.4.0/24", "10.27.5.7/24"), conntrack_table=str(table))
    for _ in range(2):  # a second run changes nothing
        res = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60)
        assert (res.returncode, res.stderr) == (0, ""), res.stderr
        assert tracks_connections(res.stdout), res.stdout
        runtime = (state / "runtime").read_text().splitlines()
        assert sorted(runtime) == sorted([
            ssh,
            'rule family="ipv4" source address="10.27.4.0/24" port port="9100" protocol="tcp" accept',
            'rule family="ipv4" source address="10.27.5.0/24" port port="9100" protocol="tcp" accept',
        ]), runtime
    # No firewalld running: nothing to do, and it says why.
    (state / "log").unlink()
    res = subprocess.run(["sh", "-c", script], env={**env, "FIREWALLD": "inactive"}, capture_output=True, text=True, timeout=60)
    # The notice is the one line a person sees (stderr, logged); stdout holds only the program's marker.
    assert res.returncode == 0 and "no firewalld running" in res.stderr and "firewalld" not in res.stdout, res
    assert tracks_connections(res.stdout), res.stdout
    assert not (state / "log").exists()
    # ... and without a conntrack table: reported, so the unit leaves the collector out.
    table.unlink()
    res = subprocess.run(["sh", "-c", script], env={**env, "FIREWALLD": "inactive"}, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and not tracks_connections(res.stdout) and res.stdout.splitlines()[-1] == "microcloud-conntrack=no"


# ------------------------------------------------------------------ graph (mocks)

DOMAIN = "libvirt:index/domain:Domain"
COMMAND = "command:remote:Command"
COPY = "command:remote:CopyToRemote"
COMPONENT = "microcloud:monitoring:NodeExporters"


def run_with_exporters(stack: str) -> Run:
    """__main__.py under harness' mocks, plus NodeExporters for the LBs and the infra node
    unless the program already makes them (then its own are checked)."""
    config = stack_config(stack)
    model = with_stand_in_binaries(copy.deepcopy(config["microcloud:config"]))
    config = {**config, "microcloud:config": model}
    os.environ.setdefault("MICROCLOUD_SEED_DIR", tempfile.mkdtemp(prefix="microcloud-seeds-"))
    pulumi.runtime.set_all_config({k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()})
    monitor = RecordingMonitor(Mocks())
    pulumi.runtime.settings.set_root_resource(None)
    pulumi.runtime.set_mocks(Mocks(), project=PROJECT, stack=stack, preview=False, monitor=monitor)
    root = pulumi.runtime.get_root_resource()

    def program():
        g = runpy.run_path(str(MAIN), run_name="__main__")
        made = [v for v in g.values() if isinstance(v, NodeExporters)]
        if made:
            pulumi.export("test_node_exporter_targets", made[0].targets)
            return
        cfg = g["cfg"]
        names = monitored_nodes(cfg)
        ne = NodeExporters(
            "node-exporters",
            NodeExportersArgs(
                binary=NodeExporterBinary(path=str(FAKE_EXPORTER)),
                nodes=tuple(names),
                access=g["access"],
                allowed_sources=scrape_sources(cfg),
            ),
        )
        pulumi.export("test_node_exporter_targets", ne.targets)

    error = None
    try:
        _sync_await(run_pulumi_func(program))
    except Exception as exc:
        error = exc
    return Run(monitor=monitor, outputs=dict(getattr(root, "outputs", {}) or {}), error=error)


@pytest.fixture(scope="module")
def graph() -> Run:
    run = run_with_exporters("dev")
    assert run.error is None, run.error
    return run


def _deps(r) -> set[str]:
    return set(r.dependencies) | {u for us in r.property_dependencies.values() for u in us}


@pytest.mark.graph
def test_one_install_per_lb_and_infra_node_each_on_its_vm(graph):
    (component,) = graph.by_type(COMPONENT)
    names = monitored_nodes(DEV)
    mine = [r for r in graph.resources if r.parent == component.urn]
    assert sorted(r.name for r in mine) == sorted(
        f"{n}-node-exporter-{part}" for n in names for part in ("upload", "binary", "user", "unit", "firewall")
    )
    for n in names:
        own = graph.urn_of(DOMAIN, n)
        others = {graph.urn_of(DOMAIN, o) for o in names if o != n}
        for part in ("upload", "binary", "user", "unit", "firewall"):
            r = graph.one(COPY if part == "upload" else COMMAND, f"{n}-node-exporter-{part}")
            deps = _deps(r)
            assert own in deps, f"{r.name} does not depend on the VM {n}"
            assert not deps & others, f"{r.name} waits for another node's VM"
        unit = graph.one(COMMAND, f"{n}-node-exporter-unit")
        # After the binary and its user; its collectors follow the firewall step's conntrack report.
        for before in ("binary", "user", "firewall"):
            assert graph.urn_of(COMMAND, f"{n}-node-exporter-{before}") in _deps(unit), before
        assert f"User={SERVICE_USER}" in unit.inputs["stdin"]
        # The mocks' firewall step prints nothing: no table reported, no conntrack collector.
        assert "--collector.conntrack" not in unit.inputs["stdin"]
        user = graph.one(COMMAND, f"{n}-node-exporter-user")
        assert user.inputs["stdin"] == SYSUSERS_CONF and SYSUSERS_PATH in user.inputs["create"]
        assert "systemd-sysusers --dry-run" in user.inputs["create"]
        ip = str(next(x for x in DEV.nodes if x.name == n).ip)
        assert f"--web.listen-address={ip}:9100" in unit.inputs["stdin"]
        assert "IPAddressAllow=localhost " + ip + "/32 10.27.4.0/24" in unit.inputs["stdin"]
        assert "systemd-analyze verify" in unit.inputs["create"]
    # Nothing on the K3s nodes: the chart's DaemonSet covers them.
    for k in ("server1", "worker1", "storage1"):
        assert not [r for r in mine if r.name.startswith(f"{k}-")]


@pytest.mark.graph
def test_targets_are_the_nodes_ips(graph):
    value, _ = graph.output_value("test_node_exporter_targets")
    assert value == {n: f"{next(x for x in DEV.nodes if x.name == n).ip}:9100" for n in monitored_nodes(DEV)}


@pytest.mark.graph
def test_no_secret_in_clear(graph):
    key, _ = graph.output_value("ssh_private_key")
    (component,) = graph.by_type(COMPONENT)
    mine = [r for r in graph.resources if r.parent == component.urn]
    for r in mine:
        assert "connection" in r.secret_inputs, r.name
        assert "triggers" not in r.secret_inputs, r.name  # a secret next to an unknown breaks the real preview
        for name, value in r.inputs.items():
            if name not in r.secret_inputs:
                text = json.dumps(value)
                assert "PRIVATE KEY" not in text and "m0ckPass" not in text, (r.name, name)
        if r.type == COMMAND:
            assert {"stdout", "stderr"} <= set(r.additional_secret_outputs), r.name
    for n in monitored_nodes(DEV):
        for part in ("user", "unit"):
            r = graph.one(COMMAND, f"{n}-node-exporter-{part}")
            assert r.inputs["triggers"][0] == trigger_digest(r.inputs["stdin"], key)
            assert "stdin" not in r.secret_inputs, r.name  # the unit's collectors come from a secret stdout, unsecreted


@pytest.mark.graph
def test_remote_scripts_parse(graph):
    """Every remote command, and each script it hands to `sh -c` on the node, is valid sh (dash)."""
    (component,) = graph.by_type(COMPONENT)
    checked = 0
    for r in graph.resources:
        if r.parent != component.urn or r.type != COMMAND:
            continue
        scripts = [r.inputs["create"]]
        words = shlex.split(r.inputs["create"])
        scripts += [words[i + 1] for i, w in enumerate(words[:-1]) if w == "-c" and words[i - 1] == "sh"]
        assert len(scripts) >= 2, r.name
        for script in scripts:
            res = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True, timeout=30)
            assert res.returncode == 0, (r.name, res.stderr)
            checked += 1
    assert checked >= 3 * 2 * len(monitored_nodes(DEV))
