"""End to end: the real Pulumi engine brings a dev-shaped stack up on booted VMs, changes it, and tears it down.

libvirtd runs in a network and mount namespace this module makes (see
sandbox.py): every bridge, NAT rule and VM lives there, and pulumi, ssh and
dig run inside it too. The LB pair, the infra node and server1 boot the
Debian 12 image that .ci/debian-image.sh builds from Debian packages; server1
runs every K3s command for real around a stand-in k3s binary (stack.py
FAKE_K3S: K3s cannot run here), without the platform. Software emulation
unless MICROCLOUD_E2E_KVM=1.

Skipped, naming what is missing, when the provider plugins, the toolchain,
the image or libvirt are not installed. The tests run in order on one stack.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from components import specs
from components.config import parse_config
from components.render.k3s_registries import render_registries

from support.harness import ROOT, stack_config

from .sandbox import Sandbox, tools_missing
from support.cli import toolchain_bin
from support.planned_state import SECRET_SIG, SECRET_VALUE

from .stack import DB_IP, SSH_OPTS, Stack, e2e_model, fake_k3s, missing_plugins

pytestmark = pytest.mark.e2e

DEBIAN_NODES = ("lb1", "lb2", "infra")
# Booted too, with the stand-in K3s (the node_exporter of the VMs outside the cluster is not on it).
K3S_NODES = ("server1", "storage1")
# PostgreSQL's node, its data on storage1's NFS disk.
BOOTED = DEBIAN_NODES + K3S_NODES + ("db1",)
VIPS = ("10.27.0.32", "10.27.0.33")
DOMAIN = "dev.microcloud.lan"


def _prerequisites() -> tuple[Path, Path]:
    plugins = missing_plugins()
    if plugins:
        pytest.skip(f"provider plugins not installed: {', '.join(plugins)} (put them in MICROCLOUD_PLUGIN_DIR, run .ci/toolchain.sh)")
    if toolchain_bin() is None:
        pytest.skip("no Pulumi toolchain: run bash .ci/toolchain.sh")
    tools = tools_missing()
    if tools:
        pytest.skip(f"not installed: {', '.join(tools)} (MICROCLOUD_WITH_LIBVIRT=1 bash .ci/install.sh)")
    image = subprocess.run(["bash", str(ROOT / ".ci" / "debian-image.sh"), "--cached-only"], capture_output=True, text=True)
    if image.returncode != 0:
        pytest.skip(f"no Debian 12 image: run bash .ci/debian-image.sh ({image.stderr.strip()[-200:]})")
    coredns = subprocess.run(["bash", str(ROOT / ".ci" / "coredns.sh"), "--cached-only"], capture_output=True, text=True)
    if coredns.returncode != 0:
        pytest.skip("no CoreDNS binary: run bash .ci/coredns.sh")
    exporter = subprocess.run(["bash", str(ROOT / ".ci" / "node-exporter.sh"), "--cached-only"], capture_output=True, text=True)
    if exporter.returncode != 0:
        pytest.skip("no node_exporter binary: run bash .ci/node-exporter.sh")
    return Path(image.stdout.strip()), Path(coredns.stdout.strip())


@pytest.fixture(scope="module")
def prerequisites() -> tuple[Path, Path]:
    return _prerequisites()


@pytest.fixture(scope="module")
def sandbox(prerequisites, tmp_path_factory):
    with Sandbox(tmp_path_factory.mktemp("sandbox")) as sb:
        yield sb


@pytest.fixture(scope="module")
def stack(prerequisites, sandbox, tmp_path_factory) -> Stack:
    image, coredns = prerequisites
    base = tmp_path_factory.mktemp("stack")
    model = e2e_model(image, coredns, base / "pool", fake_k3s(base))
    st = Stack.create(sandbox, base, model)
    yield st
    # Whatever happened above: tear the stack down (the sandbox then kills the rest).
    if not st.state.get("destroyed"):
        st.pulumi("destroy", "--yes", "--skip-preview", timeout=900)


def _need_up(stack) -> None:
    if not stack.state.get("up"):
        pytest.fail("pulumi up did not succeed earlier in this module")


def _node_ips(stack) -> dict[str, str]:
    return {n["name"]: n["ip"] for n in stack.model["nodes"]}


def _vip_holders(stack) -> dict[str, list[str]]:
    ips = _node_ips(stack)
    held = {}
    for lb in ("lb1", "lb2"):
        res = stack.ssh(ips[lb], "ip -4 -o addr show")
        assert res.returncode == 0, res.stderr
        held[lb] = [v for v in VIPS if re.search(rf"\binet {re.escape(v)}/", res.stdout)]
    return held


def _wait(pred, timeout: float, step: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(step)
    return pred()


def _tcp_open(stack, ip: str, port: int) -> bool:
    probe = f"import socket; socket.create_connection(('{ip}', {port}), timeout=3).close()"
    return stack.sandbox.run(["python3", "-c", probe], timeout=30).returncode == 0


# ------------------------------------------------------------------ the run, in order


def test_preview_succeeds(stack):
    res, secs = stack.timed("preview", "--diff")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "malformed RPC secret" not in res.stdout + res.stderr
    assert re.search(r"\+ \d+ to create", res.stdout), res.stdout[-1500:]
    stack.state["preview_s"] = secs


def test_up_succeeds(stack):
    events = stack.work.parent / "up-events.jsonl"
    res, secs = stack.timed("up", "--yes", "--skip-preview", timeout=2400, event_log=events)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-3000:]
    stack.state["up"] = True
    stack.state["up_s"] = secs
    stack.state["up_display"] = res.stdout + res.stderr
    stack.state["event_logs"] = [events]
    assert events.is_file(), "the CLI wrote no event log"


def test_booted_nodes_have_their_identity(stack):
    _need_up(stack)
    ips = _node_ips(stack)
    infra = ips["infra"]
    for name in BOOTED:
        res = stack.ssh(ips[name], "hostname -f; ip -4 -o addr show eth0; cat /etc/resolv.conf; cloud-init status")
        assert res.returncode == 0, f"{name}: {res.stderr}"
        lines = res.stdout.splitlines()
        assert lines[0] == f"{name}.{DOMAIN}", (name, lines[0])
        assert f"inet {ips[name]}/24" in lines[1], (name, lines[1])
        servers = [line.split()[1] for line in lines if line.startswith("nameserver")]
        router = ".".join(ips[name].split(".")[:3]) + ".1"
        first = ips[name] if name == "infra" else infra
        assert servers[:2] == [first, router], (name, servers)
        assert "status: done" in res.stdout, (name, res.stdout)
        # One default route, to its own network's gateway, and no other route.
        routes = stack.ssh(ips[name], "ip -4 route show").stdout.splitlines()
        assert routes[0].startswith(f"default via {router} dev eth0"), (name, routes)
        assert len(routes) == 2 and " scope link " in routes[1], (name, routes)


def test_the_k3s_server_holds_the_stacks_pki_and_runs(stack):
    """server1's install command placed the stack's CAs before the (stand-in) K3s first started: the
    CA hash in both tokens on the node is sha256sum of its server-ca.crt, which is the cluster_ca output;
    keys and token files are root's only; the unit runs. Nothing secret is printed here."""
    _need_up(stack)
    ips = _node_ips(stack)
    tls = "/var/lib/rancher/k3s/server/tls"
    script = "; ".join([
        f"sha256sum {tls}/server-ca.crt | cut -c1-64",
        "sed -n 's/^K10\\([0-9a-f]*\\)::server:.*/\\1/p' /etc/rancher/k3s/token",
        "grep -c '^[A-Za-z0-9]*$' /etc/rancher/k3s/agent-token",
        f"stat -c '%a %n' {tls} {tls}/*.key {tls}/etcd/*.key {tls}/*.crt /etc/rancher/k3s/token /etc/rancher/k3s/agent-token",
        "systemctl is-active k3s",
    ])
    res = stack.ssh(ips["server1"], f"sudo sh -c {shlex.quote(script)}")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    ca = stack.output("cluster_ca")
    assert lines[0] == ca["sha256"] == lines[1], lines[:2]
    assert lines[2] == "1", "the servers' agent token is not one bare password"
    modes = dict(reversed(line.split(" ", 1)) for line in lines[3:-1])
    assert modes[tls] == "700" and modes[f"{tls}/server-ca.crt"] == "644", modes
    assert all(m == "600" for p, m in modes.items() if p.endswith((".key", "/token", "/agent-token"))), modes
    assert len([p for p in modes if p.endswith(".key")]) == 6, modes
    assert lines[-1] == "active", lines[-1]
    cert = stack.ssh(ips["server1"], f"sudo cat {tls}/server-ca.crt")
    assert cert.stdout == ca["certificate"]


def test_every_node_updates_unattended_and_reboots_only_through_its_agent(stack):
    """On the booted nodes: unattended-upgrades on, never rebooting by itself (read back by apt-config on the
    node); each node's reboot agent timer is active; the two load balancers' windows share no weekday; the
    K3s nodes have the agent's boot step and the disruption budget's kubeconfig (root only, the API VIP)."""
    _need_up(stack)
    ips = _node_ips(stack)
    calendars = {}
    for name in ("lb1", "lb2", "infra", "server1", "storage1", "db1"):
        if name not in ips:
            continue
        script = "; ".join([
            "apt-config dump | grep -c 'Unattended-Upgrade::Automatic-Reboot \"false\"'",
            "systemctl is-active microcloud-reboot.timer",
            "systemctl show -p TimersCalendar --value microcloud-reboot.timer",
        ])
        res = stack.ssh(ips[name], f"sudo sh -c {shlex.quote(script)}")
        assert res.returncode == 0, (name, res.stdout, res.stderr)
        lines = res.stdout.splitlines()
        assert lines[0] == "1" and lines[1] == "active", (name, lines)
        calendars[name] = lines[2]
    days = {lb: set(re.search(r"OnCalendar=(\S+) ", calendars[lb]).group(1).split(",")) for lb in ("lb1", "lb2")}
    assert days["lb1"] and days["lb2"] and not days["lb1"] & days["lb2"], calendars
    for name in ("server1", "storage1"):
        res = stack.ssh(ips[name], "sudo sh -c 'systemctl is-enabled microcloud-reboot-boot.service; stat -c %a /etc/rancher/microcloud/budget.kubeconfig;"
                                   " grep -c \"server: https://\" /etc/rancher/microcloud/budget.kubeconfig'")
        assert res.stdout.split() == ["enabled", "600", "1"], (name, res.stdout, res.stderr)


def test_vips_on_exactly_one_lb_and_haproxy_answers(stack):
    _need_up(stack)
    held = _wait(lambda: (lambda h: h if sorted(h["lb1"] + h["lb2"]) == sorted(VIPS) else None)(_vip_holders(stack)), 60)
    assert held, f"VIPs not held: {_vip_holders(stack)}"
    owners = [lb for lb, vips in held.items() if vips]
    assert len(owners) == 1 and sorted(held[owners[0]]) == sorted(VIPS), held
    stack.state["master"] = owners[0]
    # haproxy listens on both VIPs (API and ingress frontends)
    assert _tcp_open(stack, VIPS[0], 6443)
    assert _tcp_open(stack, VIPS[1], 80)


def test_infra_answers_dns_and_ntp(stack):
    _need_up(stack)
    ips = _node_ips(stack)
    infra = ips["infra"]
    want = {**{f"{n}.{DOMAIN}": ip for n, ip in ips.items()}, f"api.{DOMAIN}": VIPS[0], f"ingress.{DOMAIN}": VIPS[1]}
    for fqdn, ip in want.items():
        res = stack.sandbox.run(["dig", "+short", "+time=2", "+tries=2", f"@{infra}", fqdn, "A"])
        assert res.stdout.strip() == ip, (fqdn, res.stdout, res.stderr)
    res = stack.sandbox.run(["dig", "+time=2", f"@{infra}", f"nosuchhost.{DOMAIN}", "A"])
    assert "status: NXDOMAIN" in res.stdout, res.stdout
    # SNTP: one client packet, the server must answer with a stratum and a transmit time.
    sntp = (
        "import socket,struct; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5); "
        f"s.sendto(b'\\x23' + 47 * b'\\0', ('{infra}', 123)); d=s.recvfrom(48)[0]; "
        "print(d[1], struct.unpack('!I', d[40:44])[0])"
    )
    res = _wait(lambda: (lambda r: r if r.returncode == 0 and 0 < int(r.stdout.split()[0]) < 16 else None)(
        stack.sandbox.run(["python3", "-c", sntp], timeout=30)), 60, step=3)
    assert res, "the infra node's chrony does not serve time"
    stratum, tx = map(int, res.stdout.split())
    assert 0 < stratum < 16 and tx > 0


def test_nodes_reach_each_other_across_networks(stack):
    """lb1 (network lan) uses the infra node (network infra) for DNS and time, and infra sees lb1's own address.

    Both are libvirt nat networks: libvirt alone rejects a new connection from
    one into the other; the stack's host-forwarding rules open exactly that.
    """
    _need_up(stack)
    ips = _node_ips(stack)
    lb1, infra = ips["lb1"], ips["infra"]
    res = stack.ssh(lb1, f"dig +short +time=2 +tries=2 @{infra} lb2.{DOMAIN} A")
    assert res.stdout.strip() == ips["lb2"], (res.stdout, res.stderr)
    # Through the resolver order the node was given (infra first).
    res = stack.ssh(lb1, f"getent hosts server1.{DOMAIN}")
    assert res.stdout.split()[:1] == [ips["server1"]], (res.stdout, res.stderr)
    # A connection from lb1 arrives at infra from lb1's address: routed, not masqueraded (to DNS over TCP,
    # a port infra's firewall admits from every network; SSH it admits only from the libvirt host).
    hold = "import socket,time; s=socket.create_connection(('%s', 53), timeout=5); time.sleep(8)" % infra
    assert stack.ssh(lb1, f"nohup python3 -c \"{hold}\" >/dev/null 2>&1 &").returncode == 0
    seen = _wait(lambda: lb1 in stack.ssh(infra, "ss -Htn state established '( sport = :53 )'").stdout, 6)
    assert seen, "infra saw no connection from lb1's own address"


def test_node_exporter_serves_the_vms_and_only_to_the_cluster_networks(stack):
    """The hardened unit under the VM's real systemd (its own system user, seccomp, IP filter): on each
    node every collector it runs succeeds, conntrack runs exactly where the node has a conntrack table,
    the systemd collector reaches PID 1 over D-Bus (haproxy's state on lb1), and port 9100 answers a
    K3s network's address but not the LB network's (the sandbox host, the peer LB)."""
    from components.render.firewalld import CONNTRACK_TABLE
    from components.render.node_exporter import node_collectors

    _need_up(stack)
    ips = _node_ips(stack)
    fetch = "python3 -c \"import sys, urllib.request; sys.stdout.write(urllib.request.urlopen('http://{ip}:9100/metrics', timeout=5).read().decode())\""
    metrics = {}
    for name in DEBIAN_NODES:
        res = stack.ssh(ips[name], fetch.format(ip=ips[name]))
        assert res.returncode == 0, (name, res.stderr)
        assert 'node_exporter_build_info{' in res.stdout, name
        metrics[name] = res.stdout
        success = dict(re.findall(r'^node_scrape_collector_success\{collector="([^"]+)"\} (\S+)$', res.stdout, re.M))
        table = stack.ssh(ips[name], f"test -e {CONNTRACK_TABLE}").returncode == 0
        assert sorted(success) == sorted(node_collectors(table)), (name, table, sorted(success))
        failed = sorted(c for c, v in success.items() if v != "1")
        if failed:
            log = stack.ssh(ips[name], "sudo journalctl -u node_exporter --no-pager -n 20").stdout
            pytest.fail(f"{name}: collectors failed: {failed}\n{log}")
        user = stack.ssh(ips[name], "ps -o user= -C node_exporter; systemctl show -P DynamicUser node_exporter").stdout.split()
        assert user == ["node_exporter", "no"], (name, user)
    # The systemd collector talks to PID 1: the services' states are there.
    for name, unit in (("lb1", "haproxy"), ("lb1", "keepalived"), ("infra", "coredns")):
        assert re.search(rf'^node_systemd_unit_state\{{name="{unit}\.service",state="active"[^}}]*\}} 1$', metrics[name], re.M), \
            f"{name}: {unit}'s state is not exported"
    # The unit's IP filter, from the sandbox host: a K3s network's address (the cluster network's
    # gateway, as a scraping pod's traffic arrives masqueraded) gets /metrics; the LB network's does not.
    k3s_source = ".".join(ips["server1"].split(".")[:3]) + ".1"
    lan_source = ".".join(ips["lb1"].split(".")[:3]) + ".1"
    probe = (
        "import socket, sys; s = socket.socket(); s.settimeout(float(sys.argv[3])); s.bind((sys.argv[1], 0)); "
        "s.connect((sys.argv[2], 9100)); s.sendall(b'GET /metrics HTTP/1.0\\r\\n\\r\\n'); print(s.recv(12).decode())"
    )
    # Allowed: an answer within 10 s, in one of three tries (an emulated VM under load can be slow).
    for _ in range(3):
        res = stack.sandbox.run(["python3", "-c", probe, k3s_source, ips["lb1"], "10"], timeout=30)
        if res.returncode == 0:
            break
        time.sleep(5)
    assert res.returncode == 0 and res.stdout.startswith("HTTP/1.0 200"), (res.stdout, res.stderr)
    res = stack.sandbox.run(["python3", "-c", probe, lan_source, ips["lb1"], "3"], timeout=30)
    assert res.returncode != 0 and "timed out" in res.stderr, (res.stdout, res.stderr)
    assert _tcp_open(stack, ips["lb1"], 22)  # the same source reaches the node: the unit's filter refused it
    # Nor the peer LB (same network, not a K3s one).
    res = stack.ssh(ips["lb2"], f"python3 -c \"import socket; socket.create_connection(('{ips['lb1']}', 9100), timeout=3)\"")
    assert res.returncode != 0 and "timed out" in res.stderr, (res.stdout, res.stderr)


PROBE = (
    "import socket, sys\n"
    "s = socket.socket(); s.settimeout(4); s.bind((sys.argv[1], 0))\n"
    "try:\n    s.connect((sys.argv[2], int(sys.argv[3]))); print('open')\n"
    "except ConnectionRefusedError:\n    print('refused')\n"
    "except (socket.timeout, TimeoutError):\n    print('timeout')\n"
)


def _probe(stack, source: str, ip: str, port: int) -> str:
    """From the sandbox host with ``source`` (its own address on one of the networks): open, refused (the node
    answered: nothing listens) or timeout (the node's firewall dropped it)."""
    res = stack.sandbox.run(["python3", "-c", PROBE, source, ip, str(port)], timeout=30)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_each_nodes_firewall_admits_its_roles_ports_from_where_they_are_needed(stack):
    """On the booted VMs (Debian: the nftables table first boot loaded): each allowed port answers from the network
    that needs it (open, or refused where nothing listens), and the same port from another network, or a port no
    role needs, times out. Sources are the sandbox host's own addresses on each network (the gateways)."""
    _need_up(stack)
    ips = _node_ips(stack)
    gw = {net["name"]: net["cidr"].rsplit(".", 1)[0] + ".1" for net in stack.model["networks"]}
    for name in BOOTED:
        res = stack.ssh(ips[name], "systemctl is-enabled microcloud-firewall.service && sudo nft list table inet microcloud")
        assert res.returncode == 0 and "policy drop" in res.stdout, (name, res.stdout, res.stderr)
    cases = [
        # (node, port, source network, answers?)
        ("lb1", 22, "lan", True), ("lb1", 22, "infra", False),  # SSH: the libvirt host on the node's own network
        ("lb1", 6443, "infra", True), ("lb1", 443, "cluster", True),  # the VIPs' ports: anyone
        ("lb1", 9100, "cluster", True), ("lb1", 9100, "infra", False),  # node_exporter: the K3s networks
        ("lb1", 8404, "lan", False),  # HAProxy's stats: loopback only
        ("infra", 53, "lan", True), ("infra", 53, "cluster", True),  # DNS: the stack's networks
        ("infra", 22, "infra", True), ("infra", 22, "lan", False), ("infra", 9100, "cluster", True), ("infra", 9100, "lan", False),
        ("server1", 22, "cluster", True), ("server1", 22, "lan", False),
        ("server1", 6443, "cluster", True), ("server1", 6443, "infra", False), ("server1", 6443, "lan", False),
        ("server1", 10250, "cluster", True), ("server1", 10250, "lan", False),
        ("server1", 2379, "cluster", True), ("server1", 2380, "infra", False),
        ("server1", 32591, "infra", False), ("server1", 8080, "cluster", False),
        # PostgreSQL: the K3s networks; NFS: the K3s networks and the database node, not its network
        ("db1", 5432, "cluster", True), ("db1", 5432, "lan", False), ("db1", 5432, "infra", False),
        ("storage1", 2049, "cluster", True), ("storage1", 2049, "infra", False), ("storage1", 2049, "lan", False),
    ]
    got = {}
    for node, port, net, want in cases:
        seen = _probe(stack, gw[net], ips[node], port)
        if (seen != "timeout") != want:  # a first SYN lost under emulation: ask once more before judging
            seen = _probe(stack, gw[net], ips[node], port)
        got[(node, port, net)] = seen
    wrong = {k: v for (node, port, net, want), (k, v) in zip(cases, got.items()) if (v != "timeout") != want}
    assert wrong == {}, f"answered/dropped against the role's rules: {wrong}"
    # The API through the LBs: the LB pair reaches server1's 6443 (its own address, not the VIP).
    res = stack.ssh(ips["lb2"], f"python3 -c \"import socket; socket.create_connection(('{ips['server1']}', 6443), timeout=3)\"")
    assert "timed out" not in res.stderr, res.stderr


def test_stopping_haproxy_on_master_moves_both_vips(stack):
    _need_up(stack)
    ips = _node_ips(stack)
    master = stack.state.get("master") or next(lb for lb, v in _vip_holders(stack).items() if v)
    backup = "lb2" if master == "lb1" else "lb1"
    assert stack.ssh(ips[master], "sudo systemctl stop haproxy").returncode == 0
    try:
        moved = _wait(lambda: (lambda h: h if sorted(h[backup]) == sorted(VIPS) and not h[master] else None)(_vip_holders(stack)), 30)
        assert moved, f"VIPs did not move to {backup}: {_vip_holders(stack)}"
        assert _tcp_open(stack, VIPS[0], 6443), "API VIP does not answer through the BACKUP"
    finally:
        assert stack.ssh(ips[master], "sudo systemctl start haproxy").returncode == 0
    back = _wait(lambda: (lambda h: h if sorted(h[master]) == sorted(VIPS) else None)(_vip_holders(stack)), 30)
    assert back, f"preempt: VIPs did not return to {master}: {_vip_holders(stack)}"


def test_re_preview_shows_no_changes(stack):
    _need_up(stack)
    res, secs = stack.timed("preview", "--expect-no-changes", "--diff")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    stack.state["repreview_s"] = secs


# The one kind of line a command of this program chooses to show (components/day2.py NOTICES).
CHOSEN_NOTICE = re.compile(r"^microcloud: [a-z0-9-]+: no firewalld running: [^\n]+$")
# The command provider's own progress while a VM boots (not a script's output): allowed, not chosen.
DIAL_PROGRESS = re.compile(r"^Dial \d+/(\d+|inf) failed: retrying$")


def _diagnostics(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        ev = json.loads(line)
        if "diagnosticEvent" in ev:
            out.append(ev["diagnosticEvent"])
    return out


def _command_lines(diags: list[dict]) -> list[tuple[str, str]]:
    """(resource name, line) of every line a command resource put in the display."""
    return [(d.get("urn", "").rsplit("::", 1)[-1], line) for d in diags
            if ("::command:" in d.get("urn", "") or "$command:" in d.get("urn", "")) and d.get("severity") != "debug"
            for line in d.get("message", "").splitlines() if line.strip() and not DIAL_PROGRESS.match(line)]


def test_up_shows_only_what_was_chosen(stack):
    """A clean up and a no-change up: no traceback, no warning or error, and from the commands nothing but
    the chosen notices (no sysusers chatter, no machine-read marker)."""
    _need_up(stack)
    events = stack.work.parent / "noop-up-events.jsonl"
    res = stack.pulumi("up", "--yes", "--skip-preview", timeout=1800, event_log=events)
    assert events.is_file(), "the CLI wrote no event log"
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    stack.state["event_logs"].append(events)
    assert re.search(r"(\d+ unchanged|Resources:\s*\n\s*\d+ unchanged)", res.stdout), res.stdout[-1500:]
    for which, display, log in (("clean up", stack.state["up_display"], stack.state["event_logs"][0]),
                                ("no-change up", res.stdout + res.stderr, events)):
        for word in ("Traceback", "BrokenPipe", "microcloud-conntrack=", "Creating group", "Would write"):
            assert word not in display, f"{which}: {word!r} in the display"
        diags = _diagnostics(log)
        loud = [d for d in diags if d.get("severity") in ("warning", "error")]
        # The only warnings: the stack's own relaxations of the K3s profile, each once, on K3sCluster.
        relaxed = parse_config(stack.model).k3s.relaxations()
        assert relaxed, "the e2e stack relaxes workloads_on_servers: its warning is expected"
        assert sorted(d.get("message", "").strip() for d in loud) == sorted(relaxed), f"{which}: {loud}"
        assert all(d.get("severity") == "warning" and "K3sCluster" in d.get("urn", "") for d in loud), f"{which}: {loud}"
        unchosen = [(r, line) for r, line in _command_lines(diags) if not CHOSEN_NOTICE.match(line)]
        assert unchosen == [], f"{which}: command output nobody chose to show: {unchosen[:10]}"
    # The chosen notice is shown: each node's firewall command says that node has no firewalld (the Debian image).
    for n in DEBIAN_NODES:
        assert f"microcloud: {n}: no firewalld running" in stack.state["up_display"], f"{n}: the firewalld notice is not shown"


def _plan(stack, model) -> list[dict]:
    stack.write_config(model)
    try:
        res = stack.pulumi("preview", "--json")
    finally:
        stack.write_config(stack.model)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    return json.loads(res.stdout)["steps"]


@pytest.mark.parametrize("where", ["end", "middle"])
def test_adding_a_worker_plans_only_creates_and_day2_updates(stack, where):
    _need_up(stack)
    model = json.loads(json.dumps(stack.model))
    # dev's worker1 (an agent with a Longhorn disk) on the booted image, planned only.
    worker = next(n for n in stack_config("dev")["microcloud:config"]["nodes"] if n["name"] == "worker1")
    new = {**worker, "name": "worker2", "ip": "10.27.4.25", "os": "debian12"}
    if where == "end":
        model["nodes"].append(new)
    else:
        model["nodes"].insert(model["nodes"].index(next(n for n in model["nodes"] if n["name"] == "server1")), new)
    steps = _plan(stack, model)
    # k3s-ready waits for one more node.
    day2 = {"lb1-haproxy", "lb2-haproxy", "coredns-hosts", "k3s-ready"}
    changed = {}
    for s in steps:
        name = s["urn"].rsplit("::", 1)[1]
        if s["op"] == "same":
            continue
        changed.setdefault(name, set()).add(s["op"])
    created = {n for n, ops in changed.items() if ops == {"create"}}
    assert {"worker2", "worker2-root", "worker2-longhorn", "worker2-k3s"} <= created, changed
    others = {n: ops for n, ops in changed.items() if n not in created}
    assert set(others) <= day2, f"unexpected changes: {others}"
    assert {"lb1-haproxy", "lb2-haproxy", "coredns-hosts"} <= set(others), changed
    for ops in others.values():
        assert not ops & {"delete"}, ops


def test_adding_a_network_plans_only_its_creation_and_the_forwarding_update(stack):
    """No node carries routes to the other networks: a new network touches no VM, only the host's forwarding and the
    allow lists of NTP and of CoreDNS' recursion (both admit exactly the stack's networks)."""
    _need_up(stack)
    model = json.loads(json.dumps(stack.model))
    model["networks"].append({"name": "backup", "mode": "nat", "cidr": "10.27.9.0/24"})
    changed = {}
    for s in _plan(stack, model):
        if s["op"] != "same":
            changed.setdefault(s["urn"].rsplit("::", 1)[1], set()).add(s["op"])
    # The chrony server's allow list and the Corefile's recursion acl take the new network: day-2 commands, run in place.
    assert changed == {"backup": {"create"}, "host-forwarding": {"update"}, "chrony": {"replace"},
                       "coredns-corefile": {"replace"}}, changed


def test_nodes_answer_with_their_pinned_host_keys(stack):
    """Each booted node serves the ed25519 host key Pulumi generated for it (cloud-init wrote it, the image
    made no other), exactly the line of the ssh_known_hosts output."""
    _need_up(stack)
    ips = _node_ips(stack)
    known = dict(line.split(" ", 1) for line in stack.output("ssh_known_hosts").splitlines())
    for name in BOOTED:
        res = stack.sandbox.run(["ssh-keyscan", "-T", "10", "-t", "ed25519", ips[name]], timeout=60)
        served = [" ".join(ln.split()[1:3]) for ln in res.stdout.splitlines() if not ln.startswith("#")]
        assert served == [known[ips[name]]], (name, served, known[ips[name]], res.stderr)


def test_a_node_answering_with_another_host_key_is_refused_at_once(stack):
    """lb1's sshd starts serving a key Pulumi did not make: the next step for lb1 (its haproxy command, run again)
    fails within seconds, before any connection is made, naming lb1 and both fingerprints; lb1's own key back,
    nothing is left to do."""
    _need_up(stack)
    ips = _node_ips(stack)
    lb1 = ips["lb1"]
    known = dict(line.split(" ", 1) for line in stack.output("ssh_known_hosts").splitlines())
    key = "/etc/ssh/ssh_host_ed25519_key"
    swap = (f"sudo cp -p {key} {key}.pinned && sudo cp -p {key}.pub {key}.pub.pinned && sudo rm -f {key} {key}.pub && "
            f"sudo ssh-keygen -q -t ed25519 -N '' -f {key} && sudo systemctl restart ssh && sudo cat {key}.pub")
    res = stack.ssh(lb1, swap)
    assert res.returncode == 0, res.stderr
    served = " ".join(res.stdout.split()[:2])
    fingerprint = {k: subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", "-"], input=k + "\n", capture_output=True,
                                     text=True, check=True).stdout.split()[1] for k in (known[lb1], served)}
    export = json.loads(stack.pulumi("stack", "export", "--stack", stack.name).stdout)
    (urn,) = [r["urn"] for r in export["deployment"]["resources"] if r["urn"].endswith("$command:remote:Command::lb1-haproxy")]
    try:
        res, secs = stack.timed("up", "--yes", "--skip-preview", "--target-replace", urn, timeout=900)
    finally:
        restore = f"sudo mv {key}.pinned {key} && sudo mv {key}.pub.pinned {key}.pub && sudo systemctl restart ssh"
        assert stack.ssh(lb1, restore).returncode == 0
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert (f'before hook "lb1-host-key-check" failed: microcloud: lb1: ssh host key is not the one Pulumi generated: '
            f"{lb1}:22 answers with another (expected {fingerprint[known[lb1]]}, got {fingerprint[served]}); "
            "nothing was sent to it") in out, out[-3000:]
    stack.state["refused_up_s"] = secs
    # The whole up (program, plan, refusal); before the check the provider redialed until its 20 min timeout.
    assert secs < 180, secs
    res = stack.pulumi("preview", "--expect-no-changes")
    assert res.returncode == 0, res.stdout[-3000:]


def test_config_that_cannot_be_activated_fails_up_and_keeps_the_old_one(stack):
    """haproxy -c accepts a frontend on the SSH port; binding it cannot work: up fails, the old config keeps serving."""
    _need_up(stack)
    ips = _node_ips(stack)
    before = {lb: stack.ssh(ips[lb], "sudo sha256sum /etc/haproxy/haproxy.cfg").stdout.split()[0] for lb in ("lb1", "lb2")}
    model = json.loads(json.dumps(stack.model))
    model["load_balancer"]["api_port"] = 22
    stack.write_config(model)
    try:
        res = stack.pulumi("up", "--yes", "--skip-preview", timeout=900)
    finally:
        stack.write_config(stack.model)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert re.search(r"microcloud: lb[12]: /etc/haproxy/haproxy.cfg: validated but could not be activated", out), out[-3000:]
    for lb in ("lb1", "lb2"):
        now = stack.ssh(ips[lb], "sudo sha256sum /etc/haproxy/haproxy.cfg").stdout.split()[0]
        assert now == before[lb], f"{lb} does not have its previous haproxy.cfg back"
    assert _tcp_open(stack, VIPS[0], 6443), "the API VIP stopped answering"
    # Back to the real config: converged, nothing to do.
    res = stack.pulumi("up", "--yes", "--skip-preview", timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    res = stack.pulumi("preview", "--expect-no-changes")
    assert res.returncode == 0, res.stdout[-3000:]


def _changed(steps: list[dict]) -> dict[str, set]:
    out: dict[str, set] = {}
    for s in steps:
        if s["op"] != "same":
            out.setdefault(s["urn"].rsplit("::", 1)[1], set()).add(s["op"])
    return out


def test_a_new_registry_token_rolls_through_k3s_without_replacing_a_vm(stack):
    """k3s.registries with its token in a secret config key: up writes registries.yaml 0600 on the K3s node
    and restarts K3s; a new token is planned as an update of the K3s install alone, restarts K3s again with
    the new file, and no VM is touched; removing the setting removes the file. Neither token is ever shown."""
    _need_up(stack)
    ips = _node_ips(stack)
    tokens = ("ghp_" + secrets.token_hex(18), "ghp_" + secrets.token_hex(18))
    model = json.loads(json.dumps(stack.model))
    model["k3s"]["registries"] = {
        "mirrors": {"docker.io": {"endpoints": ["https://mirror.dev.microcloud.lan:5000"]}},
        "configs": {"ghcr.io": {"auth": {"username": "microcloud-bot", "password_key": "ghcr_token"}}},
    }
    path = "/etc/rancher/k3s/registries.yaml"

    def on_node() -> tuple[str, str, str]:
        res = stack.ssh(ips["server1"], f"sudo sh -c 'stat -c %a {path}; sha256sum < {path} | cut -c1-64; systemctl show -p MainPID --value k3s'")
        assert res.returncode == 0, res.stderr
        mode, digest, pid = res.stdout.split()
        return mode, digest, pid

    def expected(token: str) -> str:
        text = render_registries(specs.k3s_registries(parse_config(model), {"ghcr_token": token}))
        return hashlib.sha256(text.encode()).hexdigest()

    before = stack.ssh(ips["server1"], "systemctl show -p MainPID --value k3s").stdout.strip()
    stack.write_config(model)
    try:
        stack.set_secret("ghcr_token", tokens[0])
        res = stack.pulumi("up", "--yes", "--skip-preview", timeout=1800)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
        mode, digest, pid = on_node()
        assert mode == "600" and digest == expected(tokens[0]) and pid != before
        # A new token: only the K3s install changes, in place.
        stack.set_secret("ghcr_token", tokens[1])
        plan = stack.pulumi("preview", "--json")
        assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-2000:]
        assert _changed(json.loads(plan.stdout)["steps"]) == {f"{n}-k3s": {"update"} for n in K3S_NODES}
        res = stack.pulumi("up", "--yes", "--skip-preview", timeout=1800)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
        mode, digest, again = on_node()
        assert mode == "600" and digest == expected(tokens[1]) and again != pid
    finally:
        stack.write_config(stack.model)
        stack.pulumi("config", "rm", "ghcr_token")
    res = stack.pulumi("up", "--yes", "--skip-preview", timeout=1800)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    gone = stack.ssh(ips["server1"], f"sudo test -e {path}")
    assert gone.returncode == 1, "the program's registries.yaml is still on the node"
    assert stack.pulumi("preview", "--expect-no-changes").returncode == 0
    shown = "\n".join(stack.transcript)
    assert not [t for t in tokens if t in shown], "a registry token in clear in the CLI's output"


# ------------------------------------------------------------------ PostgreSQL on its node


def _psql(stack, client_ip: str, conn: dict, sql: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """psql on the VM at ``client_ip`` to the database node over the network: TLS verified against the stack's CA,
    the app's generated password in a 0600 passfile that arrives on stdin (never in an argument)."""
    app = conn["databases"]["app"]
    remote = (
        "set -e; umask 077; d=$(mktemp -d); trap 'rm -rf \"$d\"' EXIT; "
        f"printf '%s' {shlex.quote(conn['ca_certificate'])} > \"$d/ca.crt\"; cat > \"$d/pgpass\"; "
        f"PGPASSFILE=\"$d/pgpass\" PGCONNECT_TIMEOUT=8 psql -X -At "
        f"\"host={conn['host']} port={conn['port']} dbname=app user={app['user']} sslmode=verify-full sslrootcert=$d/ca.crt\" "
        f"-c {shlex.quote(sql)}"
    )
    cmd = ["ssh", *SSH_OPTS, "-i", str(stack.key_file()), f"core@{client_ip}", remote]
    return stack.sandbox.run(cmd, timeout=timeout, input=f"{conn['host']}:{conn['port']}:app:{app['user']}:{app['password']}\n")


def _db_up(stack, ip: str) -> bool:
    res = stack.ssh(ip, "systemctl is-active microcloud-postgresql && /usr/lib/postgresql/15/bin/pg_isready -q -h " + DB_IP, timeout=60)
    return res.returncode == 0


def test_postgresql_serves_the_cluster_network_from_its_node_with_its_data_on_nfs(stack):
    """db1 runs PostgreSQL 15 from the image's packages under the program's unit, its data directory on storage1's
    NFS disk; server1 (a K3s network) logs in over TLS with the generated password; lb1 (another network) cannot."""
    _need_up(stack)
    ips = _node_ips(stack)
    conn = stack.output("database", secret=True)
    assert conn["host"] == DB_IP and conn["sslmode"] == "verify-full"
    res = _psql(stack, ips["server1"], conn, "CREATE TABLE IF NOT EXISTS e2e (v text); INSERT INTO e2e VALUES ('kept'); "
                                             "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "t", res.stdout
    # From the LB network: the node's firewall admits PostgreSQL from the K3s networks only.
    refused = _psql(stack, ips["lb1"], conn, "SELECT 1", timeout=60)
    assert refused.returncode != 0 and "kept" not in refused.stdout
    # A wrong password is refused by the server (pg_hba: SCRAM).
    wrong = _psql(stack, ips["server1"], {**conn, "databases": {"app": {**conn["databases"]["app"], "password": "not-it"}}}, "SELECT 1")
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr, wrong.stderr[-500:]
    # The data directory is on storage1's disk, through the NFS mount.
    mnt = stack.ssh(ips["db1"], "findmnt -n -o FSTYPE,SOURCE /srv/postgresql && "
                                "sudo -u postgres /usr/lib/postgresql/15/bin/psql -X -At -h /run/postgresql -d postgres -c 'SHOW data_directory'")
    assert mnt.returncode == 0, mnt.stderr
    assert mnt.stdout.split() == ["nfs4", f"{ips['storage1']}:/var/mnt/data/postgresql", "/srv/postgresql/data"], mnt.stdout
    on_disk = stack.ssh(ips["storage1"], "sudo cat /var/mnt/data/postgresql/data/PG_VERSION && sudo ls /var/mnt/data/postgresql/backups")
    assert on_disk.returncode == 0, on_disk.stderr
    version, *dumps = on_disk.stdout.split()
    # The first up made one dump already (verified activation of the daily timer).
    assert version == "15" and any(re.fullmatch(r"app-\d{8}T\d{6}Z\.dump", d) for d in dumps), on_disk.stdout


def test_postgresql_data_survives_a_restart_of_the_service_and_of_the_vm(stack):
    _need_up(stack)
    ips = _node_ips(stack)
    conn = stack.output("database", secret=True)
    res = stack.ssh(ips["db1"], "sudo systemctl restart microcloud-postgresql", timeout=300)
    assert res.returncode == 0, res.stderr
    assert _wait(lambda: _db_up(stack, ips["db1"]), 120)
    after = _psql(stack, ips["server1"], conn, "SELECT count(*) FROM e2e WHERE v = 'kept'")
    assert after.returncode == 0 and after.stdout.strip() == "1", after.stderr[-1000:]
    # The whole VM: the NFS mount and then the server come back at boot, by their units alone.
    boot_id = stack.ssh(ips["db1"], "cat /proc/sys/kernel/random/boot_id").stdout.strip()
    stack.ssh(ips["db1"], "sudo systemctl reboot", timeout=60, attempts=1)

    def rebooted():
        res = stack.ssh(ips["db1"], "cat /proc/sys/kernel/random/boot_id", timeout=30, attempts=1)
        return res.returncode == 0 and res.stdout.strip() not in ("", boot_id)

    assert _wait(rebooted, 900, step=5), "db1 did not come back after its reboot"
    assert _wait(lambda: _db_up(stack, ips["db1"]), 300, step=3), stack.ssh(ips["db1"], "sudo systemctl status --no-pager microcloud-postgresql").stdout[-2000:]
    again = _psql(stack, ips["server1"], conn, "SELECT count(*) FROM e2e WHERE v = 'kept'")
    assert again.returncode == 0 and again.stdout.strip() == "1", again.stderr[-1000:]


def _secret_values(deployment: dict) -> dict[str, str]:
    """Every secret the state holds, as the strings a leak would show: each scalar secret value, and a key's
    (PEM, OpenSSH) body without its line breaks; each mapped to where it is held (resource name, property),
    so that a leak names its source. A command's own stdout and stderr are left out: they are kept secret
    in state, and what of them is shown is the command's `logging` choice, tested above."""
    found: dict[str, str] = {}
    where = [""]

    def leaves(v: object) -> None:
        if isinstance(v, str):
            parts = [v]
            if "-----BEGIN" in v:
                # The key's body as one string: single body lines are no sign of a leak, as an OpenSSH
                # key's first lines are the same in every key and it carries the public half too.
                parts.append("".join(x.strip() for x in v.splitlines() if x.strip() and "-----" not in x))
            for x in parts:
                if len(x.strip()) >= 8:
                    found.setdefault(x.strip(), where[0])
        elif isinstance(v, dict):
            for x in v.values():
                leaves(x)
        elif isinstance(v, list):
            for x in v:
                leaves(x)

    def walk(v: object) -> None:
        if isinstance(v, dict):
            if v.get(SECRET_SIG) == SECRET_VALUE and "plaintext" in v:
                try:
                    inner = json.loads(v["plaintext"])
                except ValueError:
                    inner = v["plaintext"]
                # A scalar secret is the secret itself. An object made secret as a whole (a connection,
                # because of its private key) also holds plain parts (address, host key): look for
                # the scalar secrets inside it, which stand elsewhere in the state too.
                if isinstance(inner, str):
                    leaves(inner)
                else:
                    walk(inner)
                return
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    for res in deployment["deployment"].get("resources") or []:
        outputs = dict(res.get("outputs") or {})
        if res["type"].startswith("command:"):
            outputs.pop("stdout", None), outputs.pop("stderr", None)
        for part, props in (("inputs", res.get("inputs") or {}), ("outputs", outputs)):
            for prop, value in props.items():
                where[0] = f"{res['urn'].rsplit('::', 1)[-1]} {part}.{prop}"
                walk(value)
    return found


def test_no_secret_of_the_state_in_any_display_or_event_log(stack):
    """Every secret in the resulting state (SSH key, VRRP password, K3s tokens and CA keys, the admin
    kubeconfig's key, trigger keys ...) searched in the whole display of every CLI run so far, in the
    engine's event stream of both ups and in the CLI's own log files of this run: zero hits. The per-update
    logs the CLI keeps are encrypted ("PLOG" files): nothing in clear there by construction, which is
    checked too."""
    _need_up(stack)
    export = stack.pulumi("stack", "export", "--show-secrets", "--stack", stack.name)
    assert export.returncode == 0, export.stderr
    secrets = _secret_values(json.loads(export.stdout))
    assert len(secrets) >= 3, "the state holds fewer secrets than the SSH key, the VRRP password and the token"
    transcript = "\n".join(t for t in stack.transcript if "--show-secrets" not in t.split("\n", 1)[0])
    logs = {str(p): p.read_text() for p in stack.state["event_logs"]}
    engine = stack.engine_logs()
    assert any(name.endswith("stack_export.log") for name in engine), sorted(engine)
    encrypted = {name for name, raw in engine.items() if raw.startswith(b"PLOG")}
    assert encrypted, "no per-update log of the CLI was found for this run"
    for name, raw in engine.items():
        if name not in encrypted:
            logs[name] = raw.decode(errors="replace")
    for where, text in (("CLI output", transcript), *logs.items()):
        hits = sorted(f"{s[:6]}... ({source})" for s, source in secrets.items() if s in text)
        assert hits == [], f"{len(hits)} secret value(s) in clear in {where}: {hits}"


def test_no_generated_secret_in_clear(stack):
    _need_up(stack)
    ips = _node_ips(stack)
    key = stack.output("ssh_private_key", secret=True)
    body = [line for line in key.splitlines() if line and "PRIVATE KEY" not in line]
    res = stack.ssh(ips["lb1"], "sudo awk '/auth_pass/ {print $2; exit}' /etc/keepalived/keepalived.conf")
    vrrp = res.stdout.strip()
    assert len(vrrp) == 8, res.stderr
    export = stack.pulumi("stack", "export", "--stack", stack.name)
    assert export.returncode == 0
    # the CLI's own output of every command so far, except the one --show-secrets call
    transcript = "\n".join(t for t in stack.transcript if "--show-secrets" not in t.split("\n", 1)[0])
    for where, text in (("state", export.stdout), ("CLI output", transcript)):
        assert vrrp not in text, f"VRRP password in clear in the {where}"
        for line in body:
            assert line not in text, f"SSH private key in clear in the {where}"


def test_destroy_leaves_nothing(stack):
    _need_up(stack)
    res, secs = stack.timed("destroy", "--yes", "--skip-preview", timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    stack.state["destroyed"] = True
    stack.state["destroy_s"] = secs
    sb = stack.sandbox
    assert sb.virsh("list", "--all", "--name").stdout.split() == []
    assert [n for n in sb.virsh("net-list", "--all", "--name").stdout.split() if n.startswith("microcloud")] == []
    assert [p for p in sb.virsh("pool-list", "--all", "--name").stdout.split() if p.startswith("microcloud")] == []
    pool = Path(stack.model["pool_path"])
    assert not pool.exists() or not any(pool.iterdir()), list(pool.iterdir())
