#!/usr/bin/env python3
"""Benchmark: the modelled critical path of a first `pulumi up`, from the program's real resource graph.

Not a test (tests/test_day1_model.py checks the model and the target). Rerun with:
    venv/bin/python tests/bench/day1_bench.py [--path] [--write]

The graph is the one the real program (__main__.py) registers under Pulumi mocks
(tests/support/harness.py) for dev, prod, and prod's 3 servers, LB pair and infra
with N Longhorn workers (N = 10, 50, 100; program_bench.workers_model). Each
resource takes the seconds of tests/bench/day1_latency.toml and starts once
everything it waits for is done:

- what it waits for: its dependencies (depends_on and property dependencies, as
  the SDK sent them) and its provider (a provider's id is needed first);
- a custom resource is done at start + its latency;
- a component takes no time: waiting for it is waiting for its children (the
  Pulumi semantics of depends_on a ComponentResource), so it is done when the
  last of them is; one with no child in the mocked graph (a Helm v4 Chart, made by
  the provider) is done at start + its own latency.

Operations are unbounded in parallel (`pulumi up`'s default --parallel). The
critical path is the chain, back from the last resource done, through the
dependency each resource waited for longest. Exits 1 if 3 servers + 100 workers
takes more than TARGET x 3 servers + 10 workers. --write rewrites
tests/bench/day1_results.md.
"""

from __future__ import annotations

import argparse
import heapq
import datetime
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1]))

from program_bench import workers_model  # noqa: E402
from support.harness import run_program, stack_model  # noqa: E402
from components.config import parse_config  # noqa: E402
from components.specs import needed_parallel  # noqa: E402

LATENCY = HERE / "day1_latency.toml"
RESULTS = HERE / "day1_results.md"
COMMAND = "venv/bin/python tests/bench/day1_bench.py --write"
TARGET = 1.3  # 3 servers + 100 workers within this factor of 3 servers + 10 workers
# `pulumi up --parallel` values the results also model: the engine's default here (8, `pulumi up --help`) and larger.
PARALLELS = (8, 64, 256)
WORKERS = (10, 50, 100)
INSTALL = re.compile(r"(?P<node>.+)-k3s(-bootstrap)?")  # a node's K3s install command


@dataclass(frozen=True)
class Rule:
    type: re.Pattern
    name: Optional[re.Pattern]
    role: Optional[str]
    seconds: float


def load_rules(path: Path = LATENCY) -> list[Rule]:
    rules = []
    for raw in tomllib.loads(path.read_text())["rule"]:
        unknown = set(raw) - {"type", "name", "role", "seconds"}
        if unknown:
            raise ValueError(f"{path.name}: unknown keys {sorted(unknown)} in {raw}")
        name = re.compile(raw["name"]) if "name" in raw else None
        if "role" in raw and (name is None or "node" not in name.groupindex):
            raise ValueError(f"{path.name}: role needs a name with a (?P<node>...) group: {raw}")
        rules.append(Rule(re.compile(raw["type"]), name, raw.get("role"), float(raw["seconds"])))
    return rules


def node_roles(model: dict) -> dict[str, str]:
    """Node name -> role, from a stack's config model."""
    return {n["name"]: n["role"] for n in model.get("nodes", [])}


def latency_of(rules: list[Rule], roles: Optional[dict[str, str]] = None) -> Callable[[Any], float]:
    """The seconds of a registration: the first rule matching its type, name (and node role)."""
    roles = roles or {}

    def latency(res: Any) -> float:
        for rule in rules:
            if not rule.type.fullmatch(res.type):
                continue
            m = rule.name.fullmatch(res.name) if rule.name else None
            if rule.name and not m:
                continue
            if rule.role and roles.get(m.group("node")) != rule.role:
                continue
            return rule.seconds
        return 0.0

    return latency


@dataclass(frozen=True)
class Step:
    name: str
    type: str
    start: float
    finish: float


@dataclass
class Schedule:
    start: dict[str, float]   # URN -> when it starts (s)
    finish: dict[str, float]  # URN -> when it is done (s)
    path: list[Step]          # the critical path, first step first (custom resources and childless components)

    @property
    def total(self) -> float:
        return self.path[-1].finish if self.path else 0.0


def waits_for(res: Any, known: dict[str, Any]) -> list[str]:
    """URNs ``res`` waits for: its dependencies, property dependencies and provider (when registered)."""
    urns = list(res.dependencies)
    for deps in (getattr(res, "property_dependencies", None) or {}).values():
        urns += deps
    provider = getattr(res, "provider", "") or ""
    if provider:
        urns.append(provider.rsplit("::", 1)[0])  # "<urn>::<id>"
    return [u for u in dict.fromkeys(urns) if u in known and u != res.urn]


def schedule(resources: Iterable[Any], latency: Callable[[Any], float], parallel: Optional[int] = None) -> Schedule:
    """Start and finish of every resource, and the critical path (see the module docstring).

    ``parallel``: the engine's limit of operations at once (`pulumi up --parallel`); None: unbounded.
    Only operations that take time hold a slot.
    """
    res = list(resources)
    by_urn = {r.urn: r for r in res}
    children: dict[str, list[str]] = {}
    for r in res:
        if r.parent in by_urn:
            children.setdefault(r.parent, []).append(r.urn)
    waits = {r.urn: waits_for(r, by_urn) for r in res}

    def edges(urn: str) -> list[str]:
        kids = [] if by_urn[urn].custom else children.get(urn, [])
        return waits[urn] + kids

    # Topological order by an iterative depth-first walk (chains can be deeper than the recursion limit).
    order: list[str] = []
    state: dict[str, int] = {}  # 1: on the walk, 2: ordered
    for root in by_urn:
        if root in state:
            continue
        state[root] = 1
        walk = [(root, iter(edges(root)))]
        while walk:
            urn, todo = walk[-1]
            nxt = next(todo, None)
            if nxt is None:
                walk.pop()
                state[urn] = 2
                order.append(urn)
            elif state.get(nxt) == 1:
                raise ValueError(f"dependency cycle through {by_urn[nxt].name} ({by_urn[nxt].type})")
            elif nxt not in state:
                state[nxt] = 1
                walk.append((nxt, iter(edges(nxt))))

    start: dict[str, float] = {}
    finish: dict[str, float] = {}
    came_from: dict[str, Optional[str]] = {}  # the dependency (or, for a component, child) done last

    def last_done(urns: list[str]) -> Optional[str]:
        """The one done last; of a tie, the first by name (the same path on every run)."""
        return min(urns, key=lambda u: (-finish[u], by_urn[u].name, u), default=None)

    def place(urn: str, free_at: Optional[list[float]] = None) -> None:
        r = by_urn[urn]
        first = last_done(waits[urn])
        start[urn] = finish[first] if first else 0.0
        kids = [] if r.custom else children.get(urn, [])
        if kids:
            last = last_done(kids)
            finish[urn], came_from[urn] = max(finish[last], start[urn]), last
            return
        took = latency(r)
        if free_at is not None and took > 0:
            # `pulumi up --parallel P`: at most P operations at once; this one waits for the first free.
            start[urn] = max(start[urn], heapq.heappop(free_at))
            heapq.heappush(free_at, start[urn] + took)
        finish[urn], came_from[urn] = start[urn] + took, first

    if parallel is None:
        for urn in order:
            place(urn)
    else:
        # List scheduling: whatever is ready earliest (then first in dependency order) takes the next free slot.
        index = {u: i for i, u in enumerate(order)}
        blockers = {u: len(set(edges(u))) for u in order}
        needed_by: dict[str, list[str]] = {}
        for u in order:
            for d in set(edges(u)):
                needed_by.setdefault(d, []).append(u)
        free_at = [0.0] * parallel
        ready = [(0.0, index[u], u) for u in order if blockers[u] == 0]
        heapq.heapify(ready)
        while ready:
            _, _, urn = heapq.heappop(ready)
            place(urn, free_at)
            for nxt in needed_by.get(urn, []):
                blockers[nxt] -= 1
                if blockers[nxt] == 0:
                    at = max((finish[d] for d in set(edges(nxt))), default=0.0)
                    heapq.heappush(ready, (at, index[nxt], nxt))

    path: list[Step] = []
    urn = last_done(order)
    while urn is not None:
        r = by_urn[urn]
        if r.custom or not children.get(urn):
            path.append(Step(r.name, r.type, start[urn], finish[urn]))
        urn = came_from[urn]
    path.reverse()
    return Schedule(start, finish, path)


@dataclass
class Case:
    label: str
    resources: int
    schedule: Schedule
    # The same graph at `pulumi up --parallel P`: P -> total seconds (see PARALLELS).
    limited: dict[int, float]
    # What the program asks `--parallel` to be for this stack (components/specs/k3s.needed_parallel).
    needed: int


def measure(label: str, stack: str, model: Optional[dict], rules: list[Rule]) -> Case:
    run = run_program(stack, model)
    if run.error:
        raise SystemExit(f"{label}: program failed: {run.error}")
    m = model if model is not None else stack_model(stack)
    latency = latency_of(rules, node_roles(m))
    needed = needed_parallel(parse_config(m))
    return Case(label, len(run.resources), schedule(run.resources, latency),
                {p: schedule(run.resources, latency, parallel=p).total for p in sorted({*PARALLELS, needed})}, needed)


def cases(rules: list[Rule]) -> list[Case]:
    out = [measure("dev", "dev", None, rules), measure("prod", "prod", None, rules)]
    out += [measure(f"3 servers + {n} workers", "prod", workers_model(n), rules) for n in WORKERS]
    return out


def k3s_installs(path: list[Step]) -> list[str]:
    return [s.name for s in path if s.type == "command:remote:Command" and INSTALL.fullmatch(s.name)]


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def clock(seconds: float) -> str:
    """m:ss"""
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


def chain(path: list[Step]) -> str:
    """The steps that take time, in order: name (kind)."""
    return " -> ".join(f"{s.name} ({s.type.rsplit(':', 1)[-1]})" for s in path if s.finish > s.start)


def verdict(small: Case, large: Case) -> tuple[float, bool]:
    ratio = large.schedule.total / small.schedule.total
    return ratio, ratio <= TARGET


def graph_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out


def parallel_markdown(all_cases: list[Case]) -> list[str]:
    """The critical path at the engine's parallelism: its default here, and what the program asks for."""
    limits = sorted({p for c in all_cases for p in c.limited})
    lines = [
        "",
        "At `pulumi up --parallel P` (the engine runs at most P operations at once; its default is 8 on this "
        "2-core machine: `pulumi up --help`). `.ci/dev` passes 256, and the program warns when P is below "
        "the agent wave, naming what it needs (`needed_parallel`: 2 per node, at least 64):",
        "",
        "| topology | " + " | ".join(f"P = {p}" for p in limits) + " | needs |",
        "|---|" + "---:|" * (len(limits) + 1),
    ]
    for c in all_cases:
        cells = [minutes(c.limited[p]) if p in c.limited else "" for p in limits]
        lines.append(f"| {c.label} | " + " | ".join(cells) + f" | {c.needed} |")
    return lines


def results_markdown(all_cases: list[Case], ratio: float, ok: bool) -> str:
    lines = [
        "# Day 1: modelled critical path of a first `pulumi up`",
        "",
        f"Written by `{COMMAND}` on {datetime.date.today().isoformat()}, from the resource graph of "
        f"commit {graph_commit()} under Pulumi mocks, with the latencies of `tests/bench/day1_latency.toml` "
        "(a model, not a measurement: see the docstring of `tests/bench/day1_bench.py`).",
        "",
        "| topology | resources | critical path (min) | steps on it | K3s installs on it |",
        "|---|---:|---:|---:|---|",
    ]
    for c in all_cases:
        installs = ", ".join(k3s_installs(c.schedule.path)) or "-"
        steps = sum(s.finish > s.start for s in c.schedule.path)
        lines.append(f"| {c.label} | {c.resources} | {minutes(c.schedule.total)} | {steps} | {installs} |")
    lines += [
        "",
        f"3 servers + 100 workers / 3 servers + 10 workers: **{ratio:.2f}** "
        f"(target <= {TARGET}): {'within target' if ok else 'NOT within target'}.",
        *parallel_markdown(all_cases),
        "",
        f"Critical path of {all_cases[-1].label} (the steps that take time; start and finish in m:ss; "
        "of dependencies done at the same time, such as every agent's K3s install, it follows the first by name):",
        "",
        "| start | finish | resource | type |",
        "|---:|---:|---|---|",
    ]
    for s in all_cases[-1].schedule.path:
        if s.finish > s.start:
            lines.append(f"| {clock(s.start)} | {clock(s.finish)} | {s.name} | `{s.type}` |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", action="store_true", help="print each case's critical path with start times")
    ap.add_argument("--write", action="store_true", help=f"rewrite {RESULTS.relative_to(HERE.parents[1])}")
    args = ap.parse_args()
    rules = load_rules()
    all_cases = cases(rules)
    print(f"{'topology':<26} {'resources':>9} {'critical min':>12}  K3s installs on the path")
    for c in all_cases:
        installs = k3s_installs(c.schedule.path)
        print(f"{c.label:<26} {c.resources:>9} {minutes(c.schedule.total):>12}  {len(installs)}: {', '.join(installs)}")
    for c in all_cases:
        print(f"\n{c.label}: {chain(c.schedule.path)}")
        if args.path:
            print(f"  {'start':>6} {'finish':>6}")
            for s in c.schedule.path:
                print(f"  {clock(s.start):>6} {clock(s.finish):>6}  {s.name}  [{s.type}]")
    by_label = {c.label: c for c in all_cases}
    small, large = by_label[f"3 servers + {WORKERS[0]} workers"], by_label[f"3 servers + {WORKERS[-1]} workers"]
    ratio, ok = verdict(small, large)
    print(f"\n{large.label} / {small.label}: {ratio:.2f} (target <= {TARGET}): "
          f"{'within target' if ok else 'NOT within target'}")
    if args.write:
        RESULTS.write_text(results_markdown(all_cases, ratio, ok))
        print(f"wrote {RESULTS.relative_to(HERE.parents[1])}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
