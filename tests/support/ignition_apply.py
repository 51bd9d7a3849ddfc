"""Apply a rendered Ignition config with the real Ignition runtime, into a temporary root.

Debian's ``ignition`` package ships, besides ignition-validate, the runtime
the initramfs runs (``/usr/lib/dracut/modules.d/30ignition/ignition``). Run
outside a boot it needs:

- ``-platform file``: the config comes from the file named by
  ``IGNITION_CONFIG_FILE`` (upstream's "file" provider);
- stage ``fetch-offline`` (fetch, validate, write ``-config-cache``) and then
  stage ``files`` (users, files, units) against ``-root DIR``;
- ``-config-cache``, ``-state-file`` and ``-neednet`` pointed away from their
  ``/run`` defaults, ``-log-to-stdout`` instead of syslog, and ``TMPDIR``:
  fetch-offline writes its temporary copy of the config to ``os.TempDir()``;
- a root that already has what Flatcar's root has when Ignition runs (below);
- ``setfiles`` on ``PATH``: this build always relabels what it wrote for
  SELinux (``setfiles -r ROOT .../file_contexts -f -``). Ours records its
  arguments and the path list and does nothing else.

Where it writes (checked with strace on this build, Ignition 2.14 Debian):
its own files through ``-root``-joined paths and the three paths above;
users through ``useradd``/``usermod --root ROOT`` (shadow chroots into ROOT
before touching /etc); SSH keys as the user (``setreuid``), which is why
every directory above the root must be searchable by others (``scratch``
makes such a directory; pytest's ``tmp_path`` lives under a 0700 directory).
The only thing it sends outside is log lines to the journal socket, if the
host has one.

Keys land in ``~/.ssh/authorized_keys.d/ignition`` (the build's default,
like Flatcar's, where update-ssh-keys merges the fragments), not in
``~/.ssh/authorized_keys``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

RUNTIME_CANDIDATES = ("/usr/lib/dracut/modules.d/30ignition/ignition",)
STAGES = ("fetch-offline", "files")
STAGE_TIMEOUT = 60
# useradd writes the day of the last password change into etc/shadow; shadow
# takes "today" from SOURCE_DATE_EPOCH, so a tree does not depend on the day
# it was applied (2023-11-14).
SOURCE_DATE_EPOCH = "1700000000"
# Ignition's own record of the run: provisioning boot ID and date, different
# on every run by design. Kept out of the tree, parsed into AppliedTree.result.
RESULT_FILE = "etc/.ignition-result.json"

# What a Flatcar root already holds when Ignition's files stage runs: the
# accounts of flatcar/baselayout (share/baselayout/passwd and group, the ones
# that matter here: root, the default user core and the groups core is in or a
# new user can be given), shadow entries locked like its Makefile makes them
# ("*", fixed last change), /home/core and its .ssh (baselayout-home.conf,
# created before Ignition), and SELinux configured with the mcs policy.
# Nothing else: every other file in the tree came from the config.
FLATCAR_USERS = (
    # name, uid, gid, gecos, home, shell
    ("root", 0, 0, "root", "/root", "/bin/bash"),
    ("core", 500, 500, "Flatcar Admin", "/home/core", "/bin/bash"),
)
FLATCAR_GROUPS = (
    # name, gid, members
    ("root", 0, ("root",)),
    ("wheel", 10, ("root", "core")),
    # useradd's default primary group for a new user when the root has no login.defs
    ("users", 100, ()),
    ("sudo", 150, ()),
    ("docker", 233, ("core",)),
    ("systemd-journal", 248, ("core",)),
    ("portage", 250, ("core",)),
    ("core", 500, ()),
)
SELINUX_CONFIG = "SELINUX=permissive\nSELINUXTYPE=mcs\n"

NOOP_SETFILES = """#!/bin/sh
# Ignition relabels what it wrote; nothing to label in a test root.
printf '%s\\n' "$*" >> "{work}/setfiles.args"
cat >> "{work}/setfiles.paths"
exit 0
"""


class IgnitionError(RuntimeError):
    """A stage failed (or timed out); the message holds Ignition's log and stderr."""


def runtime() -> Optional[str]:
    """The Ignition runtime binary, or None when the ignition package is not installed."""
    for path in RUNTIME_CANDIDATES:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


@dataclass(frozen=True)
class Entry:
    kind: str  # "file" | "dir" | "symlink"
    mode: int  # permission bits only
    uid: int
    gid: int
    sha256: str = ""  # files
    target: str = ""  # symlinks

    def describe(self) -> str:
        what = {"file": f"sha256:{self.sha256}", "symlink": f"-> {self.target}", "dir": ""}[self.kind]
        return f"{self.kind} {self.mode:04o} {self.uid}:{self.gid} {what}".rstrip()


@dataclass
class AppliedTree:
    """Everything under the root after the files stage, read into memory."""

    entries: dict[str, Entry]  # relative path ("etc/hostname") -> entry
    contents: dict[str, bytes]  # relative path -> bytes, regular files only
    result: dict  # etc/.ignition-result.json, parsed
    log: str = field(repr=False, default="")
    setfiles_args: str = field(repr=False, default="")

    # --- whole-tree comparisons

    def manifest(self) -> list[str]:
        """One line per path: kind, mode, owner, content digest or link target; sorted."""
        return [f"{p} {e.describe()}" for p, e in sorted(self.entries.items())]

    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.manifest()).encode()).hexdigest()

    # --- reading

    def text(self, path: str) -> str:
        return self.contents[path.lstrip("/")].decode()

    def has(self, path: str) -> bool:
        return path.lstrip("/") in self.entries

    def entry(self, path: str) -> Entry:
        return self.entries[path.lstrip("/")]

    def files_under(self, prefix: str) -> list[str]:
        prefix = prefix.strip("/") + "/"
        return sorted(p for p, e in self.entries.items() if p.startswith(prefix) and e.kind != "dir")

    def passwd(self) -> dict[str, list[str]]:
        """etc/passwd: name -> [name, x, uid, gid, gecos, home, shell]."""
        return {f[0]: f for f in (line.split(":") for line in self.text("etc/passwd").splitlines()) if f[0]}

    def shadow(self) -> dict[str, list[str]]:
        return {f[0]: f for f in (line.split(":") for line in self.text("etc/shadow").splitlines()) if f[0]}

    def groups(self) -> dict[str, tuple[int, set[str]]]:
        """etc/group: name -> (gid, members)."""
        out = {}
        for line in self.text("etc/group").splitlines():
            name, _, gid, members = line.split(":")
            out[name] = (int(gid), {m for m in members.split(",") if m})
        return out

    def supplementary_groups(self, user: str) -> set[str]:
        return {g for g, (_, members) in self.groups().items() if user in members}


def _base_files() -> dict[str, tuple[str, int]]:
    passwd = "".join(f"{n}:x:{u}:{g}:{c}:{h}:{s}\n" for n, u, g, c, h, s in FLATCAR_USERS)
    shadow = "".join(f"{n}:*:15887:0:::::\n" for n, *_ in FLATCAR_USERS)
    group = "".join(f"{n}:x:{g}:{','.join(m)}\n" for n, g, m in FLATCAR_GROUPS)
    gshadow = "".join(f"{n}:*::{','.join(m)}\n" for n, _, m in FLATCAR_GROUPS)
    return {
        "etc/passwd": (passwd, 0o644),
        "etc/group": (group, 0o644),
        "etc/shadow": (shadow, 0o640),
        "etc/gshadow": (gshadow, 0o640),
        "etc/selinux/config": (SELINUX_CONFIG, 0o644),
    }


def base_paths() -> set[str]:
    """The paths prepare_root lays down (files and directories)."""
    paths = set(_base_files()) | {"etc", "etc/selinux", "home"}
    for name, _, _, _, home, _ in FLATCAR_USERS:
        if home.startswith("/home/"):
            paths |= {home.lstrip("/"), home.lstrip("/") + "/.ssh"}
    return paths


def prepare_root(root: Path) -> None:
    """Lay down what a Flatcar root holds before Ignition runs (see FLATCAR_USERS)."""
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    for rel, (text, mode) in _base_files().items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        path.write_text(text)
        os.chmod(path, mode)
    home = root / "home"
    home.mkdir(mode=0o755, exist_ok=True)
    for name, uid, gid, _, home_dir, _ in FLATCAR_USERS:
        if not home_dir.startswith("/home/"):
            continue
        for rel, mode in ((home_dir, 0o755), (home_dir + "/.ssh", 0o700)):
            path = root / rel.lstrip("/")
            path.mkdir(mode=mode)
            os.chmod(path, mode)
            os.chown(path, uid, gid)


def _check_dirs(root: Path, work: Path) -> None:
    if root == Path("/") or root.parent == root:
        raise ValueError("refusing to apply Ignition to /")
    if root.exists():
        raise ValueError(f"{root} exists; apply() prepares a fresh root")
    if root in work.parents or work in root.parents or root == work:
        raise ValueError(f"root {root} and work {work} must be separate directories")
    for parent in root.parents:
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            raise ValueError(
                f"{parent} is not searchable by others: Ignition writes SSH keys as the user; "
                "put the root under a directory from ignition_apply.scratch()"
            )


def snapshot(root: Path) -> tuple[dict[str, Entry], dict[str, bytes]]:
    entries: dict[str, Entry] = {}
    contents: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            st = os.lstat(path)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                entries[rel] = Entry("symlink", mode, st.st_uid, st.st_gid, target=os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                entries[rel] = Entry("dir", mode, st.st_uid, st.st_gid)
            elif stat.S_ISREG(st.st_mode):
                data = path.read_bytes()
                contents[rel] = data
                entries[rel] = Entry("file", mode, st.st_uid, st.st_gid, sha256=hashlib.sha256(data).hexdigest())
            else:
                raise AssertionError(f"unexpected file type at {rel}: {stat.filemode(st.st_mode)}")
    return entries, contents


def apply(config_json: str, root: Path, work: Path) -> AppliedTree:
    """Run fetch-offline then files for ``config_json`` into a fresh ``root``.

    ``root`` must not exist yet (it is prepared here); ``work`` holds the
    config, cache, state, temporary files, the no-op setfiles and the logs.
    """
    binary = runtime()
    if binary is None:
        raise FileNotFoundError("the Ignition runtime is not installed (Debian package ignition)")
    root, work = Path(root).resolve(), Path(work).resolve()
    _check_dirs(root, work)
    work.mkdir(parents=True, exist_ok=True)
    bindir, tmpdir = work / "bin", work / "tmp"
    bindir.mkdir(exist_ok=True)
    tmpdir.mkdir(exist_ok=True)
    setfiles = bindir / "setfiles"
    setfiles.write_text(NOOP_SETFILES.replace("{work}", str(work)))
    setfiles.chmod(0o755)
    config = work / "config.ign"
    config.write_text(config_json)
    prepare_root(root)

    # A clean environment: no inherited IGNITION_* switch changes what it does.
    env = {
        "PATH": f"{bindir}:/usr/sbin:/usr/bin:/sbin:/bin",
        "IGNITION_CONFIG_FILE": str(config),
        "TMPDIR": str(tmpdir),
        "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH,
        "LC_ALL": "C",
    }
    log = []
    for stage in STAGES:
        cmd = [
            binary,
            "-platform", "file",
            "-stage", stage,
            "-root", str(root),
            "-config-cache", str(work / "ignition.json"),
            "-state-file", str(work / "state"),
            "-neednet", str(work / "neednet"),
            "-log-to-stdout",
        ]  # fmt: skip
        try:
            res = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True, timeout=STAGE_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise IgnitionError(f"ignition stage {stage} timed out after {STAGE_TIMEOUT}s:\n{exc.stdout}{exc.stderr}") from None
        (work / f"{stage}.log").write_text(res.stdout + res.stderr)
        log.append(res.stdout + res.stderr)
        if res.returncode != 0:
            raise IgnitionError(f"ignition stage {stage} failed ({res.returncode}):\n{res.stdout}{res.stderr}")

    entries, contents = snapshot(root)
    result = json.loads(contents.pop(RESULT_FILE))
    del entries[RESULT_FILE]
    args = work / "setfiles.args"
    return AppliedTree(entries, contents, result, "".join(log), args.read_text() if args.exists() else "")


def apply_in(config_json: str, base: Path) -> AppliedTree:
    """apply() in a fresh directory under ``base`` (from scratch()), removed once the tree is read."""
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=base))
    try:
        os.chmod(run_dir, 0o711)
        return apply(config_json, run_dir / "root", run_dir / "work")
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@contextlib.contextmanager
def scratch(prefix: str = "ignition-apply-") -> Iterator[Path]:
    """A private directory in the system temp dir that the user Ignition switches to can search (0711), removed after."""
    path = Path(tempfile.mkdtemp(prefix=prefix)).resolve()
    try:
        os.chmod(path, 0o711)
        yield path
    finally:
        if path.name.startswith(prefix) and path.parent == Path(tempfile.gettempdir()).resolve():
            shutil.rmtree(path, ignore_errors=True)
