"""Preview a stack under every policy, the pack's and the plan's; write the pull-request comment.

    venv/bin/python policy/guard.py --stack prod [--comment FILE] [--plan FILE] [--cwd DIR] [-- PREVIEW ARGS]

1. ``pulumi preview --json --policy-pack policy`` with the engine's event
   stream: the pack's violations (explicit provider, pinned versions) as the
   engine reports them, and whether the preview itself passed;
2. ``pulumi preview --json``: the plan (every step, op, reason), on which
   policy/plan.py checks what the pack cannot see (data nodes, K3s quorum,
   secret inputs, VM replacements; see there why);
3. with ``--comment``: ``pulumi preview --diff`` for the folded full diff,
   and policy/comment.py renders the comment to FILE (always written).

Prints every finding, mandatory first. Exit 0: every mandatory policy passed
and the preview ran; 1: a mandatory policy failed or the preview failed;
2: bad usage. Runs ``pulumi`` from PATH with the caller's backend and
passphrase; nothing is applied.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from policy import comment, plan as plan_policies  # noqa: E402

PACK = Path(__file__).resolve().parent


def _pulumi(args: list[str], cwd: Path, stack: str, extra: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = ["pulumi", *args, "--stack", stack, "--non-interactive", "--color=never", *extra]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})


def pack_events(stream: str) -> tuple[list[dict], str]:
    """(policy violations, result) from the engine's JSON event stream."""
    violations, result = [], "unknown"
    for line in stream.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if "policyEvent" in event:
            violations.append(event["policyEvent"])
        elif "summaryEvent" in event:
            result = event["summaryEvent"].get("result", result)
    return violations, result


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stack", "-s", required=True)
    ap.add_argument("--comment", type=Path, help="write the pull-request comment (markdown) here")
    ap.add_argument("--plan", type=Path, help="keep the engine's plan (pulumi preview --json) here")
    ap.add_argument("--cwd", type=Path, default=ROOT, help="the project directory (default: this repository)")
    ap.add_argument("extra", nargs="*", help="more `pulumi preview` arguments, after --")
    args = ap.parse_args(argv)

    streamed = _pulumi(["preview", "--json", "--policy-pack", str(PACK)], args.cwd, args.stack, args.extra,
                       env={"PULUMI_ENABLE_STREAMING_JSON_PREVIEW": "1"})
    pack, result = pack_events(streamed.stdout)
    planned = _pulumi(["preview", "--json"], args.cwd, args.stack, args.extra)
    try:
        plan = json.loads(planned.stdout)
    except ValueError:
        plan = {"steps": [], "diagnostics": [{"severity": "error", "message": (planned.stderr or planned.stdout)[-2000:]}]}
    if args.plan:
        args.plan.write_text(json.dumps(plan, indent=1))
    findings = plan_policies.check(plan)

    if args.comment:
        shown = _pulumi(["preview", "--diff"], args.cwd, args.stack, args.extra)
        args.comment.write_text(comment.render(args.stack, plan, findings, pack, shown.stdout))

    for p in sorted(pack, key=lambda p: p.get("enforcementLevel") != "mandatory"):
        msg = (p.get("message") or "").strip().splitlines()[-1]
        print(f"[{p.get('enforcementLevel')}] {p.get('policyName')}: {msg}")
    for f in findings:
        print(f"[{f.level}] {f.policy}: {f.message}")
    for d in plan.get("diagnostics") or []:
        if d.get("severity") == "error":
            print(f"[error] {d.get('message', '').strip()}", file=sys.stderr)
    failed = (
        streamed.returncode != 0 or planned.returncode != 0 or result == "failed"
        or plan_policies.mandatory(findings) or any(p.get("enforcementLevel") == "mandatory" for p in pack)
    )
    verdict = "stopped: fix the mandatory findings above (or name intended replacements in allow_replace)" if failed else "passes every mandatory policy"
    print(f"{args.stack}: {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
