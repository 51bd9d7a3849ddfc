"""The day-1 critical-path model (tests/bench/day1_bench.py): the model on a hand-made graph, and the target on the real graph.

The target: a first `pulumi up` of 3 servers + 100 workers takes at most
1.3 x the time of 3 servers + 10 workers, because the agents install all at
once after the servers instead of one after another.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))

import day1_bench  # noqa: E402
from day1_bench import latency_of, load_rules, schedule  # noqa: E402
from support.harness import Run, run_program  # noqa: E402

COMMAND = "command:remote:Command"


@dataclass
class Res:
    """Just what the model reads of a harness Registration."""

    type: str
    name: str
    custom: bool = True
    parent: str = ""
    dependencies: list[str] = field(default_factory=list)
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)
    provider: str = ""

    @property
    def urn(self) -> str:
        return f"urn:pulumi:t::p::{self.type}::{self.name}"


@pytest.mark.unit
def test_critical_path_waits_for_a_components_children_and_a_provider():
    seconds = {"a": 10, "b": 5, "slow-child": 20, "quick-child": 3, "d": 1, "prov": 30, "e": 2}
    comp = Res("t:index:Comp", "comp", custom=False)
    a = Res("t:index:R", "a")
    b = Res("t:index:R", "b", dependencies=[a.urn])
    slow = Res("t:index:R", "slow-child", parent=comp.urn)
    quick = Res("t:index:R", "quick-child", parent=comp.urn, property_dependencies={"x": [b.urn]})
    d = Res("t:index:R", "d", dependencies=[comp.urn])  # waits for both children: done at 20, not 18
    graph = [comp, a, b, slow, quick, d]
    got = schedule(graph, lambda r: seconds.get(r.name, 0))
    assert (got.start[quick.urn], got.finish[quick.urn]) == (15, 18)
    assert got.finish[comp.urn] == 20
    assert (got.start[d.urn], got.finish[d.urn]) == (20, 21)
    assert [(s.name, s.start, s.finish) for s in got.path] == [("slow-child", 0, 20), ("d", 20, 21)]

    # A resource waits for its provider, which is in no dependency list.
    prov = Res("pulumi:providers:t", "prov")
    e = Res("t:index:R", "e", dependencies=[d.urn], provider=f"{prov.urn}::prov-id")
    got = schedule([*graph, prov, e], lambda r: seconds.get(r.name, 0))
    assert got.total == 32
    assert [s.name for s in got.path] == ["prov", "e"]


@pytest.mark.unit
def test_latency_table_as_documented():
    latency = latency_of(load_rules(), {"m1": "server", "w1": "agent", "s1": "storage"})
    cases = {
        (COMMAND, "m1-k3s-bootstrap"): 60, (COMMAND, "m1-k3s"): 60, (COMMAND, "w1-k3s"): 45, (COMMAND, "s1-k3s"): 45,
        (COMMAND, "k3s-ready"): 20, (COMMAND, "w1-iscsi"): 20, ("command:remote:CopyToRemote", "coredns-upload"): 5,
        ("command:local:Command", "check-flatcar"): 1, ("libvirt:index/domain:Domain", "w1"): 35,
        ("libvirt:index/volume:Volume", "w1-root"): 2, ("tls:index/privateKey:PrivateKey", "k"): 0,
        ("random:index/randomPassword:RandomPassword", "p"): 0, ("kubernetes:core/v1:Namespace", "ns"): 5,
        ("kubernetes:helm.sh/v3:Release", "r"): 60, ("kubernetes:helm.sh/v4:Chart", "c"): 60,
        ("pulumi:providers:kubernetes", "k3s"): 0, ("microcloud:compute:Node", "w1"): 0,
    }
    assert {k: latency(Res(*k)) for k in cases} == cases


@pytest.fixture(scope="module")
def workers() -> dict[int, tuple[Run, day1_bench.Schedule]]:
    rules, out = load_rules(), {}
    for n in (10, 100):
        model = day1_bench.workers_model(n)
        run = run_program("prod", model)
        assert run.error is None, (n, run.error)
        out[n] = run, schedule(run.resources, latency_of(rules, day1_bench.node_roles(model)))
    return out


@pytest.mark.graph
def test_100_workers_within_target_of_10(workers):
    small, large = workers[10][1].total, workers[100][1].total
    assert large <= day1_bench.TARGET * small, (
        f"3 servers + 100 workers: {large / 60:.1f} min, 10 workers: {small / 60:.1f} min; "
        f"critical path: {day1_bench.chain(workers[100][1].path)}")


@pytest.mark.graph
def test_agents_do_not_chain_on_the_critical_path(workers):
    model = day1_bench.workers_model(100)
    roles = day1_bench.node_roles(model)
    for n, (_, sched) in workers.items():
        installs = day1_bench.k3s_installs(sched.path)
        nodes = [day1_bench.INSTALL.fullmatch(name).group("node") for name in installs]
        servers = {x for x in nodes if roles[x] == "server"}
        agents = [x for x in nodes if roles[x] != "server"]
        assert len(servers) <= 3 and len(agents) <= 1, (n, installs)


@pytest.mark.graph
def test_the_parallelism_the_program_asks_for_keeps_the_target_and_the_default_does_not(workers):
    """`pulumi up`'s own default (8 on this 2-core machine) would join 100 agents in batches; what
    needed_parallel asks for (and .ci/dev passes) keeps 100 workers within the target."""
    from components.config import parse_config
    from components.specs import needed_parallel, parallel_warning

    rules = load_rules()
    model = day1_bench.workers_model(100)
    cfg = parse_config(model)
    latency = latency_of(rules, day1_bench.node_roles(model))
    small = workers[10][1].total
    run = workers[100][0]
    enough = schedule(run.resources, latency, parallel=needed_parallel(cfg)).total
    assert enough <= day1_bench.TARGET * small, (enough / 60, small / 60)
    default = schedule(run.resources, latency, parallel=8).total
    assert default > day1_bench.TARGET * small, (default / 60, small / 60)
    # ... and the program says so when it runs with fewer than the wave's agents.
    assert parallel_warning(cfg, 8) and f"--parallel {needed_parallel(cfg)}" in parallel_warning(cfg, 8)
    assert parallel_warning(cfg, needed_parallel(cfg)) is None and parallel_warning(cfg, None) is None


def test_a_parallel_limit_delays_what_does_not_fit():
    """Three 10 s steps with nothing between them: 10 s unbounded, 20 s two at a time, 30 s one at a time."""
    res = [Res(COMMAND, f"c{i}") for i in range(3)]
    latency = lambda r: 10.0  # noqa: E731
    assert [schedule(res, latency, parallel=p).total for p in (None, 2, 1)] == [10.0, 20.0, 30.0]
