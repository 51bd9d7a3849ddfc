"""Argo CD: its namespace, the Secrets its hook Jobs would have made (argocd-secret, argocd-redis), the chart, the CI account's token."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
from pulumi_command import local

from components.render.platform.argocd import ARGOCD_REDIS_SECRET, ARGOCD_SECRET, ArgoCdSpec, argocd_values
from components.render.platform.argocd_token import ApiToken, sign_token, tokens_entry, tokens_key
from components.render.platform.gitops import APP_PROJECT, default_project

if TYPE_CHECKING:
    from .component import Platform

ARGOCD_PART_OF = {"app.kubernetes.io/part-of": "argocd"}  # argocd-server only reads Secrets with this label
# argocd-server makes the `default` project when it starts, if missing: ours is applied over it, taking its fields.
PATCH_FORCE = {"pulumi.com/patchForce": "true"}


def create(p: "Platform") -> None:
    """Sets ``argocd`` (the chart), ``default_project``, ``argocd_admin_password`` and ``argocd_ci_token``;
    waits for kube-prometheus-stack when service_monitors."""
    n, a = p._name, p._args
    spec = ArgoCdSpec(domain=a.domain, keep_crds=a.keep_crds, service_monitors=a.service_monitors,
                      pod_annotations=p._restart_on("argocd-redis"), own_network_policies=a.network_policies,
                      ci_account=a.argocd_ci_account, apps_project=APP_PROJECT)
    ns = p._namespace("argocd", spec.namespace)
    namespace = ns.metadata.name
    admin = p._password("argocd-admin", 24)
    server_key = p._password("argocd-server-key", 48)
    redis = p._password("argocd-redis", 32)
    ci_tokens: dict = {}
    p.argocd_ci_token = None
    if spec.ci_account:
        account = spec.ci_account
        # The token's id: a new keeper makes a new one, and argocd-secret then lists only it (the old token is refused).
        token_id = random.RandomUuid(f"{n}-argocd-ci-token", keepers={"rotation": a.rotation.get("argocd-ci-token", "")}, opts=p._child)
        # When it was issued: read once on the Pulumi host, kept in the state until the id changes (what
        # `argocd account generate-token` records as iat).
        issued = local.Command(f"{n}-argocd-ci-token-issued", create="date -u +%s", triggers=[token_id.result],
                               logging=local.Logging.NONE, opts=p._child)

        def token(vals: list) -> ApiToken:
            return ApiToken(account=account, token_id=vals[0], issued_at=int(str(vals[1]).strip()))

        ci_tokens[tokens_key(account)] = pulumi.Output.all(token_id.result, issued.stdout).apply(lambda v: tokens_entry([token(v)]))
        p.argocd_ci_token = pulumi.Output.secret(
            pulumi.Output.all(token_id.result, issued.stdout, server_key.result).apply(lambda v: sign_token(token(v), v[2]))
        )
    argocd_secret = k8s.core.v1.Secret(
        f"{n}-argocd-secret",
        metadata={"name": ARGOCD_SECRET, "namespace": namespace, "labels": dict(ARGOCD_PART_OF)},
        type="Opaque",
        string_data={
            "admin.password": pulumi.Output.secret(admin.bcrypt_hash),
            "admin.passwordMtime": a.argocd_password_mtime,
            "server.secretkey": pulumi.Output.secret(server_key.result),
            # The CI account's one token: argocd-server accepts a token only when its id is listed here.
            **ci_tokens,
        },
        opts=p._k8s_opts(delete_before_replace=True),
    )
    redis_name, redis_key = ARGOCD_REDIS_SECRET
    redis_secret = k8s.core.v1.Secret(
        f"{n}-argocd-redis",
        metadata={"name": redis_name, "namespace": namespace, "labels": dict(ARGOCD_PART_OF)},
        type="Opaque",
        string_data={redis_key: pulumi.Output.secret(redis.result)},
        opts=p._k8s_opts(delete_before_replace=True),
    )
    deps: list[pulumi.Resource] = [argocd_secret, redis_secret, *p._network_policies("argocd", ns)]
    if a.service_monitors:
        # Its ServiceMonitors need the monitoring CRDs.
        deps.append(p.charts["kube-prometheus-stack"])
    # The chart's pods mount both Secrets by their fixed names.
    p.argocd = p._chart("argo-cd", "argocd", namespace, argocd_values(spec), depends_on=deps)
    # Argo CD's `default` project allows everything and comes back when deleted, and any ApplicationSet
    # may name it: emptied. The AppProject CRD comes with the chart.
    default = default_project(spec.namespace)
    p.default_project = k8s.apiextensions.CustomResource(
        f"{n}-argocd-default-project",
        api_version=default["apiVersion"],
        kind=default["kind"],
        metadata={**default["metadata"], "annotations": dict(PATCH_FORCE)},
        spec=default["spec"],
        opts=p._k8s_opts(depends_on=[p.argocd]),
    )
    p.argocd_admin_password = pulumi.Output.secret(admin.result)
