"""A private libvirtd: its own network namespace and its own view of libvirt's directories.

Every bridge, NAT rule, dnsmasq and VM that libvirt makes lives in a network
namespace this harness creates, and libvirt's runtime, state, config and log
directories are private copies (a mount namespace), so nothing leaks onto the
host, a libvirtd already running there is untouched, and two runs never
share state. ``run()`` executes a command inside both namespaces (as pulumi,
virsh and ssh must be, to reach libvirt's socket and the VMs' addresses).

Stopping kills exactly what was started, by PID: the QEMU and dnsmasq
processes libvirt recorded in its (private) run directory, then libvirtd and
virtlogd, then the holder process; the namespace is deleted last.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Optional

# libvirt's directories, each replaced by a private copy inside the sandbox.
PRIVATE_DIRS = ("/etc/libvirt", "/var/lib/libvirt", "/var/log/libvirt", "/var/cache/libvirt", "/run/libvirt")

# Inside the sandbox QEMU runs as root without a security driver: the pool
# and seed files live in the test's private temp dir.
QEMU_CONF = 'user = "root"\ngroup = "root"\ndynamic_ownership = 0\nremember_owner = 0\nsecurity_driver = "none"\n'

HOLDER = r"""
set -eu
w={work}
for d in {dirs}; do
  mkdir -p "$w/fs$d" "$d"
  if [ -d "$d" ] && [ "$d" != /run/libvirt ]; then cp -a "$d/." "$w/fs$d/" 2>/dev/null || true; fi
  mount --bind "$w/fs$d" "$d"
done
cat > /etc/libvirt/qemu.conf <<'EOF'
{qemu_conf}EOF
rm -f /etc/libvirt/qemu/networks/autostart/*.xml /etc/libvirt/qemu/networks/*.xml /etc/libvirt/qemu/*.xml
ip link set lo up
/usr/sbin/virtlogd --pid-file "$w/virtlogd.pid" >"$w/virtlogd.log" 2>&1 &
/usr/sbin/libvirtd --pid-file "$w/libvirtd.pid" >"$w/libvirtd.log" 2>&1 &
echo ready > "$w/holder.ready"
# Stay, holding the namespaces, until told to stop.
while [ ! -e "$w/holder.stop" ]; do sleep 0.5; done
"""


class Sandbox:
    def __init__(self, work: Path):
        self.work = work
        self.netns = f"mc-e2e-{uuid.uuid4().hex[:8]}"
        self.holder: Optional[subprocess.Popen] = None

    # ---------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 60) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        script = HOLDER.format(work=self.work, dirs=" ".join(PRIVATE_DIRS), qemu_conf=QEMU_CONF)
        self.holder = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            stdout=open(self.work / "holder.log", "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.holder.poll() is not None:
                raise RuntimeError(f"sandbox holder exited: {(self.work / 'holder.log').read_text()[-2000:]}")
            if (self.work / "holder.ready").exists() and self.run(["virsh", "-c", "qemu:///system", "version"]).returncode == 0:
                return
            time.sleep(0.5)
        raise RuntimeError(f"libvirtd did not answer in the sandbox: {self._tail('libvirtd.log')}")

    def _ns_pid(self) -> int:
        """PID of a process inside both namespaces (the holder's shell)."""
        assert self.holder is not None
        # `ip netns exec` execs unshare, which execs sh: same PID.
        return self.holder.pid

    def run(self, cmd: list[str], cwd: Optional[Path] = None, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 120)
        # Entering a mount namespace resets the working directory: cd there.
        wd = ["sh", "-c", 'cd "$0" && exec "$@"', str(cwd)] if cwd else []
        return subprocess.run(["nsenter", "-t", str(self._ns_pid()), "-m", "-n", "--", *wd, *cmd], **kw)

    def virsh(self, *args: str) -> subprocess.CompletedProcess:
        return self.run(["virsh", "-c", "qemu:///system", *args])

    def _tail(self, name: str) -> str:
        p = self.work / name
        return p.read_text()[-2000:] if p.exists() else "(no log)"

    def _recorded_pids(self) -> list[int]:
        """QEMU and dnsmasq PIDs that libvirt wrote into its private run directory."""
        pids = []
        for sub in ("fs/run/libvirt/qemu", "fs/run/libvirt/network"):
            d = self.work / sub
            if d.is_dir():
                for f in d.glob("*.pid"):
                    try:
                        pids.append(int(f.read_text().strip()))
                    except ValueError:
                        pass
        return pids

    def stop(self) -> None:
        if self.holder is not None and self.holder.poll() is None:
            # Domains and networks first, the clean way, while libvirtd still answers.
            for dom in self.virsh("list", "--name").stdout.split():
                self.virsh("destroy", dom)
            for net in self.virsh("net-list", "--name").stdout.split():
                self.virsh("net-destroy", net)
        for pid in self._recorded_pids():
            _kill(pid)
        for name in ("libvirtd.pid", "virtlogd.pid"):
            f = self.work / name
            if f.exists():
                try:
                    _kill(int(f.read_text().strip()))
                except ValueError:
                    pass
        if self.holder is not None:
            (self.work / "holder.stop").touch()
            try:
                self.holder.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.holder.pid, signal.SIGKILL)
                self.holder.wait(timeout=10)
        subprocess.run(["ip", "netns", "delete", self.netns], capture_output=True)

    def __enter__(self) -> "Sandbox":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _kill(pid: int, grace: float = 10) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def tools_missing() -> list[str]:
    need = ["libvirtd", "virtlogd", "virsh", "qemu-system-x86_64", "qemu-img", "dnsmasq", "nsenter", "unshare", "ssh"]
    return [t for t in need if not (shutil.which(t) or os.path.exists(f"/usr/sbin/{t}"))]
