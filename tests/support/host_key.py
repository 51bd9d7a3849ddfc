"""A real ed25519 host key pair, made once per test run by ssh-keygen, for rendering first-boot configs
the way the program ships them (with the node's host key) before the real validators read them."""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

from components.render.host_key import HostKey


@functools.lru_cache(maxsize=None)
def real_host_key(comment: str = "") -> HostKey:
    tool = shutil.which("ssh-keygen")
    assert tool, "ssh-keygen is not installed (Debian package openssh-client)"
    with tempfile.TemporaryDirectory(prefix="mc-hostkey-") as d:
        key = Path(d) / "k"
        subprocess.run([tool, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)], check=True, timeout=30)
        public = " ".join(key.with_suffix(".pub").read_text().split()[:2])
        return HostKey(private_openssh=key.read_text(), public_openssh=public)
