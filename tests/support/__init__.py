"""The tests' shared helpers, kept apart so tests/ lists test files only: ``harness`` runs
__main__.py under Pulumi mocks with a recording monitor and loads a stack's config
(``stack_model``, ``stack_config``, ``EDGE_STACKS``); ``cli`` runs the project's Pulumi CLI
on a throwaway copy of the program (engine, e2e and k8s tiers); ``lbnet`` runs the real
haproxy + keepalived pair in network namespaces; ``ignition_apply`` applies a rendered
Ignition config with the real Ignition runtime into a temporary root; ``planned_state``
builds a stack's state as the real engine plans it (the day-2 previews); ``loopback`` is a
download host on 127.0.0.1; ``gitops_patch`` does what Kustomize does with the root
Application's JSON patch ops; ``argocd_project`` asks a rendered AppProject what Argo CD
would (may this Application, this object sync?); ``platform_render`` holds what the K3s
and platform render tests share (the stack configs, the chart values' specs built from
them, the chart directory); ``k3s_node`` builds each K3s node's spec and a temporary root
with stand-ins to run the install script in.
"""
