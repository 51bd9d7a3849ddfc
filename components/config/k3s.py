"""K3s: the release, its pinned binary and airgap images, the admin certificate's lifetime and keeper, the join order settings."""

from __future__ import annotations

import re
import urllib.parse
from typing import Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from ..k3s_flags import DNS_LABEL, check_extra_args, check_registry_endpoint, check_registry_name, plain_http
from .artifacts import PinnedFile, https_url
from .base import _Model, check_pinned

PodSecurityLevel = Literal["privileged", "baseline", "restricted"]
# The platform namespaces whose pods cannot meet the enforced level, and why (shown in psa.yaml).
DEFAULT_EXEMPT_NAMESPACES: dict[str, str] = {
    "kube-system": "K3s' packaged add-ons (CoreDNS, metrics-server, helm-controller Jobs) run here, outside this program's charts; K3s' hardening guide exempts it",
    "longhorn-system": "Longhorn's manager, instance managers and CSI plugin run privileged with host paths and host devices: block storage needs them",
    "monitoring": "node-exporter reads the host itself: host network, host PID and the host's root file system",
}
ExtraValue = Union[bool, int, str, list[Union[str, int]]]


class K3sArtifact(PinnedFile):
    """A pinned K3s file: fetched by the node from an https URL, or copied from this machine; checked by sha256 before install."""

    url: Optional[str] = Field(default=None, description="https URL the node downloads the file from (your mirror for an air-gapped site).")
    path: Optional[str] = Field(default=None, description="Absolute path of the file on the machine that runs Pulumi; it is copied to each node.")
    sha256: Optional[str] = Field(
        default=None, description="sha256 of the file (the release's `sha256sum-amd64.txt`). Required with `url`; with `path`, when set, a different file stops the run."
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: Optional[str]) -> Optional[str]:
        return https_url(v, "K3s download")

    @model_validator(mode="after")
    def _one_source(self) -> "K3sArtifact":
        if (self.url is None) == (self.path is None):
            raise ValueError("give exactly one of url and path")
        if self.url is not None and self.sha256 is None:
            raise ValueError("a url needs its sha256; nothing is installed unchecked")
        return self


class K3sPodSecurity(_Model):
    """Pod Security admission, cluster-wide (an AdmissionConfiguration file the API server reads)."""

    enforce: PodSecurityLevel = Field(default="baseline", description="Level every pod must meet or be refused. Below `baseline` relaxes the profile (a warning on every run).")
    audit: PodSecurityLevel = Field(default="restricted", description="Level whose violations are recorded in the audit log.")
    warn: PodSecurityLevel = Field(default="restricted", description="Level whose violations are returned to the client as warnings (kubectl prints them).")
    exempt_namespaces: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_EXEMPT_NAMESPACES),
        description="Namespace -> the reason its pods may break the enforced level (the reason is written into the file). "
        "The default exempts `kube-system`, `longhorn-system` and `monitoring`; giving this key replaces the whole map.",
    )

    @field_validator("exempt_namespaces")
    @classmethod
    def _exempt(cls, v: dict[str, str]) -> dict[str, str]:
        for ns, why in v.items():
            if not DNS_LABEL.match(ns):
                raise ValueError(f"{ns!r} is not a namespace name")
            if not str(why).strip():
                raise ValueError(f"{ns}: give the reason its pods need the exemption")
        return v

    @model_validator(mode="after")
    def _order(self) -> "K3sPodSecurity":
        rank = {"privileged": 0, "baseline": 1, "restricted": 2}
        for what in ("audit", "warn"):
            if rank[getattr(self, what)] < rank[self.enforce]:
                raise ValueError(f"{what} ({getattr(self, what)}) is below enforce ({self.enforce}): it would never report anything")
        return self


class K3sAuditLog(_Model):
    """The API server's audit log on each server (`<data-dir>/server/logs/audit.log`), rotated by the API server itself."""

    enabled: bool = Field(default=True, description="Write the audit log (Metadata of every request; never a request body). `false` relaxes the profile.")
    max_age_days: int = Field(default=30, ge=1, le=3650, description="Days a rotated log file is kept.")
    max_backups: int = Field(default=10, ge=1, le=1000, description="Rotated log files kept.")
    max_size_mib: int = Field(default=100, ge=1, le=10240, description="MiB a log file may reach before it is rotated.")


class K3sHardening(_Model):
    """K3s' CIS hardening profile: on by default; each setting relaxes one part of it, never silently (a warning on every run)."""

    secrets_encryption: bool = Field(
        default=True,
        description="Day 1: Secrets are encrypted in etcd (aescbc) from cluster-init, with a key Pulumi generates (secret in the state). "
        "Turning it off on a running cluster is refused by the install (its Secrets would become unreadable).",
    )
    protect_kernel_defaults: bool = Field(
        default=True, description="The kubelet refuses kernel settings other than the guide's; first boot writes them (`/etc/sysctl.d/90-kubelet.conf`)."
    )
    pod_security: K3sPodSecurity = Field(default_factory=K3sPodSecurity, description="Pod Security admission levels and exempt namespaces.")
    audit_log: K3sAuditLog = Field(default_factory=K3sAuditLog, description="The API server's audit log and its rotation.")
    workloads_on_servers: Optional[bool] = Field(
        default=None,
        description="`false`/unset: servers carry `node-role.kubernetes.io/control-plane:NoSchedule`, so only what tolerates it (DaemonSets, K3s' add-ons) runs beside etcd. "
        "`true` relaxes that for tiny clusters. Required (`true`) when the stack has no agent.",
    )


class K3sExtraArgs(_Model):
    """config.yaml keys the program does not write, per role: checked against the flags of `k3s.version` when the config loads."""

    server: dict[str, ExtraValue] = Field(default_factory=dict, description="Extra keys for servers, e.g. `{etcd-snapshot-retention: 10}` or `{kube-apiserver-arg: [\"request-timeout=90s\"]}`.")
    agent: dict[str, ExtraValue] = Field(default_factory=dict, description="Extra keys for agents (storage nodes included).")


# A Pulumi config key of this project that holds a secret (`pulumi config set --secret <key> <value>`).
SECRET_KEY_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"


class RegistryMirror(_Model):
    """Where the nodes pull a registry's images from instead (a pull-through cache, an air-gapped site's registry)."""

    endpoints: tuple[str, ...] = Field(min_length=1, description="Endpoint URLs (`https://mirror.lan:5000`), tried in order before the registry itself.")
    rewrites: dict[str, str] = Field(
        default_factory=dict, description="Regular expression on the image name (never the tag) -> replacement, applied on these endpoints, e.g. `{\"^library/(.*)\": \"hub/$1\"}`."
    )

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for url in v:
            check_registry_endpoint(url)
        return v

    @field_validator("rewrites")
    @classmethod
    def _rewrites(cls, v: dict[str, str]) -> dict[str, str]:
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"rewrite {pattern!r} is not a regular expression ({err})") from None
        return v


class RegistryAuth(_Model):
    """Basic auth for one registry: the user here, its password or token in a secret config key."""

    username: str = Field(min_length=1, max_length=255, pattern=r"^[^\s:]+$", description="The registry user (GHCR: the GitHub user or organization bot).")
    password_key: str = Field(
        pattern=SECRET_KEY_PATTERN,
        description="The name of a config key of this project holding the password or token as a secret: "
        "`pulumi config set --secret <password_key> <token>` (GHCR: a token with `read:packages`). The value never enters this file.",
    )


class RegistryConfig(_Model):
    """Credentials and TLS for one registry (or mirror endpoint host)."""

    auth: Optional[RegistryAuth] = Field(default=None, description="User and secret key of the password.")
    ca_file: Optional[str] = Field(default=None, pattern=r"^/", description="Absolute path on every node of the CA that signs the registry's certificate.")
    insecure_skip_verify: bool = Field(default=False, description="Accept any certificate from this registry (relaxes TLS: a warning on every run).")

    @model_validator(mode="after")
    def _something(self) -> "RegistryConfig":
        if self.auth is None and self.ca_file is None and not self.insecure_skip_verify:
            raise ValueError("give auth, ca_file or insecure_skip_verify")
        return self


class K3sRegistries(_Model):
    """K3s' registries.yaml on every K3s node (docs/delivery.md#registries): containerd pulls private images with these credentials, no pull secret per namespace."""

    mirrors: dict[str, RegistryMirror] = Field(default_factory=dict, description="Registry (`docker.io`, `ghcr.io`, `*`) -> its mirror endpoints.")
    configs: dict[str, RegistryConfig] = Field(default_factory=dict, description="Registry host (`ghcr.io`, `registry.lan:5000`, `*`) -> credentials and TLS.")

    @field_validator("mirrors", "configs")
    @classmethod
    def _names(cls, v: dict) -> dict:
        for name in v:
            check_registry_name(name)
        return v

    def secret_keys(self) -> dict[str, str]:
        """password_key -> the registry whose password it holds."""
        return {c.auth.password_key: host for host, c in sorted(self.configs.items()) if c.auth is not None}

    def relaxations(self) -> list[str]:
        out = []
        for host, c in sorted(self.configs.items()):
            if c.insecure_skip_verify:
                out.append(f"k3s.registries.configs.{host}.insecure_skip_verify is on: the nodes accept any certificate from {host}")
        for name, m in sorted(self.mirrors.items()):
            for url in m.endpoints:
                if plain_http(url):
                    out.append(f"k3s.registries.mirrors.{name}: {url} is plain http: images (and any credentials for it) travel in clear")
        return out


class K3sDisruption(_Model):
    """The disruption budget (docs/scale.md): how many member nodes may be down at once for a K3s restart or an OS reboot."""

    max_unavailable: Union[int, str] = Field(
        default="10%",
        description="Agents (storage nodes included) that may be down at once: a number, or a percentage of the agents "
        "rounded down, at least 1. Servers: always one at a time. A K3s change to every agent takes about "
        "⌈agents / max_unavailable⌉ node restarts.",
    )
    lease_seconds: int = Field(
        default=300, ge=30, le=3600,
        description="A slot not renewed for this long is stale and may be taken over (a holder that crashed). Holders renew every third of it.",
    )
    wait_seconds: int = Field(default=3600, ge=60, le=86400, description="How long a node waits for a free slot before its step fails, naming the holders.")
    failed_hold_seconds: int = Field(
        default=3600, ge=60, le=86400,
        description="A node whose restart or reboot failed (not Ready again) keeps its slot this long, so the next node is not taken down meanwhile.",
    )

    @field_validator("max_unavailable")
    @classmethod
    def _max_unavailable(cls, v: Union[int, str]) -> Union[int, str]:
        if isinstance(v, bool):
            raise ValueError("k3s.disruption.max_unavailable is a number or a percentage like `10%`")
        if isinstance(v, int):
            if not 1 <= v <= 1000:
                raise ValueError(f"k3s.disruption.max_unavailable {v} is not within 1..1000")
            return v
        m = re.match(r"^([1-9][0-9]?|100)%$", v)
        if not m:
            raise ValueError(f"k3s.disruption.max_unavailable {v!r} is neither a number nor a percentage from 1% to 100%")
        return v

    @model_validator(mode="after")
    def _times(self) -> "K3sDisruption":
        if self.wait_seconds < self.lease_seconds:
            raise ValueError(f"k3s.disruption.wait_seconds ({self.wait_seconds}) must be at least lease_seconds ({self.lease_seconds}): a stale slot could never be taken over")
        if self.failed_hold_seconds < self.lease_seconds:
            raise ValueError(f"k3s.disruption.failed_hold_seconds ({self.failed_hold_seconds}) must be at least lease_seconds ({self.lease_seconds})")
        return self

    def agent_slots(self, agents: int) -> int:
        """Slots of the agent pool for ``agents`` agents: the number, or the percentage rounded down; at least 1."""
        if isinstance(self.max_unavailable, int):
            return self.max_unavailable
        return max(1, agents * int(self.max_unavailable.rstrip("%")) // 100)


class K3sConfig(_Model):
    version: str = Field(description="Exact K3s release, e.g. `v1.34.2+k3s1`.")
    enabled: bool = Field(
        default=True, description="Install K3s on the server/agent/storage nodes. `false`: the VMs only (no K3s, no platform), e.g. nodes without an OS yet."
    )
    binary: Optional[K3sArtifact] = Field(
        default=None, description="The `k3s` binary of `version` (amd64): `url` + `sha256`, or `path` on this machine. Required while `enabled`."
    )
    images: Optional[K3sArtifact] = Field(
        default=None,
        description="The airgap image tarball of `version` (`k3s-airgap-images-amd64.tar.zst`): `url` + `sha256`, or `path`. Without it the nodes pull K3s' images from their registries.",
    )
    kubeconfig_keeper: str = Field(
        default="1",
        max_length=64,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Any short string (letters, digits, `.` `_` `-`); change it to issue a new admin client certificate (the kubeconfig output) at once.",
    )
    kubeconfig_validity_days: int = Field(
        default=90,
        ge=7,
        le=825,
        description="Days the admin client certificate Pulumi signs is valid (Kubernetes cannot revoke one: keep it short). Its end is the stack output `kubeconfig_expires_at`.",
    )
    kubeconfig_renew_days: int = Field(
        default=30,
        ge=1,
        description="The first `pulumi up` within this many days of the admin certificate's end issues a new one. Less than `kubeconfig_validity_days`.",
    )
    ready_timeout: int = Field(default=600, ge=30, le=7200, description="Seconds each node may take to be Ready after its K3s (re)start before the run fails naming it.")
    disruption: K3sDisruption = Field(
        default_factory=K3sDisruption,
        description="Day 2: the disruption budget every K3s restart of a member and every coordinated reboot takes a slot of (docs/scale.md).",
    )
    hardening: K3sHardening = Field(default_factory=K3sHardening, description="K3s' CIS hardening profile (docs/k3s.md#hardening); on unless relaxed here.")
    extra_args: K3sExtraArgs = Field(default_factory=K3sExtraArgs, description="The escape hatch for K3s flags the program does not set (docs/k3s.md#extra-arguments).")
    registries: K3sRegistries = Field(
        default_factory=K3sRegistries,
        description="Day 2: registry mirrors and credentials in every node's `/etc/rancher/k3s/registries.yaml`; a change (a new token too) restarts K3s one node at a time, each Ready before the next.",
    )

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        check_pinned(v, "K3s version")
        if not re.match(r"^v\d+\.\d+\.\d+\+k3s\d+$", v):
            raise ValueError(f"{v!r} is not a K3s release like v1.34.2+k3s1")
        return v

    @model_validator(mode="after")
    def _renewal(self) -> "K3sConfig":
        if self.kubeconfig_renew_days >= self.kubeconfig_validity_days:
            raise ValueError(
                f"k3s.kubeconfig_renew_days ({self.kubeconfig_renew_days}) must be less than k3s.kubeconfig_validity_days ({self.kubeconfig_validity_days})"
            )
        return self

    @model_validator(mode="after")
    def _sources(self) -> "K3sConfig":
        if self.enabled and self.binary is None:
            raise ValueError("k3s.binary is required while k3s.enabled (url + sha256, or path)")
        for what, art in (("binary", self.binary), ("images", self.images)):
            if art is not None and art.url is not None:
                ver = urllib.parse.unquote(art.url)
                if self.version not in ver:
                    raise ValueError(f"k3s.{what}.url does not name version {self.version}: {art.url}")
        return self

    @model_validator(mode="after")
    def _extra_args(self) -> "K3sConfig":
        for role in ("server", "agent"):
            extra = getattr(self.extra_args, role)
            if extra:
                # K3s' own names: the flag set of the pinned release line (components/k3s_flags.py).
                check_extra_args(self.version, role, extra, {})
        return self

    def relaxations(self) -> list[str]:
        """Each part of the hardening profile this config turns off, in words (warned on every run)."""
        h, out = self.hardening, []
        if not h.secrets_encryption:
            out.append("k3s.hardening.secrets_encryption is off: Secrets are stored in clear in etcd and its snapshots")
        if not h.protect_kernel_defaults:
            out.append("k3s.hardening.protect_kernel_defaults is off: the kubelet accepts any kernel settings")
        ps = h.pod_security
        if ps.enforce != "baseline" and ps.enforce != "restricted":
            out.append(f"k3s.hardening.pod_security.enforce is {ps.enforce}: pods may run privileged in every namespace")
        extra_ns = sorted(set(ps.exempt_namespaces) - set(DEFAULT_EXEMPT_NAMESPACES))
        if extra_ns:
            out.append(f"k3s.hardening.pod_security.exempt_namespaces adds {', '.join(extra_ns)}: their pods skip Pod Security")
        if not h.audit_log.enabled:
            out.append("k3s.hardening.audit_log.enabled is off: the API server keeps no audit log")
        if h.workloads_on_servers:
            out.append("k3s.hardening.workloads_on_servers is on: any workload may run beside etcd")
        for role in ("server", "agent"):
            for key in sorted(getattr(self.extra_args, role)):
                out.append(f"k3s.extra_args.{role}.{key} goes to K3s checked by name only")
        out += self.registries.relaxations()
        return out
