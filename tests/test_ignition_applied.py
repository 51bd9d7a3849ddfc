"""Every rendered Ignition config, applied by the real Ignition runtime into a temporary root.

ignition-validate (test_renderers_real.py) says a config is well formed; this
tier runs what Flatcar's initramfs runs (stages fetch-offline and files, harness
support/ignition_apply.py) and asserts the tree it leaves: the user and its keys, the
network, resolver, time, sysctl, update and Kubernetes files, modes and owners.
Expectations come from the config model, never from the JSON.

The stability tests apply before and after a change of the node list (a
worker inserted in the middle, one removed, the list reversed): every other
node's applied tree must be byte-identical, because a changed first-boot
config replaces the VM.

A missing runtime is a failure, not a skip, like every validator.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import ipaddress
import os
import struct
from pathlib import Path
from typing import Iterator, Optional

import pytest

from components import specs
from components.config import K3S_ROLES, NodeConfig, StackConfig, parse_config
from components.render import host_firewall, ignition, k3s_hardening
from support import ignition_apply as ia
from support.harness import EDGE_STACKS, stack_model
from support.host_key import real_host_key
from components.render.host_key import PRIVATE_PATH as HOST_KEY_PATH

FIREWALL_FILE = host_firewall.NFT_PATH.lstrip("/")
FIREWALL_UNIT = f"etc/systemd/system/{host_firewall.NFT_UNIT}"
PRESET = "etc/systemd/system-preset/20-ignition.preset"  # where Ignition enables units

pytestmark = pytest.mark.validators

STACKS = ("dev", "prod", *EDGE_STACKS)


def _ed25519_pub(seed: str, comment: str) -> str:
    blob = b"".join(struct.pack(">I", len(p)) + p for p in (b"ssh-ed25519", hashlib.sha256(seed.encode()).digest()))
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


# Two keys: "exactly the keys" covers order and the separator.
KEYS = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq1vyS0Qf5zM1I2r3Xq7C8Rk3W1tWgYbq0bSVvP3nHk test@microcloud",
    _ed25519_pub("second operator", "ops2@microcloud"),
)

CONFIGS: dict[str, StackConfig] = {name: parse_config(stack_model(name)) for name in STACKS}
# Files the config writes (storage.files); on Kubernetes nodes also modules-load.
NETWORK_FILE = "etc/systemd/network/00-microcloud.network"
CONFIG_FILES = (
    "etc/hostname",
    NETWORK_FILE,
    "etc/sysctl.d/90-microcloud.conf",
    "etc/systemd/timesyncd.conf.d/10-microcloud.conf",
    "etc/systemd/resolved.conf.d/10-microcloud.conf",
    "etc/flatcar/update.conf",
)
MODULES_FILE = "etc/modules-load.d/90-microcloud.conf"
KUBELET_SYSCTL = k3s_hardening.SYSCTL_PATH.lstrip("/")
SWAP_MASK = "etc/systemd/system/swap.target"
# Masks the image's console autologin (unless console.autologin): a /dev/null link overrides /usr/lib's generator.
AUTOLOGIN_MASK = ignition.AUTOLOGIN_GENERATOR.lstrip("/")
# What useradd/usermod leave next to the account files (backups and lock).
SHADOW_BOOKKEEPING = {"etc/.pwd.lock", "etc/passwd-", "etc/group-", "etc/shadow-", "etc/gshadow-"}


def _cases() -> list:
    cases = []
    for stack in STACKS:
        flatcar = [n.name for n in CONFIGS[stack].nodes if n.is_flatcar]
        if not flatcar:
            cases.append(pytest.param(stack, None, id=f"{stack}/-"))
        cases += [pytest.param(stack, name, id=f"{stack}/{name}") for name in flatcar]
    return cases


# ------------------------------------------------------------------ applying


_TREES: dict[str, ia.AppliedTree] = {}


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    assert ia.runtime(), (
        f"the Ignition runtime ({ia.RUNTIME_CANDIDATES[0]}) is not installed; "
        "run .ci/run (it installs the ignition package from Debian)"
    )
    with ia.scratch() as path:
        yield path


def applied(config_json: str, base: Path, fresh: bool = False) -> ia.AppliedTree:
    """The applied tree of a config; each distinct config is applied once unless ``fresh``."""
    key = hashlib.sha256(config_json.encode()).hexdigest()
    if fresh:
        return ia.apply_in(config_json, base)
    if key not in _TREES:
        _TREES[key] = ia.apply_in(config_json, base)
    return _TREES[key]


def node_tree(cfg: StackConfig, node: NodeConfig, base: Path, fresh: bool = False) -> ia.AppliedTree:
    return applied(specs.ignition_json(cfg, node, KEYS, real_host_key()), base, fresh)


# ------------------------------------------------------------------ reading the tree


def unit_sections(text: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """A systemd unit/.network file as [(section, [(key, value), ...])], repeated keys kept in order."""
    sections: list[tuple[str, list[tuple[str, str]]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            sections.append((line[1:-1], []))
            continue
        assert sections, f"key outside a section: {raw!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not key=value: {raw!r}"
        sections[-1][1].append((key.strip(), value.strip()))
    return sections


def values(sections, section: str, key: str) -> list[str]:
    return [v for name, items in sections if name == section for k, v in items if k == key]


def one(sections, section: str, key: str) -> str:
    found = values(sections, section, key)
    assert len(found) == 1, f"[{section}] {key}= appears {len(found)} times"
    return found[0]


def assignments(text: str, sep: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            key, found, value = line.partition(sep)
            assert found, f"not key{sep}value: {line!r}"
            assert key.strip() not in out, f"{key.strip()} set twice"
            out[key.strip()] = value.strip()
    return out


# ------------------------------------------------------------------ expectations from the model


def expected_dns(cfg: StackConfig, node: NodeConfig) -> list[str]:
    net = cfg.network_by_name[node.network]
    internal = node.ip if node.name == cfg.infra_node.name else cfg.infra_node.ip
    return [str(internal), str(net.router)]


def expected_groups(user: str) -> set[str]:
    if user == "core":  # Flatcar's own account, left as the image has it
        return {name for name, _, members in ia.FLATCAR_GROUPS if "core" in members}
    return {"sudo", "docker"}


def check_user(tree: ia.AppliedTree, cfg: StackConfig) -> None:
    user = cfg.ssh.user
    passwd = tree.passwd()
    assert user in passwd, f"{user} not in etc/passwd:\n{tree.text('etc/passwd')}"
    _, _, uid, gid, _, home, _ = passwd[user]
    uid, gid = int(uid), int(gid)
    assert home == f"/home/{user}"
    assert gid in {g for g, _ in tree.groups().values()}, f"primary group {gid} of {user} does not exist"
    assert tree.supplementary_groups(user) == expected_groups(user)
    assert tree.shadow()[user][1] == "*", "the user must have no password (SSH keys only)"

    rel = home.lstrip("/")
    assert tree.entry(rel) == ia.Entry("dir", 0o755, uid, gid)
    for d in (f"{rel}/.ssh", f"{rel}/.ssh/authorized_keys.d"):
        assert tree.entry(d) == ia.Entry("dir", 0o700, uid, gid), d
    keys = f"{rel}/.ssh/authorized_keys.d/ignition"
    assert tree.files_under(f"{rel}/.ssh") == [keys], "Ignition writes the keys to one fragment and nothing else"
    e = tree.entry(keys)
    assert (e.kind, e.mode, e.uid, e.gid) == ("file", 0o600, uid, gid)
    assert tree.text(keys) == "".join(k + "\n" for k in KEYS)
    # Only the user from the config was added.
    added = set(passwd) - {name for name, *_ in ia.FLATCAR_USERS}
    assert added <= {user}


def check_network(tree: ia.AppliedTree, cfg: StackConfig, node: NodeConfig) -> None:
    net = cfg.network_by_name[node.network]
    s = unit_sections(tree.text(NETWORK_FILE))
    assert [name for name, _ in s] == ["Match", "Link", "Network"], "no [Route] or other sections"
    assert one(s, "Match", "MACAddress") == cfg.mac_of(node)
    assert values(s, "Link", "MTUBytes") == ([str(net.mtu)] if net.mtu else [])
    assert one(s, "Network", "Address") == f"{node.ip}/{net.cidr.prefixlen}"
    assert ipaddress.ip_interface(one(s, "Network", "Address")).network == net.cidr
    assert one(s, "Network", "Gateway") == str(net.router)
    assert values(s, "Network", "DNS") == expected_dns(cfg, node)
    assert one(s, "Network", "Domains") == cfg.domain
    assert one(s, "Network", "DHCP") == "no"
    assert not any(k in ("Destination", "Route") for _, items in s for k, _ in items)


def check_services(tree: ia.AppliedTree, cfg: StackConfig, node: NodeConfig) -> None:
    kubernetes = node.role in K3S_ROLES
    assert tree.text("etc/hostname") == cfg.fqdn(node.name) + "\n"

    sysctl = assignments(tree.text("etc/sysctl.d/90-microcloud.conf"), "=")
    want = {"net.ipv4.ip_nonlocal_bind": "1"}
    if kubernetes:
        want |= {"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1"}
    assert sysctl == want

    t = unit_sections(tree.text("etc/systemd/timesyncd.conf.d/10-microcloud.conf"))
    assert one(t, "Time", "NTP") == str(cfg.infra_node.ip)
    assert one(t, "Time", "FallbackNTP") == ""

    r = unit_sections(tree.text("etc/systemd/resolved.conf.d/10-microcloud.conf"))
    assert one(r, "Resolve", "DNS").split() == expected_dns(cfg, node), "internal resolver first, router second"
    assert one(r, "Resolve", "FallbackDNS") == "", "no compiled-in public resolvers"
    assert one(r, "Resolve", "Domains") == cfg.domain

    update = assignments(tree.text("etc/flatcar/update.conf"), "=")
    # locksmithd never reboots by itself (the reboot agent does, within the disruption budget).
    assert update == {"GROUP": cfg.updates.group, "REBOOT_STRATEGY": "off"}

    # K3s' protect-kernel-defaults: the kubelet's kernel settings, before K3s first starts.
    if specs.kubelet_sysctls(cfg, node):
        assert assignments(tree.text(KUBELET_SYSCTL), "=") == dict(k3s_hardening.SYSCTLS)
    else:
        assert not tree.has(KUBELET_SYSCTL)
    if kubernetes:
        assert tree.text(MODULES_FILE).split() == ["br_netfilter", "overlay"]
        assert tree.entry(SWAP_MASK) == ia.Entry("symlink", 0o777, 0, 0, target="/dev/null")
    else:
        assert not tree.has(MODULES_FILE) and not tree.has(SWAP_MASK)

    # The node's firewall: its table (root's alone) and the unit that loads it, enabled by Ignition's preset.
    fw = specs.firewall_spec(cfg, node)
    if fw is not None:
        assert tree.text(FIREWALL_FILE) == host_firewall.render_nftables(fw)
        assert tree.text(FIREWALL_UNIT) == host_firewall.nft_unit()
        assert f"enable {host_firewall.NFT_UNIT}" in tree.text(PRESET).splitlines()
    else:
        assert not tree.has(FIREWALL_FILE) and not tree.has(FIREWALL_UNIT)
    if cfg.console.autologin:
        assert not tree.has(AUTOLOGIN_MASK) and not tree.has(str(Path(AUTOLOGIN_MASK).parent))
    else:
        assert tree.entry(AUTOLOGIN_MASK) == ia.Entry("symlink", 0o777, 0, 0, target="/dev/null")
        assert tree.entry(str(Path(AUTOLOGIN_MASK).parent)) == ia.Entry("dir", 0o755, 0, 0)


def check_modes_and_nothing_else(tree: ia.AppliedTree, cfg: StackConfig, node: NodeConfig) -> None:
    written = list(CONFIG_FILES) + ([MODULES_FILE] if node.role in K3S_ROLES else [])
    written += [KUBELET_SYSCTL] if specs.kubelet_sysctls(cfg, node) else []
    for rel in written:
        e = tree.entry(rel)
        assert (e.kind, e.mode, e.uid, e.gid) == ("file", 0o644, 0, 0), rel
        for parent in Path(rel).parents:
            if str(parent) != "." and str(parent) not in ia.base_paths():
                assert tree.entry(str(parent)) == ia.Entry("dir", 0o755, 0, 0), parent
    # The node's host key: the private half root's alone, the public half readable, exactly what was rendered.
    key = real_host_key()
    private, public = HOST_KEY_PATH.lstrip("/"), HOST_KEY_PATH.lstrip("/") + ".pub"
    assert (tree.entry(private).mode, tree.entry(private).uid) == (0o600, 0), tree.entry(private)
    assert (tree.entry(public).mode, tree.entry(public).uid) == (0o644, 0), tree.entry(public)
    assert tree.text(private) == key.private_openssh.rstrip("\n") + "\n"
    assert tree.text(public) == key.public_openssh + "\n"
    written += [private, public]
    if specs.firewall_spec(cfg, node) is not None:
        assert (tree.entry(FIREWALL_FILE).mode, tree.entry(FIREWALL_FILE).uid) == (0o600, 0)
        assert (tree.entry(FIREWALL_UNIT).mode, tree.entry(PRESET).mode) == (0o644, 0o644)
        written += [FIREWALL_FILE, FIREWALL_UNIT, PRESET]
    home = f"home/{cfg.ssh.user}"
    expected = ia.base_paths() | set(written) | {SWAP_MASK} | {home, f"{home}/.ssh", f"{home}/.ssh/authorized_keys.d"}
    expected |= {f"{home}/.ssh/authorized_keys.d/ignition"} | SHADOW_BOOKKEEPING
    expected |= {str(p) for rel in written for p in Path(rel).parents if str(p) != "."}
    expected |= {"etc/systemd/system"}
    if not cfg.console.autologin:
        expected |= {AUTOLOGIN_MASK, str(Path(AUTOLOGIN_MASK).parent)}
    assert set(tree.entries) - expected == set(), "Ignition wrote something the config does not say"
    assert tree.result["userConfigProvided"] is True


def check_node_tree(tree: ia.AppliedTree, cfg: StackConfig, node: NodeConfig) -> None:
    check_user(tree, cfg)
    check_network(tree, cfg, node)
    check_services(tree, cfg, node)
    check_modes_and_nothing_else(tree, cfg, node)


# ------------------------------------------------------------------ every stack, every Flatcar node


@pytest.mark.parametrize("stack,name", _cases())
def test_applied_tree(stack: str, name: Optional[str], base):
    cfg = CONFIGS[stack]
    if name is None:
        pytest.skip(f"{stack} has no Flatcar node (every node runs {sorted({n.os for n in cfg.nodes})}); nothing gets Ignition")
    node = next(n for n in cfg.nodes if n.name == name)
    check_node_tree(node_tree(cfg, node, base), cfg, node)


def _free_ip(cfg: StackConfig, network: str) -> str:
    net = cfg.network_by_name[network]
    lb = cfg.load_balancer
    used = {n.ip for n in cfg.nodes} | {net.router, lb.api_vip, lb.ingress_vip} | {h.ip for h in net.dns_hosts}
    return str(next(ip for ip in net.cidr.hosts() if ip not in used and not net.in_dhcp(ip)))


def _free_name(cfg: StackConfig, prefix: str, start: int) -> str:
    names = {n.name for n in cfg.nodes}
    return next(f"{prefix}{i}" for i in range(start, 1000) if f"{prefix}{i}" not in names)


def test_non_kubernetes_flatcar_node(base):
    """No stack has one, so add one: no br_netfilter, no swap mask, no forwarding sysctl."""
    model = stack_model("prod")
    cfg0 = parse_config(model)
    cluster = next(n for n in cfg0.nodes if n.is_flatcar).network
    model["nodes"].append(
        {"name": _free_name(cfg0, "tools", 1), "role": "generic", "os": "flatcar", "network": cluster, "ip": _free_ip(cfg0, cluster)}
    )
    cfg = parse_config(model)
    node = cfg.nodes[-1]
    assert node.role not in K3S_ROLES
    check_node_tree(node_tree(cfg, node, base), cfg, node)


def test_console_autologin_kept_when_asked(base):
    """console.autologin: the image's generator stays unmasked; nothing else of the tree changes."""
    model = stack_model("dev")
    model["console"] = {"autologin": True}
    cfg, off = parse_config(model), CONFIGS["dev"]
    node = next(n for n in cfg.nodes if n.is_flatcar)
    tree = node_tree(cfg, node, base)
    check_node_tree(tree, cfg, node)
    masked = node_tree(off, next(n for n in off.nodes if n.name == node.name), base)
    assert masked.has(AUTOLOGIN_MASK) and not tree.has(AUTOLOGIN_MASK)
    assert set(masked.entries) - set(tree.entries) == {AUTOLOGIN_MASK, str(Path(AUTOLOGIN_MASK).parent)}


# ------------------------------------------------------------------ stability under node-list changes


def _flatcar(cfg: StackConfig) -> dict[str, NodeConfig]:
    return {n.name: n for n in cfg.nodes if n.is_flatcar}


def assert_unchanged(before: StackConfig, after: StackConfig, base: Path, names) -> None:
    """Each node's tree, applied afresh from the changed model, equals the one from the old model."""
    assert names, "nothing to compare"
    old, new = _flatcar(before), _flatcar(after)
    for name in names:
        t0 = node_tree(before, old[name], base)
        t1 = node_tree(after, new[name], base, fresh=True)
        assert t1.manifest() == t0.manifest(), f"{name}: applied tree changed"
        assert t1.contents == t0.contents, name


def test_inserting_a_worker_in_the_middle_changes_no_other_tree(base):
    model = stack_model("prod")
    before = parse_config(model)
    agent = next(n for n in model["nodes"] if n["role"] == "agent" and n["os"] == "flatcar")
    new = copy.deepcopy(agent)
    new.pop("mac", None)
    new["name"] = _free_name(before, "worker", 9)
    new["ip"] = _free_ip(before, agent["network"])
    at = len(model["nodes"]) // 2
    flatcar_after = [n["name"] for n in model["nodes"][at:] if n["os"] == "flatcar"]
    assert flatcar_after and at > 0, "the new worker must go between existing nodes"
    model["nodes"].insert(at, new)
    after = parse_config(model)

    assert_unchanged(before, after, base, list(_flatcar(before)))
    added = _flatcar(after)[new["name"]]
    check_node_tree(node_tree(after, added, base), after, added)


def test_removing_a_node_changes_no_other_tree(base):
    model = stack_model("prod")
    before = parse_config(model)
    agents = [i for i, n in enumerate(model["nodes"]) if n["role"] == "agent" and n["os"] == "flatcar"]
    gone = model["nodes"].pop(agents[len(agents) // 2])
    after = parse_config(model)
    assert_unchanged(before, after, base, [n for n in _flatcar(before) if n != gone["name"]])


def test_reordering_the_nodes_changes_no_tree(base):
    model = stack_model("prod")
    before = parse_config(model)
    model["nodes"].reverse()
    after = parse_config(model)
    assert [n.name for n in after.nodes] != [n.name for n in before.nodes]
    assert_unchanged(before, after, base, list(_flatcar(before)))


# ------------------------------------------------------------------ the harness itself


def test_runtime_failure_is_reported(base):
    """The check can fail: a group the root does not have makes useradd, and so Ignition, fail."""
    cfg = CONFIGS["edge-debian"]
    node = next(n for n in cfg.nodes if n.is_flatcar)
    doc = specs.ignition_json(cfg, node, KEYS)
    broken = doc.replace('"groups":["sudo","docker"]', '"groups":["sudo","no-such-group"]')
    assert broken != doc
    with pytest.raises(ia.IgnitionError, match="no-such-group"):
        ia.apply_in(broken, base)


def test_apply_refuses_unsafe_roots(base, tmp_path):
    doc = specs.ignition_json(CONFIGS["dev"], next(n for n in CONFIGS["dev"].nodes if n.is_flatcar), KEYS)
    with pytest.raises(ValueError, match="refusing"):
        ia.apply(doc, Path("/"), tmp_path / "work")
    with pytest.raises(ValueError, match="exists"):
        ia.apply(doc, tmp_path, base / "work-unused")
    # Under a 0700 directory (like pytest's tmp_path) the user could not write its keys.
    locked = base / "locked"
    locked.mkdir(mode=0o700)
    with pytest.raises(ValueError, match="searchable"):
        ia.apply(doc, locked / "root", tmp_path / "work")
    assert list(locked.iterdir()) == []


HOST_FILES = ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow", "/etc/hostname", "/etc/resolv.conf")


def _host_state(user: str) -> dict:
    state = {}
    for path in HOST_FILES:
        state[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest() if os.path.exists(path) else None
    for path in (f"/home/{user}", "/" + SWAP_MASK, "/" + NETWORK_FILE, "/etc/flatcar/update.conf"):
        state[path] = (os.path.lexists(path), os.readlink(path) if os.path.islink(path) else None)
    return state


def test_host_is_untouched(base):
    """A config that adds a user and masks a unit leaves the host's accounts and /etc as they were."""
    cfg = CONFIGS["edge-debian"]
    assert cfg.ssh.user != "core"
    node = next(n for n in cfg.nodes if n.is_flatcar and n.role in K3S_ROLES)
    before = _host_state(cfg.ssh.user)
    tree = node_tree(cfg, node, base, fresh=True)
    assert cfg.ssh.user in tree.passwd()
    assert _host_state(cfg.ssh.user) == before
