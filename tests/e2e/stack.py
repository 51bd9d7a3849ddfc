"""A dev-shaped stack under the real Pulumi CLI, inside a Sandbox: used by the e2e tier and its benchmark.

The CLI runs on a throwaway copy of the program (see tests/support/cli.py), inside
the sandbox's namespaces so it reaches libvirt's socket and the VMs.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from components.config import file_sha256
from support.cli import plugin_versions_missing, project_copy, toolchain_bin
from support.harness import stack_config

from .sandbox import Sandbox

PLUGINS = ("command", "libvirt", "random", "tls")
DB_IP = "10.27.3.14"
SSH_OPTS = [
    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
    "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
]
# What ssh prints when it never reached the remote command (exit status 255).
SSH_CONNECT_FAILURE = re.compile(
    r"Connection timed out|banner exchange|kex_exchange_identification|Connection refused|"
    r"Connection reset|Connection closed by|No route to host"
)


def missing_plugins() -> list[str]:
    """Plugins the installed SDKs ask for that are not installed in PULUMI_HOME, as NAME@VERSION."""
    return [f"{n} (SDK not installed)" if v is None else f"{n}@{v}" for n, v in plugin_versions_missing(PLUGINS)]


# Stands in for the k3s binary on the booted server: K3s itself cannot run here. `k3s server|agent`
# tells systemd it is ready (Type=notify, from the unit's main PID: exec keeps it) and then idles;
# `k3s kubectl` answers the readiness checks (/readyz, every node Ready). Everything around it is
# real: the pinned copy and its sha256, the join input on stdin, the CA files and token files,
# config.yaml, the unit, systemd.
FAKE_K3S = r"""#!/bin/sh
case "${1:-}" in
  server|agent)
    exec python3 -c '
import os, socket, time
addr = os.environ.get("NOTIFY_SOCKET", "")
if addr:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(b"READY=1", "\0" + addr[1:] if addr.startswith("@") else addr)
while True:
    time.sleep(3600)
' ;;
  kubectl)
    case "$*" in *" get node "*) printf True ;; esac
    exit 0 ;;
  *) echo "k3s version (microcloud e2e stand-in)" ;;
esac
"""


def fake_k3s(base: Path) -> Path:
    """FAKE_K3S as an executable file under ``base``: the stack's k3s.binary.path."""
    path = base / "k3s"
    path.write_text(FAKE_K3S)
    path.chmod(0o755)
    return path


def e2e_model(image: Path, coredns: Path, pool: Path, k3s: Path) -> dict:
    """dev's shape: LB pair and infra on Debian 12 (booted); server1 booted too, with the stand-in K3s
    binary ``k3s`` and no platform; the rest of dev's K3s nodes left out (Flatcar cannot boot here)."""
    m = copy.deepcopy(stack_config("dev")["microcloud:config"])
    digest = image.stem.rsplit("-", 1)[-1]
    # Each image is pinned by the sha256 of the file as built here: the program checks it before use.
    m["images"] = {
        "debian12": {"source": str(image), "version": f"12-{digest}", "sha256": file_sha256(str(image))},
    }
    m["virt_type"] = "kvm" if os.environ.get("MICROCLOUD_E2E_KVM") == "1" else "qemu"
    m["pool_path"] = str(pool)
    # The cached build, held to dev's own pin of it (dns.coredns.sha256).
    m["dns"]["coredns"] = {**m["dns"]["coredns"], "path": str(coredns)}
    # Every K3s command runs for real against the stand-in binary (copied from this machine,
    # no airgap images); the platform needs a real API server (tests/k8s).
    # A lone server: workloads must be allowed on it (the one relaxation, warned on every run).
    m["k3s"] = {"version": m["k3s"]["version"], "binary": {"path": str(k3s)}, "hardening": {"workloads_on_servers": True}}
    m["platform"] = {**m.get("platform", {}), "enabled": False}
    nodes = []
    for n in m["nodes"]:
        if n["role"] in ("load_balancer", "infra"):
            nodes.append({**n, "os": "debian12"})
        elif n["name"] == "server1":
            # A lone server takes the ingress too; one vCPU under emulation.
            nodes.append({**n, "os": "debian12", "ingress": True, "vcpu": 1})
        elif n["name"] == "storage1":
            # The NFS server (a K3s agent around the stand-in binary); Longhorn needs real K3s.
            nodes.append({**n, "os": "debian12", "vcpu": 1, "longhorn": False, "data_disks": [{"name": "data", "size_gib": 4}]})
    # PostgreSQL on a node of its own on the infra network, its data on storage1's NFS disk.
    nodes.append({"name": "db1", "role": "database", "os": "debian12", "network": "infra", "ip": DB_IP,
                  "memory_mib": 1024, "disk_gib": 10})
    m["nodes"] = nodes
    m["database"] = {"version": 15, "data": "nfs", "databases": [{"name": "app", "owner": "app"}], "backup": {"keep_days": 3}}
    return m


@dataclass
class Stack:
    sandbox: Sandbox
    work: Path
    env: dict
    model: dict
    name: str = "e2e"
    transcript: list[str] = field(default_factory=list)
    # What earlier steps of an ordered run found (up succeeded, timings, the MASTER).
    state: dict = field(default_factory=dict)

    @classmethod
    def create(cls, sandbox: Sandbox, base: Path, model: dict) -> "Stack":
        bin_dir = toolchain_bin()
        assert bin_dir, "no Pulumi toolchain: run bash .ci/toolchain.sh"
        work, env = project_copy(base, bin_dir, MICROCLOUD_SEED_DIR=str(base / "seeds"))
        stack = cls(sandbox=sandbox, work=work, env=env, model=model)
        # The CLI's own log files from here on (PULUMI_HOME/logs) belong to this run.
        stack.state["started"] = time.time()
        stack.write_config(model)
        res = stack.pulumi("stack", "init", stack.name, "--secrets-provider", "passphrase")
        assert res.returncode == 0, res.stderr
        return stack

    def engine_logs(self) -> dict[str, bytes]:
        """The CLI's log files written since this stack was made (PULUMI_HOME/logs), each decompressed when gzip."""
        out = {}
        for path in sorted((Path(self.env["PULUMI_HOME"]) / "logs").glob("*.log")):
            if path.stat().st_mtime < self.state["started"]:
                continue
            raw = path.read_bytes()
            out[str(path)] = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        return out

    def write_config(self, model: dict) -> None:
        """The stack file with ``model`` as microcloud:config; secrets set with `config set --secret` are kept."""
        cfg = {k: v for k, v in stack_config("dev").items() if k != "microcloud:config"}
        cfg["microcloud:config"] = model
        path = self.work / f"Pulumi.{self.name}.yaml"
        old = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
        cfg.update({k: v for k, v in (old.get("config") or {}).items() if isinstance(v, dict) and "secure" in v})
        # Other top-level keys (the passphrase provider's encryptionsalt) stay.
        head = {k: v for k, v in old.items() if k != "config"}
        path.write_text(yaml.safe_dump({**head, "config": cfg}, sort_keys=False))

    def set_secret(self, key: str, value: str) -> None:
        """`pulumi config set --secret key`, the value on stdin: never in an argument or the transcript."""
        res = self.pulumi("config", "set", "--secret", key, input=value)
        assert res.returncode == 0, res.stderr[-2000:]

    def pulumi(self, *args: str, timeout: float = 1800, event_log: Optional[Path] = None,
               input: Optional[str] = None) -> subprocess.CompletedProcess:
        """``event_log``: write the engine's event stream there (the CLI offers --event-log only with
        PULUMI_DEBUG_COMMANDS set). ``input``: the command's stdin."""
        cmd = ["pulumi", "--non-interactive", "--color=never", *args]
        env = self.env
        if event_log is not None:
            cmd += ["--event-log", str(event_log)]
            env = {**env, "PULUMI_DEBUG_COMMANDS": "true"}
        if args and args[0] != "stack":
            cmd += ["--stack", self.name]
        res = self.sandbox.run(cmd, timeout=timeout, env=env, cwd=self.work, input=input)
        self.transcript.append(f"$ pulumi {' '.join(args)}\n{res.stdout}\n{res.stderr}")
        return res

    def timed(self, *args: str, timeout: float = 1800, **kw) -> tuple[subprocess.CompletedProcess, float]:
        t0 = time.monotonic()
        res = self.pulumi(*args, timeout=timeout, **kw)
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

    def ssh(self, ip: str, command: str, user: str = "core", timeout: float = 60,
            attempts: int = 4) -> subprocess.CompletedProcess:
        """Run `command` on the node. A connection that fails before the command runs (ssh's own exit
        status 255 with a connection error: a busy emulated VM can take more than ConnectTimeout to send
        its banner) is tried again, up to `attempts` times; any answer from the command is final."""
        cmd = ["ssh", *SSH_OPTS, "-i", str(self.key_file()), f"{user}@{ip}", command]
        for attempt in range(1, attempts + 1):
            res = self.sandbox.run(cmd, timeout=timeout)
            if res.returncode != 255 or not SSH_CONNECT_FAILURE.search(res.stderr) or attempt == attempts:
                return res
            time.sleep(5)
        return res
