#!/usr/bin/env python3
"""Benchmark: wall time to evaluate the whole program under Pulumi mocks.

Not a test. Rerun with:  venv/bin/python tests/bench/program_bench.py [--repeat 7]
Prints the median (and min/max) per topology: dev, prod, and 3 servers + N
workers for N = 10, 50, 100, plus the per-node cost between N=10 and N=100
to show that the cost is linear in nodes.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from support.harness import run_program, stack_model  # noqa: E402


def workers_model(n: int) -> dict:
    """prod's 3 servers, LB pair and infra, with N Longhorn workers on a /22 cluster network."""
    m = stack_model("prod")
    cluster = next(x for x in m["networks"] if x["name"] == "cluster")
    cluster["cidr"] = "10.17.4.0/22"
    base = next(x for x in m["nodes"] if x["name"] == "worker1")
    m["nodes"] = [x for x in m["nodes"] if x["role"] != "agent"]
    for i in range(n):
        ip = f"10.17.{5 + i // 250}.{10 + i % 250}"
        m["nodes"].append({**base, "name": f"worker{i + 1}", "ip": ip})
    return m


def measure(stack: str, model: dict | None, repeat: int) -> tuple[list[float], int]:
    times, count = [], 0
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        run = run_program(stack, model)
        times.append(time.perf_counter() - t0)
        if run.error:
            raise SystemExit(f"{stack}: program failed: {run.error}")
        count = len(run.resources)
    return times, count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    cases = [("dev", "dev", None), ("prod", "prod", None)]
    cases += [(f"3 servers + {n} workers", "prod", workers_model(n)) for n in (10, 50, 100)]
    run_program("dev")  # warm imports once so the first case is not charged for them
    medians = {}
    print(f"{'topology':<26} {'resources':>9} {'median s':>9} {'min s':>7} {'max s':>7}")
    for label, stack, model in cases:
        times, count = measure(stack, model, args.repeat)
        medians[label] = (statistics.median(times), count)
        print(f"{label:<26} {count:>9} {statistics.median(times):>9.3f} {min(times):>7.3f} {max(times):>7.3f}")
    t10, t100 = medians["3 servers + 10 workers"][0], medians["3 servers + 100 workers"][0]
    per_node_small = medians["3 servers + 50 workers"][0] - t10
    per_node_large = t100 - medians["3 servers + 50 workers"][0]
    print(f"per added worker: {1000 * (t100 - t10) / 90:.1f} ms; "
          f"cost of workers 50->100 / 10->50 (1.25 = linear): {per_node_large / per_node_small:.2f}")


if __name__ == "__main__":
    main()
