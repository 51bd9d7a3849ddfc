"""The platform layer (components/platform/) under the real Pulumi CLI against the test Kubernetes API.

tests/k8s/platform_program is copied into a temp dir (the passphrase provider
writes its salt into the stack file) with the checkout's venv linked and the
checkout on PYTHONPATH, so `components` is the repository's own. State is a
file backend in the same temp dir. The steps run in file order against one
stack: up of all six charts, what the cluster holds (CRDs Established,
workloads Available on kwok's nodes, the sealing key, Grafana on its
Longhorn-class volume, the root Application and Argo CD's three projects,
every file of gitops/ accepted by a server-side dry run), a re-preview with
--expect-no-changes, a bad chart value failing preview by name, no generated
secret in clear in the state, destroy (Longhorn's uninstall Job run first, nothing left). A
finalizer destroys what an earlier failure left.

The test plays two controllers that cannot run here: a PersistentVolume
stands in for Longhorn's provisioner (Grafana's claim binds to it), and
during destroy it clears Argo CD's resources finalizer from the root
Application once Pulumi deletes it (Argo CD's controller would, after
deleting what the app made).

Skips, naming it, when the test Kubernetes API (bash .ci/k8s.sh), the Pulumi
toolchain or a provider plugin (bash .ci/plugins.sh --with-kubernetes), or a
chart (MICROCLOUD_CHART_DIR) is missing.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import yaml

import pytest

from components.platform import ARGOCD_PART_OF, CHART_VERSIONS, SEALING_KEY_SECRET, TRAEFIK_AUTH_SECRET, TRAEFIK_CERT_SECRET
from components.render import platform as pv
from components.render.platform.network_policies import alertmanager_pods, prometheus_pods
from support.cli import cli_env, plugin_versions_missing, toolchain_bin
from support.gitops_patch import apply_patch_ops
from components.render.platform.argocd_token import ApiToken, sign_token
from components.render.platform.image_updater import IMAGE_UPDATER_CR, ImageUpdaterSpec, image_updater_object
from support.argocd_verify import VERSION as ARGOCD_VERIFY_VERSION
from support.argocd_verify import validate_policy, verifier, verify
from support.harness import ROOT
from support.netpol import NAMESPACE_LABEL, matches

from .cluster import ApiError, wait_for

pytestmark = pytest.mark.k8s

PROGRAM = Path(__file__).parent / "platform_program"
PLUGINS = ("kubernetes", "random", "tls", "command")
STACK = "k8s"
# Not the defaults, so the test sees the inputs reach the Service.
HTTP_NODEPORT, HTTPS_NODEPORT = 31080, 31443
DOMAIN = "microcloud.test"
OUR_CRD_GROUPS = ("bitnami.com", "traefik.io", "traefik.containo.us", "argoproj.io", "longhorn.io", "monitoring.coreos.com")
NFS_SERVER = "192.0.2.50"  # TEST-NET-1: never contacted, only written into the provisioner's volume
SCRAPE_TARGETS = {"lb1": "192.0.2.61:9100", "infra1": "192.0.2.62:9100"}
GIT_REPO = "https://git.example.test/microcloud.git"
GITOPS = ROOT / "gitops"
GRAFANA_PV = "mc-test-grafana-pv"  # stands in for the volume Longhorn's provisioner would make


def chart_root() -> Path:
    return Path(os.environ.get("MICROCLOUD_CHART_DIR") or Path.home() / ".cache" / "microcloud-charts")


def missing_inputs() -> list[str]:
    missing = []
    if toolchain_bin() is None:
        missing.append("the Pulumi toolchain (bash .ci/toolchain.sh)")
    for name, ver in plugin_versions_missing(PLUGINS):
        missing.append(f"the pulumi_{name} SDK in venv" if ver is None
                       else f"plugin {name}@{ver} (bash .ci/plugins.sh --with-kubernetes)")
    for name, ver in CHART_VERSIONS.items():
        if not (chart_root() / f"{name}-{ver}" / "Chart.yaml").is_file():
            missing.append(f"chart {name}-{ver} in {chart_root()} (MICROCLOUD_CHART_DIR)")
    return missing


class Run:
    """The CLI on a copy of the platform program; every command's output kept for failure messages."""

    def __init__(self, base: Path, kubeconfig: Path):
        self.base = base
        self.work = base / "project"
        self.work.mkdir()
        for f in ("Pulumi.yaml", "__main__.py"):
            shutil.copy2(PROGRAM / f, self.work / f)
        (self.work / "venv").symlink_to(ROOT / "venv")
        env = cli_env(base, toolchain_bin(), PYTHONPATH=str(ROOT), MICROCLOUD_CHART_DIR=str(chart_root()))
        self.env = env
        self.kubeconfig = kubeconfig
        self.transcript: list[str] = []
        self.times: dict[str, float] = {}
        self.destroyed = False

    def pulumi(self, *args: str, timeout: float = 900, step: str = "") -> subprocess.CompletedProcess:
        """``step``: time it; the transcript (and, with MICROCLOUD_K8S_LOG, a file) keeps the output."""
        cmd = ["pulumi", "--non-interactive", "--color=never", *args]
        if args[0] != "stack" or args[1] in ("export", "output"):
            cmd += ["--stack", STACK]
        t0 = time.monotonic()
        res = subprocess.run(cmd, cwd=self.work, env=self.env, capture_output=True, text=True, timeout=timeout)
        if step:
            self.times[step] = round(time.monotonic() - t0, 1)
        entry = f"$ pulumi {' '.join(args)}  [exit {res.returncode}]\n{res.stdout}\n{res.stderr}"
        self.transcript.append(entry)
        if "--show-secrets" not in args:
            # Beside the state, for a look after a failure (pytest keeps the tmp dir).
            with open(self.base / "transcript.log", "a") as f:
                f.write(entry + "\n")
        return res

    def ok(self, *args: str, **kw) -> subprocess.CompletedProcess:
        res = self.pulumi(*args, **kw)
        assert res.returncode == 0, f"pulumi {' '.join(args)} failed:\n{res.stdout[-6000:]}\n{res.stderr[-4000:]}"
        return res

    def output(self, name: str, secret: bool = False):
        return json.loads(self.ok("stack", "output", name, "--json", *(["--show-secrets"] if secret else [])).stdout)

    def init(self) -> None:
        self.ok("stack", "init", STACK, "--secrets-provider", "passphrase")
        for key, value in (
            ("kubeconfig", str(self.kubeconfig)),
            ("chartDir", str(chart_root())),
            ("domain", DOMAIN),
            ("httpNodePort", str(HTTP_NODEPORT)),
            ("httpsNodePort", str(HTTPS_NODEPORT)),
            ("nfsServer", NFS_SERVER),
            ("scrapeTargets", json.dumps(SCRAPE_TARGETS)),
            ("gitRepo", GIT_REPO),
        ):
            self.ok("config", "set", key, value, "--stack", STACK)


@pytest.fixture(scope="module")
def run(k8s_cluster, tmp_path_factory):
    missing = missing_inputs()
    if missing:
        pytest.skip("platform engine tier needs: " + "; ".join(missing))
    r = Run(tmp_path_factory.mktemp("platform"), k8s_cluster.kubeconfig)
    r.init()
    r.started = time.monotonic()
    k8s_cluster.create("/api/v1/persistentvolumes", {
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": GRAFANA_PV},
        "spec": {"storageClassName": pv.LONGHORN_STORAGE_CLASS, "capacity": {"storage": "10Gi"},
                 "accessModes": ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Retain",
                 "hostPath": {"path": "/nonexistent/mc-test-grafana"}},
    })
    try:
        yield r
    finally:
        if not r.destroyed:
            with ArgoCdFinalizer(k8s_cluster):
                r.pulumi("destroy", "--yes", "--skip-preview", step="destroy (cleanup)")
        try:
            k8s_cluster.delete(f"/api/v1/persistentvolumes/{GRAFANA_PV}")
        except ApiError as err:
            if err.status != 404:
                raise
        print(f"\nplatform engine tier times (s): {r.times}")


class ArgoCdFinalizer:
    """During destroy, does what Argo CD's controller would with the root app's resources finalizer.

    Also records whether Longhorn's uninstall Job ran (it is created and removed within the destroy).
    """

    def __init__(self, cluster):
        self.cluster = cluster
        self.stop = threading.Event()
        self.cleared = False
        self.uninstall_job: dict | None = None
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)

    def loop(self):
        app = f"/apis/argoproj.io/v1alpha1/namespaces/{pv.ARGOCD_NAMESPACE}/applications/{pv.ROOT_APP}"
        job = f"/apis/batch/v1/namespaces/{pv.LONGHORN_NAMESPACE}/jobs/{pv.LONGHORN_UNINSTALL_JOB}"
        while not self.stop.wait(0.3):
            status, obj = self.cluster.raw("GET", app)
            if status == 200 and obj["metadata"].get("deletionTimestamp") and obj["metadata"].get("finalizers"):
                self.cluster.raw("PATCH", app, {"metadata": {"finalizers": None}},
                                 content_type="application/merge-patch+json")
                self.cleared = True
            status, obj = self.cluster.raw("GET", job)
            if status == 200:
                self.uninstall_job = obj


def pulumi_secret_sig() -> str:
    """The key that marks a secret value in `pulumi stack export`."""
    return "4dabf18193072939515e22adb298388d"


def crd(cluster, name: str) -> dict:
    return cluster.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")


def condition(obj: dict, kind: str) -> bool:
    return any(c["type"] == kind and c["status"] == "True" for c in obj.get("status", {}).get("conditions", []))


def decoded(secret: dict, key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


def assert_bcrypt_of(password: str, digest: str) -> None:
    """A bcrypt hash (what htpasswd and Argo CD read); checked against the password where bcrypt is installed."""
    assert re.fullmatch(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}", digest), digest[:7]
    try:
        import bcrypt
    except ImportError:
        return
    assert bcrypt.checkpw(password.encode(), digest.encode())


def test_up(run):
    res = run.ok("up", "--yes", "--skip-preview", step="up")
    assert "error" not in res.stderr.lower(), res.stderr
    run.state = {"up": True}


CRDS = ("sealedsecrets.bitnami.com", "ingressroutes.traefik.io", "middlewares.traefik.io", "tlsstores.traefik.io",
        "applications.argoproj.io", "applicationsets.argoproj.io", "appprojects.argoproj.io",
        "volumes.longhorn.io", "settings.longhorn.io", "nodes.longhorn.io",
        "prometheuses.monitoring.coreos.com", "servicemonitors.monitoring.coreos.com",
        "prometheusrules.monitoring.coreos.com", "alertmanagers.monitoring.coreos.com")


def test_crds_established(run, k8s_cluster):
    for name in CRDS:
        obj = wait_for(lambda: (lambda o: o if condition(o, "Established") else None)(crd(k8s_cluster, name)),
                       30, f"CRD {name} Established")
        assert obj["metadata"]["name"] == name


# namespace -> the workloads our charts put there (Deployments, DaemonSets, StatefulSets by kind).
WORKLOADS = {
    "kube-system": {"deployments": ["traefik", pv.SEALED_SECRETS_CONTROLLER, "nfs-provisioner-nfs-subdir-external-provisioner"]},
    pv.LONGHORN_NAMESPACE: {"deployments": ["longhorn-driver-deployer", "longhorn-ui"], "daemonsets": [pv.LONGHORN_MANAGER]},
    pv.MONITORING_NAMESPACE: {
        "deployments": ["kube-prometheus-stack-operator", "kube-prometheus-stack-grafana",
                        "kube-prometheus-stack-kube-state-metrics"],
        "daemonsets": ["kube-prometheus-stack-prometheus-node-exporter"],
    },
    pv.ARGOCD_NAMESPACE: {
        "deployments": ["argocd-server", "argocd-repo-server", "argocd-redis", "argocd-applicationset-controller",
                        "argocd-notifications-controller"],
        "statefulsets": ["argocd-application-controller"],
    },
}


def workload_ready(obj: dict, kind: str) -> bool:
    st = obj.get("status", {})
    if kind == "deployments":
        return condition(obj, "Available") and st.get("readyReplicas", 0) == obj["spec"].get("replicas", 1)
    if kind == "daemonsets":
        return 0 < st.get("desiredNumberScheduled", 0) == st.get("numberReady", -1)
    return st.get("readyReplicas", 0) == obj["spec"].get("replicas", 1)


def test_workloads_available_on_the_fake_nodes(run, k8s_cluster):
    """Every chart's workloads are scheduled on kwok's nodes and report ready (kwok runs no container)."""
    not_ready = []
    for ns, kinds in WORKLOADS.items():
        for kind, names in kinds.items():
            for name in names:
                path = f"/apis/apps/v1/namespaces/{ns}/{kind}/{name}"
                try:
                    wait_for(lambda: workload_ready(k8s_cluster.get(path), kind), 60, f"{kind} {ns}/{name} ready")
                except TimeoutError as err:
                    not_ready.append(str(err))
    assert not not_ready, not_ready


def test_network_policies_in_place_and_selecting_the_real_pods(run, k8s_cluster):
    """Our policies are in the cluster as rendered, and their selectors pick the pods the charts really made.

    The pods' labels are the API server's (the charts' templates through the provider), so a
    selector that names a label the chart does not set fails here, not only in the evaluator.
    """
    rendered = pv.network_policies(pv.NetworkPolicySpec(argocd=True, nfs_provisioner=True))
    pods: dict[str, list[dict]] = {}
    for ns in WORKLOADS:
        pods[ns] = k8s_cluster.get(f"/api/v1/namespaces/{ns}/pods")["items"]
    # The operator makes these from its Prometheus and Alertmanager objects; it runs no container here.
    operator_made = [prometheus_pods(pv.NetworkPolicySpec()), alertmanager_pods(pv.NetworkPolicySpec())]
    missing, empty = [], []
    for addon, pols in rendered.items():
        for pol in pols:
            ns, name = pol["metadata"]["namespace"], pol["metadata"]["name"]
            try:
                got = k8s_cluster.get(f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/{name}")
            except ApiError as err:
                missing.append(f"{ns}/{name}: HTTP {err.status}")
                continue
            assert got["spec"]["podSelector"] == pol["spec"]["podSelector"], name
            selected = [p["metadata"]["name"] for p in pods[ns] if matches(pol["spec"]["podSelector"], p["metadata"].get("labels") or {})]
            # The operator's and Longhorn's run-time pods (Prometheus, Alertmanager, share managers) do not exist here.
            if not selected and name not in ("microcloud-prometheus", "microcloud-alertmanager", "microcloud-share-manager"):
                empty.append(f"{ns}/{name}")
            # Every pod peer of a rule names pods that exist (Traefik, Grafana, Argo CD's components).
            for rule in pol["spec"].get("ingress") or []:
                for peer in rule.get("from") or []:
                    if "podSelector" not in peer or peer["podSelector"] in operator_made:
                        continue
                    peer_ns = (peer.get("namespaceSelector") or {}).get("matchLabels", {}).get(NAMESPACE_LABEL, ns)
                    if not any(matches(peer["podSelector"], p["metadata"].get("labels") or {}) for p in pods[peer_ns]):
                        empty.append(f"{ns}/{name}: no pod is the peer {peer}")
    assert not missing, missing
    assert not empty, f"policies or peers that select no real pod: {empty}"
    # Every pod of ours in kube-system is isolated by its own policy; K3s' own pods are left alone.
    ks = [p for ps in rendered.values() for p in ps if p["metadata"]["namespace"] == "kube-system"]
    for name in WORKLOADS["kube-system"]["deployments"]:
        for pod in (p for p in pods["kube-system"] if p["metadata"]["name"].startswith(name)):
            assert any(matches(p["spec"]["podSelector"], pod["metadata"].get("labels") or {}) for p in ks), pod["metadata"]["name"]
    # Argo CD's chart policies are off (ours replace them); Longhorn's own are there.
    argocd = {p["metadata"]["name"] for p in k8s_cluster.get(f"/apis/networking.k8s.io/v1/namespaces/{pv.ARGOCD_NAMESPACE}/networkpolicies")["items"]}
    assert argocd == {p["metadata"]["name"] for p in rendered["argocd"]}, argocd
    longhorn = {p["metadata"]["name"] for p in k8s_cluster.get(f"/apis/networking.k8s.io/v1/namespaces/{pv.LONGHORN_NAMESPACE}/networkpolicies")["items"]}
    assert {"longhorn-manager", "longhorn-webhook", "instance-manager"} <= longhorn, longhorn


def test_longhorn_is_the_default_storage_class(run, k8s_cluster):
    sc = k8s_cluster.get(f"/apis/storage.k8s.io/v1/storageclasses/{pv.LONGHORN_STORAGE_CLASS}")
    assert sc["provisioner"] == "driver.longhorn.io" and sc["reclaimPolicy"] == "Delete"  # a dev stack
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    others = [c["metadata"]["name"] for c in k8s_cluster.get("/apis/storage.k8s.io/v1/storageclasses")["items"]
              if (c["metadata"].get("annotations") or {}).get("storageclass.kubernetes.io/is-default-class") == "true"]
    assert others == [pv.LONGHORN_STORAGE_CLASS], others
    settings = k8s_cluster.get(f"/api/v1/namespaces/{pv.LONGHORN_NAMESPACE}/configmaps/longhorn-default-setting")
    values = yaml.safe_load(settings["data"]["default-setting.yaml"])
    assert values["default-data-path"] == "/var/lib/longhorn" and values["deleting-confirmation-flag"] is True, values
    nfs = k8s_cluster.get("/apis/storage.k8s.io/v1/storageclasses/nfs")
    assert nfs["reclaimPolicy"] == "Delete" and nfs["parameters"]["archiveOnDelete"] == "false"
    dep = k8s_cluster.get("/apis/apps/v1/namespaces/kube-system/deployments/nfs-provisioner-nfs-subdir-external-provisioner")
    # With mount options the chart mounts the export through a PV/PVC pair of its own.
    (claim,) = [v["persistentVolumeClaim"]["claimName"] for v in dep["spec"]["template"]["spec"]["volumes"]
                if "persistentVolumeClaim" in v]
    pvc = k8s_cluster.get(f"/api/v1/namespaces/kube-system/persistentvolumeclaims/{claim}")
    assert pvc["status"]["phase"] == "Bound", pvc["status"]
    export = k8s_cluster.get(f"/api/v1/persistentvolumes/{pvc['spec']['volumeName']}")
    assert export["spec"]["nfs"] == {"server": NFS_SERVER, "path": "/srv/nfs"}
    assert export["spec"]["mountOptions"] == ["nfsvers=4.1"]


def test_monitoring_grafana_volume_password_and_scrape_targets(run, k8s_cluster):
    ns = pv.MONITORING_NAMESPACE
    pvc = k8s_cluster.get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/grafana")
    assert pvc["spec"]["storageClassName"] == pv.LONGHORN_STORAGE_CLASS
    assert pvc["status"]["phase"] == "Bound" and pvc["spec"]["volumeName"] == GRAFANA_PV
    grafana = k8s_cluster.get(f"/apis/apps/v1/namespaces/{ns}/deployments/kube-prometheus-stack-grafana")
    claims = [v["persistentVolumeClaim"]["claimName"] for v in grafana["spec"]["template"]["spec"]["volumes"]
              if "persistentVolumeClaim" in v]
    assert claims == ["grafana"], claims
    secret = k8s_cluster.get(f"/api/v1/namespaces/{ns}/secrets/grafana-admin")
    assert decoded(secret, "admin-password") == run.output("grafana_admin_password", secret=True)
    # The webhooks are off (their certificates come from hook Jobs): no webhook configuration points nowhere.
    for kind in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
        items = k8s_cluster.get(f"/apis/admissionregistration.k8s.io/v1/{kind}")["items"]
        assert not [i["metadata"]["name"] for i in items if "prometheus" in i["metadata"]["name"]]
    prom = k8s_cluster.get(f"/apis/monitoring.coreos.com/v1/namespaces/{ns}/prometheuses/kube-prometheus-stack-prometheus")
    ref = prom["spec"]["additionalScrapeConfigs"]
    jobs = yaml.safe_load(decoded(k8s_cluster.get(f"/api/v1/namespaces/{ns}/secrets/{ref['name']}"), ref["key"]))
    (job,) = [j for j in jobs if j["job_name"] == pv.NODE_EXPORTER_JOB]
    assert {sc["labels"]["instance"]: sc["targets"] for sc in job["static_configs"]} == \
        {name: [addr] for name, addr in SCRAPE_TARGETS.items()}
    rules = k8s_cluster.get(f"/apis/monitoring.coreos.com/v1/namespaces/{ns}/prometheusrules")["items"]
    alerts = {r["alert"] for pr in rules for g in pr["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert {"ArgoCdAppSyncFailed", "ArgoCdAppOutOfSync", "ArgoCdRepoUnreachable"} <= alerts
    # Argo CD's ServiceMonitors exist (they need these CRDs, so Argo CD came after the stack).
    sms = k8s_cluster.get(f"/apis/monitoring.coreos.com/v1/namespaces/{pv.ARGOCD_NAMESPACE}/servicemonitors")["items"]
    assert sms, "Argo CD's ServiceMonitors"


def gitops_objects(sub: str) -> list[tuple[str, dict]]:
    out = []
    for f in sorted((GITOPS / sub).rglob("*.yaml")):
        # Not manifests: the kustomization lists them, the Image Updater opt-in is read by the ApplicationSet.
        if f.name in ("kustomization.yaml", pv.IMAGE_UPDATES_FILE):
            continue
        for doc in yaml.safe_load_all(f.read_text()):
            if doc:
                out.append((str(f.relative_to(ROOT)), doc))
    return out


API_PATHS = {
    ("argoproj.io/v1alpha1", "ApplicationSet"): "/apis/argoproj.io/v1alpha1/namespaces/{ns}/applicationsets",
    ("argoproj.io/v1alpha1", "AppProject"): "/apis/argoproj.io/v1alpha1/namespaces/{ns}/appprojects",
    ("argoproj.io/v1alpha1", "Application"): "/apis/argoproj.io/v1alpha1/namespaces/{ns}/applications",
    ("v1", "ConfigMap"): "/api/v1/namespaces/{ns}/configmaps",
    ("v1", "Service"): "/api/v1/namespaces/{ns}/services",
    ("apps/v1", "Deployment"): "/apis/apps/v1/namespaces/{ns}/deployments",
}


def dry_run(cluster, obj: dict, ns: str) -> tuple[int, object]:
    path = API_PATHS[(obj["apiVersion"], obj["kind"])].format(ns=ns)
    return cluster.raw("POST", path, obj, query={"dryRun": "All", "fieldValidation": "Strict"})


def test_root_app_and_gitops_accepted(run, k8s_cluster, k8s_namespace):
    """The root app Pulumi made, and every object in gitops/ (root as Argo CD renders it), dry-run strictly."""
    app = k8s_cluster.get(f"/apis/argoproj.io/v1alpha1/namespaces/{pv.ARGOCD_NAMESPACE}/applications/{pv.ROOT_APP}")
    src = app["spec"]["source"]
    assert (src["repoURL"], src["targetRevision"], src["path"]) == (GIT_REPO, "main", "gitops/root")
    (patch,) = src["kustomize"]["patches"]
    ops = json.loads(patch["patch"])
    assert app["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    assert app["metadata"]["finalizers"] == [pv.CASCADE_FINALIZER]
    assert app["spec"]["project"] == pv.ROOT_PROJECT
    cm = k8s_cluster.get(f"/api/v1/namespaces/{pv.ARGOCD_NAMESPACE}/configmaps/argocd-cm")
    assert "obj.status.health.status" in cm["data"]["resource.customizations.health.argoproj.io_Application"]
    # The projects Pulumi made, as rendered: the API server kept every field (the empty lists too).
    spec = pv.GitOpsSpec(repo_url=GIT_REPO, revision="main")
    for want in (pv.root_project(spec), pv.apps_project(spec), pv.default_project()):
        got = k8s_cluster.get(f"/apis/argoproj.io/v1alpha1/namespaces/{pv.ARGOCD_NAMESPACE}/appprojects/{want['metadata']['name']}")
        assert got["spec"] == want["spec"], (want["metadata"]["name"], got["spec"])

    rejected = []
    root = gitops_objects("root")
    kinds = {o["kind"] for _, o in root}
    assert kinds == {"ApplicationSet"}, kinds  # the projects are the program's, not Git's
    for f, obj in root:
        if obj["kind"] == "ApplicationSet" and obj["metadata"]["name"] == patch["target"]["name"]:
            obj = apply_patch_ops(obj, ops)
            assert all(g["git"]["repoURL"] == GIT_REPO for g in obj["spec"]["generators"][0]["merge"]["generators"])
        status, body = dry_run(k8s_cluster, obj, obj["metadata"]["namespace"])
        if status >= 300:
            rejected.append(f"{f}: HTTP {status}: {body.get('message') if isinstance(body, dict) else body}")
    apps = gitops_objects("apps")
    assert apps, "gitops/apps holds an app"
    for f, obj in apps:
        status, body = dry_run(k8s_cluster, obj, k8s_namespace)
        if status >= 300:
            rejected.append(f"{f}: HTTP {status}: {body.get('message') if isinstance(body, dict) else body}")
    assert not rejected, rejected
    # The check can fail: a field the CRD does not know is rejected.
    _, appset = next((f, o) for f, o in root if o["kind"] == "ApplicationSet")
    bad = {**appset, "spec": {**appset["spec"], "generator": appset["spec"]["generators"]}}
    status, body = dry_run(k8s_cluster, bad, pv.ARGOCD_NAMESPACE)
    assert status == 400 and "generator" in json.dumps(body), (status, body)


def test_sealed_secrets_controller_and_key(run, k8s_cluster):
    ns = pv.SEALED_SECRETS_NAMESPACE
    dep = k8s_cluster.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{pv.SEALED_SECRETS_CONTROLLER}")
    wait_for(lambda: condition(k8s_cluster.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{pv.SEALED_SECRETS_CONTROLLER}"),
                               "Available"), 60, "sealed-secrets-controller Available")
    # It never makes keys of its own: the only one is the one Pulumi keeps.
    args = " ".join(dep["spec"]["template"]["spec"]["containers"][0].get("args", []))
    assert "--key-renew-period 0" in args, args

    label = "=".join(pv.SEALING_KEY_LABEL)
    keys = k8s_cluster.get(f"/api/v1/namespaces/{ns}/secrets", query={"labelSelector": label})["items"]
    assert [s["metadata"]["name"] for s in keys] == [SEALING_KEY_SECRET], "exactly one active sealing key, ours"
    secret = keys[0]
    assert secret["type"] == "kubernetes.io/tls"
    cert = run.output("sealing_certificate")
    assert cert.startswith("-----BEGIN CERTIFICATE-----")
    assert decoded(secret, "tls.crt") == cert
    key = decoded(secret, "tls.key")
    assert "PRIVATE KEY" in key
    # The certificate is the private key's: its public key matches.
    pub = subprocess.run(["openssl", "x509", "-noout", "-pubkey"], input=cert, capture_output=True, text=True, check=True)
    pub2 = subprocess.run(["openssl", "pkey", "-pubout"], input=key, capture_output=True, text=True, check=True)
    assert pub.stdout == pub2.stdout
    bits = subprocess.run(["openssl", "x509", "-noout", "-text"], input=cert, capture_output=True, text=True, check=True)
    assert "(4096 bit)" in bits.stdout


def test_traefik_nodeports_and_secrets(run, k8s_cluster):
    ns = pv.TRAEFIK_NAMESPACE
    svc = k8s_cluster.get(f"/api/v1/namespaces/{ns}/services/traefik")
    assert svc["spec"]["type"] == "NodePort"
    ports = {p["name"]: p.get("nodePort") for p in svc["spec"]["ports"]}
    assert ports == {"web": HTTP_NODEPORT, "websecure": HTTPS_NODEPORT}, ports
    wait_for(lambda: condition(k8s_cluster.get(f"/apis/apps/v1/namespaces/{ns}/deployments/traefik"), "Available"),
             60, "traefik Available")

    cert = decoded(k8s_cluster.get(f"/api/v1/namespaces/{ns}/secrets/{TRAEFIK_CERT_SECRET}"), "tls.crt")
    assert cert == run.output("default_certificate")
    text = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName"], input=cert,
                          capture_output=True, text=True, check=True).stdout
    assert f"DNS:*.{DOMAIN}" in text, text

    users = decoded(k8s_cluster.get(f"/api/v1/namespaces/{ns}/secrets/{TRAEFIK_AUTH_SECRET}"), "users")
    user, digest = users.split(":", 1)
    password = run.output("dashboard_password", secret=True)
    assert user == "admin" and digest.startswith("$2") and password not in users
    assert_bcrypt_of(password, digest)

    mw = k8s_cluster.get(f"/apis/traefik.io/v1alpha1/namespaces/{ns}/middlewares/{pv.TRAEFIK_DASHBOARD_MIDDLEWARE}")
    assert mw["spec"]["basicAuth"]["secret"] == TRAEFIK_AUTH_SECRET


def test_argocd_secrets(run, k8s_cluster):
    ns = pv.ARGOCD_NAMESPACE
    secret = k8s_cluster.get(f"/api/v1/namespaces/{ns}/secrets/{pv.ARGOCD_SECRET}")
    assert secret["metadata"]["labels"].items() >= ARGOCD_PART_OF.items()
    password = run.output("argocd_admin_password", secret=True)
    assert_bcrypt_of(password, decoded(secret, "admin.password"))
    assert decoded(secret, "admin.passwordMtime").endswith("Z")
    name, key = pv.ARGOCD_REDIS_SECRET
    assert len(decoded(k8s_cluster.get(f"/api/v1/namespaces/{ns}/secrets/{name}"), key)) >= 32
    for dep in ("argocd-server", "argocd-repo-server", "argocd-redis"):
        wait_for(lambda: condition(k8s_cluster.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{dep}"), "Available"),
                 60, f"{dep} Available")


def test_image_updater_object_is_accepted_by_its_crd(run, k8s_cluster):
    """The ImageUpdater Pulumi made passed its CRD's schema and CEL rules; a broken one is refused by them."""
    ns = pv.ARGOCD_NAMESPACE
    path = f"/apis/argocd-image-updater.argoproj.io/v1alpha1/namespaces/{ns}/imageupdaters"
    got = k8s_cluster.get(f"{path}/{IMAGE_UPDATER_CR}")
    assert got["spec"]["applicationRefs"] == image_updater_object(ImageUpdaterSpec())["spec"]["applicationRefs"]
    bad = image_updater_object(ImageUpdaterSpec())
    bad["metadata"]["name"] = "broken"
    bad["spec"]["applicationRefs"][0]["useAnnotations"] = False  # and no images: the CRD's rule refuses it
    status, body = k8s_cluster.raw("POST", path, bad, query={"dryRun": "All", "fieldValidation": "Strict"})
    assert status == 422 and "useAnnotations" in json.dumps(body), (status, body)
    dep = k8s_cluster.get(f"/apis/apps/v1/namespaces/{ns}/deployments/argocd-image-updater-controller")
    chart = yaml.safe_load((chart_root() / f"argocd-image-updater-{CHART_VERSIONS['argocd-image-updater']}" / "Chart.yaml").read_text())
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == f"quay.io/argoprojlabs/argocd-image-updater:{chart['appVersion']}"


def test_ci_account_token_is_accepted_by_argo_cds_own_code(run, k8s_cluster):
    """The CI token the stack exports, checked against argocd-cm, argocd-rbac-cm and argocd-secret as the API
    server holds them (the chart's and Pulumi's), by Argo CD v3.4.4's own session manager and RBAC enforcer."""
    binary = verifier()
    if binary is None:
        pytest.skip(f"no argocd-verify {ARGOCD_VERIFY_VERSION} beside the plugins (tests/support/argocd_verify.py)")
    ns = pv.ARGOCD_NAMESPACE
    cm = k8s_cluster.get(f"/api/v1/namespaces/{ns}/configmaps/argocd-cm")
    rbac = k8s_cluster.get(f"/api/v1/namespaces/{ns}/configmaps/argocd-rbac-cm")
    secret = k8s_cluster.get(f"/api/v1/namespaces/{ns}/secrets/{pv.ARGOCD_SECRET}")
    token = run.output("argocd_ci_token", secret=True)
    assert validate_policy(binary, rbac).returncode == 0
    apps = pv.APP_PROJECT
    checks = [
        f"applications,get,{apps}/example:allow", f"applications,sync,{apps}/example:allow",
        f"applications,delete,{apps}/example:deny", f"applications,create,{apps}/example:deny",
        f"applications,update,{apps}/example:deny", f"applications,override,{apps}/example:deny",
        f"applications,get,{pv.ROOT_PROJECT}/root:deny", f"applications,sync,{pv.ROOT_PROJECT}/root:deny",
        "applications,sync,default/x:deny", "projects,get,microcloud-apps:deny", "clusters,get,*:deny",
        "repositories,get,*:deny", "accounts,update,*:deny", "exec,create,*:deny",
    ]
    rc, answer, err = verify(binary, cm=cm, rbac=rbac, secret=secret, token=token, checks=checks)
    assert rc == 0 and answer["ok"] and answer["subject"] == "github-actions", (answer, err[-2000:])
    assert token not in json.dumps(answer) + err
    # Argo CD refuses what the listing does not name: the same key, another id.
    header, payload, _ = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged = sign_token(ApiToken(account="github-actions", token_id="00000000-0000-4000-8000-000000000000",
                                 issued_at=claims["iat"]), decoded(secret, "server.secretkey"))
    rc, answer, err = verify(binary, cm=cm, rbac=rbac, secret=secret, token=forged, checks=checks[:1])
    assert rc == 1 and "does not have token with id" in answer.get("error", "") + err, (answer, err[-2000:])


def test_repreview_no_changes(run):
    run.ok("preview", "--expect-no-changes", "--diff", step="re-preview")


def test_bad_chart_value_fails_preview_naming_the_resource(run):
    """A wrong type in a value we set (the NFS provisioner's replica count as a word) fails preview, by name."""
    run.ok("config", "set", "extraValues", json.dumps({"nfs-subdir-external-provisioner": {"replicaCount": "two"}}))
    try:
        res = run.pulumi("preview", step="bad-value preview")
    finally:
        run.ok("config", "rm", "extraValues")
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert "platform-nfs-provisioner" in out, out[-3000:]
    assert "replicas" in out, out[-3000:]


def test_no_secret_in_clear(run, k8s_cluster):
    state = run.ok("stack", "export").stdout
    sealing_key = decoded(k8s_cluster.get(
        f"/api/v1/namespaces/{pv.SEALED_SECRETS_NAMESPACE}/secrets/{SEALING_KEY_SECRET}"), "tls.key")
    body = "".join(line for line in sealing_key.splitlines() if "-----" not in line)
    secrets = {
        # From the middle: the start of an RSA key's body is its modulus, public and in the certificate.
        "sealing private key": body[len(body) // 2:len(body) // 2 + 64],
        "dashboard password": run.output("dashboard_password", secret=True),
        "dashboard htpasswd hash": decoded(k8s_cluster.get(
            f"/api/v1/namespaces/{pv.TRAEFIK_NAMESPACE}/secrets/{TRAEFIK_AUTH_SECRET}"), "users").split(":", 1)[1],
        "argocd admin password": run.output("argocd_admin_password", secret=True),
        "argocd redis password": decoded(k8s_cluster.get(
            f"/api/v1/namespaces/{pv.ARGOCD_NAMESPACE}/secrets/{pv.ARGOCD_REDIS_SECRET[0]}"), pv.ARGOCD_REDIS_SECRET[1]),
        "grafana admin password": run.output("grafana_admin_password", secret=True),
        "argocd ci token": run.output("argocd_ci_token", secret=True),
        "argocd server key": decoded(k8s_cluster.get(
            f"/api/v1/namespaces/{pv.ARGOCD_NAMESPACE}/secrets/{pv.ARGOCD_SECRET}"), "server.secretkey"),
    }
    assert all(len(v) >= 24 for v in secrets.values()), "each probe is long enough to mean something"
    in_state = [name for name, v in secrets.items() if v in state]
    assert not in_state, f"in clear in `pulumi stack export`: {in_state}"
    # The kubeconfig Longhorn's uninstall command gets on destroy is in state only as ciphertext.
    (cmd,) = [r for r in json.loads(state)["deployment"]["resources"]
              if r["type"] == "command:local:Command" and "longhorn" in r["urn"]]
    kubeconfig_text = Path(run.kubeconfig).read_text()
    for side in ("inputs", "outputs"):
        env = cmd[side]["environment"]
        value = env if "ciphertext" in env else env["MICROCLOUD_KUBECONFIG"]  # all secret, or that one value
        assert set(value) == {pulumi_secret_sig(), "ciphertext"}, (side, list(value))
    assert json.dumps(kubeconfig_text)[1:-1] not in state, "the kubeconfig in clear in state"
    # What the CLI printed, but for the test's own `stack output --show-secrets`.
    logs = "\n".join(t for t in run.transcript if "--show-secrets" not in t.splitlines()[0])
    in_logs = [name for name, v in secrets.items() if v in logs]
    assert not in_logs, f"in clear in the CLI's output: {in_logs}"


def test_destroy_leaves_nothing(run, k8s_cluster):
    with ArgoCdFinalizer(k8s_cluster) as argocd:
        run.ok("destroy", "--yes", "--skip-preview", step="destroy")
    run.destroyed = True
    assert argocd.cleared, "the root Application carried Argo CD's resources finalizer"
    # Longhorn's pre-delete hook ran, as a Job, while Longhorn was still there, and was cleaned up.
    assert argocd.uninstall_job is not None, "Longhorn's uninstall Job was never created"
    spec = argocd.uninstall_job["spec"]["template"]["spec"]["containers"][0]
    assert spec["command"] == ["longhorn-manager", "uninstall", "--force"] and "longhorn-manager" in spec["image"]
    gone = []
    for path in (
        f"/api/v1/namespaces/kube-system/secrets/{SEALING_KEY_SECRET}",
        f"/api/v1/namespaces/kube-system/secrets/{TRAEFIK_CERT_SECRET}",
        f"/api/v1/namespaces/kube-system/secrets/{TRAEFIK_AUTH_SECRET}",
        f"/apis/apps/v1/namespaces/kube-system/deployments/{pv.SEALED_SECRETS_CONTROLLER}",
        "/apis/apps/v1/namespaces/kube-system/deployments/traefik",
        "/api/v1/namespaces/kube-system/services/traefik",
        f"/api/v1/namespaces/{pv.ARGOCD_NAMESPACE}",
        f"/api/v1/namespaces/{pv.LONGHORN_NAMESPACE}",
        f"/api/v1/namespaces/{pv.MONITORING_NAMESPACE}",
        f"/apis/storage.k8s.io/v1/storageclasses/{pv.LONGHORN_STORAGE_CLASS}",
        "/apis/storage.k8s.io/v1/storageclasses/nfs",
    ):
        try:
            k8s_cluster.get(path)
        except ApiError as err:
            assert err.status == 404, err
            continue
        gone.append(path)
    assert not gone, f"still there after destroy: {gone}"
    left = kube_system_leftovers(k8s_cluster)
    assert not left, f"objects of ours still in kube-system after destroy: {left}"
    crds = [c["metadata"]["name"] for c in k8s_cluster.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")["items"]
            if c["spec"]["group"].endswith(OUR_CRD_GROUPS)]
    print(f"\nCRDs left after destroy: {crds or 'none'}")
    assert not crds, f"CRDs left after destroy (keep_crds is off in this program): {crds}"
    cluster_wide = []
    for path in ("/apis/rbac.authorization.k8s.io/v1/clusterroles", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                 "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
                 "/apis/scheduling.k8s.io/v1/priorityclasses", "/apis/networking.k8s.io/v1/ingressclasses"):
        for item in k8s_cluster.get(path)["items"]:
            labels = item["metadata"].get("labels") or {}
            if labels.get("app.kubernetes.io/managed-by") == "Helm":
                cluster_wide.append(f"{path.rsplit('/', 1)[1]} {item['metadata']['name']}")
    assert not cluster_wide, f"cluster-wide objects of our charts left: {cluster_wide}"
    run.times["total"] = round(time.monotonic() - run.started, 1)


def kube_system_leftovers(cluster) -> list[str]:
    """Secrets, Deployments, Services and ServiceAccounts in kube-system that our releases or Secrets made."""
    left = []
    for path, kind in (("/api/v1/namespaces/kube-system/secrets", "Secret"),
                       ("/apis/apps/v1/namespaces/kube-system/deployments", "Deployment"),
                       ("/api/v1/namespaces/kube-system/services", "Service"),
                       ("/api/v1/namespaces/kube-system/serviceaccounts", "ServiceAccount"),
                       ("/apis/networking.k8s.io/v1/namespaces/kube-system/networkpolicies", "NetworkPolicy")):
        for item in cluster.get(path)["items"]:
            meta = item["metadata"]
            name = meta["name"]
            labels = meta.get("labels") or {}
            ours = (labels.get("app.kubernetes.io/managed-by") == "Helm"
                    or labels.get("app.kubernetes.io/instance") in ("traefik", "sealed-secrets", "nfs-provisioner")
                    or labels.get("app.kubernetes.io/managed-by") == "microcloud"
                    or name.startswith(("traefik", "sealed-secrets", "nfs-provisioner", "kube-prometheus-stack")))
            if ours:
                left.append(f"{kind} {name}")
    return left
