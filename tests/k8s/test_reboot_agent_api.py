"""The reboot agent against a real API server: the rendered script under dash, real kubectl, the budget's user.

components/render/reboot.py renders each cluster node's agent: ``check``
takes a slot of the node's pool (render/budget.py's Leases), cordons and
drains the node, writes the hold file, keeps the slot for the failed-hold
time and calls ``systemctl reboot``; ``boot`` waits for the node Ready,
uncordons it, frees the slot and removes the hold file. Here that script, as
rendered, runs for kwok's nodes of the session's cluster (tests/k8s/cluster.py)
with the kubectl of .ci/k8s.sh and a client certificate of
``microcloud:disruption-budget`` (RBAC of ``budget.render_rbac``). Changed for
the test only, each checked to be there exactly once: the reboot-needed test
(``/run/reboot-required`` -> a flag file of the node's), the hold file's path
(a directory of the node's), and ``systemctl`` (a stand-in first on PATH that
only logs its arguments: ``systemctl reboot`` is recorded, never run).

What is proven, from the API server's state and its ordered record (watches
started before the agents):

- one node: ``check`` cordons the node and drains it through the eviction
  API (our Deployment's pods there get the eviction's DisruptionTarget
  condition and go; their replacements run on the other nodes), keeps
  ``agent-0`` for the failed-hold time, names the slot in the hold file and
  reboots; a second ``check`` with the hold on disk does nothing; ``boot``
  uncordons, frees the slot and removes the hold file;
- two nodes, one slot: both need a reboot at once, exactly one takes the slot
  and reboots, the other waits uncordoned until the first one's ``boot`` frees
  it, then reboots in turn: the two were never cordoned at the same time;
- a drain that cannot finish (a PodDisruptionBudget allowing no disruption):
  ``check`` fails after the drain's timeout, the node is uncordoned, the slot
  free, nothing rebooted, the pod untouched.

Needs the binaries of `bash .ci/k8s.sh`, kubectl among them (skips, naming
it, without them), openssl and dash. Every process a test starts is stopped
by its own process group id; nodes are uncordoned and the slots freed again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pytest
import yaml

from components.render import budget, reboot

from .cluster import ApiError, Cluster, NODE_IPS, wait_for

pytestmark = pytest.mark.k8s

NS = budget.NAMESPACE
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"
NODES = tuple(NODE_IPS)
IMAGE = "microcloud-test/none:0"  # kwok runs no container: never pulled

# Short times: a renewal every 3 s; a rebooted node's slot stays held 90 s unless its boot step frees it first.
FAILED_HOLD = 90
BUDGET = budget.BudgetSpec(pools=(("server", 1), ("agent", 1)), lease_seconds=10, wait_seconds=120,
                           failed_hold_seconds=FAILED_HOLD)
WINDOW = 120  # the agent's wait for a slot (the spec's minimum is 60)
NEEDS_REBOOT = reboot.NEEDS_REBOOT["debian"]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def kubectl(k8s_bin) -> str:
    path = k8s_bin / "kubectl"
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} is missing; run `bash .ci/k8s.sh`")
    for tool in ("openssl", "dash"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    return str(path)


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """kubectl's HOME (its discovery cache), never the user's."""
    return tmp_path_factory.mktemp("reboot-home")


def run_kubectl(kubectl: str, kubeconfig: Path, *args: str, home: Path, stdin: Optional[str] = None,
                check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), *args], input=stdin, capture_output=True,
                         text=True, timeout=60, check=False, env={**os.environ, "HOME": str(home)})
    if check and res.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} exited {res.returncode}: {res.stderr.strip()}")
    return res


def budget_namespace_settled(cluster: Cluster) -> bool:
    """The budget's namespace is missing or active: not still being deleted by an earlier module's teardown."""
    status, ns = cluster.raw("GET", f"/api/v1/namespaces/{NS}")
    return status == 404 or (status == 200 and not ns["metadata"].get("deletionTimestamp"))


@pytest.fixture(scope="module")
def budget_user(k8s_cluster: Cluster, kubectl, home, tmp_path_factory) -> Path:
    """render_rbac applied with kubectl as K3s applies it, and a kubeconfig of the budget's user (a client
    certificate signed by the cluster's client CA, as ClusterPki signs the nodes' one); removed afterwards."""
    rbac = budget.render_rbac(BUDGET)
    wait_for(lambda: budget_namespace_settled(k8s_cluster), 120, f"namespace {NS} deleted by an earlier teardown")
    run_kubectl(kubectl, k8s_cluster.kubeconfig, "apply", "-f", "-", stdin=rbac, home=home)
    d = tmp_path_factory.mktemp("reboot-user")
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
    who = run_kubectl(kubectl, kc, "auth", "whoami", "-o", "json", home=home)
    assert json.loads(who.stdout)["status"]["userInfo"]["username"] == budget.USER
    yield kc
    run_kubectl(kubectl, k8s_cluster.kubeconfig, "delete", "--ignore-not-found", "--wait=false", "-f", "-",
                stdin=rbac, home=home, check=False)
    # Gone before the next module of the session applies it again.
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: k8s_cluster.raw("GET", f"/api/v1/namespaces/{NS}")[0] == 404, 60, f"namespace {NS} deleted")


def unschedulable(cluster: Cluster, node: str) -> bool:
    return bool(cluster.get(f"/api/v1/nodes/{node}").get("spec", {}).get("unschedulable"))


def set_unschedulable(cluster: Cluster, node: str, value: bool) -> None:
    cluster.patch(f"/api/v1/nodes/{node}", {"spec": {"unschedulable": True if value else None}})


def free_pool(cluster: Cluster, pool: str) -> None:
    """No Lease of ``pool`` left over (from an earlier test or module)."""
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


def holder(cluster: Cluster, name: str) -> str:
    obj = lease(cluster, name)
    return (obj or {}).get("spec", {}).get("holderIdentity") or ""


# ---------------------------------------------------------------- the agents


def swap(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"the rendered agent has {text.count(old)} of {old!r}, not one"
    return text.replace(old, new)


@dataclass
class Run:
    """One run of an agent: ``dash <script> check|boot`` in a session (process group) of its own."""

    popen: subprocess.Popen
    err: Path

    def poll(self) -> Optional[int]:
        return self.popen.poll()

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def finish(self, timeout: float) -> tuple[int, str]:
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)
            raise AssertionError(f"agent {self.popen.args} still running after {timeout:.0f}s; stderr:\n{self.stderr()}")
        return self.popen.returncode, self.stderr()


@dataclass
class Agent:
    node: str
    dir: Path
    script: Path
    flag: Path  # exists: the OS wants a reboot (Debian's /run/reboot-required)
    hold: Path  # reboot.HOLD
    log: Path  # the stand-in systemctl's calls, one a line
    env: dict
    runs: list

    def needs_reboot(self) -> None:
        self.flag.touch()

    def systemctl(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def start(self, mode: str) -> Run:
        n = len(self.runs)
        err = self.dir / f"{mode}-{n}.stderr"
        with open(err, "w") as e, open(self.dir / f"{mode}-{n}.stdout", "w") as o:
            p = subprocess.Popen(["dash", str(self.script), mode], stdin=subprocess.DEVNULL, stdout=o, stderr=e,
                                 cwd=self.dir, env=self.env, start_new_session=True)
        run = Run(p, err)
        self.runs.append(run)
        return run


@dataclass
class Env:
    cluster: Cluster
    kubectl: str
    kubeconfig: Path  # the budget user's
    home: Path


@pytest.fixture
def env(k8s_cluster, kubectl, budget_user, home) -> Env:
    return Env(k8s_cluster, kubectl, budget_user, home)


@pytest.fixture
def agents(env: Env, tmp_path):
    """make(node, drain_timeout=...) -> the node's agent. Afterwards: every run SIGKILLed by its process group,
    every kwok node cordoned as it was before, the agent pool's Leases deleted."""
    cluster = env.cluster
    before = {n: unschedulable(cluster, n) for n in NODES}
    free_pool(cluster, "agent")
    made: list[Agent] = []

    def make(node: str, *, drain_timeout: int = 60) -> Agent:
        d = tmp_path / node
        (d / "bin").mkdir(parents=True)
        kc_cmd = f"{env.kubectl} --kubeconfig {env.kubeconfig}"
        # The script runs $budget_kubectl unquoted (word split, as `k3s kubectl --kubeconfig …` on a node).
        assert shlex.split(kc_cmd) == kc_cmd.split(), f"a path with blanks or quotes: {kc_cmd!r}"
        spec = reboot.RebootSpec(node=node, os="debian", budget=BUDGET, pool="agent", kubectl=kc_cmd,
                                 window_seconds=WINDOW, drain_timeout=drain_timeout, ready_timeout=60)
        flag, hold, log = d / "reboot-required", d / "var" / "reboot-hold", d / "systemctl.log"
        text = reboot.render_script(spec)
        assert text.count("systemctl") == text.count("systemctl reboot") == 1, "the stand-in covers `systemctl reboot` only"
        text = swap(text, NEEDS_REBOOT, f"[ -e {shlex.quote(str(flag))} ]")
        text = swap(text, f"hold={shlex.quote(reboot.HOLD)}\n", f"hold={shlex.quote(str(hold))}\n")
        assert reboot.HOLD not in text and "/run/reboot-required" not in text
        script = d / "agent.sh"
        script.write_text(text)
        stand_in = d / "bin" / "systemctl"
        stand_in.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$*\" >> {shlex.quote(str(log))}\n")
        stand_in.chmod(0o755)
        run_env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        run_env.update(HOME=str(env.home), PATH=f"{d / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}")
        a = Agent(node, d, script, flag, hold, log, run_env, [])
        made.append(a)
        return a

    yield make
    for a in made:
        for r in a.runs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(r.popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                r.popen.wait(timeout=10)
    for n in NODES:
        if unschedulable(cluster, n) != before[n]:
            set_unschedulable(cluster, n, before[n])
    free_pool(cluster, "agent")


# ---------------------------------------------------------------- the API server's record


class Watch:
    """``kubectl get RESOURCE -w --output-watch-events -o json`` as the admin, started before the agents.

    kubectl lists first (an ADDED event per object), then watches from that list's resourceVersion: the
    events are the API server's complete, ordered record from the list on.
    """

    def __init__(self, env: Env, resource: str, ns: Optional[str] = None):
        self.env, self.resource, self.ns = env, resource, ns
        self.path = env.home / f"watch-{resource}-{uuid.uuid4().hex[:8]}.json"

    def __enter__(self) -> "Watch":
        self.out = open(self.path, "w")
        scope = ["-n", self.ns] if self.ns else []
        self.popen = subprocess.Popen(
            [self.env.kubectl, "--kubeconfig", str(self.env.cluster.kubeconfig), *scope, "get", self.resource,
             "-w", "--output-watch-events", "-o", "json"],
            stdin=subprocess.DEVNULL, stdout=self.out, stderr=subprocess.STDOUT,
            env={**os.environ, "HOME": str(self.env.home)}, start_new_session=True)
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)
        self.out.close()

    def events(self) -> list[dict]:
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

    def until(self, pred: Callable[[list[dict]], bool], timeout: float, what: str) -> list[dict]:
        """The events once ``pred`` holds for them."""
        try:
            wait_for(lambda: pred(self.events()), timeout, what)
        except TimeoutError as err:
            raise AssertionError(f"{err}; the {self.resource} watch wrote:\n{self.path.read_text()[-2000:]}") from None
        return self.events()


def node_watch(env: Env) -> Watch:
    return Watch(env, "nodes")


def started(w: Watch, names) -> list[dict]:
    """Waits for the watch's initial list (an ADDED event for each of ``names``)."""
    want = set(names)
    return w.until(lambda evs: want <= {e["object"]["metadata"]["name"] for e in evs if e["type"] == "ADDED"},
                   30, f"the {w.resource} watch's list of {sorted(want)}")


def cordon_record(events: list[dict], nodes) -> list[tuple[str, bool]]:
    """(node, unschedulable) at each change of one of ``nodes``, in the API server's order (the list first)."""
    state: dict[str, bool] = {}
    changes = []
    for e in events:
        name = e["object"]["metadata"]["name"]
        if name not in nodes or e["type"] not in ("ADDED", "MODIFIED"):
            continue
        now = bool(e["object"].get("spec", {}).get("unschedulable"))
        if state.get(name) != now:
            state[name] = now
            changes.append((name, now))
    return changes


@contextlib.contextmanager
def lease_watch(env: Env):
    """The budget namespace's Leases; a sentinel Lease created after the start shows the watch is running."""
    name = f"zz-watch-{uuid.uuid4().hex[:8]}"
    with Watch(env, "leases", NS) as w:
        env.cluster.create(LEASES, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                    "metadata": {"name": name}, "spec": {}})
        try:
            started(w, [name])
            yield w
        finally:
            with contextlib.suppress(ApiError):
                env.cluster.delete(f"{LEASES}/{name}")


def holders(events: list[dict], name: str) -> list[str]:
    """The holder of Lease ``name`` at each of its changes of holder ("" free), in the API server's order."""
    out: list[str] = []
    for e in events:
        if e["object"]["metadata"]["name"] != name or e["type"] == "DELETED":
            continue
        h = e["object"].get("spec", {}).get("holderIdentity") or ""
        if not out or out[-1] != h:
            out.append(h)
    return out


# ---------------------------------------------------------------- workloads of our own


def deployment(name: str, replicas: int, pod_spec: dict) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "main", "image": IMAGE}], **pod_spec}}},
    }


def pods(cluster: Cluster, ns: str, app: str) -> list[dict]:
    return cluster.get(f"/api/v1/namespaces/{ns}/pods", query={"labelSelector": f"app={app}"})["items"]


def running(cluster: Cluster, ns: str, app: str, replicas: int, timeout: float = 60) -> list[dict]:
    """The app's pods once exactly ``replicas`` of them are Running and none is going."""
    def done():
        ps = pods(cluster, ns, app)
        ok = len(ps) == replicas and all(p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
                                          for p in ps)
        return ps if ok else None

    try:
        return wait_for(done, timeout, f"{replicas} pods of {ns}/{app} Running")
    except TimeoutError as err:
        got = {p["metadata"]["name"]: (p["status"].get("phase"), p["spec"].get("nodeName")) for p in pods(cluster, ns, app)}
        raise AssertionError(f"{err}; pods: {got}\n{cluster.log_tails()}") from None


@pytest.fixture
def workloads(k8s_cluster, k8s_namespace):
    """A namespace for our pods; afterwards its Deployments and pods are gone before the namespace is deleted
    (the kwok nodes are the session's: nothing of ours stays on them)."""
    yield k8s_namespace
    base = f"/namespaces/{k8s_namespace}"
    for path in (f"/apis/policy/v1{base}/poddisruptionbudgets", f"/apis/apps/v1{base}/deployments"):
        with contextlib.suppress(ApiError):
            k8s_cluster.request("DELETE", path, query={"propagationPolicy": "Background"})
    with contextlib.suppress(ApiError):
        k8s_cluster.request("DELETE", f"/api/v1{base}/pods", query={"gracePeriodSeconds": "0"})
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: not k8s_cluster.get(f"/api/v1{base}/pods")["items"], 60, f"the pods of {k8s_namespace} gone")


# ---------------------------------------------------------------- one node


def test_check_drains_and_reboots_then_boot_uncordons_and_frees_the_slot(env: Env, agents, workloads):
    cluster, ns, node = env.cluster, workloads, "kwok-node-1"
    others = set(NODES) - {node}
    # Preferring the node that reboots: the first replica lands there for sure (nothing else tells the nodes apart).
    prefer = {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": 100,
        "preference": {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]},
    }]}}}
    cluster.create(f"/apis/apps/v1/namespaces/{ns}/deployments", deployment("web", 2, prefer))
    before = running(cluster, ns, "web", 2)
    ours = {p["metadata"]["name"] for p in before if p["spec"]["nodeName"] == node}
    assert ours, f"no pod of ours on {node}: {[(p['metadata']['name'], p['spec']['nodeName']) for p in before]}"

    a = agents(node)
    # Nothing to do while the OS does not ask for a reboot.
    rc, err = a.start("check").finish(60)
    assert (rc, a.systemctl(), unschedulable(cluster, node), lease(cluster, "agent-0")) == (0, [], False, None), err

    a.needs_reboot()
    with Watch(env, "pods", ns) as pw, lease_watch(env) as lw:
        started(pw, {p["metadata"]["name"] for p in before})
        t0 = time.monotonic()
        rc, err = a.start("check").finish(WINDOW)
        took = time.monotonic() - t0
        assert rc == 0, err
        pod_evs = pw.until(lambda evs: ours <= {e["object"]["metadata"]["name"] for e in evs if e["type"] == "DELETED"},
                           30, f"the DELETED events of {sorted(ours)}")
        lease_evs = lw.events()

    assert a.systemctl() == ["reboot"], err
    assert "rebooting (slot agent-0)" in err
    assert unschedulable(cluster, node)
    # Drained through the eviction API (it marks the pod before deleting it), every pod of ours on the node.
    for name in ours:
        marks = [c for e in pod_evs if e["object"]["metadata"]["name"] == name
                 for c in e["object"].get("status", {}).get("conditions", []) if c["type"] == "DisruptionTarget"]
        assert any(c["reason"] == "EvictionByEvictionAPI" for c in marks), (name, marks)
    after = running(cluster, ns, "web", 2)
    assert {p["spec"]["nodeName"] for p in after} <= others, [(p["metadata"]["name"], p["spec"]["nodeName"]) for p in after]
    assert not {p["metadata"]["name"] for p in after} & ours

    # The slot: taken by the node, then kept for the failed-hold time (not renewed while the node is down).
    held = lease(cluster, "agent-0")["spec"]
    assert held["holderIdentity"] == node
    assert held["leaseDurationSeconds"] == FAILED_HOLD
    assert holders(lease_evs, "agent-0") == [node]
    assert [e["object"]["spec"]["leaseDurationSeconds"] for e in lease_evs
            if e["object"]["metadata"]["name"] == "agent-0"][-1] == FAILED_HOLD
    assert a.hold.read_text() == "agent-0\n"
    assert lease(cluster, "server-0") is None, "the node took a slot of another pool"

    # The timer again before the boot step ran: the hold on disk stops it.
    rc, err = a.start("check").finish(60)
    assert rc == 0 and "a hold from an earlier reboot is still on disk" in err, err
    assert a.systemctl() == ["reboot"]

    rc, err = a.start("boot").finish(90)
    assert rc == 0, err
    assert not unschedulable(cluster, node)
    assert holder(cluster, "agent-0") == ""
    assert not a.hold.exists()
    assert a.systemctl() == ["reboot"]
    # And a boot without a hold does nothing.
    rc, err = a.start("boot").finish(30)
    assert rc == 0 and not err, err
    print(f"check (slot, cordon, drain of {len(ours)} pod(s), hold, reboot) took {took:.1f}s")


# ---------------------------------------------------------------- two nodes, one slot


def test_two_nodes_that_need_a_reboot_take_turns_for_the_one_slot(env: Env, agents):
    cluster = env.cluster
    pair = ("kwok-node-1", "kwok-node-2")
    ag = {n: agents(n) for n in pair}
    for a in ag.values():
        a.needs_reboot()
    t0 = time.monotonic()
    with node_watch(env) as nw, lease_watch(env) as lw:
        started(nw, NODES)
        runs = {n: ag[n].start("check") for n in pair}

        def rebooted():
            return [n for n in pair if ag[n].systemctl()]

        try:
            first_seen = wait_for(rebooted, 90, "one of the two nodes rebooting")
        except TimeoutError as err:
            raise AssertionError(f"{err}: {({n: runs[n].stderr() for n in pair})}") from None
        assert len(first_seen) == 1, f"both rebooted at once: {first_seen}"
        first = first_seen[0]
        second = next(n for n in pair if n != first)
        rc, err = runs[first].finish(60)
        assert rc == 0, err
        assert ag[first].systemctl() == ["reboot"]
        assert unschedulable(cluster, first)

        # The other one waits for the slot (retrying every 2-5 s), its node untouched.
        time.sleep(8)
        assert runs[second].poll() is None, runs[second].stderr()
        assert ag[second].systemctl() == []
        assert not unschedulable(cluster, second)
        assert not ag[second].hold.exists()
        assert holder(cluster, "agent-0") == first
        waited_from = time.monotonic()

        # The first node is back: its boot step frees the slot, and the other one goes.
        rc, err = ag[first].start("boot").finish(90)
        assert rc == 0, err
        rc, err = runs[second].finish(WINDOW)
        assert rc == 0, err
        assert ag[second].systemctl() == ["reboot"]
        assert unschedulable(cluster, second) and not unschedulable(cluster, first)
        assert holder(cluster, "agent-0") == second and ag[second].hold.read_text() == "agent-0\n"
        second_took = time.monotonic() - waited_from
        rc, err = ag[second].start("boot").finish(90)
        assert rc == 0, err

        # The record ends with the second node's uncordon: every event before it has been delivered.
        def second_back(evs):
            ch = cordon_record(evs, pair)
            return (second, True) in ch and ch[-1] == (second, False)

        changes = cordon_record(nw.until(second_back, 30, f"{second} uncordoned in the watch"), pair)
        lease_evs = lw.until(lambda evs: holders(evs, "agent-0")[-1:] == [""] and second in holders(evs, "agent-0"),
                             30, "agent-0 freed by the second node in the watch")

    # Never both cordoned: in the API server's order, each node was cordoned once, the second only after the
    # first was uncordoned again.
    assert changes == [(first, False), (second, False), (first, True), (first, False), (second, True), (second, False)] or \
        changes == [(second, False), (first, False), (first, True), (first, False), (second, True), (second, False)], changes
    state: dict[str, bool] = {}
    for name, now in changes:
        state[name] = now
        assert sum(state.values()) <= 1, f"both nodes cordoned at once: {changes}"
    # One slot, held by one node at a time: the first, free, the second, free.
    assert holders(lease_evs, "agent-0") == [first, "", second, ""]
    assert not unschedulable(cluster, first) and not unschedulable(cluster, second)
    assert holder(cluster, "agent-0") == ""
    assert lease(cluster, "agent-1") is None
    print(f"two nodes, one slot: {time.monotonic() - t0:.1f}s in all; the second went {second_took:.1f}s"
          " after the first one's boot step started")


# ---------------------------------------------------------------- a drain that cannot finish


def test_a_drain_the_disruption_budgets_refuse_cancels_the_reboot(env: Env, agents, workloads):
    cluster, ns, node = env.cluster, workloads, "kwok-node-1"
    cluster.create(f"/apis/apps/v1/namespaces/{ns}/deployments",
                   deployment("pinned", 1, {"nodeSelector": {"kubernetes.io/hostname": node}}))
    cluster.create(f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets", {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "pinned"},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "pinned"}}},
    })
    (pod,) = running(cluster, ns, "pinned", 1)
    assert pod["spec"]["nodeName"] == node
    pdb = f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/pinned"
    wait_for(lambda: (st := cluster.get(pdb).get("status", {})).get("observedGeneration") and st.get("currentHealthy") == 1
             and st.get("disruptionsAllowed") == 0, 30, "the disruption controller's view of the PDB")

    drain_timeout = 30  # the spec's minimum
    a = agents(node, drain_timeout=drain_timeout)
    a.needs_reboot()
    with node_watch(env) as nw, lease_watch(env) as lw:
        started(nw, NODES)
        t0 = time.monotonic()
        rc, err = a.start("check").finish(drain_timeout + 90)
        took = time.monotonic() - t0
        changes = cordon_record(nw.until(lambda evs: cordon_record(evs, [node])[-1:] == [(node, False)]
                                         and (node, True) in cordon_record(evs, [node]), 30,
                                         f"{node} cordoned and uncordoned in the watch"), [node])
        lease_evs = lw.until(lambda evs: holders(evs, "agent-0") == [node, ""], 30, "agent-0 taken and freed")

    assert rc == 1, err
    assert "the drain did not finish; not rebooting" in err
    assert "disruption budget" in err, err  # kubectl drain's own words on the refused eviction
    assert took >= drain_timeout, f"the drain gave up after {took:.1f}s, before its {drain_timeout}s"
    assert a.systemctl() == []
    assert changes == [(node, False), (node, True), (node, False)]
    assert not unschedulable(cluster, node)
    assert holders(lease_evs, "agent-0") == [node, ""]
    assert holder(cluster, "agent-0") == ""
    assert not a.hold.exists()
    # The pod was never evicted.
    (still,) = running(cluster, ns, "pinned", 1, timeout=5)
    assert still["metadata"]["uid"] == pod["metadata"]["uid"] and still["spec"]["nodeName"] == node
    print(f"check with a drain the PDB refuses: exit {rc} after {took:.1f}s (drain timeout {drain_timeout}s)")
