"""A small NetworkPolicy evaluator (Kubernetes networking.k8s.io/v1 semantics) and the platform's charts as pods and Services.

Used by tests/test_network_policies.py. There is no CNI here to enforce a
policy, so this decides, per the API's documented semantics, whether one
connection is admitted:

- a pod is isolated for ingress (egress) when a policy in its namespace
  selects it and lists ``Ingress`` (``Egress``) in ``policyTypes`` (absent:
  Ingress, plus Egress when the policy has ``egress`` rules);
- an isolated pod admits a connection when some rule of some policy that
  selects it admits it (policies are additive): the rule's ``ports`` (empty:
  every port; a name is the destination container's port name; ``endPort``
  a range; protocol TCP unless said) and its ``from``/``to`` peers (empty:
  everyone; ``podSelector`` alone: pods of the policy's namespace;
  ``namespaceSelector`` alone: every pod of the matching namespaces; both in
  one peer: both must match; ``ipBlock``: addresses outside the pods);
- a connection needs the destination's ingress and the source's egress.

Namespaces carry ``kubernetes.io/metadata.name`` (the API server sets it);
selectors support ``matchLabels`` and the four ``matchExpressions`` operators.
Sources that are no pod (a node, the API server, a load balancer) are
``External`` addresses and match ``ipBlock`` peers only.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Optional, Union

import yaml

NAMESPACE_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class Port:
    number: int
    protocol: str = "TCP"
    name: str = ""


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: Mapping[str, str]
    ports: tuple[Port, ...] = ()
    host_network: bool = False

    def port(self, ref: Union[int, str], protocol: str = "TCP") -> Optional[int]:
        """The number of a container port given by number or name (None: no such named port)."""
        if isinstance(ref, int) or str(ref).isdigit():
            return int(ref)
        return next((p.number for p in self.ports if p.name == ref and p.protocol == protocol), None)


@dataclass(frozen=True)
class External:
    """A source that is no pod: a node, the API server (host network), a load balancer."""

    name: str
    ip: str


Peer = Union[Pod, External]


# ------------------------------------------------------------------ selectors


def matches(selector: Optional[Mapping], labels: Mapping[str, str]) -> bool:
    """A LabelSelector: None or {} selects everything."""
    if not selector:
        return True
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"unknown selector operator {op}")
    return True


def _types(policy: dict) -> list[str]:
    spec = policy["spec"]
    if "policyTypes" in spec:
        return spec["policyTypes"]
    return ["Ingress", "Egress"] if "egress" in spec else ["Ingress"]


def _selecting(policies: Iterable[dict], pod: Pod, direction: str) -> list[dict]:
    return [p for p in policies if p["metadata"]["namespace"] == pod.namespace
            and direction in _types(p) and matches(p["spec"].get("podSelector"), pod.labels)]


def _peer_matches(peer: dict, policy_ns: str, other: Peer) -> bool:
    if "ipBlock" in peer:
        if not isinstance(other, External):
            return False
        ip = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(e) for e in block.get("except", []))
    if not isinstance(other, Pod):
        return False
    ns_sel, pod_sel = peer.get("namespaceSelector"), peer.get("podSelector")
    if ns_sel is None and pod_sel is None:
        raise ValueError(f"an empty peer {peer}")
    if ns_sel is None:
        in_ns = other.namespace == policy_ns
    else:
        in_ns = matches(ns_sel, {NAMESPACE_LABEL: other.namespace})
    return in_ns and matches(pod_sel, other.labels)


def _port_matches(rule_ports: Optional[list], dst: Pod, port: int, protocol: str) -> bool:
    if not rule_ports:
        return True
    for rp in rule_ports:
        if rp.get("protocol", "TCP") != protocol:
            continue
        if "port" not in rp:
            return True
        number = dst.port(rp["port"], protocol)
        if number is None:
            continue
        if number <= port <= int(rp.get("endPort", number)):
            return True
    return False


def _admits(policies: list[dict], direction: str, peer: Peer, dst: Pod, port: int, protocol: str) -> bool:
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in policies:
        for rule in policy["spec"].get(key) or []:
            peers = rule.get(peers_key)
            if not _port_matches(rule.get("ports"), dst, port, protocol):
                continue
            if not peers or any(_peer_matches(p, policy["metadata"]["namespace"], peer) for p in peers):
                return True
    return False


def allowed(policies: list[dict], src: Peer, dst: Pod, port: int, protocol: str = "TCP") -> bool:
    """Whether ``src`` may open ``port``/``protocol`` on ``dst``."""
    if dst.port(port, protocol) is None:
        raise ValueError(f"{dst.namespace}/{dst.name} has no port {port}")
    if not dst.host_network:
        isolating = _selecting(policies, dst, "Ingress")
        if isolating and not _admits(isolating, "Ingress", src, dst, port, protocol):
            return False
    if isinstance(src, Pod) and not src.host_network:
        isolating = _selecting(policies, src, "Egress")
        if isolating and not _admits(isolating, "Egress", dst, dst, port, protocol):
            return False
    return True


# ------------------------------------------------------------------ manifests -> pods and Services


WORKLOADS = ("Deployment", "DaemonSet", "StatefulSet")


def pods_of(manifests: Iterable[dict], namespace: str) -> list[Pod]:
    """One Pod per workload's pod template (its labels and container ports)."""
    out = []
    for m in manifests:
        if m.get("kind") not in WORKLOADS:
            continue
        tpl = m["spec"]["template"]
        ports = tuple(Port(p["containerPort"], p.get("protocol", "TCP"), p.get("name", ""))
                      for c in tpl["spec"].get("containers", []) for p in c.get("ports", []))
        out.append(Pod(m["metadata"]["name"], m["metadata"].get("namespace") or namespace,
                       dict(tpl["metadata"].get("labels") or {}), ports, bool(tpl["spec"].get("hostNetwork"))))
    return out


@dataclass(frozen=True)
class ServicePort:
    service: str
    namespace: str
    name: str
    port: int
    target: Union[int, str]
    protocol: str
    selector: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.service}:{self.name or self.port}"


def service_ports(manifests: Iterable[dict], namespace: str) -> list[ServicePort]:
    out = []
    for m in manifests:
        if m.get("kind") != "Service":
            continue
        for p in m["spec"].get("ports", []):
            out.append(ServicePort(m["metadata"]["name"], m["metadata"].get("namespace") or namespace, p.get("name", ""),
                                   p["port"], p.get("targetPort", p["port"]), p.get("protocol", "TCP"),
                                   dict(m["spec"].get("selector") or {})))
    return out


def backends(sp: ServicePort, pods: Iterable[Pod]) -> list[tuple[Pod, int]]:
    """The pods behind a Service port, each with the container port the Service forwards to."""
    out = []
    for pod in pods:
        if pod.namespace == sp.namespace and sp.selector and matches({"matchLabels": sp.selector}, pod.labels):
            number = pod.port(sp.target, sp.protocol)
            if number is not None:
                out.append((pod, number))
    return out


# ------------------------------------------------------------------ helm template


def helm_bin() -> Optional[Path]:
    """The helm that .ci/k8s.sh built (the one the k8s tier uses), or one on PATH."""
    for p in sorted((Path.home() / ".cache" / "microcloud-k8s").glob("v*/bin/helm")):
        return p
    import shutil
    found = shutil.which("helm")
    return Path(found) if found else None


def helm_template(helm: Path, chart_dir: Path, release: str, namespace: str, values: dict, tmp: Path,
                  api_versions: tuple[str, ...] = ()) -> list[dict]:
    """``helm template`` of a local chart, offline, hooks left out (the provider never runs them)."""
    tmp.mkdir(parents=True, exist_ok=True)
    vf = tmp / f"{release}-values.yaml"
    vf.write_text(yaml.safe_dump(values))
    args = [str(helm), "template", release, str(chart_dir), "--namespace", namespace, "-f", str(vf), "--no-hooks"]
    for v in api_versions:
        args += ["--api-versions", v]
    res = subprocess.run(args, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HELM_CACHE_HOME": str(tmp), "HELM_CONFIG_HOME": str(tmp),
                              "HELM_DATA_HOME": str(tmp)})
    if res.returncode != 0:
        raise AssertionError(f"helm template {chart_dir.name}: {res.stderr.strip()[-2000:]}")
    return [d for d in yaml.safe_load_all(res.stdout) if d]
