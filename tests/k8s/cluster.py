"""A real Kubernetes API on loopback for the tests: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok with fake nodes.

The binaries come from .ci/k8s.sh (built from Go modules, cached); this module
only starts them. Everything listens on 127.0.0.1 at ports picked free at
start, keeps its state, certificates and logs in one work directory, and is
stopped by the PID we started it with, also when starting fails half-way.

The nodes are kwok's: Node objects that kwok keeps Ready and whose pods it
marks Running without running anything. Their addresses are in TEST-NET-1
(192.0.2.0/24, RFC 5737): never routed and never bound, only reported in
status (Endpoints of host-network pods reject loopback addresses).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S_SCRIPT = ROOT / ".ci" / "k8s.sh"


def pin(name: str) -> str:
    """A version pinned in .ci/pins.sh (NAME=value), the one k8s.sh built."""
    for line in (ROOT / ".ci" / "pins.sh").read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1].split("#", 1)[0].strip()
    raise KeyError(f"{name} is not pinned in .ci/pins.sh")


KWOK_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
NODE_IPS = {"kwok-node-1": "192.0.2.11", "kwok-node-2": "192.0.2.12", "kwok-node-3": "192.0.2.13"}
FALLBACK_NODE_IP = "192.0.2.10"
# The apiserver advertises this for the `kubernetes` Service: Endpoints reject
# loopback. Nothing connects to it.
ADVERTISE_IP = "192.0.2.1"
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.1/16"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"


def cached_bin_dir() -> tuple[Optional[Path], str]:
    """(bin dir, "") when .ci/k8s.sh has built everything, else (None, what it says is missing)."""
    res = subprocess.run(
        ["bash", str(K8S_SCRIPT), "--cached-only"], capture_output=True, text=True, timeout=120, check=False
    )
    if res.returncode == 0 and res.stdout.strip():
        return Path(res.stdout.strip().splitlines()[-1]), ""
    return None, (res.stderr.strip() or f"{K8S_SCRIPT} --cached-only exited {res.returncode}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    # Runs in the child before exec: if pytest is killed outright, the kernel
    # kills what it started instead of leaving an API server behind.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def wait_for(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """pred()'s first truthy value; TimeoutError naming ``what`` (and pred's last error) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except _Exited:
            raise
        except Exception as err:  # the server may not answer yet
            last = err
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s" + (f" (last error: {last})" if last else ""))
        time.sleep(interval)


class _Exited(Exception):
    """A component we wait for has exited: waiting longer cannot help."""


class ApiError(Exception):
    def __init__(self, status: int, body: Any):
        self.status = status
        self.body = body
        msg = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"HTTP {status}: {msg}")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@dataclass
class Cluster:
    """Start with ``with Cluster(bin_dir) as c:``; ``c.kubeconfig`` is an admin kubeconfig."""

    bin_dir: Path
    workdir: Optional[Path] = None
    keep_workdir: bool = False
    nodes: tuple[str, ...] = tuple(NODE_IPS)
    # More kube-apiserver flags (e.g. the ones K3s derives from a node's config.yaml).
    apiserver_args: tuple[str, ...] = ()
    # False: etcd and kube-apiserver only (no controllers, no kwok nodes).
    with_controllers: bool = True
    procs: list[Proc] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    started_in: float = 0.0

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> "Cluster":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        t0 = time.monotonic()
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="microcloud-k8s-"))
        self.pki = self.workdir / "pki"
        self.logs = self.workdir / "logs"
        self.pki.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        for name in ("etcd-client", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok"):
            self.ports[name] = free_port()
        self._make_pki()
        self._start_etcd()
        self._start_apiserver()
        self._write_kubeconfig()
        if self.with_controllers:
            self._start_controllers()
            self._add_nodes()
        self.started_in = time.monotonic() - t0

    def close(self) -> None:
        """Stop everything we started, newest first, by its PID: SIGTERM, then SIGKILL after 10 s."""
        errors = []
        for p in reversed(self.procs):
            if p.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.popen.pid, signal.SIGTERM)
                try:
                    p.popen.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p.popen.pid, signal.SIGKILL)
                    try:
                        p.popen.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        errors.append(f"{p.name} (pid {p.popen.pid}) survived SIGKILL")
        self.procs.clear()
        if self.workdir and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        elif self.workdir:
            # Logs and certificates stay for a look after a failure; etcd's
            # preallocated WAL (64 MB a file) does not.
            shutil.rmtree(self.workdir / "etcd", ignore_errors=True)
        if errors:
            raise RuntimeError("k8s cluster cleanup incomplete: " + "; ".join(errors))

    # ------------------------------------------------------------ pieces

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    def bin(self, name: str) -> str:
        return str(self.bin_dir / name)

    def _openssl(self, *args: str) -> None:
        res = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(args[:2])}: {res.stderr.strip()}")

    def _make_pki(self) -> None:
        """A CA, the API server's serving cert, an admin client cert (system:masters), the service-account key,
        and a front-proxy CA + client cert so that the aggregation layer (APIService objects) is configured."""
        d = self.pki
        cnf = d / "openssl.cnf"
        cnf.write_text(
            "[req]\ndistinguished_name = dn\n[dn]\n"
            "[ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign,digitalSignature\n"
            "subjectKeyIdentifier = hash\n"
            "[server]\nbasicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage = serverAuth\n"
            "subjectAltName = DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,"
            f"DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1,IP:{ADVERTISE_IP}\n"
            "[client]\nbasicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage = clientAuth\n"
        )
        ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
        for ca in ("ca", "front-proxy-ca"):
            self._openssl("req", "-x509", *ec, "-days", "2", "-subj", f"/CN=microcloud-test-{ca}",
                          "-config", str(cnf), "-extensions", "ca",
                          "-keyout", str(d / f"{ca}.key"), "-out", str(d / f"{ca}.crt"))
        for name, subj, ext, ca in (
            ("apiserver", "/CN=kube-apiserver", "server", "ca"),
            ("admin", "/O=system:masters/CN=microcloud-test-admin", "client", "ca"),
            ("front-proxy-client", "/CN=front-proxy-client", "client", "front-proxy-ca"),
        ):
            self._openssl("req", "-new", *ec, "-subj", subj, "-config", str(cnf),
                          "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"))
            self._openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / f"{ca}.crt"),
                          "-CAkey", str(d / f"{ca}.key"), "-CAcreateserial", "-days", "2",
                          "-extfile", str(cnf), "-extensions", ext, "-out", str(d / f"{name}.crt"))
        self._openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(d / "sa.key"))
        self._openssl("pkey", "-in", str(d / "sa.key"), "-pubout", "-out", str(d / "sa.pub"))
        for key in d.glob("*.key"):
            key.chmod(0o600)

    def _spawn(self, name: str, args: list[str], env: Optional[dict] = None) -> Proc:
        log = self.logs / f"{name}.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir,
                env={**os.environ, "HOME": str(self.workdir), **(env or {})},
                start_new_session=True, preexec_fn=_die_with_parent,
            )
        p = Proc(name, popen, log)
        self.procs.append(p)
        return p

    def _wait_alive(self, p: Proc, pred: Callable[[], Any], timeout: float, what: str) -> Any:
        def check():
            if not p.alive():
                raise _Exited(f"{p.name} exited with {p.popen.returncode}; last lines of {p.log}:\n{p.tail()}")
            return pred()

        try:
            return wait_for(check, timeout, what)
        except _Exited as err:
            raise RuntimeError(str(err)) from None
        except TimeoutError as err:
            raise TimeoutError(f"{err}; last lines of {p.log}:\n{p.tail()}") from None

    def _start_etcd(self) -> None:
        c, peer = self.ports["etcd-client"], self.ports["etcd-peer"]
        p = self._spawn("etcd", [
            self.bin("etcd"), "--name=test", f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{c}", f"--advertise-client-urls=http://127.0.0.1:{c}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}", f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=test=http://127.0.0.1:{peer}", "--initial-cluster-state=new",
            # Throw-away data: no fsync keeps a loaded CI machine fast.
            "--unsafe-no-fsync=true", "--log-level=warn",
        ])

        def healthy():
            with urllib.request.urlopen(f"http://127.0.0.1:{c}/health", timeout=2) as r:
                return json.load(r).get("health") == "true"

        self._wait_alive(p, healthy, 30, "etcd /health")

    def _start_apiserver(self) -> None:
        d = self.pki
        p = self._spawn("kube-apiserver", [
            self.bin("kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{self.ports['etcd-client']}",
            "--bind-address=127.0.0.1", f"--secure-port={self.ports['apiserver']}",
            f"--advertise-address={ADVERTISE_IP}",
            f"--tls-cert-file={d / 'apiserver.crt'}", f"--tls-private-key-file={d / 'apiserver.key'}",
            f"--client-ca-file={d / 'ca.crt'}",
            f"--requestheader-client-ca-file={d / 'front-proxy-ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={d / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={d / 'front-proxy-client.key'}",
            f"--service-account-key-file={d / 'sa.pub'}", f"--service-account-signing-key-file={d / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC", "--allow-privileged=true",
            "--profiling=false", "--v=1",
            *self.apiserver_args,
        ])
        self._wait_alive(p, lambda: self.raw("GET", "/readyz", timeout=2)[0] == 200, 60, "kube-apiserver /readyz")

    def _write_kubeconfig(self) -> None:
        d = self.pki
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "microcloud-test",
            "clusters": [{"name": "microcloud-test", "cluster": {
                "server": self.server, "certificate-authority": str(d / "ca.crt")}}],
            "users": [{"name": "admin", "user": {
                "client-certificate": str(d / "admin.crt"), "client-key": str(d / "admin.key")}}],
            "contexts": [{"name": "microcloud-test", "context": {"cluster": "microcloud-test", "user": "admin"}}],
        }))
        self.kubeconfig.chmod(0o600)

    def _start_controllers(self) -> None:
        kc, d = str(self.kubeconfig), self.pki
        auth = [f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1", "--leader-elect=false"]
        self._spawn("kube-controller-manager", [
            self.bin("kube-controller-manager"), *auth, f"--secure-port={self.ports['controller-manager']}",
            # No kubelets and no cloud: the node IPAM and lifecycle controllers would only fight kwok.
            "--controllers=*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle",
            f"--service-account-private-key-file={d / 'sa.key'}", f"--root-ca-file={d / 'ca.crt'}",
            f"--cluster-signing-cert-file={d / 'ca.crt'}", f"--cluster-signing-key-file={d / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--v=1",
        ])
        self._spawn("kube-scheduler", [
            self.bin("kube-scheduler"), *auth, f"--secure-port={self.ports['scheduler']}", "--v=1",
        ])
        self._spawn("kwok", [
            self.bin("kwok"), f"--kubeconfig={kc}",
            "--manage-all-nodes=false", "--manage-nodes-with-annotation-selector=" + "=".join(KWOK_ANNOTATION),
            f"--node-ip={FALLBACK_NODE_IP}", f"--cidr={POD_CIDR}",
            # Its kubelet-like server: the port goes into node status; without
            # --server-address kwok would listen on every address.
            f"--node-port={self.ports['kwok']}", f"--server-address=127.0.0.1:{self.ports['kwok']}",
        ])

    def _add_nodes(self) -> None:
        for name in self.nodes:
            self.create("/api/v1/nodes", {
                "apiVersion": "v1", "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {KWOK_ANNOTATION[0]: KWOK_ANNOTATION[1], "node.alpha.kubernetes.io/ttl": "0"},
                    "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                               "kubernetes.io/arch": "amd64", "type": "kwok"},
                },
                "status": {
                    "addresses": [{"type": "InternalIP", "address": NODE_IPS.get(name, FALLBACK_NODE_IP)},
                                  {"type": "Hostname", "address": name}],
                    "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                    "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                },
            })
        # The API server's TaintNodesByCondition admission taints every new node
        # not-ready; with the node lifecycle controller off nothing lifts it, so
        # no pod would schedule. kwok reports the node Ready; we lift the taint.
        for name in self.nodes:
            node = self.get(f"/api/v1/nodes/{name}")
            taints = [t for t in node.get("spec", {}).get("taints", []) if t["key"] != NOT_READY_TAINT]
            self.patch(f"/api/v1/nodes/{name}", {"spec": {"taints": taints or None}})
        kwok = next(p for p in self.procs if p.name == "kwok")
        self._wait_alive(kwok, lambda: all(self.node_ready(n) for n in self.nodes), 60, "kwok nodes Ready")

    def node_ready(self, name: str) -> bool:
        node = self.get(f"/api/v1/nodes/{name}")
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in node.get("status", {}).get("conditions", []))
        untainted = not any(t["key"] == NOT_READY_TAINT for t in node.get("spec", {}).get("taints", []) or [])
        return ready and untainted

    # ------------------------------------------------------------ REST

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def raw(self, method: str, path: str, body: Any = None, *, query: Optional[dict] = None,
            content_type: str = "application/json", timeout: float = 30) -> tuple[int, Any]:
        """(status, decoded body) of one request as the admin; never raises on an HTTP error status."""
        url = self.server + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": content_type, "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self._ssl(), timeout=timeout) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def request(self, method: str, path: str, body: Any = None, **kw) -> Any:
        status, out = self.raw(method, path, body, **kw)
        if status >= 400:
            raise ApiError(status, out)
        return out

    def get(self, path: str, **kw) -> Any:
        return self.request("GET", path, **kw)

    def create(self, path: str, obj: dict, **kw) -> Any:
        return self.request("POST", path, obj, **kw)

    def patch(self, path: str, patch: dict, **kw) -> Any:
        return self.request("PATCH", path, patch, content_type="application/merge-patch+json", **kw)

    def delete(self, path: str, **kw) -> Any:
        return self.request("DELETE", path, **kw)

    def log_tails(self, n: int = 15) -> str:
        """The last lines of every component's log, for a failure message."""
        return "\n".join(f"--- {p.name} ({p.log})\n{p.tail(n)}" for p in self.procs)
