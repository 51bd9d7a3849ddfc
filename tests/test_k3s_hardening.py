"""K3s' CIS hardening profile: the config model, the config.yaml keys, first boot's sysctls and the install's steps.

``unit``: the config (defaults, relaxations, refusals of bad extra_args and of
tainted servers without agents) and the renderers over the dev/prod/edge
stacks. ``validators``: the install script under dash against a temporary
root (tests/support/k3s_node.py), whose /proc/sys holds the kernel's own
defaults; the sysctl file through the real ``sysctl`` with /proc/sys bound to
a scratch directory in a mount namespace of its own (the host's kernel is
never touched). The files the API server reads are loaded by the real
kube-apiserver in tests/k8s/test_k3s_hardening.py.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from components import specs
from components.config import parse_config
from components.config.errors import ConfigError
from components.k3s_flags import PROFILE_ARGS, check_extra_args
from components.render import cloud_init, ignition, k3s, k3s_hardening as hd
from support.harness import stack_model
from support.k3s_node import KERNEL_DEFAULTS, Node, k3s_nodes
from support.k3s_pki import ENCRYPTION_KEY, encryption_config, join_input
from support.platform_render import CONFIGS, NAMES

unit = pytest.mark.unit
validators = pytest.mark.validators


def _model(stack: str = "dev") -> dict:
    return copy.deepcopy(stack_model(stack))


def _config_error(model: dict) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(model)
    return str(err.value)


# ------------------------------------------------------------------ the config


@unit
@pytest.mark.parametrize("name", NAMES)
def test_every_stack_is_born_hardened_and_relaxes_nothing(name):
    cfg = CONFIGS[name]
    h = cfg.k3s.hardening
    assert h.secrets_encryption and h.protect_kernel_defaults and h.audit_log.enabled
    assert (h.pod_security.enforce, h.pod_security.audit, h.pod_security.warn) == ("baseline", "restricted", "restricted")
    assert cfg.k3s.relaxations() == []
    for node in k3s_nodes(cfg):
        doc = k3s.k3s_config(dataclasses.replace(node, hardening=specs.k3s_hardening(cfg)))
        assert doc["protect-kernel-defaults"] is True
        assert "anonymous-auth=false" in doc["kubelet-arg"]
        if node.role == "server":
            assert doc["secrets-encryption"] is True
            api = dict(a.split("=", 1) for a in doc["kube-apiserver-arg"])
            assert api["enable-admission-plugins"] == "NodeRestriction,EventRateLimit"
            assert api["admission-control-config-file"] == "/var/lib/rancher/k3s/server/psa.yaml"
            assert api["audit-log-path"] == "/var/lib/rancher/k3s/server/logs/audit.log"
            assert (api["audit-log-maxage"], api["audit-log-maxbackup"], api["audit-log-maxsize"]) == ("30", "10", "100")
        else:
            assert not {"secrets-encryption", "kube-apiserver-arg"} & set(doc)
        assert "local-storage" in doc.get("disable", ["local-storage"])


@unit
@pytest.mark.parametrize("name", ["dev", "prod"])
def test_servers_are_tainted_and_agents_are_not(name):
    cfg = CONFIGS[name]
    for node in cfg.nodes_with("server", "agent", "storage"):
        spec = specs.k3s_node_spec(cfg, node)
        if node.role == "server":
            assert hd.SERVER_TAINT in spec.node_taints, node.name
            assert hd.SERVER_TAINT in k3s.k3s_config(spec)["node-taint"]
        else:
            assert hd.SERVER_TAINT not in spec.node_taints, node.name


@unit
def test_a_stack_without_agents_must_allow_workloads_on_servers():
    m = _model("dev")
    m["nodes"] = [n for n in m["nodes"] if n["role"] not in ("agent", "storage")]
    for n in m["nodes"]:
        if n["role"] == "server":
            n["ingress"] = True
    msg = _config_error(m)
    assert "k3s.hardening.workloads_on_servers" in msg and "no agent" in msg, msg
    m.setdefault("k3s", {}).setdefault("hardening", {})["workloads_on_servers"] = True
    cfg = parse_config(m)
    server = cfg.servers[0]
    assert hd.SERVER_TAINT not in specs.k3s_node_spec(cfg, server).node_taints
    assert cfg.k3s.relaxations() == ["k3s.hardening.workloads_on_servers is on: any workload may run beside etcd"]


@unit
def test_a_tainted_server_cannot_take_ingress():
    m = _model("dev")
    for n in m["nodes"]:
        if n["role"] == "server":
            n["ingress"] = True
    msg = _config_error(m)
    assert "workloads_on_servers" in msg and "ingress" in msg, msg


@unit
def test_each_relaxation_is_named():
    m = _model("dev")
    m["k3s"]["hardening"] = {
        "secrets_encryption": False,
        "protect_kernel_defaults": False,
        "pod_security": {"enforce": "privileged", "exempt_namespaces": {"kube-system": "K3s' own", "db": "a vendor's operator"}},
        "audit_log": {"enabled": False},
    }
    m["k3s"]["extra_args"] = {"server": {"etcd-snapshot-retention": 5}}
    got = parse_config(m).k3s.relaxations()
    for part in ("secrets_encryption", "protect_kernel_defaults", "pod_security.enforce is privileged",
                 "exempt_namespaces adds db", "audit_log.enabled", "k3s.extra_args.server.etcd-snapshot-retention"):
        assert sum(part in r for r in got) == 1, (part, got)
    assert len(got) == 6


@unit
@pytest.mark.parametrize("hardening, needle", [
    ({"pod_security": {"enforce": "lax"}}, "enforce"),
    ({"pod_security": {"enforce": "restricted", "warn": "baseline"}}, "below enforce"),
    ({"pod_security": {"exempt_namespaces": {"Not_A_Namespace": "why"}}}, "not a namespace name"),
    ({"pod_security": {"exempt_namespaces": {"db": "  "}}}, "give the reason"),
    ({"audit_log": {"max_backups": 0}}, "max_backups"),
    ({"secrets_encrypton": True}, "secrets_encrypton"),
])
def test_bad_hardening_settings_are_refused(hardening, needle):
    m = _model("dev")
    m["k3s"]["hardening"] = hardening
    msg = _config_error(m)
    assert "k3s.hardening" in msg and needle in msg, msg


@unit
@pytest.mark.parametrize("extra, needle", [
    ({"server": {"etcd-snapshot-retentio": 5}}, "did you mean etcd-snapshot-retention"),
    ({"agent": {"etcd-snapshot-retention": 5}}, "a server flag"),
    ({"server": {"secrets-encryption": False}}, "the program sets secrets-encryption itself"),
    ({"agent": {"node-name": "x"}}, "the program sets node-name itself"),
    ({"server": {"kube-apiserver-arg": ["audit-log-path=/tmp/a"]}}, "set by the hardening profile"),
    ({"agent": {"kubelet-arg": ["anonymous-auth=true"]}}, "set by the hardening profile"),
    ({"server": {"kube-apiserver-arg": "request-timeout=90s"}}, "a list of name=value"),
])
def test_bad_extra_args_are_refused_when_the_config_loads(extra, needle):
    m = _model("dev")
    m["k3s"]["extra_args"] = extra
    msg = _config_error(m)
    assert "k3s.extra_args" in msg and needle in msg, msg


@unit
def test_extra_args_land_in_config_yaml_after_the_profile():
    m = _model("prod")
    m["k3s"]["extra_args"] = {"server": {"etcd-snapshot-retention": 10, "kube-apiserver-arg": ["request-timeout=90s"]},
                              "agent": {"kubelet-arg": ["max-pods=150"]}}
    cfg = parse_config(m)
    for node in cfg.nodes_with("server", "agent", "storage"):
        doc = k3s.k3s_config(specs.k3s_node_spec(cfg, node))
        if node.role == "server":
            assert doc["etcd-snapshot-retention"] == 10
            assert doc["kube-apiserver-arg"][-1] == "request-timeout=90s"
            assert "enable-admission-plugins=NodeRestriction,EventRateLimit" in doc["kube-apiserver-arg"]
        else:
            assert doc["kubelet-arg"][-1] == "max-pods=150" and "anonymous-auth=false" in doc["kubelet-arg"]
            assert "etcd-snapshot-retention" not in doc


@unit
def test_an_unknown_release_line_takes_no_extra_args():
    with pytest.raises(ValueError, match="flags of K3s 1.99 are not known"):
        check_extra_args("v1.99.0+k3s1", "server", {"etcd-snapshot-retention": 1}, {})


@unit
def test_the_profile_sets_only_the_component_flags_extra_args_may_not():
    """PROFILE_ARGS (what extra_args may not re-set) covers every *-arg entry hardening_keys writes."""
    h = hd.Hardening()
    for role in ("server", "agent"):
        for key, args in hd.hardening_keys(h, role, k3s.DATA_DIR).items():
            if key.endswith("-arg"):
                assert {a.split("=", 1)[0] for a in args} <= PROFILE_ARGS[key], (role, key)


@unit
def test_relaxed_profiles_render_what_they_keep():
    h = hd.Hardening(secrets_encryption=False, protect_kernel_defaults=False, audit_log=None, enforce="privileged")
    server = hd.hardening_keys(h, "server", k3s.DATA_DIR)
    assert "secrets-encryption" not in server and "protect-kernel-defaults" not in server
    assert not any(a.startswith("audit-") for a in server["kube-apiserver-arg"])
    assert list(hd.server_files(h, k3s.DATA_DIR)) == [hd.server_path(k3s.DATA_DIR, hd.PSA_FILE)]
    with pytest.raises(ValueError):
        hd.render_sysctl(h)
    with pytest.raises(ValueError):
        hd.render_audit_policy(h)


# ------------------------------------------------------------------ the files


@unit
def test_psa_config_names_each_exemption_with_its_reason():
    cfg = CONFIGS["dev"]
    text = hd.render_psa(specs.k3s_hardening(cfg))
    doc = yaml.safe_load(text)
    psa = doc["plugins"][0]["configuration"]
    assert psa["defaults"] == {"enforce": "baseline", "enforce-version": "latest", "audit": "restricted",
                               "audit-version": "latest", "warn": "restricted", "warn-version": "latest"}
    assert psa["exemptions"]["namespaces"] == ["kube-system", "longhorn-system", "monitoring"]
    for ns, why in cfg.k3s.hardening.pod_security.exempt_namespaces.items():
        assert f"#   {ns}: {why}" in text
    assert doc["plugins"][1]["name"] == "EventRateLimit"


@unit
def test_the_encryption_config_takes_only_a_32_byte_base64_key():
    doc = json.loads(encryption_config())
    providers = doc["resources"][0]["providers"]
    assert providers[0]["aescbc"]["keys"] == [{"name": hd.ENCRYPTION_KEY_NAME, "secret": ENCRYPTION_KEY}]
    assert providers[1] == {"identity": {}}
    for bad in ("not base64!", base64.b64encode(b"short").decode()):
        with pytest.raises(ValueError, match="encryption key"):
            hd.render_encryption_config(hd.EncryptionKey(key_b64=bad))


@unit
@pytest.mark.parametrize("name", NAMES)
def test_first_boot_writes_the_kubelet_sysctls_on_k3s_nodes_only(name):
    cfg = CONFIGS[name]
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMicrocloudTestKeyOnlyForRenderingXXXXXXXXXX test"
    for node in cfg.nodes:
        k3s_node = node.role in ("server", "agent", "storage")
        if node.is_flatcar:
            doc = json.loads(ignition.render_ignition(specs.flatcar_node(cfg, node, [key])))
            files = {f["path"]: f for f in doc["storage"]["files"]}
            if k3s_node:
                data = files[hd.SYSCTL_PATH]["contents"]["source"]
                assert data.startswith("data:,") and "vm.overcommit_memory" in data.replace("%3D", "=")
        else:
            doc = yaml.safe_load(cloud_init.render_user_data(specs.cloud_init_node(cfg, node, [key])))
            files = {f["path"]: f for f in doc["write_files"]}
            if k3s_node:
                assert files[hd.SYSCTL_PATH]["content"] == hd.kubelet_sysctl_text()
                assert ["sysctl", "--system"] in doc["runcmd"]
        assert (hd.SYSCTL_PATH in files) == k3s_node, node.name


@validators
def test_the_sysctl_file_is_read_by_the_real_sysctl(tmp_path):
    """procps' sysctl applies the file to a scratch /proc/sys (a bind mount in a mount namespace of its own)."""
    sysctl, unshare = shutil.which("sysctl") or "/usr/sbin/sysctl", shutil.which("unshare")
    assert os.path.exists(sysctl) and unshare, "sysctl (procps) and unshare (util-linux) are needed"
    fake = tmp_path / "sys"
    for key, value in KERNEL_DEFAULTS.items():
        p = fake / key.replace(".", "/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(value + "\n")
    conf = tmp_path / "90-kubelet.conf"
    conf.write_text(hd.kubelet_sysctl_text())
    res = subprocess.run(
        [unshare, "--mount", "--propagation", "private", "sh", "-c", f'mount --bind "$1" /proc/sys && exec {sysctl} -p "$2"',
         "sh", str(fake), str(conf)],
        capture_output=True, text=True, timeout=30,
    )
    assert res.returncode == 0, res.stderr
    for key, want in hd.SYSCTLS.items():
        assert (fake / key.replace(".", "/")).read_text().strip() == want, key
        assert f"{key} = {want}" in res.stdout
    # A misspelt key is an error of the same reader: the check can fail.
    conf.write_text("vm.overcommit_memroy=1\n")
    bad = subprocess.run([unshare, "--mount", "--propagation", "private", "sh", "-c",
                          f'mount --bind "$1" /proc/sys && exec {sysctl} -p "$2"', "sh", str(fake), str(conf)],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "overcommit_memroy" in bad.stderr


# ------------------------------------------------------------------ the install script


def _server(cfg_name: str = "dev", **kw) -> k3s.K3sNodeSpec:
    node = k3s_nodes(CONFIGS[cfg_name])[0]
    assert node.role == "server" and node.cluster_init
    return dataclasses.replace(node, **kw)


@validators
def test_the_install_places_the_profile_files_and_sets_the_kernel(tmp_path):
    box = Node(tmp_path)
    node = _server()
    res = box.run(box.spec(node))
    assert res.returncode == 0, res.stderr
    for key, want in hd.SYSCTLS.items():
        assert box.path("/proc/sys/" + key.replace(".", "/")).read_text().strip() == want, key
    sysctl = box.path(hd.SYSCTL_PATH)
    assert sysctl.read_text() == hd.kubelet_sysctl_text() and sysctl.stat().st_mode & 0o777 == 0o644
    for path, text in hd.server_files(node.hardening, node.data_dir).items():
        f = box.path(path)
        assert f.read_text() == text and f.stat().st_mode & 0o777 == 0o600, path
    logs = box.path(hd.server_path(node.data_dir, "logs"))
    assert logs.is_dir() and logs.stat().st_mode & 0o777 == 0o700
    enc = box.path(hd.cred_path(node.data_dir, hd.ENCRYPTION_CONFIG))
    assert enc.read_text() == encryption_config() and enc.stat().st_mode & 0o777 == 0o600
    config = yaml.safe_load(box.path(k3s.CONFIG_PATH).read_text())
    assert config["secrets-encryption"] is True
    # Nothing of the key in what the script printed.
    assert ENCRYPTION_KEY not in res.stdout + res.stderr
    # A second run changes nothing.
    again = box.run(box.spec(node))
    assert again.returncode == 0 and box.calls("restart") == 1, again.stderr


@validators
def test_an_agent_gets_the_kernel_settings_but_no_server_files(tmp_path):
    box = Node(tmp_path)
    agent = k3s_nodes(CONFIGS["dev"])[-1]
    assert agent.role == "agent"
    res = box.run(box.spec(agent))
    assert res.returncode == 0, res.stderr
    assert box.path(hd.SYSCTL_PATH).is_file()
    assert not box.path(hd.server_path(agent.data_dir, hd.PSA_FILE)).exists()
    assert not box.path(hd.cred_path(agent.data_dir, hd.ENCRYPTION_CONFIG)).exists()


@validators
def test_a_cluster_init_without_the_encryption_config_installs_nothing(tmp_path):
    box = Node(tmp_path)
    node = _server()
    stdin = "\n".join(line for line in join_input(node).splitlines() if not line.startswith("cred "))
    res = box.run(box.spec(node), stdin=stdin + "\n")
    assert res.returncode == 1 and "holds no encryption config" in res.stderr
    assert not box.installed()


@validators
def test_another_encryption_key_on_the_node_is_refused(tmp_path):
    box = Node(tmp_path)
    node = _server()
    assert box.run(box.spec(node)).returncode == 0
    other = base64.b64encode(b"another-clusters-key-32-bytes-xx").decode()
    res = box.run(box.spec(node), stdin=join_input(node, key_b64=other))
    assert res.returncode == 1 and "another secrets encryption key" in res.stderr, res.stderr
    assert box.path(hd.cred_path(node.data_dir, hd.ENCRYPTION_CONFIG)).read_text() == encryption_config()


@validators
def test_turning_encryption_off_on_an_encrypted_cluster_is_refused(tmp_path):
    box = Node(tmp_path)
    node = _server()
    assert box.run(box.spec(node)).returncode == 0
    before = box.path(k3s.CONFIG_PATH).read_text()
    off = dataclasses.replace(node, hardening=dataclasses.replace(node.hardening, secrets_encryption=False))
    res = box.run(box.spec(off))
    assert res.returncode == 1 and "encrypts its Secrets" in res.stderr, res.stderr
    assert box.path(k3s.CONFIG_PATH).read_text() == before and box.calls("restart") == 1


@validators
def test_a_kernel_setting_that_cannot_be_set_stops_the_install(tmp_path):
    box = Node(tmp_path)
    panic = box.path("/proc/sys/kernel/panic")
    panic.unlink()
    panic.mkdir()  # cannot be written, like a read-only /proc/sys in a container
    res = box.run(box.spec(_server()))
    assert res.returncode == 1 and "kernel setting kernel.panic is not 10" in res.stderr, res.stderr
    assert not box.installed()


@validators
def test_without_protect_kernel_defaults_the_kernel_is_left_alone(tmp_path):
    box = Node(tmp_path)
    node = _server()
    relaxed = dataclasses.replace(node, hardening=dataclasses.replace(node.hardening, protect_kernel_defaults=False))
    assert box.run(box.spec(relaxed)).returncode == 0
    assert box.path("/proc/sys/kernel/panic").read_text().strip() == KERNEL_DEFAULTS["kernel.panic"]
    assert not box.path(hd.SYSCTL_PATH).exists()
    assert "protect-kernel-defaults" not in yaml.safe_load(box.path(k3s.CONFIG_PATH).read_text())


def test_the_encryption_key_is_the_seeds_sha256_and_a_short_seed_is_refused():
    import base64
    import hashlib

    seed = "A1b2" * 16
    key = hd.key_from_seed(seed)
    assert base64.b64decode(key) == hashlib.sha256(seed.encode()).digest() and len(base64.b64decode(key)) == 32
    assert hd.key_from_seed(seed) == key and hd.key_from_seed(seed[::-1]) != key
    config = json.loads(hd.render_encryption_config(hd.EncryptionKey(key_b64=key)))
    assert config["resources"][0]["providers"][0]["aescbc"]["keys"][0]["secret"] == key
    with pytest.raises(ValueError, match="at least 64"):
        hd.key_from_seed("short")
