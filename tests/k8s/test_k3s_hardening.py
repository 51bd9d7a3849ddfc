"""The hardening profile's API server files, loaded by the real kube-apiserver with the flags K3s derives from config.yaml.

A K3s server's config.yaml (components/render/k3s.py, dev's bootstrap
server with the stack's own k3s.hardening) is turned into kube-apiserver
flags the way K3s does it (``kube-apiserver-arg`` entries as ``--name=value``,
``secrets-encryption`` as ``--encryption-provider-config`` of the cred file;
render/k3s_hardening.py: apiserver_flags), every path moved under a scratch
root where the install script's files are written. Then, against etcd and
that kube-apiserver on loopback:

- Pod Security: a privileged pod is refused in a workload namespace, admitted
  in a namespace the stack exempts; a baseline pod that breaks ``restricted``
  is admitted with the warning;
- audit: the log gets the requests' metadata, never a Secret's value;
- encryption: a Secret is stored in etcd as ``k8s:enc:aescbc:v1:<key name>:``
  (read from etcd itself, not through the API), and reads back in clear
  through the API.

What stays unproven here: that K3s itself passes exactly these flags (its
source does; no K3s runs on this machine).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import urllib.error
import urllib.request
import uuid

import pytest
import yaml

from components import specs
from components.render import k3s, k3s_hardening as hd
from components.render import platform as pv
from support.k3s_pki import ENCRYPTION_KEY, encryption_config
from support.platform_render import CHART_DIR, CONFIGS, chart_values

from .cluster import Cluster, wait_for

pytestmark = pytest.mark.k8s

PRIVILEGED = {"privileged": True}
SECRET_VALUE = "microcloud-hardening-test-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def hardened(k8s_bin, tmp_path_factory):
    cfg = CONFIGS["dev"]
    first = specs.k3s_bootstrap_server(cfg)
    node = specs.k3s_node_spec(cfg, first, bootstrap=True)
    config = k3s.k3s_config(node)
    root = tmp_path_factory.mktemp("k3s-root")
    # What the install script writes on a server (its own tests check that it does).
    for path, text in hd.server_files(node.hardening, node.data_dir).items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(0o600)
    enc = root / hd.cred_path(node.data_dir, hd.ENCRYPTION_CONFIG).lstrip("/")
    enc.parent.mkdir(parents=True)
    enc.write_text(encryption_config())
    (root / hd.server_path(node.data_dir, "logs").lstrip("/")).mkdir(mode=0o700)
    flags = hd.apiserver_flags(config, node.data_dir, str(root))
    assert any(f.startswith("--encryption-provider-config=") for f in flags), flags
    with Cluster(k8s_bin, workdir=tmp_path_factory.mktemp("k8s-hardened"), keep_workdir=True,
                 apiserver_args=tuple(flags), with_controllers=False) as cluster:
        yield cluster, root, node, cfg


def _namespace(cluster: Cluster, name: str) -> str:
    cluster.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    # No controller-manager here to make it: the ServiceAccount admission needs it for a pod.
    cluster.create(f"/api/v1/namespaces/{name}/serviceaccounts",
                   {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}})
    return name


def _pod(name: str, security: dict | None = None) -> dict:
    container = {"name": "c", "image": "registry.invalid/pause:1"}
    if security is not None:
        container["securityContext"] = security
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": [container]}}


def _create_with_headers(cluster: Cluster, path: str, obj: dict) -> tuple[int, dict, dict]:
    """(status, body, headers) of a create as the admin: the warnings come back as Warning headers."""
    req = urllib.request.Request(cluster.server + path, data=json.dumps(obj).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Accept": "application/json"})
    ctx: ssl.SSLContext = cluster._ssl()
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            return r.status, json.loads(r.read()), {"warning": r.headers.get_all("Warning") or []}
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}"), {"warning": err.headers.get_all("Warning") or []}


def test_a_privileged_pod_is_refused_in_a_workload_namespace(hardened):
    cluster, *_ = hardened
    ns = _namespace(cluster, "app-" + uuid.uuid4().hex[:6])
    status, body, _ = _create_with_headers(cluster, f"/api/v1/namespaces/{ns}/pods", _pod("root", PRIVILEGED))
    assert status == 403, body
    assert 'violates PodSecurity "baseline:latest"' in body["message"] and "privileged" in body["message"], body


def test_an_exempt_platform_namespace_admits_it(hardened):
    cluster, _, _, cfg = hardened
    exempt = sorted(cfg.k3s.hardening.pod_security.exempt_namespaces)
    assert "longhorn-system" in exempt
    ns = _namespace(cluster, "longhorn-system")
    status, body, _ = _create_with_headers(cluster, f"/api/v1/namespaces/{ns}/pods", _pod("manager", PRIVILEGED))
    assert status == 201, body


def test_a_baseline_pod_is_admitted_with_the_restricted_warning(hardened):
    cluster, *_ = hardened
    ns = _namespace(cluster, "app-" + uuid.uuid4().hex[:6])
    status, body, headers = _create_with_headers(cluster, f"/api/v1/namespaces/{ns}/pods", _pod("plain"))
    assert status == 201, body
    assert any('would violate PodSecurity \\"restricted:latest\\"' in w for w in headers["warning"]), headers


def test_secrets_are_stored_encrypted_in_etcd_and_read_back_in_clear(hardened):
    cluster, *_ = hardened
    ns = _namespace(cluster, "app-" + uuid.uuid4().hex[:6])
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
              "stringData": {"password": SECRET_VALUE}}
    cluster.create(f"/api/v1/namespaces/{ns}/secrets", secret)
    got = cluster.get(f"/api/v1/namespaces/{ns}/secrets/db")
    assert base64.b64decode(got["data"]["password"]).decode() == SECRET_VALUE
    # etcd itself, through its JSON gateway: what a snapshot or a copied disk holds.
    key = f"/registry/secrets/{ns}/db".encode()
    req = urllib.request.Request(f"http://127.0.0.1:{cluster.ports['etcd-client']}/v3/kv/range",
                                 data=json.dumps({"key": base64.b64encode(key).decode()}).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        kvs = json.load(r)["kvs"]
    raw = base64.b64decode(kvs[0]["value"])
    assert raw.startswith(f"k8s:enc:aescbc:v1:{hd.ENCRYPTION_KEY_NAME}:".encode()), raw[:40]
    assert SECRET_VALUE.encode() not in raw and ENCRYPTION_KEY.encode() not in raw
    # A ConfigMap is not encrypted: the check above reads what it claims to read.
    cluster.create(f"/api/v1/namespaces/{ns}/configmaps",
                   {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "plain"}, "data": {"v": SECRET_VALUE}})
    req = urllib.request.Request(f"http://127.0.0.1:{cluster.ports['etcd-client']}/v3/kv/range",
                                 data=json.dumps({"key": base64.b64encode(f"/registry/configmaps/{ns}/plain".encode()).decode()}).encode(),
                                 method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        plain = base64.b64decode(json.load(r)["kvs"][0]["value"])
    assert SECRET_VALUE.encode() in plain


def test_the_audit_log_records_metadata_and_never_a_secret_value(hardened):
    cluster, root, node, _ = hardened
    ns = _namespace(cluster, "app-" + uuid.uuid4().hex[:6])
    cluster.create(f"/api/v1/namespaces/{ns}/secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "audited"},
                                                         "stringData": {"token": SECRET_VALUE}})
    log = root / hd.server_path(node.data_dir, hd.AUDIT_LOG).lstrip("/")

    def events():
        if not log.is_file():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]

    found = wait_for(lambda: [e for e in events() if e.get("verb") == "create" and e.get("objectRef", {}).get("name") == "audited"],
                     30, "the audit event of the Secret's create")
    event = found[0]
    assert event["level"] == "Metadata" and event["objectRef"]["resource"] == "secrets" and event["objectRef"]["namespace"] == ns
    assert "requestObject" not in event and "responseObject" not in event
    assert event["user"]["username"] == "microcloud-test-admin"
    assert SECRET_VALUE not in log.read_text()
    # Probes are not audited (the policy's None rule).
    assert not any(e.get("requestURI", "").startswith("/readyz") for e in events())



# ------------------------------------------------------------------ the platform charts under the enforced level

POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
CHART_NAMESPACES = {
    "traefik": pv.TRAEFIK_NAMESPACE,
    "sealed-secrets": pv.SEALED_SECRETS_NAMESPACE,
    "argo-cd": pv.ARGOCD_NAMESPACE,
    "kube-prometheus-stack": pv.MONITORING_NAMESPACE,
    "longhorn": pv.LONGHORN_NAMESPACE,
    "nfs-subdir-external-provisioner": "kube-system",
}


def _chart_pods(k8s_bin, chart: str, namespace: str, values: dict, tmp_path) -> list[tuple[str, dict]]:
    """(kind/name, pod template) of every workload ``helm template`` renders for the chart with our values."""
    d = CHART_DIR / f"{chart}-{pv.CHARTS[chart].version}"
    if not (d / "Chart.yaml").is_file():
        pytest.skip(f"chart {chart} is not in {CHART_DIR}")
    vf = tmp_path / f"{chart}-values.yaml"
    vf.write_text(yaml.safe_dump(values))
    res = subprocess.run([str(k8s_bin / "helm"), "template", chart, str(d), "--namespace", namespace, "-f", str(vf)],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HELM_CACHE_HOME": str(tmp_path), "HELM_CONFIG_HOME": str(tmp_path),
                              "HELM_DATA_HOME": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    out = []
    for doc in yaml.safe_load_all(res.stdout):
        if doc and doc.get("kind") in POD_KINDS:
            out.append((f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]))
    return out


def _refused(cluster: Cluster, namespace: str, pods: list[tuple[str, dict]]) -> dict[str, str]:
    """kind/name -> Pod Security's refusal, for each pod template dry-run created as a Pod in ``namespace``."""
    refused = {}
    for what, template in pods:
        sa = template["spec"].get("serviceAccountName") or "default"
        status, _ = cluster.raw("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts",
                                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}})
        assert status in (201, 409), (what, status)
        pc = template["spec"].get("priorityClassName")
        if pc and pc not in ("system-node-critical", "system-cluster-critical"):
            status, _ = cluster.raw("POST", "/apis/scheduling.k8s.io/v1/priorityclasses",
                                    {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": pc}, "value": 1000})
            assert status in (201, 409), (what, pc, status)
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"generateName": "probe-", "labels": template.get("metadata", {}).get("labels", {})},
               "spec": template["spec"]}
        status, body = cluster.raw("POST", f"/api/v1/namespaces/{namespace}/pods", pod, query={"dryRun": "All"})
        if status == 403 and "PodSecurity" in str(body.get("message")):
            refused[what] = body["message"]
        else:
            assert status == 201, (what, status, body.get("message"))
    return refused


def test_each_exemption_is_needed_and_every_other_chart_meets_baseline(hardened, k8s_bin, tmp_path):
    """Every chart's pods, dry-run in a namespace that is not exempt: the charts of exempt namespaces that
    need it are refused (the exemption is not idle), all others are admitted at the enforced level."""
    cluster, _, _, cfg = hardened
    exempt = cfg.k3s.hardening.pod_security.exempt_namespaces
    values = chart_values(cfg)
    needs = {}
    for chart, namespace in sorted(CHART_NAMESPACES.items()):
        probe = _namespace(cluster, f"probe-{chart}"[:40].rstrip("-"))
        pods = _chart_pods(k8s_bin, chart, namespace, values[chart], tmp_path)
        assert pods, chart
        needs[chart] = _refused(cluster, probe, pods)
        if namespace not in exempt:
            assert needs[chart] == {}, f"{chart} in {namespace} (not exempt) breaks baseline: {needs[chart]}"
    # The two exemptions the platform's own charts need, and why.
    assert any("DaemonSet/longhorn-manager" == w and "privileged" in m for w, m in needs["longhorn"].items()), needs["longhorn"]
    assert any("node-exporter" in w and "host" in m for w, m in needs["kube-prometheus-stack"].items()), needs["kube-prometheus-stack"]
    # kube-system is exempt for K3s' own add-ons, not for ours: Traefik, Sealed Secrets and the NFS provisioner meet baseline.
    for chart in ("traefik", "sealed-secrets", "nfs-subdir-external-provisioner"):
        assert needs[chart] == {}, (chart, needs[chart])
