"""The first hour of a new user: README's setup lines, for real.

`source .ci/env.sh` in a copy of the project, then README's plain
`pulumi preview -s dev`: no Pulumi Cloud login, no missing stack, no
passphrase prompt, and, when the plugin directory is empty, one message
naming every provider plugin and where each binary goes. `.ci/prereqs.sh`
reports what a machine lacks, all at once.

The copy (tests/support/cli.py ``project_copy``, plus .ci/ and the stack files)
keeps its state, passphrase and PULUMI_HOME in a temp dir: the checkout's
stack files and the user's ~/.config are never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import uuid
from pathlib import Path

import pytest

from support.cli import project_copy, require_toolchain
from support.harness import ROOT

pytestmark = pytest.mark.engine

# What pulumi prints when the environment is not set up; none may appear after `source .ci/env.sh`.
NOT_SET_UP = (
    "pulumi login",                      # no backend: Pulumi Cloud login
    "PULUMI_ACCESS_TOKEN",               # ... and its non-interactive form
    "no stack named",                    # stack not created
    "no stack selected",
    "passphrase must be set",            # no PULUMI_CONFIG_PASSPHRASE(_FILE)
    "incorrect passphrase",
    "Enter your passphrase",
    "no Pulumi CLI",                     # env.sh found no toolchain
)


def _toolchain() -> Path:
    return require_toolchain()


def _wanted_plugins() -> dict[str, str]:
    """name -> version, as the installed SDK wheels ask for them (what env.sh must name)."""
    want = {}
    for name in ("command", "libvirt", "random", "tls", "kubernetes"):
        meta = next((ROOT / "venv" / "lib").glob(f"python3*/site-packages/pulumi_{name}/pulumi-plugin.json"))
        want[name] = json.loads(meta.read_text())["version"]
    return want


def _copy(base: Path) -> tuple[Path, dict]:
    """A copy of the project as a fresh clone has it, and an environment with nothing of Pulumi set."""
    bin_dir = _toolchain()
    work, _ = project_copy(base, bin_dir)
    shutil.copytree(ROOT / ".ci", work / ".ci")
    for f in ROOT.glob("Pulumi.*.yaml"):
        # As committed: the checkout's own `source .ci/env.sh` (or .ci/dev) added a salt of its passphrase.
        text = "".join(ln for ln in f.read_text().splitlines(keepends=True) if not ln.startswith("encryptionsalt:"))
        (work / f.name).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULUMI_", "MICROCLOUD_"))}
    env["PATH"] = ":".join(p for p in env.get("PATH", "").split(":") if p and Path(p) != bin_dir)
    # A stray passphrase in the user's shell must not win over the file env.sh sets.
    env["PULUMI_CONFIG_PASSPHRASE"] = "stray-passphrase-from-another-project"
    env["MICROCLOUD_PASSPHRASE_FILE"] = str(base / "config" / "passphrase")
    # Nothing may leave the machine: any plugin download the CLI attempts goes to a closed port here.
    env["PULUMI_PLUGIN_DOWNLOAD_URL_OVERRIDES"] = ".*=http://127.0.0.1:9"
    if bin_dir.parent.name.startswith("pulumi-v"):
        # A fresh clone has no .pulumi-home/toolchain-bin: env.sh finds the cached build itself.
        env["MICROCLOUD_TOOLCHAIN_CACHE"] = str(bin_dir.parent.parent)
    else:
        (work / ".pulumi-home").mkdir()
        (work / ".pulumi-home" / "toolchain-bin").write_text(f"{bin_dir}\n")
    return work, env


def _sourced(work: Path, env: dict, *commands: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`source .ci/env.sh`, its status on stderr, then README's commands, in one bash."""
    script = 'source .ci/env.sh; echo "env.sh status $?" >&2\n' + "\n".join(commands)
    return subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _assert_set_up(out: str, passphrase: Path) -> None:
    found = [s for s in NOT_SET_UP if s in out]
    assert not found, f"{found} in:\n{out}"
    assert passphrase.read_text().strip() not in out, "the passphrase was printed"


def test_env_sh_then_preview_gets_past_login_stack_and_passphrase(tmp_path):
    """Air-gapped, empty plugin dir: env.sh names all five plugins in one message; preview stops at plugins, not before."""
    work, env = _copy(tmp_path)
    empty = tmp_path / "no-plugins"
    empty.mkdir()
    env["MICROCLOUD_PLUGIN_DIR"] = str(empty)
    env["MICROCLOUD_AIRGAPPED"] = "1"
    # The passphrase goes into a directory that exists (like /tmp or ~/.config): its mode is not env.sh's business.
    (tmp_path / "config").mkdir(mode=0o755)
    (tmp_path / "config").chmod(0o755)
    res = _sourced(work, env, "pulumi preview -s dev")
    out = res.stdout + res.stderr
    passphrase = tmp_path / "config" / "passphrase"
    assert stat.S_IMODE((tmp_path / "config").stat().st_mode) == 0o755, "env.sh changed the mode of an existing directory"

    assert "env.sh status 3" in res.stderr, out
    _assert_set_up(out, passphrase)
    # It reached the engine with the dev stack, and stopped at the first plugin the program needs.
    assert "Previewing update (dev)" in out, out
    assert "no resource plugin" in out, out
    assert res.returncode != 0, out
    # ONE message naming every plugin, its version and where its binary goes.
    missing = [ln for ln in res.stderr.splitlines() if ln.startswith("plugins: missing")]
    assert len(missing) == 1, out
    for name, ver in _wanted_plugins().items():
        assert f"{name} {ver}" in missing[0], missing[0]
        assert f"{empty}/{name}-v{ver}/pulumi-resource-{name}" in res.stderr, out
    assert "MICROCLOUD_PLUGIN_DIR" in res.stderr, out
    assert "env.sh: mode: air-gapped" in res.stderr, out
    assert res.stderr.count("(not in the plugin directory; air-gapped: not downloaded)") == len(_wanted_plugins()), out

    # The passphrase: generated once, owner-only; the backend and the stacks: in the project.
    assert stat.S_IMODE(passphrase.stat().st_mode) == 0o600
    stacks = work / ".pulumi-state" / ".pulumi" / "stacks" / "microcloud"
    assert sorted(p.name for p in stacks.glob("*.json")) == ["dev.json", "prod.json"], list(stacks.iterdir())
    assert "created stack(s) dev prod" in res.stderr, out
    assert not (work / ".pulumi-home" / "plugins").exists() or not any((work / ".pulumi-home" / "plugins").iterdir())

    # Sourcing again changes nothing: same passphrase, no stack created, same verdict on plugins.
    before = passphrase.read_text()
    probe = uuid.uuid4().hex
    again = _sourced(work, env, "pulumi stack ls", f"pulumi config set --secret probe {probe} -s dev")
    assert "env.sh status 3" in again.stderr, again.stderr
    assert "created stack" not in again.stderr and "generated" not in again.stderr, again.stderr
    assert passphrase.read_text() == before
    assert "dev*" in again.stdout and "prod" in again.stdout, again.stdout
    # The file env.sh generated is the key of the stacks (not the stray variable of the user's shell).
    plain = {"PATH": env["PATH"], "HOME": env["HOME"], "PULUMI_HOME": str(work / ".pulumi-home"),
             "PULUMI_BACKEND_URL": f"file://{work / '.pulumi-state'}", "PULUMI_CONFIG_PASSPHRASE_FILE": str(passphrase),
             "PULUMI_SKIP_UPDATE_CHECK": "true"}
    got = subprocess.run([str(_toolchain() / "pulumi"), "config", "get", "probe", "-s", "dev"], cwd=work, env=plain,
                         capture_output=True, text=True, timeout=120)
    assert got.returncode == 0 and got.stdout.strip() == probe, got


def test_env_sh_with_the_plugins_previews_dev_and_prod(tmp_path):
    """The plugin directory .ci/dev used: env.sh installs them; README's preview lines get past plugins."""
    work, env = _copy(tmp_path)
    cache = Path(os.environ.get("MICROCLOUD_TOOLCHAIN_CACHE") or Path.home() / ".cache" / "microcloud-toolchain")
    plugin_dir = Path(os.environ.get("MICROCLOUD_PLUGIN_DIR") or cache / "plugins")
    absent = [f"{n}@{v}" for n, v in _wanted_plugins().items()
              if not (plugin_dir / f"{n}-v{v}" / f"pulumi-resource-{n}").exists()]
    if absent:
        pytest.skip(f"no {', '.join(absent)} in {plugin_dir} (README 'Toolchain': fill MICROCLOUD_PLUGIN_DIR, then bash .ci/dev)")
    env["MICROCLOUD_PLUGIN_DIR"] = str(plugin_dir)
    res = _sourced(work, env, "pulumi preview --diff -s prod; echo \"prod status $?\" >&2",
                   "pulumi preview -s dev; echo \"dev status $?\" >&2", timeout=600)
    out = res.stdout + res.stderr
    assert "env.sh status 0" in res.stderr, out
    _assert_set_up(out, tmp_path / "config" / "passphrase")
    assert "no resource plugin" not in out and "plugins: missing" not in out, out
    for stack in ("prod", "dev"):
        assert f"Previewing update ({stack})" in out, out
        # Ends in a plan, or at the libvirt connection (no libvirtd on this host): nothing earlier.
        if f"{stack} status 0" not in res.stderr:
            assert "libvirt" in out.lower() and ("connect" in out.lower() or "socket" in out.lower()), out


def _prereqs(env_extra: dict, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run(["bash", str(ROOT / ".ci" / "prereqs.sh")], env=env, capture_output=True, text=True,
                          timeout=60, **kw)


def test_prereqs_pass_on_this_machine():
    res = _prereqs({})
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("prereqs: ok (") and "go1." in res.stdout, res.stdout


def test_prereqs_name_everything_missing_at_once(tmp_path):
    """Debian 12's go 1.19 and 1 GiB of memory on a machine without the CLI built: both in one report."""
    old_go = tmp_path / "go"
    old_go.write_text('#!/bin/sh\necho "go version go1.19.8 linux/amd64"\n')
    old_go.chmod(0o755)
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:        4000000 kB\nMemAvailable:    1048576 kB\n")
    res = _prereqs({"GO": str(old_go), "MICROCLOUD_MEMINFO": str(meminfo),
                    "MICROCLOUD_TOOLCHAIN_CACHE": str(tmp_path / "cold-cache")})
    assert res.returncode == 1, res
    assert res.stdout == "", res.stdout
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("  - ")]
    assert len(lines) == 2, res.stderr
    assert "go >= 1." in lines[0] and "go1.19.8" in lines[0] and str(old_go) in lines[0], lines[0]
    assert lines[1].startswith("  - memory: 1.0 GiB available"), lines[1]


def test_prereqs_without_go(tmp_path):
    res = _prereqs({"GO": str(tmp_path / "nowhere" / "go")})
    assert res.returncode == 1, res
    assert "no go at" in res.stderr and "/usr/local/go" in res.stderr, res.stderr


def test_prereqs_not_root():
    """A user namespace without a mapping: `id -u` is 65534, the files stay readable."""
    if not shutil.which("unshare"):
        pytest.skip("no unshare (util-linux) to run the check as another user")
    res = subprocess.run(["unshare", "--user", "bash", str(ROOT / ".ci" / "prereqs.sh")],
                         capture_output=True, text=True, timeout=60)
    if "unshare failed" in res.stderr:
        pytest.skip(f"no user namespaces here: {res.stderr.strip()}")
    assert res.returncode == 1, res
    assert "  - root: run as root" in res.stderr, res.stderr
