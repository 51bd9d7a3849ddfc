"""The libvirt host's forwarding between the stack's networks, against a real libvirtd.

A libvirtd of our own (tests/e2e/sandbox.py: its own network and mount
namespaces) starts two ``nat`` networks the way the program creates them; a
"guest" on each is a network namespace with a veth into the network's bridge
and its default route to the host, as a node has. A plain Linux bridge
stands in for a ``bridge`` network (the LAN), with two hosts on it: a node
of the stack and a stranger. Out of the box libvirt rejects a new connection
from one NAT network into the other, and from the LAN into either. After the
rendered script runs, the connection goes through with the guest's real
source address (not masqueraded); the LAN's node gets through, the stranger
only to the one port a VIP rule gives it; running it again adds nothing; a
network taken out of the set loses its rules; the delete script leaves only
rules that are not this stack's (libvirt's own and another stack's).
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid

import pytest

from components.render.host_forwarding import (FILTER_CHAIN, NAT_CHAIN, ForwardRule, HostForwardingSpec, between, render_apply,
                                               render_delete)
from e2e.sandbox import Sandbox, tools_missing

pytestmark = pytest.mark.validators

NETS = {"a": ("10.91.1", "mcfwa"), "b": ("10.91.2", "mcfwb")}
# The LAN: a bridge libvirt does not own, the host at .1 (standing in for the LAN router), a node and a stranger.
LAN, LAN_BRIDGE = "10.91.3", "mcfwl"
LAN_HOSTS = {"node": f"{LAN}.30", "stranger": f"{LAN}.99"}
TAG = "microcloud-fwtest"
SERVER = r"""
import socket, sys, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], port)); s.listen(8)
    while True:
        c, peer = s.accept(); c.sendall(peer[0].encode()); c.close()
for port in (8080, 8081):
    threading.Thread(target=serve, args=(port,), daemon=True).start()
threading.Event().wait(600)
"""
CLIENT = "import socket,sys; c=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3); print(c.recv(64).decode())"


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
        res = sb.run(["sh", "-c", f"set -e; ip link add {LAN_BRIDGE} type bridge; ip addr add {LAN}.1/24 dev {LAN_BRIDGE};"
                                  f"ip link set {LAN_BRIDGE} up"])
        assert res.returncode == 0, res.stderr
        hosts = {name: (sub, br, f"{sub}.50") for name, (sub, br) in NETS.items()}
        hosts.update({name: (LAN, LAN_BRIDGE, ip) for name, ip in LAN_HOSTS.items()})
        guests = {name: f"mcfw{name}-{uuid.uuid4().hex[:6]}" for name in hosts}
        servers = []
        try:
            for name, (sub, br, ip) in hosts.items():
                ns, host_if = guests[name], f"h{name[:3]}{uuid.uuid4().hex[:6]}"
                script = (
                    f"set -e; ip netns add {ns}; ip link add {host_if} type veth peer name g0 netns {ns};"
                    f"ip link set {host_if} master {br} up; ip -n {ns} addr add {ip}/24 dev g0;"
                    f"ip -n {ns} link set g0 up; ip -n {ns} link set lo up; ip -n {ns} route add default via {sub}.1"
                )
                res = sb.run(["sh", "-c", script])
                assert res.returncode == 0, res.stderr
            for name in ("b", "node", "stranger"):
                servers.append(_popen(sb, ["ip", "netns", "exec", guests[name], "python3", "-c", SERVER, hosts[name][2]]))
            yield sb, guests
        finally:
            for server in servers:
                server.kill()
                server.wait(timeout=10)
            for ns in guests.values():
                sb.run(["ip", "netns", "delete", ns])


def _popen(sb: Sandbox, cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(["nsenter", "-t", str(sb._ns_pid()), "-m", "-n", "--", *cmd],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _connect(sb: Sandbox, guests: dict, attempts: int = 10, src: str = "a", dst: str = "10.91.2.50", port: int = 8080) -> str | None:
    """What the server at ``dst`` saw as the client's address when guest ``src`` connects, or None if refused."""
    for _ in range(attempts):
        res = sb.run(["ip", "netns", "exec", guests[src], "python3", "-c", CLIENT, dst, str(port)], timeout=30)
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
    while sb.run(["python3", "-c", CLIENT, "10.91.2.50", "8080"]).returncode != 0:
        assert time.monotonic() < deadline, "the guest server never answered the host"
        time.sleep(0.5)
    assert _connect(sb, guests, attempts=2) is None, "libvirt let a NAT network into another; the premise changed"

    spec = HostForwardingSpec(tag=TAG, rules=between({"a": ("10.91.1.0/24",), "b": ("10.91.2.0/24",)}))
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

    _run(sb, render_apply(HostForwardingSpec(tag=TAG, rules=between({"a": ("10.91.1.0/24",)}))))
    assert sorted(_rules(sb)) == sorted(libvirt_own), "rules of a network taken out of the stack are left"
    assert _connect(sb, guests, attempts=2) is None

    _run(sb, render_apply(spec))
    _run(sb, render_delete(spec))
    assert sorted(_rules(sb)) == sorted(libvirt_own)
    assert any("microcloud-fwtest2" in r for r in _rules(sb))


def test_spec_rejects_a_tag_that_could_break_the_script():
    with pytest.raises(ValueError, match="tag"):
        HostForwardingSpec(tag="dev; rm -rf /", rules=())
    assert re.fullmatch(r"[a-z-]+", TAG)


def test_from_the_lan_only_the_stacks_own_hosts_and_the_vip_ports_are_forwarded(lab):
    """The LAN (a bridge network) is represented by the stack's node on it: that node reaches the NAT network with
    its real address and is reached back unmasqueraded; the stranger beside it is refused, but for the one port a
    VIP client rule opens to it; what the NAT network sends the stranger is still masqueraded (its replies must
    come back through the host, which is not the LAN's router)."""
    sb, guests = lab
    node, stranger = LAN_HOSTS["node"], LAN_HOSTS["stranger"]
    assert _connect(sb, guests, attempts=2, src="node") is None, "libvirt let the LAN into a NAT network; the premise changed"
    vip = ForwardRule(f"{stranger}/32", "10.91.2.50/32", (8080,))
    spec = HostForwardingSpec(tag=TAG, rules=between({"b": ("10.91.2.0/24",), "lan": (f"{node}/32",)}) + (vip,))
    try:
        _run(sb, render_apply(spec))
        assert _connect(sb, guests, src="node") == node
        assert _connect(sb, guests, src="node", port=8081) == node
        assert _connect(sb, guests, src="stranger") == stranger
        assert _connect(sb, guests, attempts=2, src="stranger", port=8081) is None, "the stranger got a port no rule gives it"
        assert _connect(sb, guests, src="b", dst=node) == "10.91.2.50"
        assert _connect(sb, guests, src="b", dst=stranger) == f"{LAN}.1", "traffic to a LAN host not the stack's lost its masquerade"
        _run(sb, render_apply(HostForwardingSpec(tag=TAG, rules=between({"b": ("10.91.2.0/24",), "lan": (f"{node}/32",)}))))
        assert _connect(sb, guests, attempts=2, src="stranger") is None, "the VIP rule outlived its removal"
    finally:
        _run(sb, render_delete(spec))


def test_rules_refuse_what_is_not_a_network_or_too_many_ports():
    with pytest.raises(ValueError, match="not an IPv4 network"):
        ForwardRule("10.91.1.5/24", "10.91.2.0/24")
    with pytest.raises(ValueError, match="every address"):
        ForwardRule("0.0.0.0/0", "10.91.2.0/24")
    with pytest.raises(ValueError, match="ports"):
        ForwardRule("10.91.1.0/24", "10.91.2.0/24", tuple(range(1, 17)))
    with pytest.raises(ValueError, match="ports"):
        ForwardRule("10.91.1.0/24", "10.91.2.0/24", (80, 80))
    script = render_apply(HostForwardingSpec(tag=TAG, rules=(ForwardRule("10.91.3.99/32", "10.91.2.50/32", (6443, 443)),)))
    assert "-s 10.91.3.99/32 -d 10.91.2.50/32 -p tcp -m multiport --dports 6443,443 -m comment" in script


# ------------------------------------------------------------------ from the stack config (components/specs/network.py)


def _spec(model: dict):
    from components import specs
    from components.config import parse_config

    return specs.host_forwarding(parse_config(model), "microcloud-t")


def test_prods_lan_is_its_lb_pair_and_vips_and_devs_networks_are_whole():
    from support.harness import stack_model

    prod = _spec(stack_model("prod"))
    ends = {r.src for r in prod.rules} | {r.dst for r in prod.rules}
    assert ends == {"10.17.3.0/24", "10.17.4.0/24", "192.168.0.30/32", "192.168.0.31/32", "192.168.0.32/32", "192.168.0.33/32"}
    assert all(not r.ports for r in prod.rules)
    # no flow within one network: the LAN's own hosts talk on the bridge, not through the host
    assert not [r for r in prod.rules if r.src.startswith("192.168.0.") and r.dst.startswith("192.168.0.")]
    dev = _spec(stack_model("dev"))
    assert sorted((r.src, r.dst) for r in dev.rules) == sorted(
        (a, b) for a in ("10.27.0.0/24", "10.27.3.0/24", "10.27.4.0/24") for b in ("10.27.0.0/24", "10.27.3.0/24", "10.27.4.0/24") if a != b
    )


def test_lan_clients_get_the_vips_ports_only_and_only_on_a_libvirt_network():
    from components.config import ConfigError
    from support.harness import stack_model

    model = stack_model("dev")
    model["load_balancer"]["clients"] = ["192.168.1.0/24"]
    extra = [r for r in _spec(model).rules if r.src == "192.168.1.0/24"]
    lb = model["load_balancer"]
    assert sorted(extra) == sorted([ForwardRule("192.168.1.0/24", f"{lb['api_vip']}/32", (6443,)),
                                    ForwardRule("192.168.1.0/24", f"{lb['ingress_vip']}/32", (80, 443))])
    for clients, msg in ((["0.0.0.0/0"], "every address"), (["10.27.4.0/25"], "overlaps the stack's network 'cluster'")):
        model["load_balancer"]["clients"] = clients
        with pytest.raises(ConfigError, match=re.escape(msg)):
            _spec(model)
    prod = stack_model("prod")
    prod["load_balancer"]["clients"] = ["192.168.1.0/24"]
    with pytest.raises(ConfigError, match="is a bridge network: its VIPs are on the LAN itself"):
        _spec(prod)
    model = stack_model("dev")
    model["networks"][0]["mode"] = "route"
    model["networks"][0].pop("dhcp", None)
    model["load_balancer"]["clients"] = ["192.168.1.0/24"]
    with pytest.raises(ConfigError, match="libvirt already forwards the LAN into it"):
        _spec(model)


def test_a_stack_name_with_a_dot_still_gets_a_tag_the_purge_matches():
    from components import specs

    assert specs.forwarding_tag("microcloud-dev.1") == "microcloud-dev_1"
    with pytest.raises(ValueError, match="tag"):
        HostForwardingSpec(tag="microcloud-dev.1", rules=())
