"""Reboots: each K3s node's reboot agent (render/reboot.py), delivered day-2 style after its K3s install.

Per node, while ``updates.strategy`` is ``coordinated``: the agent's script,
its daily check (service + timer at ``updates.window_start``) and its boot
step, each validated on the node (``sh -n``, ``systemd-analyze verify``)
before it replaces the file there, keyed on its content and the VM's domain
id. It runs after the node's K3s install, which writes the budget's
kubeconfig and the ``kubectl`` it uses.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Mapping, Optional

import pulumi

from . import specs
from .config import StackConfig
from .day2 import NodeAccess, apply_file
from .render import budget, reboot
from .render.k3s_node import unit_name


@dataclass(frozen=True)
class RebootsArgs:
    stack: StackConfig
    access: NodeAccess
    # node name -> its K3s install command (the agent needs what it installs).
    installs: Mapping[str, pulumi.Resource]


def reboot_spec(cfg: StackConfig, node) -> reboot.RebootSpec:
    """The reboot agent of K3s node ``node``."""
    binary = posixpath.join(specs.k3s_bin_dir(node), "k3s")
    u = cfg.updates
    os_kind = "flatcar" if node.is_flatcar else ("debian" if node.os.startswith("debian") else "el9")
    return reboot.RebootSpec(
        node=node.name,
        os=os_kind,
        pool=specs.budget_pool(node),
        budget=specs.k3s_budget(cfg),
        kubectl=f"{binary} kubectl --kubeconfig {budget.KUBECONFIG}",
        window_start=u.window_start,
        window_seconds=u.window_seconds(),
        ready_timeout=max(cfg.k3s.ready_timeout, 300),
        script=reboot.FLATCAR_SCRIPT if node.is_flatcar else reboot.SCRIPT,
        k3s_unit=unit_name("server" if node.role == "server" else "agent"),
    )


def _verify_unit(name: str) -> str:
    # systemd-analyze wants the unit's own name; it also checks that ExecStart exists.
    return f'd=$(mktemp -d); cp {{file}} "$d/{name}"; systemd-analyze verify "$d/{name}"; rc=$?; rm -rf "$d"; exit $rc'


class Reboots(pulumi.ComponentResource):
    def __init__(self, name: str, args: RebootsArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("microcloud:k3s:Reboots", name, None, opts)
        cfg = args.stack
        if cfg.updates.strategy != "coordinated":
            self.register_outputs({})
            return
        for node in cfg.nodes_with("server", "agent", "storage"):
            spec = reboot_spec(cfg, node)
            conn = args.access.conn(node.name)
            again = [args.access.domain_ids[node.name]]
            after = [args.installs[node.name]] if node.name in args.installs else []
            script = apply_file(
                f"{node.name}-reboot-agent",
                conn=conn, node=node.name,
                content=reboot.render_script(spec), path=spec.script, mode="0755",
                validate="sh -n {file}",
                activate="true",
                replace_with=again,
                opts=pulumi.ResourceOptions(parent=self, depends_on=after),
            )
            units = reboot.render_units(spec)
            check = apply_file(
                f"{node.name}-reboot-check",
                conn=conn, node=node.name,
                content=units[reboot.CHECK_UNIT], path=f"/etc/systemd/system/{reboot.CHECK_UNIT}",
                validate=_verify_unit(reboot.CHECK_UNIT),
                activate="systemctl daemon-reload",
                replace_with=again,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[script]),
            )
            apply_file(
                f"{node.name}-reboot-timer",
                conn=conn, node=node.name,
                content=units[reboot.TIMER_UNIT], path=f"/etc/systemd/system/{reboot.TIMER_UNIT}",
                validate=_verify_unit(reboot.TIMER_UNIT),
                activate=f"systemctl daemon-reload && systemctl enable -q {reboot.TIMER_UNIT} && systemctl restart {reboot.TIMER_UNIT}",
                verify=f"systemctl is-active -q {reboot.TIMER_UNIT}",
                replace_with=again,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[check]),
            )
            apply_file(
                f"{node.name}-reboot-boot",
                conn=conn, node=node.name,
                content=units[reboot.BOOT_UNIT], path=f"/etc/systemd/system/{reboot.BOOT_UNIT}",
                validate=_verify_unit(reboot.BOOT_UNIT),
                activate=f"systemctl daemon-reload && systemctl enable -q {reboot.BOOT_UNIT}",
                verify=f"systemctl is-enabled -q {reboot.BOOT_UNIT}",
                replace_with=again,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[script]),
            )
        self.register_outputs({})
