"""Argo CD's own token and RBAC code, as a program the tests run: ``argocd-verify``.

It is Argo CD v3.4.4's settings manager, session manager (``Parse``: signature, issuer, the account's
``apiKey`` capability and enabled flag, the token id listed in argocd-secret) and RBAC enforcer (the
built-in policy plus argocd-rbac-cm, loaded as argocd-server loads it), over a fake clientset holding the
three objects it is given. Argo CD's module builds only with its gitops-engine submodule, which no module
proxy serves, so the binary is built outside this repository from Argo CD's source and put beside the
provider plugins: ``$MICROCLOUD_PLUGIN_DIR/argocd-verify-v3.4.4/argocd-verify`` (the tests that need it
skip, saying so, on a machine without it).
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


def verifier() -> Optional[str]:
    """The argocd-verify binary, or None."""
    roots = [os.environ.get("MICROCLOUD_PLUGIN_DIR"), os.path.expanduser("~/.cache/microcloud-toolchain/plugins")]
    for root in filter(None, roots):
        path = Path(root) / f"argocd-verify-{VERSION}" / "argocd-verify"
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


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
