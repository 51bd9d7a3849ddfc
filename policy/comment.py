"""The pull-request comment of one stack's preview: a pure function of `pulumi preview --json` output.

``render`` takes the engine's plan, the plan policies' findings
(policy/plan.py), the policy pack's violations as the engine reported them,
and optionally the ``--diff`` display; it returns markdown:

1. the sticky marker (``<!-- microcloud-preview:STACK -->``) and a verdict;
2. policy violations first, mandatory before advisory;
3. a table of create / update / replace / delete per component;
4. every replacement and deletion with its reason (the property that forces it);
5. the full diff, folded, cut to fit a comment.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable, Optional, Sequence

from policy.plan import Finding, destroyed_urns, reason, rname, rtype

MARKER = "<!-- microcloud-preview:{stack} -->"
# GitHub refuses comments over 65536 characters.
LIMIT = 60000
COLUMNS = ("create", "update", "replace", "delete")
OP_COLUMN = {
    "create": "create", "update": "update", "replace": "replace", "create-replacement": None, "delete-replaced": None,
    "delete": "delete", "discard": "delete", "import": "create", "import-replacement": "replace",
}


def component_of(step: dict, parents: dict[str, str]) -> str:
    """The component a resource belongs to (its nearest parent below the stack), as `Type name`."""
    st = step.get("newState") or step.get("oldState") or {}
    if not st.get("custom") and rtype(step["urn"]) != "pulumi:pulumi:Stack":
        urn = step["urn"]
    else:
        urn = st.get("parent") or parents.get(step["urn"], "")
    if not urn or rtype(urn) == "pulumi:pulumi:Stack":
        return "(stack)"
    return f"{rtype(urn).rsplit(':', 1)[-1]} {rname(urn)}"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(stack: str, plan: dict, findings: Sequence[Finding] = (), pack: Iterable[dict] = (), diff_text: Optional[str] = None) -> str:
    """Markdown for one stack; ``pack``: the engine's policy events (policyName, enforcementLevel, message, resourceUrn)."""
    steps = plan.get("steps") or []
    pack = list(pack)
    errors = [d for d in plan.get("diagnostics") or [] if d.get("severity") == "error"]
    blocking = [f for f in findings if f.level == "mandatory"] + [p for p in pack if p.get("enforcementLevel") == "mandatory"]
    lines = [MARKER.format(stack=stack), f"## `pulumi preview` of **{stack}**", ""]
    if blocking or errors:
        what = []
        if blocking:
            what.append(f"{len(blocking)} mandatory policy violation(s)")
        if errors:
            what.append("the preview failed")
        lines.append(f"**Stopped at preview: {' and '.join(what)}.** Nothing may be applied until this is resolved.")
    else:
        lines.append("**Passes every mandatory policy.**")
    lines.append("")

    if blocking or pack or findings or errors:
        lines += ["### Policy violations", ""]
        for p in sorted(pack, key=lambda p: p.get("enforcementLevel") != "mandatory"):
            res = rname(p["resourceUrn"]) if p.get("resourceUrn") else "stack"
            msg = _md((p.get("message") or "").strip().splitlines()[-1])
            lines.append(f"- **{p.get('enforcementLevel', 'advisory')}** `{p.get('policyName')}` ({res}): {msg}")
        for f in findings:
            lines.append(f"- **{f.level}** `{f.policy}`: {_md(f.message)}")
        for d in errors:
            msg = _md(d.get("message", "").strip())
            where = f" ({rname(d['urn'])})" if d.get("urn") else ""
            lines.append(f"- **error**{where}: {msg[:600]}")
        lines.append("")

    parents = {s["urn"]: (s.get("newState") or s.get("oldState") or {}).get("parent", "") for s in steps}
    table: dict[str, Counter] = defaultdict(Counter)
    for s in steps:
        col = OP_COLUMN.get(s["op"])
        if col:
            table[component_of(s, parents)][col] += 1
    lines += ["### Summary", ""]
    if not table:
        lines += ["No changes.", ""]
    else:
        lines += ["| component | " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
        total: Counter = Counter()
        for comp in sorted(table):
            total.update(table[comp])
            lines.append(f"| {_md(comp)} | " + " | ".join(str(table[comp][c] or "") for c in COLUMNS) + " |")
        lines.append("| **total** | " + " | ".join(f"**{total[c]}**" if total[c] else "" for c in COLUMNS) + " |")
        lines.append("")

    destroyed = destroyed_urns(plan)
    gone = [s for s in steps if s["op"] in ("replace", "delete", "discard")]
    if gone:
        lines += ["### Replacements and deletions", ""]
        for s in gone:
            verb = "replaced" if s["op"] == "replace" else "deleted"
            lines.append(f"- `{rname(s['urn'])}` ({rtype(s['urn'])}, in {component_of(s, parents)}) **{verb}**: {_md(reason(s, destroyed))}")
        lines.append("")

    head = "\n".join(lines)
    if diff_text:
        room = LIMIT - len(head) - 200
        body = diff_text if len(diff_text) <= room else diff_text[: max(room, 0)] + "\n... (cut to fit a comment: the job log has all of it)"
        head += "\n<details><summary>Full diff (<code>pulumi preview --diff</code>)</summary>\n\n```diff\n" + body.replace("```", "`\u200b``") + "\n```\n</details>\n"
    return head
