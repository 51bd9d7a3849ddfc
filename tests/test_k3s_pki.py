"""The cluster PKI's join input: the secure tokens, the CA files the cluster-init server gets, and the install script's checks of them.

The script runs for real under dash against a temporary root
(tests/support/k3s_node.py), on CAs openssl made (tests/support/k3s_pki.py);
the CA hash is checked the way K3s documents it: ``sha256sum`` of the
server-ca.crt the script wrote.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import stat
import subprocess

import pytest
import yaml

from components.render import k3s, k3s_pki
from support.k3s_node import Node, k3s_nodes
from support.k3s_pki import AGENT_PASSWORD, SERVER_PASSWORD, agent_token, join_input, server_token, tls_files
from support.platform_render import CONFIGS, need

unit = pytest.mark.unit
validators = pytest.mark.validators


def _mode(p) -> int:
    return stat.S_IMODE(p.stat().st_mode)


# ------------------------------------------------------------------ pure


@unit
def test_ca_hash_is_the_sha256_of_the_pem_bytes_and_wants_one_certificate():
    pem = tls_files()[k3s_pki.SERVER_CA]
    assert k3s_pki.ca_hash(pem) == hashlib.sha256(pem.encode()).hexdigest()
    for bad in (pem + pem, pem.rstrip("\n"), "not a certificate\n", tls_files()["server-ca.key"]):
        with pytest.raises(ValueError, match="exactly one PEM certificate"):
            k3s_pki.ca_hash(bad)


@unit
def test_secure_tokens_name_the_ca_and_the_user():
    pem = tls_files()[k3s_pki.SERVER_CA]
    token = k3s_pki.secure_token(pem, "server", SERVER_PASSWORD)
    assert token == f"K10{k3s_pki.ca_hash(pem)}::server:{SERVER_PASSWORD}"
    assert k3s_pki.secure_token(pem, "node", AGENT_PASSWORD).endswith(f"::node:{AGENT_PASSWORD}")
    with pytest.raises(ValueError, match="neither server nor node"):
        k3s_pki.secure_token(pem, "admin", SERVER_PASSWORD)
    for weak in ("short", "x" * 40 + ":colon", ""):
        with pytest.raises(ValueError, match="at least 32 letters and digits"):
            k3s_pki.secure_token(pem, "server", weak)


@unit
def test_join_input_per_role():
    files = tls_files()
    s, a = server_token(), agent_token()
    assert k3s_pki.join_input_for("agent", False, server_token=s, agent_token=a, files=files) == k3s_pki.JoinInput(token=a)
    joining = k3s_pki.join_input_for("server", False, server_token=s, agent_token=a, files=files)
    assert joining == k3s_pki.JoinInput(token=s, agent_token=a)
    init = k3s_pki.join_input_for("server", True, server_token=s, agent_token=a, files=files)
    assert dict(init.files) == files
    text = k3s_pki.render_join_input(init)
    lines = text.splitlines()
    # Servers keep the agent token's password alone (K3s' node password); agents get the secure form.
    assert lines[:2] == [f"token {s}", f"agent-token {AGENT_PASSWORD}"]
    decoded = {parts[1]: base64.b64decode(parts[2]).decode() for parts in (line.split(" ") for line in lines[2:])}
    assert decoded == files
    # Agents never see the server token; nobody but the cluster-init server a key.
    assert s not in k3s_pki.render_join_input(k3s_pki.JoinInput(token=a))
    assert "PRIVATE" not in k3s_pki.render_join_input(joining)


@unit
def test_join_input_refuses_what_k3s_would_not_take():
    files, s, a = tls_files(), server_token(), agent_token()
    with pytest.raises(ValueError, match="secure-form"):
        k3s_pki.render_join_input(k3s_pki.JoinInput(token="plain-password"))
    with pytest.raises(ValueError, match="not K3s CA files"):
        k3s_pki.render_join_input(k3s_pki.JoinInput(token=s, agent_token=a, files={**files, "../../etc/passwd": "x"}))
    partial = {k: v for k, v in files.items() if k != "etcd/peer-ca.key"}
    with pytest.raises(ValueError, match=r"missing \['etcd/peer-ca.key'\]"):
        k3s_pki.render_join_input(k3s_pki.JoinInput(token=s, agent_token=a, files=partial))
    with pytest.raises(ValueError, match="token's CA hash is not the hash of the server CA"):
        k3s_pki.render_join_input(k3s_pki.JoinInput(token=server_token("other"), agent_token=agent_token("other"), files=files))
    with pytest.raises(ValueError, match="not the node token of the same cluster CA"):
        k3s_pki.render_join_input(k3s_pki.JoinInput(token=s, agent_token=agent_token("other")))
    with pytest.raises(ValueError, match="not the node token of the same cluster CA"):
        k3s_pki.render_join_input(k3s_pki.JoinInput(token=s, agent_token=s))


@unit
def test_kubeconfig_trusts_the_server_ca_and_carries_the_client_pair():
    files = tls_files()
    text = k3s_pki.render_kubeconfig(k3s_pki.KubeconfigSpec(
        name="microcloud-dev", server="https://10.27.0.10:6443", ca_pem=files[k3s_pki.SERVER_CA],
        cert_pem=files["client-ca.crt"], key_pem=files["client-ca.key"],
    ))
    doc = yaml.safe_load(text)
    assert doc["current-context"] == "microcloud-dev"
    cluster = doc["clusters"][0]["cluster"]
    assert cluster["server"] == "https://10.27.0.10:6443" and "insecure-skip-tls-verify" not in cluster
    assert base64.b64decode(cluster["certificate-authority-data"]).decode() == files[k3s_pki.SERVER_CA]
    user = doc["users"][0]["user"]
    assert base64.b64decode(user["client-key-data"]).decode() == files["client-ca.key"]
    with pytest.raises(ValueError, match="not an https URL"):
        k3s_pki.render_kubeconfig(k3s_pki.KubeconfigSpec(name="x", server="http://10.0.0.1:6443", ca_pem=files[k3s_pki.SERVER_CA],
                                                         cert_pem=files["client-ca.crt"], key_pem=files["client-ca.key"]))


# ------------------------------------------------------------------ the install script, for real


def _servers():
    nodes = k3s_nodes(CONFIGS["prod"])
    init = next(n for n in nodes if n.cluster_init)
    joining = next(n for n in nodes if n.role == "server" and not n.cluster_init)
    agent = next(n for n in nodes if n.role == "agent")
    return init, joining, agent


def _tls(box: Node, node: k3s.K3sNodeSpec, name: str):
    return box.path(f"{node.data_dir}/server/tls/{name}")


@validators
def test_cluster_init_server_gets_every_ca_before_k3s_starts_and_the_token_names_it(tmp_path):
    need("sha256sum")
    need("base64")
    box = Node(tmp_path)
    init, _, _ = _servers()
    res = box.run(box.spec(init))
    assert res.returncode == 0, res.stderr
    for name, content in tls_files().items():
        f = _tls(box, init, name)
        assert f.read_text() == content, name
        assert _mode(f) == (0o600 if name.endswith(".key") else 0o644), name
    assert _mode(box.path(f"{init.data_dir}/server/tls")) == 0o700
    # K3s' formula: the CA hash is sha256sum of server-ca.crt as it lies on disk.
    out = subprocess.run(["sha256sum", str(_tls(box, init, k3s_pki.SERVER_CA))], capture_output=True, text=True, check=True)
    on_disk = out.stdout.split()[0]
    token = box.path(init.token_file).read_text().strip()
    assert token.startswith(f"K10{on_disk}::server:")
    assert box.path(init.agent_token_file).read_text() == AGENT_PASSWORD + "\n"
    assert agent_token().startswith(f"K10{on_disk}::node:{AGENT_PASSWORD}")
    for secret in (SERVER_PASSWORD, AGENT_PASSWORD, "PRIVATE KEY"):
        assert secret not in res.stdout + res.stderr + box.log.read_text()
    # Again: the same files are there, nothing changes, nothing restarts.
    res = box.run(box.spec(init))
    assert res.returncode == 0 and "nothing changed" in res.stdout, res.stderr
    assert box.calls("restart") == 1


@validators
def test_joining_server_and_agent_get_no_ca_files(tmp_path):
    _, joining, agent = _servers()
    for node in (joining, agent):
        (tmp_path / node.node_name).mkdir()
        box = Node(tmp_path / node.node_name)
        res = box.run(box.spec(node))
        assert res.returncode == 0, res.stderr
        assert not box.path(f"{node.data_dir}/server/tls").exists(), node.node_name
        assert box.path(node.token_file).read_text().strip() == (server_token() if node.role == "server" else agent_token())
        assert box.path(node.agent_token_file).exists() == (node.role == "server")


@validators
def test_a_server_of_another_cluster_is_refused_and_nothing_installed(tmp_path):
    _, joining, _ = _servers()
    box = Node(tmp_path)
    theirs = _tls(box, joining, k3s_pki.SERVER_CA)
    theirs.parent.mkdir(parents=True)
    theirs.write_text(tls_files("other")[k3s_pki.SERVER_CA])
    res = box.run(box.spec(joining))
    assert res.returncode == 1
    have = hashlib.sha256(theirs.read_bytes()).hexdigest()
    assert f"microcloud: {joining.node_name}: k3s: this node holds a cluster CA (sha256 {have}) that is not the stack's" in res.stderr
    assert not box.path(k3s.CONFIG_PATH).exists() and not box.path(joining.token_file).exists()
    assert box.calls("restart") == 0


@validators
def test_cluster_init_server_with_another_ca_file_is_refused(tmp_path):
    init, _, _ = _servers()
    box = Node(tmp_path)
    other = _tls(box, init, "client-ca.key")
    other.parent.mkdir(parents=True)
    other.write_text(tls_files("other")["client-ca.key"])
    res = box.run(box.spec(init))
    assert res.returncode == 1
    assert f"{other.relative_to(box.root).as_posix()} is not the stack's" in res.stderr.replace(str(box.root) + "/", "")
    assert other.read_text() == tls_files("other")["client-ca.key"], "an existing CA file was overwritten"
    assert not _tls(box, init, k3s_pki.SERVER_CA).exists() and box.calls("restart") == 0


@validators
@pytest.mark.parametrize(
    "case, message",
    [
        ("agent-gets-server-token", "not K3s' secure node token"),
        ("server-gets-agent-token", "not K3s' secure server token"),
        ("plain-token", "not K3s' secure server token"),
        ("agent-token-in-secure-form", "not K3s' short form"),
        ("missing-ca-file", "needs all 11 cluster CA files"),
        ("server-ca-not-the-tokens", "the server CA given is not the one the token names"),
        ("unknown-file", "which is not a K3s CA file"),
        ("no-agent-token", "no agent token given"),
    ],
)
def test_the_script_refuses_a_wrong_join_input_and_installs_nothing(tmp_path, case, message):
    init, _, agent = _servers()
    node = agent if case == "agent-gets-server-token" else init
    lines = join_input(node).splitlines()
    if case == "agent-gets-server-token":
        lines = [f"token {server_token()}"]
    elif case == "server-gets-agent-token":
        lines[0] = f"token {agent_token()}"
    elif case == "plain-token":
        lines[0] = f"token {SERVER_PASSWORD}"
    elif case == "agent-token-in-secure-form":
        lines[1] = f"agent-token {agent_token()}"
    elif case == "missing-ca-file":
        lines = [line for line in lines if not line.startswith("file etcd/peer-ca.key ")]
    elif case == "server-ca-not-the-tokens":
        other = base64.b64encode(tls_files("other")[k3s_pki.SERVER_CA].encode()).decode()
        lines = [f"file {k3s_pki.SERVER_CA} {other}" if line.startswith(f"file {k3s_pki.SERVER_CA} ") else line for line in lines]
    elif case == "unknown-file":
        lines.append("file ../../etc/shadow eA==")
    elif case == "no-agent-token":
        lines = [line for line in lines if not line.startswith("agent-token ")]
    box = Node(tmp_path)
    res = box.run(box.spec(node), stdin="\n".join(lines) + "\n")
    assert res.returncode == 1 and message in res.stderr, res.stderr
    assert "nothing installed" in res.stderr
    assert not box.installed(), "something was installed"
    for secret in (SERVER_PASSWORD, AGENT_PASSWORD, "PRIVATE KEY"):
        assert secret not in res.stdout + res.stderr


@validators
def test_a_lone_server_keeps_its_cas_over_day_two_runs(tmp_path):
    init, _, _ = _servers()
    box = Node(tmp_path)
    assert box.run(box.spec(init)).returncode == 0
    before = {n: _tls(box, init, n).stat().st_mtime_ns for n in tls_files()}
    changed = dataclasses.replace(init, node_labels=(*init.node_labels, "microcloud.dev/zone=a"))
    res = box.run(box.spec(changed))
    assert res.returncode == 0, res.stderr
    assert {n: _tls(box, init, n).stat().st_mtime_ns for n in tls_files()} == before
    assert box.calls("restart") == 2
