"""The real engine: the Pulumi CLI and Python language host that .ci/toolchain.sh provides, on this program.

Runs `pulumi preview` with a local file backend and a passphrase secrets
provider on a copy of the program in a temporary directory (the passphrase
provider writes its salt into the stack file, so nothing is run in the
checkout; the copy uses the checkout's venv). No libvirt is contacted: every
case here fails in the program, before any provider is configured.

The full preview / up / re-preview / destroy against libvirtd on booted VMs
is the e2e tier (tests/e2e), which skips naming any missing provider plugin.

A missing toolchain is a failure, not a skip, unless MICROCLOUD_SKIP_ENGINE=1.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from support.cli import POINTER, project_copy, toolchain_bin
from support.harness import stack_config
from test_config import CASES

pytestmark = pytest.mark.engine


def _toolchain_bin() -> Path:
    bin_dir = toolchain_bin()
    if bin_dir is not None:
        return bin_dir
    if os.environ.get("MICROCLOUD_SKIP_ENGINE") == "1":
        pytest.skip("MICROCLOUD_SKIP_ENGINE=1 and no Pulumi toolchain: run bash .ci/toolchain.sh")
    pytest.fail("no Pulumi toolchain for this checkout: run bash .ci/toolchain.sh (a few minutes cold, seconds warm)")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """Environment for the CLI: our binaries first on PATH, project PULUMI_HOME, file backend, no downloads."""
    return project_copy(tmp_path_factory.mktemp("engine"), _toolchain_bin())


def pulumi(engine, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    work, env = engine
    return subprocess.run(
        ["pulumi", "--non-interactive", "--color=never", *args],
        cwd=work, env=env, capture_output=True, text=True, timeout=timeout,
    )


def new_stack(engine, model: dict, key: str = "microcloud:config") -> str:
    """A fresh stack in the temporary backend with ``model`` as its microcloud:config (or as ``key``)."""
    work, _ = engine
    name = f"t{uuid.uuid4().hex[:10]}"
    res = pulumi(engine, "stack", "init", name, "--secrets-provider", "passphrase")
    assert res.returncode == 0, res.stderr
    path = work / f"Pulumi.{name}.yaml"
    doc = yaml.safe_load(path.read_text()) if path.exists() else {}  # keeps the passphrase salt
    config = {k: v for k, v in copy.deepcopy(stack_config("dev")).items() if k != "microcloud:config"}
    config[key] = model
    doc["config"] = config
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return name


def preview_errors(engine, name: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """`pulumi preview --json`: the run and the message of every error diagnostic."""
    res = pulumi(engine, "preview", "--stack", name, "--json")
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "Traceback" not in out and "unhandled" not in out, out
    diagnostics = json.loads(res.stdout)["diagnostics"]
    errors = [d["message"] for d in diagnostics if d["severity"] == "error"]
    return res, errors


def test_cli_and_language_host_versions(engine):
    res = pulumi(engine, "version")
    assert res.returncode == 0 and re.fullmatch(r"v3\.\d+\.\d+\s*", res.stdout), res
    host = Path(POINTER.read_text().strip()) / "pulumi-language-python"
    assert os.access(host, os.X_OK)


# The same mistakes as the config tier, now through the real CLI: first, a middle and the last kinds.
ENGINE_CASES = [CASES[0], CASES[10], CASES[25], CASES[32], CASES[-1]]


@pytest.mark.parametrize("case_id,mutate,key,words", ENGINE_CASES, ids=[c[0] for c in ENGINE_CASES])
def test_config_mistake_is_one_line_through_the_cli(engine, case_id, mutate, key, words):
    """`pulumi preview` on a bad config: exactly one error, one line naming the key and the fix; no traceback, no "unhandled error", nothing but the stack."""
    from support.harness import stack_model

    model = stack_model("dev")
    mutate(model)
    name = new_stack(engine, model)
    res, errors = preview_errors(engine, name)
    assert len(errors) == 1, errors
    line = errors[0].rstrip("\n")
    assert "\n" not in line and line.startswith(f"error: microcloud:config.{key}: "), line
    assert words in line, line
    # No resource but the stack itself was ever registered.
    events = re.findall(r'"type":\s*"([a-z]+:[A-Za-z0-9/_.-]*:[A-Za-z0-9]+)"', res.stdout)
    assert set(events) <= {"pulumi:pulumi:Stack"}, events


def test_stack_key_typo_is_named_through_the_cli(engine):
    """`microcloud:confg` in Pulumi.<stack>.yaml: the typo is named, not "microcloud:config is not set"."""
    from support.harness import stack_model

    name = new_stack(engine, stack_model("dev"), key="microcloud:confg")
    _, errors = preview_errors(engine, name)
    assert errors == ["error: microcloud:confg is not a key of this project; did you mean microcloud:config?\n"], errors


def test_config_mistake_in_the_plain_display(engine):
    """What a user reads without --json: the Diagnostics section holds the one error and nothing else."""
    from support.harness import stack_model

    model = stack_model("dev")
    next(n for n in model["nodes"] if n["name"] == "worker1")["memroy_mib"] = 4096
    name = new_stack(engine, model)
    res = pulumi(engine, "preview", "--stack", name)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "Traceback" not in out and "unhandled" not in out, out
    diagnostics = out.split("Diagnostics:", 1)[1].split("Resources:", 1)[0]
    errors = [ln.strip() for ln in diagnostics.splitlines() if "error:" in ln]
    assert errors == ["error: microcloud:config.nodes[worker1].memroy_mib: unknown key; did you mean memory_mib?"], out
