"""The platform's NetworkPolicies (components/render/platform/network_policies.py) against what the charts really run.

``unit``: the renderer's shape, and the evaluator (tests/support/netpol.py)
on small cases, including that it denies when a policy is missing.
``validators``: the pinned charts in ``$MICROCLOUD_CHART_DIR`` rendered with
our values (``helm template``, skipped by name without helm or a chart); their
pods and Services, plus the pods operators and Longhorn make at run time
(``RUNTIME_PODS``), evaluated under our policies and the charts' own:

- every Service port the charts expose is in ``NEEDED`` (each client that
  must reach it is admitted) or in ``CLOSED`` (with the reason nobody needs it),
  so a chart upgrade that adds a port fails here until someone decides;
- Prometheus reaches every endpoint of every ServiceMonitor the charts make;
- the API server reaches every webhook the charts (and Longhorn at run time) register;
- ``DENIED``: a pod in an app namespace cannot reach Longhorn's manager API, Argo CD's repo-server and redis,
  Alertmanager, Prometheus, ... and dropping one of our policies makes the check fail.

The server-side validation of every policy is tests/k8s/test_network_policies_api.py.
"""

from __future__ import annotations

import dataclasses
import functools

import pytest

from components.render import platform as pv
from components.render.platform.network_policies import NAMESPACE_LABEL, POLICY_PREFIX
from support.netpol import External, Pod, Port, allowed, backends, helm_bin, helm_template, pods_of, service_ports
from support.platform_render import CHART_DIR, CONFIGS, chart_values

unit = pytest.mark.unit
validators = pytest.mark.validators

SPEC = pv.NetworkPolicySpec(argocd=True, nfs_provisioner=True)

# ------------------------------------------------------------------ unit: the renderer


@unit
def test_every_owned_namespace_denies_ingress_and_kube_system_is_not_denied_as_a_whole():
    pols = pv.all_network_policies(SPEC)
    names = [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in pols]
    assert len(names) == len(set(names))
    for ns in ("longhorn-system", "monitoring", "argocd"):
        deny = [p for p in pols if p["metadata"]["namespace"] == ns and p["spec"]["podSelector"] == {}
                and "ingress" not in p["spec"]]
        assert [d["spec"]["policyTypes"] for d in deny] == [["Ingress"]], ns
    # K3s' own pods (CoreDNS, metrics-server) stay as K3s made them: only ours are selected there.
    for p in pols:
        assert p["metadata"]["name"].startswith(POLICY_PREFIX)
        assert "Egress" not in p["spec"]["policyTypes"]
        if p["metadata"]["namespace"] == "kube-system":
            assert p["spec"]["podSelector"]["matchLabels"], p["metadata"]["name"]
    without = pv.network_policies(pv.NetworkPolicySpec(argocd=False, nfs_provisioner=False))
    assert set(without) == {"traefik", "sealed-secrets", "longhorn", "monitoring"}
    assert set(pv.network_policies(SPEC)) == set(without) | {"argocd", "nfs-provisioner"}
    with pytest.raises(ValueError, match="kube-system"):
        pv.NetworkPolicySpec(monitoring_namespace="kube-system")


@unit
def test_the_charts_own_policies_are_set_on_purpose():
    lh = pv.longhorn_values(pv.LonghornSpec(replica_count=1, reclaim_policy="Delete", allow_uninstall=True))
    assert lh["networkPolicies"] == {"restrictInternalTraffic": True}
    argo = pv.ArgoCdSpec(domain="example.test", keep_crds=False)
    assert pv.argocd_values(argo)["global"]["networkPolicy"] == {"create": False}
    assert pv.argocd_values(dataclasses.replace(argo, own_network_policies=False))["global"]["networkPolicy"] == {"create": True}


# ------------------------------------------------------------------ unit: the evaluator can say no


def _np(ns, name, pod_selector, ingress=None, types=("Ingress",), egress=None):
    spec = {"podSelector": pod_selector, "policyTypes": list(types)}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return {"metadata": {"namespace": ns, "name": name}, "spec": spec}


WEB = Pod("web", "shop", {"app": "web"}, (Port(8080, name="http"), Port(9090, name="metrics")))
DB = Pod("db", "shop", {"app": "db"}, (Port(5432, name="pg"),))
MON = Pod("prom", "monitoring", {"app": "prometheus"})
EVIL = Pod("evil", "tenant", {"app": "web"})
NODE = External("node", "10.42.1.0")


@unit
def test_evaluator_semantics():
    assert allowed([], EVIL, DB, 5432)  # no policy: not isolated
    deny = _np("shop", "deny", {})
    assert not allowed([deny], EVIL, DB, 5432) and not allowed([deny], WEB, DB, 5432) and not allowed([deny], NODE, DB, 5432)
    # podSelector alone: the policy's own namespace only (EVIL has the same labels in another namespace).
    from_web = _np("shop", "db", {"matchLabels": {"app": "db"}}, [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                                                                   "ports": [{"port": "pg"}]}])
    assert allowed([deny, from_web], WEB, DB, 5432) and not allowed([deny, from_web], EVIL, DB, 5432)
    # namespaceSelector AND podSelector in one peer; as two peers they are OR.
    both = {"namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: "monitoring"}}, "podSelector": {"matchLabels": {"app": "prometheus"}}}
    scrape = _np("shop", "scrape", {}, [{"from": [both], "ports": [{"port": "metrics"}]}])
    assert allowed([deny, scrape], MON, WEB, 9090) and not allowed([deny, scrape], MON, WEB, 8080)
    assert not allowed([deny, scrape], EVIL, WEB, 9090)
    split = _np("shop", "scrape", {}, [{"from": [{"namespaceSelector": both["namespaceSelector"]},
                                                  {"podSelector": {"matchLabels": {"app": "web"}}}]}])
    assert allowed([deny, split], MON, DB, 5432) and allowed([deny, split], WEB, DB, 5432)
    assert not allowed([deny, split], EVIL, DB, 5432)
    # A named port is the destination's: DB has no "metrics" port.
    assert not allowed([deny, scrape], MON, DB, 5432)
    # Ports alone: any source, pods and addresses alike; ipBlock: addresses only.
    open_http = _np("shop", "http", {"matchLabels": {"app": "web"}}, [{"ports": [{"port": 8080, "protocol": "TCP"}]}])
    assert allowed([deny, open_http], EVIL, WEB, 8080) and allowed([deny, open_http], NODE, WEB, 8080)
    assert not allowed([deny, open_http], EVIL, WEB, 9090)
    block = _np("shop", "lb", {}, [{"from": [{"ipBlock": {"cidr": "10.42.0.0/16", "except": ["10.42.9.0/24"]}}]}])
    assert allowed([deny, block], NODE, DB, 5432)
    assert not allowed([deny, block], External("x", "10.42.9.7"), DB, 5432) and not allowed([deny, block], EVIL, DB, 5432)
    # UDP is not TCP; endPort is a range.
    udp = _np("shop", "udp", {}, [{"ports": [{"port": 5432, "protocol": "UDP"}]}])
    assert not allowed([deny, udp], EVIL, DB, 5432)
    rng = _np("shop", "rng", {}, [{"ports": [{"port": 8000, "endPort": 8100}]}])
    assert allowed([deny, rng], EVIL, WEB, 8080) and not allowed([deny, rng], EVIL, WEB, 9090)
    # matchExpressions.
    expr = _np("shop", "db", {"matchExpressions": [{"key": "app", "operator": "In", "values": ["db"]}]}, [
        {"from": [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}}]}])
    assert not allowed([expr], WEB, DB, 5432) and allowed([expr], WEB, WEB, 8080)
    assert allowed([expr], Pod("job", "shop", {"job": "x"}), DB, 5432)
    # Egress of the source counts too.
    no_egress = _np("tenant", "out", {}, types=("Egress",), egress=[])
    assert not allowed([no_egress], EVIL, DB, 5432)
    dns_only = _np("tenant", "out", {}, types=("Egress",), egress=[{"ports": [{"port": 53, "protocol": "UDP"}]}])
    assert not allowed([dns_only], EVIL, DB, 5432)


@unit
def test_the_evaluator_denies_when_an_allow_is_missing_and_admits_when_the_deny_is_missing():
    """The renderer's own policies on hand-made pods: drop one, and the verdict changes."""
    pols = pv.all_network_policies(SPEC)
    grafana = Pod("grafana", "monitoring", {"app.kubernetes.io/name": "grafana", "app.kubernetes.io/instance": "kube-prometheus-stack"},
                  (Port(3000, name="grafana"),))
    traefik = Pod("traefik", "kube-system", {"app.kubernetes.io/name": "traefik", "app.kubernetes.io/instance": "traefik-kube-system"})
    app = Pod("app", "example", {"app": "x"})
    assert allowed(pols, traefik, grafana, 3000) and not allowed(pols, app, grafana, 3000)
    no_allow = [p for p in pols if p["metadata"]["name"] != "microcloud-grafana"]
    assert not allowed(no_allow, traefik, grafana, 3000)
    # A pod in argocd that is not Argo CD's own is closed by the namespace's default deny alone.
    no_deny = [p for p in pols if (p["metadata"]["namespace"], p["metadata"]["name"])
               != ("argocd", "microcloud-default-deny-ingress")]
    other = Pod("other", "argocd", {"app": "other"}, (Port(8080, name="http"),))
    assert not allowed(pols, app, other, 8080) and allowed(no_deny, app, other, 8080)


# ------------------------------------------------------------------ validators: the real charts

# chart -> (release, namespace): as components/platform creates them.
RELEASES = {
    "traefik": ("traefik", "kube-system"),
    "sealed-secrets": ("sealed-secrets", "kube-system"),
    "longhorn": ("longhorn", "longhorn-system"),
    "nfs-subdir-external-provisioner": ("nfs-provisioner", "kube-system"),
    "kube-prometheus-stack": ("kube-prometheus-stack", "monitoring"),
    "argo-cd": ("argocd", "argocd"),
}
# What the API server offers on a K3s with kube-prometheus-stack: Argo CD's ServiceMonitors render with it.
API_VERSIONS = ("monitoring.coreos.com/v1",)

# Pods nobody's chart template holds: the operator's Prometheus and Alertmanager, what longhorn-manager
# and its driver deployer make, K3s' CoreDNS, and a tenant's pod.
RUNTIME_PODS = (
    Pod("prometheus", "monitoring",
        {"app.kubernetes.io/name": "prometheus", "operator.prometheus.io/name": "kube-prometheus-stack-prometheus",
         "prometheus": "kube-prometheus-stack-prometheus", "app.kubernetes.io/instance": "kube-prometheus-stack-prometheus"},
        (Port(9090, name="http-web"), Port(8080, name="reloader-web"))),
    Pod("alertmanager", "monitoring",
        {"app.kubernetes.io/name": "alertmanager", "alertmanager": "kube-prometheus-stack-alertmanager",
         "app.kubernetes.io/instance": "kube-prometheus-stack-alertmanager"},
        (Port(9093, name="http-web"), Port(8080, name="reloader-web"), Port(9094, name="mesh-tcp"),
         Port(9094, "UDP", "mesh-udp"))),
    Pod("instance-manager", "longhorn-system", {"longhorn.io/component": "instance-manager"}, (Port(8500), Port(8501))),
    Pod("share-manager", "longhorn-system", {"longhorn.io/component": "share-manager"},
        (Port(2049, name="nfs"), Port(9600, name="share-manager"))),
    Pod("support-bundle-manager", "longhorn-system", {"app": "support-bundle-manager"}, (Port(8080, name="http"),)),
    Pod("longhorn-csi-plugin", "longhorn-system", {"app": "longhorn-csi-plugin"}),
    Pod("coredns", "kube-system", {"k8s-app": "kube-dns"},
        (Port(53, "UDP", "dns"), Port(53, name="dns-tcp"), Port(9153, name="metrics"))),
)
# longhorn-manager labels its own pods once its webhook and recovery backend serve (Longhorn's types.Get*Label).
RUNTIME_LABELS = {("longhorn-system", "longhorn-manager"): {
    "longhorn.io/admission-webhook": "longhorn-admission-webhook",
    "longhorn.io/recovery-backend": "longhorn-recovery-backend",
}}
APP = Pod("app", "example", {"app.kubernetes.io/name": "example"}, (Port(8080, name="http"),))
APISERVER = External("kube-apiserver (a server node's flannel address)", "10.42.0.0")
LB = External("HAProxy on a load balancer", "192.168.122.11")
NODE = External("a node's kernel or a NodePort hop (its flannel address)", "10.42.2.0")


@dataclasses.dataclass
class Cluster:
    pods: list[Pod]
    services: list
    policies: list[dict]       # ours and the charts'
    manifests: list[dict]

    def pod(self, namespace: str, name: str) -> Pod:
        return next(p for p in self.pods if (p.namespace, p.name) == (namespace, name))

    def service(self, key: str):
        return next(sp for sp in self.services if sp.key == key)


@functools.lru_cache(maxsize=1)
def _rendered() -> tuple:
    helm = helm_bin()
    if helm is None:
        pytest.skip("helm is not built (bash .ci/k8s.sh)")
    import tempfile
    from pathlib import Path
    values = chart_values(CONFIGS["dev"])
    out = []
    with tempfile.TemporaryDirectory(prefix="netpol-helm-") as tmp:
        for chart, (release, ns) in RELEASES.items():
            d = CHART_DIR / f"{chart}-{pv.CHARTS[chart].version}"
            if not (d / "Chart.yaml").is_file():
                pytest.skip(f"chart {chart}-{pv.CHARTS[chart].version} is not in {CHART_DIR}; set MICROCLOUD_CHART_DIR")
            for m in helm_template(helm, d, release, ns, values[chart], Path(tmp) / chart, API_VERSIONS):
                m.setdefault("metadata", {}).setdefault("namespace", ns)
                out.append(m)
    return tuple(out)


def cluster(ours: list[dict] | None = None) -> Cluster:
    manifests = list(_rendered())
    pods = []
    for p in pods_of(manifests, ""):
        extra = RUNTIME_LABELS.get((p.namespace, p.name))
        pods.append(dataclasses.replace(p, labels={**p.labels, **extra}) if extra else p)
    pods += RUNTIME_PODS
    pods.append(APP)
    charts_own = [m for m in manifests if m["kind"] == "NetworkPolicy"]
    return Cluster(pods, service_ports(manifests, ""), charts_own + (pv.all_network_policies(SPEC) if ours is None else ours),
                   manifests)


def reach(c: Cluster, src, key: str) -> list[str]:
    """The backends of Service port ``key`` that ``src`` cannot reach (empty: all reachable); AssertionError without backends."""
    sp = c.service(key)
    found = backends(sp, c.pods)
    assert found, f"{key}: no modelled pod behind it (add it to RUNTIME_PODS)"
    return [f"{pod.namespace}/{pod.name}:{port}" for pod, port in found if not allowed(c.policies, src, pod, port, sp.protocol)]


def P(ns: str, name: str):
    return ("pod", ns, name)


# Service port (namespace/service:port-name) -> the clients that must reach it.
NEEDED = {
    "kube-system/traefik:web": [LB, NODE],
    "kube-system/traefik:websecure": [LB, NODE],
    "kube-system/sealed-secrets-controller:http": [APISERVER],  # kubeseal through the API server's proxy
    "argocd/argocd-server:http": [P("kube-system", "traefik")],
    "argocd/argocd-server:https": [P("kube-system", "traefik")],
    "argocd/argocd-repo-server:tcp-repo-server": [P("argocd", f"argocd-{c}") for c in
                                                  ("server", "application-controller", "applicationset-controller",
                                                   "notifications-controller")],
    "argocd/argocd-redis:redis": [P("argocd", f"argocd-{c}") for c in ("server", "repo-server", "application-controller")],
    "monitoring/kube-prometheus-stack-grafana:http-web": [P("kube-system", "traefik")],
    "monitoring/kube-prometheus-stack-prometheus:http-web": [P("monitoring", "kube-prometheus-stack-grafana")],
    "monitoring/kube-prometheus-stack-alertmanager:http-web": [P("monitoring", "prometheus"),
                                                               P("monitoring", "kube-prometheus-stack-grafana")],
    "longhorn-system/longhorn-backend:manager": [P("longhorn-system", n) for n in
                                                 ("longhorn-manager", "longhorn-ui", "longhorn-csi-plugin", "longhorn-driver-deployer")],
    "longhorn-system/longhorn-admission-webhook:admission-webhook": [APISERVER],
    "longhorn-system/longhorn-recovery-backend:recovery-backend": [P("longhorn-system", "share-manager")],
}
# Pod to pod, with no Service: (client, namespace, pod, port, protocol).
POD_FLOWS = [
    (P("longhorn-system", "longhorn-manager"), "longhorn-system", "instance-manager", 8500, "TCP"),
    (P("longhorn-system", "longhorn-manager"), "longhorn-system", "share-manager", 9600, "TCP"),
    (P("longhorn-system", "longhorn-manager"), "longhorn-system", "support-bundle-manager", 8080, "TCP"),
    (NODE, "longhorn-system", "share-manager", 2049, "TCP"),
    (P("monitoring", "alertmanager"), "monitoring", "alertmanager", 9094, "TCP"),
    (P("monitoring", "alertmanager"), "monitoring", "alertmanager", 9094, "UDP"),
]
# Every ServiceMonitor endpoint is needed by Prometheus (computed below); these are scraped that way only.
SCRAPED_ONLY = {
    "argocd/argocd-application-controller-metrics:http-metrics", "argocd/argocd-applicationset-controller-metrics:http-metrics",
    "argocd/argocd-repo-server-metrics:http-metrics", "argocd/argocd-server-metrics:http-metrics",
    "monitoring/kube-prometheus-stack-kube-state-metrics:http", "monitoring/kube-prometheus-stack-operator:http",
    "monitoring/kube-prometheus-stack-prometheus:reloader-web", "monitoring/kube-prometheus-stack-alertmanager:reloader-web",
    "kube-system/kube-prometheus-stack-coredns:http-metrics",
    # host network: no NetworkPolicy applies, the node firewall decides.
    "monitoring/kube-prometheus-stack-prometheus-node-exporter:http-metrics",
}
# Service ports no client needs, and why they stay closed.
CLOSED = {
    "kube-system/sealed-secrets-controller-metrics:metrics": "no ServiceMonitor scrapes it",
    "argocd/argocd-applicationset-controller:http-webhook": "SCM webhooks need an Ingress, which the program does not make",
    "longhorn-system/longhorn-frontend:http": "the UI has no Ingress; kubectl port-forward enters the pod through the kubelet, unfiltered",
}
# (source, Service port) that must be denied.
DENIED = [
    (APP, "longhorn-system/longhorn-backend:manager"),
    (APP, "longhorn-system/longhorn-frontend:http"),
    (LB, "longhorn-system/longhorn-backend:manager"),
    (APP, "argocd/argocd-repo-server:tcp-repo-server"),
    (APP, "argocd/argocd-redis:redis"),
    (APP, "argocd/argocd-server:http"),
    (APP, "argocd/argocd-server-metrics:http-metrics"),
    (APP, "monitoring/kube-prometheus-stack-alertmanager:http-web"),
    (APP, "monitoring/kube-prometheus-stack-prometheus:http-web"),
    (APP, "monitoring/kube-prometheus-stack-grafana:http-web"),
    (APP, "monitoring/kube-prometheus-stack-kube-state-metrics:http"),
    (APP, "kube-system/sealed-secrets-controller-metrics:metrics"),
    (P("monitoring", "kube-prometheus-stack-grafana"), "argocd/argocd-redis:redis"),
    (P("kube-system", "traefik"), "longhorn-system/longhorn-backend:manager"),
]


def _src(c: Cluster, s):
    return c.pod(s[1], s[2]) if isinstance(s, tuple) else s


def _monitor_ports(c: Cluster) -> set[str]:
    """Service ports of every ServiceMonitor endpoint whose Services the charts render."""
    out = set()
    for m in c.manifests:
        if m["kind"] != "ServiceMonitor":
            continue
        spec = m["spec"]
        nss = (spec.get("namespaceSelector") or {}).get("matchNames") or [m["metadata"]["namespace"]]
        for ep in spec.get("endpoints", []):
            for sp in c.services:
                if sp.namespace in nss and sp.name == ep.get("port"):
                    labels = next(x["metadata"].get("labels", {}) for x in c.manifests if x["kind"] == "Service"
                                  and x["metadata"]["name"] == sp.service and x["metadata"]["namespace"] == sp.namespace)
                    if all(labels.get(k) == v for k, v in (spec["selector"].get("matchLabels") or {}).items()):
                        out.add(sp.key)
    return out


@validators
def test_every_service_port_the_charts_expose_is_decided():
    c = cluster()
    scraped = _monitor_ports(c)
    assert scraped >= SCRAPED_ONLY, sorted(SCRAPED_ONLY - scraped)
    keys = {sp.key for sp in c.services}
    decided = set(NEEDED) | set(CLOSED) | scraped
    assert keys - decided == set(), f"Service ports nobody decided on: {sorted(keys - decided)}"
    assert decided - keys == set(), f"decided on Service ports the charts do not expose: {sorted(decided - keys)}"
    assert not set(NEEDED) & set(CLOSED)


@validators
def test_the_clients_that_need_a_service_port_reach_it():
    c = cluster()
    need = {k: list(v) for k, v in NEEDED.items()}
    for key in _monitor_ports(c):
        need.setdefault(key, []).append(P("monitoring", "prometheus"))
    denied = []
    for key, clients in sorted(need.items()):
        for client in clients:
            src = _src(c, client)
            bad = reach(c, src, key)
            if bad:
                denied.append(f"{src.name} -> {key}: {bad}")
    for client, ns, name, port, proto in POD_FLOWS:
        src = _src(c, client)
        if not allowed(c.policies, src, c.pod(ns, name), port, proto):
            denied.append(f"{src.name} -> {ns}/{name}:{port}/{proto}")
    assert not denied, "\n".join(denied)


@validators
def test_the_api_server_reaches_every_webhook():
    c = cluster()
    hooks = []
    for m in c.manifests:
        if m["kind"] in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
            hooks += [w["clientConfig"].get("service") for w in m.get("webhooks", [])]
        if m["kind"] == "CustomResourceDefinition":
            conv = (m["spec"].get("conversion") or {})
            if conv.get("strategy") == "Webhook":
                hooks.append(conv["webhook"]["clientConfig"].get("service"))
    # longhorn-manager registers its own webhook configurations at run time, on this Service.
    hooks.append({"namespace": "longhorn-system", "name": "longhorn-admission-webhook", "port": 9502})
    hooks = [h for h in hooks if h]
    assert hooks
    for h in hooks:
        sp = next(s for s in c.services if (s.namespace, s.service) == (h["namespace"], h["name"])
                  and s.port == h.get("port", 443))
        assert not reach(c, APISERVER, sp.key), sp.key


@validators
def test_what_must_be_denied_is_denied():
    c = cluster()
    admitted = []
    for s, key in DENIED:
        src = _src(c, s)
        sp = c.service(key)
        reached = [f"{p.namespace}/{p.name}" for p, port in backends(sp, c.pods) if allowed(c.policies, src, p, port, sp.protocol)]
        if reached:
            admitted.append(f"{src.name} -> {key}: {reached}")
    assert not admitted, "\n".join(admitted)
    # Traefik's own metrics and ping ports, and Longhorn's instance managers, pod to pod.
    traefik = c.pod("kube-system", "traefik")
    for port in (8080, 9100):
        assert not allowed(c.policies, APP, traefik, port)
    for name, port in (("instance-manager", 8500), ("share-manager", 9600), ("support-bundle-manager", 8080)):
        assert not allowed(c.policies, APP, c.pod("longhorn-system", name), port), name
        assert not allowed(c.policies, c.pod("longhorn-system", "longhorn-ui"), c.pod("longhorn-system", name), port), name
    assert not allowed(c.policies, APP, c.pod("monitoring", "alertmanager"), 9094, "UDP")


@validators
def test_dns_stays_open_to_every_platform_pod():
    c = cluster()
    dns = c.pod("kube-system", "coredns")
    for pod in c.pods:
        assert allowed(c.policies, pod, dns, 53, "UDP") and allowed(c.policies, pod, dns, 53), f"{pod.namespace}/{pod.name}"


@validators
def test_the_check_fails_without_our_policies():
    """Without the program's policies the chart-only cluster admits what DENIED forbids; dropping one allow breaks a needed flow."""
    # The hole the issue names: with no policy at all, every pod reaches Longhorn's manager API.
    flat = cluster(ours=[])
    flat.policies = []
    assert not reach(flat, APP, "longhorn-system/longhorn-backend:manager")
    bare = cluster(ours=[])
    assert allowed(bare.policies, APP, bare.pod("monitoring", "alertmanager"), 9093)
    assert allowed(bare.policies, APP, bare.pod("longhorn-system", "longhorn-ui"), 8000)
    assert allowed(bare.policies, APP, bare.pod("argocd", "argocd-redis"), 6379)
    ours = pv.all_network_policies(SPEC)
    no_grafana = cluster(ours=[p for p in ours if p["metadata"]["name"] != "microcloud-grafana"])
    assert reach(no_grafana, no_grafana.pod("kube-system", "traefik"), "monitoring/kube-prometheus-stack-grafana:http-web")
    no_scrape = cluster(ours=[p for p in ours if p["metadata"]["name"] != "microcloud-argocd-metrics"])
    assert reach(no_scrape, no_scrape.pod("monitoring", "prometheus"), "argocd/argocd-server-metrics:http-metrics")
