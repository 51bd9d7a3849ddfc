"""The resource graph of the real program under mocks: parents, edges, secrets, protection, counts."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from components import specs
from components.config import parse_config
from support.harness import EDGE_STACKS, Run, mock_public_key, run_program, stack_model

pytestmark = pytest.mark.graph

DOMAIN = "libvirt:index/domain:Domain"
VOLUME = "libvirt:index/volume:Volume"
NETWORK = "libvirt:index/network:Network"
IGNITION = "libvirt:index/ignition:Ignition"
CLOUDINIT = "libvirt:index/cloudInitDisk:CloudInitDisk"
COMMAND = "command:remote:Command"
COPY = "command:remote:CopyToRemote"
LOCAL = "command:local:Command"
NODE = "microcloud:compute:Node"


@pytest.fixture(scope="module")
def dev() -> Run:
    run = run_program("dev")
    assert run.error is None, run.error
    return run


@pytest.fixture(scope="module")
def prod() -> Run:
    run = run_program("prod")
    assert run.error is None, run.error
    return run


def _runs(dev, prod):
    return {"dev": dev, "prod": prod}


def test_every_resource_has_a_component_parent(dev, prod):
    for stack, run in _runs(dev, prod).items():
        types = {r.urn: r.type for r in run.resources}
        for r in run.resources:
            if r.type == "pulumi:pulumi:Stack":
                continue
            if r.type.startswith("pulumi:providers:"):
                # Providers are made once in __main__ and passed down (DESIGN 4).
                assert types.get(r.parent) == "pulumi:pulumi:Stack"
                continue
            parent_type = types.get(r.parent, "")
            if r.type.startswith("microcloud:"):
                assert parent_type == "pulumi:pulumi:Stack", f"{stack}: component {r.name} under {parent_type}"
            else:
                assert parent_type.startswith("microcloud:"), f"{stack}: {r.type} {r.name} has parent {parent_type!r}"


def test_libvirt_resources_use_the_explicit_provider(dev):
    for r in dev.resources:
        if r.type.startswith("libvirt:index/"):
            assert "$pulumi:providers:libvirt::libvirt::" in r.provider, (r.name, r.provider)
            # physical names are fixed: replacement must delete first
            assert r.delete_before_replace, r.name


def test_physical_names_carry_project_and_stack(dev):
    for r in dev.resources:
        if r.type in (DOMAIN, VOLUME, NETWORK, IGNITION, CLOUDINIT):
            assert r.inputs["name"].startswith("microcloud-dev-"), r.inputs["name"]


def _deps(run: Run, r) -> set[str]:
    return set(r.dependencies) | {u for us in r.property_dependencies.values() for u in us}


def test_domain_depends_on_volumes_first_boot_and_network(prod):
    cfg = parse_config(stack_model("prod"))
    for node in cfg.nodes:
        dom = prod.one(DOMAIN, node.name)
        pd = dom.property_dependencies
        assert prod.urn_of(VOLUME, f"{node.name}-root") in pd["disks"]
        for d in node.data_disks:
            assert prod.urn_of(VOLUME, f"{node.name}-{d.name}") in pd["disks"]
        assert prod.urn_of(NETWORK, node.network) in pd["networkInterfaces"]
        # ... and on the host forwarding between the stack's networks.
        assert prod.urn_of(LOCAL, "host-forwarding") in pd["networkInterfaces"]
        if node.is_flatcar:
            assert prod.urn_of(IGNITION, f"{node.name}-ignition") in pd["coreosIgnition"]
        else:
            # The NoCloud seed is the domain's last disk: a new seed replaces the VM.
            seed = prod.one(VOLUME, f"{node.name}-seed")
            assert prod.urn_of(VOLUME, f"{node.name}-seed") in pd["disks"]
            assert dom.inputs["disks"][-1]["volumeId"] == f"{node.name}-seed-id"
            assert seed.inputs["source"].endswith(".iso") and seed.inputs["name"].endswith("-seed.iso")
            # libvirt reads back "iso": a given format would perma-diff (seen on a real run)
            assert "format" not in seed.inputs
            assert "cloudinit" not in dom.inputs
        root = prod.one(VOLUME, f"{node.name}-root")
        assert prod.urn_of(VOLUME, f"base-{node.os}") in root.property_dependencies["baseVolumeId"]


def test_lb_config_depends_on_lb_domains_and_every_backend(prod):
    cfg = parse_config(stack_model("prod"))
    backends = specs.haproxy_backends(cfg)
    assert {n.name for n in cfg.servers} <= set(backends)
    for lb in cfg.load_balancers:
        cmd = prod.one(COMMAND, f"{lb.name}-haproxy")
        deps = _deps(prod, cmd)
        assert prod.urn_of(DOMAIN, lb.name) in deps
        for b in backends:
            assert prod.urn_of(DOMAIN, b) in deps, f"haproxy on {lb.name} does not wait for {b}"
        assert prod.urn_of(DOMAIN, "storage1") not in deps
        ka = prod.one(COMMAND, f"{lb.name}-keepalived")
        assert prod.urn_of(DOMAIN, lb.name) in _deps(prod, ka)


def test_dns_records_depend_on_every_node(prod):
    cfg = parse_config(stack_model("prod"))
    deps = _deps(prod, prod.one(COMMAND, "coredns-hosts"))
    for node in cfg.nodes:
        assert prod.urn_of(DOMAIN, node.name) in deps, node.name
    hosts = prod.one(COMMAND, "coredns-hosts").inputs["stdin"]
    for node in cfg.nodes:
        assert f"{node.ip} {node.name}.microcloud.lan" in hosts


def test_secrets_are_secret(dev, prod):
    for run in (dev, prod):
        value, secret = run.output_value("ssh_private_key")
        assert secret and "PRIVATE KEY" in value
        key = run.one("tls:index/privateKey:PrivateKey", "secrets-ssh")
        assert {"privateKeyOpenssh", "privateKeyPem"} <= set(key.additional_secret_outputs)
        for lb in parse_config(stack_model("dev" if run is dev else "prod")).load_balancers:
            ka = run.one(COMMAND, f"{lb.name}-keepalived")
            assert "stdin" in ka.secret_inputs
        for cmd in run.by_type(COMMAND):
            # A secret in triggers next to an unknown (a new VM's id) fails the
            # real engine's preview ("malformed RPC secret"): keyed digests only.
            assert "triggers" not in cmd.secret_inputs, cmd.name
        for cmd in run.by_type(COMMAND):
            assert "connection" in cmd.secret_inputs
            assert {"stdout", "stderr"} <= set(cmd.additional_secret_outputs)


def test_generated_secrets_never_travel_in_clear(dev):
    """The mock VRRP password and private key appear in no non-secret input of any resource."""
    for r in dev.resources:
        for name, value in r.inputs.items():
            if name in r.secret_inputs:
                continue
            text = json.dumps(value)
            assert "m0ckPass" not in text, (r.name, name)
            assert "PRIVATE KEY" not in text, (r.name, name)


def test_prod_data_disks_are_protected_dev_not(dev, prod):
    for stack, run in _runs(dev, prod).items():
        cfg = parse_config(stack_model(stack))
        data = {f"{n.name}-{d.name}" for n in cfg.nodes for d in n.data_disks}
        assert data
        for v in run.by_type(VOLUME):
            if v.name in data:
                assert v.protect is cfg.protect_data, (stack, v.name)
            else:
                assert not v.protect, (stack, v.name)
    assert parse_config(stack_model("prod")).protect_data is True


def expected_counts(stack: str) -> dict[str, int]:
    """Every resource type the program registers for ``stack``, and how many, from its config."""
    cfg = parse_config(stack_model(stack))
    flatcar = sum(n.is_flatcar for n in cfg.nodes)
    k3s = int(cfg.k3s.enabled)
    k3s_nodes = len(cfg.nodes_with("server", "agent", "storage"))
    db = cfg.database_node is not None
    db_nfs = db and k3s and bool(cfg.nodes_with("storage"))
    owners = len({d.owner for d in cfg.database.databases}) if db else 0
    reboots = cfg.updates.strategy == "coordinated"
    packaged = sum(not n.is_flatcar for n in cfg.nodes) * (cfg.updates.packages != "off")
    k3s_member = k3s_nodes * k3s
    return {
        "pulumi:pulumi:Stack": 1,
        "pulumi:providers:libvirt": 1,
        # one component per layer, one Node per VM
        "microcloud:security:Secrets": 1,
        "microcloud:network:Networks": 1,
        "microcloud:compute:ImageStore": 1,
        "microcloud:infra:InfraServices": 1,
        "microcloud:network:LoadBalancerPair": 1,
        NODE: len(cfg.nodes),
        # the stack's SSH key; each node's host key; the cluster PKI's five CA keys, service-account key, admin key,
        # the disruption budget's key (the database's CA key and server key)
        "tls:index/privateKey:PrivateKey": 1 + len(cfg.nodes) + 8 * k3s + 2 * db,
        # the five cluster CAs; the admin certificate's request and certificate; the database's CA, request, certificate
        "tls:index/selfSignedCert:SelfSignedCert": 5 * k3s + db,
        # the admin's and the disruption budget's client certificates (the database's server certificate)
        "tls:index/certRequest:CertRequest": 2 * k3s + db,
        "tls:index/locallySignedCert:LocallySignedCert": 2 * k3s + db,
        "microcloud:updates:Reboots": 1,
        "microcloud:database:Database": int(db),
        "microcloud:k3s:ClusterPki": k3s,
        # VRRP password; the K3s server and agent token passwords and the encryption key's seed; each VNC display's password
        # (each database owner's and the database superuser's)
        "random:index/randomPassword:RandomPassword": 1 + 3 * k3s + sum(cfg.vnc_of(n) for n in cfg.nodes) + (owners + 1) * db,
        "libvirt:index/pool:Pool": 1,
        DOMAIN: len(cfg.nodes),
        # base images, root volumes, data disks, a NoCloud seed per cloud-init node
        VOLUME: len(cfg.images) + len(cfg.nodes) + sum(len(n.data_disks) for n in cfg.nodes) + len(cfg.nodes) - flatcar,
        NETWORK: len(cfg.networks),
        IGNITION: flatcar,
        # per LB: haproxy, check script, keepalived; infra: chrony, hosts, zone, Corefile, CoreDNS binary, unit
        COMMAND: 3 * len(cfg.load_balancers) + 6
        # K3s: one install per node, the bootstrap run (more than one server), k3s-ready
        + k3s * (k3s_nodes + (len(cfg.servers) > 1) + 1)
        # node_exporter per LB and infra node: binary, user, unit, firewall
        + 4 * (len(cfg.load_balancers) + 1)
        # storage (K3s nodes only): per data disk its preparation and mount;
        # per Longhorn node the bind mount and iscsid; per storage node the exports
        # (and, on a packaged OS, its firewalld step for NFS)
        + k3s * sum(2 * len(n.data_disks) + 2 * (n.uses_longhorn and bool(n.data_disks))
                    + (n.role == "storage") * (1 + (not n.is_flatcar)) for n in cfg.nodes)
        # the database node: packages, CA, certificate, key, unit, pg_hba, pg_ident, initdb, config, roles, login,
        # the dump's script, service and timer; on NFS the storage node's directories and the mount
        + 14 * db + 2 * db_nfs
        # per node its reboot agent: script, check service, timer, and on a K3s node its boot service
        + (3 * len(cfg.nodes) + k3s_member) * reboots
        # per packaged (EL9, Debian) node the updater's packages and config
        + 2 * packaged,
        "microcloud:monitoring:NodeExporters": 1,
        "microcloud:storage:Storage": k3s,
        "microcloud:k3s:K3sCluster": k3s,
        # what it holds: tests/test_platform_graph.py
        "microcloud:platform:Platform": k3s * int(cfg.platform.enabled),
        "pulumi:providers:kubernetes": k3s,
        # CoreDNS; node_exporter per LB and infra node
        COPY: 1 + len(cfg.load_balancers) + 1,
        # the check of each image before its base volume; the host's forwarding,
        # when two or more networks forward (not isolated)
        LOCAL: len(cfg.images) + int(sum(n.mode != "isolated" for n in cfg.networks) > 1),
    }


@pytest.mark.parametrize("stack", ["dev", "prod", *EDGE_STACKS])
def test_resource_counts(stack, dev, prod):
    run = {"dev": dev, "prod": prod}.get(stack) or run_program(stack)
    assert run.error is None, run.error
    want = {t: n for t, n in expected_counts(stack).items() if n}
    platform = {r.urn for r in run.by_type("microcloud:platform:Platform")}
    got = Counter(r.type for r in run.resources if r.parent not in platform)
    assert dict(got) == want


def _inputs_by_urn(run: Run) -> dict[str, dict]:
    return {r.urn: r.inputs for r in run.resources}


def test_corefile_answers_the_stack_networks_and_allowed_clients_in_place(dev):
    """The Corefile the infra node gets refuses all but the stack's networks; dns.allowed_clients is a day-2 change only."""
    cfg = parse_config(stack_model("dev"))
    corefile = dev.one(COMMAND, "coredns-corefile").inputs["stdin"]
    assert corefile == specs.corefile(cfg)
    assert corefile.count(f"allow net {' '.join(specs.dns_clients(cfg))}\n        block\n") == 2
    model = stack_model("dev")
    model["dns"]["allowed_clients"] = ["192.168.1.0/24"]
    wider = run_program("dev", model)
    assert wider.error is None, wider.error
    before, after = _inputs_by_urn(dev), _inputs_by_urn(wider)
    assert set(before) == set(after)
    changed = {urn.rsplit("::", 1)[1] for urn in before if before[urn] != after[urn]}
    assert changed == {"coredns-corefile"}, changed
    assert "192.168.1.0/24 127.0.0.1/32" in after[wider.urn_of(COMMAND, "coredns-corefile")]["stdin"]


def test_adding_a_worker_touches_only_day2_configs(dev):
    """A new worker: its own resources, new haproxy backends and DNS records; no existing VM, disk or network changes."""
    model = stack_model("dev")
    worker = next(n for n in model["nodes"] if n["name"] == "worker1")
    model["nodes"].append({**worker, "name": "worker2", "ip": "10.27.4.25"})
    grown = run_program("dev", model)
    assert grown.error is None, grown.error
    before, after = _inputs_by_urn(dev), _inputs_by_urn(grown)
    assert set(before) <= set(after)
    changed = {urn.rsplit("::", 1)[1] for urn in before if before[urn] != after[urn]}
    # k3s-ready waits for one more node; Longhorn's default replica count
    # follows the number of Longhorn nodes (up to 3): dev goes from 1 to 2
    assert changed == {"lb1-haproxy", "lb2-haproxy", "coredns-hosts", "k3s-ready", "platform-longhorn"}
    added = {urn.rsplit("::", 1)[1] for urn in set(after) - set(before)}
    assert added == {
        "worker2", "worker2-root", "worker2-longhorn", "worker2-ignition", "worker2-k3s", "worker2-ssh-host-key",
        # its Longhorn disk: prepared, mounted, bind-mounted at Longhorn's path; iscsid
        "worker2-disk-longhorn", "worker2-mount-longhorn", "worker2-longhorn-mount", "worker2-iscsi",
        # its reboot agent (the disruption budget's agent pool stays one slot: 10% of two agents)
        "worker2-reboot-agent", "worker2-reboot-check", "worker2-reboot-timer", "worker2-reboot-boot",
    }
    assert "worker2" in after[dev.urn_of(COMMAND, "lb1-haproxy")]["stdin"]


@pytest.mark.parametrize("stack", ["dev", "prod", "edge-big"])
def test_every_command_chooses_what_it_logs(stack):
    """pulumi-command logs stdout and stderr by default, into the display and CI logs: every command of the
    program sets `logging`, to nothing or to stderr only (the scripts' chosen notices). The admin kubeconfig
    (k3s-ready's stdout) is never logged."""
    run = run_program(stack)
    assert run.error is None, run.error
    commands = [r for r in run.resources if r.type in ("command:remote:Command", "command:local:Command")]
    assert len(commands) >= 10, len(commands)
    chosen = {r.name: r.inputs.get("logging") for r in commands}
    assert {n: v for n, v in chosen.items() if v not in ("none", "stderr")} == {}, chosen
    assert chosen.get("k3s-ready") == "none"
    # stderr: the firewall steps' notices, and an image check's ("fetching it again" when a cached file changed).
    assert {n for n, v in chosen.items() if v == "stderr"} == {n for n in chosen if n.endswith("-firewall") or n.startswith("check-")}
    assert {n for n in chosen if n.startswith("check-")} == {f"check-{os}" for os in stack_model(stack)["images"]}


def test_day2_commands_are_keyed_on_content_hash(dev):
    from components.day2 import trigger_digest

    key, _ = dev.output_value("ssh_private_key")
    checked = 0
    for cmd in dev.by_type(COMMAND):
        if "stdin" in cmd.secret_inputs or "stdin" not in cmd.inputs:
            continue
        assert cmd.inputs["triggers"][0] == trigger_digest(cmd.inputs["stdin"], key), cmd.name
        checked += 1
    assert checked >= 8
    hap = dev.one(COMMAND, "lb1-haproxy")
    assert "haproxy -c" in hap.inputs["create"]


def test_no_display_by_default_only_the_serial_console(dev, prod):
    """No graphics block, and the stylesheet drops the SPICE display the provider would write without one."""
    for run in (dev, prod):
        assert not [r for r in run.by_type("random:index/randomPassword:RandomPassword") if r.name.endswith("-vnc-password")]
        assert "vnc_passwords" not in run.outputs
        for dom in run.by_type(DOMAIN):
            assert "graphics" not in dom.inputs, dom.name
            assert dom.inputs["consoles"] == [{"type": "pty", "targetPort": "0", "targetType": "serial"}]
            xslt = dom.inputs["xml"]["xslt"]
            assert '<xsl:template match="/domain/devices/graphics"/>' in xslt and "passwd" not in xslt, dom.name
            assert "xml" not in dom.secret_inputs and "xml" not in dom.additional_secret_outputs


def _vnc_run() -> tuple[Run, set[str]]:
    """dev with console.vnc on and one node opting out: (the run, the nodes with a display)."""
    model = stack_model("dev")
    model["console"] = {"vnc": True}
    next(n for n in model["nodes"] if n["name"] == "lb2")["vnc"] = False
    run = run_program("dev", model)
    assert run.error is None, run.error
    return run, {n["name"] for n in model["nodes"]} - {"lb2"}


def test_vnc_display_on_loopback_behind_a_secret_password():
    run, shown = _vnc_run()
    passwords = {r.name: r for r in run.by_type("random:index/randomPassword:RandomPassword") if r.name.endswith("-vnc-password")}
    assert set(passwords) == {f"{n}-vnc-password" for n in shown}
    for name in shown:
        pw = passwords[f"{name}-vnc-password"]
        # VNC authentication reads 8 characters and libvirt refuses more; letters and digits only.
        assert (pw.inputs["length"], pw.inputs["special"]) == (8, False)
        assert "result" in pw.additional_secret_outputs
        assert pw.parent == run.urn_of(NODE, name)
        dom = run.one(DOMAIN, name)
        assert dom.inputs["graphics"] == {"type": "vnc", "listenType": "address", "listenAddress": "127.0.0.1", "autoport": True}
        # The password travels only inside the stylesheet: a secret input, kept secret in the state.
        assert "xml" in dom.secret_inputs and "xml" in dom.additional_secret_outputs
        assert run.urn_of("random:index/randomPassword:RandomPassword", f"{name}-vnc-password") in dom.property_dependencies["xml"]
    lb2 = run.one(DOMAIN, "lb2")
    assert "graphics" not in lb2.inputs and "xml" not in lb2.secret_inputs
    assert "passwd" not in lb2.inputs["xml"]["xslt"]
    value, secret = run.output_value("vnc_passwords")
    assert secret and value == {n: "m0ckPass" for n in shown}
    for r in run.resources:
        for key, v in r.inputs.items():
            assert key in r.secret_inputs or "m0ckPass" not in json.dumps(v), (r.name, key)


def test_turning_vnc_on_changes_only_the_domains_stylesheet_and_display():
    """The disks and the first-boot config stay: only the domain (ForceNew fields) is replaced."""
    run, shown = _vnc_run()
    base = run_program("dev")
    assert base.error is None, base.error
    compared = 0
    for name in shown:
        for typ in (VOLUME, IGNITION):
            for r in base.by_type(typ):
                if r.parent == base.urn_of(NODE, name):
                    assert run.one(typ, r.name).inputs == r.inputs, r.name
                    compared += 1
        before, after = base.one(DOMAIN, name).inputs, run.one(DOMAIN, name).inputs
        changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        assert changed == {"graphics", "xml"}, (name, changed)
    assert compared >= 2 * len(shown)  # a root volume and a first-boot config (Ignition or seed) each


def test_nodes_are_created_in_parallel(prod):
    """No domain waits on another domain: every VM can be created at once."""
    domains = {r.urn for r in prod.by_type(DOMAIN)}
    for dom in prod.by_type(DOMAIN):
        assert not (_deps(prod, dom) & domains), dom.name


def test_outputs(dev):
    nodes, secret = dev.output_value("nodes")
    assert not secret and nodes["server1"] == "10.27.4.21"
    vips, _ = dev.output_value("vips")
    assert vips == {"api": "10.27.0.32", "ingress": "10.27.0.33"}
    cmds, _ = dev.output_value("ssh_commands")
    assert cmds["lb1"] == ("ssh -i ~/.ssh/microcloud-dev -o UserKnownHostsFile=~/.ssh/microcloud-dev.known_hosts "
                           "-o StrictHostKeyChecking=yes core@10.27.0.30")
    assert "--show-secrets ssh_private_key" in cmds["save_key"]
    assert cmds["save_known_hosts"] == "pulumi stack output ssh_known_hosts > ~/.ssh/microcloud-dev.known_hosts"
    known, secret = dev.output_value("ssh_known_hosts")
    lines = known.splitlines()
    assert not secret and len(lines) == len(nodes), known
    assert all(re.fullmatch(r"\d+\.\d+\.\d+\.\d+ ssh-ed25519 \S+", ln) for ln in lines), known


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_connection_pins_its_nodes_own_host_key(stack):
    """Each node gets a host key of its own (pulumi-tls), its first-boot config carries it (secret), and every
    remote command and copy to the node accepts exactly that key."""
    run = run_program(stack)
    assert run.error is None, run.error
    keys = {r.name.removesuffix("-ssh-host-key"): r for r in run.by_type("tls:index/privateKey:PrivateKey")
            if r.name.endswith("-ssh-host-key")}
    nodes = {r.name for r in run.by_type(NODE)}
    assert set(keys) == nodes
    assert all(k.inputs["algorithm"] == "ED25519" and "privateKeyOpenssh" in k.additional_secret_outputs
               for k in keys.values())
    pins = {n: mock_public_key(keys[n].name) for n in nodes}
    assert len(set(pins.values())) == len(pins), "two nodes share a host key"
    ip_to_node = {str(n.ip): n.name for n in parse_config(stack_model(stack)).nodes}
    checked = 0
    for r in run.resources:
        if r.type.startswith("command:remote:"):
            conn = r.inputs["connection"]
            conn = conn.get("value", conn)  # secret as a whole: it holds the private key
            node = ip_to_node[conn["host"]]
            assert conn.get("hostKey") == pins[node], (r.name, node, conn.get("hostKey"))
            checked += 1
    assert checked >= 10
    for r in [*run.by_type("libvirt:index/ignition:Ignition")]:
        assert "content" in r.secret_inputs, r.name


@pytest.mark.parametrize("stack", ["dev", "prod", *EDGE_STACKS])
def test_every_connecting_step_is_gated_by_its_nodes_host_key_check(stack):
    """Before a remote command or copy is created, replaced or updated, the engine runs the host-key check of
    the node its connection dials (the resource hook `<node>-host-key-check`) and no other; that check waited
    for sshd, so the session's own dial is bounded (a changed key fails in seconds, not at the 20 min timeout)."""
    from components.day2 import DIAL_ATTEMPTS

    run = run_program(stack)
    assert run.error is None, run.error
    ip_to_node = {str(n.ip): n.name for n in parse_config(stack_model(stack)).nodes}
    gated: dict[str, set[str]] = {}
    for r in run.resources:
        if r.type.startswith("command:remote:"):
            conn = r.inputs["connection"]
            conn = conn.get("value", conn)
            node = ip_to_node[conn["host"]]
            want = [f"{node}-host-key-check"]
            assert r.hooks == {"before_create": want, "before_update": want}, (r.name, node, r.hooks)
            assert 0 < conn["dialErrorLimit"] == DIAL_ATTEMPTS, (r.name, conn["dialErrorLimit"])
            gated.setdefault(node, set()).add(r.name)
        else:
            assert r.hooks == {}, (r.type, r.name, r.hooks)
    # Every node the program connects to is gated, through each of its steps.
    assert len(gated) >= 5 and sum(map(len, gated.values())) >= 20, gated

# ------------------------------------------------------------------ first-boot identity
# A node's first-boot config (and so its VM) is a function of the node and of
# stack-wide settings only. Each change below leaves every other node's
# resources - domain, volumes, Ignition / NoCloud seed - exactly as they were,
# so the engine plans no replacement for them (DESIGN 7).


def _node_of(resource_name: str, names: set[str]) -> str | None:
    """The node a Node child belongs to: 'worker1-root' -> worker1 (longest matching name wins)."""
    hits = [n for n in names if resource_name == n or resource_name.startswith(n + "-")]
    return max(hits, key=len) if hits else None


def _vm_inputs(run: Run, names: set[str]) -> dict[str, dict[str, dict]]:
    """Per node: the inputs of every resource under its Node component, by resource name."""
    nodes = {r.urn: r.name for r in run.by_type(NODE)}
    out: dict[str, dict[str, dict]] = {n: {} for n in names}
    for r in run.resources:
        if r.parent in nodes:
            out[nodes[r.parent]][r.name] = r.inputs
    return out


def _insert_worker(m: dict) -> set[str]:
    nodes = m["nodes"]
    i = next(i for i, n in enumerate(nodes) if n["role"] == "agent")
    nodes.insert(i + 1, {**nodes[i], "name": "worker9", "ip": "10.17.4.29"})
    return {"worker9"}


def _remove_node(m: dict) -> set[str]:
    victim = [n for n in m["nodes"] if n["role"] == "agent"][1]
    m["nodes"].remove(victim)
    return set()


def _reorder(m: dict) -> set[str]:
    m["nodes"].reverse()
    return set()


def _add_network(m: dict) -> set[str]:
    m["networks"].append({"name": "backup", "mode": "nat", "cidr": "10.17.9.0/24"})
    return set()


def _add_backends(m: dict) -> set[str]:
    """Two more K3s servers (the count stays odd) and the storage node taking ingress."""
    server = next(n for n in m["nodes"] if n["role"] == "server")
    pos = m["nodes"].index(server)
    m["nodes"][pos:pos] = [{**server, "name": "master4", "ip": "10.17.4.40"}, {**server, "name": "master5", "ip": "10.17.4.41"}]
    next(n for n in m["nodes"] if n["role"] == "storage")["ingress"] = True
    return {"master4", "master5"}


@pytest.mark.parametrize(
    "change", [_insert_worker, _remove_node, _reorder, _add_network, _add_backends], ids=lambda f: f.__name__[1:]
)
def test_other_nodes_first_boot_and_vm_unchanged(change, prod):
    model = stack_model("prod")
    added = change(model)
    changed = run_program("prod", model)
    assert changed.error is None, changed.error
    before_names = {n["name"] for n in stack_model("prod")["nodes"]}
    after_names = {n["name"] for n in model["nodes"]}
    assert after_names - before_names == added
    kept = before_names & after_names
    before, after = _vm_inputs(prod, before_names), _vm_inputs(changed, after_names)
    flatcar_seen = seed_seen = 0
    for name in sorted(kept):
        assert before[name].keys() == after[name].keys(), name
        for res, inputs in before[name].items():
            assert after[name][res] == inputs, f"{change.__name__}: {res} of {name} changed"
        flatcar_seen += f"{name}-ignition" in before[name]
        seed_seen += f"{name}-seed" in before[name]
    # The comparison covered both kinds of first-boot config.
    assert flatcar_seen and seed_seen
    # And the stack's own networks and base images are untouched too.
    for typ in (NETWORK, "libvirt:index/pool:Pool"):
        old = {r.name: r.inputs for r in prod.by_type(typ)}
        new = {r.name: r.inputs for r in changed.by_type(typ)}
        assert {k: v for k, v in new.items() if k in old} == old, typ


# ------------------------------------------------------------------ host forwarding


def test_host_forwards_between_the_stack_networks_after_they_exist(dev, prod):
    for run, stack in ((dev, "dev"), (prod, "prod")):
        cfg = parse_config(stack_model(stack))
        fwd = run.one(LOCAL, "host-forwarding")
        assert {run.urn_of(NETWORK, n.name) for n in cfg.networks} <= set(fwd.dependencies)
        script = fwd.inputs["create"]
        assert fwd.inputs["update"] == script and "purge" in fwd.inputs["delete"]
        libvirt_owned = [str(n.cidr) for n in cfg.networks if n.mode != "bridge"]
        for a in libvirt_owned:
            for b in libvirt_owned:
                if a != b:
                    assert f"-s {a} -d {b} -m comment --comment microcloud-{stack} -j ACCEPT" in script
    # prod's LAN is a bridge: only the LB pair and the VIPs are ends there, never the whole LAN, either way.
    script = prod.one(LOCAL, "host-forwarding").inputs["create"]
    lan = "192.168.0.0/24"
    assert f"-s {lan}" not in script and f"-d {lan}" not in script, script
    for end in ("192.168.0.30/32", "192.168.0.31/32", "192.168.0.32/32", "192.168.0.33/32"):
        for net in ("10.17.3.0/24", "10.17.4.0/24"):
            assert f"-s {end} -d {net} -m comment --comment microcloud-prod -j ACCEPT" in script, (end, net)
            assert f"-s {net} -d {end} -m comment --comment microcloud-prod -j RETURN" in script, (end, net)


def test_no_host_forwarding_for_isolated_networks_or_a_remote_host():
    run = run_program("edge-alma-isolated")
    assert run.error is None, run.error
    assert not [r for r in run.by_type(LOCAL) if r.name == "host-forwarding"]
    model = stack_model("dev")
    model["libvirt_uri"] = "qemu+ssh://ops@kvm1.example.lan/system"
    model["firewall"] = {"ssh_from": ["192.168.0.0/24"]}  # Pulumi elsewhere: it must say whence it connects
    run = run_program("dev", model)
    assert run.error is None, run.error
    assert not [r for r in run.by_type(LOCAL) if r.name == "host-forwarding"]


def test_reordering_the_node_list_changes_nothing_at_all(prod):
    """Not a VM, not a day-2 file: the VRRP MASTER, HAProxy backends and DNS records follow names, not positions."""
    model = stack_model("prod")
    model["nodes"].reverse()
    for lb in (n for n in model["nodes"] if n["role"] == "load_balancer"):
        lb.pop("vrrp_priority", None)  # the default priorities too
    base = stack_model("prod")
    for lb in (n for n in base["nodes"] if n["role"] == "load_balancer"):
        lb.pop("vrrp_priority", None)
    before, after = run_program("prod", base), run_program("prod", model)
    assert before.error is None and after.error is None, (before.error, after.error)
    assert _inputs_by_urn(after) == _inputs_by_urn(before)
