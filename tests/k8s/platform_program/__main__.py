"""Platform against a test Kubernetes API: the provider from a kubeconfig file, the charts from a directory.

Config (or environment): ``kubeconfig`` (MICROCLOUD_TEST_KUBECONFIG), a path
to an admin kubeconfig; ``chartDir`` (MICROCLOUD_CHART_DIR), the directory of
``<name>-<version>/`` charts; ``domain``, ``httpNodePort``, ``httpsNodePort``.
Switched for an API server with fake nodes: no ServiceMonitors (no
monitoring CRDs), CRDs removed on destroy.
"""

import os
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

from components.platform import CHART_VERSIONS, Platform, PlatformArgs

cfg = pulumi.Config()
kubeconfig_path = cfg.get("kubeconfig") or os.environ["MICROCLOUD_TEST_KUBECONFIG"]
chart_dir = Path(cfg.get("chartDir") or os.environ.get("MICROCLOUD_CHART_DIR") or Path.home() / ".cache/microcloud-charts")

provider = k8s.Provider(
    "test-cluster",
    kubeconfig=pulumi.Output.secret(Path(kubeconfig_path).read_text()),
    # A stable identity: a changed kubeconfig must not replace every object under the provider.
    cluster_identifier="microcloud-test",
    delete_unreachable=False,
)

platform = Platform(
    "platform",
    PlatformArgs(
        domain=cfg.get("domain") or "microcloud.test",
        http_nodeport=cfg.get_int("httpNodePort") or 30080,
        https_nodeport=cfg.get_int("httpsNodePort") or 30443,
        provider=provider,
        charts={name: str(chart_dir / f"{name}-{ver}") for name, ver in CHART_VERSIONS.items()},
        argocd=cfg.get_bool("argocd") is not False,
        keep_crds=False,
        service_monitors=False,
    ),
)

pulumi.export("sealing_certificate", platform.sealing_certificate)
pulumi.export("default_certificate", platform.default_certificate)
pulumi.export("dashboard_password", platform.dashboard_password)
if platform.argocd_admin_password is not None:
    pulumi.export("argocd_admin_password", platform.argocd_admin_password)
