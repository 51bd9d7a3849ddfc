"""The host-key check (components/render/host_key.py's script, run by components/day2.py's hook) against a real
sshd on loopback.

The program runs this check on its own machine before every step that connects to a node. Here a real
OpenSSH sshd (Debian's openssh-server, started by the test on 127.0.0.1 with a host key the test made,
stopped by its PID) plays the node: its own key passes; another key, or none of type ed25519, fails within
seconds naming the node and both fingerprints (as ssh-keygen computes them); an sshd that starts late is
waited for; one that never answers fails after the bound. The rendered script runs under dash and bash,
and shellcheck reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from components.day2 import HostKeyRefused, host_key_check
from components.render.host_key import HostKeyCheck, render_check

pytestmark = pytest.mark.validators

SHELLS = (["dash", "-c"], ["bash", "-c"])
# sshd refuses to start without its privilege-separation directory (a compile-time path).
PRIVSEP = Path("/run/sshd")


def _sshd() -> str:
    path = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
    assert path, "sshd is not installed; run .ci/install.sh (Debian package openssh-server)"
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path, kind: str = "ed25519") -> str:
    """A host key pair at ``path``; returns the public half as the program pins it ("TYPE BASE64")."""
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "", "-f", str(path)], check=True, timeout=60)
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def _fingerprint(public: str) -> str:
    res = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", "-"], input=public + "\n",
                         capture_output=True, text=True, check=True)
    return res.stdout.split()[1]


@pytest.fixture(scope="module")
def privsep() -> Iterator[None]:
    made = not PRIVSEP.exists()
    if made:
        PRIVSEP.mkdir(mode=0o755)
    yield
    if made:
        PRIVSEP.rmdir()


@contextlib.contextmanager
def sshd(key: Path, port: int, work: Path) -> Iterator[subprocess.Popen]:
    """A real sshd on 127.0.0.1:port serving only ``key``; stopped by its PID."""
    log = open(work / f"sshd-{port}.log", "w")
    proc = subprocess.Popen(
        [_sshd(), "-D", "-e", "-f", "/dev/null", "-h", str(key), "-o", f"ListenAddress=127.0.0.1:{port}",
         "-o", "PidFile=none"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert proc.poll() is None, (work / f"sshd-{port}.log").read_text()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.1)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    d = tmp_path_factory.mktemp("hostkeys")
    return {name: (d / name, _keygen(d / name, kind)) for name, kind in
            (("pinned", "ed25519"), ("other", "ed25519"), ("rsa", "rsa"))}


def _check(shell: list[str], spec: HostKeyCheck, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    res = subprocess.run([*shell, render_check(spec)], capture_output=True, text=True, timeout=timeout)
    return res, time.monotonic() - t0


def test_the_script_passes_shellcheck(keys, tmp_path):
    spec = HostKeyCheck(node="lb1", host="10.27.0.11", expected=keys["pinned"][1], wait_s=900)
    script = tmp_path / "check.sh"
    script.write_text(render_check(spec))
    res = subprocess.run(["shellcheck", "-s", "sh", str(script)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


@pytest.mark.parametrize("shell", SHELLS, ids=["dash", "bash"])
def test_the_pinned_key_passes_and_another_fails_at_once_naming_node_and_both_keys(shell, keys, privsep, tmp_path):
    (pinned_key, pinned), (other_key, other), (rsa_key, _) = keys["pinned"], keys["other"], keys["rsa"]
    port = _free_port()
    spec = HostKeyCheck(node="lb1", host="127.0.0.1", expected=pinned, wait_s=60, port=port)
    with sshd(pinned_key, port, tmp_path):
        res, secs = _check(shell, spec)
        assert (res.returncode, res.stdout, res.stderr) == (0, "", ""), res
        assert secs < 10, secs
    for served, got in ((other_key, _fingerprint(other)), (rsa_key, "no ed25519 key")):
        with sshd(served, port, tmp_path):
            res, secs = _check(shell, spec)
        assert res.returncode == 1, res
        # At once: no waiting out the 60 s bound, whatever the key.
        assert secs < 10, secs
        assert res.stderr == (
            f"microcloud: lb1: ssh host key is not the one Pulumi generated: 127.0.0.1:{port} answers with another "
            f"(expected {_fingerprint(pinned)}, got {got}); nothing was sent to it\n"), res.stderr


def test_an_sshd_that_starts_late_is_waited_for(keys, privsep, tmp_path):
    """A new VM's sshd answers only once it has booted: the check waits for it, within its bound."""
    pinned_key, pinned = keys["pinned"]
    port = _free_port()
    spec = HostKeyCheck(node="infra", host="127.0.0.1", expected=pinned, wait_s=60, port=port)
    t0 = time.monotonic()
    check = subprocess.Popen(["dash", "-c", render_check(spec)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(4)
        assert check.poll() is None, check.communicate()
        with sshd(pinned_key, port, tmp_path):
            out, err = check.communicate(timeout=60)
    finally:
        if check.poll() is None:
            check.kill()
            check.wait()
    assert (check.returncode, out, err) == (0, "", ""), (check.returncode, out, err)
    assert 4 <= time.monotonic() - t0 < 40


def test_an_sshd_that_never_answers_fails_after_the_bound(keys):
    port = _free_port()  # nothing listens there
    spec = HostKeyCheck(node="worker1", host="127.0.0.1", expected=keys["pinned"][1], wait_s=3, port=port)
    res, secs = _check(["dash", "-c"], spec)
    assert res.returncode == 1, res
    assert 3 <= secs < 15, secs
    assert res.stderr == f"microcloud: worker1: sshd at 127.0.0.1:{port} did not answer within 3s; nothing was sent to it\n"


def test_the_hook_raises_the_checks_line_and_a_timeout_is_not_waited_out_twice(keys, privsep, tmp_path):
    """What the engine runs before a step: the coroutine of components/day2.py around the same script."""
    (pinned_key, pinned), (other_key, other) = keys["pinned"], keys["other"]
    port = _free_port()

    async def verdict(check) -> tuple[str | None, float]:
        t0 = time.monotonic()
        try:
            await check()
        except HostKeyRefused as err:
            return str(err), time.monotonic() - t0
        return None, time.monotonic() - t0

    async def scenario() -> None:
        gate = host_key_check("lb2", "127.0.0.1", pinned, wait_s=60, port=port)
        with sshd(pinned_key, port, tmp_path):
            assert (await verdict(gate))[0] is None
        with sshd(other_key, port, tmp_path):
            said, secs = await verdict(gate)
        assert said and said.startswith("microcloud: lb2: ssh host key is not the one Pulumi generated") and \
            f"(expected {_fingerprint(pinned)}, got {_fingerprint(other)})" in said and secs < 10, (said, secs)

        silent = host_key_check("lb2", "127.0.0.1", pinned, wait_s=2, port=_free_port())
        (first, t1), (second, t2) = await asyncio.gather(verdict(silent), verdict(silent))
        assert first == second and "did not answer within 2s" in first, (first, second)
        # The two steps queue on the node's one check; the second takes the first's verdict at once.
        assert 2 <= t1 < 15 and t2 - t1 < 1, (t1, t2)

    # A loop of the test's own, never made current: the mocks tiers use the thread's loop after this test.
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()
