"""The test Kubernetes API itself (tests/k8s/cluster.py): what the platform
tier will rely on when it deploys charts to it.

Needs the binaries of `bash .ci/k8s.sh` (skips, naming it, without them).
Every test works in a namespace of its own.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess

import pytest
import yaml

from .cluster import NODE_IPS, POD_CIDR, SERVICE_CIDR, pin, wait_for

pytestmark = pytest.mark.k8s

K8S_VERSION = "v" + pin("K8S_VERSION")  # charts check what /version says
IMAGE = "microcloud-test/none:0"  # kwok runs no container: never pulled


def deployment(name: str, replicas: int, *, host_network: bool = False) -> dict:
    labels = {"app": name}
    pod_spec: dict = {"containers": [{"name": "main", "image": IMAGE, "ports": [{"containerPort": 8080}]}]}
    if host_network:
        pod_spec["hostNetwork"] = True
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                # One replica a node, so that a rollout shows all three nodes schedulable.
                "topologySpreadConstraints": [{
                    "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": labels},
                }],
                **pod_spec,
            }},
        },
    }


def rolled_out(cluster, ns: str, name: str, replicas: int, timeout: float = 60) -> dict:
    """The Deployment once Available with every replica ready; TimeoutError with its status and the logs."""
    path = f"/apis/apps/v1/namespaces/{ns}/deployments/{name}"

    def done():
        d = cluster.get(path)
        st = d.get("status", {})
        available = any(c["type"] == "Available" and c["status"] == "True" for c in st.get("conditions", []))
        return d if available and st.get("readyReplicas") == replicas == st.get("updatedReplicas") else None

    try:
        return wait_for(done, timeout, f"deployment {ns}/{name} rolled out")
    except TimeoutError as err:
        status = cluster.get(path).get("status")
        pods = cluster.get(f"/api/v1/namespaces/{ns}/pods").get("items", [])
        phases = {p["metadata"]["name"]: (p["status"].get("phase"), p["spec"].get("nodeName")) for p in pods}
        raise AssertionError(f"{err}\nstatus: {status}\npods: {phases}\n{cluster.log_tails()}") from None


def test_version_is_the_pinned_release(k8s_cluster):
    # The -X gitVersion ldflag of .ci/k8s.sh: without it /version says v0.0.0
    # and charts with a kubeVersion constraint refuse to render.
    assert k8s_cluster.get("/version")["gitVersion"] == K8S_VERSION
    assert k8s_cluster.raw("GET", "/readyz")[0] == 200


def test_deployment_rolls_out_on_the_kwok_nodes(k8s_cluster, k8s_namespace):
    ns = k8s_namespace
    k8s_cluster.create(f"/apis/apps/v1/namespaces/{ns}/deployments", deployment("web", 3))
    rolled_out(k8s_cluster, ns, "web", 3)

    pods = k8s_cluster.get(f"/api/v1/namespaces/{ns}/pods", query={"labelSelector": "app=web"})["items"]
    assert sorted(p["spec"]["nodeName"] for p in pods) == sorted(NODE_IPS)
    for p in pods:
        assert p["status"]["phase"] == "Running"
        assert ipaddress.ip_address(p["status"]["podIP"]) in ipaddress.ip_network(POD_CIDR, strict=False)


def test_nodeport_service_gets_a_port_and_endpoints(k8s_cluster, k8s_namespace):
    ns = k8s_namespace
    # Host-network pods: their endpoints carry the node's address, which the
    # API rejects when it is loopback (why the kwok nodes have TEST-NET ones).
    k8s_cluster.create(f"/apis/apps/v1/namespaces/{ns}/deployments", deployment("ingress", 3, host_network=True))
    svc = k8s_cluster.create(f"/api/v1/namespaces/{ns}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "ingress"},
        "spec": {"type": "NodePort", "selector": {"app": "ingress"},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    })
    port = svc["spec"]["ports"][0]
    assert 30000 <= port["nodePort"] <= 32767, port
    assert ipaddress.ip_address(svc["spec"]["clusterIP"]) in ipaddress.ip_network(SERVICE_CIDR)

    rolled_out(k8s_cluster, ns, "ingress", 3)

    def ready_addresses():
        slices = k8s_cluster.get(f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
                                 query={"labelSelector": "kubernetes.io/service-name=ingress"})["items"]
        addrs = sorted(a for s in slices for e in s.get("endpoints") or []
                       if (e.get("conditions") or {}).get("ready") for a in e["addresses"])
        return addrs if len(addrs) == 3 else None

    assert wait_for(ready_addresses, 30, "3 ready endpoints of service ingress") == sorted(NODE_IPS.values())
    # The port stays what the API allocated (nothing else may take it).
    again = k8s_cluster.get(f"/api/v1/namespaces/{ns}/services/ingress")
    assert again["spec"]["ports"][0]["nodePort"] == port["nodePort"]


def test_server_side_dry_run_rejects_a_bad_object_and_stores_nothing(k8s_cluster, k8s_namespace):
    ns = k8s_namespace
    path = f"/apis/apps/v1/namespaces/{ns}/deployments"
    dry = {"dryRun": "All", "fieldValidation": "Strict"}

    # Invalid: the selector does not match the template's labels.
    bad = deployment("bad", 1)
    bad["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    status, body = k8s_cluster.raw("POST", path, bad, query=dry)
    assert status == 422, body
    assert body["reason"] == "Invalid"
    assert "spec.template.metadata.labels" in body["message"], body["message"]

    # A field the schema does not know (a typo in something we render) fails under Strict validation.
    typo = deployment("typo", 1)
    typo["spec"]["replica"] = 2
    status, body = k8s_cluster.raw("POST", path, typo, query=dry)
    assert status == 400, body
    assert 'unknown field "spec.replica"' in body["message"], body["message"]

    # A good object passes the dry run and is not stored.
    status, body = k8s_cluster.raw("POST", path, deployment("good", 1), query=dry)
    assert status == 201, body
    assert k8s_cluster.raw("GET", f"{path}/good")[0] == 404


def test_helm_template_of_a_local_chart(k8s_cluster, k8s_bin, k8s_namespace, tmp_path):
    chart = tmp_path / "tiny"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v2", "name": "tiny", "version": "0.1.0",
        # What the pinned charts do: refuse a cluster whose version they do not know.
        "kubeVersion": ">=1.33.0-0 <1.34.0-0",
    }))
    (chart / "values.yaml").write_text(yaml.safe_dump({"greeting": "hello", "replicas": 1}))
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-tiny\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
        "  kubeVersion: {{ .Capabilities.KubeVersion.Version | quote }}\n"
    )
    home = tmp_path / "helm-home"
    env = {**os.environ, "HOME": str(home), "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data"),
           "KUBECONFIG": str(k8s_cluster.kubeconfig)}

    def helm(*args: str) -> str:
        res = subprocess.run([str(k8s_bin / "helm"), *args], capture_output=True, text=True, env=env,
                             timeout=60, check=False)
        assert res.returncode == 0, f"helm {' '.join(args)}: {res.stderr}"
        return res.stdout

    # Offline: helm's built-in Kubernetes version is the minor it was built against (the -X k8sVersion ldflags).
    docs = [d for d in yaml.safe_load_all(helm("template", "demo", str(chart), "--set", "greeting=hi")) if d]
    assert docs == [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "demo-tiny"},
                     "data": {"greeting": "hi", "kubeVersion": docs[0]["data"]["kubeVersion"]}}]
    assert docs[0]["data"]["kubeVersion"].startswith("v1.33"), docs[0]

    # Against the live API server: its /version satisfies the chart's kubeVersion,
    # and --validate checks the objects against the server's schema.
    out = helm("template", "demo", str(chart), "--validate", "--namespace", k8s_namespace)
    assert f'kubeVersion: "{K8S_VERSION}"' in out, out
