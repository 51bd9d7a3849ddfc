"""The platform's NetworkPolicies (components/render/platform/network_policies.py) on the real kube-apiserver.

Every policy the program renders, and the Longhorn chart's own ones it keeps,
is created in this test's namespace with strict field validation (an unknown
or misspelt field is an error, not silently dropped) and read back: the API
server keeps exactly what we sent. The kube-system ones are also created
there as a server-side dry run (nothing is stored). There is no policy
engine here; what the policies admit is tests/test_network_policies.py.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import pytest

from components.render import platform as pv
from support.netpol import helm_template
from support.platform_render import CHART_DIR, CONFIGS, chart_values

from .cluster import ApiError

pytestmark = pytest.mark.k8s

SPEC = pv.NetworkPolicySpec(argocd=True, nfs_provisioner=True)
STRICT = {"fieldValidation": "Strict"}


def _path(ns: str, name: str = "") -> str:
    return f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies" + (f"/{name}" if name else "")


def _longhorn_policies(k8s_bin: Path) -> list[dict]:
    chart = CHART_DIR / f"longhorn-{pv.CHARTS['longhorn'].version}"
    if not (chart / "Chart.yaml").is_file():
        pytest.skip(f"chart longhorn is not in {CHART_DIR}; set MICROCLOUD_CHART_DIR")
    with tempfile.TemporaryDirectory(prefix="netpol-helm-") as tmp:
        docs = helm_template(k8s_bin / "helm", chart, "longhorn", pv.LONGHORN_NAMESPACE,
                             chart_values(CONFIGS["dev"])["longhorn"], Path(tmp))
    pols = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert pols, "the Longhorn chart rendered no NetworkPolicy: is restrictInternalTraffic still its key?"
    return pols


def test_every_policy_is_accepted_and_kept_as_sent(k8s_cluster, k8s_bin, k8s_namespace):
    ours = pv.all_network_policies(SPEC)
    charts = _longhorn_policies(k8s_bin)
    seen = set()
    for pol in ours + charts:
        obj = copy.deepcopy(pol)
        name = obj["metadata"]["name"]
        # Both sets share a namespace here: keep the names apart.
        key = (pol["metadata"]["namespace"], name)
        assert key not in seen, key
        seen.add(key)
        obj["metadata"]["name"] = f"{'chart-' if pol in charts else ''}{pol['metadata']['namespace'][:12]}-{name}"[:63].rstrip("-")
        obj["metadata"]["namespace"] = k8s_namespace
        made = k8s_cluster.create(_path(k8s_namespace), obj, query=STRICT)
        back = k8s_cluster.get(_path(k8s_namespace, made["metadata"]["name"]))
        want = copy.deepcopy(pol["spec"])
        want.setdefault("policyTypes", ["Ingress"])
        # The API server's defaults: TCP on every port, no other change.
        for rules in (want.get("ingress") or []):
            for p in rules.get("ports") or []:
                p.setdefault("protocol", "TCP")
        got = back["spec"]
        assert got == want, (key, got)
        assert back["metadata"].get("labels") == pol["metadata"].get("labels"), key
    assert len(seen) == len(ours) + len(charts)


def test_kube_system_policies_pass_a_server_side_dry_run(k8s_cluster):
    """In their real namespace (K3s' kube-system), as a dry run: nothing is stored, nothing of the namespace touched."""
    ks = [p for p in pv.all_network_policies(SPEC) if p["metadata"]["namespace"] == "kube-system"]
    assert {p["metadata"]["name"] for p in ks} == {"microcloud-traefik", "microcloud-sealed-secrets", "microcloud-nfs-provisioner"}
    for pol in ks:
        out = k8s_cluster.create(_path("kube-system"), pol, query={**STRICT, "dryRun": "All"})
        assert out["metadata"]["namespace"] == "kube-system"
        with pytest.raises(ApiError) as err:
            k8s_cluster.get(_path("kube-system", pol["metadata"]["name"]))
        assert err.value.status == 404


def test_the_api_server_rejects_a_broken_policy(k8s_cluster, k8s_namespace):
    """The check can fail: a misspelt field and an impossible protocol are refused, not dropped."""
    pol = copy.deepcopy(pv.all_network_policies(SPEC)[0])
    pol["metadata"]["namespace"] = k8s_namespace
    typo = copy.deepcopy(pol)
    typo["spec"]["ingres"] = typo["spec"].pop("ingress")
    bad_proto = copy.deepcopy(pol)
    bad_proto["spec"]["ingress"][0]["ports"][0]["protocol"] = "TCPX"
    for broken in (typo, bad_proto):
        with pytest.raises(ApiError) as err:
            k8s_cluster.create(_path(k8s_namespace), broken, query=STRICT)
        assert err.value.status in (400, 422), err.value
