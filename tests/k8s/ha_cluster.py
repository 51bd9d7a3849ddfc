"""The HA API path for real: three kube-apiservers on one etcd behind the project's own load-balancer pair.

``HaApiNet`` is ``lbnet.LbNet`` (haproxy.cfg and keepalived.conf rendered by
the program's own code from a stack model, run in network namespaces) whose
K3s server backends are real kube-apiservers instead of lbnet's small TLS
listeners:

* one etcd in lbnet's bridge namespace (the part a libvirt host plays),
  listening on the router address of the servers' network, which every server
  namespace reaches directly; nothing listens outside our namespaces;
* one kube-apiserver in each server namespace, on the configured API port,
  advertising the node's address, with the flags K3s gives its embedded
  apiserver that matter here (client-certificate auth, anonymous auth off,
  Node+RBAC) and one shared service-account key;
* a CA of its own (openssl, in the harness' work directory): per server a
  serving certificate whose subject CN is the node's name and whose SANs carry
  the API VIP, its DNS name and the node's address (as K3s' ``tls-san`` and
  ``node-ip`` give them), and an admin client certificate (system:masters).
  A client verifies the certificate through the VIP and reads its CN, so
  every answer names the apiserver that gave it.

The ingress nodes keep lbnet's listeners. Every process is started by the
harness and stopped by its PID (apiservers and etcd first, then what lbnet
started); every namespace is deleted on exit.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import signal
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from support.lbnet import CLONE_NEWNET, LbNet, Proc, _http_get, tool, wait_for

from .cluster import _die_with_parent

ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
# K3s' default service network; the apiserver serves the `kubernetes` Service on its first address.
SERVICE_CIDR = "10.43.0.0/16"
SERVICE_IP = "10.43.0.1"
API_BACKEND = "k3s_api"  # the haproxy backend name (components/render/haproxy.py)


def enter_netns(ns: str) -> None:
    """Move the calling thread into network namespace ``ns`` (its sockets are then created there)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({ns}): {os.strerror(err)}")
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Result:
    """One API request: when it started and ended (monotonic), how it ended, and which apiserver answered."""

    worker: str
    what: str
    t0: float
    t1: float
    status: Optional[int]
    served_by: Optional[str]
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300


def api_request(host: str, port: int, ctx: ssl.SSLContext, method: str, path: str, body: Optional[dict],
                timeout: float) -> tuple[Optional[int], Optional[str], object, Optional[str]]:
    """One request on a connection of its own: (status, CN of the serving certificate, decoded body, error)."""
    served_by = None
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=timeout)
    try:
        conn.connect()  # the verified handshake: CA, and the VIP address as the host name
        subject = dict(x[0] for x in conn.sock.getpeercert()["subject"])
        served_by = subject.get("commonName")
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={
            "Accept": "application/json", "Content-Type": "application/json", "Connection": "close"})
        resp = conn.getresponse()
        raw = resp.read()
        try:
            out = json.loads(raw) if raw else None
        except ValueError:
            out = raw.decode(errors="replace")
        return resp.status, served_by, out, None
    except (OSError, http.client.HTTPException) as err:  # includes ssl errors and resets
        return None, served_by, None, f"{type(err).__name__}: {err}"
    finally:
        conn.close()


class ApiStream:
    """Client workers in a namespace sending authenticated requests to ``host:port`` until ``stop()``.

    Every request opens its own TLS connection (as every kubectl call does), so
    each one goes through haproxy's balancing afresh. Workers:

    * ``read``: GET /api/v1/namespaces/default;
    * ``write``: POST a ConfigMap, then GET it back on a new connection (usually
      served by another apiserver) and compare its data: read-after-write
      across apiservers through the one etcd.
    """

    def __init__(self, ns: str, host: str, port: int, ctx: ssl.SSLContext, cm_namespace: str,
                 workers: tuple[str, ...] = ("read", "write"), pace: float = 0.03, timeout: float = 15.0):
        self.ns, self.host, self.port, self.ctx = ns, host, port, ctx
        self.cm_namespace, self.pace, self.timeout = cm_namespace, pace, timeout
        self.results: list[Result] = []
        self.created: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.workers = workers
        self._current: dict[str, float] = {}  # worker -> when its current (or last) request started
        self._threads = [threading.Thread(target=self._run, args=(w,), name=f"api-{w}", daemon=True) for w in workers]
        self._errors: list[BaseException] = []

    def start(self) -> "ApiStream":
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> list[Result]:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout * 2 + 5)
        if any(t.is_alive() for t in self._threads):
            raise RuntimeError("an API client worker did not stop")
        if self._errors:
            raise RuntimeError(f"an API client worker crashed: {self._errors[0]!r}") from self._errors[0]
        return self.results

    def wait_all_started_after(self, t: float, bound: float) -> bool:
        """Wait until every worker has begun a request at or after ``t`` (none still sits in an older one)."""
        ok, _ = wait_for(lambda: all(self._current.get(w, -1.0) >= t for w in self.workers), bound, 0.02)
        return bool(ok)

    def done_since(self, t: float) -> int:
        """How many requests that started at or after ``t`` have ended (either way)."""
        with self._lock:
            return sum(1 for r in self.results if r.t0 >= t)

    def wait_done(self, since: float, count: int, at_least: float, bound: float) -> bool:
        """Keep the stream running for ``at_least`` seconds and until ``count`` requests started after ``since``
        have ended (a worker may sit in a slow request); False if that takes more than ``bound`` seconds."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < bound:
            if time.monotonic() - t0 >= at_least and self.done_since(since) >= count:
                return True
            time.sleep(0.05)
        return False

    def _record(self, r: Result) -> Result:
        with self._lock:
            self.results.append(r)
        return r

    def _one(self, worker: str, what: str, method: str, path: str, body: Optional[dict] = None):
        t0 = self._current[worker] = time.monotonic()
        status, by, out, err = api_request(self.host, self.port, self.ctx, method, path, body, self.timeout)
        return self._record(Result(worker, what, t0, time.monotonic(), status, by, err)), out

    def _run(self, worker: str) -> None:
        try:
            enter_netns(self.ns)
            i = 0
            while not self._stop.is_set():
                i += 1
                if worker == "read":
                    self._one(worker, "get-namespace", "GET", "/api/v1/namespaces/default")
                else:
                    name = f"cm-{worker}-{i}"
                    base = f"/api/v1/namespaces/{self.cm_namespace}/configmaps"
                    r, _ = self._one(worker, "create-configmap", "POST", base, {
                        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"i": str(i)}})
                    if r.ok:
                        with self._lock:
                            self.created.append(name)
                        r2, got = self._one(worker, "get-configmap", "GET", f"{base}/{name}")
                        if r2.ok and not (isinstance(got, dict) and got.get("data") == {"i": str(i)}):
                            with self._lock:  # answered, but not what was written: a failed request too
                                self.results[self.results.index(r2)] = Result(
                                    r2.worker, r2.what, r2.t0, r2.t1, r2.status, r2.served_by, f"read back {got!r}")
                self._stop.wait(self.pace)
        except BaseException as err:  # surfaced by stop()
            self._errors.append(err)


@dataclass
class HaApiNet(LbNet):
    """``with HaApiNet(model, bin_dir=...) as n:`` - see the module docstring."""

    bin_dir: Optional[Path] = None
    # Test-only hook: rewrite the rendered haproxy.cfg text (e.g. to try a proposed fix); None runs it as rendered.
    haproxy_edit: Optional[Callable[[str], str]] = None
    apiserver_args: tuple[str, ...] = ()
    _starting: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bin_dir is None:
            raise ValueError("HaApiNet needs bin_dir (the directory of .ci/k8s.sh's binaries)")
        server_net = {n.network for n in self.cfg.servers}
        if len(server_net) != 1:
            raise ValueError(f"the K3s servers span networks {sorted(server_net)}: one etcd address would not do")
        self.etcd_ip = str(self.cfg.network_by_name[server_net.pop()].router)
        self.etcd_url = f"http://{self.etcd_ip}:{ETCD_CLIENT_PORT}"
        self.api_port = self.cfg.load_balancer.api_port

    # ----- rendering: lbnet's (the program's configs), plus a PKI

    def render(self) -> None:
        super().render()
        if self.haproxy_edit is not None:
            for lb in (self.master, self.backup):
                self.haproxy_text[lb] = self.haproxy_edit(self.haproxy_text[lb])
                (self.workdir / f"haproxy-{lb}.cfg").write_text(self.haproxy_text[lb])
        self.pki = self.workdir / "pki"
        self.pki.mkdir()
        self._make_pki()

    def _openssl(self, *args: str) -> None:
        res = subprocess.run([tool("openssl"), *args], capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(args[:2])}: {res.stderr.strip()}")

    def _make_pki(self) -> None:
        d = self.pki
        dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
               "kubernetes.default.svc.cluster.local", self.api_name]
        sections = [
            "[req]\ndistinguished_name = dn\n[dn]\n",
            "[ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign,digitalSignature\n",
            "[client]\nbasicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage = clientAuth\n",
        ]
        for s in self.servers:
            san = ",".join([*(f"DNS:{n}" for n in dns), f"IP:{self.api_vip}", f"IP:{self.ip[s]}",
                            "IP:127.0.0.1", f"IP:{SERVICE_IP}"])
            sections.append(f"[serve_{s}]\nbasicConstraints = CA:FALSE\n"
                            "keyUsage = critical,digitalSignature,keyEncipherment\n"
                            f"extendedKeyUsage = serverAuth\nsubjectAltName = {san}\n")
        cnf = d / "openssl.cnf"
        cnf.write_text("".join(sections))
        ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
        self._openssl("req", "-x509", *ec, "-days", "1", "-subj", "/CN=microcloud-ha-api-test-ca", "-config", str(cnf),
                      "-extensions", "ca", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))
        leaves = [(s, f"/O=microcloud-test/CN={s}", f"serve_{s}") for s in self.servers]
        leaves.append(("admin", "/O=system:masters/CN=microcloud-ha-api-admin", "client"))
        for name, subj, ext in leaves:
            self._openssl("req", "-new", *ec, "-subj", subj, "-config", str(cnf),
                          "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"))
            self._openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.crt"),
                          "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "1",
                          "-extfile", str(cnf), "-extensions", ext, "-out", str(d / f"{name}.crt"))
        self._openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(d / "sa.key"))
        self._openssl("pkey", "-in", str(d / "sa.key"), "-pubout", "-out", str(d / "sa.pub"))
        for key in d.glob("*.key"):
            key.chmod(0o600)

    def client_context(self) -> ssl.SSLContext:
        """The admin's TLS context: verifies the apiserver against our CA, presents the admin certificate."""
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    # ----- processes

    def _spawn(self, kind: str, node: str, cmd: list[str], child_pidfiles=()) -> Proc:
        if kind not in ("etcd", "apiserver"):
            return super()._spawn(kind, node, cmd, child_pidfiles)
        assert (kind, node) not in self.procs, f"{kind} on {node} already runs"
        log = self.workdir / f"{kind}-{node}.log"
        with open(log, "ab") as fh:
            # `ip netns exec` execs the binary: the PID is the daemon's own. It dies with us if pytest is killed.
            popen = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(node), *cmd], stdin=subprocess.DEVNULL, stdout=fh,
                stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True, preexec_fn=_die_with_parent,
                env={**os.environ, "HOME": str(self.workdir)},
            )
        p = Proc(kind, self.ns(node), popen, log)
        self.procs[(kind, node)] = p
        return p

    def build(self) -> None:
        super().build()
        self.start_etcd()

    def start_etcd(self) -> Proc:
        peer = f"http://127.0.0.1:{ETCD_PEER_PORT}"
        p = self._spawn("etcd", "br", [
            str(self.bin_dir / "etcd"), "--name=ha-api", f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={self.etcd_url},http://127.0.0.1:{ETCD_CLIENT_PORT}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=ha-api={peer}", "--initial-cluster-state=new",
            "--unsafe-no-fsync=true", "--log-level=warn",  # throw-away data
        ])

        def healthy():
            body = self.thread("br").run(_http_get, ETCD_CLIENT_PORT, "/health", 2.0)
            return not p.alive() or (body is not None and json.loads(body).get("health") == "true")

        ok, _ = wait_for(healthy, 30, 0.1)
        if not (ok and p.alive()):
            raise RuntimeError(f"etcd did not become healthy:\n{self.log('etcd', 'br')[-3000:]}")
        return p

    def apiserver_cmd(self, node: str) -> list[str]:
        d = self.pki
        return [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=0.0.0.0", f"--secure-port={self.api_port}", f"--advertise-address={self.ip[node]}",
            f"--tls-cert-file={d / f'{node}.crt'}", f"--tls-private-key-file={d / f'{node}.key'}",
            f"--client-ca-file={d / 'ca.crt'}", "--anonymous-auth=false",  # as K3s runs it
            f"--service-account-key-file={d / 'sa.pub'}", f"--service-account-signing-key-file={d / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
            "--profiling=false", "--v=1",
            *self.apiserver_args,
        ]

    def start_backend(self, node: str) -> Proc:
        """lbnet's listener on ingress nodes; a kube-apiserver on K3s servers, waited for until /readyz answers.

        At start-up the first server bootstraps alone (as K3s' cluster-init server does: apiservers starting on
        an empty etcd at the same instant race to initialise the service IP allocator, and one exits), then the
        others start side by side and ``__enter__`` waits for them.
        """
        if node not in self.servers:
            return super().start_backend(node)
        first = not any(kind == "apiserver" for kind, _ in self.procs)
        p = self._spawn("apiserver", node, self.apiserver_cmd(node))
        if not self._starting or first:
            self.wait_apiserver_ready(node)
        return p

    def stop_apiserver(self, node: str, sig: int = signal.SIGTERM) -> Proc:
        """Signal one apiserver by its PID and wait for it to exit (SIGKILL after 20 s)."""
        p = self.procs.pop(("apiserver", node))
        self._stop(p, sig, grace=20)
        self.stopped.append(p)
        return p

    def apiserver(self, node: str) -> Proc:
        return self.procs[("apiserver", node)]

    def readyz(self, node: str) -> Optional[int]:
        """/readyz of one apiserver, asked inside its own namespace with the admin certificate."""
        ctx = self.client_context()
        status, _, _, _ = self.thread(node).run(
            api_request, "127.0.0.1", self.api_port, ctx, "GET", "/readyz", None, 2.0, timeout=10)
        return status

    def wait_apiserver_ready(self, node: str, bound: float = 90) -> float:
        p = self.apiserver(node)
        ok, waited = wait_for(lambda: not p.alive() or self.readyz(node) == 200, bound, 0.2)
        if not (ok and p.alive()):
            raise RuntimeError(f"kube-apiserver on {node} not ready within {bound}s:\n{self.log('apiserver', node)[-4000:]}")
        return waited

    # ----- lifecycle

    def __enter__(self) -> "HaApiNet":
        self._starting = True  # apiservers start side by side; waited for below
        try:
            super().__enter__()
        finally:
            self._starting = False
        try:
            for s in self.servers:
                self.wait_apiserver_ready(s)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Apiservers (SIGTERM together, then each by PID), then etcd, then lbnet's own teardown."""
        errors = []
        try:
            api = [self.procs.pop(k) for k in list(self.procs) if k[0] == "apiserver"]
            for p in api:
                if p.alive():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p.pid, signal.SIGTERM)
            for p in api:
                try:
                    self._stop(p, signal.SIGTERM, grace=20)
                except Exception as err:
                    errors.append(f"stop {p.what}: {err}")
            etcd = self.procs.pop(("etcd", "br"), None)
            if etcd is not None:
                try:
                    self._stop(etcd, signal.SIGTERM, grace=10)
                except Exception as err:
                    errors.append(f"stop etcd: {err}")
        finally:
            super().close()
        if errors:
            raise RuntimeError(f"ha api cleanup incomplete: {errors}")

