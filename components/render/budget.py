"""The disruption budget: slots held as Lease objects in the cluster, taken by every step that takes a member node down.

A pool is a set of ``size`` Leases ``<pool>-0 .. <pool>-<size-1>`` in one
namespace. A node holds at most one slot of a pool: its name is the Lease's
``holderIdentity``. A slot is free when its Lease is missing, has no holder,
or was last renewed longer ago than its ``leaseDurationSeconds`` (a crashed
holder's slot is taken over after that). Every take is a create (refused when
the Lease exists) or a replace carrying the resourceVersion that was read
(refused when anyone wrote in between): two contenders never both win one
slot, and the API server's own record (the Lease's versions) shows who held
which slot when.

The pools (``specs.budget``): ``server`` of size 1 (never two servers down:
etcd keeps quorum), ``agent`` of ``k3s.disruption.max_unavailable`` (agents
and storage nodes). K3s restarts of a running member (render/k3s.py) and the
coordinated reboots (render/reboot.py) take the same slots, so a K3s change
and an OS reboot never add up beyond the budget.

Rendered here: the shell library both use (POSIX sh; ``k3s kubectl`` with
the budget's kubeconfig, no jq: fields are read by jsonpath), and the RBAC
manifest K3s applies on its servers (render/k3s.py puts it in the auto-deploy
directory): the budget's user may read and write Leases in the budget's
namespace, and cordon and drain nodes, nothing else.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

import yaml

NAMESPACE = "microcloud-budget"
# The client certificate's common name (ClusterPki signs it); RBAC binds this user.
USER = "microcloud:disruption-budget"
# Where the K3s install writes the budget's kubeconfig on every K3s node (0600, root).
KUBECONFIG = "/etc/rancher/microcloud/budget.kubeconfig"
# K3s' auto-deploy directory on a server: manifests there are applied (and re-applied when changed).
MANIFEST = "/var/lib/rancher/k3s/server/manifests/microcloud-budget.yaml"

_POOL = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


@dataclass(frozen=True)
class BudgetSpec:
    """The pools (name -> slots) and the timing of a hold."""

    pools: tuple[tuple[str, int], ...]
    # A hold not renewed for this long is stale: anyone may take the slot over.
    lease_seconds: int = 300
    # How long a contender waits for a slot before it fails, naming the holders.
    wait_seconds: int = 3600
    # A step that failed with its node not back keeps the slot this long (renewed once, not again):
    # the next node is not taken down while this one is broken, and the slot frees itself in the end.
    failed_hold_seconds: int = 3600
    namespace: str = NAMESPACE
    user: str = USER

    def size(self, pool: str) -> int:
        for name, size in self.pools:
            if name == pool:
                return size
        raise ValueError(f"budget: no pool {pool!r} (pools: {', '.join(n for n, _ in self.pools)})")


def check(spec: BudgetSpec) -> None:
    if not spec.pools:
        raise ValueError("budget: no pools")
    names = [n for n, _ in spec.pools]
    if len(set(names)) != len(names):
        raise ValueError(f"budget: a pool is named twice in {names}")
    for name, size in spec.pools:
        if not _POOL.match(name):
            raise ValueError(f"budget: pool name {name!r} is not a lowercase DNS label")
        if not 1 <= size <= 1000:
            raise ValueError(f"budget: pool {name} has {size} slots (1..1000)")
    if not 10 <= spec.lease_seconds <= 86400:
        raise ValueError(f"budget: lease_seconds {spec.lease_seconds} is not within 10..86400")
    if spec.wait_seconds < spec.lease_seconds:
        raise ValueError(f"budget: wait_seconds {spec.wait_seconds} is shorter than lease_seconds {spec.lease_seconds}: a stale slot could never be taken over")
    if spec.failed_hold_seconds < spec.lease_seconds:
        raise ValueError("budget: failed_hold_seconds is shorter than lease_seconds")


def render_lib(spec: BudgetSpec) -> str:
    """Shell functions (sourced or inlined): budget_acquire POOL, budget_release, budget_hold_failed.

    The caller sets ``budget_kubectl`` (a command line that runs kubectl with
    the budget's kubeconfig) and ``budget_holder`` (the node's name) first.
    ``budget_acquire`` waits for a slot (a node that already holds one of the
    pool gets that one back), then renews it in the background every third of
    the lease time until ``budget_release`` (slot free) or
    ``budget_hold_failed`` (renewed once with the failed-hold time, then left).
    Messages go to stderr and name the node, the pool and the holders.
    """
    check(spec)
    q = shlex.quote
    case = "\n".join(f"    {name}) echo {size} ;;" for name, size in spec.pools)
    lines = [
        "# --- disruption budget (components/render/budget.py) ---",
        f"budget_ns={q(spec.namespace)}",
        f"budget_lease={int(spec.lease_seconds)}",
        f"budget_wait={int(spec.wait_seconds)}",
        f"budget_failed_hold={int(spec.failed_hold_seconds)}",
        "budget_slot=; budget_renewer=",
        "budget_size() {",
        '  case "$1" in',
        case,
        "    *) return 1 ;;",
        "  esac",
        "}",
        "budget_k() { $budget_kubectl --request-timeout=10s -n \"$budget_ns\" \"$@\"; }",
        "budget_now() { date -u +%Y-%m-%dT%H:%M:%S.%6NZ; }",
        "# The Lease as JSON: name holder duration acquire-time [resourceVersion]",
        "budget_doc() {",
        "  rv=; [ -z \"${5:-}\" ] || rv=\",\\\"resourceVersion\\\":\\\"$5\\\"\"",
        "  now=$(budget_now)",
        "  printf '{\"apiVersion\":\"coordination.k8s.io/v1\",\"kind\":\"Lease\",\"metadata\":{\"name\":\"%s\",\"namespace\":\"%s\"%s},'"
        " \"$1\" \"$budget_ns\" \"$rv\"",
        "  printf '\"spec\":{\"holderIdentity\":\"%s\",\"leaseDurationSeconds\":%s,\"acquireTime\":\"%s\",\"renewTime\":\"%s\"}}\\n'"
        " \"$2\" \"$3\" \"${4:-$now}\" \"$now\"",
        "}",
        "# Reads Lease $1 into b_rv b_renew b_dur b_acq b_holder; status 2: missing, 1: the API did not answer.",
        "budget_read() {",
        "  out=$(budget_k get lease \"$1\" --ignore-not-found"
        " -o 'jsonpath={.metadata.resourceVersion} {.spec.renewTime} {.spec.leaseDurationSeconds} {.spec.acquireTime} {.spec.holderIdentity}' 2>/dev/null) || return 1",
        '  [ -n "$out" ] || return 2',
        "  set -- $out",
        '  b_rv=$1; b_renew=${2:-}; b_dur=${3:-0}; b_acq=${4:-}; b_holder=${5:-}',
        "}",
        "budget_expired() { # renewTime duration",
        '  [ -n "$1" ] || return 0',
        '  t=$(date -u -d "$1" +%s 2>/dev/null) || return 0',
        '  [ "$(date -u +%s)" -gt $((t + $2)) ]',
        "}",
        "# One attempt at pool $1: status 0 with budget_slot set, or 1 (every slot held; b_held lists the holders).",
        "budget_try() {",
        '  size=$(budget_size "$1") || { echo "microcloud: $budget_holder: budget: no pool $1" >&2; return 3; }',
        "  i=0; free=; free_rv=; free_state=; b_held=",
        '  while [ "$i" -lt "$size" ]; do',
        '    s="$1-$i"; b_rc=0; budget_read "$s" || b_rc=$?',
        '    if [ "$b_rc" = 1 ]; then return 1; fi',
        '    if [ "$b_rc" = 2 ]; then',
        '      [ -n "$free" ] || { free=$s; free_rv=; free_state=missing; }',
        '    elif [ "$b_holder" = "$budget_holder" ]; then',
        "      # Ours already (a rerun after a crash, or the other step on this node): keep it.",
        '      free=$s; free_rv=$b_rv; free_state=mine; free_acq=$b_acq; break',
        '    elif [ -z "$b_holder" ] || budget_expired "$b_renew" "$b_dur"; then',
        '      [ -n "$free" ] || { free=$s; free_rv=$b_rv; free_state=free; }',
        "    else",
        '      b_held="$b_held $b_holder"',
        "    fi",
        "    i=$((i + 1))",
        "  done",
        '  [ -n "$free" ] || return 1',
        '  if [ "$free_state" = missing ]; then',
        '    budget_doc "$free" "$budget_holder" "$budget_lease" | budget_k create -f - >/dev/null 2>&1 || return 1',
        '  elif [ "$free_state" = mine ]; then',
        '    budget_doc "$free" "$budget_holder" "$budget_lease" "$free_acq" "$free_rv" | budget_k replace -f - >/dev/null 2>&1 || return 1',
        "  else",
        '    budget_doc "$free" "$budget_holder" "$budget_lease" "" "$free_rv" | budget_k replace -f - >/dev/null 2>&1 || return 1',
        "  fi",
        "  budget_slot=$free",
        "}",
        "# Renews our slot while we hold it; stops when it is not ours any more.",
        "# Its output goes nowhere and it sleeps in 1 s steps: once stopped, nothing of it holds the caller's",
        "# output open (a remote command's session ends when the last writer is gone).",
        "budget_renew_loop() {",
        "  while :; do",
        "    t=0; while [ \"$t\" -lt $((budget_lease / 3)) ]; do sleep 1; t=$((t + 1)); done",
        '    budget_read "$budget_slot" || continue',
        '    [ "$b_holder" = "$budget_holder" ] || { echo "microcloud: $budget_holder: budget: slot $budget_slot was taken over by ${b_holder:-nobody}" >&2; exit 1; }',
        '    budget_doc "$budget_slot" "$budget_holder" "$budget_lease" "$b_acq" "$b_rv" | budget_k replace -f - >/dev/null 2>&1 || true',
        "  done",
        "}",
        "budget_acquire() { # pool",
        "  waited=0",
        "  while :; do",
        '    b_try=0; budget_try "$1" || b_try=$?',
        '    [ "$b_try" = 0 ] && break',
        '    [ "$b_try" = 3 ] && return 1',
        '    if [ "$waited" -ge "$budget_wait" ]; then',
        '      echo "microcloud: $budget_holder: budget: no $1 slot free after ${budget_wait}s (held by:${b_held:- the API did not answer}); kubectl -n $budget_ns get leases" >&2',
        "      return 1",
        "    fi",
        "    # 2-5 s, so contenders do not knock in step.",
        '    d=$(( $(od -An -N1 -tu1 /dev/urandom | tr -d " ") % 4 + 2 ))',
        '    sleep "$d"; waited=$((waited + d))',
        "  done",
        '  budget_renew_loop </dev/null >/dev/null 2>&1 & budget_renewer=$!',
        "}",
        "budget_stop_renewing() {",
        '  [ -z "$budget_renewer" ] || { kill "$budget_renewer" 2>/dev/null || true; wait "$budget_renewer" 2>/dev/null || true; budget_renewer=; }',
        "}",
        "# Frees our slot (only if it is still ours: a replace with the version read).",
        "budget_release() {",
        "  budget_stop_renewing",
        '  [ -n "$budget_slot" ] || return 0',
        "  n=0",
        '  while [ "$n" -lt 5 ]; do',
        '    b_rc=0; budget_read "$budget_slot" || b_rc=$?',
        "    # Gone (deleted by hand) or not ours any more (taken over after it went stale): nothing to free.",
        '    [ "$b_rc" != 2 ] || { budget_slot=; return 0; }',
        '    if [ "$b_rc" = 0 ]; then',
        '      [ "$b_holder" = "$budget_holder" ] || { budget_slot=; return 0; }',
        '      if budget_doc "$budget_slot" "" "$budget_lease" "$b_acq" "$b_rv" | budget_k replace -f - >/dev/null 2>&1; then budget_slot=; return 0; fi',
        "    fi",
        "    n=$((n + 1)); sleep 2",
        "  done",
        '  echo "microcloud: $budget_holder: budget: could not free slot $budget_slot; it frees itself ${budget_lease}s after its last renewal" >&2',
        "}",
        "# The step failed with the node not back: keep the slot, without renewing, for the failed-hold time.",
        "# Tried again like budget_release: a renewal the stopped renewer had already sent may land between the",
        "# read and the replace (its kubectl outlives it), and one conflict must not shorten the hold to the lease.",
        "budget_hold_failed() {",
        "  budget_stop_renewing",
        '  [ -n "$budget_slot" ] || return 0',
        "  n=0",
        '  while [ "$n" -lt 5 ]; do',
        '    b_rc=0; budget_read "$budget_slot" || b_rc=$?',
        '    [ "$b_rc" != 2 ] || break',
        '    if [ "$b_rc" = 0 ]; then',
        '      [ "$b_holder" = "$budget_holder" ] || break',
        '      if budget_doc "$budget_slot" "$budget_holder" "$budget_failed_hold" "$b_acq" "$b_rv" | budget_k replace -f - >/dev/null 2>&1; then break; fi',
        "    fi",
        "    n=$((n + 1)); sleep 2",
        "  done",
        '  echo "microcloud: $budget_holder: budget: slot $budget_slot stays held for ${budget_failed_hold}s (the node is not back);'
        ' free it sooner with: kubectl -n $budget_ns delete lease $budget_slot" >&2',
        "  budget_slot=",
        "}",
        "# --- end of the disruption budget ---",
    ]
    return "\n".join(lines) + "\n"


def render_rbac(spec: BudgetSpec) -> str:
    """The budget's namespace and the RBAC of its user: Leases there, and what `kubectl drain` needs."""
    check(spec)
    labels = {"app.kubernetes.io/managed-by": "microcloud", "app.kubernetes.io/part-of": "disruption-budget"}
    name = "microcloud-disruption-budget"
    subject = [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": spec.user}]
    docs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": spec.namespace, "labels": labels}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": name, "namespace": spec.namespace, "labels": labels},
            "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                       "verbs": ["get", "list", "watch", "create", "update", "delete"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": spec.namespace, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": subject,
        },
        {
            # kubectl drain: cordon (patch the node), list its pods, evict them (PodDisruptionBudgets are
            # honoured by the eviction API), read the DaemonSets it skips; uncordon after the reboot.
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name, "labels": labels},
            "rules": [
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "patch"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
                {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
                {"apiGroups": ["apps"], "resources": ["daemonsets"], "verbs": ["get"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": subject,
        },
    ]
    header = "# The disruption budget's RBAC; rendered by microcloud (components/render/budget.py). K3s applies this file.\n"
    return header + yaml.safe_dump_all(docs, sort_keys=False)


def lease_names(spec: BudgetSpec) -> list[str]:
    """Every slot's Lease name."""
    return [f"{pool}-{i}" for pool, size in spec.pools for i in range(size)]
