"""The Platform component (components/platform/) under Pulumi mocks: its graph, not the charts' contents.

Chart directories are stand-ins (a Chart.yaml each) in a temp dir: under
mocks a helm.v4.Chart registers as one resource and renders nothing. What the
charts render against a real API server is tests/k8s/test_platform_engine.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s
import pytest
import yaml
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from components.platform import (CHART_VERSIONS, CHARTS, ROTATABLE, ChartSource, GitOps, Platform, PlatformArgs,
                                 chart_dir, chart_sources)
from components.render import platform as pv
from support.harness import Mocks, RecordingMonitor, Run

pytestmark = pytest.mark.graph

CHART = "kubernetes:helm.sh/v4:Chart"
SECRET = "kubernetes:core/v1:Secret"
PASSWORD = "random:index/randomPassword:RandomPassword"
ROOT_APP = "kubernetes:argoproj.io/v1alpha1:Application"
PROJECT = "kubernetes:argoproj.io/v1alpha1:AppProject"
STORAGE_CHARTS = ("platform-kube-prometheus-stack",)
GITOPS = GitOps(repo_url="https://git.example.test/microcloud.git", revision="main")


class Monitor(RecordingMonitor):
    """Also records retain_on_delete (not in the shared harness's Registration)."""

    def __init__(self, mocks):
        super().__init__(mocks)
        self.retained: set[str] = set()

    def RegisterResource(self, request):
        resp = super().RegisterResource(request)
        if request.retainOnDelete:
            self.retained.add(resp.urn)
        return resp


def fake_charts(base: Path, versions: dict[str, str]) -> dict[str, ChartSource]:
    out = {}
    for name, ver in versions.items():
        d = base / f"{name}-{ver}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "Chart.yaml").write_text(yaml.safe_dump({"apiVersion": "v2", "name": name, "version": ver}))
        out[name] = ChartSource(version=CHART_VERSIONS.get(name, ver), path=str(d))
    return out


def run_platform(charts: dict[str, ChartSource], **kw) -> Run:
    monitor = Monitor(Mocks())
    pulumi.runtime.settings.set_root_resource(None)
    pulumi.runtime.set_mocks(Mocks(), project="platform-graph", stack="t", preview=False, monitor=monitor)
    root = pulumi.runtime.get_root_resource()
    error = None
    kw = {"kubeconfig": pulumi.Output.secret("kubeconfig-m0ck"), "nfs_server": "10.17.4.10", "gitops": GITOPS,
          "scrape_targets": {"lb1": "10.17.4.2:9100"}, **kw}

    def program():
        provider = k8s.Provider("k8s", kubeconfig="{}", cluster_identifier="t")
        p = Platform("platform", PlatformArgs(domain="example.test", http_nodeport=30080, https_nodeport=30443,
                                              provider=provider, charts=charts, **kw))
        for name in ("sealing_certificate", "default_certificate", "dashboard_password", "grafana_admin_password"):
            pulumi.export(name, getattr(p, name))
        if p.argocd_admin_password is not None:
            pulumi.export("argocd_admin_password", p.argocd_admin_password)

    try:
        _sync_await(run_pulumi_func(program))
    except Exception as exc:
        error = exc
    return Run(monitor=monitor, outputs=dict(getattr(root, "outputs", {}) or {}), error=error)


@pytest.fixture(scope="module")
def chart_paths(tmp_path_factory) -> dict[str, ChartSource]:
    return fake_charts(tmp_path_factory.mktemp("charts"), dict(CHART_VERSIONS))


@pytest.fixture(scope="module")
def graph(chart_paths) -> Run:
    run = run_platform(chart_paths)
    assert run.error is None, run.error
    return run


@pytest.fixture(scope="module")
def prod(chart_paths) -> Run:
    run = run_platform(chart_paths, protect_data=True)
    assert run.error is None, run.error
    return run


def test_every_kubernetes_resource_uses_the_explicit_provider(graph):
    k8s_resources = [r for r in graph.resources if r.type.startswith("kubernetes:") and r.type != "pulumi:providers:kubernetes"]
    assert {r.type for r in k8s_resources} >= {CHART, SECRET, "kubernetes:core/v1:Namespace",
                                               "kubernetes:storage.k8s.io/v1:StorageClass",
                                               "kubernetes:core/v1:PersistentVolumeClaim", ROOT_APP}
    component = graph.one("microcloud:platform:Platform", "platform")
    for r in k8s_resources:
        assert r.parent == component.urn, r.name
        assert "providers:kubernetes::k8s" in r.provider, (r.name, r.provider)


def test_all_seven_charts_and_every_version_pinned(graph, chart_paths):
    charts = {r.name: r for r in graph.by_type(CHART)}
    assert set(charts) == {"platform-sealed-secrets", "platform-traefik", "platform-longhorn", "platform-nfs-provisioner",
                           "platform-kube-prometheus-stack", "platform-argocd", "platform-argocd-image-updater"}
    for r in charts.values():
        # Local directories: the path is the pinned chart's, checked against its Chart.yaml.
        name = Path(r.inputs["chart"]).name.rsplit("-", 1)[0]
        assert Path(r.inputs["chart"]).name == f"{name}-{CHART_VERSIONS[name]}", r.inputs["chart"]


def test_repository_sources_pin_the_version(tmp_path):
    run = run_platform(chart_sources(None))
    assert run.error is None, run.error
    for r in run.by_type(CHART):
        name = r.inputs["chart"]
        assert r.inputs["version"] == CHARTS[name].version, (r.name, r.inputs.get("version"))
        assert r.inputs["repositoryOpts"]["repo"] == CHARTS[name].repo, r.name


def test_chart_sources_prefers_the_local_directory(tmp_path):
    local = fake_charts(tmp_path, {"traefik": CHART_VERSIONS["traefik"]})
    src = chart_sources(str(tmp_path))
    assert src["traefik"] == local["traefik"]
    assert src["longhorn"] == ChartSource(version=CHARTS["longhorn"].version, repo=CHARTS["longhorn"].repo)
    over = chart_sources(str(tmp_path), {"traefik": ChartSource(version="41.3.0", repo="https://mirror.example.test/charts")})
    assert over["traefik"].repo == "https://mirror.example.test/charts" and over["traefik"].path is None
    with pytest.raises(ValueError, match="no chart named trafik"):
        chart_sources(None, {"trafik": ChartSource(version="1.0.0")})


@pytest.mark.parametrize("version", ["^41.0.0", "41.x", "", ">=41.3.0", "latest"])
def test_a_floating_version_is_refused(chart_paths, version):
    run = run_platform({**chart_paths, "traefik": ChartSource(version=version, repo=CHARTS["traefik"].repo)})
    # The config's own rule and words (components/config/platform.py), under the platform's prefix.
    assert isinstance(run.error, ValueError), run.error
    assert re.fullmatch(rf"platform: chart traefik: (chart version )?'{re.escape(version)}' is not (pinned|an exact chart version).*",
                        str(run.error)), run.error
    assert "\n" not in str(run.error)


@pytest.mark.parametrize("kw,words", [
    ({"rotation": {"grafana": "2"}}, "platform: rotation: no generated password grafana (keepers: "),
    ({"values": {"grafana": {"x": 1}}}, "platform: values: no chart named grafana (charts: "),
])
def test_platform_args_use_the_configs_rules(chart_paths, kw, words):
    """PlatformArgs built without the stack config meet the config's own rules and words."""
    run = run_platform(chart_paths, **kw)
    assert isinstance(run.error, ValueError) and str(run.error).startswith(words), run.error
    assert not run.by_type(CHART), "a chart was registered before the inputs were checked"


def test_a_packaged_chart_is_checked_too(tmp_path):
    import tarfile

    d = tmp_path / "src" / "traefik"
    d.mkdir(parents=True)
    (d / "Chart.yaml").write_text(yaml.safe_dump({"apiVersion": "v2", "name": "traefik", "version": "41.3.0"}))
    tgz = tmp_path / "traefik-41.3.0.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(d, arcname="traefik")
    assert chart_dir("traefik", str(tgz), "41.3.0") == str(tgz.resolve())
    with pytest.raises(ValueError, match="holds traefik 41.3.0, wanted traefik 41.4.0"):
        chart_dir("traefik", str(tgz), "41.4.0")
    (tmp_path / "junk.tgz").write_bytes(b"not a tarball")
    with pytest.raises(ValueError, match="no Chart.yaml"):
        chart_dir("traefik", str(tmp_path / "junk.tgz"), "41.3.0")


def test_charts_wait_for_the_secrets_they_name(graph):
    deps = {r.name: set(r.dependencies) for r in graph.by_type(CHART)}
    urn = {r.name: r.urn for r in graph.by_type(SECRET)}
    assert urn["platform-sealing-key"] in deps["platform-sealed-secrets"]
    assert {urn["platform-ingress-cert"], urn["platform-dashboard-auth"]} <= deps["platform-traefik"]
    assert {urn["platform-argocd-secret"], urn["platform-argocd-redis"]} <= deps["platform-argocd"]
    assert urn["platform-grafana-admin"] in deps["platform-kube-prometheus-stack"]
    argocd = graph.one(CHART, "platform-argocd")
    assert graph.urn_of("kubernetes:core/v1:Namespace", "platform-argocd") in argocd.dependencies
    # Its ServiceMonitors need the monitoring CRDs.
    assert graph.urn_of(CHART, "platform-kube-prometheus-stack") in argocd.dependencies


def test_storage_charts_depend_on_longhorn(graph):
    longhorn = graph.urn_of(CHART, "platform-longhorn")
    sc = graph.one("kubernetes:storage.k8s.io/v1:StorageClass", "platform-longhorn")
    assert longhorn in sc.dependencies
    assert sc.inputs["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    pvc = graph.one("kubernetes:core/v1:PersistentVolumeClaim", "platform-grafana")
    assert longhorn in pvc.dependencies and sc.urn in pvc.dependencies  # storageClassName flows from the StorageClass
    assert pvc.inputs["spec"]["storageClassName"] == "longhorn"
    for name in STORAGE_CHARTS:
        r = graph.one(CHART, name)
        assert {longhorn, sc.urn, pvc.urn} <= set(r.dependencies), name
    values = graph.one(CHART, "platform-kube-prometheus-stack").inputs["values"]
    assert values["grafana"]["persistence"]["existingClaim"] == pvc.inputs["metadata"]["name"]
    assert values["prometheus"]["prometheusSpec"]["storageSpec"]["volumeClaimTemplate"]["spec"]["storageClassName"] == "longhorn"


def test_longhorn_uninstall_runs_before_longhorn_goes(graph):
    cmd = graph.one("command:local:Command", "platform-longhorn-uninstall")
    assert graph.urn_of(CHART, "platform-longhorn") in cmd.dependencies  # so destroy deletes it (runs it) first
    assert "uninstall_longhorn_main" in cmd.inputs["delete"]
    assert "environment" in cmd.secret_inputs and "environment" in cmd.additional_secret_outputs
    values = graph.one(CHART, "platform-longhorn").inputs["values"]
    assert values["defaultSettings"]["deletingConfirmationFlag"] is True
    assert values["persistence"]["createStorageClass"] is False


def test_longhorn_data_path_and_nfs_are_inputs(chart_paths):
    run = run_platform(chart_paths, longhorn_data_path="/mnt/longhorn", nfs_path="/srv/nfs/k8s")
    values = run.one(CHART, "platform-longhorn").inputs["values"]
    assert values["defaultSettings"]["defaultDataPath"] == "/mnt/longhorn"
    nfs = run.one(CHART, "platform-nfs-provisioner").inputs["values"]["nfs"]
    assert (nfs["server"], nfs["path"]) == ("10.17.4.10", "/srv/nfs/k8s")
    without = run_platform(chart_paths, nfs_server=None)
    assert without.error is None, without.error
    assert "platform-nfs-provisioner" not in {r.name for r in without.by_type(CHART)}


def test_scrape_targets_are_a_job_with_the_node_as_instance(graph):
    values = graph.one(CHART, "platform-kube-prometheus-stack").inputs["values"]
    (job,) = values["prometheus"]["prometheusSpec"]["additionalScrapeConfigs"]
    assert job["static_configs"] == [{"targets": ["10.17.4.2:9100"],
                                      "labels": {"instance": "lb1", "node": "lb1", "role": "vm"}}]
    webhooks = values["prometheusOperator"]["admissionWebhooks"]
    assert webhooks["enabled"] is False and values["prometheusOperator"]["tls"]["enabled"] is False


def test_root_app_depends_on_argocd(graph):
    app = graph.one(ROOT_APP, "platform-root-app")
    assert graph.urn_of(CHART, "platform-argocd") in app.dependencies
    src = app.inputs["spec"]["source"]
    assert (src["repoURL"], src["targetRevision"], src["path"]) == (GITOPS.repo_url, "main", "gitops/root")
    assert app.inputs["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    assert app.inputs["metadata"]["finalizers"] == [pv.CASCADE_FINALIZER]  # dev: destroy removes what Argo CD made
    cm = graph.one(CHART, "platform-argocd").inputs["values"]["configs"]["cm"]
    assert "obj.status.health" in cm["resource.customizations.health.argoproj.io_Application"]


def test_projects_of_root_and_apps_and_the_emptied_default(graph, chart_paths):
    projects = {r.name: r for r in graph.by_type(PROJECT)}
    assert set(projects) == {"platform-argocd-default-project", "platform-root-project", "platform-apps-project"}
    argocd = graph.urn_of(CHART, "platform-argocd")
    for r in projects.values():
        assert argocd in r.dependencies, r.name  # the AppProject CRD comes with the chart
    spec = pv.GitOpsSpec(repo_url=GITOPS.repo_url, revision="main")
    want = {"platform-root-project": pv.root_project(spec), "platform-apps-project": pv.apps_project(spec),
            "platform-argocd-default-project": pv.default_project()}
    for name, obj in want.items():
        assert projects[name].inputs["spec"] == obj["spec"], name
        assert {k: v for k, v in projects[name].inputs["metadata"].items() if k != "annotations"} == obj["metadata"]
    # Applied over the `default` argocd-server made at its start, taking over its fields.
    assert projects["platform-argocd-default-project"].inputs["metadata"]["annotations"] == {"pulumi.com/patchForce": "true"}
    app = graph.one(ROOT_APP, "platform-root-app")
    assert app.inputs["spec"]["project"] == pv.ROOT_PROJECT
    # Root is deleted before both projects: its own (data flows) and the apps' (their cascade needs it).
    assert {projects["platform-root-project"].urn, projects["platform-apps-project"].urn} <= set(app.dependencies)
    # app_repos reach the apps' project only.
    extra = "https://charts.example.test/"
    run = run_platform(chart_paths, gitops=GitOps(repo_url=GITOPS.repo_url, revision="main", app_repos=(extra,)))
    assert run.error is None, run.error
    assert run.one(PROJECT, "platform-apps-project").inputs["spec"]["sourceRepos"] == [GITOPS.repo_url, extra]
    assert run.one(PROJECT, "platform-root-project").inputs["spec"]["sourceRepos"] == [GITOPS.repo_url]
    bad = run_platform(chart_paths, gitops=GitOps(repo_url=GITOPS.repo_url, revision="main", app_repos=("https://x.test/*",)))
    assert isinstance(bad.error, ValueError) and "platform: gitops: repository URL 'https://x.test/*'" in str(bad.error)
    assert not bad.by_type(PROJECT), "refused before any resource"


def test_gitops_needs_argocd(chart_paths):
    run = run_platform({k: v for k, v in chart_paths.items() if k != "argo-cd"}, argocd=False)
    assert isinstance(run.error, ValueError) and "gitops needs argocd" in str(run.error)


def test_generated_secrets_are_secret(graph):
    for name in ("platform-sealing-key", "platform-ingress-key"):
        key = graph.one("tls:index/privateKey:PrivateKey", name)
        assert "privateKeyPem" in key.additional_secret_outputs
    for r in graph.by_type(SECRET):
        assert "stringData" in r.secret_inputs, r.name
    for name in ("dashboard_password", "argocd_admin_password", "grafana_admin_password"):
        value, secret = graph.output_value(name)
        assert secret and value, name
    for name in ("sealing_certificate", "default_certificate"):
        _, secret = graph.output_value(name)
        assert not secret, name
    for r in graph.by_type(PASSWORD):
        assert "bcryptHash" in r.additional_secret_outputs, r.name
    for r in graph.resources:
        for name, value in r.inputs.items():
            if name not in r.secret_inputs:
                text = json.dumps(value)
                assert "m0ckPass" not in text and "mock-pem" not in text and "kubeconfig-m0ck" not in text, (r.name, name)


def test_every_password_rotates_by_its_keeper(graph, chart_paths):
    passwords = {r.name.removeprefix("platform-"): r for r in graph.by_type(PASSWORD)}
    # The CI token's keeper rotates its id (a RandomUuid), not a password.
    tokens = {r.name.removeprefix("platform-"): r for r in graph.by_type("random:index/randomUuid:RandomUuid")}
    assert set(passwords) | set(tokens) == set(ROTATABLE) and set(tokens) == {"argocd-ci-token"}
    assert all(r.inputs["keepers"] == {"rotation": ""} for r in [*passwords.values(), *tokens.values()])
    bumped = run_platform(chart_paths, rotation={"grafana-admin": "2026-12"})
    keepers = {r.name.removeprefix("platform-"): r.inputs["keepers"] for r in bumped.by_type(PASSWORD)}
    assert keepers["grafana-admin"] == {"rotation": "2026-12"}
    assert all(k == {"rotation": ""} for n, k in keepers.items() if n != "grafana-admin")
    # Pods that read the password only at start restart with its keeper.
    def annotations(run):
        kps = run.one(CHART, "platform-kube-prometheus-stack").inputs["values"]["grafana"]["podAnnotations"]
        argo = run.one(CHART, "platform-argocd").inputs["values"]["global"]["podAnnotations"]
        return kps, argo
    assert annotations(graph) == ({"microcloud.io/rotation-grafana-admin": ""}, {"microcloud.io/rotation-argocd-redis": ""})
    assert annotations(bumped)[0] == {"microcloud.io/rotation-grafana-admin": "2026-12"}
    typo = run_platform(chart_paths, rotation={"grafana": "1"})
    assert isinstance(typo.error, ValueError) and "grafana-admin" in str(typo.error)


def test_dev_protects_nothing(graph):
    assert not [r.name for r in graph.resources if r.protect]
    sc = graph.one("kubernetes:storage.k8s.io/v1:StorageClass", "platform-longhorn")
    assert sc.inputs["reclaimPolicy"] == "Delete"


def test_prod_data_is_protected(prod):
    protected = {(r.type, r.name) for r in prod.resources if r.protect}
    assert protected == {
        ("tls:index/privateKey:PrivateKey", "platform-sealing-key"),
        ("kubernetes:core/v1:Namespace", "platform-longhorn"),
        (CHART, "platform-longhorn"),
        ("kubernetes:storage.k8s.io/v1:StorageClass", "platform-longhorn"),
        ("kubernetes:core/v1:PersistentVolumeClaim", "platform-grafana"),
    }
    # Kept in the cluster even when Pulumi deletes them (after unprotecting): the sealing key lives on in state.
    retained = {(r.type, r.name) for r in prod.resources if r.urn in prod.monitor.retained}
    assert retained == protected - {("tls:index/privateKey:PrivateKey", "platform-sealing-key")}
    sc = prod.one("kubernetes:storage.k8s.io/v1:StorageClass", "platform-longhorn")
    assert sc.inputs["reclaimPolicy"] == "Retain"
    nfs = prod.one(CHART, "platform-nfs-provisioner").inputs["values"]["storageClass"]
    assert nfs["reclaimPolicy"] == "Retain" and nfs["archiveOnDelete"] is True
    prom = prod.one(CHART, "platform-kube-prometheus-stack").inputs["values"]["prometheus"]["prometheusSpec"]
    assert prom["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    lh = prod.one(CHART, "platform-longhorn").inputs["values"]
    assert lh["defaultSettings"]["deletingConfirmationFlag"] is False
    # Nothing runs Longhorn's uninstall in prod, and the root app does not cascade.
    assert [r.name for r in prod.by_type("command:local:Command")] == ["platform-argocd-ci-token-issued"]
    assert "finalizers" not in prod.one(ROOT_APP, "platform-root-app").inputs["metadata"]


def test_argocd_is_optional(chart_paths):
    run = run_platform({k: v for k, v in chart_paths.items() if k != "argo-cd"}, argocd=False, gitops=None)
    assert run.error is None, run.error
    assert "platform-argocd" not in {r.name for r in run.by_type(CHART)}
    assert not run.by_type(ROOT_APP) and not run.by_type(PROJECT)
    # Argo CD without a root app still has its `default` project emptied.
    bare = run_platform(chart_paths, gitops=None)
    assert bare.error is None, bare.error
    assert [r.name for r in bare.by_type(PROJECT)] == ["platform-argocd-default-project"]


def test_a_chart_of_another_version_fails_naming_chart_wanted_and_found(tmp_path):
    charts = fake_charts(tmp_path, {**CHART_VERSIONS, "traefik": "40.0.0"})
    with pytest.raises(ValueError) as err:
        chart_dir("traefik", charts["traefik"].path, "41.3.0")
    msg = str(err.value)
    assert "\n" not in msg and "traefik" in msg and "41.3.0" in msg and "40.0.0" in msg, msg
    run = run_platform(charts)
    assert isinstance(run.error, ValueError) and "40.0.0" in str(run.error)
    with pytest.raises(ValueError, match="no Chart.yaml"):
        chart_dir("traefik", str(tmp_path / "nowhere"), "41.3.0")


def test_extra_values_merge_over_ours(chart_paths):
    run = run_platform(chart_paths, values={"traefik": {"deployment": {"replicas": 3}, "logs": {"general": {"level": "DEBUG"}}}})
    v = run.one(CHART, "platform-traefik").inputs["values"]
    assert v["deployment"]["replicas"] == 3 and v["logs"]["general"]["level"] == "DEBUG"
    assert v["ports"]["web"]["nodePort"] == 30080  # ours kept
    bad = run_platform(chart_paths, values={"trafik": {}})
    assert isinstance(bad.error, ValueError) and "trafik" in str(bad.error)


NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
# chart resource -> the addon whose NetworkPolicies it waits for (render/platform/network_policies.py).
CHART_POLICIES = {"platform-sealed-secrets": "sealed-secrets", "platform-traefik": "traefik", "platform-longhorn": "longhorn",
                  "platform-nfs-provisioner": "nfs-provisioner", "platform-kube-prometheus-stack": "monitoring",
                  "platform-argocd": "argocd"}


def test_every_chart_waits_for_the_network_policies_that_isolate_its_pods(graph):
    """No pod of a chart starts unprotected: its namespace's policies exist first, in the namespace the program made."""
    rendered = pv.network_policies(pv.NetworkPolicySpec(argocd=True, nfs_provisioner=True))
    made = {(r.inputs["metadata"]["namespace"], r.inputs["metadata"]["name"]): r for r in graph.by_type(NETPOL)}
    assert set(made) == {(p["metadata"]["namespace"], p["metadata"]["name"]) for ps in rendered.values() for p in ps}
    for chart, addon in CHART_POLICIES.items():
        deps = set(graph.one(CHART, chart).dependencies)
        for p in rendered[addon]:
            pol = made[(p["metadata"]["namespace"], p["metadata"]["name"])]
            assert pol.urn in deps, (chart, pol.name)
            assert pol.inputs["spec"] == p["spec"]
    # In the namespaces the program creates, the policies follow the Namespace (data flows: its name).
    for key, ns in (("platform-longhorn", "longhorn-system"), ("platform-monitoring", "monitoring"), ("platform-argocd", "argocd")):
        ns_urn = graph.urn_of("kubernetes:core/v1:Namespace", key)
        for (pns, _), pol in made.items():
            if pns == ns:
                assert ns_urn in pol.dependencies, pol.name
    assert graph.one(CHART, "platform-argocd").inputs["values"]["global"]["networkPolicy"] == {"create": False}


def test_network_policies_off_leaves_the_charts_own(chart_paths):
    run = run_platform(chart_paths, network_policies=False)
    assert run.error is None, run.error
    assert run.by_type(NETPOL) == []
    assert run.one(CHART, "platform-argocd").inputs["values"]["global"]["networkPolicy"] == {"create": True}
    assert run.one(CHART, "platform-longhorn").inputs["values"]["networkPolicies"] == {"restrictInternalTraffic": True}
