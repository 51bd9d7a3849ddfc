"""The load-balancer pair, for real: haproxy and keepalived in network namespaces.

Configs come from the program's renderers via ``components.specs`` for a
test topology derived from the dev stack (three K3s servers, two ingress
agents; same addresses, which only ever exist inside our namespaces). Every
time bound is derived from the timers in the rendered text; see lbnet.Timers.
Needs root (network namespaces) and the Debian haproxy/keepalived/iproute2
packages that .ci/install.sh installs.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import subprocess
import time

import pytest

from components.config import parse_config
from components.render import keepalived as ka
from support.harness import stack_model
from support.lbnet import LbNet, Tls, _fetch, lb_test_model, our_namespaces, tool, wait_for

pytestmark = pytest.mark.lbpair

# Scheduling slack on a small shared CI machine, added to every timer-derived bound.
SLACK = 2.5
# Client connect/read timeout per attempt; attempts are paced so loops stay bounded.
CLIENT_TIMEOUT = 0.5


def _preflight() -> None:
    if os.geteuid() != 0:
        pytest.fail("the LB failover tier needs root for network namespaces; run it via .ci/run as root")
    for t in ("haproxy", "keepalived", "ip"):
        tool(t)


@pytest.fixture(scope="class")
def net():
    _preflight()
    with LbNet(lb_test_model(stack_model("dev"))) as n:
        yield n


def _both(n: LbNet) -> set[str]:
    return {n.api_vip, n.ingress_vip}


def _round(n: LbNet, vip: str, port: int, count: int) -> list:
    """``count`` client connections, paced; bounded in number and (via timeouts) in time."""
    out = []
    for _ in range(count):
        out.append(n.fetch(vip, port, CLIENT_TIMEOUT))
    return out


def _first_success(n: LbNet, vip: str, port: int, via: str, bound: float) -> tuple[bool, float]:
    """Try every 50 ms until a client connection is answered through ``via``, for at most ``bound`` s."""
    t0 = time.monotonic()
    deadline = t0 + bound
    while time.monotonic() < deadline:
        a = n.fetch(vip, port, min(CLIENT_TIMEOUT, max(0.05, deadline - time.monotonic())))
        if a is not None and a.via == via:
            return True, time.monotonic() - t0
        time.sleep(0.05)
    return False, time.monotonic() - t0


class TestPairWithPreempt:
    """The dev topology's defaults (preempt on)."""

    def test_vips_on_master(self, net):
        assert net.cfg.load_balancer.vrrp.preempt is True
        assert net.vips_on(net.master) == _both(net), net.log("keepalived", net.master)
        assert net.vips_on(net.backup) == set(), net.log("keepalived", net.backup)
        # Both daemons run, the backup has accepted the master's adverts.
        assert all(p.alive() for k, p in net.procs.items() if k[0] in ("haproxy", "keepalived"))
        ok, _ = wait_for(lambda: "Entering BACKUP STATE" in net.log("keepalived", net.backup), net.timers.advert_int * 3 + SLACK)
        assert ok, net.log("keepalived", net.backup)
        assert net.vips_on(net.backup) == set()
        # Nothing of ours in the root namespace.
        root = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True, check=True).stdout
        assert f"inet {net.api_vip}/" not in root and f"inet {net.ingress_vip}/" not in root

    def test_round_robin_reaches_every_backend(self, net):
        lb = net.cfg.load_balancer
        master_ip = net.ip[net.master]
        for vip, port, want in (
            (net.api_vip, lb.api_port, net.servers),
            (net.ingress_vip, 80, net.ingress),
            (net.ingress_vip, 443, net.ingress),
        ):
            answers = _round(net, vip, port, 3 * len(want))
            assert None not in answers, f"{vip}:{port}: {answers}"
            assert {a.name for a in answers} == set(want), f"{vip}:{port}"
            assert {a.via for a in answers} == {master_ip}, "traffic must pass the MASTER's haproxy"
        # the NodePorts behind 80/443 are the configured ones
        assert {a.port for a in _round(net, net.ingress_vip, 80, 2)} == {lb.ingress_http_nodeport}
        assert {a.port for a in _round(net, net.ingress_vip, 443, 2)} == {lb.ingress_https_nodeport}

    def test_tls_passes_through_to_the_backends(self, net):
        """API and ingress HTTPS are TLS end to end: the client verifies the backend's certificate via the VIP."""
        lb = net.cfg.load_balancer
        for vip, port in ((net.api_vip, lb.api_port), (net.ingress_vip, 443)):
            answers = _round(net, vip, port, 4)
            assert None not in answers, f"{vip}:{port}: {answers}"
            assert all(a.tls and a.tls.startswith("TLSv1.") for a in answers), answers
        assert all(a.tls is None for a in _round(net, net.ingress_vip, 80, 2))
        # The check can fail: a name the certificate does not carry is refused, as is plain text to a TLS port.
        wrong = Tls(str(net.cert), f"nosuchname.{net.cfg.domain}")
        assert net.fetch(net.ingress_vip, 443, CLIENT_TIMEOUT, tls=wrong) is None
        assert net.thread("client").run(_fetch, net.api_vip, lb.api_port, CLIENT_TIMEOUT, None) is None

    def test_stopped_backend_leaves_rotation_within_health_window(self, net):
        t = net.timers
        port = net.cfg.load_balancer.api_port
        victim = net.servers[-1]
        healthy = set(net.servers) - {victim}
        down_bound = t.backend_down_window(SLACK)
        lbs = (net.master, net.backup)
        for lb in lbs:
            assert net.server_status(lb)[("k3s_api", victim)].startswith("UP")

        t0 = time.monotonic()
        net.stop_backend(victim)
        failures, down_at = [], {}
        while time.monotonic() - t0 < down_bound and len(down_at) < len(lbs):
            if net.fetch(net.api_vip, port, CLIENT_TIMEOUT) is None:
                failures.append(round(time.monotonic() - t0, 2))
            for lb in lbs:
                if lb not in down_at and net.server_status(lb).get(("k3s_api", victim), "").startswith("DOWN"):
                    down_at[lb] = time.monotonic() - t0
            time.sleep(0.1)
        assert set(down_at) == set(lbs), f"{victim} not marked DOWN within {down_bound:.1f}s: {down_at}"
        assert max(down_at.values()) <= down_bound
        # Round robin still sent clients there until haproxy noticed, and each of
        # those connections was redispatched to a healthy server: none failed ...
        assert not failures, f"requests failed at {failures}s after {victim} stopped"
        redispatched = {lb: int(net.backend_stats(lb)[victim]["wredis"] or 0) for lb in lbs}
        assert redispatched[net.master] > 0, f"the stop was never seen (no redispatch from {victim}): {redispatched}"
        # ... and nothing fails after it is out of rotation.
        answers = _round(net, net.api_vip, port, 5 * len(healthy))
        assert None not in answers, f"requests failed after {victim} left rotation: {answers}"
        assert {a.name for a in answers} == healthy

        # It comes back within rise x inter once it listens again.
        up_bound = t.backend_up_window(SLACK)
        net.start_backend(victim)
        ok, waited = wait_for(
            lambda: all(net.server_status(lb).get(("k3s_api", victim), "").startswith("UP") for lb in lbs), up_bound, 0.1
        )
        assert ok, f"{victim} not back UP within {up_bound:.1f}s"
        answers = _round(net, net.api_vip, port, 3 * len(net.servers))
        assert None not in answers and {a.name for a in answers} == set(net.servers)

    def test_master_haproxy_dies_vips_move_and_come_back(self, net):
        t = net.timers
        port = net.cfg.load_balancer.api_port
        assert net.vips_on(net.master) == _both(net)

        bound = t.failover_window(SLACK)
        t0 = time.monotonic()
        net.kill_haproxy(net.master)
        ok, moved = wait_for(lambda: net.vips_on(net.backup) == _both(net) and not net.vips_on(net.master), bound, 0.02)
        assert ok, f"VIPs not on {net.backup} within {bound:.1f}s: {net.holders()}\n{net.log('keepalived', net.master)}"
        ok, _ = _first_success(net, net.api_vip, port, net.ip[net.backup], max(0.5, bound - (time.monotonic() - t0)))
        assert ok, f"no client got through {net.backup} within {bound:.1f}s of the kill"
        for vip, p in ((net.api_vip, port), (net.ingress_vip, 80), (net.ingress_vip, 443)):
            answers = _round(net, vip, p, 4)
            assert None not in answers and {a.via for a in answers} == {net.ip[net.backup]}, f"{vip}:{p} {answers}"

        # The master's haproxy returns: with preempt it takes both VIPs back.
        bound = t.recover_window(SLACK)
        net.start_haproxy(net.master)
        ok, back = wait_for(lambda: net.vips_on(net.master) == _both(net) and not net.vips_on(net.backup), bound, 0.02)
        assert ok, f"preempt: VIPs not back on {net.master} within {bound:.1f}s: {net.holders()}"
        ok, _ = _first_success(net, net.api_vip, port, net.ip[net.master], bound)
        assert ok, f"no client got through {net.master} after it preempted"
        answers = _round(net, net.ingress_vip, 443, 4)
        assert None not in answers and {a.via for a in answers} == {net.ip[net.master]}


def test_nopreempt_keeps_vips_on_new_master():
    _preflight()
    model = lb_test_model(stack_model("dev"), preempt=False)
    with LbNet(model) as net:
        t = net.timers
        assert all("nopreempt" in c and "state BACKUP" in c for c in net.keepalived_text.values())
        assert net.vips_on(net.master) == _both(net) and not net.vips_on(net.backup)

        bound = t.failover_window(SLACK)
        net.kill_haproxy(net.master)
        ok, _ = wait_for(lambda: net.vips_on(net.backup) == _both(net) and not net.vips_on(net.master), bound, 0.02)
        assert ok, f"VIPs not on {net.backup} within {bound:.1f}s: {net.holders()}"

        # The old master recovers (leaves FAULT for BACKUP) but must not take the VIPs back.
        mark = len(net.log("keepalived", net.master))
        net.start_haproxy(net.master)
        t0 = time.monotonic()
        healthy_bound = t.script_interval * t.script_rise + SLACK
        ok, _ = wait_for(
            lambda: net.log("keepalived", net.master)[mark:].count("Entering BACKUP STATE") >= 2, healthy_bound, 0.1
        )
        assert ok, f"{net.master} did not recover to BACKUP:\n{net.log('keepalived', net.master)[mark:]}"
        # Watch for as long as a preempting master would have needed to take over.
        while time.monotonic() - t0 < t.recover_window(SLACK):
            assert not net.vips_on(net.master), f"nopreempt: {net.master} took a VIP back"
            assert net.vips_on(net.backup) == _both(net)
            time.sleep(0.2)
        answers = _round(net, net.api_vip, net.cfg.load_balancer.api_port, 4)
        assert None not in answers and {a.via for a in answers} == {net.ip[net.backup]}


def test_wrong_backup_unicast_peer_is_rejected_before_anything_runs(monkeypatch):
    """A pair whose BACKUP points its unicast peer elsewhere never reaches a daemon."""
    _preflight()
    model = lb_test_model(stack_model("dev"))
    cfg = parse_config(model)
    probe = LbNet(model)  # only reads the config: nothing is created before __enter__
    taken = {n.ip for n in cfg.nodes} | {cfg.load_balancer.api_vip, cfg.load_balancer.ingress_vip}
    net_cfg = cfg.network_by_name[cfg.load_balancer.network]
    wrong = str(next(ip for ip in net_cfg.cidr.hosts() if ip not in taken and ip != net_cfg.router and not net_cfg.in_dhcp(ip)))
    assert ipaddress.IPv4Address(wrong) != ipaddress.IPv4Address(probe.ip[probe.master])

    real = ka.render_keepalived

    def backup_points_elsewhere(spec: ka.KeepalivedSpec) -> str:
        if spec.router_name == probe.backup:
            spec = dataclasses.replace(spec, peer_ip=wrong)
        return real(spec)

    monkeypatch.setattr(ka, "render_keepalived", backup_points_elsewhere)
    before = set(our_namespaces("mc-lb-"))
    with pytest.raises(ValueError, match="unicast peers do not point at each other"):
        with LbNet(model):
            pytest.fail("the harness started a pair the program should have rejected")
    assert set(our_namespaces("mc-lb-")) == before, "a namespace was created for a rejected pair"


def _impostor_conf(net: LbNet) -> str:
    """The master's keepalived.conf, taken by another host of the LB network that knows the VRRP password:
    its own source address, both LBs as peers, a higher priority, no health check to fail."""
    conf = net.keepalived_text[net.master]
    ifname = net.cfg.load_balancer.vrrp.interface
    conf = re.sub(r"^(\s*)router_id \S+", r"\1router_id impostor", conf, flags=re.M)
    conf = re.sub(r"priority \d+", "priority 254", conf)
    conf = re.sub(r"unicast_src_ip \S+", f"unicast_src_ip {net.client_addr}", conf)
    conf = re.sub(r"unicast_peer \{[^}]*\}", "unicast_peer {\n        " + "\n        ".join(net.ip[lb] for lb in (net.master, net.backup)) + "\n    }", conf)
    conf = re.sub(r"track_script \{[^}]*\}", "", conf)
    conf = re.sub(r"\bcheck_unicast_src\b", "", conf)
    conf = conf.replace(f"dev {ifname}", "dev eth0").replace(f"interface {ifname}", "interface eth0")
    return conf


def _start_impostor(net: LbNet) -> None:
    path = net.workdir / "keepalived-client.conf"
    path.write_text(_impostor_conf(net))
    net.start_keepalived("client", conf=path)


@pytest.mark.parametrize("checked", [True, False], ids=["check_unicast_src", "without-it"])
def test_an_impostor_on_the_lan_cannot_take_the_vips(monkeypatch, checked):
    """A host on the LB network with the VRRP password and a higher priority sends adverts to both LBs. With
    the rendered check_unicast_src they count only from the configured peer: the VIPs stay on the master.
    The control run renders the same pair without it, and the impostor takes them: the check is what holds."""
    _preflight()
    if not checked:
        real = ka.render_keepalived
        monkeypatch.setattr(ka, "render_keepalived", lambda spec: real(spec).replace("    check_unicast_src\n", ""))
    with LbNet(lb_test_model(stack_model("dev"))) as net:
        assert ("check_unicast_src" in net.keepalived_text[net.master]) == checked
        t = net.timers
        ok, _ = wait_for(lambda: net.vips_on(net.master) == _both(net), t.failover_window(SLACK))
        assert ok, net.holders()
        _start_impostor(net)
        # The impostor believes it is master (it sends adverts) within its own start-up time.
        ok, _ = wait_for(lambda: "Entering MASTER STATE" in net.log("keepalived", "client"), t.failover_window(SLACK) + 5)
        assert ok, net.log("keepalived", "client")
        # Watch for several advert intervals: with the check, nothing moves; without it, the master yields.
        window = t.advert_int * 6 + SLACK
        if checked:
            t0 = time.monotonic()
            while time.monotonic() - t0 < window:
                assert net.vips_on(net.master) == _both(net), f"the impostor moved the VIPs: {net.holders()}"
                time.sleep(0.2)
            assert net.vips_on(net.backup) == set()
        else:
            ok, _ = wait_for(lambda: not net.vips_on(net.master), window)
            assert ok, f"without check_unicast_src the master kept the VIPs against an impostor: {net.holders()}"
