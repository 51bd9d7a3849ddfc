"""Each node's reboot agent and unattended updates (render/reboot.py, render/updates.py), from the stack config."""

from __future__ import annotations

import posixpath
from typing import Optional

from ..config import K3S_ROLES, NodeConfig, StackConfig
from ..render import budget, reboot, updates
from ..render.k3s_node import unit_name
from .k3s import budget_pool, k3s_bin_dir, k3s_budget

# The load balancers' reboot days by their place in the pair (by name): never the same day.
LB_DAYS = ("Mon,Wed,Fri", "Tue,Thu,Sat")
# Every other node outside the cluster (infra, database).
OTHER_DAYS = "Sun"


def os_kind(node: NodeConfig) -> str:
    return "flatcar" if node.is_flatcar else ("debian" if node.os.startswith("debian") else "el9")


def reboot_spec(cfg: StackConfig, node: NodeConfig) -> reboot.RebootSpec:
    """The reboot agent of ``node``: within the budget on a K3s node (when K3s is on), on its own days elsewhere."""
    u = cfg.updates
    common = dict(
        node=node.name,
        os=os_kind(node),
        window_start=u.window_start,
        window_seconds=u.window_seconds(),
        script=reboot.FLATCAR_SCRIPT if node.is_flatcar else reboot.SCRIPT,
    )
    if node.role in K3S_ROLES and cfg.k3s.enabled:
        binary = posixpath.join(k3s_bin_dir(node), "k3s")
        return reboot.RebootSpec(
            **common,
            budget=k3s_budget(cfg),
            pool=budget_pool(node),
            kubectl=f"{binary} kubectl --kubeconfig {budget.KUBECONFIG}",
            ready_timeout=max(cfg.k3s.ready_timeout, 300),
            k3s_unit=unit_name("server" if node.role == "server" else "agent"),
        )
    if node.role == "load_balancer":
        pair = sorted(cfg.load_balancers, key=lambda n: n.name)
        place = [n.name for n in pair].index(node.name)
        peers = [n for n in pair if n.name != node.name]
        return reboot.RebootSpec(**common, budget=None, days=LB_DAYS[place % 2], peer=str(peers[0].ip) if peers else "")
    return reboot.RebootSpec(**common, budget=None, days=OTHER_DAYS)


def updates_spec(cfg: StackConfig, node: NodeConfig) -> Optional[updates.UpdatesSpec]:
    """The node's unattended updates; None on Flatcar (update_engine) or with updates.packages off."""
    if node.is_flatcar or cfg.updates.packages == "off":
        return None
    return updates.UpdatesSpec(family="debian" if node.os.startswith("debian") else "el9", packages=cfg.updates.packages)
