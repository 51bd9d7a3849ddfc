"""Argo CD's projects (components/render/platform/gitops.py) against the pinned argo-cd chart's own CRDs.

The chart's AppProject, Application and ApplicationSet CRDs (``helm template``
of the chart directory, the CRD templates only) are created on the test
Kubernetes API, unless they are there already (then they are left as found).
Each project the program makes, the root Application and the ApplicationSet
as the root Application patches it are then server-side applied as a dry run
with strict field validation, in the test's own namespace: the API server
checks them against the CRDs' schemas, so a field the CRD does not know (such
as ``name`` in clusterResourceWhitelist, which older Argo CD releases lack) is
an error here instead of being dropped. What Argo CD then does with the
projects needs Argo CD, which does not run here (tests/support/argocd_project.py
models it for the render tests).

Skips, naming it, without the test Kubernetes API (bash .ci/k8s.sh) or the
argo-cd chart (MICROCLOUD_CHART_DIR).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess

import pytest
import yaml

from components.chart_pins import CHART_VERSIONS
from components.render import platform as pv
from support.gitops_patch import apply_patch_ops
from support.harness import ROOT
from support.platform_render import CHART_DIR

from .cluster import wait_for

pytestmark = pytest.mark.k8s

CRD_TEMPLATES = ("crd-appproject.yaml", "crd-application.yaml", "crd-applicationset.yaml")
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
PLURALS = {"AppProject": "appprojects", "Application": "applications", "ApplicationSet": "applicationsets"}
REPO = "https://git.example.test/microcloud.git"


def chart() -> str:
    path = CHART_DIR / f"argo-cd-{CHART_VERSIONS['argo-cd']}"
    if not (path / "Chart.yaml").is_file():
        pytest.skip(f"no chart argo-cd-{CHART_VERSIONS['argo-cd']} in {CHART_DIR} (MICROCLOUD_CHART_DIR)")
    return str(path)


@pytest.fixture(scope="module")
def argo_crds(k8s_cluster, k8s_bin, tmp_path_factory):
    """The chart's three Argo CD CRDs, Established; those this fixture created are deleted afterwards, and waited for."""
    home = tmp_path_factory.mktemp("helm-home")
    env = {**os.environ, "HOME": str(home), "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}
    args = [str(k8s_bin / "helm"), "template", "argocd", chart(), "--namespace", pv.ARGOCD_NAMESPACE]
    for t in CRD_TEMPLATES:
        args += ["--show-only", f"templates/crds/{t}"]
    res = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    crds = [d for d in yaml.safe_load_all(res.stdout) if d]
    assert sorted(c["spec"]["names"]["kind"] for c in crds) == sorted(PLURALS)
    made = []
    try:
        for crd in crds:
            name = crd["metadata"]["name"]
            if k8s_cluster.raw("GET", f"{CRDS}/{name}")[0] == 404:
                k8s_cluster.create(CRDS, crd)
                made.append(name)
            wait_for(lambda: any(c["type"] == "Established" and c["status"] == "True"
                                 for c in k8s_cluster.get(f"{CRDS}/{name}").get("status", {}).get("conditions", [])),
                     30, f"CRD {name} Established")
        yield {c["spec"]["names"]["kind"]: c for c in crds}
    finally:
        # Gone before the next test: the platform engine test installs the chart, CRDs and all.
        for name in made:
            k8s_cluster.raw("DELETE", f"{CRDS}/{name}")
        for name in made:
            wait_for(lambda: k8s_cluster.raw("GET", f"{CRDS}/{name}")[0] == 404, 60, f"CRD {name} deleted")


def apply_dry_run(cluster, obj: dict, ns: str) -> tuple[int, object]:
    """Server-side apply, as the Pulumi provider does, but a dry run, with unknown or duplicate fields an error."""
    name = obj["metadata"]["name"]
    path = f"/apis/argoproj.io/v1alpha1/namespaces/{ns}/{PLURALS[obj['kind']]}/{name}"
    return cluster.raw("PATCH", path, obj, content_type="application/apply-patch+yaml",
                       query={"dryRun": "All", "fieldValidation": "Strict", "fieldManager": "microcloud-test", "force": "true"})


def in_namespace(obj: dict, ns: str) -> dict:
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = ns
    return obj


def message(body) -> str:
    return body.get("message", "") if isinstance(body, dict) else str(body)


def test_projects_root_app_and_appset_pass_the_charts_crds(k8s_cluster, argo_crds, k8s_namespace):
    ns = k8s_namespace
    spec = pv.GitOpsSpec(repo_url=REPO, revision="main", namespace=ns, app_repos=("oci://charts.example.test/apps",))
    objs = [pv.root_project(spec), pv.apps_project(spec), pv.default_project(ns), pv.root_application(spec)]
    appset = yaml.safe_load((ROOT / "gitops" / "root" / "applicationset.yaml").read_text())
    (patch,) = pv.root_application(spec)["spec"]["source"]["kustomize"]["patches"]
    objs.append(in_namespace(apply_patch_ops(appset, json.loads(patch["patch"])), ns))
    rejected = []
    for obj in objs:
        status, body = apply_dry_run(k8s_cluster, obj, ns)
        if status >= 300:
            rejected.append(f"{obj['kind']} {obj['metadata']['name']}: HTTP {status}: {message(body)}")
        else:
            # What the server would store: every field kept (nothing pruned as unknown), the empty lists too.
            assert body["spec"] == obj["spec"], (obj["metadata"]["name"], body["spec"])
    assert not rejected, rejected
    # Nothing was stored: a dry run.
    for obj in objs:
        path = f"/apis/argoproj.io/v1alpha1/namespaces/{ns}/{PLURALS[obj['kind']]}/{obj['metadata']['name']}"
        assert k8s_cluster.raw("GET", path)[0] == 404


def test_the_crds_refuse_what_they_do_not_know(k8s_cluster, argo_crds, k8s_namespace):
    """The checks above can fail: a misspelt field and a rule without its kind are refused."""
    ns = k8s_namespace
    proj = pv.apps_project(pv.GitOpsSpec(repo_url=REPO, revision="main", namespace=ns))
    typo = copy.deepcopy(proj)
    typo["spec"]["clusterResourceWhitelist"][0]["names"] = typo["spec"]["clusterResourceWhitelist"][0].pop("name")
    status, body = apply_dry_run(k8s_cluster, typo, ns)
    # Server-side apply answers a field outside the schema with 500, naming it.
    assert status >= 400 and ".names: field not declared in schema" in message(body), (status, body)
    no_kind = copy.deepcopy(proj)
    del no_kind["spec"]["namespaceResourceBlacklist"][0]["kind"]
    status, body = apply_dry_run(k8s_cluster, no_kind, ns)
    assert status == 422 and "spec.namespaceResourceBlacklist[0].kind: Required value" in message(body), (status, body)
    # The chart's CRD knows the field the apps' Namespace rule relies on.
    props = argo_crds["AppProject"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert "name" in props["clusterResourceWhitelist"]["items"]["properties"]


def test_a_crd_without_the_name_rule_fails_the_apply_instead_of_widening(k8s_cluster, argo_crds, k8s_namespace):
    """An AppProject CRD of an Argo CD before named cluster resources (a site's own older chart) knows no ``name``:
    server-side apply, which the Pulumi provider uses, then fails naming the field; it does not drop it (which would
    allow every Namespace). A copy of the chart's CRD in a group of its own, without that field, plays the old one."""
    group = "old.argoproj.test"
    old = copy.deepcopy(argo_crds["AppProject"])
    old["metadata"] = {"name": f"appprojects.{group}"}
    old["spec"]["group"] = group
    version = old["spec"]["versions"][0]
    del version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["clusterResourceWhitelist"]["items"]["properties"]["name"]
    k8s_cluster.create(CRDS, old)
    try:
        wait_for(lambda: any(c["type"] == "Established" and c["status"] == "True"
                             for c in k8s_cluster.get(f"{CRDS}/appprojects.{group}").get("status", {}).get("conditions", [])),
                 30, "the old AppProject CRD Established")
        proj = pv.apps_project(pv.GitOpsSpec(repo_url=REPO, revision="main", namespace=k8s_namespace))
        proj["apiVersion"] = f"{group}/{version['name']}"
        path = f"/apis/{group}/{version['name']}/namespaces/{k8s_namespace}/appprojects/{pv.APP_PROJECT}"
        # As the provider asks: no fieldValidation (the server's default), then with Warn.
        for query in ({}, {"fieldValidation": "Warn"}):
            status, body = k8s_cluster.raw("PATCH", path, proj, content_type="application/apply-patch+yaml",
                                           query={"dryRun": "All", "fieldManager": "microcloud-test", **query})
            assert status >= 400 and "clusterResourceWhitelist[0].name: field not declared" in message(body), (query, status, body)
    finally:
        k8s_cluster.raw("DELETE", f"{CRDS}/appprojects.{group}")
        wait_for(lambda: k8s_cluster.raw("GET", f"{CRDS}/appprojects.{group}")[0] == 404, 60, "the old CRD deleted")
