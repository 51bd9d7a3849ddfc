"""ClusterPki as the program makes it, and what K3sCluster builds from it: the join input of the cluster-init
server and the admin kubeconfig. Config: ``server`` (the API URL the kubeconfig names), ``keeper``."""

import pulumi

from components.cluster_pki import ClusterPki, ClusterPkiArgs

cfg = pulumi.Config()
pki = ClusterPki(
    "k3s-pki",
    ClusterPkiArgs(prefix="microcloud-pki-test", admin_validity_days=7, admin_renew_days=1, admin_keeper=cfg.get("keeper") or "1"),
)
pulumi.export("join_input_init", pki.join_input("server", True))
pulumi.export("join_input_agent", pki.join_input("agent", False))
pulumi.export("kubeconfig", pki.kubeconfig(cfg.require("server"), after="ready"))
pulumi.export("kubeconfig_expires_at", pki.admin_expires_at)
pulumi.export("ca_hash", pki.ca_hash)
