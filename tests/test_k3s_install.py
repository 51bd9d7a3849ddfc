"""The K3s install script's bootstrap guard and Ready wait, run for real by dash against a temporary root.

The stand-ins (systemctl, curl, the k3s binary's kubectl) come from
tests/support/k3s_node.py's Node; here the fake binary also answers
`kubectl get node` with the Ready status the test chooses.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess

import pytest

from components.render import k3s
from support.k3s_node import Node, k3s_nodes
from support.platform_render import CONFIGS

pytestmark = pytest.mark.validators

# Prints "True" for `kubectl ... get node` once $STATE/ready.calls reaches $READY_AFTER (never when unset).
FAKE_K3S = r"""#!/bin/sh
if [ "${1:-}" = kubectl ]; then
  n=$(cat "$STATE/ready.calls" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > "$STATE/ready.calls"
  echo "$*" >> "$STATE/kubectl.args"
  if [ -n "${READY_AFTER:-}" ] && [ "$n" -ge "$READY_AFTER" ]; then printf True; fi
  exit 0
fi
echo 'k3s version (fake)'
"""


def box_with_kubectl(tmp_path) -> Node:
    box = Node(tmp_path)
    box.binary.write_text(FAKE_K3S)
    box.binary.chmod(0o755)
    return box


def bootstrap_spec(box: Node, **kw) -> k3s.K3sInstallSpec:
    first = k3s_nodes(CONFIGS["prod"])[0]
    assert first.cluster_init and first.role == "server"
    return box.spec(first, bootstrap=True, **kw)


def test_bootstrap_runs_on_a_fresh_node_and_not_on_a_member(tmp_path):
    box = box_with_kubectl(tmp_path)
    spec = bootstrap_spec(box)
    res = box.run(spec)  # the fake curl has no file to give: no cluster answers at the VIP
    assert res.returncode == 0, res.stderr
    assert "cluster-init: true" in box.path(k3s.CONFIG_PATH).read_text()
    assert box.calls("restart") == 1
    # Once etcd holds data the bootstrap run leaves the node to its own run.
    box.path(f"{spec.node.data_dir}/server/db/etcd").mkdir(parents=True)
    box.path(k3s.CONFIG_PATH).write_text("# the node's own run wrote this\n")
    res = box.run(spec)
    assert res.returncode == 0 and "already a cluster member" in res.stdout
    assert box.path(k3s.CONFIG_PATH).read_text() == "# the node's own run wrote this\n"
    assert box.calls("restart") == 1


def test_bootstrap_never_initializes_a_second_cluster(tmp_path):
    """A new bootstrap node (or a rebuilt one) while a cluster answers at the VIP: nothing is installed."""
    box = box_with_kubectl(tmp_path)
    spec = bootstrap_spec(box)
    cacerts = tmp_path / "cacerts"
    cacerts.write_text("-----BEGIN CERTIFICATE-----\n")
    res = box.run(spec, CURL_FILE=str(cacerts))
    assert res.returncode == 0 and "already answers at the API VIP" in res.stdout
    assert not box.path(k3s.CONFIG_PATH).exists() and box.calls("restart") == 0
    curl = [line for line in box.log.read_text().splitlines() if line.startswith("curl ")]
    assert curl and curl[0].endswith(f"https://{spec.node.api_vip}:{spec.node.api_port}/cacerts")


def test_bootstrap_only_for_the_cluster_init_server(tmp_path):
    box = Node(tmp_path)
    agent = k3s_nodes(CONFIGS["prod"])[-1]
    with pytest.raises(ValueError, match="only the cluster-init server has a bootstrap run"):
        k3s.render_k3s_install(box.spec(agent, bootstrap=True))


def test_waits_until_the_node_is_ready_with_its_own_kubelet_credentials(tmp_path):
    box = box_with_kubectl(tmp_path)
    node = k3s_nodes(CONFIGS["prod"])[-1]
    res = box.run(box.spec(node, ready_timeout=60), READY_AFTER="2")
    assert res.returncode == 0, res.stderr
    assert (box.state / "ready.calls").read_text().strip() == "2"
    args = (box.state / "kubectl.args").read_text().splitlines()[0]
    assert f"--kubeconfig {box.root}{node.data_dir}/agent/kubelet.kubeconfig get node {node.node_name}" in args


def test_a_node_that_is_not_ready_fails_naming_it(tmp_path):
    box = box_with_kubectl(tmp_path)
    node = k3s_nodes(CONFIGS["prod"])[-1]
    res = box.run(box.spec(node, ready_timeout=5))
    assert res.returncode == 1
    assert f"microcloud: {node.node_name}: k3s: node {node.node_name} is not Ready 5s after" in res.stderr
    # The unit keeps running (no rollback of a started K3s); the run stops here, so the next node is untouched.
    assert (box.state / f"active.{k3s.unit_name(node.role)}").exists()


def test_bootstrap_and_ready_wait_pass_shellcheck(tmp_path):
    tool = shutil.which("shellcheck")
    assert tool, "shellcheck is not installed; run .ci/install.sh (Debian package shellcheck)"
    box = Node(tmp_path)
    first = k3s_nodes(CONFIGS["prod"])[0]
    for spec in (box.spec(first, bootstrap=True), box.spec(dataclasses.replace(first, cluster_init=False), ready_timeout=600)):
        path = tmp_path / "install.sh"
        path.write_text(k3s.render_k3s_install(spec))
        res = subprocess.run([tool, "-s", "sh", str(path)], capture_output=True, text=True)
        assert res.returncode == 0, res.stdout


# ------------------------------------------------------------------ k3s-ready (components/k3s_cluster.py)

# kubectl stand-in: /readyz answers once $STATE/api exists; `get node N` prints True when $STATE/ready.N exists.
FAKE_KUBECTL = r"""#!/bin/sh
shift  # kubectl
case "$*" in
  *"get --raw /readyz"*) [ -e "$STATE/api" ] ;;
  *"get node "*) n=${*##*get node }; n=${n%% *}; [ -e "$STATE/ready.$n" ] && printf True; exit 0 ;;
  *) exit 2 ;;
esac
"""


def run_ready(tmp_path, names, timeout, **state):
    import shlex

    from components.k3s_cluster import ready_script

    st = tmp_path / "state"
    st.mkdir(exist_ok=True)
    for name in state.get("files", ()):
        (st / name).touch()
    binary = tmp_path / "k3s"
    binary.write_text(FAKE_KUBECTL)
    binary.chmod(0o755)
    kubeconfig = tmp_path / "k3s.yaml"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    cmd = ready_script(node="server1", binary=str(binary), server="https://10.0.0.32:6443", names=names, timeout=timeout, kubeconfig=str(kubeconfig))
    assert cmd.startswith("sudo sh -c ")
    inner = shlex.split(cmd[len("sudo "):])  # run as this user: the rest is what root runs
    import os
    return subprocess.run(inner, capture_output=True, text=True, timeout=60, env={**os.environ, "STATE": str(st)})


def test_ready_passes_when_api_and_nodes_answer_and_prints_nothing(tmp_path):
    res = run_ready(tmp_path, ["server1", "worker1"], 30, files=("api", "ready.server1", "ready.worker1"))
    assert res.returncode == 0, res.stderr
    # The node's own admin kubeconfig stays on the node: the program builds its own (k3s_pki).
    assert res.stdout == "" and "apiVersion" not in res.stderr


def test_ready_names_the_node_that_is_not_ready(tmp_path):
    res = run_ready(tmp_path, ["server1", "worker1"], 5, files=("api", "ready.server1"))
    assert res.returncode == 1 and "node worker1 is not Ready after 5s" in res.stderr
    assert res.stdout == ""


def test_ready_fails_when_the_api_does_not_answer_through_the_vip(tmp_path):
    res = run_ready(tmp_path, ["server1"], 5, files=("ready.server1",))
    assert res.returncode == 1 and "the API does not answer through https://10.0.0.32:6443 after 5s" in res.stderr


def test_ready_script_passes_shellcheck(tmp_path):
    import shlex

    from components.k3s_cluster import ready_script

    tool = shutil.which("shellcheck")
    assert tool, "shellcheck is not installed"
    cmd = ready_script(node="server1", binary="/opt/bin/k3s", server="https://10.0.0.32:6443", names=["a", "b"], timeout=600)
    path = tmp_path / "ready.sh"
    path.write_text(shlex.split(cmd)[3])
    res = subprocess.run([tool, "-s", "sh", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout
