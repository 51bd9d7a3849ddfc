"""Reboots: OS updates and reboots on every node, day-2 style (render/updates.py, render/reboot.py).

Per node with a package manager (EL9, Debian), while ``updates.packages`` is
not ``off``: the updater's packages (on an air-gapped image: only checked)
and its config file, checked on the node by the program that reads it; it
installs updates and never reboots. Flatcar updates by update_engine.

Per node, while ``updates.strategy`` is ``coordinated``: the reboot agent's
script (``sh -n``), its check (service + timer) and on a cluster node its
boot step (``systemd-analyze verify``). Cluster nodes reboot in the daily
window within the disruption budget, after their K3s install (which writes
the budget's kubeconfig and the ``kubectl`` the agent uses); the load
balancers on disjoint weekdays, each only while its peer answers; the other
nodes on Sundays. Every step is keyed on its content and the VM's domain id.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass
from typing import Mapping, Optional

import pulumi
from pulumi_command import remote

from .config import StackConfig
from .day2 import QUIET, NodeAccess, apply_file
from .render import reboot, updates
from .specs.reboots import reboot_spec, updates_spec

@dataclass(frozen=True)
class RebootsArgs:
    stack: StackConfig
    access: NodeAccess
    # node name -> its K3s install command (a cluster node's agent needs what it installs).
    installs: Mapping[str, pulumi.Resource]


def _verify_unit(name: str) -> str:
    # systemd-analyze wants the unit's own name; it also checks that ExecStart exists.
    return f'd=$(mktemp -d); cp {{file}} "$d/{name}"; systemd-analyze verify "$d/{name}"; rc=$?; rm -rf "$d"; exit $rc'


def _first_boot_then(script: str) -> str:
    """``script`` as root, once first boot is over (cloud-init's packages and users are there)."""
    wait = (
        "if [ -e /run/cloud-init/enabled ] && command -v cloud-init >/dev/null 2>&1; then\n"
        "  rc=0; cloud-init status --wait >/dev/null 2>&1 || rc=$?\n"
        '  [ "$rc" -ne 1 ] || { echo "microcloud: first boot failed: cloud-init reported an error" >&2; exit 1; }\n'
        "fi\n"
    )
    return "sudo sh -c " + shlex.quote(wait + script)


class Reboots(pulumi.ComponentResource):
    def __init__(self, name: str, args: RebootsArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("microcloud:updates:Reboots", name, None, opts)
        cfg = args.stack
        for node in cfg.nodes:
            conn = args.access.conn(node.name)
            again = [args.access.domain_ids[node.name]]
            up = updates_spec(cfg, node)
            if up is not None:
                script = updates.packages_script(up, node.name)
                packages = remote.Command(
                    f"{node.name}-updates-packages",
                    connection=conn.args(),
                    create=_first_boot_then(script),
                    triggers=[hashlib.sha256(script.encode()).hexdigest(), *again],
                    logging=QUIET,
                    opts=conn.options(pulumi.ResourceOptions(parent=self, custom_timeouts=pulumi.CustomTimeouts(create="30m"),
                                                             additional_secret_outputs=["stdout", "stderr"])),
                )
                apply_file(
                    f"{node.name}-updates",
                    conn=conn, node=node.name,
                    content=updates.render(up), path=updates.path_of(up),
                    validate=updates.VALIDATE[up.family],
                    activate=updates.activate(up),
                    verify=updates.verify(up),
                    replace_with=again,
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[packages]),
                )
            if cfg.updates.strategy != "coordinated":
                continue
            spec = reboot_spec(cfg, node)
            after = [args.installs[node.name]] if node.name in args.installs else []
            agent = apply_file(
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
                opts=pulumi.ResourceOptions(parent=self, depends_on=[agent]),
            )
            # The check's timer (started), and on a cluster node the boot step (enabled for the next boot).
            steps = [(reboot.TIMER_UNIT, "timer", check, f"enable -q {reboot.TIMER_UNIT} && systemctl restart", "is-active")]
            if reboot.BOOT_UNIT in units:
                steps.append((reboot.BOOT_UNIT, "boot", agent, "enable -q", "is-enabled"))
            for unit, suffix, after_step, verb, state in steps:
                apply_file(
                    f"{node.name}-reboot-{suffix}",
                    conn=conn, node=node.name,
                    content=units[unit], path=f"/etc/systemd/system/{unit}",
                    validate=_verify_unit(unit),
                    activate=f"systemctl daemon-reload && systemctl {verb} {unit}",
                    verify=f"systemctl {state} -q {unit}",
                    replace_with=again,
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[after_step]),
                )
        self.register_outputs({})
