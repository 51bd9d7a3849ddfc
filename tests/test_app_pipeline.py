"""The app pipeline template (examples/app-pipeline/build.yml): linted, least privilege, and its scripts run for real.

- actionlint (built by .ci/actionlint.sh) with shellcheck on every ``run:``;
- every action pinned by commit, the token's rights per job, nothing expanded inside a script;
- the image step's tag (``sha-<7>``, the tags Image Updater follows) and the two platforms;
- the sync step under bash as the runner runs it (``-eo pipefail``) against a stand-in Argo CD API on
  loopback over HTTPS with its own CA: a sync is requested with the bearer token; a refusal, an API
  that hangs, one that is not there, and missing settings all end the job green with one warning, and
  the token is never printed.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
import ssl

import pytest
import yaml

from test_workflow import actionlint, lint, shellcheck  # noqa: F401 (fixtures)

pytestmark = pytest.mark.validators

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "examples" / "app-pipeline" / "build.yml"
TOKEN = "ci-token-" + "x" * 40


def load() -> dict:
    return yaml.safe_load(PIPELINE.read_text())


def _steps(wf: dict) -> list[dict]:
    return [s for job in wf["jobs"].values() for s in job["steps"]]


def _run_of(step_id: str) -> str:
    (step,) = [s for s in _steps(load()) if s.get("id") == step_id]
    return step["run"]


def test_actionlint_and_shellcheck_find_nothing(actionlint, shellcheck):  # noqa: F811
    proc = lint(actionlint, shellcheck, ROOT, str(PIPELINE.relative_to(ROOT)))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actions_pinned_by_commit_least_privilege_nothing_expanded_in_scripts():
    wf = load()
    uses = [s["uses"] for s in _steps(wf) if "uses" in s]
    assert {u.split("@")[0] for u in uses} == {"actions/checkout", "docker/setup-qemu-action", "docker/setup-buildx-action",
                                                 "docker/login-action", "docker/build-push-action"}
    for line in (ln for ln in PIPELINE.read_text().splitlines() if re.match(r"\s*(- )?uses:", ln)):
        assert re.search(r"@[0-9a-f]{40} # v\d+\.\d+\.\d+$", line), line
    assert wf["permissions"] == {}
    assert wf["jobs"]["image"]["permissions"] == {"contents": "read", "packages": "write"}
    assert wf["jobs"]["sync"]["permissions"] == {}
    for s in _steps(wf):
        assert "${{" not in s.get("run", ""), s.get("name")
    # The token: only the sync step, only as an environment variable.
    text = PIPELINE.read_text()
    assert text.count("secrets.ARGOCD_AUTH_TOKEN") == 1
    (sync,) = wf["jobs"]["sync"]["steps"]
    assert sync["env"]["ARGOCD_AUTH_TOKEN"] == "${{ secrets.ARGOCD_AUTH_TOKEN }}"
    build = next(s for s in _steps(wf) if s.get("uses", "").startswith("docker/build-push-action"))
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64" and build["with"]["push"] is True
    assert triggers(wf) == {"push": {"branches": ["main"]}, "workflow_dispatch": {}}
    # A dispatch from another branch builds nothing: the sync job needs the image job.
    assert wf["jobs"]["image"]["if"] == "github.ref == 'refs/heads/main'" and wf["jobs"]["sync"]["needs"] == "image"


def triggers(wf: dict) -> dict:
    return wf["on"] if "on" in wf else wf[True]


def _bash(script: str, env: dict, tmp_path: Path, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    path = tmp_path / "step.sh"
    path.write_text(script)
    t0 = time.monotonic()
    res = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(path)],
                         env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=timeout)
    return res, time.monotonic() - t0


def test_the_image_is_tagged_sha_and_the_commit_in_the_repositorys_lowercase_name(tmp_path):
    out = tmp_path / "out"
    res, _ = _bash(_run_of("name"), {"IMAGE_REGISTRY": "ghcr.io", "REPOSITORY": "Acme/Web-App",
                                     "COMMIT": "0123abcdef4567890123abcdef4567890123abcd", "GITHUB_OUTPUT": str(out)}, tmp_path)
    assert res.returncode == 0, res.stderr
    assert out.read_text() == "ref=ghcr.io/acme/web-app:sha-0123abc\n"
    # The tag is one Image Updater's pattern for the apps takes (docs/delivery.md).
    assert re.fullmatch(r"^sha-[0-9a-f]{7}$", out.read_text().split(":")[-1].strip())


# --- the sync step against a stand-in Argo CD ---------------------------------------------


class ArgoStandIn(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        ArgoStandIn.seen.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                 "type": self.headers.get("Content-Type"), "body": body.decode()})
        app = self.path.split("/")[4]
        if app == "slow":
            time.sleep(8)
        code = {"denied": 403}.get(app, 200)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def argo(tmp_path_factory):
    d = tmp_path_factory.mktemp("argo")
    key, cert = d / "key.pem", d / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), ArgoStandIn)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", cert.read_text()
    finally:
        server.shutdown()
        server.server_close()


def _sync(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    base = {"IMAGE": "ghcr.io/acme/web:sha-0123abc", "SYNC_TIMEOUT": "2"}
    return _bash(_run_of("sync"), {**base, **env}, tmp_path)


def test_a_sync_is_requested_with_the_token_on_stdin_and_the_stacks_ca(argo, tmp_path):
    server, ca = argo
    ArgoStandIn.seen.clear()
    res, _ = _sync(tmp_path, ARGOCD_SERVER=server, ARGOCD_APP="example", ARGOCD_CA=ca, ARGOCD_AUTH_TOKEN=TOKEN)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "Argo CD: sync of example requested (image ghcr.io/acme/web:sha-0123abc)"
    (call,) = ArgoStandIn.seen
    assert call["path"] == "/api/v1/applications/example/sync" and call["auth"] == f"Bearer {TOKEN}"
    assert call["type"] == "application/json" and json.loads(call["body"]) == {"prune": False}
    assert TOKEN not in res.stdout + res.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("case", ["denied", "slow", "absent", "untrusted", "unset", "bad-name"])
def test_every_failure_to_sync_ends_green_with_one_warning(argo, tmp_path, case):
    server, ca = argo
    env = {"ARGOCD_SERVER": server, "ARGOCD_APP": "example", "ARGOCD_CA": ca, "ARGOCD_AUTH_TOKEN": TOKEN}
    want = {
        "denied": "Argo CD answered HTTP 403 for denied",
        "slow": f"no answer from Argo CD at {server} within 2s",
        "absent": "within 2s (unreachable, or its certificate",
        "untrusted": "within 2s (unreachable, or its certificate is not the one ARGOCD_CA holds)",  # no request is made
        "unset": "skipped: set the variables ARGOCD_SERVER and ARGOCD_APP and the secret ARGOCD_AUTH_TOKEN",
        "bad-name": "skipped: ARGOCD_APP 'x/../../settings' is not an Application name",
    }[case]
    if case in ("denied", "slow"):
        env["ARGOCD_APP"] = case
    elif case == "absent":
        env["ARGOCD_SERVER"] = f"127.0.0.1:{_free_port()}"
    elif case == "untrusted":
        env.pop("ARGOCD_CA")
    elif case == "unset":
        env.pop("ARGOCD_AUTH_TOKEN")
    elif case == "bad-name":
        env["ARGOCD_APP"] = "x/../../settings"
    ArgoStandIn.seen.clear()
    res, secs = _sync(tmp_path, **env)
    assert res.returncode == 0, (case, res.stdout, res.stderr)
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("::warning title=Argo CD sync::") and want in lines[0], (case, lines)
    assert TOKEN not in res.stdout + res.stderr
    assert secs < 2 + 10, (case, secs)  # bounded by SYNC_TIMEOUT, whatever the API does (not a speed claim)
    if case in ("untrusted", "unset", "bad-name", "absent"):
        assert ArgoStandIn.seen == [], case
