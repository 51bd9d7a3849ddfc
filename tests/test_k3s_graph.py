"""K3s in the resource graph of the real program, under mocks: order, secrets, day-2 changes, sources."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections import Counter

import pytest
import yaml

from components import specs
from components.config import parse_config
from components.render import k3s, k3s_hardening, k3s_pki
from support.harness import EDGE_STACKS, Run, run_program, stack_model

pytestmark = pytest.mark.graph

COMMAND = "command:remote:Command"
COPY = "command:remote:CopyToRemote"
PASSWORD = "random:index/randomPassword:RandomPassword"
PROVIDER = "pulumi:providers:kubernetes"


@pytest.fixture(scope="module")
def runs() -> dict[str, Run]:
    out = {}
    for stack in ("dev", "prod", *EDGE_STACKS):
        run = run_program(stack)
        assert run.error is None, (stack, run.error)
        out[stack] = run
    return out


def k3s_commands(run: Run) -> dict[str, object]:
    return {r.name: r for r in run.by_type(COMMAND) if r.name.endswith(("-k3s", "-k3s-bootstrap")) or r.name == "k3s-ready"}


def ancestors(run: Run, urn: str) -> set[str]:
    """Every URN ``urn`` waits for, transitively."""
    by_urn = {r.urn: r for r in run.resources}
    seen: set[str] = set()
    todo = [urn]
    while todo:
        for dep in by_urn[todo.pop()].dependencies:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


@pytest.mark.parametrize("stack", ["dev", "prod", *EDGE_STACKS])
def test_servers_one_at_a_time_then_every_agent_at_once(runs, stack):
    run, cfg = runs[stack], parse_config(stack_model(stack))
    cmds = k3s_commands(run)
    servers, agents = specs.k3s_install_waves(cfg)
    order = [f"{n.name}-k3s" for n in servers]
    first = specs.k3s_bootstrap_server(cfg).name
    if len(cfg.servers) > 1:
        order.insert(0, f"{first}-k3s-bootstrap")
    agent_cmds = [f"{n.name}-k3s" for n in agents]
    assert set(cmds) == {*order, *agent_cmds, "k3s-ready"}
    # Each server step waits for exactly the one before it (and the load balancers before the first).
    for before, after in zip(order, order[1:]):
        assert cmds[before].urn in cmds[after].dependencies, (stack, before, after)
    # Every agent waits for the last server, and for no other agent: day 1 is one wave, not a chain.
    agent_urns = {cmds[a].urn for a in agent_cmds}
    for name in agent_cmds:
        assert cmds[order[-1]].urn in cmds[name].dependencies, (stack, name)
        assert not agent_urns & ancestors(run, cmds[name].urn), f"{stack}: {name} waits for another agent"
    for name in [*order[-1:], *agent_cmds]:
        assert cmds[name].urn in cmds["k3s-ready"].dependencies
    pair = run.urn_of("microcloud:network:LoadBalancerPair", "load-balancers")
    lb_urns = {r.urn for r in run.by_type(COMMAND) if r.parent == pair}
    assert len(lb_urns) == 3 * len(cfg.load_balancers)
    # depends_on a component waits for each of its children
    infra = run.urn_of("microcloud:infra:InfraServices", "infra-services")
    dns = {r.urn for r in run.resources if r.parent == infra}
    assert dns
    for name in [*order, *agent_cmds]:
        waits = ancestors(run, cmds[name].urn)
        assert lb_urns <= waits and dns <= waits, f"{stack}: {name} does not wait for the VIP and DNS"
    # Servers 2..n and every agent come after the bootstrap run.
    for name in [*order[1:], *agent_cmds]:
        assert cmds[order[0]].urn in ancestors(run, cmds[name].urn)
    # Agents only after every server (the re-pointed bootstrap server last).
    server_cmds = {f"{n.name}-k3s" for n in cfg.servers}
    for name in agent_cmds:
        assert server_cmds <= {c for c in cmds if cmds[c].urn in ancestors(run, cmds[name].urn)}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_bootstrap_is_cluster_init_and_every_node_joins_through_the_vip(runs, stack):
    run, cfg = runs[stack], parse_config(stack_model(stack))
    cmds = k3s_commands(run)
    vip = f"server: https://{cfg.load_balancer.api_vip}:{cfg.load_balancer.api_port}"
    first = specs.k3s_bootstrap_server(cfg).name
    for name, cmd in cmds.items():
        if name == "k3s-ready":
            continue
        script = cmd.inputs["create"]
        if name.endswith("-bootstrap") or len(cfg.servers) == 1 and name == f"{first}-k3s":
            assert "cluster-init: true" in script and vip not in script, name
        else:
            assert vip in script and "cluster-init" not in script, name


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_join_secrets_are_secret_and_only_on_stdin(runs, stack):
    """Servers get both secure tokens, agents the agent token only, the cluster-init run every CA file; all on stdin, secret."""
    run, cfg = runs[stack], parse_config(stack_model(stack))
    server_pw, agent_pw = run.one(PASSWORD, "k3s-pki-server-token"), run.one(PASSWORD, "k3s-pki-node-token")
    for pw in (server_pw, agent_pw):
        assert "result" in pw.additional_secret_outputs
    seed = run.one(PASSWORD, "k3s-pki-secrets-encryption")
    assert "result" in seed.additional_secret_outputs and seed.inputs["length"] == 64 and seed.inputs["special"] is False
    # Never RandomBytes: pulumi-random makes its ID the base64 value, in clear in the state and on screen.
    assert not run.by_type("random:index/randomBytes:RandomBytes")
    servers = {n.name for n in cfg.servers}
    for name, cmd in k3s_commands(run).items():
        assert "stdout" in cmd.additional_secret_outputs, name
        if name == "k3s-ready":
            assert "stdin" not in cmd.inputs
            continue
        stdin = cmd.inputs["stdin"]
        assert "stdin" in cmd.secret_inputs and isinstance(stdin, dict), name
        lines = [line.split(" ", 2) for line in stdin["value"].splitlines()]
        kinds = Counter(kind for kind, *_ in lines)
        tokens = {kind: rest[0] for kind, *rest in lines if kind not in ("file", "cred")}
        node = name.split("-k3s")[0]
        init = name.endswith("-bootstrap") or (len(cfg.servers) == 1 and node in servers)
        # Every run but the bootstrap one may restart a member: it gets the disruption budget's kubeconfig.
        with_budget = {"budget"} if not name.endswith("-bootstrap") else set()
        if with_budget:
            kc = yaml.safe_load(base64.b64decode(tokens["budget"]))
            assert kc["clusters"][0]["cluster"]["server"] == f"https://{cfg.load_balancer.api_vip}:{cfg.load_balancer.api_port}", name
            assert "PRIVATE KEY" in base64.b64decode(kc["users"][0]["user"]["client-key-data"]).decode(), name
            assert run.one("tls:index/locallySignedCert:LocallySignedCert", "k3s-pki-budget").urn in cmd.property_dependencies["stdin"], name
        if node in servers:
            assert set(kinds) == ({"token", "agent-token", "file", "cred"} if init else {"token", "agent-token"}) | with_budget, name
            if init:
                # The secrets encryption config, its key hashed from the generated seed, to the cluster-init server only.
                (cred,) = [rest for kind, *rest in lines if kind == "cred"]
                assert cred[0] == k3s_hardening.ENCRYPTION_CONFIG, name
                config = json.loads(base64.b64decode(cred[1]))
                key = config["resources"][0]["providers"][0]["aescbc"]["keys"][0]["secret"]
                assert base64.b64decode(key) == hashlib.sha256(("m0ckPass" * 8).encode()).digest(), name
            assert tokens["token"].startswith("K10") and "::server:m0ckPass" in tokens["token"], name
            assert tokens["agent-token"].startswith("m0ckPass") and "::" not in tokens["agent-token"], name
            assert kinds["file"] == (len(k3s_pki.TLS_FILES) if init else 0), name
            assert "agent-token-file: /etc/rancher/k3s/agent-token" in cmd.inputs["create"], name
        else:
            assert set(kinds) == {"token", "budget"} and "::node:m0ckPass" in tokens["token"], name
        for pw in (server_pw, agent_pw):
            assert pw.urn in cmd.property_dependencies.get("stdin", []), name
        for key in ("create", "triggers"):
            assert key not in cmd.secret_inputs, (name, key)
        assert "token-file: /etc/rancher/k3s/token" in cmd.inputs["create"]
        assert "m0ckPass" not in cmd.inputs["create"] and "PRIVATE KEY" not in cmd.inputs["create"], name


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_kubeconfig_is_secret_points_at_the_vip_and_feeds_the_one_provider(runs, stack):
    run, cfg = runs[stack], parse_config(stack_model(stack))
    value, secret = run.output_value("kubeconfig")
    assert secret
    doc = yaml.safe_load(value)
    assert doc["clusters"][0]["cluster"]["server"] == f"https://{cfg.load_balancer.api_vip}:{cfg.load_balancer.api_port}"
    [provider] = run.by_type(PROVIDER)
    assert "kubeconfig" in provider.secret_inputs
    assert provider.inputs["clusterIdentifier"] == f"microcloud-{stack}"
    assert run.one(COMMAND, "k3s-ready").urn in provider.property_dependencies["kubeconfig"]


def _inputs(run: Run) -> dict[str, dict]:
    return {r.urn: r.inputs for r in run.resources}


def _changed(before: Run, after: Run) -> set[str]:
    b, a = _inputs(before), _inputs(after)
    return {urn.rsplit("::", 1)[1] for urn in b if urn in a and b[urn] != a[urn]}


def test_a_label_change_is_applied_in_place_to_that_node_only(runs):
    model = copy.deepcopy(stack_model("prod"))
    target = next(n for n in model["nodes"] if n["role"] == "agent")
    target["labels"] = {"microcloud.dev/zone": "a"}
    target["taints"] = ["dedicated=db:NoSchedule"]
    after = run_program("prod", model)
    assert after.error is None, after.error
    assert _changed(runs["prod"], after) == {f"{target['name']}-k3s"}
    script = after.one(COMMAND, f"{target['name']}-k3s").inputs["create"]
    assert "microcloud.dev/zone=a" in script and "dedicated=db:NoSchedule" in script


def test_reordering_nodes_changes_no_k3s_command(runs):
    model = copy.deepcopy(stack_model("prod"))
    model["nodes"] = list(reversed(model["nodes"]))
    after = run_program("prod", model)
    assert after.error is None, after.error
    assert _changed(runs["prod"], after) == set()


def test_longhorn_nodes_carry_the_default_disk_label(runs):
    cfg = parse_config(stack_model("prod"))
    for node in cfg.nodes_with("server", "agent", "storage"):
        script = runs["prod"].one(COMMAND, f"{node.name}-k3s").inputs["create"]
        assert ("node.longhorn.io/create-default-disk=true" in script) == node.uses_longhorn, node.name


def test_disabled_k3s_registers_no_cluster(runs):
    model = copy.deepcopy(stack_model("dev"))
    model["k3s"] = {"version": model["k3s"]["version"], "enabled": False}
    run = run_program("dev", model)
    assert run.error is None, run.error
    assert not k3s_commands(run) and not run.by_type(PROVIDER)
    assert "kubeconfig" not in run.outputs
    # No cluster PKI either: no CA, no token password, no admin certificate.
    assert not [r for r in run.resources if r.name.startswith("k3s-pki")]
    assert {"kubeconfig_expires_at", "cluster_ca"}.isdisjoint(run.outputs)


def test_binary_from_the_pulumi_host_is_copied_and_checked(tmp_path, runs):
    binary = tmp_path / "k3s"
    binary.write_bytes(b"not really k3s\n")
    sha = hashlib.sha256(binary.read_bytes()).hexdigest()
    model = copy.deepcopy(stack_model("dev"))
    model["k3s"]["binary"] = {"path": str(binary)}
    run = run_program("dev", model)
    assert run.error is None, run.error
    cfg = parse_config(model)
    copies = {r.name: r for r in run.by_type(COPY) if r.name.endswith("-k3s-binary")}
    assert set(copies) == {f"{n.name}-k3s-binary" for n in cfg.nodes_with("server", "agent", "storage")}
    for name, copy_res in copies.items():
        node = name[: -len("-k3s-binary")]
        assert copy_res.inputs["remotePath"].startswith("/var/tmp/microcloud-k3s-" + sha[:16])
        assert sha in copy_res.inputs["triggers"]
        cmd = run.one(COMMAND, f"{node}-k3s")
        assert copy_res.urn in cmd.dependencies
        assert sha in cmd.inputs["create"] and copy_res.inputs["remotePath"] in cmd.inputs["create"]
    # A file that is not the pinned one stops the run before anything is registered for it.
    model["k3s"]["binary"]["sha256"] = "0" * 64
    bad = run_program("dev", model)
    assert bad.error is not None
    assert str(bad.error).startswith("microcloud:config.k3s.binary.sha256: ") and f"has sha256 {sha}, not the pinned {'0' * 64}" in str(bad.error)
    # and a path that is not there, naming the key
    model["k3s"]["binary"] = {"path": str(tmp_path / "missing")}
    gone = run_program("dev", model)
    assert gone.error is not None and str(gone.error).startswith("microcloud:config.k3s.binary.path: no file at")


def test_k3s_scripts_pin_version_and_sha(runs):
    cfg = parse_config(stack_model("prod"))
    for name, cmd in k3s_commands(runs["prod"]).items():
        if name == "k3s-ready":
            continue
        script = cmd.inputs["create"]
        assert cfg.k3s.version in script and cfg.k3s.binary.sha256 in script, name
        assert cfg.k3s.images.sha256 in script, name
        assert "| sh" not in script and "| bash" not in script, name


def test_the_kubeconfig_keeper_reissues_the_admin_certificate_and_nothing_else(runs):
    model = copy.deepcopy(stack_model("dev"))
    model["k3s"]["kubeconfig_keeper"] = "2026-11-renewed"
    after = run_program("dev", model)
    assert after.error is None, after.error
    # The certificate request: its subject carries the keeper; the certificate follows from it.
    assert _changed(runs["dev"], after) == {"k3s-pki-admin"}
    request = after.one("tls:index/certRequest:CertRequest", "k3s-pki-admin")
    assert request.inputs["subject"]["serialNumber"] == "2026-11-renewed"
