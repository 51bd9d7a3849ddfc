"""The plan policies (policy/plan.py) and the PR comment (policy/comment.py) on previews the real engine made.

The inputs are `pulumi preview --json` output of prod recorded by
tests/previews/record.py (the real CLI and provider plugins against prod's
planned state): add a worker, change a K3s flag (a node taint), change the
domain (every node replaced), remove the storage node (the engine stops at
its protected volume). Each expected line is asserted. The same policies
under the live engine: tests/test_plan_policy_engine.py.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from policy import comment, plan
from support.harness import stack_model

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent / "previews"


def recorded(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def with_config(p: dict, **changes) -> dict:
    p = copy.deepcopy(p)
    cfg = json.loads(p["config"]["microcloud:config"])
    cfg.update(changes)
    p["config"]["microcloud:config"] = json.dumps(cfg)
    return p


def render(name: str, p: dict | None = None, diff: bool = False) -> tuple[str, list]:
    p = p or recorded(name)
    findings = plan.check(p)
    text = (DATA / f"{name}.diff.txt").read_text() if diff else None
    return comment.render("prod", p, findings, [], text), findings


def lines(md: str) -> set[str]:
    return set(md.splitlines())


# ------------------------------------------------------------------ the four recorded changes
def test_adding_a_worker_creates_its_node_and_passes():
    md, findings = render("add-worker", diff=True)
    got = lines(md)
    assert md.splitlines()[0] == "<!-- microcloud-preview:prod -->"
    assert "**Passes every mandatory policy.**" in got
    assert not findings and "### Policy violations" not in got
    # Five resources of the new node, the K3s join and Longhorn disk commands, and nothing destroyed.
    assert "| Node worker4 | 5 |  |  |  |" in got
    assert "| Storage storage | 4 |  |  |  |" in got
    assert "| K3sCluster k3s | 1 |  | 1 |  |" in got
    assert "| **total** | **10** | **1** | **4** |  |" in got
    # Config files that list the nodes are re-delivered: each named with the property that forces it.
    assert "- `k3s-ready` (command:remote:Command, in K3sCluster k3s) **replaced**: `create`, `triggers` changed" in got
    assert "- `loadbalancer1-haproxy` (command:remote:Command, in LoadBalancerPair load-balancers) **replaced**: `stdin`, `triggers` changed" in got
    assert "- `coredns-hosts` (command:remote:Command, in InfraServices infra-services) **replaced**: `stdin`, `triggers` changed" in got
    assert not any("(libvirt:index/domain:Domain" in l for l in got)
    # The full diff, folded.
    assert "<details><summary>Full diff (<code>pulumi preview --diff</code>)</summary>" in got
    assert "[urn=urn:pulumi:prod::microcloud::microcloud:compute:Node::worker4]" in md


def test_a_k3s_flag_reruns_one_nodes_install_in_place():
    md, findings = render("k3s-flag", diff=True)
    got = lines(md)
    assert not plan.mandatory(findings)
    assert "| K3sCluster k3s |  |  | 1 |  |" in got
    assert "| **total** |  |  | **1** |  |" in got
    assert "- `worker1-k3s` (command:remote:Command, in K3sCluster k3s) **replaced**: `create`, `triggers` changed" in got
    assert sum(l.startswith("- `") for l in md.splitlines()) == 1  # nothing else replaced or deleted
    # The folded diff shows the flag itself: K3s's config.yaml gains the taint.
    assert "          + node-taint:" in got and "          + - dedicated=db:NoSchedule" in got


def test_changing_the_domain_replaces_every_node_and_is_stopped():
    p = recorded("domain")
    md, findings = render("domain", p)
    got = lines(md)
    assert "**Stopped at preview: 5 mandatory policy violation(s).** Nothing may be applied until this is resolved." in got
    # Violations come first, before the summary.
    assert md.index("### Policy violations") < md.index("### Summary") < md.index("### Replacements and deletions")
    cause = 'caused by config change domain: "microcloud.lan" → "cloud.example.org"'
    data = {f.nodes[0]: f.message for f in findings if f.policy == "data-nodes-kept"}
    assert set(data) == {"storage1", "worker1", "worker2", "worker3"}  # the storage node and the Longhorn workers
    assert data["storage1"].startswith("storage1 (storage, holds data): first-boot config storage1-ignition replaced: `content` changed; VM storage1 replaced")
    assert all(cause in m and "add " in m and "allow_replace" in m for m in data.values())
    quorum = [f for f in findings if f.policy == "k3s-quorum"]
    assert len(quorum) == 1 and quorum[0].nodes == ("master1", "master2", "master3")
    assert "3 of 3 K3s servers are replaced or deleted in one update (master1, master2, master3)" in quorum[0].message
    assert cause in quorum[0].message
    advisory = [f for f in findings if f.level == "advisory"]
    assert [f.message for f in advisory] == [
        "4 VM(s) replaced or deleted: generic: 1 (postgresql1 (replaced)); infra: 1 (infra-cluster (replaced)); "
        "load_balancer: 2 (loadbalancer1 (replaced), loadbalancer2 (replaced))"
    ]
    # Every node's VM is listed as replaced, with the replacement it follows.
    for node in stack_model("prod")["nodes"]:
        row = next(l for l in got if l.startswith(f"- `{node['name']}` (libvirt:index/domain:Domain, in Node {node['name']}) **replaced**: "))
        assert "follows the replacement of" in row
    assert "- `cluster` (libvirt:index/network:Network, in Networks networks) **replaced**: `domain` changed" in got
    assert "- `storage1-ignition` (libvirt:index/ignition:Ignition, in Node storage1) **replaced**: `content` changed" in got
    assert "| **total** |  | **1** | **78** |  |" in got
    # The data itself is not replaced: the protected volumes stay.
    assert not any(l.startswith(("- `storage1-data`", "- `worker1-longhorn`")) for l in got)


def test_removing_the_storage_node_is_stopped_by_the_engine_and_the_policy():
    md, findings = render("remove-storage")
    got = lines(md)
    assert "**Stopped at preview: 1 mandatory policy violation(s) and the preview failed.** Nothing may be applied until this is resolved." in got
    [f] = plan.mandatory(findings)
    assert f.policy == "data-nodes-kept" and f.nodes == ("storage1",)
    assert "VM storage1 deleted: no longer in the program (removed from the config)" in f.message
    assert "data volume storage1-data deleted" in f.message and "caused by config change nodes[storage1] removed" in f.message
    # The engine's own stop (the protected volume) is shown with the violations.
    assert any(l.startswith("- **error** (storage1-data): error: Preview failed: resource") and "cannot be deleted" in l for l in got)
    assert "- `storage1-data` (libvirt:index/volume:Volume, in Node storage1) **deleted**: no longer in the program (removed from the config)" in got
    assert "| Node storage1 |  |  |  | 4 |" in got


# ------------------------------------------------------------------ the allow-list and the thresholds
def test_allow_replace_lets_the_named_nodes_through_and_says_so():
    everyone = ["storage1", "worker1", "worker2", "worker3", "master1", "master2", "master3"]
    findings = plan.check(with_config(recorded("domain"), allow_replace=everyone))
    assert not plan.mandatory(findings)
    [adv] = findings
    assert adv.level == "advisory" and "allowed by allow_replace: master1, master2, master3, storage1, worker1, worker2, worker3" in adv.message
    # Naming only some data nodes stops the others, and quorum still holds the line.
    partial = plan.check(with_config(recorded("domain"), allow_replace=["storage1"]))
    stopped = {(f.policy, f.nodes) for f in plan.mandatory(partial)}
    assert ("data-nodes-kept", ("storage1",)) not in stopped
    assert ("data-nodes-kept", ("worker1",)) in stopped and ("k3s-quorum", ("master1", "master2", "master3")) in stopped


def test_an_unused_allow_list_entry_is_reported():
    findings = plan.check(with_config(recorded("add-worker"), allow_replace=["storage1"]))
    assert [(f.level, f.message) for f in findings] == [
        ("advisory", "allow_replace names storage1, but this change replaces nothing of them: remove them from the stack config")
    ]


def test_an_allow_list_entry_that_is_no_node_stops_the_change_naming_the_closest():
    findings = plan.check(with_config(recorded("add-worker"), allow_replace=["worker4", "storag1", "zzz"]))
    bad = [f for f in plan.mandatory(findings) if f.policy == "allow-replace-names"]
    assert [f.message for f in bad] == [
        "allow_replace[1]: 'storag1' is not a node of this stack (nor one the last up applied); did you mean storage1?",
        "allow_replace[2]: 'zzz' is not a node of this stack (nor one the last up applied); its nodes are "
        "infra-cluster, loadbalancer1, loadbalancer2, master1, master2, master3, postgresql1, storage1, worker1, worker2, worker3, worker4",
    ]
    assert all("\n" not in f.message for f in bad)
    # A typo is not also reported as merely "unused".
    assert not any("storag1" in f.message for f in findings if f.level == "advisory")


def test_a_node_this_change_removes_may_be_named():
    """storage1 is gone from the config but the last up applied it: allow_replace may name it."""
    findings = plan.check(with_config(recorded("remove-storage"), allow_replace=["storage1"]))
    assert not [f for f in findings if f.policy in ("allow-replace-names", "data-nodes-kept")], findings


def _only(p: dict, keep) -> dict:
    p = copy.deepcopy(p)
    p["steps"] = [s for s in p["steps"] if s["op"] == "same" or keep(s)]
    return p


@pytest.mark.parametrize("servers,stopped", [(("master1",), False), (("master1", "master2"), True)])
def test_one_server_at_a_time_keeps_quorum(servers, stopped):
    p = _only(recorded("domain"), lambda s: plan.node_of(s) in servers)
    quorum = [f for f in plan.check(p) if f.policy == "k3s-quorum"]
    assert bool(quorum) == stopped
    if stopped:
        assert quorum[0].nodes == servers


def test_the_last_server_of_a_one_server_cluster_is_the_majority():
    p = _only(recorded("domain"), lambda s: plan.node_of(s) == "master1")
    cfg = json.loads(p["config"]["microcloud:config"])
    for cfgs in (cfg, next(s for s in p["steps"] if s["urn"].endswith("pulumi:pulumi:Stack::microcloud-prod"))["oldState"]["outputs"]["config"]):
        cfgs["nodes"] = [n for n in cfgs["nodes"] if n["name"] not in ("master2", "master3")]
    p["config"]["microcloud:config"] = json.dumps(cfg)
    [q] = [f for f in plan.check(p) if f.policy == "k3s-quorum"]
    assert "1 of 1 K3s servers" in q.message


# ------------------------------------------------------------------ secrets
def _step(rtype: str, inputs: dict) -> dict:
    urn = f"urn:pulumi:prod::microcloud::{rtype}::r"
    return {"op": "create", "urn": urn, "newState": {"urn": urn, "custom": True, "type": rtype, "inputs": inputs}}


@pytest.mark.parametrize("rtype,inputs,bad", [
    ("command:remote:Command", {"connection": {"host": "h", "password": "hunter2"}}, ["connection.password"]),
    ("command:remote:Command", {"connection": "[secret]"}, []),
    ("tls:index/selfSignedCert:SelfSignedCert", {"privateKeyPem": "-----BEGIN"}, ["privateKeyPem"]),
    ("tls:index/selfSignedCert:SelfSignedCert", {"privateKeyPem": "[secret]"}, []),
    ("random:index/randomPassword:RandomPassword", {"keepers": {"rotation": "2026-01"}}, []),
    ("example:index:Thing", {"apiToken": "abc", "publicKey": "ssh-ed25519 AAA", "secretName": "tls"}, ["apiToken"]),
    ("example:index:Thing", {"apiToken": "04da6b54-80e4-46f7-96ec-b56ff0331ba9"}, []),  # unknown until up
    ("kubernetes:apps/v1:Deployment", {"spec": {"tolerations": [{"key": "dedicated"}]}}, []),
])
def test_inputs_named_like_secrets_must_be_secret(rtype, inputs, bad):
    found = plan.secret_inputs({"steps": [_step(rtype, inputs)]})
    assert [f.message.split("input ", 1)[1].split(" is not", 1)[0] for f in found] == ([", ".join(bad)] if bad else [])
    assert all(f.level == "mandatory" for f in found)


def test_the_recorded_plans_show_no_secret_in_clear():
    for name in ("add-worker", "k3s-flag", "domain", "remove-storage"):
        assert not plan.secret_inputs(recorded(name)), name
        text = (DATA / f"{name}.json").read_text()
        assert "PRIVATE KEY" not in text, name


# ------------------------------------------------------------------ the comment itself
def test_pack_violations_come_first_and_the_comment_fits():
    events = [{"policyName": "pinned-versions", "enforcementLevel": "mandatory", "resourceUrn": "urn:pulumi:prod::microcloud::kubernetes:apps/v1:Deployment::web",
               "message": "Charts, OS images and container images name an exact version.\nweb: container image nginx:latest has no exact tag or digest\n"}]
    md = comment.render("prod", recorded("add-worker"), [], events, "x" * 500_000)
    assert "**Stopped at preview: 1 mandatory policy violation(s).**" in md
    assert "- **mandatory** `pinned-versions` (web): web: container image nginx:latest has no exact tag or digest" in md.splitlines()
    assert len(md) <= comment.LIMIT and md.rstrip().endswith("</details>")
    assert "(cut to fit a comment: the job log has all of it)" in md


def test_config_changes_key_named_lists_by_name():
    old = {"domain": "a.lan", "nodes": [{"name": "w1", "vcpu": 1}, {"name": "w2", "vcpu": 1}]}
    new = {"domain": "a.lan", "nodes": [{"name": "w2", "vcpu": 2}, {"name": "w1", "vcpu": 1}], "allow_replace": ["w2"]}
    assert plan.config_changes(old, new) == [("nodes[w2].vcpu", 1, 2)]
    assert plan.changes_for("w2", plan.config_changes(old, new)) == ["nodes[w2].vcpu: 1 → 2"]
    assert plan.changes_for("w1", plan.config_changes(old, new)) == []
