"""K3s's renderers (components/render/k3s.py): config.yaml per role, the install script, the units.

``unit`` tests are plain Python over the dev, prod and edge stack configs.
``validators`` tests run the real readers: ``sh`` (dash) runs the install
script against a temporary root with stand-ins for systemctl and curl
(tests/support/k3s_node.py), ``shellcheck`` lints it (installed by
.ci/install.sh; missing is a failure, like every validator), and
``systemd-analyze verify`` checks the units.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from components.render import k3s
from support.k3s_node import VERSION, Node, k3s_nodes
from support.k3s_pki import AGENT_PASSWORD, SERVER_PASSWORD, agent_token, join_input, server_token, tls_files
from support.platform_render import CONFIGS, NAMES, need

unit = pytest.mark.unit
validators = pytest.mark.validators


# ------------------------------------------------------------------ K3s config.yaml


@unit
@pytest.mark.parametrize("name", NAMES)
def test_k3s_config_roles_and_join_path(name):
    cfg = CONFIGS[name]
    lb = cfg.load_balancer
    vip_url = f"https://{lb.api_vip}:{lb.api_port}"
    specs = k3s_nodes(cfg)
    assert [s.node_name for s in specs if s.cluster_init] == [cfg.servers[0].name]
    for spec in specs:
        text = k3s.render_k3s_config(spec)
        doc = yaml.safe_load(text)
        assert doc == k3s.k3s_config(spec)
        assert doc["node-ip"] == spec.node_ip and doc["node-name"] == spec.node_name
        assert doc["token-file"] == k3s.TOKEN_FILE and doc["data-dir"] == k3s.DATA_DIR
        if spec.cluster_init:
            assert doc["cluster-init"] is True and "server" not in doc
        else:
            assert doc["server"] == vip_url and "cluster-init" not in doc
        if spec.role == "server":
            assert doc["tls-san"] == [str(lb.api_vip), f"api.{cfg.domain}"]
            assert set(doc["disable"]) == {"traefik", "servicelb", "local-storage"}
            assert doc["write-kubeconfig-mode"] == "0600"
            assert doc["https-listen-port"] == lb.api_port
        else:
            assert not set(doc) & (k3s.SERVER_KEYS - k3s.AGENT_KEYS), f"{spec.node_name}: server-only key on an agent"
        assert doc.get("node-label", []) == sorted(spec.node_labels)


@unit
@pytest.mark.parametrize("name", NAMES)
def test_k3s_repointed_bootstrap_server_is_like_the_others(name):
    """After the others joined, server 1's config differs from server 2's only in its own name and address."""
    cfg = CONFIGS[name]
    before = {s.node_name: k3s.k3s_config(s) for s in k3s_nodes(cfg)}
    after = {s.node_name: k3s.k3s_config(s) for s in k3s_nodes(cfg, repointed=True)}
    first = cfg.servers[0].name
    assert before[first] != after[first]
    assert "cluster-init" not in after[first] and after[first]["server"].startswith("https://")
    own = {"node-name", "node-ip"}
    for other in cfg.servers[1:]:
        a = {k: v for k, v in after[first].items() if k not in own}
        b = {k: v for k, v in after[other.name].items() if k not in own}
        assert a == b
    # nothing else moves
    assert {n: c for n, c in before.items() if n != first} == {n: c for n, c in after.items() if n != first}


@unit
@pytest.mark.parametrize("role, cluster_init", [("server", True), ("server", False), ("agent", False)])
def test_every_k3s_key_we_write_is_a_flag_of_its_role(role, cluster_init):
    spec = k3s.K3sNodeSpec(
        role=role, node_name="n1", node_ip="10.17.4.21", api_vip="192.168.0.32", api_port=6443,
        domain="microcloud.lan", cluster_init=cluster_init,
        node_labels=("a=b",), node_taints=("dedicated=infra:NoSchedule",),
    )
    doc = k3s.k3s_config(spec)
    assert set(doc) <= k3s.ALLOWED_KEYS[role], set(doc) - k3s.ALLOWED_KEYS[role]
    assert k3s.AGENT_KEYS < k3s.SERVER_KEYS  # servers run an agent: every agent flag is a server flag


@unit
def test_k3s_key_check_can_fail(monkeypatch):
    spec = k3s_nodes(CONFIGS["dev"])[0]
    monkeypatch.setitem(k3s.ALLOWED_KEYS, spec.role, k3s.ALLOWED_KEYS[spec.role] - {"node-ip"})
    with pytest.raises(ValueError, match="not server flags"):
        k3s.render_k3s_config(spec)


@unit
def test_k3s_config_is_deterministic_and_holds_no_token():
    spec = k3s_nodes(CONFIGS["prod"])[-1]
    a = k3s.render_k3s_config(dataclasses.replace(spec, node_labels=("b=2", "a=1")))
    b = k3s.render_k3s_config(dataclasses.replace(spec, node_labels=("a=1", "b=2")))
    assert a == b
    assert "token:" not in a and "token-file:" in a


@unit
@pytest.mark.parametrize(
    "change, message",
    [
        (dict(role="agent", cluster_init=True), "only a server"),
        (dict(node_labels=("no-equals",)), "not key=value"),
        (dict(node_taints=("k=v:Sometimes",)), "node taint"),
        (dict(node_ip="10.17.4.300"), "IPv4"),
    ],
)
def test_k3s_rejects_bad_specs(change, message):
    spec = dataclasses.replace(k3s_nodes(CONFIGS["dev"])[0], **change)
    with pytest.raises(ValueError, match=message):
        k3s.render_k3s_config(spec)


def _install_spec(node: k3s.K3sNodeSpec, root: str = "/", **kw) -> k3s.K3sInstallSpec:
    args = dict(
        node=node,
        version=VERSION,
        binary=k3s.Artifact(sha256="a" * 64, path="/var/tmp/k3s"),
        images=k3s.Artifact(sha256="b" * 64, path="/var/tmp/k3s-airgap-images-amd64.tar.zst"),
        bin_dir=k3s.FLATCAR_BIN_DIR,
        root=root,
    )
    return k3s.K3sInstallSpec(**{**args, **kw})


@unit
@pytest.mark.parametrize(
    "change, message",
    [
        (dict(binary=k3s.Artifact(sha256="a" * 64, url="http://example.org/k3s")), "not https"),
        (dict(binary=k3s.Artifact(sha256="A" * 64, path="/var/tmp/k3s")), "sha256"),
        (dict(binary=k3s.Artifact(sha256="a" * 64)), "exactly one of url and path"),
        (dict(binary=k3s.Artifact(sha256="a" * 64, url="https://e.org/k3s", path="/var/tmp/k3s")), "exactly one"),
        (dict(images=k3s.Artifact(sha256="b" * 64, path="/var/tmp/images.zip")), "airgap images"),
        (dict(version="latest"), "not a K3s release"),
        (dict(bin_dir="opt/bin"), "bin_dir"),
    ],
)
def test_k3s_install_rejects_bad_sources(change, message):
    with pytest.raises(ValueError, match=message):
        k3s.render_k3s_install(_install_spec(k3s_nodes(CONFIGS["dev"])[0], **change))


@unit
def test_k3s_install_script_text_holds_no_token_and_pipes_nothing_into_a_shell():
    for node in k3s_nodes(CONFIGS["prod"]):
        for binary in (k3s.Artifact(sha256="a" * 64, url="https://example.org/k3s"), k3s.Artifact(sha256="a" * 64, path="/var/tmp/k3s")):
            script = k3s.render_k3s_install(_install_spec(node, binary=binary))
            for secret in (SERVER_PASSWORD, AGENT_PASSWORD, "PRIVATE KEY"):
                assert secret not in script
            assert "K3S_TOKEN" not in script and "--token " not in script
            assert not re.search(r"\|\s*(sudo\s+)?(ba|da)?sh\b", script), "a download piped into a shell"
            assert k3s.render_k3s_config(node) in script.replace("'\"'\"'", "'")


# ------------------------------------------------------------------ K3s install script, run for real


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@validators
@pytest.mark.parametrize("role_index", [0, -1], ids=["bootstrap-server", "last-k3s-node"])
def test_k3s_install_runs_and_a_second_run_is_a_no_op(tmp_path, role_index):
    need("sha256sum")
    box = Node(tmp_path)
    node = k3s_nodes(CONFIGS["prod"])[role_index]
    spec = box.spec(node)
    unit_name = k3s.unit_name(node.role)
    res = box.run(spec)
    assert res.returncode == 0, res.stderr
    binary = box.path(f"{spec.bin_dir}/k3s")
    assert binary.read_bytes() == box.binary.read_bytes() and _mode(binary) == 0o755
    images = box.path(f"{node.data_dir}/agent/images/{k3s.IMAGES_PREFIX}.tar.zst")
    assert images.read_bytes() == box.images.read_bytes()
    token = box.path(node.token_file)
    mine = server_token() if node.role == "server" else agent_token()
    assert token.read_text() == mine + "\n" and _mode(token) == 0o600
    if node.role == "server":
        agent = box.path(node.agent_token_file)
        assert agent.read_text() == AGENT_PASSWORD + "\n" and _mode(agent) == 0o600
    config = box.path(k3s.CONFIG_PATH)
    assert config.read_text() == k3s.render_k3s_config(node) and _mode(config) == 0o600
    unit = box.path(f"{k3s.UNIT_DIR}/{unit_name}")
    assert unit.read_text() == k3s.render_k3s_unit(k3s.K3sUnitSpec(role=node.role, bin_dir=spec.bin_dir))
    assert f"ExecStart={spec.bin_dir}/k3s {node.role}\n" in unit.read_text()
    assert os.readlink(box.path(f"{spec.bin_dir}/kubectl")) == "k3s"
    assert box.calls("daemon-reload") == 1 and box.calls("restart") == 1 and box.calls("enable") == 1
    for secret in (SERVER_PASSWORD, AGENT_PASSWORD):
        assert secret not in box.log.read_text() and secret not in res.stdout + res.stderr
    # Same spec again: nothing re-read (the uploads are gone), nothing restarted.
    box.binary.unlink()
    box.images.unlink()
    mtime = binary.stat().st_mtime_ns
    res = box.run(spec)
    assert res.returncode == 0, res.stderr
    assert "nothing changed" in res.stdout
    assert box.calls("restart") == 1 and box.calls("daemon-reload") == 1
    assert binary.stat().st_mtime_ns == mtime


@validators
def test_k3s_install_changed_config_restarts_once_and_keeps_the_binary(tmp_path):
    box = Node(tmp_path)
    node = k3s_nodes(CONFIGS["prod"])[-1]
    assert box.run(box.spec(node)).returncode == 0
    binary = box.path(f"{k3s.FLATCAR_BIN_DIR}/k3s")
    mtime = binary.stat().st_mtime_ns
    changed = dataclasses.replace(node, node_labels=(*node.node_labels, "microcloud.dev/zone=a"))
    res = box.run(box.spec(changed))
    assert res.returncode == 0, res.stderr
    assert box.path(k3s.CONFIG_PATH).read_text() == k3s.render_k3s_config(changed)
    assert box.calls("restart") == 2
    assert box.calls("daemon-reload") == 1, "the unit did not change"
    assert binary.stat().st_mtime_ns == mtime


@validators
def test_k3s_install_checks_sha256_before_installing_anything(tmp_path):
    box = Node(tmp_path)
    node = k3s_nodes(CONFIGS["dev"])[0]
    spec = box.spec(node)
    box.binary.write_text("#!/bin/sh\necho tampered\n")
    res = box.run(spec)
    assert res.returncode == 1
    assert f"microcloud: {node.node_name}: k3s: k3s: sha256 is not {spec.binary.sha256}; nothing installed" in res.stderr
    assert not box.installed(), "something was installed"
    assert box.log.read_text() == ""


@validators
def test_k3s_install_without_token_installs_nothing(tmp_path):
    box = Node(tmp_path)
    res = box.run(box.spec(k3s_nodes(CONFIGS["dev"])[0]), stdin="")
    assert res.returncode == 1 and "no cluster token given" in res.stderr
    assert not box.installed()


@validators
def test_k3s_install_join_input_from_a_path_on_the_node(tmp_path):
    box = Node(tmp_path)
    node = k3s_nodes(CONFIGS["dev"])[-1]
    source = box.uploads / "join"
    source.write_text(join_input(node))
    source.chmod(0o600)
    res = box.run(box.spec(node, input_path=str(source)), stdin="ignored")
    assert res.returncode == 0, res.stderr
    token = box.path(node.token_file)
    assert token.read_text() == agent_token() + "\n" and _mode(token) == 0o600


@validators
def test_k3s_install_from_https_url_checks_the_download(tmp_path):
    box = Node(tmp_path)
    node = k3s_nodes(CONFIGS["dev"])[0]
    url = "https://github.com/k3s-io/k3s/releases/download/v1.33.5%2Bk3s1/k3s"
    spec = box.spec(node, binary=k3s.Artifact(sha256=box.sha(box.binary), url=url))
    res = box.run(spec, CURL_FILE=str(box.binary))
    assert res.returncode == 0, res.stderr
    assert box.path(f"{k3s.FLATCAR_BIN_DIR}/k3s").read_bytes() == box.binary.read_bytes()
    curl = [line for line in box.log.read_text().splitlines() if line.startswith("curl ")]
    assert len(curl) == 1 and "--proto =https" in curl[0] and curl[0].endswith(url)
    # A download that is not the pinned file is never installed.
    (tmp_path / "other").mkdir()
    other = Node(tmp_path / "other")
    bad = tmp_path / "bad"
    bad.write_text("#!/bin/sh\necho evil\n")
    res = other.run(other.spec(node, binary=k3s.Artifact(sha256=box.sha(box.binary), url=url)), CURL_FILE=str(bad))
    assert res.returncode == 1 and "sha256 is not" in res.stderr
    assert not other.path(f"{k3s.FLATCAR_BIN_DIR}/k3s").exists()


@validators
def test_k3s_install_that_does_not_start_puts_the_previous_files_back(tmp_path):
    box = Node(tmp_path)
    node = k3s_nodes(CONFIGS["prod"])[-1]
    assert box.run(box.spec(node)).returncode == 0
    good = box.path(k3s.CONFIG_PATH).read_text()
    broken = dataclasses.replace(node, node_labels=(*node.node_labels, "microcloud.dev/breaks=yes"))
    res = box.run(box.spec(broken), FAIL_MARK="microcloud.dev/breaks")
    assert res.returncode == 1
    assert f"microcloud: {node.node_name}: k3s: {k3s.unit_name(node.role)} did not start" in res.stderr
    assert "the previous ones are back" in res.stderr
    assert box.path(k3s.CONFIG_PATH).read_text() == good
    assert box.calls("restart") == 3, "first install, the broken config, the previous config again"
    assert (box.state / f"active.{k3s.unit_name(node.role)}").exists()


@validators
def test_k3s_install_script_is_posix_sh(tmp_path):
    need("sh")
    for name in ("dev", "prod"):
        for node in k3s_nodes(CONFIGS[name]):
            for binary in (k3s.Artifact(sha256="a" * 64, url="https://example.org/k3s"), k3s.Artifact(sha256="a" * 64, path="/var/tmp/k3s")):
                for input_path in (None, "/root/k3s-join"):
                    path = tmp_path / f"{node.node_name}.sh"
                    path.write_text(k3s.render_k3s_install(_install_spec(node, binary=binary, input_path=input_path)))
                    res = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True)
                    assert res.returncode == 0, res.stderr


@validators
def test_k3s_install_script_passes_shellcheck(tmp_path):
    tool = shutil.which("shellcheck")
    assert tool, "shellcheck is not installed; run .ci/install.sh (Debian package shellcheck)"
    for node in k3s_nodes(CONFIGS["prod"])[:1] + k3s_nodes(CONFIGS["prod"])[-1:]:
        for images in (None, k3s.Artifact(sha256="b" * 64, url="https://example.org/k3s-airgap-images-amd64.tar.zst")):
            path = tmp_path / "install.sh"
            path.write_text(k3s.render_k3s_install(_install_spec(node, images=images)))
            res = subprocess.run([tool, "-s", "sh", str(path)], capture_output=True, text=True)
            assert res.returncode == 0, res.stdout


@validators
@pytest.mark.parametrize("role", ["server", "agent"])
def test_k3s_unit_verifies(tmp_path, role):
    tool = need("systemd-analyze")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "k3s").write_text("#!/bin/sh\n")
    (bindir / "k3s").chmod(0o755)
    unit = tmp_path / k3s.unit_name(role)
    unit.write_text(k3s.render_k3s_unit(k3s.K3sUnitSpec(role=role, bin_dir=str(bindir))))
    res = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stderr.strip() == "", res.stderr
    # The check can fail: the binary is not there.
    unit.write_text(k3s.render_k3s_unit(k3s.K3sUnitSpec(role=role, bin_dir=str(tmp_path / "missing"))))
    res = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "not executable" in res.stderr
