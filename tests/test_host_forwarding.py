"""The libvirt host's forwarding between the stack's networks, against a real libvirtd.

A libvirtd of our own (tests/e2e/sandbox.py: its own network and mount
namespaces) starts two ``nat`` networks the way the program creates them; a
"guest" on each is a network namespace with a veth into the network's bridge
and its default route to the host, as a node has. Out of the box libvirt
rejects a new connection from one NAT network into the other. After the
rendered script runs, the connection goes through with the guest's real
source address (not masqueraded); running it again adds nothing; a network
taken out of the set loses its rules; the delete script leaves only rules
that are not this stack's (libvirt's own and another stack's).
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid

import pytest

from components.render.host_forwarding import FILTER_CHAIN, NAT_CHAIN, HostForwardingSpec, render_apply, render_delete
from e2e.sandbox import Sandbox, tools_missing

pytestmark = pytest.mark.validators

NETS = {"a": ("10.91.1", "mcfwa"), "b": ("10.91.2", "mcfwb")}
TAG = "microcloud-fwtest"
SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 8080)); s.listen(8); s.settimeout(60)
while True:
    c, peer = s.accept(); c.sendall(peer[0].encode()); c.close()
"""
CLIENT = "import socket,sys; c=socket.create_connection((sys.argv[1], 8080), timeout=3); print(c.recv(64).decode())"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    missing = [t for t in tools_missing() if t not in ("qemu-system-x86_64", "qemu-img", "ssh")]
    assert not missing, f"not installed: {', '.join(missing)} (MICROCLOUD_WITH_LIBVIRT=1 bash .ci/install.sh)"
    work = tmp_path_factory.mktemp("fwlab")
    with Sandbox(work / "sandbox") as sb:
        for name, (sub, br) in NETS.items():
            xml = work / f"{name}.xml"
            xml.write_text(
                f"<network><name>{name}</name><forward mode='nat'/><bridge name='{br}'/>"
                f"<ip address='{sub}.1' netmask='255.255.255.0'/></network>"
            )
            res = sb.virsh("net-create", str(xml))
            assert res.returncode == 0, res.stderr
        guests = {name: f"mcfw{name}-{uuid.uuid4().hex[:6]}" for name in NETS}
        server = None
        try:
            for name, (sub, br) in NETS.items():
                ns, host_if = guests[name], f"h{name}{uuid.uuid4().hex[:6]}"
                script = (
                    f"set -e; ip netns add {ns}; ip link add {host_if} type veth peer name g0 netns {ns};"
                    f"ip link set {host_if} master {br} up; ip -n {ns} addr add {sub}.50/24 dev g0;"
                    f"ip -n {ns} link set g0 up; ip -n {ns} link set lo up; ip -n {ns} route add default via {sub}.1"
                )
                res = sb.run(["sh", "-c", script])
                assert res.returncode == 0, res.stderr
            server = _popen(sb, ["ip", "netns", "exec", guests["b"], "python3", "-c", SERVER, "10.91.2.50"])
            yield sb, guests
        finally:
            if server is not None:
                server.kill()
                server.wait(timeout=10)
            for ns in guests.values():
                sb.run(["ip", "netns", "delete", ns])


def _popen(sb: Sandbox, cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(["nsenter", "-t", str(sb._ns_pid()), "-m", "-n", "--", *cmd],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _connect(sb: Sandbox, guests: dict, attempts: int = 10) -> str | None:
    """What B saw as the client's address when A connects, or None if refused."""
    for _ in range(attempts):
        res = sb.run(["ip", "netns", "exec", guests["a"], "python3", "-c", CLIENT, "10.91.2.50"], timeout=30)
        if res.returncode == 0:
            return res.stdout.strip()
        time.sleep(0.3)
    return None


def _rules(sb: Sandbox) -> list[str]:
    out = []
    for table, chain in (("filter", FILTER_CHAIN), ("nat", NAT_CHAIN)):
        res = sb.run(["iptables", "-w", "-t", table, "-S", chain])
        assert res.returncode == 0, res.stderr
        out += [f"{table} {line}" for line in res.stdout.splitlines() if line.startswith("-A ")]
    return out


def _run(sb: Sandbox, script: str) -> None:
    res = sb.run(["sh", "-c", script])
    assert res.returncode == 0, res.stderr


def test_nat_networks_reject_each_other_until_the_host_forwards(lab):
    sb, guests = lab
    # The server answers the host (its own network's gateway side): it is up
    # and the bridge ports forward.
    deadline = time.monotonic() + 30
    while sb.run(["python3", "-c", CLIENT, "10.91.2.50"]).returncode != 0:
        assert time.monotonic() < deadline, "the guest server never answered the host"
        time.sleep(0.5)
    assert _connect(sb, guests, attempts=2) is None, "libvirt let a NAT network into another; the premise changed"

    spec = HostForwardingSpec(tag=TAG, cidrs=("10.91.1.0/24", "10.91.2.0/24"))
    # Another stack's rule and libvirt's own rules must survive everything below.
    other = "-s 10.99.0.0/24 -d 10.98.0.0/24 -m comment --comment microcloud-fwtest2 -j ACCEPT"
    _run(sb, f"iptables -w -t filter -A {FILTER_CHAIN} {other}")
    libvirt_own = _rules(sb)

    _run(sb, render_apply(spec))
    ours = [r for r in _rules(sb) if r not in libvirt_own]
    assert len(ours) == 4 and all(f"--comment {TAG} " in r for r in ours), ours
    # Through, with the real source address: no masquerade between the stack's networks.
    assert _connect(sb, guests) == "10.91.1.50"

    _run(sb, render_apply(spec))
    assert sorted(_rules(sb)) == sorted(libvirt_own + ours), "a second run changed the rules"

    _run(sb, render_apply(HostForwardingSpec(tag=TAG, cidrs=("10.91.1.0/24",))))
    assert sorted(_rules(sb)) == sorted(libvirt_own), "rules of a network taken out of the stack are left"
    assert _connect(sb, guests, attempts=2) is None

    _run(sb, render_apply(spec))
    _run(sb, render_delete(spec))
    assert sorted(_rules(sb)) == sorted(libvirt_own)
    assert any("microcloud-fwtest2" in r for r in _rules(sb))


def test_spec_rejects_a_tag_that_could_break_the_script():
    with pytest.raises(ValueError, match="tag"):
        HostForwardingSpec(tag="dev; rm -rf /", cidrs=("10.0.0.0/24",))
    assert re.fullmatch(r"[a-z-]+", TAG)
