"""The platform layer (components/platform.py) under the real Pulumi CLI against the test Kubernetes API.

tests/k8s/platform_program is copied into a temp dir (the passphrase provider
writes its salt into the stack file) with the checkout's venv linked and the
checkout on PYTHONPATH, so `components` is the repository's own. State is a
file backend in the same temp dir. The steps run in file order against one
stack: up, what the cluster holds, a re-preview with --expect-no-changes,
no generated secret in clear in the state, destroy. A finalizer destroys
what an earlier failure left.

Skips, naming it, when the test Kubernetes API (bash .ci/k8s.sh), the Pulumi
toolchain or a provider plugin (bash .ci/plugins.sh --with-kubernetes), or a
chart (MICROCLOUD_CHART_DIR) is missing.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from cli import cli_env, plugin_versions_missing, toolchain_bin
from components.platform import ARGOCD_PART_OF, CHART_VERSIONS, SEALING_KEY_SECRET, TRAEFIK_AUTH_SECRET, TRAEFIK_CERT_SECRET
from components.render import platform_values as pv
from harness import ROOT

from .cluster import ApiError, wait_for

pytestmark = pytest.mark.k8s

PROGRAM = Path(__file__).parent / "platform_program"
PLUGINS = ("kubernetes", "random", "tls")
STACK = "k8s"
# Not the defaults, so the test sees the inputs reach the Service.
HTTP_NODEPORT, HTTPS_NODEPORT = 31080, 31443
DOMAIN = "microcloud.test"
OUR_CRD_GROUPS = ("bitnami.com", "traefik.io", "traefik.containo.us", "argoproj.io")


def chart_root() -> Path:
    return Path(os.environ.get("MICROCLOUD_CHART_DIR") or Path.home() / ".cache" / "microcloud-charts")


def missing_inputs() -> list[str]:
    missing = []
    if toolchain_bin() is None:
        missing.append("the Pulumi toolchain (bash .ci/toolchain.sh)")
    for name, ver in plugin_versions_missing(PLUGINS):
        missing.append(f"the pulumi_{name} SDK in venv" if ver is None
                       else f"plugin {name}@{ver} (bash .ci/plugins.sh --with-kubernetes)")
    for name, ver in CHART_VERSIONS.items():
        if not (chart_root() / f"{name}-{ver}" / "Chart.yaml").is_file():
            missing.append(f"chart {name}-{ver} in {chart_root()} (MICROCLOUD_CHART_DIR)")
    return missing


class Run:
    """The CLI on a copy of the platform program; every command's output kept for failure messages."""

    def __init__(self, base: Path, kubeconfig: Path):
        self.base = base
        self.work = base / "project"
        self.work.mkdir()
        for f in ("Pulumi.yaml", "__main__.py"):
            shutil.copy2(PROGRAM / f, self.work / f)
        (self.work / "venv").symlink_to(ROOT / "venv")
        env = cli_env(base, toolchain_bin(), PYTHONPATH=str(ROOT), MICROCLOUD_CHART_DIR=str(chart_root()))
        self.env = env
        self.kubeconfig = kubeconfig
        self.transcript: list[str] = []
        self.times: dict[str, float] = {}
        self.destroyed = False

    def pulumi(self, *args: str, timeout: float = 900, step: str = "") -> subprocess.CompletedProcess:
        cmd = ["pulumi", "--non-interactive", "--color=never", *args]
        if args[0] != "stack" or args[1] in ("export", "output"):
            cmd += ["--stack", STACK]
        t0 = time.monotonic()
        res = subprocess.run(cmd, cwd=self.work, env=self.env, capture_output=True, text=True, timeout=timeout)
        if step:
            self.times[step] = round(time.monotonic() - t0, 1)
        self.transcript.append(f"$ pulumi {' '.join(args)}  [exit {res.returncode}]\n{res.stdout}\n{res.stderr}")
        return res

    def ok(self, *args: str, **kw) -> subprocess.CompletedProcess:
        res = self.pulumi(*args, **kw)
        assert res.returncode == 0, f"pulumi {' '.join(args)} failed:\n{res.stdout[-6000:]}\n{res.stderr[-4000:]}"
        return res

    def output(self, name: str, secret: bool = False):
        return json.loads(self.ok("stack", "output", name, "--json", *(["--show-secrets"] if secret else [])).stdout)

    def init(self) -> None:
        self.ok("stack", "init", STACK, "--secrets-provider", "passphrase")
        for key, value in (
            ("kubeconfig", str(self.kubeconfig)),
            ("chartDir", str(chart_root())),
            ("domain", DOMAIN),
            ("httpNodePort", str(HTTP_NODEPORT)),
            ("httpsNodePort", str(HTTPS_NODEPORT)),
        ):
            self.ok("config", "set", key, value, "--stack", STACK)


@pytest.fixture(scope="module")
def run(k8s_cluster, tmp_path_factory):
    missing = missing_inputs()
    if missing:
        pytest.skip("platform engine tier needs: " + "; ".join(missing))
    r = Run(tmp_path_factory.mktemp("platform"), k8s_cluster.kubeconfig)
    r.init()
    r.started = time.monotonic()
    yield r
    if not r.destroyed:
        r.pulumi("destroy", "--yes", "--skip-preview", step="destroy (cleanup)")
    print(f"\nplatform engine tier times (s): {r.times}")


def crd(cluster, name: str) -> dict:
    return cluster.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")


def condition(obj: dict, kind: str) -> bool:
    return any(c["type"] == kind and c["status"] == "True" for c in obj.get("status", {}).get("conditions", []))


def decoded(secret: dict, key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


def assert_bcrypt_of(password: str, digest: str) -> None:
    """A bcrypt hash (what htpasswd and Argo CD read); checked against the password where bcrypt is installed."""
    assert re.fullmatch(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}", digest), digest[:7]
    try:
        import bcrypt
    except ImportError:
        return
    assert bcrypt.checkpw(password.encode(), digest.encode())


def test_up(run):
    res = run.ok("up", "--yes", "--skip-preview", step="up")
    assert "error" not in res.stderr.lower(), res.stderr
    run.state = {"up": True}


def test_crds_established(run, k8s_cluster):
    for name in ("sealedsecrets.bitnami.com", "ingressroutes.traefik.io", "middlewares.traefik.io",
                 "tlsstores.traefik.io", "applications.argoproj.io", "applicationsets.argoproj.io"):
        obj = wait_for(lambda: (lambda o: o if condition(o, "Established") else None)(crd(k8s_cluster, name)),
                       30, f"CRD {name} Established")
        assert obj["metadata"]["name"] == name


def test_sealed_secrets_controller_and_key(run, k8s_cluster):
    ns = pv.SEALED_SECRETS_NAMESPACE
    dep = k8s_cluster.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{pv.SEALED_SECRETS_CONTROLLER}")
    wait_for(lambda: condition(k8s_cluster.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{pv.SEALED_SECRETS_CONTROLLER}"),
                               "Available"), 60, "sealed-secrets-controller Available")
    # It never makes keys of its own: the only one is the one Pulumi keeps.
    args = " ".join(dep["spec"]["template"]["spec"]["containers"][0].get("args", []))
    assert "--key-renew-period 0" in args, args

    label = "=".join(pv.SEALING_KEY_LABEL)
    keys = k8s_cluster.get(f"/api/v1/namespaces/{ns}/secrets", query={"labelSelector": label})["items"]
    assert [s["metadata"]["name"] for s in keys] == [SEALING_KEY_SECRET], "exactly one active sealing key, ours"
    secret = keys[0]
    assert secret["type"] == "kubernetes.io/tls"
    cert = run.output("sealing_certificate")
    assert cert.startswith("-----BEGIN CERTIFICATE-----")
    assert decoded(secret, "tls.crt") == cert
    key = decoded(secret, "tls.key")
    assert "PRIVATE KEY" in key
    # The certificate is the private key's: its public key matches.
    pub = subprocess.run(["openssl", "x509", "-noout", "-pubkey"], input=cert, capture_output=True, text=True, check=True)
    pub2 = subprocess.run(["openssl", "pkey", "-pubout"], input=key, capture_output=True, text=True, check=True)
    assert pub.stdout == pub2.stdout
    bits = subprocess.run(["openssl", "x509", "-noout", "-text"], input=cert, capture_output=True, text=True, check=True)
    assert "(4096 bit)" in bits.stdout


def test_traefik_nodeports_and_secrets(run, k8s_cluster):
    ns = pv.TRAEFIK_NAMESPACE
    svc = k8s_cluster.get(f"/api/v1/namespaces/{ns}/services/traefik")
    assert svc["spec"]["type"] == "NodePort"
    ports = {p["name"]: p.get("nodePort") for p in svc["spec"]["ports"]}
    assert ports == {"web": HTTP_NODEPORT, "websecure": HTTPS_NODEPORT}, ports
    wait_for(lambda: condition(k8s_cluster.get(f"/apis/apps/v1/namespaces/{ns}/deployments/traefik"), "Available"),
             60, "traefik Available")

    cert = decoded(k8s_cluster.get(f"/api/v1/namespaces/{ns}/secrets/{TRAEFIK_CERT_SECRET}"), "tls.crt")
    assert cert == run.output("default_certificate")
    text = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName"], input=cert,
                          capture_output=True, text=True, check=True).stdout
    assert f"DNS:*.{DOMAIN}" in text, text

    users = decoded(k8s_cluster.get(f"/api/v1/namespaces/{ns}/secrets/{TRAEFIK_AUTH_SECRET}"), "users")
    user, digest = users.split(":", 1)
    password = run.output("dashboard_password", secret=True)
    assert user == "admin" and digest.startswith("$2") and password not in users
    assert_bcrypt_of(password, digest)

    mw = k8s_cluster.get(f"/apis/traefik.io/v1alpha1/namespaces/{ns}/middlewares/{pv.TRAEFIK_DASHBOARD_MIDDLEWARE}")
    assert mw["spec"]["basicAuth"]["secret"] == TRAEFIK_AUTH_SECRET


def test_argocd_secrets(run, k8s_cluster):
    ns = pv.ARGOCD_NAMESPACE
    secret = k8s_cluster.get(f"/api/v1/namespaces/{ns}/secrets/{pv.ARGOCD_SECRET}")
    assert secret["metadata"]["labels"].items() >= ARGOCD_PART_OF.items()
    password = run.output("argocd_admin_password", secret=True)
    assert_bcrypt_of(password, decoded(secret, "admin.password"))
    assert decoded(secret, "admin.passwordMtime").endswith("Z")
    name, key = pv.ARGOCD_REDIS_SECRET
    assert len(decoded(k8s_cluster.get(f"/api/v1/namespaces/{ns}/secrets/{name}"), key)) >= 32
    for dep in ("argocd-server", "argocd-repo-server", "argocd-redis"):
        wait_for(lambda: condition(k8s_cluster.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{dep}"), "Available"),
                 60, f"{dep} Available")


def test_repreview_no_changes(run):
    run.ok("preview", "--expect-no-changes", "--diff", step="re-preview")


def test_no_secret_in_clear(run, k8s_cluster):
    state = run.ok("stack", "export").stdout
    sealing_key = decoded(k8s_cluster.get(
        f"/api/v1/namespaces/{pv.SEALED_SECRETS_NAMESPACE}/secrets/{SEALING_KEY_SECRET}"), "tls.key")
    body = "".join(line for line in sealing_key.splitlines() if "-----" not in line)
    secrets = {
        # From the middle: the start of an RSA key's body is its modulus, public and in the certificate.
        "sealing private key": body[len(body) // 2:len(body) // 2 + 64],
        "dashboard password": run.output("dashboard_password", secret=True),
        "dashboard htpasswd hash": decoded(k8s_cluster.get(
            f"/api/v1/namespaces/{pv.TRAEFIK_NAMESPACE}/secrets/{TRAEFIK_AUTH_SECRET}"), "users").split(":", 1)[1],
        "argocd admin password": run.output("argocd_admin_password", secret=True),
        "argocd redis password": decoded(k8s_cluster.get(
            f"/api/v1/namespaces/{pv.ARGOCD_NAMESPACE}/secrets/{pv.ARGOCD_REDIS_SECRET[0]}"), pv.ARGOCD_REDIS_SECRET[1]),
    }
    assert all(len(v) >= 24 for v in secrets.values()), "each probe is long enough to mean something"
    in_state = [name for name, v in secrets.items() if v in state]
    assert not in_state, f"in clear in `pulumi stack export`: {in_state}"
    # What the CLI printed, but for the test's own `stack output --show-secrets`.
    logs = "\n".join(t for t in run.transcript if "--show-secrets" not in t.splitlines()[0])
    in_logs = [name for name, v in secrets.items() if v in logs]
    assert not in_logs, f"in clear in the CLI's output: {in_logs}"


def test_destroy_leaves_nothing(run, k8s_cluster):
    run.ok("destroy", "--yes", "--skip-preview", step="destroy")
    run.destroyed = True
    gone = []
    for path in (
        f"/api/v1/namespaces/kube-system/secrets/{SEALING_KEY_SECRET}",
        f"/api/v1/namespaces/kube-system/secrets/{TRAEFIK_CERT_SECRET}",
        f"/api/v1/namespaces/kube-system/secrets/{TRAEFIK_AUTH_SECRET}",
        f"/apis/apps/v1/namespaces/kube-system/deployments/{pv.SEALED_SECRETS_CONTROLLER}",
        "/apis/apps/v1/namespaces/kube-system/deployments/traefik",
        "/api/v1/namespaces/kube-system/services/traefik",
        f"/api/v1/namespaces/{pv.ARGOCD_NAMESPACE}",
    ):
        try:
            k8s_cluster.get(path)
        except ApiError as err:
            assert err.status == 404, err
            continue
        gone.append(path)
    assert not gone, f"still there after destroy: {gone}"
    left = kube_system_leftovers(k8s_cluster)
    assert not left, f"objects of ours still in kube-system after destroy: {left}"
    crds = [c["metadata"]["name"] for c in k8s_cluster.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")["items"]
            if c["spec"]["group"].endswith(OUR_CRD_GROUPS)]
    print(f"\nCRDs left after destroy: {crds or 'none'}")
    assert not crds, f"CRDs left after destroy (keep_crds is off in this program): {crds}"
    run.times["total"] = round(time.monotonic() - run.started, 1)


def kube_system_leftovers(cluster) -> list[str]:
    """Secrets, Deployments, Services and ServiceAccounts in kube-system that our releases or Secrets made."""
    left = []
    for path, kind in (("/api/v1/namespaces/kube-system/secrets", "Secret"),
                       ("/apis/apps/v1/namespaces/kube-system/deployments", "Deployment"),
                       ("/api/v1/namespaces/kube-system/services", "Service"),
                       ("/api/v1/namespaces/kube-system/serviceaccounts", "ServiceAccount")):
        for item in cluster.get(path)["items"]:
            meta = item["metadata"]
            name = meta["name"]
            labels = meta.get("labels") or {}
            ours = (labels.get("app.kubernetes.io/managed-by") == "Helm"
                    or labels.get("app.kubernetes.io/instance") in ("traefik", "sealed-secrets")
                    or name.startswith(("traefik", "sealed-secrets")))
            if ours:
                left.append(f"{kind} {name}")
    return left
