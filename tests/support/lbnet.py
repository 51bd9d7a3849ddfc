"""Run the real load-balancer pair (haproxy + keepalived) in network namespaces.

``LbNet(model)`` is a context manager. From a stack config dict (through
``parse_config``, so the config model validates it) it renders haproxy.cfg,
both keepalived.conf and the check script with the program's own code
(``components.specs``) *before* it creates anything, so a config the
program rejects never reaches a namespace. Then it builds:

* one namespace holding one Linux bridge per config network in use, with the
  network's router address on it and forwarding on (the part a libvirt host
  plays between its networks);
* one namespace per load balancer, K3s server and ingress node, each with one
  veth into its network's bridge, named as the config says (``vrrp.interface``
  on the load balancers), the node's address from the config and a default
  route via its network's router; ``net.ipv4.ip_nonlocal_bind=1`` on the load
  balancers, as their cloud-init sets it;
* one client namespace on the VIP network;
* backends: a small Python listener per node (TLS on 6443 on servers; plain
  TCP on the HTTP NodePort and TLS on the HTTPS NodePort of ingress nodes)
  answering ``<name> <peer-ip> <port>``; the peer address tells which load
  balancer forwarded the connection. The certificate (made here with openssl)
  names the API and ingress VIPs, and the client verifies it through the VIP,
  so TLS passes haproxy untouched, as the K3s API and Traefik need;
* haproxy (``-db``, foreground) and keepalived (``-n``, own pid files) in each
  load-balancer namespace.

Nothing is created in the root namespace. Every process is started by the
harness, remembered by PID and stopped by PID; every namespace (and with it
every link and bridge) is deleted on exit, also when the body or the setup
fails, and on SIGTERM.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import csv
import ctypes
import ipaddress
import itertools
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

ROOT = Path(__file__).resolve().parents[2]

from components import specs  # noqa: E402
from components.config import StackConfig, parse_config, vrrp_priority  # noqa: E402

PREFIX = f"mc-lb-{os.getpid()}-"
# The ingress HTTPS frontend port (components/render/haproxy.py); the K3s API port comes from the config.
HTTPS_PORT = 443
_SEQ = itertools.count()
CLONE_NEWNET = 0x40000000

BACKEND_SRC = r'''
import selectors, socket, ssl, sys
# argv: name cert key port/proto...  (proto: tcp, or tls like the K3s API and Traefik's websecure)
name, cert, key, specs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
sel = selectors.DefaultSelector()
for spec in specs:
    port, proto = spec.split("/")
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(port)))
    s.listen(256)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, (int(port), proto == "tls"))
print("ready", flush=True)
while True:
    for key_, _ in sel.select():
        port, tls = key_.data
        try:
            conn, peer = key_.fileobj.accept()
        except OSError:
            continue
        try:
            conn.setblocking(True)
            conn.settimeout(1)
            if tls:  # haproxy's connect-only health check ends here, with a failed handshake
                conn = ctx.wrap_socket(conn, server_side=True)
            conn.sendall(f"{name} {peer[0]} {port}\n".encode())
        except OSError:
            pass
        finally:
            conn.close()
'''


# ------------------------------------------------------------------ the test topology


def lb_test_model(base: dict, *, servers: int = 3, ingress: int = 2, **vrrp) -> dict:
    """``base`` (a stack model dict) grown to ``servers`` K3s servers and ``ingress`` ingress agents.

    New nodes copy the first server/agent of ``base`` and take the next free
    addresses of its network; ``vrrp`` updates ``load_balancer.vrrp``. The
    result still goes through ``parse_config``, so it must be a valid stack.
    """
    m = copy.deepcopy(base)
    cfg = parse_config(m)
    used = {n.ip for n in cfg.nodes} | {cfg.load_balancer.api_vip, cfg.load_balancer.ingress_vip}
    used |= {n.router for n in cfg.networks}

    def grow(template_name: str, have: list[str], want: int, stem: str) -> None:
        template = next(n for n in m["nodes"] if n["name"] == template_name)
        net = cfg.network_by_name[template["network"]]
        start = ipaddress.IPv4Address(template["ip"])
        free = (ip for ip in net.cidr.hosts() if ip > start and ip not in used and not net.in_dhcp(ip))
        for i in range(len(have) + 1, want + 1):
            ip = next(free)
            used.add(ip)
            node = {**copy.deepcopy(template), "name": f"{stem}{i}", "ip": str(ip)}
            node.pop("mac", None)
            m["nodes"].append(node)

    grow(cfg.servers[0].name, [n.name for n in cfg.servers], servers, "server")
    agents = [n for n in cfg.ingress_nodes if n.role == "agent"]
    grow(agents[0].name, [n.name for n in cfg.ingress_nodes], ingress, "worker")
    if vrrp:
        m["load_balancer"].setdefault("vrrp", {}).update(vrrp)
    return m


# ------------------------------------------------------------------ timers read back from the rendered text


def _seconds(v: str) -> float:
    """An HAProxy time value (default unit ms) in seconds."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(us|ms|s|m|h|d)?", v)
    assert m, f"not an HAProxy time: {v!r}"
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1e-3}[m.group(2)]
    return float(m.group(1)) * scale


@dataclass(frozen=True)
class Timers:
    """Health-check and VRRP timing as rendered (not as assumed)."""

    check_inter: float  # haproxy server check interval, seconds
    check_fall: int
    check_rise: int
    script_interval: float  # keepalived vrrp_script
    script_fall: int
    script_rise: int
    advert_int: float

    @classmethod
    def parse(cls, haproxy_cfg: str, keepalived_conf: str) -> "Timers":
        hp = re.search(r"^\s*default-server\s+inter\s+(\S+)\s+fall\s+(\d+)\s+rise\s+(\d+)", haproxy_cfg, re.M)
        assert hp, "rendered haproxy.cfg has no default-server timing"
        script = re.search(r"vrrp_script\s+\S+\s*\{(.*?)\n\}", keepalived_conf, re.S)
        assert script, "rendered keepalived.conf has no vrrp_script"
        body = script.group(1)

        def num(key: str, text: str) -> float:
            v = re.search(rf"^\s*{key}\s+(\d+(?:\.\d+)?)\s*$", text, re.M)
            assert v, f"rendered keepalived.conf has no {key}"
            return float(v.group(1))

        adverts = set(re.findall(r"^\s*advert_int\s+(\d+(?:\.\d+)?)", keepalived_conf, re.M))
        assert len(adverts) == 1, f"expected one advert_int, got {adverts}"
        return cls(
            check_inter=_seconds(hp.group(1)),
            check_fall=int(hp.group(2)),
            check_rise=int(hp.group(3)),
            script_interval=num("interval", body),
            script_fall=int(num("fall", body)),
            script_rise=int(num("rise", body)),
            advert_int=float(adverts.pop()),
        )

    def backend_down_window(self, slack: float) -> float:
        """A stopped backend must be out of rotation within this (inter x fall + slack)."""
        return self.check_inter * self.check_fall + slack

    def backend_up_window(self, slack: float) -> float:
        return self.check_inter * self.check_rise + slack

    def failover_window(self, slack: float) -> float:
        """Master's haproxy dies -> VIPs on the backup (script interval x fall + 3 adverts + slack)."""
        return self.script_interval * self.script_fall + self.advert_int * 3 + slack

    def recover_window(self, slack: float) -> float:
        """Master's haproxy back -> preempted: script interval x rise (FAULT -> BACKUP), then the
        master-down timer, 3 adverts + skew time ((256 - priority) / 256 x advert_int < 1 advert)."""
        return self.script_interval * self.script_rise + self.advert_int * 4 + slack


# ------------------------------------------------------------------ helpers


def sh(*cmd: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
    res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def tool(name: str) -> str:
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.path.exists(p)), None)
    if not path:
        raise RuntimeError(f"{name} is not installed; run .ci/run (it installs it from Debian packages)")
    return path


def our_namespaces(prefix: str = PREFIX) -> list[str]:
    out = sh("ip", "netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


def wait_for(pred: Callable[[], object], timeout: float, interval: float = 0.05) -> tuple[object, float]:
    """Poll ``pred`` until truthy or ``timeout`` seconds pass; (last value, seconds waited)."""
    t0 = time.monotonic()
    while True:
        v = pred()
        waited = time.monotonic() - t0
        if v or waited >= timeout:
            return v, waited
        time.sleep(interval)


class NsThread:
    """One worker thread living in a network namespace; sockets it opens belong to that namespace."""

    def __init__(self, ns: str):
        self.ns = ns
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=ns, initializer=self._enter)
        self._pool.submit(lambda: None).result(timeout=10)

    def _enter(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{self.ns}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns({self.ns}): {os.strerror(err)}")
        finally:
            os.close(fd)

    def run(self, fn: Callable, *args, timeout: float = 30):
        return self._pool.submit(fn, *args).result(timeout=timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class Answer:
    name: str  # the backend that answered
    via: str  # the address it saw the connection from: the forwarding load balancer
    port: int
    tls: Optional[str] = None  # negotiated TLS version, when the connection was TLS end to end


@dataclass(frozen=True)
class Tls:
    cafile: str
    server_name: str  # SNI and the name the certificate must carry


def _fetch(ip: str, port: int, timeout: float, tls: Optional[Tls] = None) -> Optional[Answer]:
    """One connection; with ``tls`` a verified handshake (SNI, certificate, hostname) through the VIP first."""
    try:
        with socket.create_connection((ip, port), timeout=timeout) as raw:
            raw.settimeout(timeout)
            s, version = raw, None
            if tls:
                ctx = ssl.create_default_context(cafile=tls.cafile)
                s = ctx.wrap_socket(raw, server_hostname=tls.server_name)
                version = s.version()
            data = b""
            while len(data) < 512:
                chunk = s.recv(512)
                if not chunk:
                    break
                data += chunk
    except OSError:  # includes ssl.SSLError: a failed handshake or verification is a failed request
        return None
    parts = data.decode(errors="replace").split()
    if len(parts) != 3:
        return None
    return Answer(parts[0], parts[1], int(parts[2]), version)


def make_certificate(workdir: Path, names: Iterable[str], ips: Iterable[str]) -> tuple[Path, Path]:
    """A self-signed ECDSA certificate for the VIP names and addresses, made locally with openssl."""
    cert, key = workdir / "backend.crt", workdir / "backend.key"
    san = ",".join([*(f"DNS:{n}" for n in names), *(f"IP:{i}" for i in ips)])
    sh(
        tool("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "1", "-subj", "/CN=microcloud-lbnet-test", "-addext", f"subjectAltName={san}",
        "-keyout", str(key), "-out", str(cert),
    )
    os.chmod(key, 0o600)
    return cert, key


def _http_get(port: int, path: str, timeout: float) -> Optional[str]:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except OSError:
        return None
    head_b, _, body_b = data.partition(b"\r\n\r\n")
    head = head_b.decode(errors="replace")
    if " 200 " not in head.split("\r\n", 1)[0]:
        return None
    if re.search(r"^transfer-encoding:\s*chunked", head, re.I | re.M):
        # haproxy 2.6 answers the stats page chunked even to an HTTP/1.0 request
        out, rest = [], body_b
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size.split(b";")[0] or b"0", 16)
            if n == 0:
                break
            out.append(rest[:n])
            rest = rest[n + 2 :]
        body_b = b"".join(out)
    body = body_b.decode(errors="replace")
    return body


@dataclass
class Proc:
    what: str
    ns: str
    popen: subprocess.Popen
    log: Path
    child_pidfiles: tuple[Path, ...] = ()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None


# ------------------------------------------------------------------ the harness


@dataclass
class LbNet:
    model: dict
    auth_pass: str = "lbT3st!x"
    haproxy_overrides: dict = field(default_factory=dict)
    keepalived_overrides: dict = field(default_factory=dict)
    keep_workdir: bool = False

    def __post_init__(self) -> None:
        self.cfg: StackConfig = parse_config(self.model)
        self.seq = next(_SEQ)
        self.prefix = f"{PREFIX}{self.seq}-"
        self.workdir: Optional[Path] = None
        self.namespaces: list[str] = []
        self.procs: dict[tuple[str, str], Proc] = {}  # (kind, node) -> live process
        self.stopped: list[Proc] = []
        self._threads: dict[str, NsThread] = {}
        self._old_sigterm = None
        lbs = self.cfg.load_balancers
        self.master, self.backup = (n.name for n in sorted(lbs, key=lambda n: -vrrp_priority(self.cfg, n)))
        self.ip = {n.name: str(n.ip) for n in self.cfg.nodes}
        self.servers = [n.name for n in self.cfg.servers]
        self.ingress = [n.name for n in self.cfg.ingress_nodes]
        self.api_vip = str(self.cfg.load_balancer.api_vip)
        self.ingress_vip = str(self.cfg.load_balancer.ingress_vip)

    # ----- rendering: the program's code, before anything exists

    def render(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=self.prefix, dir="/run" if os.access("/run", os.W_OK) else None))
        os.chmod(self.workdir, 0o755)  # root-owned, not writable by others: keepalived's script security
        w = self.workdir
        self.check_script = w / "chk_haproxy"
        self.haproxy_text = {}
        for lb in (self.master, self.backup):
            self.haproxy_text[lb] = specs.haproxy_cfg(
                self.cfg, self.ip, run_as_service=False, pidfile=str(w / f"haproxy-{lb}.pid"), **self.haproxy_overrides
            )
        # Also runs keepalived.check_pair: a broken pair stops here, before any namespace exists.
        self.keepalived_text = specs.keepalived_confs(
            self.cfg, self.auth_pass, check_script=str(self.check_script), **self.keepalived_overrides
        )
        for lb in (self.master, self.backup):
            (w / f"haproxy-{lb}.cfg").write_text(self.haproxy_text[lb])
            (w / f"keepalived-{lb}.conf").write_text(self.keepalived_text[lb])
        self.check_script.write_text(specs.keepalived_check_script(self.cfg))
        os.chmod(self.check_script, 0o755)
        (w / "backend.py").write_text(BACKEND_SRC)
        self.api_name = f"api.{self.cfg.domain}"
        self.ingress_name = f"ingress.{self.cfg.domain}"
        self.cert, self.key = make_certificate(w, (self.api_name, self.ingress_name), (self.api_vip, self.ingress_vip))
        self.timers = Timers.parse(self.haproxy_text[self.master], self.keepalived_text[self.master])

    # ----- namespaces and links

    def ns(self, short: str) -> str:
        return f"{self.prefix}{short}"

    def _add_ns(self, short: str) -> str:
        name = self.ns(short)
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def client_ip(self) -> str:
        net = self.cfg.network_by_name[self.cfg.load_balancer.network]
        taken = {n.ip for n in self.cfg.nodes} | {self.cfg.load_balancer.api_vip, self.cfg.load_balancer.ingress_vip, net.router}
        hosts = list(net.cidr.hosts())
        # A client of the VIP network gets a DHCP lease: the first address of the range if there is one.
        pool = [ip for ip in hosts if net.in_dhcp(ip)] or hosts[::-1]
        return str(next(ip for ip in pool if ip not in taken))

    def build(self) -> None:
        cfg = self.cfg
        br = self._add_ns("br")
        sh("ip", "netns", "exec", br, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        hosts = {n.name: n for n in cfg.nodes if n.name in {self.master, self.backup, *self.servers, *self.ingress}}
        nets = {cfg.load_balancer.network} | {n.network for n in hosts.values()}
        bridge_of = {}
        for i, netname in enumerate(sorted(nets)):
            net = cfg.network_by_name[netname]
            bridge_of[netname] = f"br{i}"
            sh("ip", "-n", br, "link", "add", f"br{i}", "type", "bridge")
            sh("ip", "-n", br, "addr", "add", f"{net.router}/{net.cidr.prefixlen}", "dev", f"br{i}")
            sh("ip", "-n", br, "link", "set", f"br{i}", "up")
        self.client_addr = self.client_ip()
        members = [(name, node.network, str(node.ip)) for name, node in hosts.items()]
        members.append(("client", cfg.load_balancer.network, self.client_addr))
        for i, (name, netname, ip) in enumerate(members):
            net = cfg.network_by_name[netname]
            ns = self._add_ns(name)
            ifname = cfg.load_balancer.vrrp.interface if name in (self.master, self.backup) else "eth0"
            port = f"v{i}"  # bridge side, inside the bridge namespace: always <= 15 characters
            sh("ip", "-n", br, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", ns)
            sh("ip", "-n", br, "link", "set", port, "master", bridge_of[netname], "up")
            sh("ip", "-n", ns, "addr", "add", f"{ip}/{net.cidr.prefixlen}", "dev", ifname)
            sh("ip", "-n", ns, "link", "set", ifname, "up")
            sh("ip", "-n", ns, "route", "add", "default", "via", str(net.router))
            if name in (self.master, self.backup):
                sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_nonlocal_bind=1")

    # ----- processes

    def _spawn(self, kind: str, node: str, cmd: list[str], child_pidfiles: Iterable[Path] = ()) -> Proc:
        assert (kind, node) not in self.procs, f"{kind} on {node} already runs"
        log = self.workdir / f"{kind}-{node}.log"
        with open(log, "ab") as fh:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(node), *cmd],
                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
            )
        p = Proc(kind, self.ns(node), popen, log, tuple(child_pidfiles))
        self.procs[(kind, node)] = p
        return p

    def _stop(self, p: Proc, sig: int = signal.SIGTERM, grace: float = 5) -> None:
        """Signal one process we started, by PID; SIGKILL after ``grace``; then its children named in pid files."""
        children = []
        for f in p.child_pidfiles:
            with contextlib.suppress(OSError, ValueError):
                children.append(int(f.read_text().split()[0]))
        if p.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, sig)
            try:
                p.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
                p.popen.wait(timeout=10)
        for pid in children:  # keepalived's VRRP child, if it outlived its parent
            if _is_ours(pid, p.ns):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def start_backend(self, node: str) -> Proc:
        lb = self.cfg.load_balancer
        ports = []
        if node in self.servers:
            ports.append(f"{lb.api_port}/tls")
        if node in self.ingress:
            ports += [f"{lb.ingress_http_nodeport}/tcp", f"{lb.ingress_https_nodeport}/tls"]
        cmd = [sys.executable, "-u", str(self.workdir / "backend.py"), node, str(self.cert), str(self.key), *ports]
        p = self._spawn("backend", node, cmd)
        ok, _ = wait_for(lambda: "ready" in p.log.read_text() or not p.alive(), 10)
        if not (ok and p.alive()):
            raise RuntimeError(f"backend {node} did not start: {p.log.read_text()}")
        return p

    def stop_backend(self, node: str) -> None:
        p = self.procs.pop(("backend", node))
        self._stop(p)
        self.stopped.append(p)

    def start_haproxy(self, lb: str) -> Proc:
        p = self._spawn("haproxy", lb, [tool("haproxy"), "-db", "-f", str(self.workdir / f"haproxy-{lb}.cfg")])
        ok, _ = wait_for(lambda: self.haproxy_healthy(lb) or not p.alive(), 10)
        if not (ok and p.alive()):
            raise RuntimeError(f"haproxy on {lb} did not come up: {p.log.read_text()}")
        return p

    def kill_haproxy(self, lb: str, sig: int = signal.SIGKILL) -> None:
        p = self.procs.pop(("haproxy", lb))
        self._stop(p, sig)
        self.stopped.append(p)

    def haproxy_healthy(self, lb: str) -> bool:
        """The rendered check script, run as keepalived runs it: in the load balancer's namespace."""
        return sh("ip", "netns", "exec", self.ns(lb), str(self.check_script), check=False).returncode == 0

    def start_keepalived(self, lb: str, conf: Optional[Path] = None) -> Proc:
        """keepalived in ``lb``'s namespace, from its rendered config or from ``conf`` (another host's)."""
        w = self.workdir
        pidfiles = {k: w / f"keepalived-{lb}.{k}.pid" for k in ("main", "vrrp", "checkers", "bfd")}
        cmd = [
            tool("keepalived"), "--dont-fork", "--log-console", "--log-detail", "--no-syslog", "--vrrp",
            "-f", str(conf or w / f"keepalived-{lb}.conf"),
            "-p", str(pidfiles["main"]), "-r", str(pidfiles["vrrp"]),
            "-c", str(pidfiles["checkers"]), "-b", str(pidfiles["bfd"]),
        ]
        p = self._spawn("keepalived", lb, cmd, child_pidfiles=(pidfiles["vrrp"],))
        time.sleep(0.2)
        if not p.alive():
            raise RuntimeError(f"keepalived on {lb} exited: {p.log.read_text()}")
        return p

    def log(self, kind: str, node: str) -> str:
        return (self.workdir / f"{kind}-{node}.log").read_text(errors="replace")

    # ----- observation

    def vips_on(self, lb: str) -> set[str]:
        ifname = self.cfg.load_balancer.vrrp.interface
        out = sh("ip", "-n", self.ns(lb), "-o", "-4", "addr", "show", "dev", ifname).stdout
        have = set(re.findall(r"inet (\S+?)/", out))
        return have & {self.api_vip, self.ingress_vip}

    def holders(self) -> dict[str, set[str]]:
        return {lb: self.vips_on(lb) for lb in (self.master, self.backup)}

    def thread(self, node: str) -> NsThread:
        if node not in self._threads:
            self._threads[node] = NsThread(self.ns(node))
        return self._threads[node]

    def tls_for(self, port: int) -> Optional[Tls]:
        """The API and ingress HTTPS are TLS end to end (haproxy passes them through in TCP mode)."""
        name = {self.cfg.load_balancer.api_port: self.api_name, HTTPS_PORT: self.ingress_name}.get(port)
        return Tls(str(self.cert), name) if name else None

    def fetch(self, ip: str, port: int, timeout: float = 1.0, tls: Optional[Tls] = None) -> Optional[Answer]:
        """One connection from the client namespace (TLS on the TLS ports); None if it failed or got no answer."""
        tls = tls or self.tls_for(port)
        return self.thread("client").run(_fetch, ip, port, timeout, tls, timeout=timeout * 3 + 5)

    def server_status(self, lb: str) -> dict[tuple[str, str], str]:
        """(backend, server) -> status from the haproxy stats CSV on the LB's loopback."""
        body = self.thread(lb).run(_http_get, self.cfg.load_balancer.stats_port, "/stats;csv", 2.0)
        if body is None:
            return {}
        rows = csv.reader(body.lstrip("# ").splitlines())
        header = next(rows)
        i_px, i_sv, i_st = header.index("pxname"), header.index("svname"), header.index("status")
        return {(r[i_px], r[i_sv]): r[i_st] for r in rows if len(r) > i_st and r[i_sv] not in ("FRONTEND", "BACKEND")}

    def backend_stats(self, lb: str, backend: str = "k3s_api") -> dict[str, dict[str, str]]:
        """server name -> its row of haproxy's stats CSV (status, stot, wretr, wredis, ...), read on the LB's loopback."""
        body = self.thread(lb).run(_http_get, self.cfg.load_balancer.stats_port, "/stats;csv", 2.0)
        if body is None:
            return {}
        rows = csv.DictReader(body.lstrip("# ").splitlines())
        return {r["svname"]: r for r in rows if r["pxname"] == backend}

    # ----- lifecycle

    def __enter__(self) -> "LbNet":
        try:
            self.render()  # the program's validation runs here, before any namespace or process exists
        except BaseException:
            if self.workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
            raise
        if threading.current_thread() is threading.main_thread():
            self._old_sigterm = signal.signal(signal.SIGTERM, _raise_on_sigterm)
        try:
            self.build()
            for node in sorted({*self.servers, *self.ingress}):
                self.start_backend(node)
            for lb in (self.master, self.backup):
                self.start_haproxy(lb)
            # The higher priority first, so even with nopreempt the configured MASTER owns the VIPs.
            self.start_keepalived(self.master)
            both = {self.api_vip, self.ingress_vip}
            bound = self.timers.advert_int * 4 + 5
            ok, _ = wait_for(lambda: self.vips_on(self.master) == both, bound)
            if not ok:
                raise RuntimeError(f"{self.master} did not take the VIPs within {bound}s:\n{self.log('keepalived', self.master)}")
            self.start_keepalived(self.backup)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        errors = []
        for t in self._threads.values():
            with contextlib.suppress(Exception):
                t.close()
        self._threads.clear()
        order = {"keepalived": 0, "haproxy": 1, "backend": 2}
        for key in sorted(self.procs, key=lambda k: order[k[0]]):
            try:
                self._stop(self.procs[key])
            except Exception as err:  # keep cleaning
                errors.append(f"stop {key}: {err}")
        self.procs.clear()
        for ns in reversed(self.namespaces):
            # Anything still inside was started by us (e.g. a check script): stop it by PID.
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            res = sh("ip", "netns", "del", ns, check=False)
            if res.returncode != 0:
                errors.append(f"netns del {ns}: {res.stderr.strip()}")
        self.namespaces.clear()
        if self.workdir and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None
        left = our_namespaces(self.prefix)
        if errors or left:
            raise RuntimeError(f"lbnet cleanup incomplete: {errors} {left}")


def _is_ours(pid: int, ns: str) -> bool:
    """pid still runs keepalived inside our namespace ``ns``."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        mine = os.stat(f"/run/netns/{ns}").st_ino if os.path.exists(f"/run/netns/{ns}") else None
        theirs = os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return False
    return b"keepalived" in cmd and mine is not None and mine == theirs


def _raise_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)
