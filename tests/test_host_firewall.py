"""Each node's firewall (render/host_firewall.py, specs/firewall.py), by the programs that read it.

- every node of every stack: its nftables file checked by the real ``nft -c``, its firewalld zones read by the
  real ``firewall-offline-cmd`` (in a mount namespace of the test, so the machine's /etc/firewalld is untouched);
- the table loaded for real into a network namespace that stands in for a node, with peers on other
  namespaces: an allowed source gets through, a stranger and an unlisted port time out, the pod range is
  admitted, NodePorts (a DNAT like kube-proxy's) answer only their clients, another table survives, a
  second load changes nothing;
- what each role admits, from the stack configs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from components import specs
from components.config import ConfigError, parse_config
from components.render import host_firewall as fw
from components.render.host_firewall import Allow, FirewallSpec, NodePorts, port
from support.harness import EDGE_STACKS, stack_model

pytestmark = pytest.mark.validators

STACKS = ("dev", "prod", *EDGE_STACKS)


def _all_specs():
    for stack in STACKS:
        cfg = parse_config(stack_model(stack))
        for node in cfg.nodes:
            yield stack, cfg, node, specs.firewall_spec(cfg, node)


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)


# ------------------------------------------------------------------ the real readers


def test_every_nodes_nftables_file_is_accepted_by_nft(tmp_path):
    assert shutil.which("nft"), "nft is not installed; install the Debian package nftables (bash .ci/install.sh)"
    checked = 0
    for stack, _cfg, node, spec in _all_specs():
        path = tmp_path / f"{stack}-{node.name}.nft"
        path.write_text(fw.render_nftables(spec))
        res = _run(["nft", "-c", "-f", str(path)])
        assert res.returncode == 0, f"{stack}/{node.name}: {res.stderr}\n{path.read_text()}"
        checked += 1
    assert checked >= 20


def _offline_cmd(zones: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """firewall-offline-cmd over a private /etc/firewalld holding the package's firewalld.conf and ``zones``."""
    conf = Path("/etc/firewalld/firewalld.conf")
    assert shutil.which("firewall-offline-cmd") and conf.exists(), "firewalld is not installed (bash .ci/install.sh)"
    stage = Path(f"/tmp/mc-fwd-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    (stage / "zones").mkdir(parents=True)
    try:
        shutil.copy(conf, stage / "firewalld.conf")
        for name, text in zones.items():
            (stage / "zones" / f"{name}.xml").write_text(text)
        script = ("set -e; mount --bind \"$0\" /etc/firewalld; firewall-offline-cmd --check-config >/dev/null; "
                  'shift 0; exec firewall-offline-cmd "$@"')
        return _run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, str(stage), *args])
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def test_every_el9_nodes_zones_are_read_by_firewalld():
    seen = 0
    for stack, cfg, node, spec in _all_specs():
        if node.is_flatcar or node.os not in ("rocky9", "alma9") or spec.pod_ranges:
            continue  # EL9 K3s nodes load the nftables table (checked above), firewalld off
        zones = {fw.ZONE: fw.render_firewalld_zone(spec)}
        res = _offline_cmd(zones, f"--zone={fw.ZONE}", "--list-rich-rules")
        assert res.returncode == 0, f"{stack}/{node.name}: {res.stderr}"
        want = {fw.rich_rule(src, a.proto, span) for a in spec.allows for src in a.sources
                for span in (a.ports or (None,))}
        listed = set(res.stdout.splitlines())
        assert want <= listed, (stack, node.name, sorted(want - listed))
        res = _offline_cmd(zones, "--zone=" + fw.ZONE, "--get-target")
        assert res.stdout.strip() == "DROP", res
        seen += 1
    assert seen >= 5


# ------------------------------------------------------------------ the table in a namespace


SERVER = r"""
import socket, sys, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16)
    while True:
        c, peer = s.accept(); c.sendall(peer[0].encode()); c.close()
for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
print("ready", flush=True)
threading.Event().wait(600)
"""
CLIENT = "import socket,sys; c=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2); print(c.recv(64).decode())"
LINKS = {"allowed": ("10.81.1.1", "10.81.1.2"), "stranger": ("10.81.2.1", "10.81.2.2"), "pod": ("10.42.0.1", "10.42.0.5")}


@pytest.fixture
def lab() -> Iterator[dict]:
    if os.geteuid() != 0:
        pytest.fail("the namespace test needs root (ip netns); run it via .ci/run as root")
    assert shutil.which("nft") and shutil.which("ip"), "nft and ip are needed (bash .ci/install.sh)"
    tag = uuid.uuid4().hex[:6]
    ns = {name: f"mc-fw-{name}-{tag}" for name in ("node", *LINKS)}
    servers: list[subprocess.Popen] = []
    try:
        for name in ns.values():
            assert _run(["ip", "netns", "add", name]).returncode == 0
            assert _run(["ip", "-n", name, "link", "set", "lo", "up"]).returncode == 0
        for peer, (node_ip, peer_ip) in LINKS.items():
            a, b = f"n{peer[:3]}{tag}", f"p{peer[:3]}{tag}"
            script = (f"set -e; ip link add {a} netns {ns['node']} type veth peer name {b} netns {ns[peer]};"
                      f"ip -n {ns['node']} addr add {node_ip}/24 dev {a}; ip -n {ns['node']} link set {a} up;"
                      f"ip -n {ns[peer]} addr add {peer_ip}/24 dev {b}; ip -n {ns[peer]} link set {b} up;"
                      f"ip -n {ns[peer]} route add default via {node_ip}")
            res = _run(["sh", "-c", script])
            assert res.returncode == 0, res.stderr
        assert _run(["ip", "netns", "exec", ns["node"], "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]).returncode == 0
        for where, ports in (("node", ("22", "8080")), ("pod", ("8080",)), ("stranger", ("8080",))):
            proc = subprocess.Popen(["ip", "netns", "exec", ns[where], "python3", "-c", SERVER, *ports],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            servers.append(proc)
            assert proc.stdout.readline().strip() == "ready"
        yield ns
    finally:
        for proc in servers:
            proc.kill()
            proc.wait(timeout=10)
        for name in ns.values():
            _run(["ip", "netns", "del", name])


def _connect(ns: dict, src: str, host: str, p: int) -> str | None:
    """The address the server saw, or None when the connection did not go through within 2 s."""
    res = _run(["ip", "netns", "exec", ns[src], "python3", "-c", CLIENT, host, str(p)])
    return res.stdout.strip() if res.returncode == 0 else None


def _nft(ns: dict, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    res = subprocess.run(["ip", "netns", "exec", ns["node"], "nft", *args], input=stdin, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return res


LAB_SPEC = FirewallSpec(
    node="node1",
    role="agent",
    allows=(Allow("tcp", (port(22),), ("10.81.1.0/24",), "SSH: the admin network"),),
    ping_from=("10.81.1.0/24",),  # the lab's own narrowing: the stacks answer pings from anyone
    pod_ranges=("10.42.0.0/16",),
    node_ports=NodePorts(30000, 32767, ("10.81.1.0/24", "10.42.0.0/16")),
)


def test_the_table_admits_exactly_its_allows_in_a_namespace(lab):
    ns = lab
    # Before: everything answers (the premise), and a table of someone else's (K3s' stand-in) that DNATs a NodePort.
    assert _connect(ns, "stranger", "10.81.2.1", 22) == "10.81.2.2"
    kube = ("table ip kubesim {\n  chain pre {\n    type nat hook prerouting priority dstnat; policy accept;\n"
            "    tcp dport 30080 dnat to 10.42.0.5:8080\n    tcp dport 30081 dnat to 10.81.2.2:8080\n  }\n}\n")
    _nft(ns, "-f", "-", stdin=kube)
    assert _connect(ns, "stranger", "10.81.2.1", 30080) == "10.81.2.2"

    _nft(ns, "-f", "-", stdin=fw.render_nftables(LAB_SPEC))
    assert _connect(ns, "allowed", "10.81.1.1", 22) == "10.81.1.2"
    assert _connect(ns, "stranger", "10.81.2.1", 22) is None, "a source no allow names got through"
    assert _connect(ns, "allowed", "10.81.1.1", 8080) is None, "a port no allow names answered"
    assert _connect(ns, "pod", "10.42.0.1", 8080) == "10.42.0.5", "the pod range was not admitted"
    # NodePorts: kube-proxy's DNAT goes through the forward hook; only the listed clients get there.
    assert _connect(ns, "allowed", "10.81.1.1", 30080) == "10.81.1.2"
    assert _connect(ns, "stranger", "10.81.2.1", 30080) is None, "a NodePort answered a source outside its clients"
    # A pod to its own node's NodePort: DNATed with the pod's own address (it must be among the clients);
    # here the service's endpoint is another host (30081), as a pod cannot be its own endpoint unmasqueraded.
    assert _connect(ns, "pod", "10.42.0.1", 30081) == "10.42.0.5"
    # The node's own connections out get their replies (established) though nothing admits the source.
    assert _connect(ns, "node", "10.81.2.2", 8080) == "10.81.2.1"
    ping = _run(["ip", "netns", "exec", ns["allowed"], "ping", "-c1", "-W2", "10.81.1.1"])
    assert ping.returncode == 0, ping.stdout
    assert _run(["ip", "netns", "exec", ns["stranger"], "ping", "-c1", "-W2", "10.81.2.1"]).returncode != 0

    before = _nft(ns, "list", "ruleset").stdout
    _nft(ns, "-f", "-", stdin=fw.render_nftables(LAB_SPEC))
    assert _nft(ns, "list", "ruleset").stdout == before, "loading the file again changed the ruleset"
    tables = _nft(ns, "list", "tables").stdout.split("\n")
    assert sorted(t.strip() for t in tables if t.strip()) == ["table inet microcloud", "table ip kubesim"]


def test_the_unit_loads_the_file_it_is_given():
    unit = fw.nft_unit()
    assert f"ExecStart=/usr/sbin/nft -f {fw.NFT_PATH}" in unit and "Before=network-pre.target" in unit
    assert Path("/usr/sbin/nft").exists(), "the unit's nft path is not where Debian's nftables puts it"
    if shutil.which("systemd-analyze"):
        path = Path(f"/tmp/{fw.NFT_UNIT}")
        path.write_text(unit)
        try:
            res = _run(["systemd-analyze", "verify", str(path)])
            assert "microcloud-firewall" not in res.stderr or res.returncode == 0, res.stderr
        finally:
            path.unlink()


# ------------------------------------------------------------------ the spec


def test_a_spec_refuses_what_would_lock_pulumi_out_or_not_parse():
    ssh = Allow("tcp", (port(22),), ("10.0.0.1/32",), "SSH")
    with pytest.raises(ValueError, match="no SSH"):
        FirewallSpec(node="n1", role="generic", allows=(Allow("tcp", (port(80),), ("0.0.0.0/0",), "web"),))
    with pytest.raises(ValueError, match="not an IPv4 network"):
        Allow("tcp", (port(22),), ("10.0.0.1/24",), "SSH")
    with pytest.raises(ValueError, match="vrrp takes no ports"):
        Allow("vrrp", (port(112),), ("10.0.0.1/32",), "VRRP")
    with pytest.raises(ValueError, match="overlap"):
        Allow("tcp", ((8000, 8010), port(8005)), ("10.0.0.0/24",), "web")
    with pytest.raises(ValueError, match="no source"):
        Allow("tcp", (port(22),), (), "SSH")
    with pytest.raises(ValueError, match="plain characters"):
        Allow("tcp", (port(22),), ("10.0.0.1/32",), 'SSH" accept; drop')
    # a host inside a listed network goes: nft refuses overlapping intervals in one set
    assert Allow("tcp", (port(22),), ("10.0.0.0/24", "10.0.0.7/32", "10.0.1.5/32"), "SSH").sources == ("10.0.0.0/24", "10.0.1.5/32")
    assert FirewallSpec(node="n1", role="generic", allows=(ssh,)).node_ports is None


def _allows(cfg, name: str) -> dict[str, tuple[str, tuple, tuple]]:
    node = next(n for n in cfg.nodes if n.name == name)
    return {a.why: (a.proto, a.ports, a.sources) for a in specs.role_allows(cfg, node)}


def test_each_role_admits_what_it_serves_from_whom_needs_it():
    prod = parse_config(stack_model("prod"))
    cluster = "10.17.4.0/24"
    lb = _allows(prod, "loadbalancer1")
    assert lb["the VIPs: K3s API and ingress"] == ("tcp", ((80, 80), (443, 443), (6443, 6443)), ("0.0.0.0/0",))
    assert lb["VRRP adverts from the other load balancer"] == ("vrrp", (), ("192.168.0.31/32",))
    assert lb["SSH: Pulumi and its operators"][2] == ("192.168.0.0/24",)  # a bridge network: the LAN (ssh_from narrows it)
    assert lb["node_exporter: Prometheus on the K3s nodes"][2] == (cluster,)
    master = _allows(prod, "master1")
    assert master["SSH: Pulumi and its operators"][2] == ("10.17.4.1/32",)  # the libvirt host on a nat network
    assert master["K3s API and supervisor: the LB pair and the nodes"][2] == ("10.17.4.0/24", "192.168.0.30/32", "192.168.0.31/32")
    assert master["etcd: the servers"] == ("tcp", ((2379, 2380),), (cluster,))
    for name in ("kubelet: the API servers and the nodes", "flannel VXLAN between the nodes"):
        assert master[name][2] == (cluster,)
    worker = _allows(prod, "worker1")
    assert "etcd: the servers" not in worker and "K3s API and supervisor: the LB pair and the nodes" not in worker
    # The database node mounts its own export: its address alone, besides the K3s networks.
    assert _allows(prod, "storage1")["NFSv4: the K3s nodes and the database node"] == ("tcp", ((2049, 2049),), ("10.17.3.14/32", cluster))
    infra = _allows(prod, "infra-cluster")
    # DNS and NTP: open, the daemons' day-2 lists filter (a network or a DNS client added replaces no VM)
    assert infra["DNS: CoreDNS, whose acl answers only the stack's networks"][2] == ("0.0.0.0/0",)
    # The database node: PostgreSQL from the K3s networks only (pg_hba then wants TLS and the owner's password).
    db = _allows(prod, "postgresql1")
    assert set(db) == {"SSH: Pulumi and its operators", "PostgreSQL: the K3s nodes and database.clients (pg_hba: TLS and a password)"}
    assert db["PostgreSQL: the K3s nodes and database.clients (pg_hba: TLS and a password)"] == ("tcp", ((5432, 5432),), (cluster,))
    spec = specs.firewall_spec(prod, next(n for n in prod.nodes if n.name == "worker1"))
    # the LB pair, the K3s networks, and the pods themselves (a pod to its own node's NodePort arrives unmasqueraded)
    assert spec.node_ports.sources == ("10.17.4.0/24", "10.42.0.0/16", "10.43.0.0/16", "192.168.0.30/32", "192.168.0.31/32")
    assert spec.pod_ranges == ("10.42.0.0/16", "10.43.0.0/16")
    assert specs.firewall_spec(prod, next(n for n in prod.nodes if n.name == "loadbalancer1")).node_ports is None


def test_settings_ssh_from_extra_allows_k3s_ranges_and_off():
    model = stack_model("dev")
    model["firewall"] = {"ssh_from": ["10.27.0.0/16"],
                         "allow": [{"why": "metrics push", "ports": [9091, "9200-9210"], "sources": ["10.27.4.0/24"], "roles": ["infra"]}]}
    model["k3s"]["extra_args"] = {"server": {"cluster-cidr": "10.52.0.0/16", "service-node-port-range": "31000-31999"}}
    cfg = parse_config(model)
    infra = _allows(cfg, "infra")
    assert infra["SSH: Pulumi and its operators"][2] == ("10.27.0.0/16",)
    assert infra["firewall.allow: metrics push"] == ("tcp", ((9091, 9091), (9200, 9210)), ("10.27.4.0/24",))
    assert "firewall.allow: metrics push" not in _allows(cfg, "lb1")
    spec = specs.firewall_spec(cfg, next(n for n in cfg.nodes if n.name == "worker1"))
    assert spec.pod_ranges == ("10.43.0.0/16", "10.52.0.0/16")
    assert (spec.node_ports.first, spec.node_ports.last) == (31000, 31999)
    model["firewall"] = {"enabled": False}
    cfg = parse_config(model)
    assert specs.firewall_spec(cfg, cfg.nodes[0]) is None
    assert cfg.firewall.relaxations() == ["firewall.enabled is off: the nodes answer every port to whoever reaches them"]
    for bad, msg in (({"ssh_from": ["0.0.0.0/0"]}, "every address"),
                     ({"allow": [{"why": "x", "ports": [80], "sources": ["0.0.0.0/0"], "nodes": ["nope"]}]}, "no node named 'nope'"),
                     ({"allow": [{"why": "x", "ports": ["90-80"], "sources": ["0.0.0.0/0"]}]}, "not a port"),
                     ({"allow": [{"why": "x", "ports": [80, "79-81"], "sources": ["0.0.0.0/0"]}]}, "overlap"),
                     ({"allow": [{"why": "a -- b", "ports": [80], "sources": ["0.0.0.0/0"]}]}, "XML comment")):
        model["firewall"] = bad
        with pytest.raises(ConfigError, match=msg):
            parse_config(model)
    # Local libvirt: an ssh_from without the host's address on a node network would lock Pulumi out.
    model["firewall"] = {"ssh_from": ["192.168.50.0/24"]}
    with pytest.raises(ConfigError, match=r"leaves out 10\.27\.0\.1, the libvirt host's address on 'lan'"):
        parse_config(model)
    # K3s flags that move ports the firewall does not follow are refused while it is on, allowed when it is off.
    model["firewall"] = {}
    for key, value in (("flannel-backend", "wireguard-native"), ("supervisor-port", 9345), ("embedded-registry", True)):
        model["k3s"]["extra_args"] = {"server": {key: value}}
        with pytest.raises(ConfigError, match=rf"k3s.extra_args.server.{key}.*the node firewall admits"):
            parse_config(model)
    model["k3s"]["extra_args"] = {"server": {"flannel-backend": "vxlan", "cluster-cidr": ["10.52.0.0/16"]}}
    spec = specs.firewall_spec(parse_config(model), next(n for n in parse_config(model).nodes if n.name == "worker1"))
    assert spec.pod_ranges == ("10.43.0.0/16", "10.52.0.0/16")  # a YAML list, as K3s takes it
    model["k3s"]["extra_args"] = {"server": {"flannel-backend": "wireguard-native"}}
    model["firewall"] = {"enabled": False}
    parse_config(model)
    model["k3s"]["extra_args"] = {}
    # Pulumi on another host than libvirt: the default (the libvirt host only) would lock it out at first boot.
    model["firewall"] = {}
    model["libvirt_uri"] = "qemu+ssh://ops@kvm1.example.lan/system"
    with pytest.raises(ConfigError, match=r"firewall.ssh_from.*another host"):
        parse_config(model)
    model["firewall"] = {"ssh_from": ["10.0.5.0/24"]}
    assert _allows(parse_config(model), "lb1")["SSH: Pulumi and its operators"][2] == ("10.0.5.0/24",)


def test_first_boot_writes_and_starts_the_firewall_on_each_cloud_init_os():
    """EL9: the zones and firewalld made default; Debian: the table, its unit, nftables installed; both before runcmd ends."""
    import yaml

    for stack, want in (("dev", "firewalld"), ("edge-debian", "nftables")):
        cfg = parse_config(stack_model(stack))
        node = next(n for n in cfg.nodes if n.role == "load_balancer")
        spec = specs.firewall_spec(cfg, node)
        doc = yaml.safe_load(specs.cloud_init_docs(cfg, node, ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGr0CTYmnm8n0Jv3pR3f8ZVv0aE2TJ9H6o7ulYJ1kHyy t"],
                                                   instance_id="i-1")["user-data"])
        files = {f["path"]: f for f in doc["write_files"]}
        runcmd = [" ".join(c) if isinstance(c, list) else c for c in doc["runcmd"]]
        if want == "firewalld":
            assert files[f"{fw.ZONE_DIR}/{fw.ZONE}.xml"]["content"] == fw.render_firewalld_zone(spec)
            assert "firewalld" in doc["packages"] and "nftables" not in doc["packages"]
            assert runcmd.index("systemctl enable --now firewalld") < runcmd.index(f"firewall-cmd --set-default-zone={fw.ZONE}")
        else:
            assert files[fw.NFT_PATH]["content"] == fw.render_nftables(spec) and files[fw.NFT_PATH]["permissions"] == "0600"
            assert files[f"/etc/systemd/system/{fw.NFT_UNIT}"]["content"] == fw.nft_unit()
            assert "nftables" in doc["packages"]
            assert f"systemctl enable --now {fw.NFT_UNIT}" in runcmd
    # An EL9 K3s node: the nftables table, firewalld off (K3s' docs), not the zone.
    cfg = parse_config(stack_model("edge-alma-isolated"))
    node = next(n for n in cfg.nodes if n.role == "server")
    doc = yaml.safe_load(specs.cloud_init_docs(cfg, node, ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGr0CTYmnm8n0Jv3pR3f8ZVv0aE2TJ9H6o7ulYJ1kHyy t"],
                                               instance_id="i-1")["user-data"])
    paths = {f["path"] for f in doc["write_files"]}
    assert fw.NFT_PATH in paths and not any(p.startswith(fw.ZONE_DIR) for p in paths)
    assert "nftables" in doc["packages"] and "firewalld" not in doc["packages"]
    runcmd = [" ".join(c) if isinstance(c, list) else c for c in doc["runcmd"]]
    assert runcmd.index("systemctl disable --now firewalld 2>/dev/null || true") < runcmd.index(f"systemctl enable --now {fw.NFT_UNIT}")
    model = stack_model("edge-debian")
    model["firewall"] = {"enabled": False}
    cfg = parse_config(model)
    node = next(n for n in cfg.nodes if n.role == "load_balancer")
    text = specs.cloud_init_docs(cfg, node, ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGr0CTYmnm8n0Jv3pR3f8ZVv0aE2TJ9H6o7ulYJ1kHyy t"],
                                 instance_id="i-1")["user-data"]
    assert fw.NFT_UNIT not in text and "nftables" not in text
