"""Argo CD's Helm values (chart 10.x) and the names of the Secrets its hook Jobs would have made."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

from .common import TRAEFIK_TLS_ANNOTATIONS

ARGOCD_NAMESPACE = "argocd"
# With configs.secret.createSecret false the program creates argocd-secret:
# admin.password (bcrypt), admin.passwordMtime, server.secretkey.
ARGOCD_SECRET = "argocd-secret"
# The CI account (docs/delivery.md#the-ci-account) and its role in argocd-rbac-cm.
CI_ACCOUNT = "github-actions"
CI_ROLE = "role:microcloud-ci"
# Made by the redis-secret-init hook Job, which never runs: key "auth".
ARGOCD_REDIS_SECRET = ("argocd-redis", "auth")

# Argo CD 1.8+ no longer reports an Application's health to its parent; this
# is the documented customization that makes an app-of-apps wait for each
# sync wave's Applications to be Healthy before the next wave.
APPLICATION_HEALTH_LUA = """hs = {}
hs.status = "Progressing"
hs.message = ""
if obj.status ~= nil then
  if obj.status.health ~= nil then
    hs.status = obj.status.health.status
    if obj.status.health.message ~= nil then
      hs.message = obj.status.health.message
    end
  end
end
return hs
"""


@dataclass(frozen=True)
class ArgoCdSpec:
    """``keep_crds`` False lets ``pulumi destroy`` remove the CRDs (dev); True keeps them (prod)."""

    domain: str
    keep_crds: bool
    ingress_class: str = "traefik"
    namespace: str = ARGOCD_NAMESPACE
    # ServiceMonitors need the monitoring CRDs: on when kube-prometheus-stack is installed first.
    service_monitors: bool = True
    # On every Argo CD pod: a changed value restarts them (they read the redis password at start).
    pod_annotations: Mapping[str, str] = field(default_factory=dict)
    # The program's NetworkPolicies (network_policies.py) replace the chart's, whose server
    # policy admits every source on every port and whose metrics rules every namespace.
    own_network_policies: bool = True
    # The local account CI syncs with (API tokens only, no login), and the project whose apps it may get and sync.
    ci_account: Optional[str] = CI_ACCOUNT
    apps_project: str = "microcloud-apps"


def ci_policy_csv(account: str, project: str) -> str:
    """argocd-rbac-cm's policy.csv: ``account`` may get and sync the Applications of ``project``, nothing else.

    policy.default stays empty (the chart's default), so every other authenticated user without a role gets nothing.
    """
    return (
        f"p, {CI_ROLE}, applications, get, {project}/*, allow\n"
        f"p, {CI_ROLE}, applications, sync, {project}/*, allow\n"
        f"g, {account}, {CI_ROLE}\n"
    )


def argocd_host(spec: ArgoCdSpec) -> str:
    return f"argocd.{spec.domain}"


def argocd_values(spec: ArgoCdSpec) -> dict:
    metrics = {"enabled": spec.service_monitors, "serviceMonitor": {"enabled": spec.service_monitors}}
    return {
        "global": {"domain": argocd_host(spec), "podAnnotations": dict(spec.pod_annotations),
                   "networkPolicy": {"create": not spec.own_network_policies}},
        "crds": {"keep": spec.keep_crds},
        "configs": {
            "params": {
                # TLS ends at Traefik; the server speaks plain HTTP behind it.
                "server.insecure": True,
                # Our ApplicationSet reads Git only: no SCM-provider or pull-request generators, which send a
                # Secret of Argo CD's namespace to whatever URL an ApplicationSet names.
                "applicationsetcontroller.enable.scm.providers": False,
            },
            "cm": {
                "resource.customizations.health.argoproj.io_Application": APPLICATION_HEALTH_LUA,
                # The CI account: API tokens only (no UI or CLI login); the program makes its token.
                **({f"accounts.{spec.ci_account}": "apiKey"} if spec.ci_account else {}),
            },
            "rbac": {
                "policy.default": "",
                "policy.csv": ci_policy_csv(spec.ci_account, spec.apps_project) if spec.ci_account else "",
            },
            # The admin password's bcrypt hash lives in argocd-secret, made by the program.
            "secret": {"createSecret": False},
        },
        "redisSecretInit": {"enabled": False},
        "dex": {"enabled": False},
        "server": {
            "ingress": {
                "enabled": True,
                "ingressClassName": spec.ingress_class,
                "hostname": argocd_host(spec),
                "annotations": dict(TRAEFIK_TLS_ANNOTATIONS),
                "tls": False,
            },
            "metrics": metrics,
        },
        "controller": {"metrics": metrics},
        "repoServer": {"metrics": metrics},
        "applicationSet": {"metrics": metrics},
    }
