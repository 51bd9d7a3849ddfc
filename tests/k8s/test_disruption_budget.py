"""The disruption budget's lock against a real API server: the real shell library, real kubectl, its own user.

components/render/budget.py renders a POSIX-sh library (slots of a pool
held as Leases, taken by create or by replace with the resourceVersion read,
renewed in the background, stale holders taken over) and the RBAC of the user
it runs as. Here every contender is ``sh -c`` with that library inlined, its
``budget_kubectl`` the kubectl of .ci/k8s.sh with a client certificate for
``microcloud:disruption-budget`` signed by the test cluster's client CA, and
the RBAC is applied with kubectl as the nodes' K3s applies it.

What is proven, from the API server's own record (watches started before
the contenders, and the Leases' final state):

- the user may take and free slots and drain nodes, and nothing else;
- 20 contenders at once never have more than the budget inside their
  critical sections (a marker ConfigMap each), and with a budget of 3 more
  than one at a time (no accidental serialization); all exit 0, every slot
  ends free;
- a holder killed outright (its renewer with it) loses its slot only once
  its lease ran out; a waiter then gets it;
- a failed hold keeps the slot for the failed-hold time, not the lease time,
  also when a write lands between its read and its replace;
- a holder that comes back (same node name) gets its own slot again, not a
  second one.

Needs the binaries of `bash .ci/k8s.sh`, kubectl among them (skips, naming
it, without them), openssl and sh. Every process a test starts is stopped by
its own process group id.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional

import pytest
import yaml

from components.render import budget

from .cluster import ApiError, Cluster, wait_for

pytestmark = pytest.mark.k8s

NS = budget.NAMESPACE
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def kubectl(k8s_bin) -> str:
    path = k8s_bin / "kubectl"
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} is missing; run `bash .ci/k8s.sh`")
    for tool in ("openssl", "sh"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    return str(path)


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """kubectl's HOME (its discovery cache), shared by every contender, never the user's."""
    return tmp_path_factory.mktemp("budget-home")


def run_kubectl(kubectl: str, kubeconfig: Path, *args: str, home: Path, stdin: Optional[str] = None,
                check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), *args], input=stdin, capture_output=True,
                         text=True, timeout=60, check=False, env={**os.environ, "HOME": str(home)})
    if check and res.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} exited {res.returncode}: {res.stderr.strip()}")
    return res


@pytest.fixture(scope="module")
def budget_user(k8s_cluster: Cluster, kubectl, home, tmp_path_factory) -> Path:
    """The RBAC of render_rbac applied with kubectl, and a kubeconfig of the budget's user (a client certificate
    signed by the cluster's client CA, as ClusterPki signs the nodes' one); removed again afterwards."""
    spec = budget.BudgetSpec(pools=(("agent", 1),))
    rbac = budget.render_rbac(spec)
    run_kubectl(kubectl, k8s_cluster.kubeconfig, "apply", "-f", "-", stdin=rbac, home=home)
    d = tmp_path_factory.mktemp("budget-user")
    pki = k8s_cluster.pki
    key, csr, crt = d / "budget.key", d / "budget.csr", d / "budget.crt"
    k8s_cluster._openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                         "-subj", f"/CN={budget.USER}", "-config", str(pki / "openssl.cnf"),
                         "-keyout", str(key), "-out", str(csr))
    k8s_cluster._openssl("x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key"),
                         "-CAcreateserial", "-days", "2", "-extfile", str(pki / "openssl.cnf"),
                         "-extensions", "client", "-out", str(crt))
    key.chmod(0o600)
    kc = d / "budget.kubeconfig"
    kc.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "budget",
        "clusters": [{"name": "test", "cluster": {"server": k8s_cluster.server,
                                                  "certificate-authority": str(pki / "ca.crt")}}],
        "users": [{"name": "budget", "user": {"client-certificate": str(crt), "client-key": str(key)}}],
        "contexts": [{"name": "budget", "context": {"cluster": "test", "user": "budget"}}],
    }))
    kc.chmod(0o600)
    yield kc
    run_kubectl(kubectl, k8s_cluster.kubeconfig, "delete", "--ignore-not-found", "--wait=false", "-f", "-",
                stdin=rbac, home=home, check=False)


@pytest.fixture
def procs():
    """Every contender a test starts (each in a session of its own); SIGKILLed by process group afterwards."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=10)
        for f in (p.stdout, p.stderr, p.stdin):
            if f:
                f.close()


def free_pool(cluster: Cluster, pool: str) -> None:
    """No Lease of ``pool`` left from an earlier test."""
    for item in cluster.get(LEASES).get("items", []):
        name = item["metadata"]["name"]
        if name.rsplit("-", 1)[0] == pool:
            with contextlib.suppress(ApiError):
                cluster.delete(f"{LEASES}/{name}")


def lease(cluster: Cluster, name: str) -> Optional[dict]:
    status, out = cluster.raw("GET", f"{LEASES}/{name}")
    if status == 404:
        return None
    assert status == 200, out
    return out


def micro(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


# ---------------------------------------------------------------- contenders


@dataclass
class Env:
    cluster: Cluster
    kubectl: str
    kubeconfig: Path  # the budget user's
    home: Path
    procs: list

    def contender(self, spec: budget.BudgetSpec, holder: str, body: str, *, stdin: bool = False,
                  budget_kubectl: Optional[str] = None) -> subprocess.Popen:
        """``sh -c``: ``set -eu`` as the install script and the reboot agent have it, the library inlined,
        budget_kubectl the budget user's kubectl, then ``body``."""
        q = shlex.quote
        script = "\n".join([
            "set -eu",
            budget.render_lib(spec),
            f"budget_kubectl={q(budget_kubectl or self.kubectl + ' --kubeconfig ' + str(self.kubeconfig))}",
            f"budget_holder={q(holder)}",
            f"admin={q(self.kubectl + ' --kubeconfig ' + str(self.cluster.kubeconfig))}",
            body,
        ])
        p = subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "HOME": str(self.home)}, start_new_session=True)
        self.procs.append(p)
        return p

    def watch(self, ns: str, resource: str) -> "Watch":
        return Watch(self, ns, resource)


def finish(p: subprocess.Popen, timeout: float) -> tuple[int, str, str]:
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate(timeout=10)
        raise AssertionError(f"contender {p.pid} still running after {timeout:.0f}s; stderr:\n{err}") from None
    return p.returncode, out, err


def first_line(p: subprocess.Popen, timeout: float = 60) -> str:
    """The contender's first line on stdout (the slot it took); fails, with its stderr, if none comes."""
    ready, _, _ = select.select([p.stdout], [], [], timeout)
    line = p.stdout.readline() if ready else ""
    if not line:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        _, err = p.communicate(timeout=10)
        raise AssertionError(f"contender {p.pid} printed no slot within {timeout:.0f}s (exit {p.returncode}):\n{err}")
    return line.strip()


class Watch:
    """``kubectl get RESOURCE -w --output-watch-events -o json`` as the admin, from before anything is started.

    A sentinel object created after the start and another before the end frame the events: everything
    between them is the API server's complete, ordered record of what happened meanwhile.
    """

    def __init__(self, env: Env, ns: str, resource: str):
        self.env, self.ns, self.resource = env, ns, resource
        self.path = env.home / f"watch-{resource}-{uuid.uuid4().hex[:8]}.json"
        self.tag = uuid.uuid4().hex[:8]

    def _sentinel(self, which: str) -> str:
        name = f"zz-watch-{which}-{self.tag}"
        if self.resource == "configmaps":
            self.env.cluster.create(f"/api/v1/namespaces/{self.ns}/configmaps",
                                    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}})
        else:
            self.env.cluster.create(f"/apis/coordination.k8s.io/v1/namespaces/{self.ns}/leases",
                                    {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                     "metadata": {"name": name}, "spec": {}})
        return name

    def _names(self) -> list[tuple[str, str]]:
        return [(e["type"], e["object"]["metadata"]["name"]) for e in self.all_events()]

    def all_events(self) -> list[dict]:
        text = self.path.read_text(errors="replace")
        dec, pos, out = json.JSONDecoder(), 0, []
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos >= len(text):
                return out
            try:
                obj, pos = dec.raw_decode(text, pos)
            except ValueError:
                return out  # an event still being written
            out.append(obj)

    def __enter__(self) -> "Watch":
        self.out = open(self.path, "w")
        self.popen = subprocess.Popen(
            [self.env.kubectl, "--kubeconfig", str(self.env.cluster.kubeconfig), "-n", self.ns, "get", self.resource,
             "-w", "--output-watch-events", "-o", "json"],
            stdin=subprocess.DEVNULL, stdout=self.out, stderr=subprocess.STDOUT,
            env={**os.environ, "HOME": str(self.env.home)}, start_new_session=True)
        self.start = self._sentinel("start")
        wait_for(lambda: ("ADDED", self.start) in self._names(), 30, f"the {self.resource} watch to start")
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)
        self.out.close()
        base = "/api/v1" if self.resource == "configmaps" else "/apis/coordination.k8s.io/v1"
        for name in (self.start, getattr(self, "end", None)):
            if name:
                with contextlib.suppress(ApiError):
                    self.env.cluster.delete(f"{base}/namespaces/{self.ns}/{self.resource}/{name}")

    def events(self) -> list[dict]:
        """The events between the sentinels (waits for the end one: everything before it has been delivered)."""
        self.end = self._sentinel("end")
        wait_for(lambda: ("ADDED", self.end) in self._names(), 30, f"the {self.resource} watch's end sentinel")
        evs = self.all_events()
        names = [(e["type"], e["object"]["metadata"]["name"]) for e in evs]
        first, last = names.index(("ADDED", self.start)), names.index(("ADDED", self.end))
        return evs[first + 1:last]


@pytest.fixture
def env(k8s_cluster, kubectl, budget_user, home, procs) -> Env:
    return Env(k8s_cluster, kubectl, budget_user, home, procs)


def lease_events(events: list[dict], name: str) -> list[tuple[str, dict]]:
    """(type, spec) of one Lease's versions, in the API server's order."""
    return [(e["type"], e["object"].get("spec", {})) for e in events if e["object"]["metadata"]["name"] == name]


# ---------------------------------------------------------------- RBAC


def test_the_budget_user_may_take_slots_and_drain_and_nothing_else(env: Env):
    def can(*args: str) -> bool:
        res = run_kubectl(env.kubectl, env.kubeconfig, "auth", "can-i", *args, home=env.home, check=False)
        assert res.stdout.strip() in ("yes", "no"), res.stderr
        return res.stdout.strip() == "yes"

    who = run_kubectl(env.kubectl, env.kubeconfig, "auth", "whoami", "-o", "json", home=env.home)
    assert json.loads(who.stdout)["status"]["userInfo"]["username"] == budget.USER

    allowed = [
        ("create", "leases.coordination.k8s.io", "-n", NS),
        ("update", "leases.coordination.k8s.io", "-n", NS),
        ("get", "leases.coordination.k8s.io", "-n", NS),
        ("list", "leases.coordination.k8s.io", "-n", NS),
        ("patch", "nodes"),
        ("get", "nodes"),
        ("list", "pods", "--all-namespaces"),
        ("create", "pods", "--subresource=eviction", "-n", "default"),
        ("get", "daemonsets.apps", "-n", "kube-system"),
    ]
    refused = [
        ("create", "leases.coordination.k8s.io", "-n", "default"),
        ("update", "leases.coordination.k8s.io", "-n", "kube-node-lease"),  # the nodes' heartbeats
        ("update", "leases.coordination.k8s.io", "-n", "kube-system"),  # the controllers' leader election
        ("get", "secrets", "-n", NS),
        ("list", "secrets", "--all-namespaces"),
        ("delete", "nodes"),
        ("update", "nodes"),
        ("delete", "pods", "-n", "default"),
        ("create", "pods", "-n", "default"),
        ("create", "configmaps", "-n", NS),
        ("patch", "namespaces"),
        ("update", "roles.rbac.authorization.k8s.io", "-n", NS),
        ("bind", "clusterroles.rbac.authorization.k8s.io"),
    ]
    assert [a for a in allowed if not can(*a)] == []
    assert [r for r in refused if can(*r)] == []
    # And the API itself refuses, not only the review.
    res = run_kubectl(env.kubectl, env.kubeconfig, "-n", NS, "get", "secrets", home=env.home, check=False)
    assert res.returncode != 0 and "forbidden" in res.stderr.lower()
    doc = json.dumps({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                      "metadata": {"name": "not-yours", "namespace": "default"}, "spec": {}})
    res = run_kubectl(env.kubectl, env.kubeconfig, "create", "-f", "-", stdin=doc, home=env.home, check=False)
    assert res.returncode != 0 and "forbidden" in res.stderr.lower()


# ---------------------------------------------------------------- contention

CONTENDERS = 20


@pytest.mark.parametrize("size", [1, 3])
def test_contenders_never_exceed_the_budget(env: Env, k8s_namespace, size):
    spec = budget.BudgetSpec(pools=(("agent", size),), lease_seconds=30, wait_seconds=600, failed_hold_seconds=30)
    free_pool(env.cluster, "agent")
    body = "\n".join([
        "budget_acquire agent || exit 10",
        f'$admin -n {k8s_namespace} create configmap "inside-$budget_holder" >/dev/null || exit 11',
        "sleep 1",
        f'$admin -n {k8s_namespace} delete configmap "inside-$budget_holder" >/dev/null || exit 12',
        'slot=$budget_slot; budget_release; echo "$slot"',
    ])
    holders = [f"node-{n:02d}" for n in range(1, CONTENDERS + 1)]
    t0 = time.monotonic()
    with env.watch(k8s_namespace, "configmaps") as markers, env.watch(NS, "leases") as leases:
        ps = [env.contender(spec, h, body) for h in holders]
        results = [finish(p, timeout=spec.wait_seconds) for p in ps]
        marker_events, lease_evs = markers.events(), leases.events()
    took = time.monotonic() - t0
    bad = [(h, rc, err.strip()) for h, (rc, _, err) in zip(holders, results) if rc != 0]
    assert bad == [], bad
    slots = {out.strip() for _, out, _ in results}
    assert slots <= {f"agent-{i}" for i in range(size)}, slots

    # The critical sections, from the API server's ordered record of the markers.
    inside: set[str] = set()
    most, seen = 0, {"ADDED": [], "DELETED": []}
    for e in marker_events:
        name = e["object"]["metadata"]["name"]
        if not name.startswith("inside-") or e["type"] not in seen:
            continue
        seen[e["type"]].append(name)
        if e["type"] == "ADDED":
            inside.add(name)
            most = max(most, len(inside))
        else:
            inside.discard(name)
    want = sorted(f"inside-{h}" for h in holders)
    assert sorted(seen["ADDED"]) == want and sorted(seen["DELETED"]) == want
    assert most <= size, f"{most} contenders inside at once with a budget of {size}"
    if size > 1:
        assert most > 1, f"never more than one contender inside with a budget of {size}: the lock serialized"

    # The Leases: only the pool's slots, each version held by one node at most, all free in the end.
    names = {e["object"]["metadata"]["name"] for e in lease_evs if e["object"]["metadata"]["name"].startswith("agent-")}
    assert names <= {f"agent-{i}" for i in range(size)}
    holding: dict[str, str] = {}
    for e in lease_evs:
        name = e["object"]["metadata"]["name"]
        if name in names:
            holding[name] = e["object"]["spec"].get("holderIdentity") or ""
            held = [h for h in holding.values() if h]
            assert len(held) == len(set(held)), f"one node held two slots: {holding}"
    for i in range(size):
        obj = lease(env.cluster, f"agent-{i}")
        assert obj is not None and not obj["spec"].get("holderIdentity"), obj
    print(f"budget {size}: {CONTENDERS} contenders in {took:.1f}s, at most {most} inside at once")


# ---------------------------------------------------------------- crashed holder


HOLD = "\n".join([
    "budget_acquire \"$pool\" || exit 10",
    'echo "$budget_slot"',
    "read -r line",  # until the test says so (or kills us)
    "budget_release",
])


def test_a_killed_holder_keeps_its_slot_until_the_lease_ran_out(env: Env):
    spec = budget.BudgetSpec(pools=(("crash", 1),), lease_seconds=10, wait_seconds=120, failed_hold_seconds=10)
    free_pool(env.cluster, "crash")
    with env.watch(NS, "leases") as w:
        a = env.contender(spec, "node-a", "pool=crash\n" + HOLD, stdin=True)
        assert first_line(a) == "crash-0"
        # The background renewer renews (every third of the lease) while the holder waits.
        wait_for(lambda: (obj := lease(env.cluster, "crash-0")) and obj["spec"]["renewTime"] != obj["spec"]["acquireTime"],
                 15, "the holder's first renewal")
        b = env.contender(spec, "node-b", "pool=crash\nbudget_acquire crash || exit 10\necho \"$budget_slot\"\n"
                          "budget_release")
        time.sleep(3)  # b is waiting: the slot is held and fresh
        assert b.poll() is None
        assert lease(env.cluster, "crash-0")["spec"]["holderIdentity"] == "node-a"
        os.killpg(a.pid, signal.SIGKILL)  # the holder and its renewer, nothing else
        a.wait(timeout=10)
        rc, out, err = finish(b, timeout=60)
        assert rc == 0, err
        assert out.strip() == "crash-0"
        evs = lease_events(w.events(), "crash-0")
    # The API server's record: node-a's versions, then node-b's; node-b's first version came only after
    # node-a's last renewal plus the lease time.
    holders = [s.get("holderIdentity") for _, s in evs]
    first_b = holders.index("node-b")
    assert set(holders[:first_b]) == {"node-a"}, holders
    assert len(holders[:first_b]) >= 2, "node-a was never renewed"
    last_a, took = evs[first_b - 1][1], evs[first_b][1]
    expiry = micro(last_a["renewTime"]).timestamp() + last_a["leaseDurationSeconds"]
    taken = micro(took["acquireTime"]).timestamp()
    assert taken >= expiry, f"node-b took the slot {expiry - taken:.1f}s before node-a's lease ran out"
    # A waiter retries every 2-5 s; a loaded machine may add some.
    assert taken - expiry < 15, f"node-b took the slot only {taken - expiry:.1f}s after it was free"
    assert took["leaseDurationSeconds"] == spec.lease_seconds
    assert not lease(env.cluster, "crash-0")["spec"].get("holderIdentity")


# ---------------------------------------------------------------- failed hold


def test_a_failed_hold_keeps_the_slot_for_the_failed_hold_time(env: Env):
    spec = budget.BudgetSpec(pools=(("failed", 1),), lease_seconds=10, wait_seconds=120, failed_hold_seconds=20)
    free_pool(env.cluster, "failed")
    with env.watch(NS, "leases") as w:
        a = env.contender(spec, "node-a", "budget_acquire failed || exit 10\nbudget_hold_failed")
        rc, _, err = finish(a, timeout=60)
        assert rc == 0, err
        assert "node-a: budget: slot failed-0 stays held for 20s" in err
        b = env.contender(spec, "node-b", "budget_acquire failed || exit 10\necho \"$budget_slot\"\nbudget_release")
        rc, out, err = finish(b, timeout=60)
        assert rc == 0, err
        assert out.strip() == "failed-0"
        evs = lease_events(w.events(), "failed-0")
    holders = [s.get("holderIdentity") for _, s in evs]
    first_b = holders.index("node-b")
    assert set(holders[:first_b]) == {"node-a"}, holders
    last_a, took = evs[first_b - 1][1], evs[first_b][1]
    # The failed hold is the last thing node-a wrote: no renewer is left behind to renew it.
    assert last_a["leaseDurationSeconds"] == spec.failed_hold_seconds
    held_until = micro(last_a["renewTime"]).timestamp() + spec.failed_hold_seconds
    taken = micro(took["acquireTime"]).timestamp()
    assert taken >= held_until, f"node-b took the slot {held_until - taken:.1f}s before the failed hold ended"
    assert taken - held_until < 15
    assert took["leaseDurationSeconds"] == spec.lease_seconds


def test_a_failed_hold_outlasts_a_renewal_that_lands_in_between(env: Env):
    """Stopping the renewer does not stop a kubectl it already started: that renewal may land between the
    failed hold's read and its replace (here: someone writes the Lease exactly then). The hold is still recorded."""
    spec = budget.BudgetSpec(pools=(("failed2", 1),), lease_seconds=10, wait_seconds=60, failed_hold_seconds=20)
    free_pool(env.cluster, "failed2")
    q = shlex.quote
    flag = env.home / f"bump-{uuid.uuid4().hex[:8]}"
    wrapper = env.home / "kubectl-bumped.sh"
    wrapper.write_text("\n".join([
        "#!/bin/sh",
        "# The budget user's kubectl; once the flag exists, the next replace finds the Lease written just before.",
        'case " $* " in *" replace "*)',
        f"  if [ -e {q(str(flag))} ]; then rm -f {q(str(flag))}",
        f"    {q(env.kubectl)} --kubeconfig {q(str(env.cluster.kubeconfig))} -n {NS} annotate --overwrite"
        " lease failed2-0 microcloud.test/bumped=yes >/dev/null",
        "  fi ;;",
        "esac",
        f'exec {q(env.kubectl)} --kubeconfig {q(str(env.kubeconfig))} "$@"',
    ]) + "\n")
    with env.watch(NS, "leases") as w:
        a = env.contender(spec, "node-a", f"budget_acquire failed2 || exit 10\ntouch {q(str(flag))}\nbudget_hold_failed",
                          budget_kubectl=f"sh {wrapper}")
        rc, _, err = finish(a, timeout=60)
        assert rc == 0, err
        assert not flag.exists(), "the failed hold wrote nothing"
        evs = [e["object"] for e in w.events() if e["object"]["metadata"]["name"] == "failed2-0"]
    # Taken, written in between, then the failed hold (a replace: the annotation of the write in between goes).
    assert [o["spec"]["leaseDurationSeconds"] for o in evs] == [10, 10, 20], evs
    assert (evs[1]["metadata"].get("annotations") or {}).get("microcloud.test/bumped") == "yes"
    obj = lease(env.cluster, "failed2-0")
    assert obj["spec"]["holderIdentity"] == "node-a"
    assert obj["spec"]["leaseDurationSeconds"] == spec.failed_hold_seconds, (
        "the failed hold was lost to the write in between: the slot frees itself after the lease time")


# ---------------------------------------------------------------- the same holder again


def test_a_holder_that_comes_back_gets_its_own_slot(env: Env):
    spec = budget.BudgetSpec(pools=(("again", 3),), lease_seconds=60, wait_seconds=120, failed_hold_seconds=60)
    free_pool(env.cluster, "again")
    x = env.contender(spec, "node-x", "pool=again\n" + HOLD, stdin=True)
    assert first_line(x) == "again-0"
    a1 = env.contender(spec, "node-a", "pool=again\n" + HOLD, stdin=True)
    assert first_line(a1) == "again-1"
    first = lease(env.cluster, "again-1")["spec"]
    # node-a's run dies with its slot held (a reboot in the middle, a crash); node-x frees its slot: the first
    # free slot is now again-0, in front of node-a's own.
    os.killpg(a1.pid, signal.SIGKILL)
    a1.wait(timeout=10)
    x.stdin.write("\n")
    x.stdin.flush()
    rc, _, err = finish(x, timeout=60)
    assert rc == 0, err
    assert not lease(env.cluster, "again-0")["spec"].get("holderIdentity")
    a2 = env.contender(spec, "node-a", "pool=again\n" + HOLD, stdin=True)
    assert first_line(a2) == "again-1"
    again = lease(env.cluster, "again-1")["spec"]
    assert again["holderIdentity"] == "node-a"
    assert again["acquireTime"] == first["acquireTime"], "a slot given back keeps when it was first taken"
    assert not lease(env.cluster, "again-0")["spec"].get("holderIdentity")
    assert lease(env.cluster, "again-2") is None
    a2.stdin.write("\n")
    a2.stdin.flush()
    rc, _, err = finish(a2, timeout=60)
    assert rc == 0, err
    assert not lease(env.cluster, "again-1")["spec"].get("holderIdentity")
