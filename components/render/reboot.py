"""The reboot agent of a cluster node: OS reboots within the disruption budget (render/budget.py).

Instead of kured, because the budget must be one: kured keeps its lock in an
annotation of its own DaemonSet, which the K3s restarts of `pulumi up` cannot
share, so a reboot and a K3s change could together take down more than the
cluster can lose. Here the same Leases are taken by both, by the same shell
library, with the same credentials (the budget's kubeconfig the K3s install
writes). It does what kured does, on every OS the program runs:

``check`` (a timer at the start of the daily window, ``updates.window_start``):
  - nothing to do unless the OS says a reboot is needed (Flatcar:
    update_engine applied an update, locksmithd never reboots by itself;
    EL9: ``dnf needs-restarting -r``; Debian: ``/run/reboot-required``);
  - takes a slot of the node's pool, waiting at most until the window ends;
  - cordons and drains the node (the eviction API honours PodDisruptionBudgets;
    a drain that does not finish uncordons and frees the slot);
  - marks the hold on disk, keeps the slot for the failed-hold time (it is
    not renewed while the node is down) and reboots.
``boot`` (a oneshot at every boot, after K3s): with a hold on disk, waits for
  the node to be Ready, uncordons it and frees the slot. A node that does not
  come back keeps its slot for the failed-hold time, so the next one waits.

A node outside the cluster (no budget: the load balancers, the infra and the
database node) reboots on its own days only (``days``): the two load
balancers on disjoint weekdays, each only while its peer answers (``peer``:
ping), so both are never down at once; the VIPs move to the peer.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Optional

from . import budget

SCRIPT = "/usr/local/libexec/microcloud-reboot"
FLATCAR_SCRIPT = "/opt/libexec/microcloud-reboot"
HOLD = "/var/lib/microcloud/reboot-hold"
CHECK_UNIT = "microcloud-reboot.service"
TIMER_UNIT = "microcloud-reboot.timer"
BOOT_UNIT = "microcloud-reboot-boot.service"

# What says a reboot is needed, per OS: status 0 = needed.
NEEDS_REBOOT = {
    "flatcar": "update_engine_client -status 2>/dev/null | grep -q UPDATE_STATUS_UPDATED_NEED_REBOOT",
    # needs-restarting -r: 1 when a reboot is needed, 0 when not; anything else is an error, not a reboot.
    "el9": "rc=0; dnf -q needs-restarting -r >/dev/null 2>&1 || rc=$?; [ \"$rc\" = 1 ]",
    "debian": "[ -e /run/reboot-required ]",
}
_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_DAYS = re.compile(r"^((Mon|Tue|Wed|Thu|Fri|Sat|Sun)(,(Mon|Tue|Wed|Thu|Fri|Sat|Sun))*)?$")
_IP = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


@dataclass(frozen=True)
class RebootSpec:
    node: str
    os: str  # flatcar | el9 | debian
    # The disruption budget and the node's pool in it; None for a node outside the cluster.
    budget: Optional[budget.BudgetSpec]
    pool: str = ""
    # kubectl with the budget's kubeconfig (the K3s multi-call binary on the node); cluster nodes only.
    kubectl: str = ""
    # OnCalendar weekdays (``Mon,Wed,Fri``); "" for every day.
    days: str = ""
    # Outside the cluster: an address that must answer ping before this node reboots (the LB's peer).
    peer: str = ""
    window_start: str = "03:00"
    window_seconds: int = 3600
    # The drain's own bound; a drain that does not finish cancels the reboot.
    drain_timeout: int = 900
    # How long `boot` waits for the node to be Ready before it leaves the slot held.
    ready_timeout: int = 900
    # The script's path on the node (Flatcar's /usr is read-only).
    script: str = SCRIPT
    # The K3s unit the boot step runs after.
    k3s_unit: str = "k3s-agent.service"


def check(spec: RebootSpec) -> None:
    who = f"reboot: {spec.node}"
    if spec.os not in NEEDS_REBOOT:
        raise ValueError(f"{who}: os {spec.os!r} is none of {', '.join(NEEDS_REBOOT)}")
    if spec.budget is not None:
        spec.budget.size(spec.pool)
        if not spec.kubectl:
            raise ValueError(f"{who}: a cluster node's agent needs kubectl with the budget's kubeconfig")
    elif spec.pool or spec.kubectl:
        raise ValueError(f"{who}: a pool and kubectl need the disruption budget")
    if not _DAYS.match(spec.days):
        raise ValueError(f"{who}: days {spec.days!r} are not weekdays like Mon,Wed,Fri")
    if spec.peer and not _IP.match(spec.peer):
        raise ValueError(f"{who}: peer {spec.peer!r} is not an IPv4 address")
    if not _TIME.match(spec.window_start):
        raise ValueError(f"{who}: window start {spec.window_start!r} is not HH:MM")
    if not 60 <= spec.window_seconds <= 86400:
        raise ValueError(f"{who}: window of {spec.window_seconds}s is not within a minute and a day")
    if spec.drain_timeout < 30 or spec.ready_timeout < 30:
        raise ValueError(f"{who}: drain and ready timeouts must be at least 30s")
    if not spec.script.startswith("/"):
        raise ValueError(f"{who}: script path {spec.script!r} is not absolute")


def render_script(spec: RebootSpec) -> str:
    """POSIX sh, root on the node: ``check`` or ``boot`` (see the module)."""
    check(spec)
    return _cluster_script(spec) if spec.budget is not None else _host_script(spec)


def _host_script(spec: RebootSpec) -> str:
    q = shlex.quote
    lines = [
        "#!/bin/sh",
        f"# The reboot agent of {spec.node}; rendered by microcloud (components/render/reboot.py).",
        "set -eu",
        f"node={q(spec.node)}",
        'say() { echo "microcloud: $node: reboot: $*" >&2; }',
        f"needs_reboot() {{ {NEEDS_REBOOT[spec.os]}; }}",
        'case "${1:-}" in',
        "  check)",
        "    needs_reboot || exit 0",
    ]
    if spec.peer:
        lines += [
            "    # The peer must be up (it answers ping: every node's firewall admits it): the two are never down together.",
            f"    if ! ping -q -c 3 -W 2 {spec.peer} >/dev/null 2>&1; then",
            f'      say "peer {spec.peer} does not answer; not rebooting"; exit 0',
            "    fi",
        ]
    lines += [
        '    say "rebooting"',
        "    systemctl reboot",
        "    ;;",
        "  boot) exit 0 ;;",
        '  *) echo "usage: $0 check|boot" >&2; exit 2 ;;',
        "esac",
    ]
    return "\n".join(lines) + "\n"


def _cluster_script(spec: RebootSpec) -> str:
    assert spec.budget is not None
    q = shlex.quote
    lib = budget.render_lib(spec.budget).rstrip("\n").split("\n")
    lines = [
        "#!/bin/sh",
        f"# The reboot agent of {spec.node}; rendered by microcloud (components/render/reboot.py).",
        "set -eu",
        "umask 077",
        f"node={q(spec.node)}",
        'say() { echo "microcloud: $node: reboot: $*" >&2; }',
        f"budget_kubectl={q(spec.kubectl)}",
        "budget_holder=$node",
        *lib,
        "# The window bounds the wait: a node that gets no slot in it tries the next day.",
        f"budget_wait={int(spec.window_seconds)}",
        f"hold={q(HOLD)}",
        "k() { $budget_kubectl --request-timeout=20s \"$@\"; }",
        f"needs_reboot() {{ {NEEDS_REBOOT[spec.os]}; }}",
        "ready() {",
        "  st=$(k get node \"$node\" -o 'jsonpath={.status.conditions[?(@.type==\"Ready\")].status}' 2>/dev/null) || st=",
        '  [ "$st" = True ]',
        "}",
        'case "${1:-}" in',
        "  check)",
        '    [ ! -e "$hold" ] || { say "a hold from an earlier reboot is still on disk: the boot step frees it first"; exit 0; }',
        '    needs_reboot || exit 0',
        f'    budget_acquire {q(spec.pool)} || {{ say "no {spec.pool} slot in this window; trying again tomorrow"; exit 0; }}',
        '    if ! k cordon "$node" >/dev/null || ! k drain "$node" --ignore-daemonsets --delete-emptydir-data'
        f' --timeout={int(spec.drain_timeout)}s >/dev/null; then',
        '      say "the drain did not finish; not rebooting (uncordoned, slot freed)"',
        '      k uncordon "$node" >/dev/null 2>&1 || true',
        "      budget_release; exit 1",
        "    fi",
        '    mkdir -p "$(dirname "$hold")"',
        '    printf "%s\\n" "$budget_slot" > "$hold"',
        "    # Not renewed while the node is down: it stays held for the failed-hold time at most.",
        "    slot=$budget_slot; budget_hold_failed 2>/dev/null; budget_slot=$slot",
        '    say "rebooting (slot $slot)"',
        "    systemctl reboot",
        "    ;;",
        "  boot)",
        '    [ -e "$hold" ] || exit 0',
        '    budget_slot=$(cat "$hold")',
        "    i=0",
        "    until ready; do",
        f'      [ "$i" -lt {int(spec.ready_timeout)} ] || {{ say "not Ready {int(spec.ready_timeout)}s after boot; slot $budget_slot stays held"; exit 1; }}',
        "      i=$((i + 5)); sleep 5",
        "    done",
        '    k uncordon "$node" >/dev/null',
        "    budget_release",
        '    rm -f "$hold"',
        "    ;;",
        '  *) echo "usage: $0 check|boot" >&2; exit 2 ;;',
        "esac",
    ]
    return "\n".join(lines) + "\n"


def render_units(spec: RebootSpec) -> dict[str, str]:
    """unit file name -> content: the check (service + timer) and, on a cluster node, the boot step."""
    check(spec)
    units = {
        CHECK_UNIT: (
            "[Unit]\n"
            "Description=microcloud: reboot within the disruption budget when the OS needs it\n"
            "Wants=network-online.target\n"
            "After=network-online.target\n\n"
            "[Service]\n"
            "Type=oneshot\n"
            f"ExecStart={spec.script} check\n"
            f"TimeoutStartSec={int(spec.window_seconds) + int(spec.drain_timeout) + 300}\n"
        ),
        TIMER_UNIT: (
            "[Unit]\n"
            "Description=microcloud: the daily reboot window\n\n"
            "[Timer]\n"
            f"OnCalendar={spec.days + ' ' if spec.days else ''}*-*-* {spec.window_start}:00\n"
            "AccuracySec=1min\n\n"
            "[Install]\n"
            "WantedBy=timers.target\n"
        ),
        BOOT_UNIT: (
            "[Unit]\n"
            "Description=microcloud: after a coordinated reboot, uncordon and free the budget slot\n"
            "Wants=network-online.target\n"
            f"After=network-online.target {spec.k3s_unit}\n\n"
            "[Service]\n"
            "Type=oneshot\n"
            f"ExecStart={spec.script} boot\n"
            f"TimeoutStartSec={int(spec.ready_timeout) + 120}\n\n"
            "[Install]\n"
            "WantedBy=multi-user.target\n"
        ),
    }
    if spec.budget is None:
        del units[BOOT_UNIT]
    return units
