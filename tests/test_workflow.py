"""The pull-request workflow (.github/workflows/preview.yml): linted, its rules, its scripts run.

- actionlint (built from Go modules by .ci/actionlint.sh) with shellcheck on
  every `run:` block finds nothing in the repository's workflows, and does
  find each fault planted in a copy (so the lint really runs);
- the rules the workflow must keep, read from the parsed YAML: pinned actions,
  least-privilege permissions, the trigger's paths, one job per stack file,
  the guard command, each stack in its own GitHub environment, secrets only
  the two of that environment and only as environment variables, no expression expanded inside a script;
- the steps' own scripts, run by bash exactly as the runner does
  (`bash --noprofile --norc -eo pipefail`), against a stand-in `gh` that
  serves a pull request's comments (the real jq applies the step's filter):
  the sticky comment is updated, never duplicated; an oversized one is cut
  below GitHub's limit with its folds closed; a preview that did not run still
  gets its comment; forks are skipped, missing secrets fail; the job fails
  exactly when the guard did.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.validators

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "preview.yml"
SECRETS = {"PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE"}
PATHS = [
    "__main__.py",
    "components/**",
    "policy/**",
    "Pulumi.yaml",
    "Pulumi.*.yaml",
    "requirements.txt",
    "gitops/**",
    ".github/workflows/preview.yml",
    ".ci/**",
]
# How the runner runs a step whose shell is bash.
RUNNER_BASH = ["bash", "--noprofile", "--norc", "-eo", "pipefail"]
GITHUB_COMMENT_LIMIT = 65536


def load(path: Path = WORKFLOW) -> dict:
    return yaml.safe_load(path.read_text())


def triggers(wf: dict) -> dict:
    # YAML 1.1 (PyYAML) reads the bare key `on` as True.
    return wf["on"] if "on" in wf else wf[True]


def steps(wf: dict) -> list[dict]:
    return [s for job in wf["jobs"].values() for s in job.get("steps", [])]


def step(wf: dict, step_id: str) -> dict:
    (found,) = [s for s in steps(wf) if s.get("id") == step_id]
    return found


# --- actionlint -------------------------------------------------------------------


@pytest.fixture(scope="module")
def actionlint() -> str:
    proc = subprocess.run(
        ["bash", str(ROOT / ".ci" / "actionlint.sh")], capture_output=True, text=True, timeout=900
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        tail = "\n".join(proc.stderr.splitlines()[-5:])
        pytest.skip(f"actionlint is not built and .ci/actionlint.sh could not build it: {tail}")
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def shellcheck() -> str:
    path = shutil.which("shellcheck")
    if not path:
        pytest.skip("no shellcheck on PATH (.ci/install.sh installs the Debian package)")
    return path


def lint(actionlint: str, shellcheck: str, cwd: Path, *files: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [actionlint, "-no-color", f"-shellcheck={shellcheck}", *files],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_actionlint_finds_nothing_in_the_workflows(actionlint, shellcheck):
    # No file argument: actionlint lints every workflow under .github/workflows.
    proc = lint(actionlint, shellcheck, ROOT)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")
    version = subprocess.run([actionlint, "-version"], capture_output=True, text=True, check=True).stdout
    pinned = re.search(r"^VERSION=v(\S+)$", (ROOT / ".ci" / "actionlint.sh").read_text(), re.M).group(1)
    assert version.splitlines()[0] == pinned


BREAKAGES = {
    # shellcheck runs on run: blocks (SC2086: an unquoted expansion)
    "shellcheck": ('"$GITHUB_OUTPUT"\n            exit 0', "$GITHUB_OUTPUT\n            exit 0", "SC2086"),
    # an untrusted expression expanded inside a script
    "injection": (
        'rm -f "$RUNNER_TEMP/preview-$STACK.md"',
        'rm -f "$RUNNER_TEMP/${{ github.event.pull_request.title }}.md"',
        "potentially untrusted",
    ),
    # a step output of a step that does not exist
    "unknown step": ("steps.guard.outputs.rc }}\n        run: |\n          case", "steps.gaurd.outputs.rc }}\n        run: |\n          case", 'property "gaurd" is not defined'),
    # a key GitHub does not know
    "unknown key": ("timeout-minutes: 60", "timeout-minute: 60", 'unexpected key "timeout-minute"'),
}


@pytest.mark.parametrize("name", list(BREAKAGES))
def test_actionlint_finds_a_planted_fault(actionlint, shellcheck, tmp_path, name):
    old, new, expected = BREAKAGES[name]
    text = WORKFLOW.read_text()
    assert old in text, f"the workflow changed: update the {name!r} breakage"
    broken = tmp_path / ".github" / "workflows" / "preview.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(text.replace(old, new, 1))
    proc = lint(actionlint, shellcheck, tmp_path, ".github/workflows/preview.yml")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert expected in proc.stdout


# --- the rules, from the parsed workflow ---------------------------------------------


def test_every_action_is_pinned_by_commit_with_its_version_in_a_comment():
    uses = [s["uses"] for s in steps(load()) if "uses" in s]
    assert uses, "the workflow uses no action at all: nothing checked"
    for u in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}", u), u
    lines = [ln for ln in WORKFLOW.read_text().splitlines() if re.match(r"\s*(- )?uses:", ln)]
    assert len(lines) == len(uses)
    for ln in lines:
        assert re.search(r"@[0-9a-f]{40} # v\d+\.\d+\.\d+$", ln), ln


def test_permissions_least_privilege_and_only_the_commenting_job_writes():
    wf = load()
    assert wf["permissions"] == {}
    commenting = [
        name
        for name, job in wf["jobs"].items()
        if any("gh api" in s.get("run", "") and "/comments" in s.get("run", "") for s in job["steps"])
    ]
    assert commenting, "no job posts the comment"
    for name, job in wf["jobs"].items():
        perms = job.get("permissions")
        assert isinstance(perms, dict), f"job {name} inherits the default token permissions"
        writes = {k for k, v in perms.items() if v == "write"}
        assert set(perms.values()) <= {"read", "write", "none"}
        assert writes == ({"pull-requests"} if name in commenting else set()), name
        assert perms.get("contents") == "read", name


def test_trigger_is_pull_request_on_the_program_and_stack_files():
    on = triggers(load())
    assert list(on) == ["pull_request"]
    assert on["pull_request"]["paths"] == PATHS
    # Every tracked top-level piece of the program is under the filter.
    for path in ("__main__.py", "Pulumi.yaml", "requirements.txt", "Pulumi.dev.yaml"):
        assert (ROOT / path).is_file()


def test_one_job_per_stack_file_none_cancels_the_other():
    wf = load()
    (job,) = wf["jobs"].values()
    stack_files = sorted(p.name.split(".")[1] for p in ROOT.glob("Pulumi.*.yaml"))
    assert stack_files == ["dev", "prod"]
    assert sorted(job["strategy"]["matrix"]["stack"]) == stack_files
    assert job["strategy"]["fail-fast"] is False
    assert job["env"]["STACK"] == "${{ matrix.stack }}"
    group = job["concurrency"]["group"]
    assert "github.event.pull_request.number" in group and "matrix.stack" in group
    assert job["concurrency"]["cancel-in-progress"] is True


def test_each_stack_previews_in_its_own_environment():
    """The secrets are an environment's, one environment per stack: preview-prod's required reviewers
    (set in GitHub, documented in docs/policies.md) hold the job before it starts, so unreviewed code never
    runs with prod's passphrase, and dev's job gets dev's secrets only."""
    (job,) = load()["jobs"].values()
    assert job["environment"] == "preview-${{ matrix.stack }}"
    doc = (ROOT / "docs" / "policies.md").read_text()
    assert "preview-prod" in doc and "required reviewers" in doc
    assert "must not be the libvirt host" in doc and "ephemeral" in doc


def test_the_guard_runs_the_stack_and_writes_the_comment():
    wf = load()
    guard = step(wf, "guard")
    assert re.search(
        r'^\s*venv/bin/python policy/guard\.py --stack "\$STACK" --comment "\$RUNNER_TEMP/preview-\$STACK\.md"',
        guard["run"],
        re.M,
    )
    comment = step(wf, "comment")
    assert 'file=$RUNNER_TEMP/preview-$STACK.md' in comment["run"]
    assert 'marker="<!-- microcloud-preview:$STACK -->"' in comment["run"]
    assert '"$GITHUB_STEP_SUMMARY"' in comment["run"]
    # The CLI and plugins as .ci/toolchain.sh installs them, before the guard.
    order = [s.get("id") for s in steps(wf)]
    assert "bash .ci/toolchain.sh" in step(wf, "toolchain")["run"]
    assert order.index("toolchain") < order.index("guard") < order.index("comment") < order.index("verdict")


def test_secrets_only_the_two_stack_secrets_only_as_environment():
    wf = load()
    text = WORKFLOW.read_text()
    named = set(re.findall(r"secrets\.(\w+)", text))
    assert named == SECRETS
    assert "secrets.GITHUB_TOKEN" not in text
    holders = {}
    for s in steps(wf):
        assert "secrets." not in s.get("run", ""), s.get("name")
        for key, value in s.get("env", {}).items():
            if "secrets." in str(value) or "github.token" in str(value):
                holders[key] = (s.get("id"), value)
    # The values reach only the guard; the gate learns only whether they are set.
    assert holders == {
        "HAVE_BACKEND": ("gate", "${{ secrets.PULUMI_BACKEND_URL != '' }}"),
        "HAVE_PASSPHRASE": ("gate", "${{ secrets.PULUMI_CONFIG_PASSPHRASE != '' }}"),
        "PULUMI_BACKEND_URL": ("guard", "${{ secrets.PULUMI_BACKEND_URL }}"),
        "PULUMI_CONFIG_PASSPHRASE": ("guard", "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}"),
        "GH_TOKEN": ("comment", "${{ github.token }}"),
    }
    # The checkout leaves no token behind for the pull request's code.
    (checkout,) = [s for s in steps(wf) if s.get("uses", "").startswith("actions/checkout@")]
    assert checkout["with"]["persist-credentials"] is False


def test_no_expression_is_expanded_inside_a_script():
    # Stricter than "no github.event in run:": nothing at all is expanded there.
    runs = [s["run"] for s in steps(load()) if "run" in s]
    assert runs
    for run in runs:
        assert "${{" not in run


# --- the steps' scripts, run as the runner runs them ------------------------------------

FAKE_GH = textwrap.dedent(
    """\
    import json, os, subprocess, sys
    d = os.environ["FAKE_GH_DIR"]
    args = sys.argv[1:]
    with open(os.path.join(d, "calls"), "a") as f:
        f.write(json.dumps(args) + "\\n")
    assert args[0] == "api", args
    method, path, jq, data = "GET", None, None, None
    i = 1
    while i < len(args):
        a = args[i]
        if a == "--method": method = args[i + 1]; i += 2; continue
        if a == "--jq": jq = args[i + 1]; i += 2; continue
        if a == "--input": data = json.load(open(args[i + 1])); i += 2; continue
        if a == "--paginate": i += 1; continue
        path = a; i += 1
    if method == "GET":
        comments = open(os.path.join(d, "comments.json")).read()
        out = subprocess.run(["jq", "-r", jq], input=comments, capture_output=True, text=True, check=True).stdout
        sys.stdout.write(out)
    else:
        with open(os.path.join(d, method), "w") as f:
            json.dump({"path": path, "body": data["body"]}, f)
        print("{}")
    """
)


@pytest.fixture
def jq() -> str:
    path = shutil.which("jq")
    if not path:
        pytest.skip("no jq on PATH: the stand-in gh applies the step's --jq filter with the real jq")
    return path


def run_step(step_id: str, tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, Path]:
    """Run a step's script like the runner; returns the process and the runner's temp dir."""
    script = step(load(), step_id)["run"]
    temp = tmp_path / "runner-temp"
    temp.mkdir(exist_ok=True)
    fakebin = tmp_path / "bin"
    fakebin.mkdir(exist_ok=True)
    gh = fakebin / "gh"
    gh.write_text(f"#!{sys.executable}\n{FAKE_GH}")
    gh.chmod(0o755)
    (tmp_path / "script.sh").write_text(script)
    base = {
        "PATH": f"{fakebin}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "RUNNER_TEMP": str(temp),
        "GITHUB_OUTPUT": str(tmp_path / "output"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
        "GITHUB_SERVER_URL": "https://github.example",
        "GITHUB_REPOSITORY": "owner/microcloud",
        "GITHUB_RUN_ID": "4242",
        "FAKE_GH_DIR": str(tmp_path),
        "STACK": "prod",
    }
    proc = subprocess.run(
        [*RUNNER_BASH, str(tmp_path / "script.sh")],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc, temp


def outputs(tmp_path: Path) -> dict[str, str]:
    f = tmp_path / "output"
    return dict(ln.split("=", 1) for ln in f.read_text().splitlines()) if f.exists() else {}


def gh_calls(tmp_path: Path) -> list[list[str]]:
    f = tmp_path / "calls"
    return [json.loads(ln) for ln in f.read_text().splitlines()] if f.exists() else []


def comments_json(tmp_path: Path, comments: list[dict]) -> None:
    (tmp_path / "comments.json").write_text(json.dumps(comments))


MARKER = "<!-- microcloud-preview:prod -->"
COMMENT_ENV = {"GH_TOKEN": "not-a-token", "PR_NUMBER": "17", "GUARD_RC": "1"}


def write_preview(tmp_path: Path, text: str) -> None:
    temp = tmp_path / "runner-temp"
    temp.mkdir(exist_ok=True)
    (temp / "preview-prod.md").write_text(text)


def test_comment_is_posted_once_then_updated_in_place(tmp_path, jq):
    body = f"{MARKER}\n### prod: 2 to replace\n\n| component | create |\n|---|---|\n| Node | 1 |\n"
    write_preview(tmp_path, body)
    comments_json(
        tmp_path,
        [
            {"id": 1, "user": {"login": "someone"}, "body": "looks good"},
            # Another stack's comment, and a person quoting our marker: neither is ours.
            {"id": 2, "user": {"login": "github-actions[bot]"}, "body": "<!-- microcloud-preview:dev -->\nold"},
            {"id": 3, "user": {"login": "someone"}, "body": f"{MARKER}\nfake"},
        ],
    )
    proc, _ = run_step("comment", tmp_path, COMMENT_ENV)
    assert proc.returncode == 0, proc.stderr
    posted = json.loads((tmp_path / "POST").read_text())
    assert posted == {"path": "repos/owner/microcloud/issues/17/comments", "body": body}
    assert not (tmp_path / "PATCH").exists()
    assert (tmp_path / "summary").read_text() == body

    # The next push: our comment exists, it is edited, and no second one is posted.
    (tmp_path / "POST").unlink()
    comments_json(
        tmp_path,
        [
            {"id": 3, "user": {"login": "someone"}, "body": f"{MARKER}\nfake"},
            {"id": 99, "user": {"login": "github-actions[bot]"}, "body": f"{MARKER}\nold preview"},
        ],
    )
    proc, _ = run_step("comment", tmp_path, COMMENT_ENV)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "PATCH").read_text()) == {
        "path": "repos/owner/microcloud/issues/comments/99",
        "body": body,
    }
    assert not (tmp_path / "POST").exists()
    assert "updated the prod preview comment (99) of pull request #17" in proc.stdout


def test_an_oversized_comment_is_cut_below_the_limit_with_its_folds_closed(tmp_path, jq):
    diff = "".join(f"    ~ resource{i}: property changed from a to b\n" for i in range(6000))
    body = f"{MARKER}\n### prod\n\n<details><summary>full diff</summary>\n\n```diff\n{diff}```\n\n</details>\n"
    assert len(body) > 2 * GITHUB_COMMENT_LIMIT
    write_preview(tmp_path, body)
    comments_json(tmp_path, [])
    proc, _ = run_step("comment", tmp_path, COMMENT_ENV)
    assert proc.returncode == 0, proc.stderr
    posted = json.loads((tmp_path / "POST").read_text())["body"]
    assert len(posted) <= GITHUB_COMMENT_LIMIT
    assert posted.startswith(MARKER + "\n")
    fences = [ln for ln in posted.splitlines() if ln.lstrip().startswith("```")]
    assert len(fences) % 2 == 0
    assert posted.count("<details") == posted.count("</details>") == 1
    assert "**Truncated**" in posted and "https://github.example/owner/microcloud/actions/runs/4242" in posted
    # The job summary keeps the whole comment.
    assert (tmp_path / "summary").read_text() == body


def test_a_preview_that_did_not_run_still_gets_its_comment(tmp_path, jq):
    comments_json(tmp_path, [])
    proc, _ = run_step("comment", tmp_path, {**COMMENT_ENV, "GUARD_RC": ""})
    assert proc.returncode == 0, proc.stderr
    posted = json.loads((tmp_path / "POST").read_text())["body"]
    lines = posted.splitlines()
    assert lines[0] == MARKER
    assert lines[1] == "### Preview of `prod`: not run"
    assert "A step before the preview failed (checkout, venv or .ci/toolchain.sh)." in lines
    assert "Job log: https://github.example/owner/microcloud/actions/runs/4242" in lines


def test_the_marker_is_the_one_the_guard_writes():
    comment = pytest.importorskip("policy.comment", reason="no policy/comment.py (the guard's renderer)")
    assert comment.MARKER.format(stack="prod") == MARKER


def gate_env(backend: bool, passphrase: bool, head: str) -> dict[str, str]:
    return {
        "HAVE_BACKEND": str(backend).lower(),
        "HAVE_PASSPHRASE": str(passphrase).lower(),
        "HEAD_REPO": head,
    }


def test_gate_runs_with_both_secrets(tmp_path):
    proc, _ = run_step("gate", tmp_path, gate_env(True, True, "owner/microcloud"))
    assert proc.returncode == 0, proc.stderr
    assert outputs(tmp_path) == {"run": "true", "comment": "true"}


def test_gate_skips_a_fork_without_failing_and_says_why(tmp_path):
    proc, _ = run_step("gate", tmp_path, gate_env(False, False, "someone/microcloud"))
    assert proc.returncode == 0, proc.stderr
    assert outputs(tmp_path) == {"run": "false", "comment": "false"}
    assert "::notice title=preview skipped::" in proc.stdout
    assert "comes from a fork (someone/microcloud)" in (tmp_path / "summary").read_text()


def test_gate_fails_a_branch_pull_request_when_a_secret_is_missing_and_comments_why(tmp_path, jq):
    proc, temp = run_step("gate", tmp_path, gate_env(True, False, "owner/microcloud"))
    assert proc.returncode == 1
    assert outputs(tmp_path) == {"run": "false", "comment": "true"}
    assert "::error title=preview not run::" in proc.stdout
    # The comment step then says the same in the sticky comment.
    comments_json(tmp_path, [])
    proc, _ = run_step("comment", tmp_path, {**COMMENT_ENV, "GUARD_RC": ""})
    assert proc.returncode == 0, proc.stderr
    posted = json.loads((tmp_path / "POST").read_text())["body"]
    assert posted.startswith(MARKER + "\n### Preview of `prod`: not run\n")
    assert "PULUMI_BACKEND_URL and PULUMI_CONFIG_PASSPHRASE must both be set" in posted


@pytest.mark.parametrize(
    ("rc", "exit_code", "says"),
    [
        ("0", 0, "preview of prod passed every mandatory policy"),
        ("1", 1, "::error title=preview failed::policy/guard.py exited 1"),
        ("2", 1, "::error title=preview failed::policy/guard.py exited 2"),
        ("", 1, "::error title=preview not run::"),
    ],
)
def test_the_job_fails_exactly_when_the_guard_did(tmp_path, rc, exit_code, says):
    proc, _ = run_step("verdict", tmp_path, {"GUARD_RC": rc})
    assert proc.returncode == exit_code
    assert says in proc.stdout
