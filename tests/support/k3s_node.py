"""A K3s node for the tests: each node's spec from a stack config, and a temporary root to run the install script in.

``k3s_nodes(cfg)`` builds every K3s node's ``K3sNodeSpec`` the way the
program will; ``Node(tmp)`` is a temporary root with the pinned files
"copied to the node" and stand-ins for systemctl and curl on PATH, and runs
a rendered install script in it with ``/bin/sh`` (dash). Used by
tests/test_k3s_render.py and tests/test_k3s_install.py.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Optional

from components.config import StackConfig
from components.render import k3s
from components.render import platform as pv

from support.k3s_pki import join_input

VERSION = "v1.33.5+k3s1"


# ------------------------------------------------------------------ specs from the stack configs


def k3s_nodes(cfg: StackConfig, repointed: bool = False) -> list[k3s.K3sNodeSpec]:
    """Every K3s node's spec; the first server bootstraps unless ``repointed``."""
    lb = cfg.load_balancer
    first = cfg.servers[0].name
    out = []
    for n in cfg.nodes_with("server", "agent", "storage"):
        role = "server" if n.role == "server" else "agent"
        labels = (pv.LONGHORN_DISK_LABEL,) if n.uses_longhorn else ()
        out.append(
            k3s.K3sNodeSpec(
                role=role,
                node_name=n.name,
                node_ip=str(n.ip),
                api_vip=str(lb.api_vip),
                api_port=lb.api_port,
                domain=cfg.domain,
                cluster_init=(n.name == first and not repointed),
                node_labels=labels,
            )
        )
    return out


# ------------------------------------------------------------------ stand-ins on a temporary root


FAKE_SYSTEMCTL = r"""#!/bin/sh
# Stand-in for systemctl: logs, keeps "active"/"enabled" as files, fails a
# restart while the installed config.yaml contains $FAIL_MARK.
echo "systemctl $*" >> "$LOG"
q=; [ "${2:-}" = -q ] && q=1
last=$(eval echo "\${$#}")
case "$1" in
  daemon-reload) exit 0 ;;
  is-active) [ -e "$STATE/active.$last" ] ;;
  is-enabled) [ -e "$STATE/enabled.$last" ] ;;
  enable) touch "$STATE/enabled.$last" ;;
  restart|start)
    if [ -n "${FAIL_MARK:-}" ] && grep -q "$FAIL_MARK" "$ROOT/etc/rancher/k3s/config.yaml" 2>/dev/null; then
      rm -f "$STATE/active.$last"; exit 1
    fi
    touch "$STATE/active.$last" ;;
  *) exit 3 ;;
esac
"""

# Stand-in for curl: "downloads" $CURL_FILE to the -o target and logs the arguments.
FAKE_CURL = r"""#!/bin/sh
echo "curl $*" >> "$LOG"
out=
while [ $# -gt 0 ]; do case "$1" in -o) out=$2; shift 2 ;; *) shift ;; esac; done
cp "$CURL_FILE" "$out"
"""


KERNEL_DEFAULTS = {"kernel.panic": "0", "kernel.panic_on_oops": "0", "vm.overcommit_memory": "0", "vm.panic_on_oom": "0"}


class Node:
    """A temporary root with the pinned files 'copied to the node', and the stand-ins on PATH."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.root = tmp / "root"
        self.root.mkdir()
        # The kernel's own defaults where the kubelet's protect-kernel-defaults wants others: the script must set them.
        for key, value in KERNEL_DEFAULTS.items():
            proc = self.path("/proc/sys/" + key.replace(".", "/"))
            proc.parent.mkdir(parents=True, exist_ok=True)
            proc.write_text(value + "\n")
        self.fake = tmp / "fakebin"
        self.fake.mkdir()
        for name, text in (("systemctl", FAKE_SYSTEMCTL), ("curl", FAKE_CURL), ("cloud-init", "#!/bin/sh\nexit 0\n")):
            (self.fake / name).write_text(text)
            (self.fake / name).chmod(0o755)
        self.state = tmp / "state"
        self.state.mkdir()
        self.log = tmp / "log"
        self.log.write_text("")
        self.uploads = tmp / "uploads"
        self.uploads.mkdir()
        self.binary = self.uploads / "k3s"
        self.binary.write_text(f"#!/bin/sh\necho 'k3s version {VERSION} (fake)'\n")
        self.images = self.uploads / "k3s-airgap-images-amd64.tar.zst"
        self.images.write_bytes(b"\x28\xb5\x2f\xfd" + os.urandom(64))

    @staticmethod
    def sha(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    def spec(self, node: k3s.K3sNodeSpec, **kw) -> k3s.K3sInstallSpec:
        args = dict(
            node=node,
            version=VERSION,
            binary=k3s.Artifact(sha256=self.sha(self.binary), path=str(self.binary)),
            images=k3s.Artifact(sha256=self.sha(self.images), path=str(self.images)),
            bin_dir=k3s.FLATCAR_BIN_DIR,
            start_timeout=5,
            root=str(self.root),
        )
        return k3s.K3sInstallSpec(**{**args, **kw})

    def run(self, spec: k3s.K3sInstallSpec, stdin: Optional[str] = None, **env) -> subprocess.CompletedProcess:
        """The rendered script under dash; ``stdin`` None: the join input the program gives the node."""
        if stdin is None:
            stdin = join_input(spec.node)
        script = self.tmp / "install.sh"
        script.write_text(k3s.render_k3s_install(spec))
        environ = {
            **os.environ,
            "PATH": f"{self.fake}:{os.environ['PATH']}",
            "LOG": str(self.log),
            "STATE": str(self.state),
            "ROOT": str(self.root),
            **env,
        }
        # /bin/sh is dash on Debian: the script must be plain POSIX sh.
        return subprocess.run(["/bin/sh", str(script)], input=stdin, env=environ, capture_output=True, text=True, timeout=60)

    def installed(self) -> list[Path]:
        """Every file under the root but the kernel's settings (/proc/sys, which the script may set before installing)."""
        proc = self.path("/proc")
        return [p for p in self.root.rglob("*") if p.is_file() and proc not in p.parents]

    def path(self, p: str) -> Path:
        return self.root / p.lstrip("/")

    def calls(self, verb: str) -> int:
        return sum(1 for line in self.log.read_text().splitlines() if line.startswith(f"systemctl {verb}"))
