"""What Kustomize does with the root Application's JSON patch ops: the tests apply them to gitops/root/applicationset.yaml.

Used by tests/test_platform_gitops_render.py (the patched ApplicationSet names the
configured repository) and tests/k8s/test_platform_engine.py (the API server
accepts it); the program itself hands the ops to Argo CD.
"""

from __future__ import annotations

import copy


def apply_patch_ops(obj: dict, ops: list[dict]) -> dict:
    """What Kustomize does with ``root_patch_ops`` (replace only; a missing path is an error, as in Kustomize)."""
    out = copy.deepcopy(obj)
    for op in ops:
        if op["op"] != "replace":
            raise ValueError(f"gitops: only replace ops, not {op['op']}")
        *parents, last = [p for p in op["path"].split("/")[1:]]
        node = out
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = op["value"]
        elif last in node:
            node[last] = op["value"]
        else:
            raise KeyError(f"gitops: no {op['path']} to replace")
    return out
