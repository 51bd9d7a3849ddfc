"""What runs on the cluster: chart sources and pins, the GitOps repository, password keepers, site values."""

from __future__ import annotations

import re
from typing import Any, Optional

from pydantic import Field, field_validator, model_validator

from ..chart_pins import CHARTS
from .base import _Model, check_pinned

# Every generated password a keeper can rotate, by its key in the config's
# `platform.rotation` and in PlatformArgs.rotation (the platform layer reads both from here).
ROTATABLE = ("dashboard", "argocd-admin", "argocd-server-key", "argocd-redis", "argocd-ci-token", "grafana-admin")
# An exact chart version (no range, no v): what the config and PlatformArgs accept (fullmatch).
EXACT_CHART_VERSION = re.compile(r"\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?")


# The platform's rules, each written once: the config's validators and the platform layer's
# check of PlatformArgs (which programs may build without the config) both call these.
def check_chart_version(v: str) -> str:
    """An exact chart version: no moving alias, no range, no leading v."""
    check_pinned(v, "chart version")
    if not EXACT_CHART_VERSION.fullmatch(v):
        raise ValueError(f"{v!r} is not an exact chart version like 41.3.0 (no ranges)")
    return v


def check_known_charts(names) -> None:
    """Every name is a chart this program pins."""
    unknown = sorted(set(names) - set(CHARTS))
    if unknown:
        raise ValueError(f"no chart named {', '.join(unknown)} (charts: {', '.join(CHARTS)})")


def check_keepers(names) -> None:
    """Every name is a generated password a keeper can rotate."""
    unknown = sorted(set(names) - set(ROTATABLE))
    if unknown:
        raise ValueError(f"no generated password {', '.join(unknown)} (keepers: {', '.join(ROTATABLE)})")


class ChartConfig(_Model):
    """Where one chart comes from; default: `$MICROCLOUD_CHART_DIR/<name>-<version>` when present, else its pinned repository."""

    version: Optional[str] = Field(default=None, description="Exact chart version. Default: the version this program is tested with.")
    repo: Optional[str] = Field(default=None, description="Chart repository URL (https, or oci://) instead of the chart's public one, e.g. your mirror.")
    path: Optional[str] = Field(default=None, description="A chart directory or `.tgz` on the machine that runs Pulumi (air-gapped sites); its Chart.yaml must carry `version`.")

    @field_validator("version")
    @classmethod
    def _version(cls, v: Optional[str]) -> Optional[str]:
        return v if v is None else check_chart_version(v)

    @field_validator("repo")
    @classmethod
    def _repo(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not v.startswith(("https://", "oci://")):
            raise ValueError(f"{v!r} is not an https:// or oci:// chart repository")
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not v.startswith(("/", "~/")):
            raise ValueError(f"{v!r} must be an absolute path on the machine that runs Pulumi")
        return v

    @model_validator(mode="after")
    def _one(self) -> "ChartConfig":
        if self.repo is not None and self.path is not None:
            raise ValueError("give repo or path, not both")
        return self


# One repository, exactly: Argo CD reads a project's sourceRepos as globs (and `!` as "not").
_EXACT_URL = r"[^\s*?\[\]!]+"


class GitOpsConfig(_Model):
    repo_url: str = Field(description="Git repository Argo CD's root Application follows (https:// or ssh git URL); the only one the root's project `microcloud-root` allows.")
    revision: str = Field(description="Branch, tag or commit the root Application tracks, e.g. `main` or `v1.4.0`.")
    path: str = Field(default="gitops", description="Directory in the repository: `<path>/root` (the ApplicationSet) and `<path>/apps/*` (one Application each).")
    app_repos: tuple[str, ...] = Field(
        default=(),
        description="More repositories the apps' project `microcloud-apps` allows beside `repo_url` (exact Git or Helm repository URLs, no globs), e.g. for an ApplicationSet of your own in `<path>/root`.",
    )

    @field_validator("repo_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(rf"^(https://|ssh://|git@){_EXACT_URL}$", v):
            raise ValueError(f"{v!r} is not a Git URL (https://, ssh:// or git@host:path; no globs)")
        return v

    @field_validator("app_repos")
    @classmethod
    def _app_repos(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for url in v:
            if not re.match(rf"^(https://|ssh://|git@|oci://){_EXACT_URL}$", url):
                raise ValueError(f"{url!r} is not one repository URL (https://, ssh://, git@host:path or oci://; no globs)")
        if len(set(v)) != len(v):
            raise ValueError("a repository is listed twice")
        return v

    @model_validator(mode="after")
    def _apps_beside_root(self) -> "GitOpsConfig":
        if self.repo_url in self.app_repos:
            raise ValueError(f"app_repos: {self.repo_url} is repo_url, allowed already")
        return self

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if v.startswith("/") or ".." in v.split("/") or not v.strip("/"):
            raise ValueError(f"{v!r} must be a relative directory in the repository")
        return v.strip("/")


class PlatformConfig(_Model):
    enabled: bool = Field(default=True, description="Deploy the platform (Sealed Secrets, Traefik, Longhorn, NFS, monitoring, Argo CD) on K3s. Needs `k3s.enabled`.")
    charts: dict[str, ChartConfig] = Field(
        default={},
        description="Per chart (`traefik`, `sealed-secrets`, `argo-cd`, `argocd-image-updater`, `longhorn`, `kube-prometheus-stack`, `nfs-subdir-external-provisioner`): `version`, `repo` or `path`.",
    )
    gitops: Optional[GitOpsConfig] = Field(default=None, description="The repository of the GitOps root Application. Unset: Argo CD without a root app.")
    rotation: dict[str, str] = Field(
        default={},
        description="A keeper per generated password or token (`dashboard`, `argocd-admin`, `argocd-server-key`, `argocd-redis`, `argocd-ci-token`, `grafana-admin`): change the value to rotate it on the next `up`.",
    )
    argocd_password_mtime: str = Field(
        default="2026-01-01T00:00:00Z",
        description="When Argo CD's admin password last changed (RFC 3339, UTC); move it with the `argocd-admin` keeper so Argo CD rejects tokens issued before.",
    )
    ci_account: Optional[str] = Field(
        default="github-actions",
        pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
        description="Argo CD's local account for CI: API tokens only, `get` and `sync` on the apps' project and nothing else. "
        "Its token, made and listed by Pulumi, is the secret stack output `argocd_ci_token` (rotate it with the `argocd-ci-token` keeper). null: no CI account.",
    )
    image_updater: bool = Field(
        default=True,
        description="Argo CD Image Updater for the apps that opt in with `gitops/apps/<app>/image-updates.yaml` (docs/delivery.md#image-updates); "
        "it lists tags with the credentials of `k3s.registries`.",
    )
    values: dict[str, dict[str, Any]] = Field(default={}, description="Extra Helm values per chart, merged over the program's own (site tweaks).")
    longhorn_replicas: Optional[int] = Field(
        default=None, ge=1, le=5, description="Longhorn volume replicas. Default: the number of Longhorn nodes, at most 3."
    )
    network_policies: bool = Field(
        default=True,
        description="NetworkPolicies: all ingress denied in `longhorn-system`, `monitoring` and `argocd`, and on the program's pods in "
        "`kube-system` (Traefik, Sealed Secrets, the NFS provisioner), with the allows each component needs (docs/platform.md). "
        "false relaxes it: no policies from the program, the charts' own stay.",
    )

    @field_validator("charts", "values")
    @classmethod
    def _known(cls, v: dict) -> dict:
        check_known_charts(v)
        return v

    @field_validator("argocd_password_mtime")
    @classmethod
    def _mtime(cls, v: str) -> str:
        if not re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$", v):
            raise ValueError(f"{v!r} is not a UTC time like 2026-11-26T10:00:00Z")
        return v

    @field_validator("ci_account")
    @classmethod
    def _ci_account(cls, v: Optional[str]) -> Optional[str]:
        if v == "admin":
            raise ValueError("the CI account cannot be admin (it would get every right)")
        return v

    @field_validator("rotation")
    @classmethod
    def _rotation(cls, v: dict[str, str]) -> dict[str, str]:
        check_keepers(v)
        return v
