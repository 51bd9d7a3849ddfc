"""Argo CD's own code as programs the tests run: ``argocd-verify`` (tokens, RBAC) and ``argocd-appset-render`` (ApplicationSets).

It is Argo CD v3.4.4's settings manager, session manager (``Parse``: signature, issuer, the account's
``apiKey`` capability and enabled flag, the token id listed in argocd-secret) and RBAC enforcer (the
built-in policy plus argocd-rbac-cm, loaded as argocd-server loads it), over a fake clientset holding the
three objects it is given. Argo CD's module builds only with its gitops-engine submodule, which no module
proxy serves, so the binaries are built outside this repository from Argo CD's source and put beside the
provider plugins: ``$MICROCLOUD_PLUGIN_DIR/argocd-tools-v3.4.4/`` (the tests that need them skip, saying
so, on a machine without them).

``argocd-appset-render`` runs the ApplicationSet controller's own generation (``GenerateApplications``
with the real List, Git, Matrix and Merge generators and its renderer, templatePatch included) on a
directory standing for the Git repository at its revision, and prints the Applications it would make.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import yaml

VERSION = "v3.4.4"


def tool(name: str) -> Optional[str]:
    """One of the Argo CD tools (``argocd-verify``, ``argocd-appset-render``), or None."""
    roots = [os.environ.get("MICROCLOUD_PLUGIN_DIR"), os.path.expanduser("~/.cache/microcloud-toolchain/plugins")]
    for root in filter(None, roots):
        path = Path(root) / f"argocd-tools-{VERSION}" / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


def verifier() -> Optional[str]:
    return tool("argocd-verify")


def render_appset(binary: str, appset: dict, repo_dir: Path) -> tuple[int, list[dict], str]:
    """The Applications Argo CD's own ApplicationSet code makes of ``appset`` with ``repo_dir`` as the repository."""
    with tempfile.TemporaryDirectory(prefix="mc-appset-") as d:
        f = Path(d) / "appset.yaml"
        f.write_text(yaml.safe_dump(appset))
        res = subprocess.run([binary, "--appset", str(f), "--repo-dir", str(repo_dir)], capture_output=True, text=True, timeout=120)
    apps = yaml.safe_load(res.stdout) if res.returncode == 0 and res.stdout.strip() else []
    return res.returncode, apps or [], res.stderr


def verify(binary: str, *, cm: dict, rbac: dict, secret: dict, token: str, checks: Sequence[str]) -> tuple[int, dict, str]:
    """Run it on the three objects and ``token``: (exit status, its JSON answer, stderr). Nothing is printed."""
    with tempfile.TemporaryDirectory(prefix="mc-argocd-verify-") as d:
        files = {}
        for name, obj in (("cm", cm), ("rbac", rbac), ("secret", secret)):
            files[name] = Path(d) / f"{name}.yaml"
            files[name].write_text(yaml.safe_dump(obj))
        tok = Path(d) / "token"
        tok.write_text(token)
        os.chmod(tok, 0o600)
        args = [binary, "--cm", str(files["cm"]), "--rbac", str(files["rbac"]), "--secret", str(files["secret"]), "--token-file", str(tok)]
        for c in checks:
            args += ["--check", c]
        res = subprocess.run(args, capture_output=True, text=True, timeout=120)
    try:
        answer = json.loads(res.stdout) if res.stdout.strip() else {}
    except json.JSONDecodeError:
        answer = {"unparsed": res.stdout}
    return res.returncode, answer, res.stderr


def validate_policy(binary: str, rbac: dict) -> subprocess.CompletedProcess:
    """Argo CD's own policy validator (rbac.ValidatePolicy, as `argocd admin settings rbac validate`) on argocd-rbac-cm."""
    with tempfile.TemporaryDirectory(prefix="mc-argocd-policy-") as d:
        f = Path(d) / "rbac.yaml"
        f.write_text(yaml.safe_dump(rbac))
        return subprocess.run([binary, "--policy-only", "--rbac", str(f)], capture_output=True, text=True, timeout=120)
