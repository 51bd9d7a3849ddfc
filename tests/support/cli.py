"""The project's Pulumi CLI on a throwaway copy of the program: shared by the engine and e2e tiers.

The program is copied into a temp dir (the passphrase provider writes its
salt into the stack file, so nothing runs in the checkout) and uses the
checkout's venv; state goes to a file backend beside it, the passphrase is a
throwaway one, plugins come only from the project's PULUMI_HOME (installed
by .ci/toolchain.sh), and nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Optional

from support.harness import ROOT

PULUMI_HOME = ROOT / ".pulumi-home"
POINTER = PULUMI_HOME / "toolchain-bin"


def toolchain_bin() -> Optional[Path]:
    """The directory of the CLI and language host that .ci/toolchain.sh chose, if complete."""
    if POINTER.is_file():
        bin_dir = Path(POINTER.read_text().strip())
        if (bin_dir / "pulumi").is_file() and (bin_dir / "pulumi-language-python").is_file():
            return bin_dir
    return None


def require_toolchain() -> Path:
    """toolchain_bin(), or fail naming the fix (skip only with MICROCLOUD_SKIP_ENGINE=1)."""
    import pytest

    bin_dir = toolchain_bin()
    if bin_dir is None:
        if os.environ.get("MICROCLOUD_SKIP_ENGINE") == "1":
            pytest.skip("MICROCLOUD_SKIP_ENGINE=1 and no Pulumi toolchain: run bash .ci/dev")
        pytest.fail("no Pulumi toolchain for this checkout: run bash .ci/dev (README's first line)")
    return bin_dir


def cli_env(base: Path, bin_dir: Path, **extra_env: str) -> dict:
    """The environment for ``pulumi`` on a throwaway file backend in ``base/state`` (made here)."""
    (base / "state").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
    env.update(
        PATH=f"{bin_dir}:{env.get('PATH', '')}",
        PULUMI_HOME=str(PULUMI_HOME),
        PULUMI_BACKEND_URL=f"file://{base / 'state'}",
        # A throwaway passphrase for a throwaway backend; no secret of any real stack.
        PULUMI_CONFIG_PASSPHRASE=uuid.uuid4().hex,
        PULUMI_SKIP_UPDATE_CHECK="true",
        PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="true",
        PULUMI_IGNORE_AMBIENT_PLUGINS="true",
        **extra_env,
    )
    return env


def project_copy(base: Path, bin_dir: Path, **extra_env: str) -> tuple[Path, dict]:
    """(work dir, environment) for running ``pulumi`` on a copy of the program under ``base``."""
    env = cli_env(base, bin_dir, **extra_env)
    work = base / "project"
    work.mkdir()
    for f in ("Pulumi.yaml", "__main__.py"):
        shutil.copy2(ROOT / f, work / f)
    shutil.copytree(ROOT / "components", work / "components", ignore=shutil.ignore_patterns("__pycache__"))
    (work / "venv").symlink_to(ROOT / "venv")
    return work, env


def plugin_versions_missing(names: tuple[str, ...]) -> list[tuple[str, str | None]]:
    """(name, version) of each plugin the venv's SDK asks for that PULUMI_HOME lacks; version None: no SDK."""
    missing: list[tuple[str, str | None]] = []
    for name in names:
        meta = next((ROOT / "venv" / "lib").glob(f"python3*/site-packages/pulumi_{name}/pulumi-plugin.json"), None)
        if meta is None:
            missing.append((name, None))
            continue
        ver = json.loads(meta.read_text())["version"]
        if not (PULUMI_HOME / "plugins" / f"resource-{name}-v{ver}" / f"pulumi-resource-{name}").exists():
            missing.append((name, ver))
    return missing
