"""Argo CD: its namespace, the Secrets its hook Jobs would have made (argocd-secret, argocd-redis), the chart."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pulumi
import pulumi_kubernetes as k8s

from components.render.platform.argocd import ARGOCD_REDIS_SECRET, ARGOCD_SECRET, ArgoCdSpec, argocd_values
from components.render.platform.gitops import default_project

if TYPE_CHECKING:
    from .component import Platform

ARGOCD_PART_OF = {"app.kubernetes.io/part-of": "argocd"}  # argocd-server only reads Secrets with this label
# argocd-server makes the `default` project when it starts, if missing: ours is applied over it, taking its fields.
PATCH_FORCE = {"pulumi.com/patchForce": "true"}


def create(p: "Platform") -> None:
    """Sets ``argocd`` (the chart), ``default_project`` and ``argocd_admin_password``; waits for kube-prometheus-stack when service_monitors."""
    n, a = p._name, p._args
    spec = ArgoCdSpec(domain=a.domain, keep_crds=a.keep_crds, service_monitors=a.service_monitors,
                      pod_annotations=p._restart_on("argocd-redis"), own_network_policies=a.network_policies)
    ns = p._namespace("argocd", spec.namespace)
    namespace = ns.metadata.name
    admin = p._password("argocd-admin", 24)
    server_key = p._password("argocd-server-key", 48)
    redis = p._password("argocd-redis", 32)
    argocd_secret = k8s.core.v1.Secret(
        f"{n}-argocd-secret",
        metadata={"name": ARGOCD_SECRET, "namespace": namespace, "labels": dict(ARGOCD_PART_OF)},
        type="Opaque",
        string_data={
            "admin.password": pulumi.Output.secret(admin.bcrypt_hash),
            "admin.passwordMtime": a.argocd_password_mtime,
            "server.secretkey": pulumi.Output.secret(server_key.result),
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
