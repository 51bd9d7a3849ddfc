"""The cluster PKI for real: pulumi-tls makes the CAs under the real engine, the K3s install script places them,
and etcd + kube-apiserver started on exactly those files accept the Pulumi-built kubeconfig.

What K3s would do with the files on its first start, the test does with
openssl and the upstream binaries of .ci/k8s.sh: the API server's serving
certificate from the server CA, etcd's serving and peer certificates from the
etcd CAs (client certificates required on both), the aggregation proxy's from
the request-header CA, service-account tokens signed with service.key. Then:

- the kubeconfig of the `kubeconfig` output authenticates as the stack's
  admin in system:masters, and verifies the API server by the server CA;
- a client certificate signed by another CA is refused (401);
- the CA hash in both tokens is ``sha256sum`` of the server-ca.crt the
  script wrote (K3s' formula for a one-certificate CA file);
- the request-header CA and the service-account key work as K3s uses them;
- a new ``keeper`` issues another admin certificate, which works too.

K3s itself does not run here: that it reads these files as the
custom-CA documentation says stays unproven on this machine.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from components.render import k3s_pki
from support.cli import cli_env, plugin_versions_missing, toolchain_bin
from support.harness import ROOT
from support.k3s_node import Node, k3s_nodes
from support.k3s_pki import tls_files
from support.platform_render import CONFIGS

from .cluster import _die_with_parent, free_port, wait_for

pytestmark = pytest.mark.k8s

PROGRAM = Path(__file__).parent / "pki_program"
STACK = "pki"
ADMIN = "microcloud-pki-test-admin"


def _openssl(*args: str, input: str | None = None) -> str:
    res = subprocess.run(["openssl", *args], capture_output=True, text=True, input=input, timeout=60)
    assert res.returncode == 0, f"openssl {' '.join(args[:2])}: {res.stderr}"
    return res.stdout


class Program:
    """The CLI on a copy of tests/k8s/pki_program, on a throwaway file backend."""

    def __init__(self, base: Path):
        self.work = base / "project"
        self.work.mkdir()
        for f in ("Pulumi.yaml", "__main__.py"):
            shutil.copy2(PROGRAM / f, self.work / f)
        (self.work / "venv").symlink_to(ROOT / "venv")
        self.env = cli_env(base, toolchain_bin(), PYTHONPATH=str(ROOT))
        self.printed = ""

    def ok(self, *args: str, timeout: float = 600) -> str:
        res = subprocess.run(["pulumi", "--non-interactive", "--color=never", *args], cwd=self.work, env=self.env,
                             capture_output=True, text=True, timeout=timeout)
        if "--show-secrets" not in args:
            self.printed += res.stdout + res.stderr
        assert res.returncode == 0, f"pulumi {' '.join(args)} failed:\n{res.stdout[-4000:]}\n{res.stderr[-3000:]}"
        return res.stdout

    def outputs(self) -> dict:
        return json.loads(self.ok("stack", "output", "--json", "--show-secrets", "--stack", STACK))


class Api:
    """etcd and kube-apiserver on loopback, on the CA files in ``tls``; stopped by the PIDs started."""

    def __init__(self, bin_dir: Path, work: Path, tls: Path, port: int):
        self.bin_dir, self.work, self.tls, self.port = bin_dir, work, tls, port
        self.certs = work / "certs"
        self.certs.mkdir()
        self.procs: list[subprocess.Popen] = []

    def sign(self, name: str, ca: str, subj: str, ext: str) -> tuple[Path, Path]:
        """A new P-256 key and a certificate for it from the CA pair ``ca`` (a path under tls/ without .crt)."""
        key, csr, crt = self.certs / f"{name}.key", self.certs / f"{name}.csr", self.certs / f"{name}.crt"
        cnf = self.certs / f"{name}.cnf"
        cnf.write_text(f"[req]\ndistinguished_name = dn\n[dn]\n[ext]\nbasicConstraints = CA:FALSE\n{ext}\n")
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-subj", subj, "-config", str(cnf), "-keyout", str(key), "-out", str(csr))
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.tls / f"{ca}.crt"), "-CAkey", str(self.tls / f"{ca}.key"),
                 "-CAcreateserial", "-CAserial", str(self.certs / f"{name}.srl"), "-days", "1",
                 "-extfile", str(cnf), "-extensions", "ext", "-out", str(crt))
        return crt, key

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.work / f"{name}.log", "ab")
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.work,
                             start_new_session=True, preexec_fn=_die_with_parent)
        log.close()
        self.procs.append(p)
        return p

    def start(self) -> None:
        loop = "subjectAltName = IP:127.0.0.1"
        both = "extendedKeyUsage = serverAuth,clientAuth"
        etcd_srv = self.sign("etcd-server", "etcd/server-ca", "/CN=etcd-server", f"{both}\n{loop}")
        etcd_peer = self.sign("etcd-peer", "etcd/peer-ca", "/CN=etcd-peer", f"{both}\n{loop}")
        etcd_client = self.sign("etcd-client", "etcd/server-ca", "/CN=etcd-client", "extendedKeyUsage = clientAuth")
        serving = self.sign("apiserver", "server-ca", "/CN=kube-apiserver", f"extendedKeyUsage = serverAuth\n{loop},DNS:kubernetes")
        self.proxy = self.sign("auth-proxy", "request-header-ca", "/CN=system:auth-proxy", "extendedKeyUsage = clientAuth")
        c, peer = free_port(), free_port()
        etcd = self.spawn("etcd", [
            str(self.bin_dir / "etcd"), "--name=pki", f"--data-dir={self.work / 'etcd'}",
            f"--listen-client-urls=https://127.0.0.1:{c}", f"--advertise-client-urls=https://127.0.0.1:{c}",
            f"--listen-peer-urls=https://127.0.0.1:{peer}", f"--initial-advertise-peer-urls=https://127.0.0.1:{peer}",
            f"--initial-cluster=pki=https://127.0.0.1:{peer}", "--initial-cluster-state=new",
            f"--cert-file={etcd_srv[0]}", f"--key-file={etcd_srv[1]}",
            f"--trusted-ca-file={self.tls / 'etcd/server-ca.crt'}", "--client-cert-auth=true",
            f"--peer-cert-file={etcd_peer[0]}", f"--peer-key-file={etcd_peer[1]}",
            f"--peer-trusted-ca-file={self.tls / 'etcd/peer-ca.crt'}", "--peer-client-cert-auth=true",
            "--unsafe-no-fsync=true", "--log-level=warn",
        ])
        self.spawn("kube-apiserver", [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers=https://127.0.0.1:{c}", f"--etcd-cafile={self.tls / 'etcd/server-ca.crt'}",
            f"--etcd-certfile={etcd_client[0]}", f"--etcd-keyfile={etcd_client[1]}",
            "--bind-address=127.0.0.1", f"--secure-port={self.port}", "--advertise-address=192.0.2.1",
            f"--tls-cert-file={serving[0]}", f"--tls-private-key-file={serving[1]}",
            f"--client-ca-file={self.tls / 'client-ca.crt'}",
            f"--requestheader-client-ca-file={self.tls / 'request-header-ca.crt'}",
            "--requestheader-allowed-names=system:auth-proxy",
            "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--service-account-key-file={self.tls / 'service.key'}",
            f"--service-account-signing-key-file={self.tls / 'service.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.96.0.0/16", "--authorization-mode=RBAC", "--profiling=false", "--v=1",
        ])

        def ready():
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args[0]} exited {p.returncode}: see {self.work}")
            ctx = ssl.create_default_context(cafile=str(self.tls / "server-ca.crt"))
            # 200 for anyone only once the bootstrap RBAC policy is in (public-info-viewer).
            with urllib.request.urlopen(f"https://127.0.0.1:{self.port}/readyz", context=ctx, timeout=2) as r:
                return r.status == 200

        assert etcd.poll() is None
        wait_for(ready, 90, "kube-apiserver on the stack's CAs")

    def close(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.kill(p.pid, signal.SIGKILL)
                    p.wait(timeout=10)
        self.procs.clear()


def _client(kubeconfig: dict, work: Path) -> ssl.SSLContext:
    """An SSL context from a kubeconfig's inline data: trusts its CA only, presents its client pair."""
    cluster, user = kubeconfig["clusters"][0]["cluster"], kubeconfig["users"][0]["user"]
    ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
    ctx = ssl.create_default_context(cadata=ca)
    crt, key = work / "client.crt", work / "client.key"
    crt.write_bytes(base64.b64decode(user["client-certificate-data"]))
    key.write_bytes(base64.b64decode(user["client-key-data"]))
    key.chmod(0o600)
    ctx.load_cert_chain(str(crt), str(key))
    crt.unlink()
    key.unlink()
    return ctx


def _call(url: str, ctx: ssl.SSLContext, method: str = "GET", body: dict | None = None, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as err:
        raw = err.read()
        return err.code, json.loads(raw) if raw.startswith(b"{") else {"raw": raw.decode(errors="replace")}


REVIEW = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}


def _whoami(server: str, ctx: ssl.SSLContext, headers: dict | None = None) -> tuple[int, dict]:
    status, body = _call(f"{server}/apis/authentication.k8s.io/v1/selfsubjectreviews", ctx, "POST", REVIEW, headers)
    if status != 201:
        return status, body
    return status, body["status"]["userInfo"]


@pytest.fixture(scope="module")
def made(k8s_bin, tmp_path_factory):
    missing = [] if toolchain_bin() else ["the Pulumi toolchain (bash .ci/toolchain.sh)"]
    missing += [f"plugin {n}@{v} (bash .ci/plugins.sh)" for n, v in plugin_versions_missing(("tls", "random"))]
    if missing:
        pytest.fail("the cluster PKI test needs " + ", ".join(missing))
    base = tmp_path_factory.mktemp("pki")
    port = free_port()
    prog = Program(base)
    prog.ok("stack", "init", STACK, "--secrets-provider", "passphrase")
    prog.ok("config", "set", "server", f"https://127.0.0.1:{port}", "--stack", STACK)
    prog.ok("up", "--yes", "--skip-preview", "--stack", STACK)
    out = prog.outputs()
    # The install script of the cluster-init server, on a temporary root, with the program's join input.
    box_dir = base / "node"
    box_dir.mkdir()
    box = Node(box_dir)
    init = next(n for n in k3s_nodes(CONFIGS["prod"]) if n.cluster_init)
    res = box.run(box.spec(init), stdin=out["join_input_init"])
    assert res.returncode == 0, res.stderr
    tls = box.path(f"{init.data_dir}/server/tls")
    api = Api(k8s_bin, base, tls, port)
    try:
        api.start()
        yield {"out": out, "prog": prog, "api": api, "box": box, "node": init, "base": base, "server": f"https://127.0.0.1:{port}"}
    finally:
        api.close()
        shutil.rmtree(base / "etcd", ignore_errors=True)


def test_the_pulumi_kubeconfig_is_the_stack_admin_and_trusts_the_server_ca(made):
    kc = yaml.safe_load(made["out"]["kubeconfig"])
    assert kc["clusters"][0]["cluster"]["server"] == made["server"]
    ctx = _client(kc, made["base"])
    status, who = _whoami(made["server"], ctx)
    assert status == 201, who
    assert who["username"] == ADMIN and "system:masters" in who["groups"]
    status, body = _call(f"{made['server']}/api/v1/namespaces", ctx)
    assert status == 200 and body["kind"] == "NamespaceList"
    # The kubeconfig's CA is the one the script placed: a server of another CA would not be trusted.
    ca = base64.b64decode(kc["clusters"][0]["cluster"]["certificate-authority-data"]).decode()
    assert ca == (made["api"].tls / k3s_pki.SERVER_CA).read_text()
    assert made["out"]["kubeconfig_expires_at"].endswith("Z")


def test_a_client_certificate_of_another_ca_is_refused(made):
    other = made["base"] / "other"
    other.mkdir()
    files = tls_files("other")
    (other / "client-ca.crt").write_text(files["client-ca.crt"])
    (other / "client-ca.key").write_text(files["client-ca.key"])
    cnf = other / "c.cnf"
    cnf.write_text("[req]\ndistinguished_name = dn\n[dn]\n[ext]\nextendedKeyUsage = clientAuth\n")
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-subj", f"/O=system:masters/CN={ADMIN}", "-config", str(cnf), "-keyout", str(other / "k"), "-out", str(other / "csr"))
    _openssl("x509", "-req", "-in", str(other / "csr"), "-CA", str(other / "client-ca.crt"), "-CAkey", str(other / "client-ca.key"),
             "-CAcreateserial", "-CAserial", str(other / "srl"), "-days", "1", "-extfile", str(cnf), "-extensions", "ext", "-out", str(other / "crt"))
    kc = yaml.safe_load(made["out"]["kubeconfig"])
    kc["users"][0]["user"] = {
        "client-certificate-data": base64.b64encode((other / "crt").read_bytes()).decode(),
        "client-key-data": base64.b64encode((other / "k").read_bytes()).decode(),
    }
    status, _ = _call(f"{made['server']}/api/v1/namespaces", _client(kc, other))
    assert status == 401


def test_the_token_ca_hash_is_sha256sum_of_the_server_ca_file(made):
    ca_file = made["api"].tls / k3s_pki.SERVER_CA
    on_disk = subprocess.run(["sha256sum", str(ca_file)], capture_output=True, text=True, check=True).stdout.split()[0]
    assert made["out"]["ca_hash"] == on_disk
    node, box = made["node"], made["box"]
    assert box.path(node.token_file).read_text().startswith(f"K10{on_disk}::server:")
    agent = made["out"]["join_input_agent"].splitlines()
    assert len(agent) == 1 and agent[0].startswith(f"token K10{on_disk}::node:")
    # The servers' agent-token-file: the same password, K3s' short form.
    assert agent[0].split("::node:")[1] + "\n" == box.path(node.agent_token_file).read_text()


def test_request_header_ca_and_service_account_key_work_as_k3s_uses_them(made):
    api, server = made["api"], made["server"]
    # The aggregation proxy's certificate from request-header-ca: the API takes the user it names.
    ctx = ssl.create_default_context(cafile=str(api.tls / k3s_pki.SERVER_CA))
    ctx.load_cert_chain(str(api.proxy[0]), str(api.proxy[1]))
    status, who = _whoami(server, ctx, {"X-Remote-User": "alice", "X-Remote-Group": "team"})
    assert status == 201, who
    assert who["username"] == "alice" and "team" in who["groups"]
    # A service-account token signed with service.key authenticates.
    admin = _client(yaml.safe_load(made["out"]["kubeconfig"]), made["base"])
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "pki-test"}}
    status, body = _call(f"{server}/api/v1/namespaces/default/serviceaccounts", admin, "POST", sa)
    assert status in (201, 409), body
    req = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 600}}
    status, body = _call(f"{server}/api/v1/namespaces/default/serviceaccounts/pki-test/token", admin, "POST", req)
    assert status == 201, body
    bare = ssl.create_default_context(cafile=str(api.tls / k3s_pki.SERVER_CA))
    status, who = _whoami(server, bare, {"Authorization": f"Bearer {body['status']['token']}"})
    assert status == 201 and who["username"] == "system:serviceaccount:default:pki-test"


def test_nothing_secret_was_printed_and_a_new_keeper_issues_another_working_certificate(made):
    prog, out = made["prog"], made["out"]
    kc = yaml.safe_load(out["kubeconfig"])
    key = base64.b64decode(kc["users"][0]["user"]["client-key-data"]).decode()
    secrets = [line.split(" ")[1] for line in out["join_input_init"].splitlines() if line.startswith(("token ", "agent-token "))]
    secrets += [t.rsplit(":", 1)[-1] for t in secrets]
    body = "".join(key.splitlines()[1:-1])
    for s in [*secrets, body, out["join_input_init"][:60]]:
        assert s not in prog.printed
    before = kc["users"][0]["user"]["client-certificate-data"]
    prog.ok("config", "set", "keeper", "2", "--stack", STACK)
    prog.ok("up", "--yes", "--skip-preview", "--stack", STACK)
    after_out = prog.outputs()
    after = yaml.safe_load(after_out["kubeconfig"])
    assert after["users"][0]["user"]["client-certificate-data"] != before
    assert after_out["join_input_init"] == out["join_input_init"], "the CAs and tokens must not change with the keeper"
    status, who = _whoami(made["server"], _client(after, made["base"]))
    assert status == 201 and who["username"] == ADMIN
    subject = _openssl("x509", "-noout", "-subject", input=base64.b64decode(after["users"][0]["user"]["client-certificate-data"]).decode())
    assert "serialNumber = 2" in subject or "serialNumber=2" in subject
