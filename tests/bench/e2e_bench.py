"""Time the e2e stack under the real engine: preview, up, no-change preview, destroy, and boot-to-SSH per VM.

    venv/bin/python tests/bench/e2e_bench.py [--repeat 3]

Same sandbox and stack as tests/e2e (libvirtd in its own namespaces, the LB
pair, the infra node and server1 with the stand-in K3s on the locally built
Debian 12 image). Each round is a full preview / up / re-preview / destroy on
a fresh stack; boot-to-SSH is measured after each up by `virsh destroy` + `virsh
start` of every booted node until `ssh true` succeeds. Prints medians (and
min/max) and whether KVM was used. Needs root, the plugins and the image.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent.parent), str(HERE.parent)]

from e2e.sandbox import Sandbox  # noqa: E402
from e2e.stack import Stack, e2e_model, fake_k3s, missing_plugins  # noqa: E402
from support.harness import ROOT  # noqa: E402

BOOTED = ("lb1", "lb2", "infra")


def _path(script: str) -> Path:
    res = subprocess.run(["bash", str(ROOT / ".ci" / script), "--cached-only"], capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"run bash .ci/{script} first")
    return Path(res.stdout.strip())


def boot_to_ssh(stack: Stack, name: str, ip: str, prefix: str, timeout: float = 600) -> float:
    dom = f"{prefix}-{name}"
    stack.sandbox.virsh("destroy", dom)
    t0 = time.monotonic()
    assert stack.sandbox.virsh("start", dom).returncode == 0
    while time.monotonic() - t0 < timeout:
        if stack.ssh(ip, "true", timeout=20, attempts=1).returncode == 0:
            return time.monotonic() - t0
        time.sleep(1)
    raise RuntimeError(f"{name} did not answer SSH in {timeout}s")


def one_round(base: Path, image: Path, coredns: Path) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {}
    with Sandbox(base / "sandbox") as sb:
        model = e2e_model(image, coredns, base / "pool", fake_k3s(base))
        st = Stack.create(sb, base / "stack", model)
        try:
            for label, args in (("preview", ("preview",)), ("up", ("up", "--yes", "--skip-preview")),
                                ("no-change preview", ("preview", "--expect-no-changes"))):
                res, secs = st.timed(*args, timeout=2400)
                if res.returncode != 0:
                    raise RuntimeError(f"{label} failed: {res.stdout[-2000:]}{res.stderr[-1000:]}")
                times.setdefault(label, []).append(secs)
            ips = {n["name"]: n["ip"] for n in model["nodes"]}
            for name in BOOTED:
                times.setdefault("boot-to-SSH", []).append(boot_to_ssh(st, name, ips[name], "microcloud-e2e"))
        finally:
            res, secs = st.timed("destroy", "--yes", "--skip-preview", timeout=900)
            if res.returncode == 0:
                times.setdefault("destroy", []).append(secs)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces, libvirtd)")
    if missing_plugins():
        sys.exit(f"provider plugins not installed: {', '.join(missing_plugins())}")
    image, coredns = _path("debian-image.sh"), _path("coredns.sh")
    kvm = os.environ.get("MICROCLOUD_E2E_KVM") == "1"
    all_times: dict[str, list[float]] = {}
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="microcloud-bench-") as tmp:
            for k, v in one_round(Path(tmp), image, coredns).items():
                all_times.setdefault(k, []).extend(v)
        print(f"round {i + 1}/{args.repeat} done", file=sys.stderr)
    print(f"accelerator: {'KVM' if kvm else 'none (QEMU software emulation, TCG)'}; {os.cpu_count()} cores")
    print(f"{'step':<20} {'n':>3} {'median':>9} {'min':>9} {'max':>9}")
    for k, v in all_times.items():
        print(f"{k:<20} {len(v):>3} {statistics.median(v):>8.1f}s {min(v):>8.1f}s {max(v):>8.1f}s")


if __name__ == "__main__":
    main()
