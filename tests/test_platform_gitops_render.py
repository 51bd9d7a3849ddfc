"""The GitOps renderers (components/render/platform/gitops.py): the alert rules, the gitops/ layout, the root app's
patches, and Argo CD's projects (exactly what each allows, and what Argo CD would let through them).

``unit`` tests are plain Python; the ``validators`` tests have ``promtool``
check and unit-test the alert rules. The projects are asked as Argo CD would
ask them (tests/support/argocd_project.py); the API server's check of them
against the chart's CRD is tests/k8s/test_argocd_projects.py.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from components.render import platform as pv
from support.argocd_project import application_permitted, group_of, permits, source_permitted
from support.gitops_patch import apply_patch_ops
from support.platform_render import need, render_gitops_rules

unit = pytest.mark.unit
validators = pytest.mark.validators


# ------------------------------------------------------------------ alert rules


@unit
def test_gitops_alerts_cover_the_originals_signals():
    rules = pv.gitops_alert_groups(pv.GitOpsAlertsSpec())[0]["rules"]
    exprs = {r["alert"]: r["expr"] for r in rules}
    assert 'phase=~"Error|Failed"' in exprs["ArgoCdAppSyncFailed"]
    assert 'sync_status="OutOfSync"' in exprs["ArgoCdAppOutOfSync"]
    assert 'health_status="Degraded"' in exprs["ArgoCdAppDegraded"]
    assert 'health_status="Unknown"' in exprs["ArgoCdAppHealthUnknown"]
    assert "argocd_git_fetch_fail_total" in exprs["ArgoCdRepoUnreachable"]


# ------------------------------------------------------------------ promtool


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
    # No AppProject: the program makes them (whoever pushes here must not widen them).
    assert set(objs) == {("ApplicationSet", pv.APPSET)}
    for o in objs.values():
        assert o["apiVersion"] == "argoproj.io/v1alpha1" and o["metadata"]["namespace"] == pv.ARGOCD_NAMESPACE
        int(o["metadata"]["annotations"][pv.SYNC_WAVE])
    appset = objs[("ApplicationSet", pv.APPSET)]["spec"]
    (gen,) = appset["generators"]
    apps, updates = gen["merge"]["generators"]
    assert gen["merge"]["mergeKeys"] == ["values"]
    assert apps["git"]["directories"] == [{"path": "gitops/apps/*"}]
    assert updates["git"]["files"] == [{"path": f"gitops/apps/*/{pv.IMAGE_UPDATES_FILE}"}]
    assert apps["git"]["values"] == updates["git"]["values"] == {"app": "{{.path.basename}}"}
    tmpl = appset["template"]
    assert tmpl["metadata"]["name"] == "{{.path.basename}}" and tmpl["spec"]["source"]["path"] == "{{.path.path}}"
    assert tmpl["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    assert pv.CASCADE_FINALIZER in tmpl["metadata"]["finalizers"]

    apps = [p for p in (GITOPS / "apps").iterdir()]
    assert apps and all(p.is_dir() for p in apps), apps
    for app in apps:
        docs = app_manifests(app.name)
        assert docs, app
        for f, ds in docs.items():
            assert f.endswith(".yaml"), f"{f}: plain manifests only"
            for d in ds:
                assert {"apiVersion", "kind", "metadata"} <= set(d), f
                assert "namespace" not in d["metadata"], f"{f}: the Application's destination sets the namespace"
                int(d["metadata"]["annotations"][pv.SYNC_WAVE])  # every object has a wave


def app_manifests(app: str) -> dict[str, list[dict]]:
    """An app's manifests: its files but a kustomization.yaml (which lists them) and the Image Updater opt-in."""
    return {f: ds for f, ds in gitops_docs(f"apps/{app}").items()
            if Path(f).name not in ("kustomization.yaml", pv.IMAGE_UPDATES_FILE)}


@unit
def test_gitops_example_waves_order_config_workload_service():
    docs = {d["kind"]: d for ds in app_manifests("example").values() for d in ds}
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
    assert "git.invalid" not in text and "placeholder" not in text, "a placeholder is left"
    apps, updates = out["spec"]["generators"][0]["merge"]["generators"]
    assert apps["git"] == {"repoURL": spec.repo_url, "revision": "v1.2.3", "directories": [{"path": "deploy/gitops/apps/*"}],
                           "values": {"app": "{{.path.basename}}"}}
    assert updates["git"] == {"repoURL": spec.repo_url, "revision": "v1.2.3",
                              "files": [{"path": "deploy/gitops/apps/*/image-updates.yaml"}], "values": {"app": "{{.path.basename}}"}}
    tmpl = out["spec"]["template"]["spec"]
    assert (tmpl["source"]["repoURL"], tmpl["source"]["targetRevision"]) == (spec.repo_url, "v1.2.3")
    assert tmpl["project"] == pv.APP_PROJECT
    assert tmpl["destination"] == {"server": pv.IN_CLUSTER, "namespace": "app-{{.path.basename}}"}
    assert app["spec"]["project"] == pv.ROOT_PROJECT
    with pytest.raises(KeyError):
        apply_patch_ops(appset, [{"op": "replace", "path": "/spec/nothere", "value": 1}])
    assert "finalizers" not in pv.root_application(dataclasses.replace(spec, cascade=False))["metadata"]
    for bad in (dict(path="/abs"), dict(path="a/../b"), dict(revision=""), dict(repo_url="has space"),
                dict(repo_url="https://git.example.test/*"), dict(app_repos=("!https://x.test/a.git",)),
                dict(app_repos=(spec.repo_url,)), dict(app_repos=("https://x.test/a.git", "https://x.test/a.git"))):
        with pytest.raises(ValueError):
            dataclasses.replace(spec, **bad)


# ------------------------------------------------------------------ projects

REPO = "https://git.example.test/infra.git"
# The namespaces of the platform (and Kubernetes' own): no app may reach one.
PLATFORM_NAMESPACES = (pv.ARGOCD_NAMESPACE, pv.LONGHORN_NAMESPACE, pv.MONITORING_NAMESPACE, pv.SEALED_SECRETS_NAMESPACE,
                       pv.TRAEFIK_NAMESPACE, "kube-system", "kube-public", "kube-node-lease", "default")


def patched_appset(spec: pv.GitOpsSpec) -> dict:
    """gitops/root/applicationset.yaml as Argo CD gets it from the root Application."""
    appset = next(d for ds in gitops_docs("root").values() for d in ds if d.get("kind") == "ApplicationSet")
    (patch,) = pv.root_application(spec)["spec"]["source"]["kustomize"]["patches"]
    return apply_patch_ops(appset, json.loads(patch["patch"]))


def generated_apps(spec: pv.GitOpsSpec) -> dict[str, dict]:
    """The Applications the ApplicationSet makes of gitops/apps/*: its template, per directory (the git generator's params)."""
    tmpl = json.dumps(patched_appset(spec)["spec"]["template"])
    out = {}
    for d in sorted((GITOPS / "apps").iterdir()):
        params = {"{{.path.basename}}": d.name, "{{.path.path}}": f"{spec.path}/apps/{d.name}"}
        text = tmpl
        for k, v in params.items():
            text = text.replace(k, v)
        assert "{{" not in text, text
        out[d.name] = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", **json.loads(text)}
    return out


@unit
def test_root_project_exactly():
    spec = pv.GitOpsSpec(repo_url=REPO, revision="main", app_repos=("https://charts.example.test/",))
    assert pv.root_project(spec) == {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject",
        "metadata": {"name": "microcloud-root", "namespace": "argocd"},
        "spec": {
            "description": "The root Application root: gitops/root, ApplicationSets only",
            "sourceRepos": [REPO],  # not app_repos: root follows repo_url alone
            "destinations": [{"server": "https://kubernetes.default.svc", "namespace": "argocd"}],
            "clusterResourceWhitelist": [],
            "namespaceResourceWhitelist": [{"group": "argoproj.io", "kind": "ApplicationSet"}],
        },
    }


@unit
def test_apps_project_exactly():
    spec = pv.GitOpsSpec(repo_url=REPO, revision="main", path="deploy/gitops", app_repos=("https://charts.example.test/",))
    assert pv.apps_project(spec) == {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject",
        "metadata": {"name": "microcloud-apps", "namespace": "argocd"},
        "spec": {
            "description": "Applications of the ApplicationSet apps from deploy/gitops/apps/*",
            "sourceRepos": [REPO, "https://charts.example.test/"],
            "destinations": [{"server": "https://kubernetes.default.svc", "namespace": "app-*"}],
            "clusterResourceWhitelist": [{"group": "", "kind": "Namespace", "name": "app-*"}],
            "namespaceResourceBlacklist": [
                {"group": "", "kind": "ResourceQuota"}, {"group": "", "kind": "LimitRange"},
                {"group": "", "kind": "Endpoints"}, {"group": "discovery.k8s.io", "kind": "EndpointSlice"},
                {"group": "argoproj.io", "kind": "*"},
            ],
        },
    }
    # The pattern the project allows and the names the ApplicationSet gives are one constant.
    assert pv.APP_NAMESPACES == pv.APP_NAMESPACE_PREFIX + "*"
    assert pv.APP_NAMESPACE_TEMPLATE == pv.APP_NAMESPACE_PREFIX + "{{.path.basename}}"


@unit
def test_root_project_allows_what_root_holds_and_nothing_else():
    spec = pv.GitOpsSpec(repo_url=REPO, revision="main")
    proj = pv.root_project(spec)
    root = [d for f, ds in gitops_docs("root").items() if not f.endswith("kustomization.yaml") for d in ds]
    assert pv.root_application(spec)["spec"]["project"] == pv.ROOT_PROJECT
    assert source_permitted(proj, pv.root_application(spec)["spec"]["source"]["repoURL"])
    for d in root:
        assert permits(proj, d, namespace=spec.namespace, server=pv.IN_CLUSTER), d["kind"]
    # Exactly the kinds in root/: one that is no longer there is one allowed for nothing.
    assert set(pv.ROOT_KINDS) == {(group_of(d["apiVersion"]), d["kind"]) for d in root}

    def obj(api, kind, name="x", **meta):
        return {"apiVersion": api, "kind": kind, "metadata": {"name": name, **meta}}

    refused = [
        obj("v1", "ConfigMap", "argocd-rbac-cm"),  # Argo CD's own configuration
        obj("v1", "Secret", "repo", labels={"argocd.argoproj.io/secret-type": "cluster"}),
        obj("argoproj.io/v1alpha1", "AppProject", "wide-open"),
        obj("argoproj.io/v1alpha1", "Application", "direct"),
        obj("argoproj.io/v1alpha1", "ApplicationSet", "elsewhere", namespace="kube-system"),
        obj("v1", "Namespace", "anything"),
        obj("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "admin"),
    ]
    for d in refused:
        assert not permits(proj, d, namespace=spec.namespace, server=pv.IN_CLUSTER), d
    assert not source_permitted(proj, "https://git.example.test/other.git")
    assert not source_permitted(pv.root_project(dataclasses.replace(spec, app_repos=("https://x.test/a.git",))),
                                "https://x.test/a.git")


@unit
def test_apps_project_allows_every_app_in_its_namespace_and_nothing_else():
    spec = pv.GitOpsSpec(repo_url=REPO, revision="main")
    proj = pv.apps_project(spec)
    apps = generated_apps(spec)
    assert apps
    for name, app in apps.items():
        dest = app["spec"]["destination"]
        assert dest["namespace"] == f"app-{name}"
        assert application_permitted(proj, app), name
        # CreateNamespace: Argo CD creates the destination namespace, a cluster-scoped Namespace.
        assert "CreateNamespace=true" in app["spec"]["syncPolicy"]["syncOptions"]
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": dest["namespace"]}}
        assert permits(proj, ns, namespace=dest["namespace"], server=dest["server"])
        for f, docs in app_manifests(name).items():
            for d in docs:
                assert permits(proj, d, namespace=dest["namespace"], server=dest["server"]), f

    app = apps["example"]
    dest = app["spec"]["destination"]

    def obj(api, kind, name="x", **meta):
        return {"apiVersion": api, "kind": kind, "metadata": {"name": name, **meta}}

    refused = {
        "a platform namespace, named in the manifest": obj("v1", "ConfigMap", namespace="kube-system"),
        "Argo CD's namespace": obj("v1", "ConfigMap", "argocd-cm", namespace=pv.ARGOCD_NAMESPACE),
        "a Namespace not the app's kind": obj("v1", "Namespace", pv.LONGHORN_NAMESPACE),
        "another cluster-scoped kind": obj("rbac.authorization.k8s.io/v1", "ClusterRole", "escalate"),
        "a CRD": obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", "things.example.test"),
        "a StorageClass": obj("storage.k8s.io/v1", "StorageClass", "fast"),
        "its own quota": obj("v1", "ResourceQuota"),
        "its own limits": obj("v1", "LimitRange"),
        "hand-made endpoints": obj("v1", "Endpoints"),
        "hand-made endpoint slices": obj("discovery.k8s.io/v1", "EndpointSlice"),
        "an Application of its own": obj("argoproj.io/v1alpha1", "Application"),
        "an AppProject of its own": obj("argoproj.io/v1alpha1", "AppProject"),
    }
    for why, d in refused.items():
        assert not permits(proj, d, namespace=dest["namespace"], server=dest["server"]), why
    # What apps do bring stays allowed (their own RBAC and policies in their namespace).
    for d in (obj("rbac.authorization.k8s.io/v1", "RoleBinding"), obj("networking.k8s.io/v1", "NetworkPolicy"),
              obj("networking.k8s.io/v1", "Ingress"), obj("v1", "Secret"), obj("v1", "ServiceAccount")):
        assert permits(proj, d, namespace=dest["namespace"], server=dest["server"]), d["kind"]
    # An Application elsewhere: another repository, a platform namespace, another cluster.
    other = {**app, "spec": {**app["spec"], "source": {**app["spec"]["source"], "repoURL": "https://evil.test/x.git"}}}
    assert not application_permitted(proj, other)
    for ns in PLATFORM_NAMESPACES:
        moved = {**app, "spec": {**app["spec"], "destination": {**dest, "namespace": ns}}}
        assert not application_permitted(proj, moved), ns
    far = {**app, "spec": {**app["spec"], "destination": {**dest, "server": "https://10.0.0.1:6443"}}}
    assert not application_permitted(proj, far)
    # app_repos widen the apps' project, and only by what they name.
    wider = pv.apps_project(dataclasses.replace(spec, app_repos=("https://charts.example.test/",)))
    assert source_permitted(wider, "https://charts.example.test/") and not source_permitted(wider, "https://charts.example.test/x")


@unit
def test_no_platform_namespace_is_an_app_namespace():
    for ns in PLATFORM_NAMESPACES:
        assert not ns.startswith(pv.APP_NAMESPACE_PREFIX), ns
    assert not any(d.name.startswith(pv.APP_NAMESPACE_PREFIX) for d in (GITOPS / "apps").iterdir()), \
        "app-app-<name> would be a confusing namespace"
