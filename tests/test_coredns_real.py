"""The rendered Corefile and hosts file, served by a real CoreDNS and queried with dig.

The binary is built from Go modules by .ci/coredns.sh (Debian has no
coredns package) at the version of the container image the stack runs.
A missing binary is a failure, not a skip, unless MICROCLOUD_SKIP_COREDNS=1.
dig comes from the Debian package bind9-dnsutils.

No query ever leaves this machine: CoreDNS binds 127.0.0.1 on a free high
port and its forwarder is a loopback UDP socket owned by the test that
records what it receives and never answers. The Corefile carries the dev
stack's client list (every network, and the node's own 127.0.0.1): queries
from 127.0.0.1 are answered, queries from 127.0.0.2 (loopback too, but in no
network of the stack) are REFUSED. One test runs CoreDNS in a network
namespace it makes, on the infra node's address, to ask from addresses
inside and outside the stack's networks; it deletes the namespace and stops
CoreDNS by PID.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from components import specs
from components.config import DnsConfig, parse_config
from components.render.coredns import CorefileSpec, HostsSpec, render_corefile, render_hosts
from support.harness import assert_stacks_pin_build, stack_model

pytestmark = pytest.mark.validators

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / ".ci" / "coredns.sh"
HOSTS_RELOAD = 5.0  # the hosts plugin's "reload 5s" in Corefile.j2
LOOPBACK = "127.0.0.1"


def _pinned_version() -> str:
    m = re.search(r"^VERSION=(v[0-9.]+)$", BUILD_SCRIPT.read_text(), re.M)
    assert m, f"no VERSION=vX.Y.Z line in {BUILD_SCRIPT}"
    return m.group(1)


VERSION = _pinned_version()


def binary_path() -> Path:
    cache = os.environ.get("MICROCLOUD_TOOLCHAIN_CACHE") or str(Path.home() / ".cache" / "microcloud-toolchain")
    return Path(cache) / f"coredns-{VERSION}" / "coredns"


# ------------------------------------------------------------------ records


DEV = parse_config(stack_model("dev"))


def _dev_stack() -> tuple[str, dict[str, str], str, tuple[str, ...]]:
    """Domain, records, zone and clients exactly as the dev stack renders them: every node plus the api/ingress VIPs."""
    cfg = DEV
    records = specs.dns_records(cfg, {n.name: str(n.ip) for n in cfg.nodes})
    return cfg.domain, records, specs.zone_file(cfg), specs.dns_clients(cfg)


DOMAIN, RECORDS, ZONE, CLIENTS = _dev_stack()
# Loopback, but in no network of the stack: the kernel sends from it when dig binds it (-b).
OUTSIDER = "127.0.0.2"


def fqdn(name: str) -> str:
    return f"{name}.{DOMAIN}"


# ------------------------------------------------------------------ tools


@pytest.fixture(scope="module")
def coredns_bin() -> Path:
    path = binary_path()
    if not (path.is_file() and os.access(path, os.X_OK)):
        if os.environ.get("MICROCLOUD_SKIP_COREDNS") == "1":
            pytest.skip(f"MICROCLOUD_SKIP_COREDNS=1 and no CoreDNS binary at {path}")
        pytest.fail(f"no CoreDNS binary at {path}; run .ci/coredns.sh to build it (about a minute on 2 cores)")
    return path


@pytest.fixture(scope="module")
def dig_bin(coredns_bin) -> str:
    path = shutil.which("dig")
    assert path, "dig is not installed; install the Debian package bind9-dnsutils"
    return path


def free_port() -> int:
    """A port free for both UDP and TCP on loopback (CoreDNS listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((LOOPBACK, 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((LOOPBACK, port))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free loopback port")


def _qname(packet: bytes) -> str:
    """Question name of a DNS query (uncompressed, as every query carries it)."""
    labels, i = [], 12
    while i < len(packet) and packet[i]:
        n = packet[i]
        labels.append(packet[i + 1 : i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    return ".".join(labels).lower() + "."


class Sink:
    """The forwarder: a loopback UDP socket that records query names and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.settimeout(0.2)
        self.addr = f"{LOOPBACK}:{self.sock.getsockname()[1]}"
        self.names: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, _ = self.sock.recvfrom(4096)
            except OSError:
                continue
            self.names.append(_qname(data))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@dataclass
class Answer:
    status: str
    flags: set[str]
    answer: list[tuple[str, str, str]] = field(default_factory=list)  # (name, type, data)
    authority: list[tuple[str, str, str]] = field(default_factory=list)

    def data(self, rtype: str) -> list[str]:
        return [d for _, t, d in self.answer if t == rtype]


def dig(dig_bin: str, port: int, *query: str, wait: float = 2.0, source: str = "", server: str = LOOPBACK,
        netns: str = "") -> Answer:
    """dig's answer; ``source`` is the address it asks from, ``netns`` a namespace it runs in."""
    cmd = [dig_bin, f"@{server}", "-p", str(port), "+tries=1", f"+time={int(wait)}", "+noall", "+comments", "+answer",
           "+authority", *(["-b", source] if source else []), *query]
    res = subprocess.run(
        ["ip", "netns", "exec", netns, *cmd] if netns else cmd,
        capture_output=True,
        text=True,
        timeout=wait + 10,
    )
    status = re.search(r"status: (\w+)", res.stdout)
    if not status:
        return Answer(status="NO-RESPONSE", flags=set())
    flags = re.search(r";; flags: ([a-z ]*);", res.stdout)
    out = Answer(status=status.group(1), flags=set(flags.group(1).split()) if flags else set())
    section = None
    for line in res.stdout.splitlines():
        if line.startswith(";; ANSWER SECTION"):
            section = out.answer
        elif line.startswith(";; AUTHORITY SECTION"):
            section = out.authority
        elif line.startswith(";") or not line.strip():
            continue
        elif section is not None:
            name, _ttl, _cls, rtype, data = line.split(None, 4)
            section.append((name, rtype, data))
    return out


# ------------------------------------------------------------------ server


@dataclass
class Server:
    port: int
    hosts: Path
    corefile: Path
    log: Path
    sink: Sink
    pid: int


def write_config(workdir: Path, port: int, sink: Sink, records: dict[str, str] = RECORDS, bind: str = LOOPBACK,
                 allow: tuple[str, ...] = CLIENTS) -> tuple[Path, Path]:
    hosts = workdir / "hosts"
    hosts.write_text(render_hosts(HostsSpec(domain=DOMAIN, records=records)))
    zone = workdir / "zone.db"
    zone.write_text(ZONE)
    corefile = workdir / "Corefile"
    corefile.write_text(
        render_corefile(
            CorefileSpec(
                domain=DOMAIN,
                forwarders=(sink.addr,),
                allow=allow,
                hosts_path=str(hosts),
                zone_path=str(zone),
                port=port,
                bind=bind,
            )
        )
    )
    return hosts, corefile


def _stop(proc: subprocess.Popen) -> None:
    """Stop our CoreDNS by its PID: SIGTERM, then SIGKILL."""
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


@contextlib.contextmanager
def running_coredns(coredns_bin: Path, dig_bin: str, workdir: Path, allow: tuple[str, ...] = CLIENTS) -> Iterator[Server]:
    """CoreDNS on the rendered config, answering; always stopped on exit, also when startup fails."""
    sink = Sink()
    try:
        for attempt in range(3):
            port = free_port()
            hosts, corefile = write_config(workdir, port, sink, allow=allow)
            log = workdir / f"coredns-{attempt}.log"
            with log.open("w") as out:
                proc = subprocess.Popen(
                    [str(coredns_bin), "-conf", str(corefile)], cwd=workdir, stdout=out, stderr=subprocess.STDOUT
                )
            try:
                probe = fqdn(sorted(RECORDS)[0])
                deadline = time.monotonic() + 20
                while proc.poll() is None and time.monotonic() < deadline:
                    if dig(dig_bin, port, probe, "A", wait=1).status == "NOERROR":
                        break
                    time.sleep(0.2)
                else:
                    if proc.poll() is not None and "address already in use" in log.read_text():
                        continue  # lost the port to someone else between free_port() and bind
                    pytest.fail(f"CoreDNS did not start answering (exit {proc.poll()}):\n{log.read_text()}")
                yield Server(port=port, hosts=hosts, corefile=corefile, log=log, sink=sink, pid=proc.pid)
                return
            finally:
                _stop(proc)
        pytest.fail("CoreDNS could not bind a free port three times")
    finally:
        sink.close()


@pytest.fixture(scope="module")
def server(coredns_bin, dig_bin, tmp_path_factory) -> Iterator[Server]:
    with running_coredns(coredns_bin, dig_bin, tmp_path_factory.mktemp("coredns")) as srv:
        yield srv


# ------------------------------------------------------------------ tests


def test_pinned_version_is_the_stack_default():
    """.ci/coredns.sh builds the version the stack runs (and uploads), so these tests check what production parses."""
    pinned = DnsConfig.model_fields["coredns"].default.version
    assert pinned == VERSION, f"{BUILD_SCRIPT} builds {VERSION}, the stack runs {pinned}"


def test_binary_is_the_pinned_version(coredns_bin):
    res = subprocess.run([str(coredns_bin), "-version"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and res.stdout.splitlines()[0] == f"CoreDNS-{VERSION.lstrip('v')}", res.stdout


def test_both_stacks_pin_this_build(coredns_bin):
    """The build is reproducible (-trimpath, no VCS stamp): dev and prod hold the infra node to its sha256."""
    assert_stacks_pin_build(coredns_bin, "dns.coredns")


def test_record_set_is_the_dev_stack():
    assert {"lb1": "10.27.0.30", "api": "10.27.0.32", "server1": "10.27.4.21"}.items() <= RECORDS.items()
    assert len(RECORDS) >= 8  # every node and both VIPs


def test_renders_loopback_forwarder_with_port():
    """The renderer passes host:port forwarders through; that keeps these tests on loopback."""
    text = render_corefile(CorefileSpec(domain=DOMAIN, forwarders=("127.0.0.1:5399",), allow=CLIENTS, port=15353, bind=LOOPBACK))
    assert "forward . 127.0.0.1:5399 {" in text
    assert f"{DOMAIN}:15353 {{" in text and ".:15353 {" in text


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_a_record_for_every_fqdn(server, dig_bin, name):
    res = dig(dig_bin, server.port, fqdn(name), "A")
    assert res.status == "NOERROR", res
    assert "aa" in res.flags, f"the domain zone must answer authoritatively: {res}"
    assert res.data("A") == [RECORDS[name]], res


def test_names_resolve_case_insensitively(server, dig_bin):
    res = dig(dig_bin, server.port, fqdn("lb1").upper(), "A")
    assert res.data("A") == [RECORDS["lb1"]], res


def test_known_name_without_aaaa_is_nodata_not_an_error(server, dig_bin):
    res = dig(dig_bin, server.port, fqdn("api"), "AAAA")
    assert res.status == "NOERROR" and res.answer == [], res


@pytest.mark.parametrize("name", ["lb1", "api", "server1"])
def test_ptr_answers_the_fqdn(server, dig_bin, name):
    res = dig(dig_bin, server.port, "-x", RECORDS[name])
    assert res.status == "NOERROR", res
    assert fqdn(name) + "." in res.data("PTR"), res


def test_ptr_is_only_the_fqdn(server, dig_bin):
    res = dig(dig_bin, server.port, "-x", RECORDS["lb1"])
    assert res.data("PTR") == [fqdn("lb1") + "."], res


def test_unknown_name_in_domain_is_not_forwarded(server, dig_bin):
    """No fallthrough in the domain zone: a typo never reaches the forwarders."""
    typo = f"nosuchnode-{uuid.uuid4().hex[:8]}"
    res = dig(dig_bin, server.port, fqdn(typo), "A")
    assert res.status in ("NXDOMAIN", "SERVFAIL") and res.answer == [], res
    # The check can fail: a name outside the domain does reach the sink.
    canary = f"canary-{uuid.uuid4().hex[:8]}.example."
    dig(dig_bin, server.port, canary, "A", wait=1)
    deadline = time.monotonic() + 10
    while canary not in server.sink.names and time.monotonic() < deadline:
        time.sleep(0.1)
    assert canary in server.sink.names, f"forwarder sink saw {server.sink.names}; {server.log.read_text()}"
    assert not [n for n in server.sink.names if n.startswith(typo)], server.sink.names


def test_unknown_name_in_domain_is_nxdomain(server, dig_bin):
    """Authoritative NXDOMAIN with the zone's SOA, whose minimum bounds negative caching."""
    res = dig(dig_bin, server.port, fqdn(f"nosuchnode-{uuid.uuid4().hex[:8]}"), "A")
    assert res.status == "NXDOMAIN" and "aa" in res.flags, res
    soa = [d for _, t, d in res.authority if t == "SOA"]
    assert len(soa) == 1 and soa[0].split()[-1] == "30", res


def test_zone_apex_has_soa_and_ns(server, dig_bin):
    soa = dig(dig_bin, server.port, DOMAIN, "SOA")
    assert soa.status == "NOERROR" and soa.data("SOA")[0].startswith(fqdn("infra") + ". "), soa
    ns = dig(dig_bin, server.port, DOMAIN, "NS")
    assert ns.data("NS") == [fqdn("infra") + "."], ns


def test_short_name_is_not_a_record(server, dig_bin):
    """'lb1.' is not ours to answer: it goes to the forwarders (which here never answer)."""
    res = dig(dig_bin, server.port, "lb1.", "A", wait=1)
    assert res.data("A") == [], res
    assert "lb1." in server.sink.names, server.sink.names


# ------------------------------------------------------------------ who is answered


def test_clients_are_every_network_and_the_node_itself():
    """The dev stack's Corefile answers its networks and the infra node's own loopback, nothing wider."""
    nets = [str(n.cidr) for n in DEV.networks]
    assert len(nets) >= 2 and CLIENTS == (*nets, "127.0.0.1/32", "::1/128"), CLIENTS
    text = specs.corefile(DEV)
    acl = f"    acl {{\n        allow net {' '.join(CLIENTS)}\n        block\n    }}\n"
    assert text.count(acl) == 2, text  # the domain's block and the forwarding one
    assert "0.0.0.0/0" not in text and "127.0.0.0/8" not in text


@pytest.mark.parametrize("allow,words", [((), "at least one client"), (("0.0.0.0/0",), "open resolver"),
                                         (("::/0",), "open resolver"), (("10.27.0.5/24",), "host bits")])
def test_renderer_refuses_an_open_or_empty_client_list(allow, words):
    with pytest.raises(ValueError, match=words):
        render_corefile(CorefileSpec(domain=DOMAIN, forwarders=("127.0.0.1:5399",), allow=allow))


def _not_forwarded(server: Server, dig_bin: str, name: str) -> None:
    """``name`` (asked before this) never reached the forwarder: a canary asked after it from 127.0.0.1 did."""
    canary = f"canary-{uuid.uuid4().hex[:8]}.example."
    dig(dig_bin, server.port, canary, "A", wait=1)
    deadline = time.monotonic() + 10
    while canary not in server.sink.names and time.monotonic() < deadline:
        time.sleep(0.1)
    assert canary in server.sink.names, f"forwarder sink saw {server.sink.names}; {server.log.read_text()}"
    assert name not in server.sink.names, server.sink.names


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_recursion_is_refused_outside_the_networks(server, dig_bin, tcp):
    """The check can fail: the same name from 127.0.0.1 is forwarded (test_short_name_is_not_a_record)."""
    name = f"outsider-{uuid.uuid4().hex[:8]}.example."
    res = dig(dig_bin, server.port, *(["+tcp"] if tcp else []), name, "A", source=OUTSIDER)
    assert res.status == "REFUSED" and res.answer == [], res
    _not_forwarded(server, dig_bin, name)


DOMAIN_QUERIES = {"a": (fqdn("lb1"), "A"), "soa": (DOMAIN, "SOA"), "ptr": ("-x", RECORDS["lb1"])}


@pytest.mark.parametrize("kind", sorted(DOMAIN_QUERIES))
def test_the_domain_is_refused_outside_the_networks(server, dig_bin, kind):
    """The stack's names answer its networks only: the same query from 127.0.0.1 is answered."""
    query = DOMAIN_QUERIES[kind]
    mine = dig(dig_bin, server.port, *query)
    assert mine.status == "NOERROR" and mine.answer, mine
    res = dig(dig_bin, server.port, *query, source=OUTSIDER)
    assert res.status == "REFUSED" and res.answer == [] and res.authority == [], res


def test_allowed_clients_widen_the_list(coredns_bin, dig_bin, tmp_path):
    """dns.allowed_clients, the relaxation: a network named there is answered, the rest still refused."""
    model = stack_model("dev")
    model["dns"]["allowed_clients"] = ["127.0.0.2/32"]
    allow = specs.dns_clients(parse_config(model))
    assert allow == (*CLIENTS[:-2], "127.0.0.2/32", *CLIENTS[-2:]), allow
    with running_coredns(coredns_bin, dig_bin, tmp_path, allow=allow) as srv:
        ok = dig(dig_bin, srv.port, fqdn("lb1"), "A", source=OUTSIDER)
        assert ok.status == "NOERROR" and ok.data("A") == [RECORDS["lb1"]], ok
        res = dig(dig_bin, srv.port, fqdn("lb1"), "A", source="127.0.0.3")
        assert res.status == "REFUSED" and res.answer == [], res


def _ip(*args: str) -> None:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, f"ip {' '.join(args)}: {res.stderr}"


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace of this test, its loopback up, deleted on exit."""
    if os.geteuid() != 0:
        pytest.fail("the namespace test needs root (ip netns); run it via .ci/run as root")
    assert shutil.which("ip"), "ip is not installed; install the Debian package iproute2"
    ns = f"mc-dns-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    _ip("netns", "add", ns)
    try:
        _ip("-n", ns, "link", "set", "lo", "up")
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def test_networks_are_answered_and_others_refused_in_a_namespace(coredns_bin, dig_bin, netns, tmp_path):
    """CoreDNS on the infra node's address with dev's own client list: a client in another network of the
    stack gets the domain and recursion; a client outside every network gets REFUSED for both, and its
    query is not forwarded. Every address is a /32 on the loopback of the test's namespace."""
    from support.lbnet import NsThread

    infra = DEV.infra_node
    other = next(n for n in DEV.networks if n.name != infra.network)
    used = {n.ip for n in DEV.nodes} | {DEV.load_balancer.api_vip, DEV.load_balancer.ingress_vip}
    inside = next(ip for ip in reversed(list(other.cidr.hosts())) if ip not in used and not other.in_dhcp(ip))
    outside = "192.0.2.10"  # TEST-NET-1: in no network of the stack
    assert not any(ipaddress.ip_address(outside) in n.cidr for n in DEV.networks)
    for address in (infra.ip, inside, outside):
        _ip("-n", netns, "addr", "add", f"{address}/32", "dev", "lo")
    worker = NsThread(netns)
    sink = worker.run(Sink)  # its socket is made in the namespace: the forwarder is the namespace's loopback
    port = 53
    try:
        _hosts, corefile = write_config(tmp_path, port, sink, bind=str(infra.ip), allow=CLIENTS)
        log = tmp_path / "coredns.log"
        with log.open("w") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", netns, str(coredns_bin), "-conf", str(corefile)],
                                    cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
        try:
            def ask(*query: str, source: str, wait: float = 2.0) -> Answer:
                return dig(dig_bin, port, *query, source=source, server=str(infra.ip), netns=netns, wait=wait)

            deadline = time.monotonic() + 20
            while proc.poll() is None and time.monotonic() < deadline:
                if ask(fqdn("lb1"), "A", source=str(infra.ip), wait=1).status == "NOERROR":
                    break
                time.sleep(0.2)
            else:
                pytest.fail(f"CoreDNS did not start answering in {netns} (exit {proc.poll()}):\n{log.read_text()}")

            ok = ask(fqdn("lb1"), "A", source=str(inside))
            assert ok.status == "NOERROR" and ok.data("A") == [RECORDS["lb1"]], ok
            refused = ask(fqdn("lb1"), "A", source=outside)
            assert refused.status == "REFUSED" and refused.answer == [], refused

            far = f"outsider-{uuid.uuid4().hex[:8]}.example."
            assert ask(far, "A", source=outside).status == "REFUSED"
            near = f"client-{uuid.uuid4().hex[:8]}.example."
            ask(near, "A", source=str(inside), wait=1)  # forwarded; the sink never answers
            deadline = time.monotonic() + 10
            while near not in sink.names and time.monotonic() < deadline:
                time.sleep(0.1)
            assert near in sink.names, f"sink saw {sink.names}; {log.read_text()}"
            assert far not in sink.names, sink.names
        finally:
            _stop(proc)
    finally:
        sink.close()
        worker.close()


def test_hosts_edit_is_picked_up_within_reload_interval(coredns_bin, dig_bin, tmp_path):
    """A new node only rewrites the hosts file: no restart, visible within the hosts plugin's reload interval.

    Names are queried only after the interval, so the cache plugin never holds
    a stale answer for them.
    """
    with running_coredns(coredns_bin, dig_bin, tmp_path) as srv:
        probe = sorted(RECORDS)[0]  # queried by startup; left unchanged
        changed = dict(RECORDS)
        changed["server2"] = "10.27.4.22"  # added
        changed["worker1"] = "10.27.4.99"  # moved
        del changed["storage1"]  # removed
        srv.hosts.write_text(render_hosts(HostsSpec(domain=DOMAIN, records=changed)))
        time.sleep(HOSTS_RELOAD + 1.5)

        assert dig(dig_bin, srv.port, fqdn("server2"), "A").data("A") == ["10.27.4.22"], srv.log.read_text()
        assert dig(dig_bin, srv.port, fqdn("worker1"), "A").data("A") == ["10.27.4.99"]
        gone = dig(dig_bin, srv.port, fqdn("storage1"), "A")
        assert gone.status != "NOERROR" and gone.answer == [], gone
        assert dig(dig_bin, srv.port, fqdn(probe), "A").data("A") == [RECORDS[probe]]
        assert dig(dig_bin, srv.port, "-x", "10.27.4.22").data("PTR")[:1] == [fqdn("server2") + "."]


def _broken(text: str, old: str, new: str) -> str:
    assert old in text, f"{old!r} not in the rendered Corefile"
    return text.replace(old, new, 1)


# name: (how to break the rendered Corefile, what CoreDNS must say about it)
BREAKAGES = {
    "misspelled-directive": (lambda t: _broken(t, "    errors\n", "    erors\n"), "Unknown directive 'erors'"),
    "bad-reload-duration": (lambda t: _broken(t, "reload 5s", "reload five"), "invalid duration for reload"),
    "unbalanced-brace": (lambda t: _broken(t, "        ttl 60\n", "        ttl 60 {\n"), "Error during parsing"),
    "forward-without-upstream": (lambda t: re.sub(r"forward \. \S+ \{", "forward . {", t), "plugin/forward"),
    "duplicate-zone": (lambda t: t + t.split("\n\n")[0].split("\n", 1)[1] + "\n", "already defined"),
    "acl-bad-network": (lambda t: re.sub(r"allow net \S+", "allow net 10.27.0.0/33", t, count=1), "illegal CIDR notation"),
    "acl-bad-action": (lambda t: _broken(t, "        block\n", "        blok\n"), "unexpected token \"blok\""),
}


ZONE_BREAKAGES = {
    "no-soa": (lambda z: z.replace(" IN SOA ", " IN SOAX ", 1), "has no SOA record"),
    "bad-address": (lambda z: z.replace(" IN A ", " IN A 999.", 1), "bad A A"),
}
BROKEN = {
    **{f"Corefile-{k}": ("Corefile", *v) for k, v in BREAKAGES.items()},
    **{f"zone-{k}": ("zone.db", *v) for k, v in ZONE_BREAKAGES.items()},
}


@pytest.mark.parametrize("breakage", sorted(BROKEN))
def test_broken_config_exits_nonzero(coredns_bin, tmp_path, breakage):
    """The check can fail: CoreDNS refuses a broken Corefile, or a zone it cannot serve, at startup."""
    sink = Sink()
    try:
        write_config(tmp_path, free_port(), sink)
        file, breaker, message = BROKEN[breakage]
        target = tmp_path / file
        good = target.read_text()
        target.write_text(breaker(good))
        assert target.read_text() != good
        proc = subprocess.Popen(
            [str(coredns_bin), "-conf", str(tmp_path / "Corefile")],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            _stop(proc)
            pytest.fail(f"CoreDNS accepted the {breakage} {file} and kept running:\n{target.read_text()}")
        finally:
            _stop(proc)
        assert proc.returncode != 0, f"{breakage}: exit 0\n{out}"
        assert message in out, f"{breakage}: CoreDNS failed, but not for the breakage:\n{out}"
    finally:
        sink.close()


# ------------------------------------------------------------------ day-2 verify fragments, under pipefail


@pytest.mark.parametrize("shell", [["/bin/sh", "-c"], ["bash", "-o", "pipefail", "-c"]])
def test_the_day2_checks_read_whole_answers(server, coredns_bin, shell):
    """InfraServices' verify fragments against the real CoreDNS and dig: they pass under pipefail with nothing
    on stderr (no producer killed by a reader that stopped early), and fail where they should."""
    from components.render.coredns import dig_check, version_check

    def run(script: str) -> subprocess.CompletedProcess:
        return subprocess.run([*shell, script], capture_output=True, text=True, timeout=60)

    for script in (dig_check(fqdn("lb1"), port=server.port), dig_check(DOMAIN, "SOA", port=server.port),
                   version_check(str(coredns_bin), VERSION)):
        res = run(script)
        assert (res.returncode, res.stderr) == (0, ""), (script, res)
    for script in (dig_check(fqdn("nonexistent"), port=server.port), version_check(str(coredns_bin), "v1.12.0"),
                   version_check(str(coredns_bin), VERSION + "0")):
        assert run(script).returncode != 0, script
