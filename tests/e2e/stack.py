"""A dev-shaped stack under the real Pulumi CLI, inside a Sandbox: used by the e2e tier and its benchmark.

The program is copied into a temp dir (the passphrase provider writes its
salt into the stack file) and uses the checkout's venv; state goes to a file
backend in the temp dir, the passphrase is a throwaway one, plugins come
from the project's PULUMI_HOME (installed by .ci/toolchain.sh).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from harness import ROOT, stack_config

from .sandbox import Sandbox

PULUMI_HOME = ROOT / ".pulumi-home"
POINTER = PULUMI_HOME / "toolchain-bin"
PLUGINS = ("command", "libvirt", "random", "tls")
SSH_OPTS = [
    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
    "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
]


def missing_plugins() -> list[str]:
    """Plugins the installed SDKs ask for that are not installed in PULUMI_HOME, as NAME@VERSION."""
    missing = []
    for name in PLUGINS:
        meta = next((ROOT / "venv" / "lib").glob(f"python3*/site-packages/pulumi_{name}/pulumi-plugin.json"), None)
        if meta is None:
            missing.append(f"{name} (SDK not installed)")
            continue
        ver = json.loads(meta.read_text())["version"]
        if not (PULUMI_HOME / "plugins" / f"resource-{name}-v{ver}" / f"pulumi-resource-{name}").exists():
            missing.append(f"{name}@{ver}")
    return missing


def toolchain_bin() -> Optional[Path]:
    if POINTER.is_file():
        b = Path(POINTER.read_text().strip())
        if (b / "pulumi").is_file():
            return b
    return None


def e2e_model(image: Path, blank: Path, coredns: Path, pool: Path) -> dict:
    """dev's shape: LB pair and infra on Debian 12 (booted), the K3s nodes on blank disks."""
    m = copy.deepcopy(stack_config("dev")["microcloud:config"])
    digest = image.stem.rsplit("-", 1)[-1]
    m["images"] = {
        "debian12": {"source": str(image), "version": f"12-{digest}"},
        "flatcar": {"source": str(blank), "version": "blank-1"},
    }
    m["virt_type"] = "kvm" if os.environ.get("MICROCLOUD_E2E_KVM") == "1" else "qemu"
    m["pool_path"] = str(pool)
    m["dns"]["coredns"] = {"path": str(coredns)}
    nodes = []
    for n in m["nodes"]:
        if n["role"] in ("load_balancer", "infra"):
            nodes.append({**n, "os": "debian12"})
        elif n["name"] in ("server1", "worker1"):
            nodes.append(n)
    m["nodes"] = nodes
    return m


@dataclass
class Stack:
    sandbox: Sandbox
    work: Path
    env: dict
    name: str = "e2e"
    transcript: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, sandbox: Sandbox, base: Path, model: dict) -> "Stack":
        bin_dir = toolchain_bin()
        assert bin_dir, "no Pulumi toolchain: run bash .ci/toolchain.sh"
        work = base / "project"
        work.mkdir(parents=True)
        (base / "state").mkdir()
        for f in ("Pulumi.yaml", "__main__.py"):
            shutil.copy2(ROOT / f, work / f)
        shutil.copytree(ROOT / "components", work / "components", ignore=shutil.ignore_patterns("__pycache__"))
        (work / "venv").symlink_to(ROOT / "venv")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
        env.update(
            PATH=f"{bin_dir}:{env.get('PATH', '')}",
            PULUMI_HOME=str(PULUMI_HOME),
            PULUMI_BACKEND_URL=f"file://{base / 'state'}",
            # A throwaway passphrase for a throwaway backend.
            PULUMI_CONFIG_PASSPHRASE=uuid.uuid4().hex,
            PULUMI_SKIP_UPDATE_CHECK="true",
            PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="true",
            PULUMI_IGNORE_AMBIENT_PLUGINS="true",
            MICROCLOUD_SEED_DIR=str(base / "seeds"),
        )
        stack = cls(sandbox=sandbox, work=work, env=env)
        stack.write_config(model)
        res = stack.pulumi("stack", "init", stack.name, "--secrets-provider", "passphrase")
        assert res.returncode == 0, res.stderr
        return stack

    def write_config(self, model: dict) -> None:
        cfg = {k: v for k, v in stack_config("dev").items() if k != "microcloud:config"}
        cfg["microcloud:config"] = model
        (self.work / f"Pulumi.{self.name}.yaml").write_text(yaml.safe_dump({"config": cfg}, sort_keys=False))

    def pulumi(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
        cmd = ["pulumi", "--non-interactive", "--color=never", *args]
        if args and args[0] != "stack":
            cmd += ["--stack", self.name]
        res = self.sandbox.run(cmd, timeout=timeout, env=self.env, cwd=self.work)
        self.transcript.append(f"$ pulumi {' '.join(args)}\n{res.stdout}\n{res.stderr}")
        return res

    def timed(self, *args: str, timeout: float = 1800) -> tuple[subprocess.CompletedProcess, float]:
        t0 = time.monotonic()
        res = self.pulumi(*args, timeout=timeout)
        return res, time.monotonic() - t0

    def output(self, name: str, secret: bool = False) -> object:
        args = ["stack", "output", name, "--json", "--stack", self.name] + (["--show-secrets"] if secret else [])
        res = self.pulumi(*args)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    def key_file(self) -> Path:
        path = self.work.parent / "id_ed25519"
        if not path.exists():
            key = self.output("ssh_private_key", secret=True)
            path.write_text(key)
            path.chmod(0o600)
        return path

    def ssh(self, ip: str, command: str, user: str = "core", timeout: float = 60) -> subprocess.CompletedProcess:
        return self.sandbox.run(["ssh", *SSH_OPTS, "-i", str(self.key_file()), f"{user}@{ip}", command], timeout=timeout)
