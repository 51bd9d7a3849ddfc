"""The data disk preparation script, run for real against loop devices.

Each disk is a sparse file in a temporary directory attached with
``losetup``; the script is the one the Storage component ships, with its
device path pointing (through a symlink, like /dev/disk/by-id) at the loop
device. ``mkfs.ext4`` is reached through a logging wrapper, so a test sees
whether it ran. Every loop device is detached by the name ``losetup`` gave
it, in a ``finally``.

Needs root and /dev/loop-control (skipped, naming what is missing, where
there are none); blkid, wipefs, mkfs.ext4, mkfs.xfs and sfdisk are required
(.ci/install.sh installs them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from components.render import storage as st

pytestmark = pytest.mark.validators

MIB = 1024 * 1024
NODE = "storage1"


def need(tool: str) -> str:
    path = shutil.which(tool)
    assert path, f"{tool} is not installed; run .ci/run (it installs the validators from Debian packages)"
    return path


@pytest.fixture(scope="module", autouse=True)
def loop_devices_available():
    if os.geteuid() != 0:
        pytest.skip("loop devices need root")
    if not os.path.exists("/dev/loop-control"):
        pytest.skip("no /dev/loop-control on this machine")
    for tool in ("losetup", "blkid", "wipefs", "blockdev", "mkfs.ext4", "mkfs.xfs", "sfdisk", "unshare"):
        need(tool)


@contextlib.contextmanager
def loop(image: Path):
    dev = subprocess.run(
        ["losetup", "--find", "--show", str(image)], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    assert dev.startswith("/dev/loop"), dev
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=True, timeout=30)


def sparse(tmp_path: Path, name: str, size_mib: int) -> Path:
    p = tmp_path / f"{name}.img"
    with open(p, "wb") as f:
        f.truncate(size_mib * MIB)
    return p


def digest(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(4 * MIB), b""):
            h.update(block)
    return h.hexdigest()


@dataclasses.dataclass
class Prepared:
    rc: int
    stdout: str
    stderr: str
    mkfs_calls: list[str]


class Runner:
    """Runs the rendered script against one loop device, as the node would (sh = dash here)."""

    def __init__(self, tmp_path: Path, dev: str, disk: str = "data"):
        self.tmp = tmp_path
        byid = tmp_path / "by-id"
        byid.mkdir(exist_ok=True)
        self.link = byid / f"virtio-{st.disk_serial(disk)}"
        if self.link.is_symlink():
            self.link.unlink()
        self.link.symlink_to(dev)
        self.spec = st.DiskSpec(node=NODE, disk=disk, device=str(self.link), label=st.fs_label(disk), wait_s=2)
        self.script = tmp_path / "prepare.sh"
        self.script.write_text(st.render_prepare_script(self.spec))
        self.shims = tmp_path / "shims"
        self.shims.mkdir(exist_ok=True)
        self.log = tmp_path / "mkfs.log"
        self.log.write_text("")
        real = need("mkfs.ext4")
        shim = self.shims / "mkfs.ext4"
        shim.write_text(f'#!/bin/sh\necho "$*" >> {self.log}\nexec {real} "$@"\n')
        shim.chmod(0o755)

    def run(self) -> Prepared:
        env = {**os.environ, "PATH": f"{self.shims}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}:/usr/sbin:/sbin"}
        res = subprocess.run(["sh", str(self.script)], capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)
        calls = [l for l in self.log.read_text().splitlines() if l]
        return Prepared(res.returncode, res.stdout, res.stderr, calls)


def probe(dev: str) -> dict[str, str]:
    out = subprocess.run(["blkid", "-p", "-o", "export", dev], capture_output=True, text=True, timeout=30).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def assert_refused(res: Prepared, runner: Runner, *words: str):
    assert res.rc != 0, res.stdout
    assert res.mkfs_calls == [], "mkfs ran on a disk that was not blank"
    msg = res.stderr
    # names the node and the device
    assert f"microcloud: {NODE}: data disk data ({runner.link})" in msg, msg
    assert "left untouched" in msg, msg
    for w in words:
        assert w in msg, (w, msg)


# ------------------------------------------------------------------ blank disk


def test_blank_disk_is_formatted_once_and_a_second_run_changes_nothing(tmp_path):
    image = sparse(tmp_path, "blank", 64)
    with loop(image) as dev:
        r = Runner(tmp_path, dev)
        first = r.run()
        assert first.rc == 0, first.stderr
        assert len(first.mkfs_calls) == 1 and "-L mc-data" in first.mkfs_calls[0], first.mkfs_calls
        assert "-F" not in first.mkfs_calls[0].split()
        assert "formatted" in first.stdout
        fs = probe(dev)
        assert fs["TYPE"] == "ext4" and fs["LABEL"] == "mc-data" and "PTTYPE" not in fs, fs
        uuid, after_first = fs["UUID"], digest(image)

        second = r.run()
        assert second.rc == 0, second.stderr
        assert len(second.mkfs_calls) == 1, "the second run formatted again"
        assert "already prepared" in second.stdout and uuid in second.stdout
        assert probe(dev)["UUID"] == uuid
        assert digest(image) == after_first, "the second run wrote to the disk"

        # What the mount unit will mount: a clean ext4 found by its label.
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        res = subprocess.run(
            ["unshare", "-m", "sh", "-c", f"mount -t ext4 -o ro {dev} {mnt} && findmnt -rn -o FSTYPE,SOURCE -M {mnt}"],
            capture_output=True, text=True, timeout=60,
        )
        assert res.returncode == 0 and res.stdout.split() == ["ext4", dev], res


def test_a_disk_that_does_not_appear_fails_naming_it(tmp_path):
    image = sparse(tmp_path, "blank", 16)
    with loop(image) as dev:
        r = Runner(tmp_path, dev)
    # detached: the link now leads nowhere a block device is
    r.link.unlink()
    res = r.run()
    assert res.rc != 0 and res.mkfs_calls == []
    assert f"{NODE}: data disk data ({r.link}): no such block device after 2s" in res.stderr, res.stderr


# ------------------------------------------------------------------ foreign disks are never touched


def test_ext4_with_another_label_is_left_byte_identical(tmp_path):
    image = sparse(tmp_path, "ext4", 64)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "photos", str(image)], check=True, timeout=60)
    before = digest(image)
    with loop(image) as dev:
        r = Runner(tmp_path, dev)
        res = r.run()
    assert_refused(res, r, "ext4", "label 'photos'")
    assert digest(image) == before


def test_xfs_is_left_byte_identical(tmp_path):
    image = sparse(tmp_path, "xfs", 320)  # mkfs.xfs wants at least 300 MiB
    subprocess.run(["mkfs.xfs", "-q", "-f", "-L", "other", str(image)], check=True, timeout=120)
    before = digest(image)
    with loop(image) as dev:
        r = Runner(tmp_path, dev)
        res = r.run()
    assert_refused(res, r, "xfs")
    assert digest(image) == before


def test_a_partition_table_is_left_byte_identical(tmp_path):
    image = sparse(tmp_path, "gpt", 64)
    subprocess.run(["sfdisk", "-q", str(image)], input="label: gpt\n,,L\n", text=True, check=True, timeout=60)
    before = digest(image)
    with loop(image) as dev:
        r = Runner(tmp_path, dev)
        res = r.run()
    assert_refused(res, r, "gpt")
    assert digest(image) == before


def test_our_label_inside_a_partition_is_not_ours(tmp_path):
    """Only the whole-disk filesystem this script makes counts: a partitioned disk is someone else's."""
    image = sparse(tmp_path, "gpt-ours", 64)
    subprocess.run(["sfdisk", "-q", str(image)], input="label: gpt\nstart=2048,type=L\n", text=True, check=True, timeout=60)
    part = tmp_path / "part.img"
    subprocess.run(["dd", f"if={image}", f"of={part}", "bs=512", "skip=2048", "status=none"], check=True, timeout=60)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "mc-data", str(part)], check=True, timeout=60)
    subprocess.run(["dd", f"if={part}", f"of={image}", "bs=512", "seek=2048", "conv=notrunc", "status=none"], check=True, timeout=60)
    before = digest(image)
    with loop(image) as dev:
        r = Runner(tmp_path, dev)
        res = r.run()
    assert_refused(res, r, "gpt")
    assert digest(image) == before


@pytest.mark.parametrize("where", ["first", "last"])
def test_data_without_a_signature_is_left_byte_identical(tmp_path, where):
    image = sparse(tmp_path, "junk", 64)
    with open(image, "r+b") as f:
        f.seek(4096 if where == "first" else 64 * MIB - 8192)
        f.write(b"precious bytes no prober knows\n" * 8)
    before = digest(image)
    with loop(image) as dev:
        r = Runner(tmp_path, dev)
        res = r.run()
    assert_refused(res, r, f"its {where} MiB holds data")
    assert digest(image) == before
