"""The platform's NetworkPolicies: ingress denied by default in every namespace the program owns, and the allows each component needs.

K3s enforces NetworkPolicies (its embedded kube-router controller). What the
program owns is isolated for ingress:

- ``monitoring``, ``argocd``, ``longhorn-system`` (the program creates them): a
  default-deny of all ingress, then one allow per flow a component needs.
- ``kube-system`` is K3s' own (CoreDNS, metrics-server): no namespace-wide
  deny there, but a policy per pod the program puts there (Traefik, the Sealed
  Secrets controller, the NFS provisioner), which isolates that pod alone.

Longhorn's chart has its own policies (``networkPolicies.restrictInternalTraffic``:
the manager API on 9500 only from Longhorn's components, its webhook ports
open); they are kept (components/render/platform/longhorn.py) and the
namespace's default-deny closes what they do not select (the UI, the CSI
pods). Argo CD's chart policies are switched off (argocd.py): its server
policy admits every source on every port and its metrics every namespace;
these are narrower.

Sources that are not pods: on K3s' flannel, traffic from a node (the API
server calling a webhook or proxying kubeseal, the kernel mounting an RWX
volume, a NodePort hop from another node) reaches a pod on another node from
that node's flannel address, inside the pod network, so no ipBlock can tell
it from a pod. Those ports are opened to any source, port by port (as
Longhorn's chart does for its webhook); the node firewall decides who reaches
the nodes. A pod always accepts its own node (kubelet probes), and
``kubectl port-forward`` enters the pod's network namespace unfiltered.

Egress is not restricted: the K3s API server, the Git repositories Argo CD
follows, Longhorn's backup targets and the VMs Prometheus scrapes are host
addresses (masqueraded as above) or site-specific; DNS to kube-system stays
open because nothing here selects egress.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .argocd import ARGOCD_NAMESPACE
from .longhorn import LONGHORN_NAMESPACE
from .monitoring import MONITORING_NAMESPACE
from .sealed_secrets import SEALED_SECRETS_NAMESPACE
from .traefik import TRAEFIK_NAMESPACE

NAMESPACE_LABEL = "kubernetes.io/metadata.name"  # the API server sets it on every namespace
POLICY_PREFIX = "microcloud-"
# kube-prometheus-stack's pods' ports Prometheus scrapes: Grafana 3000, kube-state-metrics and the
# operator 8080 (also the config reloaders of Prometheus and Alertmanager), Prometheus 9090, Alertmanager 9093.
MONITORING_SCRAPE_PORTS = (3000, 8080, 9090, 9093)
ALERTMANAGER_MESH_PORT = 9094
GRAFANA_PORT = 3000
PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
SHARE_MANAGER_NFS_PORT = 2049
LONGHORN_MANAGER_PODS = {"matchLabels": {"app": "longhorn-manager"}}


@dataclass(frozen=True)
class NetworkPolicySpec:
    """Which addons run and under which release names (their pods' labels come from them).

    ``argocd``/``nfs_provisioner``: their policies only when they are installed.
    The release names are those of components/platform (``Platform._chart``).
    """

    argocd: bool = True
    nfs_provisioner: bool = False
    traefik_namespace: str = TRAEFIK_NAMESPACE
    traefik_release: str = "traefik"
    sealed_secrets_namespace: str = SEALED_SECRETS_NAMESPACE
    sealed_secrets_release: str = "sealed-secrets"
    nfs_namespace: str = "kube-system"
    nfs_release: str = "nfs-provisioner"
    monitoring_namespace: str = MONITORING_NAMESPACE
    monitoring_fullname: str = "kube-prometheus-stack"
    argocd_namespace: str = ARGOCD_NAMESPACE
    argocd_release: str = "argocd"
    longhorn_namespace: str = LONGHORN_NAMESPACE

    def __post_init__(self) -> None:
        owned = self.owned_namespaces()
        if {self.traefik_namespace, self.sealed_secrets_namespace} & set(owned):
            raise ValueError("network policies: Traefik and Sealed Secrets live in kube-system, not in a namespace the program denies")

    def owned_namespaces(self) -> tuple[str, ...]:
        """The namespaces the program creates, denied as a whole."""
        out = [self.longhorn_namespace, self.monitoring_namespace]
        if self.argocd:
            out.append(self.argocd_namespace)
        return tuple(out)


# ------------------------------------------------------------------ the pods, by the labels their charts give them


def traefik_pods(spec: NetworkPolicySpec) -> dict:
    # traefik 41.x: instance is "<release>-<namespace>".
    return {"matchLabels": {"app.kubernetes.io/name": "traefik",
                            "app.kubernetes.io/instance": f"{spec.traefik_release}-{spec.traefik_namespace}"}}


def grafana_pods(spec: NetworkPolicySpec) -> dict:
    return {"matchLabels": {"app.kubernetes.io/name": "grafana", "app.kubernetes.io/instance": spec.monitoring_fullname}}


def prometheus_pods(spec: NetworkPolicySpec) -> dict:
    # The operator's labels on the Prometheus pods (the chart's Service selects them so).
    return {"matchLabels": {"app.kubernetes.io/name": "prometheus",
                            "operator.prometheus.io/name": f"{spec.monitoring_fullname}-prometheus"}}


def alertmanager_pods(spec: NetworkPolicySpec) -> dict:
    return {"matchLabels": {"app.kubernetes.io/name": "alertmanager",
                            "alertmanager": f"{spec.monitoring_fullname}-alertmanager"}}


def argocd_pods(spec: NetworkPolicySpec, component: str) -> dict:
    return {"matchLabels": {"app.kubernetes.io/name": f"argocd-{component}",
                            "app.kubernetes.io/instance": spec.argocd_release}}


def _in(namespace: str, pods: dict) -> dict:
    """A peer: these pods in that namespace."""
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: namespace}}, "podSelector": pods}


def _ports(*ports: int | str, protocol: str = "TCP") -> list[dict]:
    return [{"protocol": protocol, "port": p} for p in ports]


def _policy(namespace: str, name: str, pods: dict, ingress: Optional[list[dict]]) -> dict:
    """An ingress policy: ``ingress`` None or [] admits nothing to ``pods`` (their default deny)."""
    spec: dict = {"podSelector": pods, "policyTypes": ["Ingress"]}
    if ingress:
        spec["ingress"] = ingress
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": POLICY_PREFIX + name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/managed-by": "microcloud"}},
        "spec": spec,
    }


def _default_deny(namespace: str) -> dict:
    return _policy(namespace, "default-deny-ingress", {}, None)


def _any_source(*ports: int | str) -> dict:
    """A rule open to every source on ``ports`` only: callers that are nodes (see the module doc)."""
    return {"ports": _ports(*ports)}


def network_policies(spec: NetworkPolicySpec) -> dict[str, list[dict]]:
    """Every NetworkPolicy the program creates, by the addon whose pods they isolate (stable order).

    Keys: ``traefik``, ``sealed-secrets``, ``nfs-provisioner`` (with it), ``longhorn``,
    ``monitoring``, ``argocd`` (with it); the component creates each addon's before its chart.
    """
    mon, lh, argo_ns = spec.monitoring_namespace, spec.longhorn_namespace, spec.argocd_namespace
    prometheus, grafana = prometheus_pods(spec), grafana_pods(spec)
    traefik = _in(spec.traefik_namespace, traefik_pods(spec))
    out: dict[str, list[dict]] = {}

    # kube-system: only the program's pods, each isolated with what it serves.
    out["traefik"] = [_policy(spec.traefik_namespace, "traefik", traefik_pods(spec), [
        # HAProxy on the load balancers through the NodePorts; a hop from another node arrives from its flannel address.
        _any_source("web", "websecure"),
    ])]
    sealed = {"matchLabels": {"app.kubernetes.io/name": "sealed-secrets",
                              "app.kubernetes.io/instance": spec.sealed_secrets_release}}
    out["sealed-secrets"] = [_policy(spec.sealed_secrets_namespace, "sealed-secrets", sealed, [
        # kubeseal --fetch-cert and --validate come through the API server's service proxy.
        _any_source("http"),
    ])]
    if spec.nfs_provisioner:
        nfs = {"matchLabels": {"app": "nfs-subdir-external-provisioner", "release": spec.nfs_release}}
        # It serves nothing: it only calls the API server and mounts the export.
        out["nfs-provisioner"] = [_policy(spec.nfs_namespace, "nfs-provisioner", nfs, None)]

    # longhorn-system: its chart's own policies, and what they leave open closed.
    share_manager = {"matchLabels": {"longhorn.io/component": "share-manager"}}
    out["longhorn"] = [
        _default_deny(lh),
        # The manager drives every pod it makes (share managers' gRPC, support bundles, backing images);
        # its chart's policies leave those open because they deny nothing namespace-wide.
        _policy(lh, "from-longhorn-manager", {}, [{"from": [{"podSelector": LONGHORN_MANAGER_PODS}]}]),
        # An RWX volume is mounted by the kernel of the workload's node.
        _policy(lh, "share-manager", share_manager, [_any_source(SHARE_MANAGER_NFS_PORT)]),
    ]

    alertmanager = alertmanager_pods(spec)
    out["monitoring"] = [
        _default_deny(mon),
        _policy(mon, "prometheus-scrape", {}, [{"from": [{"podSelector": prometheus}], "ports": _ports(*MONITORING_SCRAPE_PORTS)}]),
        _policy(mon, "grafana", grafana, [{"from": [traefik], "ports": _ports(GRAFANA_PORT)}]),
        # Grafana's Prometheus datasource.
        _policy(mon, "prometheus", prometheus, [{"from": [{"podSelector": grafana}], "ports": _ports(PROMETHEUS_PORT)}]),
        _policy(mon, "alertmanager", alertmanager, [
            # Grafana's Alertmanager datasource (Prometheus sends alerts through prometheus-scrape's 9093).
            {"from": [{"podSelector": grafana}], "ports": _ports(ALERTMANAGER_PORT)},
            # The replicas' gossip.
            {"from": [{"podSelector": alertmanager}],
             "ports": _ports(ALERTMANAGER_MESH_PORT) + _ports(ALERTMANAGER_MESH_PORT, protocol="UDP")},
        ]),
    ]

    if spec.argocd:
        def argo(*components: str) -> list[dict]:
            return [{"podSelector": argocd_pods(spec, c)} for c in components]

        out["argocd"] = [
            _default_deny(argo_ns),
            _policy(argo_ns, "argocd-server", argocd_pods(spec, "server"), [{"from": [traefik], "ports": _ports("server")}]),
            _policy(argo_ns, "argocd-repo-server", argocd_pods(spec, "repo-server"), [{
                "from": argo("server", "application-controller", "applicationset-controller", "notifications-controller"),
                "ports": _ports("repo-server"),
            }]),
            _policy(argo_ns, "argocd-redis", argocd_pods(spec, "redis"), [{
                "from": argo("server", "repo-server", "application-controller"), "ports": _ports("redis"),
            }]),
            # Every Argo CD container names its metrics port "metrics"; its ServiceMonitors point there.
            _policy(argo_ns, "argocd-metrics", {"matchLabels": {"app.kubernetes.io/instance": spec.argocd_release}},
                    [{"from": [_in(mon, prometheus)], "ports": _ports("metrics")}]),
        ]
    return out


def all_network_policies(spec: NetworkPolicySpec) -> list[dict]:
    """``network_policies`` as one list."""
    return [pol for pols in network_policies(spec).values() for pol in pols]
