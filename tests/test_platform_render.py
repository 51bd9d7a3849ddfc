"""The cluster and platform renderers: K3s config/unit/install script, chart values, GitOps alert rules.

``unit`` tests are plain Python over the dev, prod and edge stack configs.
``validators`` tests run the real readers: ``sh`` (dash) runs the install
script against a temporary root with stand-ins for systemctl and curl,
``shellcheck`` lints it (installed by .ci/install.sh; missing is a failure,
like every validator), ``systemd-analyze verify`` checks the units,
``promtool`` checks and unit-tests the alert rules and checks the scrape
config, and each chart's values are checked against the chart's own
values.yaml and templates in ``$MICROCLOUD_CHART_DIR`` (a chart that is not
there is skipped by name).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from components.config import StackConfig, parse_config
from components.render import k3s
from components.render import platform as pv
from support.gitops_patch import apply_patch_ops
from support.harness import EDGE_STACKS, stack_model

CONFIGS: dict[str, StackConfig] = {n: parse_config(stack_model(n)) for n in ("dev", "prod", *EDGE_STACKS)}
NAMES = sorted(CONFIGS)
VERSION = "v1.33.5+k3s1"
TOKEN = "K10microcloud-test-token::server:0123456789abcdef"

unit = pytest.mark.unit
validators = pytest.mark.validators


# ------------------------------------------------------------------ specs from the stack configs
# (what components/specs.py will do once the platform layer is wired in)


def k3s_nodes(cfg: StackConfig, repointed: bool = False) -> list[k3s.K3sNodeSpec]:
    """Every K3s node's spec; the first server bootstraps unless ``repointed``."""
    lb = cfg.load_balancer
    first = cfg.servers[0].name
    out = []
    for n in cfg.nodes_with("server", "agent", "storage"):
        role = "server" if n.role == "server" else "agent"
        labels = (pv.LONGHORN_DISK_LABEL,) if n.uses_longhorn else ()
        out.append(
            k3s.K3sNodeSpec(
                role=role,
                node_name=n.name,
                node_ip=str(n.ip),
                api_vip=str(lb.api_vip),
                api_port=lb.api_port,
                domain=cfg.domain,
                cluster_init=(n.name == first and not repointed),
                node_labels=labels,
            )
        )
    return out


def traefik_spec(cfg: StackConfig) -> pv.TraefikSpec:
    lb = cfg.load_balancer
    return pv.TraefikSpec(
        domain=cfg.domain,
        http_nodeport=lb.ingress_http_nodeport,
        https_nodeport=lb.ingress_https_nodeport,
        default_cert_secret="traefik-default-cert",
        dashboard_auth_secret="traefik-dashboard-auth",
    )


def monitoring_spec(cfg: StackConfig, **kw) -> pv.MonitoringSpec:
    vms = cfg.nodes_with("load_balancer", "infra")
    args = dict(
        domain=cfg.domain,
        grafana_admin_secret="grafana-admin",
        node_exporter_targets=tuple(pv.ScrapeTarget(n.name, f"{n.ip}:9100", n.role) for n in vms),
        storage_class=pv.LONGHORN_STORAGE_CLASS,
        admission_webhooks=False,
        grafana_claim="grafana",
    )
    return pv.MonitoringSpec(**{**args, **kw})


def longhorn_spec(cfg: StackConfig) -> pv.LonghornSpec:
    nodes = [n for n in cfg.nodes if n.uses_longhorn]
    return pv.LonghornSpec(replica_count=max(1, min(3, len(nodes))), reclaim_policy="Retain", allow_uninstall=False)


def nfs_spec(cfg: StackConfig) -> pv.NfsProvisionerSpec:
    storage = cfg.nodes_with("storage") or cfg.servers
    return pv.NfsProvisionerSpec(server=str(storage[0].ip), path="/srv/nfs/shared", reclaim_policy="Retain")


def chart_values(cfg: StackConfig) -> dict[str, dict]:
    """Chart name (as in ``<name>-<version>/`` of the chart directory) -> our values."""
    return {
        "traefik": pv.traefik_values(traefik_spec(cfg)),
        "sealed-secrets": pv.sealed_secrets_values(pv.SealedSecretsSpec(key_secret="sealed-secrets-key-microcloud")),
        "argo-cd": pv.argocd_values(pv.ArgoCdSpec(domain=cfg.domain, keep_crds=True)),
        "kube-prometheus-stack": pv.monitoring_values(monitoring_spec(cfg)),
        "longhorn": pv.longhorn_values(longhorn_spec(cfg)),
        "nfs-subdir-external-provisioner": pv.nfs_provisioner_values(nfs_spec(cfg)),
    }


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
            assert set(doc["disable"]) == {"traefik", "servicelb"}
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
            assert TOKEN not in script and "K3S_TOKEN" not in script and "--token " not in script
            assert not re.search(r"\|\s*(sudo\s+)?(ba|da)?sh\b", script), "a download piped into a shell"
            assert k3s.render_k3s_config(node) in script.replace("'\"'\"'", "'")


# ------------------------------------------------------------------ K3s install script, run for real


def need(tool: str) -> str:
    path = shutil.which(tool)
    assert path, f"{tool} is not installed; run .ci/run (it installs the validators from Debian packages)"
    return path


FAKE_SYSTEMCTL = r"""#!/bin/sh
# Stand-in for systemctl: logs, keeps "active"/"enabled" as files, fails a
# restart while the installed config.yaml contains $FAIL_MARK.
echo "systemctl $*" >> "$LOG"
q=; [ "${2:-}" = -q ] && q=1
last=$(eval echo "\${$#}")
case "$1" in
  daemon-reload) exit 0 ;;
  is-active) [ -e "$STATE/active.$last" ] ;;
  is-enabled) [ -e "$STATE/enabled.$last" ] ;;
  enable) touch "$STATE/enabled.$last" ;;
  restart|start)
    if [ -n "${FAIL_MARK:-}" ] && grep -q "$FAIL_MARK" "$ROOT/etc/rancher/k3s/config.yaml" 2>/dev/null; then
      rm -f "$STATE/active.$last"; exit 1
    fi
    touch "$STATE/active.$last" ;;
  *) exit 3 ;;
esac
"""

# Stand-in for curl: "downloads" $CURL_FILE to the -o target and logs the arguments.
FAKE_CURL = r"""#!/bin/sh
echo "curl $*" >> "$LOG"
out=
while [ $# -gt 0 ]; do case "$1" in -o) out=$2; shift 2 ;; *) shift ;; esac; done
cp "$CURL_FILE" "$out"
"""


class Node:
    """A temporary root with the pinned files 'copied to the node', and the stand-ins on PATH."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.root = tmp / "root"
        self.root.mkdir()
        self.fake = tmp / "fakebin"
        self.fake.mkdir()
        for name, text in (("systemctl", FAKE_SYSTEMCTL), ("curl", FAKE_CURL), ("cloud-init", "#!/bin/sh\nexit 0\n")):
            (self.fake / name).write_text(text)
            (self.fake / name).chmod(0o755)
        self.state = tmp / "state"
        self.state.mkdir()
        self.log = tmp / "log"
        self.log.write_text("")
        self.uploads = tmp / "uploads"
        self.uploads.mkdir()
        self.binary = self.uploads / "k3s"
        self.binary.write_text(f"#!/bin/sh\necho 'k3s version {VERSION} (fake)'\n")
        self.images = self.uploads / "k3s-airgap-images-amd64.tar.zst"
        self.images.write_bytes(b"\x28\xb5\x2f\xfd" + os.urandom(64))

    @staticmethod
    def sha(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    def spec(self, node: k3s.K3sNodeSpec, **kw) -> k3s.K3sInstallSpec:
        args = dict(
            node=node,
            version=VERSION,
            binary=k3s.Artifact(sha256=self.sha(self.binary), path=str(self.binary)),
            images=k3s.Artifact(sha256=self.sha(self.images), path=str(self.images)),
            bin_dir=k3s.FLATCAR_BIN_DIR,
            start_timeout=5,
            root=str(self.root),
        )
        return k3s.K3sInstallSpec(**{**args, **kw})

    def run(self, spec: k3s.K3sInstallSpec, stdin: str = TOKEN, **env) -> subprocess.CompletedProcess:
        script = self.tmp / "install.sh"
        script.write_text(k3s.render_k3s_install(spec))
        environ = {
            **os.environ,
            "PATH": f"{self.fake}:{os.environ['PATH']}",
            "LOG": str(self.log),
            "STATE": str(self.state),
            "ROOT": str(self.root),
            **env,
        }
        # /bin/sh is dash on Debian: the script must be plain POSIX sh.
        return subprocess.run(["/bin/sh", str(script)], input=stdin, env=environ, capture_output=True, text=True, timeout=60)

    def path(self, p: str) -> Path:
        return self.root / p.lstrip("/")

    def calls(self, verb: str) -> int:
        return sum(1 for line in self.log.read_text().splitlines() if line.startswith(f"systemctl {verb}"))


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
    assert token.read_text() == TOKEN and _mode(token) == 0o600
    config = box.path(k3s.CONFIG_PATH)
    assert config.read_text() == k3s.render_k3s_config(node) and _mode(config) == 0o600
    unit = box.path(f"{k3s.UNIT_DIR}/{unit_name}")
    assert unit.read_text() == k3s.render_k3s_unit(k3s.K3sUnitSpec(role=node.role, bin_dir=spec.bin_dir))
    assert f"ExecStart={spec.bin_dir}/k3s {node.role}\n" in unit.read_text()
    assert os.readlink(box.path(f"{spec.bin_dir}/kubectl")) == "k3s"
    assert box.calls("daemon-reload") == 1 and box.calls("restart") == 1 and box.calls("enable") == 1
    assert TOKEN not in box.log.read_text() and TOKEN not in res.stdout + res.stderr
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
    assert not any(p.is_file() for p in box.root.rglob("*")), "something was installed"
    assert box.log.read_text() == ""


@validators
def test_k3s_install_without_token_installs_nothing(tmp_path):
    box = Node(tmp_path)
    res = box.run(box.spec(k3s_nodes(CONFIGS["dev"])[0]), stdin="")
    assert res.returncode == 1 and "no cluster token given" in res.stderr
    assert not any(p.is_file() for p in box.root.rglob("*"))


@validators
def test_k3s_install_token_from_a_path_on_the_node(tmp_path):
    box = Node(tmp_path)
    node = k3s_nodes(CONFIGS["dev"])[-1]
    token_src = box.uploads / "token"
    token_src.write_text(TOKEN)
    token_src.chmod(0o600)
    res = box.run(box.spec(node, token_path=str(token_src)), stdin="ignored")
    assert res.returncode == 0, res.stderr
    token = box.path(node.token_file)
    assert token.read_text() == TOKEN and _mode(token) == 0o600


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
                for token_path in (None, "/root/k3s-token"):
                    path = tmp_path / f"{node.node_name}.sh"
                    path.write_text(k3s.render_k3s_install(_install_spec(node, binary=binary, token_path=token_path)))
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


# ------------------------------------------------------------------ chart values


@unit
@pytest.mark.parametrize("name", NAMES)
def test_traefik_nodeports_are_the_ones_haproxy_targets(name):
    cfg = CONFIGS[name]
    spec = traefik_spec(cfg)
    v = pv.traefik_values(spec)
    assert v["service"]["spec"]["type"] == "NodePort"
    assert v["ports"]["web"]["nodePort"] == cfg.load_balancer.ingress_http_nodeport
    assert v["ports"]["websecure"]["nodePort"] == cfg.load_balancer.ingress_https_nodeport
    assert v["ports"]["web"]["http"]["redirections"]["entryPoint"] == {"to": "websecure", "scheme": "https", "permanent": True}
    assert v["tlsStore"]["default"]["defaultCertificate"]["secretName"] == spec.default_cert_secret
    dash = v["ingressRoute"]["dashboard"]
    assert dash["matchRule"] == f"Host(`traefik.{cfg.domain}`)" and dash["entryPoints"] == ["websecure"]
    (mw,) = [o for o in v["extraObjects"] if o["kind"] == "Middleware"]
    assert dash["middlewares"] == [{"name": mw["metadata"]["name"]}]
    assert mw["spec"]["basicAuth"]["secret"] == spec.dashboard_auth_secret
    assert mw["metadata"]["namespace"] == spec.namespace
    with pytest.raises(ValueError, match="must differ"):
        pv.traefik_values(dataclasses.replace(spec, https_nodeport=spec.http_nodeport))


@unit
def test_sealed_secrets_uses_the_kept_key_and_never_renews():
    spec = pv.SealedSecretsSpec(key_secret="sealed-secrets-key-microcloud")
    v = pv.sealed_secrets_values(spec)
    assert v["fullnameOverride"] == "sealed-secrets-controller" and v["namespace"] == "kube-system"
    assert v["keyrenewperiod"] == "0" and v["secretName"] == spec.key_secret
    meta = pv.sealing_key_metadata(spec)
    assert meta["labels"] == {"sealedsecrets.bitnami.com/sealed-secrets-key": "active"}
    assert (meta["name"], meta["namespace"]) == (spec.key_secret, v["namespace"])


@unit
def test_argocd_values():
    spec = pv.ArgoCdSpec(domain="microcloud.lan", keep_crds=False)
    v = pv.argocd_values(spec)
    assert v["configs"]["params"]["server.insecure"] is True
    assert v["configs"]["secret"]["createSecret"] is False
    assert v["redisSecretInit"]["enabled"] is False
    assert v["crds"]["keep"] is False
    ing = v["server"]["ingress"]
    assert ing["enabled"] and ing["hostname"] == "argocd.microcloud.lan" == v["global"]["domain"]
    assert ing["ingressClassName"] == spec.ingress_class
    assert "obj.status.health.status" in v["configs"]["cm"]["resource.customizations.health.argoproj.io_Application"]
    off = pv.argocd_values(dataclasses.replace(spec, service_monitors=False))
    assert all(not off[c]["metrics"]["serviceMonitor"]["enabled"] for c in ("server", "controller", "repoServer"))


@unit
@pytest.mark.parametrize("name", NAMES)
def test_monitoring_values(name):
    cfg = CONFIGS[name]
    spec = monitoring_spec(cfg)
    v = pv.monitoring_values(spec)
    assert v["grafana"]["admin"]["existingSecret"] == spec.grafana_admin_secret
    assert v["grafana"]["persistence"]["storageClassName"] == "longhorn"
    assert v["grafana"]["persistence"]["existingClaim"] == "grafana"
    assert pv.grafana_claim(spec)["spec"]["storageClassName"] == "longhorn"
    (job,) = v["prometheus"]["prometheusSpec"]["additionalScrapeConfigs"]
    targets = {sc["labels"]["instance"]: sc["targets"] for sc in job["static_configs"]}
    expected = {n.name: [f"{n.ip}:9100"] for n in cfg.nodes_with("load_balancer", "infra")}
    assert targets == expected
    assert all(sc["labels"]["node"] == sc["labels"]["instance"] for sc in job["static_configs"])
    retention = v["prometheus"]["prometheusSpec"]["persistentVolumeClaimRetentionPolicy"]
    assert retention["whenDeleted"] == "Retain"
    dev = pv.monitoring_values(monitoring_spec(cfg, retain_volumes=False))
    assert dev["prometheus"]["prometheusSpec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"
    for bad in ("10.0.0.1", "10.0.0.1:0", "host:9100", "10.0.0.1:x"):
        with pytest.raises(ValueError, match="is not ip:port"):
            pv.node_exporter_scrape_configs(monitoring_spec(cfg, node_exporter_targets=(pv.ScrapeTarget("n", bad),)))
    groups = v["additionalPrometheusRulesMap"]["microcloud-gitops"]["groups"]
    assert groups == pv.gitops_alert_groups(spec.alerts)
    assert v["prometheusOperator"]["admissionWebhooks"]["enabled"] is False
    assert v["prometheusOperator"]["admissionWebhooks"]["patch"]["enabled"] is False
    assert v["prometheusOperator"]["tls"]["enabled"] is False
    # Without a storage class (a test API server): no PVCs at all.
    bare = pv.monitoring_values(monitoring_spec(cfg, storage_class=None))
    assert "persistence" not in bare["grafana"] and "storageSpec" not in bare["prometheus"]["prometheusSpec"]
    with pytest.raises(ValueError, match="webhook_ca_bundle"):
        pv.monitoring_values(monitoring_spec(cfg, admission_webhooks=True))
    on = pv.monitoring_values(monitoring_spec(cfg, admission_webhooks=True, webhook_ca_bundle="Q0E="))
    assert on["prometheusOperator"]["admissionWebhooks"]["caBundle"] == "Q0E=" and on["prometheusOperator"]["tls"]["enabled"]


@unit
def test_gitops_alerts_cover_the_originals_signals():
    rules = pv.gitops_alert_groups(pv.GitOpsAlertsSpec())[0]["rules"]
    exprs = {r["alert"]: r["expr"] for r in rules}
    assert 'phase=~"Error|Failed"' in exprs["ArgoCdAppSyncFailed"]
    assert 'sync_status="OutOfSync"' in exprs["ArgoCdAppOutOfSync"]
    assert 'health_status="Degraded"' in exprs["ArgoCdAppDegraded"]
    assert 'health_status="Unknown"' in exprs["ArgoCdAppHealthUnknown"]
    assert "argocd_git_fetch_fail_total" in exprs["ArgoCdRepoUnreachable"]


@unit
@pytest.mark.parametrize("name", NAMES)
def test_longhorn_and_nfs_values(name):
    cfg = CONFIGS[name]
    spec = longhorn_spec(cfg)
    v = pv.longhorn_values(spec)
    assert v["defaultSettings"]["defaultDataPath"] == spec.data_path
    assert v["defaultSettings"]["createDefaultDiskLabeledNodes"] is True
    assert v["persistence"]["defaultClassReplicaCount"] == spec.replica_count == v["defaultSettings"]["defaultReplicaCount"]
    assert v["preUpgradeChecker"]["jobEnabled"] is False
    mounted = pv.longhorn_values(dataclasses.replace(spec, data_path="/mnt/longhorn-disk"))
    assert mounted["defaultSettings"]["defaultDataPath"] == "/mnt/longhorn-disk"
    n = nfs_spec(cfg)
    nv = pv.nfs_provisioner_values(n)
    assert (nv["nfs"]["server"], nv["nfs"]["path"]) == (n.server, n.path)
    assert nv["storageClass"]["name"] == n.storage_class and nv["storageClass"]["reclaimPolicy"] == n.reclaim_policy


# ------------------------------------------------------------------ promtool


def render_gitops_rules(spec: pv.GitOpsAlertsSpec) -> str:
    """The rule groups as a Prometheus rules file (what ``promtool check rules`` reads)."""
    return yaml.safe_dump({"groups": pv.gitops_alert_groups(spec)}, sort_keys=True, default_flow_style=False)


@validators
def test_gitops_rules_pass_promtool_check(tmp_path):
    tool = need("promtool")
    path = tmp_path / "gitops.rules.yml"
    path.write_text(render_gitops_rules(pv.GitOpsAlertsSpec()))
    res = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    n = len(pv.gitops_alert_groups(pv.GitOpsAlertsSpec())[0]["rules"])
    assert f"SUCCESS: {n} rules found" in res.stdout
    # The check can fail: a broken expression.
    path.write_text(render_gitops_rules(pv.GitOpsAlertsSpec()).replace("> 0", "> > 0", 1))
    assert subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True).returncode != 0


def _minutes(d: str) -> int:
    m = re.fullmatch(r"(\d+)([mh])", d)
    assert m, d
    return int(m.group(1)) * (60 if m.group(2) == "h" else 1)


def _expand(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), template)


@validators
def test_gitops_alerts_fire_for_bad_apps_only(tmp_path):
    """promtool's rule unit tests: a broken app and an unreachable repo fire every alert; a healthy app none."""
    tool = need("promtool")
    spec = pv.GitOpsAlertsSpec()
    rules = {r["alert"]: r for r in pv.gitops_alert_groups(spec)[0]["rules"]}
    (tmp_path / "rules.yml").write_text(render_gitops_rules(spec))
    longest = max(_minutes(r["for"]) for r in rules.values() if "for" in r)
    at = longest + 5
    window = _minutes(spec.failure_window)
    assert window > 5
    step = at - 3  # counters step up inside the last failure window
    info = {
        "outofsync": dict(name="drifted", project="default", sync_status="OutOfSync", health_status="Healthy"),
        "degraded": dict(name="broken", project="default", sync_status="Synced", health_status="Degraded"),
        "unknown": dict(name="lost", project="default", sync_status="Synced", health_status="Unknown"),
        "good": dict(name="fine", project="default", sync_status="Synced", health_status="Healthy"),
    }

    def series(metric: str, labels: dict, values: str) -> dict:
        return {"series": metric + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}", "values": values}

    repo = "https://git.example.org/platform.git"
    inputs = [series("argocd_app_info", lbl, f"1x{at + 10}") for lbl in info.values()]
    inputs += [
        series("argocd_app_sync_total", dict(name="broken", project="default", phase="Failed"), f"0x{step} 1x{at + 10 - step}"),
        series("argocd_app_sync_total", dict(name="fine", project="default", phase="Succeeded"), f"0+1x{at + 10}"),
        series("argocd_git_fetch_fail_total", dict(repo=repo), f"0x{step} 1x{at + 10 - step}"),
    ]
    expected = {
        "ArgoCdAppOutOfSync": [info["outofsync"]],
        "ArgoCdAppDegraded": [info["degraded"]],
        "ArgoCdAppHealthUnknown": [info["unknown"]],
        "ArgoCdAppSyncFailed": [dict(name="broken", project="default")],
        "ArgoCdRepoUnreachable": [dict(repo=repo)],
        "ArgoCdMetricsAbsent": [],
    }
    assert set(expected) == set(rules), "every rule is exercised"

    def alert(name: str, labels: dict) -> dict:
        full = {**labels, **rules[name]["labels"]}
        ann = {k: _expand(v, full) for k, v in rules[name]["annotations"].items()}
        return {"exp_labels": full, "exp_annotations": ann}

    tests = [
        {
            "interval": "1m",
            "input_series": inputs,
            "alert_rule_test": [
                {"eval_time": f"{at}m", "alertname": name, "exp_alerts": [alert(name, lbl) for lbl in lbls]}
                for name, lbls in expected.items()
            ],
        },
        {  # nothing scraped from Argo CD: only the absence alert
            "interval": "1m",
            "input_series": [series("up", dict(job="node"), f"1x{at + 10}")],
            "alert_rule_test": [
                {"eval_time": f"{at}m", "alertname": "ArgoCdMetricsAbsent", "exp_alerts": [alert("ArgoCdMetricsAbsent", {})]},
                {"eval_time": f"{at}m", "alertname": "ArgoCdAppOutOfSync", "exp_alerts": []},
            ],
        },
    ]
    test_file = tmp_path / "rules_test.yml"
    test_file.write_text(yaml.safe_dump({"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}))
    res = subprocess.run([tool, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    # The check can fail: the healthy app is not expected to alert.
    tests[0]["alert_rule_test"][0]["exp_alerts"].append(alert("ArgoCdAppOutOfSync", info["good"]))
    test_file.write_text(yaml.safe_dump({"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}))
    assert subprocess.run([tool, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=120, cwd=tmp_path).returncode != 0


@validators
@pytest.mark.parametrize("name", NAMES)
def test_node_exporter_scrape_config_passes_promtool(name, tmp_path):
    tool = need("promtool")
    spec = monitoring_spec(CONFIGS[name])
    (tmp_path / "rules.yml").write_text(render_gitops_rules(spec.alerts))
    conf = {
        "global": {"scrape_interval": "30s"},
        "rule_files": ["rules.yml"],
        "scrape_configs": pv.node_exporter_scrape_configs(spec),
    }
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(conf))
    res = subprocess.run([tool, "check", "config", str(path)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    # The check can fail: a misspelt key.
    conf["scrape_configs"][0]["static_config"] = conf["scrape_configs"][0].pop("static_configs")
    path.write_text(yaml.safe_dump(conf))
    assert subprocess.run([tool, "check", "config", str(path)], capture_output=True, text=True, cwd=tmp_path).returncode != 0


# ------------------------------------------------------------------ values against the real charts

CHART_DIR = Path(os.environ.get("MICROCLOUD_CHART_DIR") or Path.home() / ".cache" / "microcloud-charts")

# Maps a chart documents as free-form ("any values you put under ..."), whose
# keys no values.yaml can list.
OPEN_MAPS = {
    "argo-cd": {("configs", "params"), ("configs", "cm")},
}
_VALUES_REF = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


@dataclasses.dataclass
class ChartIndex:
    """What a chart knows: its defaults, every ``.Values.x.y`` its templates read, its subcharts."""

    name: str
    defaults: dict
    refs: set[str]
    subcharts: dict[str, "ChartIndex"]


def _index_files(name: str, files: dict[str, str]) -> ChartIndex:
    """``files``: path inside the chart -> text, for values.yaml, templates/** and charts/<sub>/**."""
    defaults = yaml.safe_load(files.get("values.yaml", "")) or {}
    refs = {m.group(1)[1:] for p, t in files.items() if p.startswith("templates/") for m in _VALUES_REF.finditer(t)}
    subs: dict[str, dict[str, str]] = {}
    for p, t in files.items():
        parts = p.split("/")
        if parts[0] == "charts" and len(parts) > 2:
            subs.setdefault(parts[1], {})["/".join(parts[2:])] = t
    return ChartIndex(name, defaults, refs, {s: _index_files(s, f) for s, f in subs.items()})


def index_chart(chart_dir: Path) -> ChartIndex:
    files: dict[str, str] = {}
    for p in chart_dir.rglob("*"):
        rel = p.relative_to(chart_dir).as_posix()
        if p.is_file() and (rel == "values.yaml" or rel.endswith((".yaml", ".tpl", ".yml", ".txt"))):
            files[rel] = p.read_text(errors="replace")
        elif p.is_file() and rel.startswith("charts/") and rel.endswith(".tgz") and rel.count("/") == 1:
            # A packaged subchart: charts/<name>-<version>.tgz holding <name>/...
            with tarfile.open(p) as tar:
                for m in tar.getmembers():
                    if m.isfile() and m.name.endswith((".yaml", ".tpl", ".yml")):
                        inner = m.name.split("/", 1)
                        if len(inner) == 2:
                            files[f"charts/{inner[0]}/{inner[1]}"] = tar.extractfile(m).read().decode(errors="replace")
    return _index_files(chart_dir.name, files)


_MISSING = object()


def _lookup(d, path: tuple[str, ...]):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return _MISSING
        d = d[k]
    return d


def unknown_keys(values: dict, chart: ChartIndex, open_maps: frozenset = frozenset(), prefix: tuple = ()) -> list[str]:
    """Key paths of ``values`` the chart neither declares in values.yaml nor reads in a template.

    Below a default that is empty, null or a list (a free-form value) nothing
    is checked; a subchart's section is checked against the subchart.
    """
    bad = []
    for key, val in values.items():
        path = prefix + (key,)
        if path in open_maps:
            continue
        default = _lookup(chart.defaults, path)
        if default is not _MISSING:
            if isinstance(val, dict) and isinstance(default, dict) and default:
                bad += unknown_keys(val, chart, open_maps, path)
            continue
        if ".".join(path) in chart.refs:
            continue
        sub = chart.subcharts.get(path[0])
        if sub is not None and len(path) == 1 and isinstance(val, dict):
            bad += [f"{key}.{k}" for k in unknown_keys(val, sub)]
        elif sub is not None and len(path) > 1:
            bad += [f"{path[0]}.{k}" for k in unknown_keys({key: val}, sub, frozenset(), path[1:-1])]
        else:
            bad.append(".".join(path))
    return bad


def chart_dirs(name: str) -> list[Path]:
    return sorted(p for p in CHART_DIR.glob(f"{name}-*") if p.is_dir() and (p / "values.yaml").exists()
                  and re.fullmatch(re.escape(name) + r"-\d[\w.+-]*", p.name))


@validators
@pytest.mark.parametrize("chart", sorted(chart_values(CONFIGS["dev"])))
def test_values_keys_exist_in_the_chart(chart):
    dirs = chart_dirs(chart)
    if not dirs:
        pytest.skip(f"chart {chart} is not in {CHART_DIR} (<name>-<version>/values.yaml); set MICROCLOUD_CHART_DIR")
    for d in dirs:
        index = index_chart(d)
        for name in ("dev", "prod"):
            bad = unknown_keys(chart_values(CONFIGS[name])[chart], index, OPEN_MAPS.get(chart, frozenset()))
            assert not bad, f"{d.name}: values the chart does not know: {bad}"


@unit
def test_values_key_check_can_fail():
    chart = _index_files(
        "demo",
        {
            "values.yaml": "service:\n  spec:\n    type: ClusterIP\nports:\n  web:\n    port: 80\nextra: {}\n",
            "templates/x.yaml": "{{ .Values.ports.web.nodePort }}",
            "charts/sub/values.yaml": "persistence:\n  enabled: false\n",
            "charts/sub/templates/pvc.yaml": "{{ .Values.persistence.storageClassName }}",
        },
    )
    ok = {"service": {"spec": {"type": "NodePort"}}, "ports": {"web": {"nodePort": 1}}, "extra": {"any": {"thing": 1}},
          "sub": {"persistence": {"enabled": True, "storageClassName": "longhorn"}}}
    assert unknown_keys(ok, chart) == []
    wrong = {"service": {"type": "NodePort"}, "ports": {"web": {"nodeport": 1}}, "sub": {"persistence": {"size": "1Gi"}}, "nope": 1}
    assert sorted(unknown_keys(wrong, chart)) == ["nope", "ports.web.nodeport", "service.type", "sub.persistence.size"]


# ------------------------------------------------------------------ pins, Longhorn's own objects


@unit
def test_every_chart_is_pinned_exactly_with_its_repository():
    assert set(pv.CHARTS) == {"traefik", "sealed-secrets", "argo-cd", "longhorn", "kube-prometheus-stack",
                              "nfs-subdir-external-provisioner"}
    for name, pin in pv.CHARTS.items():
        assert pin.name == name and re.fullmatch(r"\d+\.\d+\.\d+", pin.version), pin
        assert pin.repo.startswith("https://") and not pin.repo.endswith("/"), pin
        assert pv.CHART_VERSIONS[name] == pin.version


@validators
@pytest.mark.parametrize("name", ["dev", "prod"])
def test_local_chart_dirs_are_the_pins(name):
    """The charts in $MICROCLOUD_CHART_DIR that the tests use are the pinned versions (Chart.yaml)."""
    for chart, pin in pv.CHARTS.items():
        d = CHART_DIR / f"{chart}-{pin.version}"
        if not (d / "Chart.yaml").is_file():
            pytest.skip(f"chart {chart}-{pin.version} is not in {CHART_DIR}")
        meta = yaml.safe_load((d / "Chart.yaml").read_text())
        assert (meta["name"], str(meta["version"])) == (chart, pin.version)


def helm_bin() -> Path | None:
    """The helm that .ci/k8s.sh built (the one the k8s tier uses), or one on PATH."""
    for p in sorted((Path.home() / ".cache" / "microcloud-k8s").glob("v*/bin/helm")):
        return p
    found = shutil.which("helm")
    return Path(found) if found else None


def helm_template(chart: str, values: dict, show_only: str, tmp_path: Path) -> list[dict]:
    helm = helm_bin()
    if helm is None:
        pytest.skip("helm is not built (bash .ci/k8s.sh)")
    d = CHART_DIR / f"{chart}-{pv.CHARTS[chart].version}"
    if not (d / "Chart.yaml").is_file():
        pytest.skip(f"chart {chart} is not in {CHART_DIR}")
    vf = tmp_path / "values.yaml"
    vf.write_text(yaml.safe_dump(values))
    res = subprocess.run([str(helm), "template", "longhorn", str(d), "--namespace", pv.LONGHORN_NAMESPACE,
                          "-f", str(vf), "--show-only", show_only], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HELM_CACHE_HOME": str(tmp_path), "HELM_CONFIG_HOME": str(tmp_path),
                              "HELM_DATA_HOME": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    return [d for d in yaml.safe_load_all(res.stdout) if d]


@validators
def test_longhorn_uninstall_job_is_the_charts_hook(tmp_path):
    """Our uninstall Job runs what the chart's pre-delete hook runs, as the chart's service account."""
    (hook,) = helm_template("longhorn", {}, "templates/uninstall-job.yaml", tmp_path)
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    theirs = hook["spec"]["template"]["spec"]
    ours = pv.longhorn_uninstall_job(pv.LONGHORN_NAMESPACE, theirs["containers"][0]["image"])
    mine = ours["spec"]["template"]["spec"]
    assert ours["metadata"]["name"] == hook["metadata"]["name"] == pv.LONGHORN_UNINSTALL_JOB
    for key in ("command", "image"):
        assert mine["containers"][0][key] == theirs["containers"][0][key], key
    assert mine["serviceAccountName"] == theirs["serviceAccountName"]
    assert mine["restartPolicy"] == theirs["restartPolicy"]
    assert {e["name"] for e in mine["containers"][0]["env"]} <= {e["name"] for e in theirs["containers"][0]["env"]}


@validators
@pytest.mark.parametrize("reclaim", ["Delete", "Retain"])
def test_longhorn_storage_class_is_the_one_the_chart_would_make(reclaim, tmp_path):
    spec = pv.LonghornSpec(replica_count=2, reclaim_policy=reclaim, allow_uninstall=reclaim == "Delete")
    values = pv.longhorn_values(spec)
    assert values["persistence"]["createStorageClass"] is False
    # What the chart would have had longhorn-manager create, from the same values with its own StorageClass on.
    values["persistence"]["createStorageClass"] = True
    (cm,) = helm_template("longhorn", values, "templates/storageclass.yaml", tmp_path)
    theirs = yaml.safe_load(cm["data"]["storageclass.yaml"])
    ours = pv.longhorn_storage_class(spec)
    assert ours["metadata"]["name"] == theirs["metadata"]["name"]
    assert ours["metadata"]["annotations"] == theirs["metadata"]["annotations"]
    for key in ("provisioner", "allowVolumeExpansion", "reclaimPolicy", "volumeBindingMode", "parameters"):
        assert ours[key] == theirs[key], key


# ------------------------------------------------------------------ gitops/

GITOPS = Path(__file__).resolve().parent.parent / "gitops"


def gitops_docs(sub: str) -> dict[str, list[dict]]:
    return {str(f.relative_to(GITOPS)): [d for d in yaml.safe_load_all(f.read_text()) if d]
            for f in sorted((GITOPS / sub).rglob("*")) if f.is_file()}


@unit
def test_gitops_layout():
    """root/ (what the root app syncs) and apps/<name>/ (plain manifests), nothing else."""
    top = {p.name for p in GITOPS.iterdir()}
    assert top == {"README.md", "root", "apps"}, top
    root = gitops_docs("root")
    kust = root.pop("root/kustomization.yaml")[0]
    assert kust["kind"] == "Kustomization"
    assert sorted(kust["resources"]) == sorted(Path(f).name for f in root), "kustomization lists every file of root/"
    objs = {(d["kind"], d["metadata"]["name"]): d for docs in root.values() for d in docs}
    assert set(objs) == {("AppProject", pv.APP_PROJECT), ("ApplicationSet", pv.APPSET)}
    for o in objs.values():
        assert o["apiVersion"] == "argoproj.io/v1alpha1" and o["metadata"]["namespace"] == pv.ARGOCD_NAMESPACE
    # Waves: the project exists before the ApplicationSet that uses it.
    waves = {k: int(o["metadata"]["annotations"][pv.SYNC_WAVE]) for k, o in objs.items()}
    assert waves[("AppProject", pv.APP_PROJECT)] < waves[("ApplicationSet", pv.APPSET)]
    appset = objs[("ApplicationSet", pv.APPSET)]["spec"]
    (gen,) = appset["generators"]
    assert gen["git"]["directories"] == [{"path": "gitops/apps/*"}]
    tmpl = appset["template"]
    assert tmpl["metadata"]["name"] == "{{.path.basename}}" and tmpl["spec"]["source"]["path"] == "{{.path.path}}"
    assert tmpl["spec"]["project"] == pv.APP_PROJECT
    assert tmpl["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    assert pv.CASCADE_FINALIZER in tmpl["metadata"]["finalizers"]

    apps = [p for p in (GITOPS / "apps").iterdir()]
    assert apps and all(p.is_dir() for p in apps), apps
    for app in apps:
        docs = gitops_docs(f"apps/{app.name}")
        assert docs, app
        for f, ds in docs.items():
            assert f.endswith(".yaml"), f"{f}: plain manifests only"
            for d in ds:
                assert {"apiVersion", "kind", "metadata"} <= set(d), f
                assert "namespace" not in d["metadata"], f"{f}: the Application's destination sets the namespace"
                int(d["metadata"]["annotations"][pv.SYNC_WAVE])  # every object has a wave


@unit
def test_gitops_example_waves_order_config_workload_service():
    docs = {d["kind"]: d for ds in gitops_docs("apps/example").values() for d in ds}
    wave = {k: int(d["metadata"]["annotations"][pv.SYNC_WAVE]) for k, d in docs.items()}
    assert wave["ConfigMap"] < wave["Deployment"] < wave["Service"], wave
    vols = docs["Deployment"]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "page", "configMap": {"name": docs["ConfigMap"]["metadata"]["name"]}} in vols


@unit
def test_root_application_patches_every_placeholder():
    spec = pv.GitOpsSpec(repo_url="https://git.example.test/infra.git", revision="v1.2.3", path="deploy/gitops")
    app = pv.root_application(spec)
    assert app["spec"]["source"]["path"] == "deploy/gitops/root"
    (patch,) = app["spec"]["source"]["kustomize"]["patches"]
    appset = next(d for ds in gitops_docs("root").values() for d in ds if d.get("kind") == "ApplicationSet")
    assert patch["target"]["name"] == appset["metadata"]["name"]
    out = apply_patch_ops(appset, json.loads(patch["patch"]))
    text = json.dumps(out)
    assert "git.invalid" not in text, "a placeholder is left"
    assert out["spec"]["generators"][0]["git"] == {"repoURL": spec.repo_url, "revision": "v1.2.3",
                                                   "directories": [{"path": "deploy/gitops/apps/*"}]}
    assert (out["spec"]["template"]["spec"]["source"]["repoURL"],
            out["spec"]["template"]["spec"]["source"]["targetRevision"]) == (spec.repo_url, "v1.2.3")
    with pytest.raises(KeyError):
        apply_patch_ops(appset, [{"op": "replace", "path": "/spec/nothere", "value": 1}])
    assert "finalizers" not in pv.root_application(dataclasses.replace(spec, cascade=False))["metadata"]
    for bad in (dict(path="/abs"), dict(path="a/../b"), dict(revision=""), dict(repo_url="has space")):
        with pytest.raises(ValueError):
            dataclasses.replace(spec, **bad)
