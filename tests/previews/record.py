"""Record the real engine's previews of day-2 changes to prod, the comment renderer's test data.

    venv/bin/python tests/previews/record.py     # needs a libvirtd answering (bash .ci/libvirtd.sh start)

prod's state is built as the engine plans it (tests/support/planned_state.py; the
platform off, libvirt's test driver), then each change below is previewed
with `pulumi preview --json` (and `--diff` where the display stays small)
and stored here, scrubbed: no timestamps or stack traces, the throwaway
paths replaced, long strings (scripts, Ignition) replaced by their length and
sha256 so equal stays equal and different stays different, unchanged
resources kept by URN only. No secret is in a preview: the engine masks them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent.parent), str(HERE.parent)]

BASE_DIR = "/work/microcloud-prod"


def add_worker(m: dict) -> dict:
    m = copy.deepcopy(m)
    w = copy.deepcopy(next(n for n in m["nodes"] if n["name"] == "worker3"))
    w.update(name="worker4", ip=str(w["ip"]).rsplit(".", 1)[0] + ".29")
    w.pop("mac", None)
    m["nodes"].append(w)
    return m


def k3s_flag(m: dict) -> dict:
    m = copy.deepcopy(m)
    for n in m["nodes"]:
        if n["name"] == "worker1":
            n["taints"] = ["dedicated=db:NoSchedule"]
    return m


def domain(m: dict) -> dict:
    return {**copy.deepcopy(m), "domain": "cloud.example.org"}


def remove_storage(m: dict) -> dict:
    m = copy.deepcopy(m)
    m["nodes"] = [n for n in m["nodes"] if n["role"] != "storage"]
    return m


# name -> (change, record the --diff display too)
SCENARIOS = {
    "add-worker": (add_worker, True),
    "k3s-flag": (k3s_flag, True),
    "domain": (domain, False),
    "remove-storage": (remove_storage, False),
}


def trim(step: dict) -> dict:
    """An unchanged resource is kept by name only (the stack's too keeps its outputs: the deployed config)."""
    if step["op"] != "same" or step["urn"].split("::")[-2] == "pulumi:pulumi:Stack":
        return step
    return {"op": "same", "urn": step["urn"]}


def scrub(value, base: str):
    if isinstance(value, dict):
        return {k: scrub(v, base) for k, v in value.items() if k not in ("stackTrace", "sourcePosition", "created", "modified")}
    if isinstance(value, list):
        return [scrub(v, base) for v in value]
    if isinstance(value, str):
        value = value.replace(base, BASE_DIR)
        if len(value) > 240:
            return f"<{len(value)} chars, sha256 {hashlib.sha256(value.encode()).hexdigest()[:16]}>"
    return value


def main() -> int:
    from support import planned_state

    with tempfile.TemporaryDirectory(prefix="mc-record-") as tmp:
        base = Path(tmp)
        st = planned_state.PlannedStack(base, "prod", "test:///default")
        st.build()
        for name, (change, with_display) in SCENARIOS.items():
            plan, res = st.preview(change(st.base_model))
            # A preview the engine itself stops (a protected volume to delete) is recorded too: a reviewer must see it.
            assert plan.get("steps"), res.stdout[-2000:] + res.stderr[-2000:]
            plan["steps"] = [trim(s) for s in plan["steps"]]
            # Kept whole: the config (the policies parse it) and the engine's messages.
            whole = {k: json.loads(json.dumps(plan.pop(k, [])).replace(str(base), BASE_DIR)) for k in ("config", "diagnostics")}
            out = {**scrub(plan, str(base)), **whole}
            (HERE / f"{name}.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
            if with_display:
                st.write(change(st.base_model))
                try:
                    shown = st.run("preview", "--diff")
                finally:
                    st.write(st.base_model)
                text = re.sub(r"Duration: .*", "Duration: (scrubbed)", shown.stdout.replace(str(base), BASE_DIR))
                (HERE / f"{name}.diff.txt").write_text(text)
            print(name, plan.get("changeSummary"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
