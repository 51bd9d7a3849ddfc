"""Platform: what runs on the cluster, deployed through one explicit Kubernetes provider.

Sealed Secrets (with a sealing key pair Pulumi generates and keeps), Traefik
(NodePorts HAProxy targets, a default TLS certificate, dashboard behind basic
auth), Longhorn (the default StorageClass), an NFS StorageClass
(nfs-subdir-external-provisioner), kube-prometheus-stack and Argo CD with a
root Application (app-of-apps) over ``gitops/``. Charts come pinned from
their repositories or from local chart directories / ``.tgz`` files
(``ChartSource``); values come from ``components/render/platform/``.

The provider renders charts without Helm hooks, so what a hook would have made
(argocd-redis, argocd-secret) is made here from generated secrets, and
Longhorn's pre-delete uninstall Job is run by a command on ``destroy``.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import pulumi
import pulumi_command as command
import pulumi_kubernetes as k8s
import pulumi_random as random
import pulumi_tls as tls
import yaml

from components.render import platform as pv

# The chart versions this program is written and tested against (pins and repositories: pv.CHARTS).
CHART_VERSIONS: Mapping[str, str] = pv.CHART_VERSIONS
CHARTS = pv.CHARTS

SEALING_KEY_SECRET = "sealed-secrets-key"
TRAEFIK_CERT_SECRET = "traefik-default-cert"
TRAEFIK_AUTH_SECRET = "traefik-dashboard-auth"
GRAFANA_ADMIN_SECRET = "grafana-admin"
GRAFANA_CLAIM = "grafana"
ARGOCD_PART_OF = {"app.kubernetes.io/part-of": "argocd"}  # argocd-server only reads Secrets with this label
NFS_NAMESPACE = "kube-system"
# Every generated password, by its key in PlatformArgs.rotation.
ROTATABLE = ("dashboard", "argocd-admin", "argocd-server-key", "argocd-redis", "grafana-admin")
# Pods that read a password only when they start carry its keeper: a bump restarts them.
ROTATION_ANNOTATION = "microcloud.io/rotation-{}"
# The sealing certificate is renewed (same key, so every SealedSecret stays
# readable) by the `up` that runs within a year of its expiry.
_TEN_YEARS_H = 10 * 365 * 24
_ONE_YEAR_H = 365 * 24
_EXACT_VERSION = re.compile(r"\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?")


@dataclass(frozen=True)
class ChartSource:
    """Where a chart comes from: ``path`` (a chart directory or ``.tgz``) or ``repo`` + ``version``.

    ``version`` is exact (no ranges: never floating). A ``path``'s Chart.yaml
    must name the chart and this version; ``repo`` None with no ``path``: the
    chart's public repository (``pv.CHARTS``).
    """

    version: str
    repo: Optional[str] = None
    path: Optional[str] = None


def _chart_meta(path: Path) -> dict:
    """Chart.yaml of a chart directory, or of a packaged chart (``<name>/Chart.yaml`` inside a .tgz)."""
    if path.is_dir():
        return yaml.safe_load((path / "Chart.yaml").read_text()) or {}
    with tarfile.open(path) as tar:
        member = next((m for m in tar.getmembers() if m.isfile() and m.name.count("/") == 1
                       and m.name.endswith("/Chart.yaml")), None)
        if member is None:
            raise OSError("no <name>/Chart.yaml in the archive")
        return yaml.safe_load(tar.extractfile(member).read()) or {}


def chart_dir(name: str, path: str, wanted: str) -> str:
    """``path`` (absolute) if it is a chart directory or .tgz of chart ``name`` at version ``wanted``; one-line ValueError otherwise."""
    try:
        meta = _chart_meta(Path(path))
    except (OSError, tarfile.TarError, yaml.YAMLError) as err:
        what = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"platform: chart {name}: no Chart.yaml in {path} ({what}; wanted version {wanted})") from None
    found = str(meta.get("version", ""))
    if meta.get("name") != name or found != wanted:
        raise ValueError(
            f"platform: chart {name}: {path} holds {meta.get('name')} {found or '(no version)'}, wanted {name} {wanted}"
        )
    return str(Path(path).resolve())


def chart_sources(chart_dir: Optional[str], overrides: Optional[Mapping[str, ChartSource]] = None) -> dict[str, ChartSource]:
    """A ChartSource for every pinned chart.

    ``overrides`` (chart name -> ChartSource, e.g. from stack config) win;
    otherwise ``<chart_dir>/<name>-<version>`` when it holds a Chart.yaml
    ($MICROCLOUD_CHART_DIR, for air-gapped sites), else the pinned repository.
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(pv.CHARTS))
    if unknown:
        raise ValueError(f"platform: no chart named {', '.join(unknown)} (charts: {', '.join(pv.CHARTS)})")
    out: dict[str, ChartSource] = {}
    for name, pin in pv.CHARTS.items():
        if name in overrides:
            out[name] = overrides[name]
            continue
        local = Path(chart_dir) / f"{name}-{pin.version}" if chart_dir else None
        if local is not None and (local / "Chart.yaml").is_file():
            out[name] = ChartSource(version=pin.version, path=str(local))
        else:
            out[name] = ChartSource(version=pin.version, repo=pin.repo)
    return out


@dataclass(frozen=True)
class DefaultCertificate:
    """A supplied default TLS certificate for Traefik (PEM); the key is secret."""

    cert_pem: pulumi.Input[str]
    key_pem: pulumi.Input[str]


@dataclass(frozen=True)
class GitOps:
    """The Git repository Argo CD's root Application follows: ``<path>/root`` holds the ApplicationSet."""

    repo_url: str
    revision: str
    path: str = "gitops"


@dataclass(frozen=True)
class PlatformArgs:
    """The platform layer's inputs (see docs/platform.md).

    ``http_nodeport``/``https_nodeport`` are the NodePorts HAProxy targets
    (cfg.load_balancer.ingress_http_nodeport / ingress_https_nodeport).
    ``charts``: chart name -> ChartSource (``chart_sources``); all six pinned.
    ``kubeconfig`` (secret) runs Longhorn's uninstall on destroy; needed
    unless ``protect_data``.
    ``service_monitors`` needs the monitoring CRDs (Argo CD then waits for
    kube-prometheus-stack). ``skip_await`` does not wait for workloads to
    become ready (an API server with no nodes).
    ``argocd_password_mtime``: bump it with the password's rotation, Argo CD
    then rejects tokens issued before it; a fixed value keeps re-previews empty.
    ``protect_data`` (prod): the sealing key, Longhorn and Grafana's volume are
    protected and kept on delete; storage classes retain volumes.
    ``rotation``: keeper per generated password (keys ``ROTATABLE``); a new
    value makes a new password on the next ``up``.
    ``values``: extra Helm values per chart, merged over ours (site tweaks).
    """

    domain: str
    http_nodeport: int
    https_nodeport: int
    provider: k8s.Provider
    charts: Mapping[str, ChartSource] = field(default_factory=lambda: chart_sources(None))
    kubeconfig: Optional[pulumi.Input[str]] = None
    argocd: bool = True
    keep_crds: bool = False
    service_monitors: bool = True
    skip_await: bool = False
    traefik_replicas: int = 2
    default_certificate: Optional[DefaultCertificate] = None
    argocd_password_mtime: str = "2026-01-01T00:00:00Z"
    longhorn_data_path: str = pv.LONGHORN_DATA_PATH
    longhorn_replicas: int = 3
    nfs_server: Optional[str] = None
    nfs_path: str = "/srv/nfs"
    scrape_targets: Mapping[str, str] = field(default_factory=dict)
    gitops: Optional[GitOps] = None
    protect_data: bool = False
    rotation: Mapping[str, str] = field(default_factory=dict)
    values: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def merge_values(ours: dict, extra: Mapping[str, Any]) -> dict:
    """``extra`` over ``ours``: maps merge key by key, anything else replaces."""
    out = dict(ours)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge_values(out[key], value)
        else:
            out[key] = value
    return out


def needed_charts(args: PlatformArgs) -> list[str]:
    names = ["sealed-secrets", "traefik", "longhorn", "kube-prometheus-stack"]
    if args.nfs_server is not None:
        names.append("nfs-subdir-external-provisioner")
    if args.argocd:
        names.append("argo-cd")
    return names


def check_args(args: PlatformArgs) -> None:
    """Every mistake in the inputs as one ValueError, before any resource is registered."""
    for chart in needed_charts(args):
        src = args.charts.get(chart)
        if src is None:
            raise ValueError(f"platform: chart {chart}: no source given (pinned version {pv.CHARTS[chart].version})")
        if not _EXACT_VERSION.fullmatch(src.version or ""):
            raise ValueError(f"platform: chart {chart}: version {src.version!r} is not an exact version (pin one, e.g. "
                             f"{pv.CHARTS[chart].version})")
    unknown = sorted(set(args.rotation) - set(ROTATABLE))
    if unknown:
        raise ValueError(f"platform: rotation: no generated password {', '.join(unknown)} (keepers: {', '.join(ROTATABLE)})")
    unknown = sorted(set(args.values) - set(pv.CHARTS))
    if unknown:
        raise ValueError(f"platform: values: no chart named {', '.join(unknown)}")
    if not args.protect_data and args.kubeconfig is None:
        raise ValueError("platform: kubeconfig is needed to run Longhorn's uninstall on destroy (or set protect_data)")
    if args.gitops is not None and not args.argocd:
        raise ValueError("platform: gitops needs argocd")


def uninstall_longhorn_main() -> None:
    """The command Longhorn's delete runs (``python -c``): its chart's pre-delete hook, as a Job, awaited.

    Environment: MICROCLOUD_KUBECONFIG (the kubeconfig's text), LONGHORN_NAMESPACE.
    Uses the image of the running longhorn-manager DaemonSet; nothing to do
    when it is gone. Prints no secret.
    """
    import base64
    import os
    import ssl
    import tempfile
    import time
    import urllib.error
    import urllib.request

    kc = yaml.safe_load(os.environ["MICROCLOUD_KUBECONFIG"])
    ns = os.environ.get("LONGHORN_NAMESPACE", pv.LONGHORN_NAMESPACE)
    ctx_name = kc.get("current-context") or kc["contexts"][0]["name"]
    ctx = next(c["context"] for c in kc["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in kc["clusters"] if c["name"] == ctx["cluster"])
    user = next(u["user"] for u in kc["users"] if u["name"] == ctx["user"])
    tmp = tempfile.mkdtemp(prefix="longhorn-uninstall-")

    def material(obj: dict, key: str) -> Optional[str]:
        if obj.get(f"{key}-data"):
            path = os.path.join(tmp, key)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(base64.b64decode(obj[f"{key}-data"]))
            return path
        return obj.get(key)

    try:
        sslctx = ssl.create_default_context(cafile=material(cluster, "certificate-authority"))
        if cluster.get("insecure-skip-tls-verify"):
            sslctx.check_hostname, sslctx.verify_mode = False, ssl.CERT_NONE
        cert, key = material(user, "client-certificate"), material(user, "client-key")
        if cert:
            sslctx.load_cert_chain(cert, key)
    finally:
        for f in Path(tmp).iterdir():
            f.unlink()
        os.rmdir(tmp)
    headers = {"Accept": "application/json"}
    if user.get("token"):
        headers["Authorization"] = f"Bearer {user['token']}"

    def call(method: str, path: str, body: Optional[dict] = None, ctype: str = "application/json"):
        req = urllib.request.Request(cluster["server"].rstrip("/") + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={**headers, "Content-Type": ctype})
        try:
            with urllib.request.urlopen(req, context=sslctx, timeout=30) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, None

    status, ds = call("GET", f"/apis/apps/v1/namespaces/{ns}/daemonsets/{pv.LONGHORN_MANAGER}")
    if status == 404:
        print(f"longhorn-uninstall: no {pv.LONGHORN_MANAGER} in {ns}: nothing to uninstall")
        return
    if status != 200:
        sys.exit(f"longhorn-uninstall: reading {ns}/{pv.LONGHORN_MANAGER}: HTTP {status}")
    container = ds["spec"]["template"]["spec"]["containers"][0]
    job = pv.longhorn_uninstall_job(ns, container["image"], container.get("imagePullPolicy", "IfNotPresent"))
    # Longhorn refuses to uninstall unless this setting says yes (it exists once the manager has run).
    call("PATCH", f"/apis/longhorn.io/v1beta2/namespaces/{ns}/settings/deleting-confirmation-flag",
         {"value": "true"}, "application/merge-patch+json")
    jobs = f"/apis/batch/v1/namespaces/{ns}/jobs"
    background = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
    call("DELETE", f"{jobs}/{pv.LONGHORN_UNINSTALL_JOB}", background)
    deadline = time.monotonic() + 60
    while True:
        status, _ = call("POST", jobs, job)
        if status in (200, 201):
            break
        if status != 409 or time.monotonic() > deadline:
            sys.exit(f"longhorn-uninstall: creating the Job in {ns}: HTTP {status}")
        time.sleep(1)  # the previous Job is still being deleted
    print(f"longhorn-uninstall: Job {ns}/{pv.LONGHORN_UNINSTALL_JOB} created ({container['image']})")
    deadline = time.monotonic() + job["spec"]["activeDeadlineSeconds"] + 60
    while True:
        status, obj = call("GET", f"{jobs}/{pv.LONGHORN_UNINSTALL_JOB}")
        conds = {c["type"]: c for c in (obj or {}).get("status", {}).get("conditions", []) if c.get("status") == "True"}
        if "Complete" in conds:
            break
        if "Failed" in conds:
            sys.exit(f"longhorn-uninstall: Job failed: {conds['Failed'].get('message', '')}")
        if time.monotonic() > deadline:
            sys.exit("longhorn-uninstall: Job did not complete in time")
        time.sleep(2)
    call("DELETE", f"{jobs}/{pv.LONGHORN_UNINSTALL_JOB}", background)
    print("longhorn-uninstall: complete")


class Platform(pulumi.ComponentResource):
    sealing_certificate: pulumi.Output[str]
    default_certificate: pulumi.Output[str]
    dashboard_password: pulumi.Output[str]
    argocd_admin_password: Optional[pulumi.Output[str]]
    grafana_admin_password: pulumi.Output[str]

    def __init__(self, name: str, args: PlatformArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("microcloud:platform:Platform", name, None, opts)
        # Fail before any resource is registered on a missing, floating or mis-versioned chart.
        check_args(args)
        self._charts = {}
        for chart in needed_charts(args):
            src = args.charts[chart]
            if src.path:
                self._charts[chart] = (chart_dir(chart, src.path, src.version), None, None)
            else:
                self._charts[chart] = (chart, src.version, src.repo or pv.CHARTS[chart].repo)
        self._name = name
        self._args = args
        self._k8s = pulumi.ResourceOptions(parent=self, provider=args.provider)
        self._child = pulumi.ResourceOptions(parent=self)
        self.charts: dict[str, k8s.helm.v4.Chart] = {}
        self.argocd_admin_password = None
        self.root_app = None

        self._create_sealed_secrets()
        self._create_traefik()
        self._create_longhorn()
        if args.nfs_server is not None:
            self._create_nfs()
        self._create_monitoring()
        if args.argocd:
            self.argocd_admin_password = self._create_argocd()
            if args.gitops is not None:
                self._create_root_app()

        outputs = {
            "sealing_certificate": self.sealing_certificate,
            "default_certificate": self.default_certificate,
            "dashboard_password": self.dashboard_password,
            "grafana_admin_password": self.grafana_admin_password,
        }
        if self.argocd_admin_password is not None:
            outputs["argocd_admin_password"] = self.argocd_admin_password
        self.register_outputs(outputs)

    # ------------------------------------------------------------ helpers

    def _k8s_opts(self, **kw) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions.merge(self._k8s, pulumi.ResourceOptions(**kw))

    def _data_opts(self, **kw) -> dict:
        """Options for what holds data: protected and kept in the cluster on delete when protect_data (prod)."""
        if self._args.protect_data:
            kw.update(protect=True, retain_on_delete=True)
        return kw

    def _password(self, key: str, length: int) -> random.RandomPassword:
        """A generated password; a new ``rotation[key]`` keeper makes a new one."""
        return random.RandomPassword(
            f"{self._name}-{key}",
            length=length,
            special=False,
            keepers={"rotation": self._args.rotation.get(key, "")},
            opts=pulumi.ResourceOptions.merge(self._child, pulumi.ResourceOptions(additional_secret_outputs=["bcrypt_hash"])),
        )

    def _restart_on(self, key: str) -> dict[str, str]:
        return {ROTATION_ANNOTATION.format(key): self._args.rotation.get(key, "")}

    def _namespace(self, key: str, name: str, **kw) -> k8s.core.v1.Namespace:
        return k8s.core.v1.Namespace(f"{self._name}-{key}", metadata={"name": name}, opts=self._k8s_opts(**kw))

    def _chart(self, chart: str, release: str, namespace: pulumi.Input[str], values: dict, **kw) -> k8s.helm.v4.Chart:
        ref, version, repo = self._charts[chart]
        values = merge_values(values, self._args.values.get(chart, {}))
        res = k8s.helm.v4.Chart(
            f"{self._name}-{release}",
            chart=ref,
            version=version,
            repository_opts=k8s.helm.v4.RepositoryOptsArgs(repo=repo) if repo else None,
            name=release,
            namespace=namespace,
            values=values,
            skip_await=self._args.skip_await,
            opts=self._k8s_opts(**kw),
        )
        self.charts[chart] = res
        return res

    # ------------------------------------------------------------ Sealed Secrets

    def _create_sealed_secrets(self) -> None:
        n = self._name
        # The key decrypts every SealedSecret in Git: in prod it outlives the stack's resources.
        key_opts = {"protect": True} if self._args.protect_data else {}
        key = tls.PrivateKey(
            f"{n}-sealing-key",
            algorithm="RSA",
            rsa_bits=4096,
            opts=pulumi.ResourceOptions.merge(
                self._child,
                pulumi.ResourceOptions(additional_secret_outputs=["private_key_pem", "private_key_openssh", "private_key_pem_pkcs8"],
                                       **key_opts),
            ),
        )
        # The subject the controller gives the keys it makes itself.
        cert = tls.SelfSignedCert(
            f"{n}-sealing-cert",
            private_key_pem=key.private_key_pem,
            subject=tls.SelfSignedCertSubjectArgs(common_name="sealed-secret", organization="sealed-secret"),
            validity_period_hours=_TEN_YEARS_H,
            early_renewal_hours=_ONE_YEAR_H,
            allowed_uses=["key_encipherment", "digital_signature", "data_encipherment", "cert_signing"],
            is_ca_certificate=True,
            opts=self._child,
        )
        spec = pv.SealedSecretsSpec(key_secret=SEALING_KEY_SECRET)
        secret = k8s.core.v1.Secret(
            f"{n}-sealing-key",
            metadata=pv.sealing_key_metadata(spec),
            type="kubernetes.io/tls",
            string_data={"tls.crt": cert.cert_pem, "tls.key": pulumi.Output.secret(key.private_key_pem)},
            # A fixed name: a replacement must delete the old Secret first.
            opts=self._k8s_opts(delete_before_replace=True),
        )
        # No data flows from the key Secret into the chart, but the controller
        # makes a key of its own when it starts and finds none labelled active.
        self._chart("sealed-secrets", "sealed-secrets", spec.namespace, pv.sealed_secrets_values(spec), depends_on=[secret])
        self.sealing_certificate = cert.cert_pem

    # ------------------------------------------------------------ Traefik

    def _create_traefik(self) -> None:
        n, a = self._name, self._args
        ns = pv.TRAEFIK_NAMESPACE
        if a.default_certificate is None:
            key = tls.PrivateKey(
                f"{n}-ingress-key",
                algorithm="ECDSA",
                ecdsa_curve="P256",
                opts=pulumi.ResourceOptions.merge(
                    self._child,
                    pulumi.ResourceOptions(additional_secret_outputs=["private_key_pem", "private_key_openssh", "private_key_pem_pkcs8"]),
                ),
            )
            cert = tls.SelfSignedCert(
                f"{n}-ingress-cert",
                private_key_pem=key.private_key_pem,
                subject=tls.SelfSignedCertSubjectArgs(common_name=f"*.{a.domain}", organization="microcloud"),
                dns_names=[f"*.{a.domain}", a.domain],
                validity_period_hours=_ONE_YEAR_H,
                early_renewal_hours=30 * 24,
                allowed_uses=["key_encipherment", "digital_signature", "server_auth"],
                opts=self._child,
            )
            cert_pem, key_pem = cert.cert_pem, key.private_key_pem
        else:
            cert_pem, key_pem = a.default_certificate.cert_pem, a.default_certificate.key_pem
        cert_secret = k8s.core.v1.Secret(
            f"{n}-ingress-cert",
            metadata={"name": TRAEFIK_CERT_SECRET, "namespace": ns},
            type="kubernetes.io/tls",
            string_data={"tls.crt": cert_pem, "tls.key": pulumi.Output.secret(key_pem)},
            opts=self._k8s_opts(delete_before_replace=True),
        )
        password = self._password("dashboard", 24)
        # Traefik reads htpasswd lines from the `users` key: only the bcrypt hash is in the cluster.
        auth_secret = k8s.core.v1.Secret(
            f"{n}-dashboard-auth",
            metadata={"name": TRAEFIK_AUTH_SECRET, "namespace": ns},
            type="Opaque",
            string_data={"users": pulumi.Output.secret(password.bcrypt_hash).apply(lambda h: f"admin:{h}")},
            opts=self._k8s_opts(delete_before_replace=True),
        )
        spec = pv.TraefikSpec(
            domain=a.domain,
            http_nodeport=a.http_nodeport,
            https_nodeport=a.https_nodeport,
            default_cert_secret=TRAEFIK_CERT_SECRET,
            dashboard_auth_secret=TRAEFIK_AUTH_SECRET,
            namespace=ns,
            replicas=a.traefik_replicas,
        )
        # The values name both Secrets (fixed names, no data flow); Traefik reads them when it starts.
        self._chart("traefik", "traefik", ns, pv.traefik_values(spec), depends_on=[cert_secret, auth_secret])
        self.default_certificate = pulumi.Output.from_input(cert_pem)
        self.dashboard_password = pulumi.Output.secret(password.result)

    # ------------------------------------------------------------ Longhorn

    def _create_longhorn(self) -> None:
        n, a = self._name, self._args
        self.longhorn_spec = spec = pv.LonghornSpec(
            replica_count=a.longhorn_replicas,
            reclaim_policy="Retain" if a.protect_data else "Delete",
            allow_uninstall=not a.protect_data,
            data_path=a.longhorn_data_path,
        )
        ns = self._namespace("longhorn", spec.namespace, **self._data_opts())
        chart = self._chart("longhorn", "longhorn", ns.metadata.name, pv.longhorn_values(spec), **self._data_opts())
        sc = pv.longhorn_storage_class(spec)
        # StorageClass parameters are immutable: a change replaces it (a fixed name: delete first).
        self.storage_class = k8s.storage.v1.StorageClass(
            f"{n}-longhorn",
            metadata=sc["metadata"],
            provisioner=sc["provisioner"],
            allow_volume_expansion=sc["allowVolumeExpansion"],
            reclaim_policy=sc["reclaimPolicy"],
            volume_binding_mode=sc["volumeBindingMode"],
            parameters=sc["parameters"],
            opts=self._k8s_opts(depends_on=[chart], delete_before_replace=True, **self._data_opts()),
        )
        self.longhorn = chart
        if a.protect_data:
            self.longhorn_uninstall = None
            return
        # Deleted before the chart (it depends on it): runs Longhorn's pre-delete hook while the manager still runs.
        python = shlex.quote(sys.executable)
        self.longhorn_uninstall = command.local.Command(
            f"{n}-longhorn-uninstall",
            create="true",
            update="true",
            delete=f"{python} -c 'from components.platform import uninstall_longhorn_main as m; m()'",
            environment={
                "MICROCLOUD_KUBECONFIG": pulumi.Output.secret(a.kubeconfig),
                "LONGHORN_NAMESPACE": spec.namespace,
            },
            opts=pulumi.ResourceOptions.merge(self._child, pulumi.ResourceOptions(
                depends_on=[chart, self.storage_class],
                additional_secret_outputs=["environment"],
            )),
        )

    # ------------------------------------------------------------ NFS

    def _create_nfs(self) -> None:
        a = self._args
        spec = pv.NfsProvisionerSpec(
            server=a.nfs_server,
            path=a.nfs_path,
            reclaim_policy="Retain" if a.protect_data else "Delete",
            archive_on_delete=a.protect_data,
        )
        # Its volumes are directories on the NFS server: the data never lives in the cluster.
        self._chart("nfs-subdir-external-provisioner", "nfs-provisioner", NFS_NAMESPACE, pv.nfs_provisioner_values(spec))

    # ------------------------------------------------------------ kube-prometheus-stack

    def _create_monitoring(self) -> None:
        n, a = self._name, self._args
        ns = self._namespace("monitoring", pv.MONITORING_NAMESPACE)
        namespace = ns.metadata.name
        password = self._password("grafana-admin", 24)
        user_key, password_key = pv.GRAFANA_ADMIN_KEYS
        admin = k8s.core.v1.Secret(
            f"{n}-grafana-admin",
            metadata={"name": GRAFANA_ADMIN_SECRET, "namespace": namespace},
            type="Opaque",
            string_data={user_key: "admin", password_key: pulumi.Output.secret(password.result)},
            opts=self._k8s_opts(delete_before_replace=True),
        )
        spec = pv.MonitoringSpec(
            domain=a.domain,
            grafana_admin_secret=GRAFANA_ADMIN_SECRET,
            node_exporter_targets=pv.scrape_targets(a.scrape_targets, "vm"),
            storage_class=pv.LONGHORN_STORAGE_CLASS,
            # The chart's webhook certificates come from hook Jobs that never run.
            admission_webhooks=False,
            grafana_claim=GRAFANA_CLAIM,
            retain_volumes=a.protect_data,
            grafana_pod_annotations=self._restart_on("grafana-admin"),
        )
        claim = pv.grafana_claim(spec)
        pvc = k8s.core.v1.PersistentVolumeClaim(
            f"{n}-grafana",
            metadata={**claim["metadata"], "namespace": namespace},
            spec={**claim["spec"], "storageClassName": self.storage_class.metadata.name},
            opts=self._k8s_opts(depends_on=[self.longhorn], **self._data_opts()),
        )
        self.grafana_claim = pvc
        self._chart("kube-prometheus-stack", "kube-prometheus-stack", namespace, pv.monitoring_values(spec),
                    depends_on=[admin, pvc, self.longhorn, self.storage_class])
        self.grafana_admin_password = pulumi.Output.secret(password.result)

    # ------------------------------------------------------------ Argo CD

    def _create_argocd(self) -> pulumi.Output[str]:
        n, a = self._name, self._args
        spec = pv.ArgoCdSpec(domain=a.domain, keep_crds=a.keep_crds, service_monitors=a.service_monitors,
                             pod_annotations=self._restart_on("argocd-redis"))
        ns = self._namespace("argocd", spec.namespace)
        namespace = ns.metadata.name
        admin = self._password("argocd-admin", 24)
        server_key = self._password("argocd-server-key", 48)
        redis = self._password("argocd-redis", 32)
        argocd_secret = k8s.core.v1.Secret(
            f"{n}-argocd-secret",
            metadata={"name": pv.ARGOCD_SECRET, "namespace": namespace, "labels": dict(ARGOCD_PART_OF)},
            type="Opaque",
            string_data={
                "admin.password": pulumi.Output.secret(admin.bcrypt_hash),
                "admin.passwordMtime": a.argocd_password_mtime,
                "server.secretkey": pulumi.Output.secret(server_key.result),
            },
            opts=self._k8s_opts(delete_before_replace=True),
        )
        redis_name, redis_key = pv.ARGOCD_REDIS_SECRET
        redis_secret = k8s.core.v1.Secret(
            f"{n}-argocd-redis",
            metadata={"name": redis_name, "namespace": namespace, "labels": dict(ARGOCD_PART_OF)},
            type="Opaque",
            string_data={redis_key: pulumi.Output.secret(redis.result)},
            opts=self._k8s_opts(delete_before_replace=True),
        )
        deps: list[pulumi.Resource] = [argocd_secret, redis_secret]
        if a.service_monitors:
            # Its ServiceMonitors need the monitoring CRDs.
            deps.append(self.charts["kube-prometheus-stack"])
        # The chart's pods mount both Secrets by their fixed names.
        self.argocd = self._chart("argo-cd", "argocd", namespace, pv.argocd_values(spec), depends_on=deps)
        return pulumi.Output.secret(admin.result)

    def _create_root_app(self) -> None:
        a = self._args
        g = a.gitops
        spec = pv.GitOpsSpec(repo_url=g.repo_url, revision=g.revision, path=g.path, cascade=not a.protect_data)
        app = pv.root_application(spec)
        # The Application CRD comes with the chart; on delete the root app goes first, while Argo CD still runs.
        self.root_app = k8s.apiextensions.CustomResource(
            f"{self._name}-root-app",
            api_version=app["apiVersion"],
            kind=app["kind"],
            metadata=app["metadata"],
            spec=app["spec"],
            opts=self._k8s_opts(depends_on=[self.argocd]),
        )
