"""The Platform component: checks its inputs, resolves each chart's source, then creates the addons in order.

Each addon is one function in its own module (``sealed_secrets``,
``traefik``, ``longhorn``, ``nfs``, ``monitoring``, ``argocd``, ``image_updater``, ``gitops``)
that takes the component and registers its resources as the component's
children through the helpers below.
"""

from __future__ import annotations

from typing import Optional

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.chart_pins import CHARTS
from components.render.platform.network_policies import POLICY_PREFIX, NetworkPolicySpec, network_policies

from . import argocd, gitops, image_updater, longhorn, monitoring, nfs, sealed_secrets, traefik
from .args import PlatformArgs, check_args
from .charts import chart_dir, merge_values, needed_charts

# Pods that read a password only when they start carry its keeper: a bump restarts them.
ROTATION_ANNOTATION = "microcloud.io/rotation-{}"


class Platform(pulumi.ComponentResource):
    sealing_certificate: pulumi.Output[str]
    default_certificate: pulumi.Output[str]
    dashboard_password: pulumi.Output[str]
    argocd_admin_password: Optional[pulumi.Output[str]]
    # The CI account's API token (secret); None without Argo CD or a CI account.
    argocd_ci_token: Optional[pulumi.Output[str]]
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
                self._charts[chart] = (chart, src.version, src.repo or CHARTS[chart].repo)
        self._name = name
        self._args = args
        self._k8s = pulumi.ResourceOptions(parent=self, provider=args.provider)
        self._child = pulumi.ResourceOptions(parent=self)
        self.charts: dict[str, k8s.helm.v4.Chart] = {}
        self.network_policies: dict[str, list[k8s.networking.v1.NetworkPolicy]] = {}
        self._policies = network_policies(NetworkPolicySpec(argocd=args.argocd, nfs_provisioner=args.nfs_server is not None)
                                          ) if args.network_policies else {}
        self.argocd_admin_password = None
        self.argocd_ci_token = None
        self.default_project = None
        self.root_project = None
        self.apps_project = None
        self.root_app = None
        self.image_updater = None
        self.image_updater_object = None

        sealed_secrets.create(self)
        traefik.create(self)
        longhorn.create(self)
        if args.nfs_server is not None:
            nfs.create(self)
        monitoring.create(self)
        if args.argocd:
            argocd.create(self)
            if args.image_updater:
                image_updater.create(self)
            if args.gitops is not None:
                gitops.create(self)

        outputs = {
            "sealing_certificate": self.sealing_certificate,
            "default_certificate": self.default_certificate,
            "dashboard_password": self.dashboard_password,
            "grafana_admin_password": self.grafana_admin_password,
        }
        if self.argocd_admin_password is not None:
            outputs["argocd_admin_password"] = self.argocd_admin_password
        if self.argocd_ci_token is not None:
            outputs["argocd_ci_token"] = self.argocd_ci_token
        self.register_outputs(outputs)

    # ------------------------------------------------------------ helpers (the addon modules call them)

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

    def _network_policies(self, addon: str, namespace: Optional[k8s.core.v1.Namespace] = None) -> list[pulumi.Resource]:
        """The program's NetworkPolicies for ``addon``'s pods (none with network_policies off).

        The addon's chart depends on them, so no pod of it starts before it is isolated.
        """
        made = []
        for pol in self._policies.get(addon, []):
            meta = pol["metadata"]
            ns = namespace.metadata.name if namespace is not None else meta["namespace"]
            made.append(k8s.networking.v1.NetworkPolicy(
                f"{self._name}-netpol-{meta['namespace']}-{meta['name'].removeprefix(POLICY_PREFIX)}",
                metadata={**meta, "namespace": ns},
                spec=pol["spec"],
                opts=self._k8s_opts(),
            ))
        self.network_policies[addon] = made
        return made

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
