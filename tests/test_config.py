"""The config model: dev and prod load; every kind of mistake fails in one line naming its key."""

from __future__ import annotations

import copy

import pytest

from components.config import ConfigError, parse_config, vrrp_priority
from support.harness import run_program, stack_model

pytestmark = pytest.mark.unit


def node(model: dict, name: str) -> dict:
    return next(n for n in model["nodes"] if n["name"] == name)


def net(model: dict, name: str) -> dict:
    return next(n for n in model["networks"] if n["name"] == name)


def add_server(m: dict, name: str, ip: str) -> None:
    m["nodes"].append({**node(m, "server1"), "name": name, "ip": ip})


# (id, mutation of the dev model, key the error must name, words the message must contain)
CASES = [
    ("cidr-unparsable", lambda m: net(m, "infra").update(cidr="10.27.3.0/33"), "networks[1].cidr", "valid"),
    ("cidr-host-bits", lambda m: net(m, "infra").update(cidr="10.27.3.7/24"), "networks[1].cidr", "host bits"),
    ("cidr-overlap", lambda m: net(m, "cluster").update(cidr="10.27.0.0/16"), "networks[2].cidr", "overlaps"),
    ("network-name-dup", lambda m: net(m, "cluster").update(name="infra"), "networks[2].name", "twice"),
    ("network-mode", lambda m: net(m, "lan").update(mode="macvtap"), "networks[0].mode", "nat"),
    ("gateway-not-first-host", lambda m: net(m, "lan").update(gateway="10.27.0.254"), "networks[0].gateway", "first address"),
    ("bridge-without-name", lambda m: net(m, "lan").update(mode="bridge", dhcp=None, gateway="10.27.0.1"), "networks[0].bridge", "bridge"),
    ("dhcp-outside", lambda m: net(m, "lan").update(dhcp={"start": "10.27.0.100", "end": "10.27.1.5"}), "networks[0].dhcp.end", "10.27.0.0/24"),
    ("dhcp-reversed", lambda m: net(m, "lan").update(dhcp={"start": "10.27.0.200", "end": "10.27.0.100"}), "networks[0].dhcp", "after"),
    ("ip-outside-network", lambda m: node(m, "worker1").update(ip="10.27.3.50"), "nodes[worker1].ip", "10.27.4.0/24"),
    ("ip-in-dhcp", lambda m: node(m, "worker1").update(ip="10.27.4.150"), "nodes[worker1].ip", "DHCP range"),
    ("ip-duplicated", lambda m: node(m, "storage1").update(ip="10.27.4.24"), "nodes[storage1].ip", "worker1"),
    ("ip-is-gateway", lambda m: node(m, "storage1").update(ip="10.27.4.1"), "nodes[storage1].ip", "gateway"),
    ("ip-is-broadcast", lambda m: node(m, "storage1").update(ip="10.27.4.255"), "nodes[storage1].ip", "host address"),
    ("name-duplicated", lambda m: node(m, "storage1").update(name="worker1"), "nodes[5].name", "twice"),
    ("name-invalid", lambda m: node(m, "storage1").update(name="Storage_1"), "nodes[5].name", "hostname"),
    ("name-reserved", lambda m: node(m, "storage1").update(name="api"), "nodes[api].name", "reserved"),
    ("mac-duplicated", lambda m: (node(m, "lb1").update(mac="52:54:00:00:00:01"), node(m, "lb2").update(mac="52:54:00:00:00:01")), "nodes[lb2].mac", "lb1"),
    ("mac-invalid", lambda m: node(m, "lb1").update(mac="52:54:00:zz:00:01"), "nodes[lb1].mac", "MAC"),
    ("mac-multicast", lambda m: node(m, "lb1").update(mac="01:54:00:00:00:01"), "nodes[lb1].mac", "multicast"),
    ("vip-outside", lambda m: m["load_balancer"].update(api_vip="10.27.4.32"), "load_balancer.api_vip", "outside"),
    ("vip-is-node", lambda m: m["load_balancer"].update(ingress_vip="10.27.0.30"), "load_balancer.ingress_vip", "lb1"),
    ("vip-in-dhcp", lambda m: m["load_balancer"].update(api_vip="10.27.0.150"), "load_balancer.api_vip", "DHCP"),
    ("vip-same", lambda m: m["load_balancer"].update(ingress_vip="10.27.0.32"), "load_balancer.ingress_vip", "differ"),
    ("vip-network-missing", lambda m: m["load_balancer"].update(network="wan"), "load_balancer.network", "no network"),
    ("servers-even", lambda m: add_server(m, "server2", "10.27.4.22"), "nodes", "quorum"),
    ("servers-zero", lambda m: node(m, "server1").update(role="agent"), "nodes", "no K3s server"),
    ("node-network-missing", lambda m: node(m, "worker1").update(network="storage"), "nodes[worker1].network", "no network named 'storage'"),
    ("vrrp-id-dup", lambda m: m["load_balancer"].update(vrrp={"api_router_id": 60, "ingress_router_id": 60}), "load_balancer.vrrp.ingress_router_id", "differ"),
    ("vrrp-id-range", lambda m: m["load_balancer"].update(vrrp={"api_router_id": 256}), "load_balancer.vrrp.api_router_id", "1-255"),
    ("vrrp-priority-equal", lambda m: (node(m, "lb1").update(vrrp_priority=100), node(m, "lb2").update(vrrp_priority=100)), "nodes[lb2].vrrp_priority", "MASTER"),
    ("vrrp-priority-on-worker", lambda m: node(m, "worker1").update(vrrp_priority=100), "nodes[worker1].vrrp_priority", "load_balancer"),
    ("k3s-latest", lambda m: m["k3s"].update(version="latest"), "k3s.version", "not pinned"),
    ("k3s-wildcard", lambda m: m["k3s"].update(version="v1.33.x"), "k3s.version", "not pinned"),
    ("image-version-latest", lambda m: m["images"]["flatcar"].update(version="current"), "images.flatcar.version", "not pinned"),
    ("image-source-current", lambda m: m["images"]["flatcar"].update(source="https://example.invalid/amd64-usr/current/flatcar.img"), "images.flatcar.source", "moving alias"),
    ("image-source-http", lambda m: m["images"]["flatcar"].update(source="http://stable.release.flatcar-linux.net/amd64-usr/4593.2.4/flatcar_production_qemu_image.img"), "images.flatcar.source", "http:// is refused"),
    ("image-source-relative", lambda m: m["images"]["rocky9"].update(source="images/rocky.qcow2"), "images.rocky9.source", "https URL or an absolute path"),
    ("image-no-digest", lambda m: m["images"]["rocky9"].pop("sha256"), "images.rocky9", "needs the image's sha256"),
    ("image-two-digests", lambda m: m["images"]["flatcar"].update(sha256="0" * 64), "images.flatcar", "not both"),
    ("image-sha256-short", lambda m: m["images"]["rocky9"].update(sha256="0" * 63), "images.rocky9.sha256", "not a sha256 hex digest"),
    ("image-sha512-as-sha256", lambda m: m["images"]["rocky9"].update(sha256="0" * 128), "images.rocky9.sha256", "not a sha256 hex digest"),
    ("image-sha512-not-hex", lambda m: m["images"]["flatcar"].update(sha512="g" * 128), "images.flatcar.sha512", "not a sha512 hex digest"),
    ("coredns-latest", lambda m: m["dns"].update(coredns={"version": "latest"}), "dns.coredns.version", "not pinned"),
    ("coredns-branch", lambda m: m["dns"].update(coredns={"version": "v1.12"}), "dns.coredns.version", "not a coredns release"),
    ("coredns-relative", lambda m: m["dns"].update(coredns={"path": "bin/coredns"}), "dns.coredns.path", "absolute path"),
    ("coredns-sha", lambda m: m["dns"].update(coredns={"sha256": "abc"}), "dns.coredns.sha256", "sha256"),
    ("dns-open-resolver", lambda m: m["dns"].update(allowed_clients=["0.0.0.0/0"]), "dns.allowed_clients", "open resolver"),
    ("dns-client-host-bits", lambda m: m["dns"].update(allowed_clients=["192.168.1.7/24"]), "dns.allowed_clients[0]", "192.168.1.0/24"),
    ("domain-invalid", lambda m: m.update(domain="Micro_Cloud"), "domain", "not a DNS domain"),
    ("domain-single-label", lambda m: m.update(domain="lan"), "domain", "at least two"),
    ("image-missing", lambda m: m["images"].pop("rocky9"), "images.rocky9", "no image source"),
    ("image-unknown-os", lambda m: m["images"].update(ubuntu24={"source": "/x.qcow2", "version": "12"}), "images.ubuntu24", "flatcar"),
    ("longhorn-without-disk", lambda m: node(m, "worker1").update(data_disks=[]), "nodes[worker1].data_disks", "Longhorn"),
    ("storage-without-disk", lambda m: node(m, "storage1").update(data_disks=[]), "nodes[storage1].data_disks", "NFS"),
    ("memory-server", lambda m: node(m, "server1").update(memory_mib=1024), "nodes[server1].memory_mib", "2048"),
    ("memory-lb", lambda m: node(m, "lb1").update(memory_mib=256), "nodes[lb1].memory_mib", "512"),
    ("lb-on-flatcar", lambda m: node(m, "lb1").update(os="flatcar"), "nodes[lb1].os", "rocky9"),
    ("lb-count", lambda m: node(m, "lb2").update(role="generic"), "nodes", "exactly 2"),
    ("lb-off-vip-network", lambda m: node(m, "lb2").update(network="infra", ip="10.27.3.31"), "nodes[lb2].network", "VIP network"),
    ("infra-missing", lambda m: node(m, "infra").update(role="generic"), "nodes", "infra"),
    ("no-ingress", lambda m: node(m, "worker1").update(ingress=False), "nodes", "ingress"),
    ("unknown-key", lambda m: m.update(dommain="x.lan"), "dommain", "unknown key"),
    ("unknown-node-key", lambda m: node(m, "lb1").update(cpus=2), "nodes[lb1].cpus", "unknown key"),
    ("role-invalid", lambda m: node(m, "lb1").update(role="master"), "nodes[lb1].role", "'master'"),
    ("forwarder-invalid", lambda m: m["dns"].update(forwarders=["dns.google"]), "dns.forwarders[0]", "IPv4"),
    ("nodeport-range", lambda m: m["load_balancer"].update(ingress_http_nodeport=8080), "load_balancer.ingress_http_nodeport", "30000"),
    ("ssh-key-invalid", lambda m: m.update(ssh={"public_keys": ["not a key"]}), "ssh.public_keys", "OpenSSH"),
    ("ssh-user-root", lambda m: m.update(ssh={"user": "root"}), "ssh.user", "non-root"),
    ("pool-path-relative", lambda m: m.update(pool_path="images"), "pool_path", "absolute"),
    ("libvirt-uri", lambda m: m.update(libvirt_uri="http://host"), "libvirt_uri", "libvirt URI"),
    ("updates-window", lambda m: m.update(updates={"window_start": "25:00"}), "updates.window_start", "03:00"),
    ("missing-key", lambda m: m.pop("k3s"), "k3s", "required"),
    ("k3s-no-binary", lambda m: m["k3s"].pop("binary"), "k3s", "binary is required"),
    ("k3s-url-no-sha", lambda m: m["k3s"]["binary"].pop("sha256"), "k3s.binary", "needs its sha256"),
    ("k3s-url-and-path", lambda m: m["k3s"]["binary"].update(path="/srv/k3s"), "k3s.binary", "exactly one of url and path"),
    ("k3s-url-http", lambda m: m["k3s"]["binary"].update(url="http://mirror.lan/k3s/v1.34.2+k3s1/k3s"), "k3s.binary.url", "https"),
    ("k3s-url-other-version", lambda m: m["k3s"]["binary"].update(url="https://mirror.lan/k3s/v1.33.5+k3s1/k3s"), "k3s", "does not name version"),
    ("k3s-url-latest", lambda m: m["k3s"]["images"].update(url="https://mirror.lan/k3s/latest/images.tar.zst"), "k3s.images.url", "moving alias"),
    ("k3s-sha-short", lambda m: m["k3s"]["binary"].update(sha256="abc"), "k3s.binary.sha256", "sha256"),
    ("k3s-path-relative", lambda m: m["k3s"].update(binary={"path": "k3s"}), "k3s.binary.path", "absolute"),
    ("label-key", lambda m: node(m, "worker1").update(labels={"-bad": "x"}), "nodes[worker1].labels", "label key"),
    ("label-value", lambda m: node(m, "worker1").update(labels={"tier": "a b"}), "nodes[worker1].labels", "label value"),
    ("taint-effect", lambda m: node(m, "worker1").update(taints=["dedicated=db:Never"]), "nodes[worker1].taints", "NoSchedule"),
    ("label-on-lb", lambda m: node(m, "lb1").update(labels={"tier": "edge"}), "nodes[lb1].labels", "K3s node"),
    ("chart-unknown", lambda m: m.update(platform={"charts": {"trafik": {"version": "41.3.0"}}}), "platform.charts", "no chart named trafik"),
    ("chart-range", lambda m: m.update(platform={"charts": {"traefik": {"version": "41.x"}}}), "platform.charts.traefik.version", "not pinned"),
    ("chart-caret", lambda m: m.update(platform={"charts": {"traefik": {"version": "^41.3.0"}}}), "platform.charts.traefik.version", "exact chart version"),
    ("chart-http-repo", lambda m: m.update(platform={"charts": {"traefik": {"repo": "http://charts.lan"}}}), "platform.charts.traefik.repo", "https"),
    ("chart-repo-and-path", lambda m: m.update(platform={"charts": {"traefik": {"repo": "https://charts.lan", "path": "/srv/traefik"}}}), "platform.charts.traefik", "not both"),
    ("rotation-unknown", lambda m: m.update(platform={"rotation": {"grafana": "2"}}), "platform.rotation", "no generated password grafana"),
    ("gitops-url", lambda m: m.update(platform={"gitops": {"repo_url": "ftp://x/y", "revision": "main"}}), "platform.gitops.repo_url", "Git URL"),
    ("gitops-path", lambda m: m.update(platform={"gitops": {"repo_url": "https://git.lan/ops.git", "revision": "main", "path": "../x"}}), "platform.gitops.path", "relative"),
    ("gitops-url-glob", lambda m: m.update(platform={"gitops": {"repo_url": "https://git.lan/*", "revision": "main"}}), "platform.gitops.repo_url", "no globs"),
    ("gitops-app-repo-glob", lambda m: m.update(platform={"gitops": {"repo_url": "https://git.lan/ops.git", "revision": "main", "app_repos": ["https://git.lan/**"]}}), "platform.gitops.app_repos", "no globs"),
    ("gitops-app-repo-twice", lambda m: m.update(platform={"gitops": {"repo_url": "https://git.lan/ops.git", "revision": "main", "app_repos": ["oci://charts.lan/x", "oci://charts.lan/x"]}}), "platform.gitops.app_repos", "listed twice"),
    ("gitops-app-repo-is-root", lambda m: m.update(platform={"gitops": {"repo_url": "https://git.lan/ops.git", "revision": "main", "app_repos": ["https://git.lan/ops.git"]}}), "platform.gitops", "allowed already"),
    ("argocd-mtime", lambda m: m.update(platform={"argocd_password_mtime": "yesterday"}), "platform.argocd_password_mtime", "UTC time"),
    ("values-unknown-chart", lambda m: m.update(platform={"values": {"grafana": {"x": 1}}}), "platform.values", "no chart named grafana"),
]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_stacks_load(stack):
    cfg = parse_config(stack_model(stack))
    assert len(cfg.servers) % 2 == 1
    assert len(cfg.load_balancers) == 2


def test_prod_is_the_reference_topology():
    cfg = parse_config(stack_model("prod"))
    modes = {n.name: n.mode for n in cfg.networks}
    assert modes == {"lan": "bridge", "infra": "nat", "cluster": "nat"}
    assert [n.name for n in cfg.servers] == ["master1", "master2", "master3"]
    assert str(cfg.load_balancer.api_vip) == "192.168.0.32" and str(cfg.load_balancer.ingress_vip) == "192.168.0.33"
    # The storage node is not an ingress backend unless asked (a defect of the original).
    assert [n.name for n in cfg.ingress_nodes] == ["worker1", "worker2", "worker3"]
    assert all(n.data_disks for n in cfg.nodes if n.role in ("agent", "storage"))
    assert {vrrp_priority(cfg, n) for n in cfg.load_balancers} == {110, 100}


def test_case_count():
    assert len(CASES) >= 25


@pytest.mark.parametrize("case_id,mutate,key,words", CASES, ids=[c[0] for c in CASES])
def test_invalid_config_names_the_key(case_id, mutate, key, words):
    model = stack_model("dev")
    parse_config(copy.deepcopy(model))  # the base is valid: only the mutation can fail it
    mutate(model)
    with pytest.raises(ConfigError) as exc:
        parse_config(model)
    err = exc.value
    assert err.key == key, str(err)
    assert words.lower() in err.message.lower(), str(err)
    line = str(err)
    assert "\n" not in line and line.startswith(f"microcloud:config.{key}: ")


def test_storage_node_ingress_is_opt_in():
    model = stack_model("dev")
    node(model, "storage1")["ingress"] = True
    assert "storage1" in [n.name for n in parse_config(model).ingress_nodes]


def test_macs_are_stable_and_distinct():
    a = parse_config(stack_model("prod"))
    b = parse_config(stack_model("prod"))
    macs = [a.mac_of(n) for n in a.nodes]
    assert macs == [b.mac_of(n) for n in b.nodes]
    assert len(set(macs)) == len(macs)


@pytest.mark.parametrize("case_id,mutate,key,words", CASES[:6] + CASES[-6:], ids=[c[0] for c in CASES[:6] + CASES[-6:]])
def test_program_reports_config_error_without_resources(case_id, mutate, key, words):
    """Through the real program: one RunError line and no resource registered but the stack."""
    import pulumi

    model = stack_model("dev")
    mutate(model)
    run = run_program("dev", model)
    assert isinstance(run.error, pulumi.RunError), run.error
    assert str(run.error).startswith(f"microcloud:config.{key}: ")
    assert [r.type for r in run.resources] == ["pulumi:pulumi:Stack"]


def test_program_reports_missing_config():
    import json

    import pulumi

    from components.config import load
    from support.harness import stack_config

    cfg = {k: v for k, v in stack_config("dev").items() if k != "microcloud:config"}
    pulumi.runtime.set_all_config({k: json.dumps(v) for k, v in cfg.items()})
    with pytest.raises(pulumi.RunError, match="Pulumi.dev.yaml"):
        load()


def test_program_checks_the_coredns_binary_it_uploads(tmp_path):
    """The binary the infra node gets: present, and the pinned sha256 when one is set; else one RunError line."""
    import hashlib

    import pulumi

    binary = tmp_path / "coredns"
    binary.write_bytes(b"a CoreDNS build\n")
    good = hashlib.sha256(binary.read_bytes()).hexdigest()
    cases = [
        ({"path": str(tmp_path / "absent")}, "dns.coredns.path", "no CoreDNS binary at"),
        ({"path": str(binary), "sha256": "0" * 64}, "dns.coredns.sha256", f"has sha256 {good}, not the pinned"),
    ]
    for coredns, key, words in cases:
        model = stack_model("dev")
        model["dns"]["coredns"] = coredns
        run = run_program("dev", model)
        assert isinstance(run.error, pulumi.RunError), run.error
        assert str(run.error).startswith(f"microcloud:config.{key}: ") and words in str(run.error), run.error
        assert [r.type for r in run.resources] == ["pulumi:pulumi:Stack"]
    model = stack_model("dev")
    model["dns"]["coredns"] = {"path": str(binary), "sha256": good.upper()}
    assert run_program("dev", model).error is None


# ---------------------------------------------------------------- how errors name things


def _error(model: dict) -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        parse_config(model)
    return exc.value


def test_node_errors_name_the_node():
    """A node is found in Pulumi.<stack>.yaml by its name, not by counting list items."""
    model = stack_model("dev")
    node(model, "worker1")["memory_mib"] = 512  # a cross-field check
    assert str(_error(model)).startswith("microcloud:config.nodes[worker1].memory_mib: 512 MiB is below the 1024 MiB")
    model = stack_model("dev")
    node(model, "worker1")["vcpu"] = 0  # a field check (pydantic)
    assert _error(model).key == "nodes[worker1].vcpu"
    model = stack_model("dev")
    node(model, "worker1")["data_disks"][0]["size_gib"] = 0
    assert _error(model).key == "nodes[worker1].data_disks[0].size_gib"


@pytest.mark.parametrize(
    "name,why",
    [("Worker_1", "not a valid hostname"), ("server1", "used by another node"), ("7", "a number reads as an index")],
)
def test_node_errors_fall_back_to_the_index(name, why):
    model = stack_model("dev")
    node(model, "worker1").update(name=name, vrrp_priority=100)
    key = _error(model).key
    assert key.startswith("nodes[4]."), (why, key)


@pytest.mark.parametrize(
    "mutate,line",
    [
        (lambda m: node(m, "worker1").update(memroy_mib=4096), "nodes[worker1].memroy_mib: unknown key; did you mean memory_mib?"),
        (lambda m: m.update(dommain="x.lan"), "dommain: unknown key; did you mean domain?"),
        (lambda m: m["load_balancer"].update(vrrp={"intreface": "eth1"}), "load_balancer.vrrp.intreface: unknown key; did you mean interface?"),
        (lambda m: m["images"]["flatcar"].update(sorce="/x.img"), "images.flatcar.sorce: unknown key; did you mean source?"),
        (lambda m: net(m, "lan").update(gatway="10.27.0.1"), "networks[0].gatway: unknown key; did you mean gateway?"),
    ],
)
def test_unknown_key_suggests_the_closest_valid_one(mutate, line):
    model = stack_model("dev")
    mutate(model)
    assert str(_error(model)) == f"microcloud:config.{line}"


def test_unknown_key_without_a_close_one_lists_the_valid_ones():
    model = stack_model("dev")
    node(model, "lb1")["colour"] = "blue"
    err = _error(model)
    assert err.key == "nodes[lb1].colour" and "did you mean" not in err.message
    assert err.message.startswith("unknown key; valid keys here: name, role, os,") and "memory_mib" in err.message


# ---------------------------------------------------------------- the stack's own keys


@pytest.mark.parametrize(
    "keys,line",
    [
        ({"microcloud:confg"}, "microcloud:confg is not a key of this project; did you mean microcloud:config?"),
        ({"microclud:config"}, "microclud:config is not a key of this project; did you mean microcloud:config?"),
        ({"microcloud:config", "microcloud:Config"}, "microcloud:Config is not a key of this project; did you mean microcloud:config?"),
        ({"microcloud:config", "microcloud:nodes"}, "microcloud:nodes is not a key of this project; its only key is microcloud:config, the whole stack goes below it"),
        ({"libvirt:uri"}, "microcloud:config is not set; copy the shape of Pulumi.dev.yaml into Pulumi.<stack>.yaml"),
    ],
)
def test_stack_key_typo_is_named(keys, line):
    from components.config import StackKeyError, check_stack_keys

    with pytest.raises(StackKeyError) as exc:
        check_stack_keys(keys | {"pulumi:disable-default-providers"})
    assert str(exc.value) == line


def test_other_namespaces_are_not_ours():
    from components.config import check_stack_keys

    check_stack_keys({"microcloud:config", "pulumi:disable-default-providers", "libvirt:uri", "kubernetes:context"})


def test_program_reports_a_typo_in_the_stack_key():
    """Through load(): the stack's keys as the runtime holds them, the typo named instead of 'is not set'."""
    import json

    import pulumi

    from components.config import load
    from support.harness import stack_config

    cfg = {("microcloud:confg" if k == "microcloud:config" else k): v for k, v in stack_config("dev").items()}
    pulumi.runtime.set_all_config({k: json.dumps(v) for k, v in cfg.items()})
    with pytest.raises(pulumi.RunError) as exc:
        load()
    assert str(exc.value) == "microcloud:confg is not a key of this project; did you mean microcloud:config?"


# ---------------------------------------------------------------- docs/config.md


def _all_field_keys(model, prefix=""):
    import typing

    from pydantic import BaseModel

    from components.config.base import OsName

    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        yield key, field
        tp = field.annotation
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), tp)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            if typing.get_origin(tp) is dict:
                sep = ".<os>." if typing.get_args(tp)[0] is OsName else ".<name>."
            else:
                sep = "[]." if typing.get_origin(tp) is tuple else "."
            yield from _all_field_keys(inner, key + sep)


def test_every_field_is_documented_in_the_table():
    from components.config import StackConfig
    from components.config.doc import config_table

    table = config_table()
    for key, field in _all_field_keys(StackConfig):
        assert field.description, f"{key} has no description"
        assert f"| `{key}` |" in table, key


def test_docs_config_table_is_the_generated_one():
    """Fails when a field, default or description changes without regenerating docs/config.md's table."""
    from components.config.doc import config_table, readme_table
    from support.harness import ROOT

    assert readme_table((ROOT / "docs" / "config.md").read_text()) == config_table(), (
        "docs/config.md's config table is stale: run venv/bin/python -m components.config.doc --write docs/config.md"
    )


def test_rotatable_passwords_are_the_platforms():
    from components.config.platform import ROTATABLE
    from components.platform import ROTATABLE as COMPONENT

    # One definition: the platform layer takes the config's, it keeps no copy.
    assert COMPONENT is ROTATABLE
