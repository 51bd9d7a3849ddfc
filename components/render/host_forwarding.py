"""The libvirt host's forwarding between the stack's own networks, and from the LAN to the VIPs.

Nodes carry no routes to the stack's other networks (render/network.py):
their default route goes to their network's gateway, and for nat and route
networks that gateway is the libvirt host. The host routes, but libvirt's
firewall rules for a ``nat`` network reject every new connection into it from
anywhere else (LIBVIRT_FWI accepts only replies), so out of the box the LB
pair cannot reach the K3s servers and no node can reach the infra node's DNS.

This script opens exactly the flows of its spec, and nothing else: each rule
is an ACCEPT in LIBVIRT_FWX (the chain libvirt evaluates first in FORWARD)
and a RETURN at the top of LIBVIRT_PRT so the traffic is routed with its
real source address instead of being masqueraded. The spec names ends, not
networks, where a network is not the stack's alone: a ``bridge`` network
(the LAN) is represented by the stack's own addresses on it (its nodes and
VIPs), so a LAN host that is not the stack's is forwarded nowhere, and no
node's traffic to such a host loses its masquerade; LAN clients of the VIPs
get their ports only (``ForwardRule.ports``). Every rule carries the stack's
tag as an iptables comment: each run first removes the tagged rules and then
adds the current set, so it is idempotent and a flow taken out of the stack
loses its rules; the delete script removes them all. Isolated networks stay
isolated.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass
from itertools import permutations

# libvirt's private chains (iptables backend): filter/FORWARD jumps to
# LIBVIRT_FWX first, nat/POSTROUTING to LIBVIRT_PRT.
FILTER_CHAIN = "LIBVIRT_FWX"
NAT_CHAIN = "LIBVIRT_PRT"


# iptables' multiport match takes at most 15 ports.
MAX_PORTS = 15


@dataclass(frozen=True, order=True)
class ForwardRule:
    """New connections from ``src`` to ``dst`` (IPv4 networks or /32s); ``ports``: TCP to those ports only, else any."""

    src: str
    dst: str
    ports: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for end in (self.src, self.dst):
            try:
                net = ipaddress.IPv4Network(end)
            except ValueError:
                raise ValueError(f"host forwarding: {end!r} is not an IPv4 network (a.b.c.d/n, host bits zero)") from None
            if net.prefixlen == 0:
                raise ValueError(f"host forwarding: {end} is every address; name the networks to forward")
        if len(self.ports) > MAX_PORTS or any(not 0 < p < 65536 for p in self.ports) or len(set(self.ports)) != len(self.ports):
            raise ValueError(f"host forwarding: ports {list(self.ports)} must be 1-{MAX_PORTS} distinct TCP ports")


@dataclass(frozen=True)
class HostForwardingSpec:
    tag: str  # names the stack: "microcloud-dev"
    rules: tuple[ForwardRule, ...]

    def __post_init__(self) -> None:
        # Only characters iptables prints unquoted in -S: the purge matches the tag as written.
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.tag):
            raise ValueError(f"host forwarding: tag {self.tag!r} must be 1-64 of [A-Za-z0-9_-]")


def between(ends: dict[str, tuple[str, ...]]) -> tuple[ForwardRule, ...]:
    """Every flow between the ends of different networks (network name -> its ends), both ways, sorted."""
    return tuple(sorted({
        ForwardRule(s, d)
        for a, b in permutations(sorted(ends), 2)
        for s in ends[a]
        for d in ends[b]
    }))


_PRELUDE = r"""set -eu
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; else SUDO=""; fi
ipt() { $SUDO iptables -w "$@"; }
if ! command -v iptables >/dev/null 2>&1; then
  echo "microcloud: host forwarding: iptables is not installed on the libvirt host" >&2; exit 1
fi
# Remove every rule this stack added (its comment tag), in both chains.
purge() {
  for spec in "filter {filter}" "nat {nat}"; do
    set -- $spec
    ipt -t "$1" -S "$2" 2>/dev/null | while read -r _ chain rest; do
      case " $rest " in
        *" --comment {tag} "*) eval "ipt -t $1 -D $chain $rest" ;;
      esac
    done
  done
}
"""


def _prelude(spec: HostForwardingSpec) -> str:
    return _PRELUDE.replace("{filter}", FILTER_CHAIN).replace("{nat}", NAT_CHAIN).replace("{tag}", spec.tag)


def render_apply(spec: HostForwardingSpec) -> str:
    """The create/update script: purge this stack's rules, then add the current set."""
    tag = shlex.quote(spec.tag)
    lines = [
        _prelude(spec),
        "purge",
        # libvirt creates its chains when it starts its first network; the
        # networks exist before this runs, but say so plainly if they do not.
        f'ipt -t filter -S {FILTER_CHAIN} >/dev/null 2>&1 || {{ echo "microcloud: host forwarding: no {FILTER_CHAIN} chain: '
        'is libvirtd using its iptables backend, and are the networks started?" >&2; exit 1; }',
    ]
    for rule in sorted(set(spec.rules)):
        match = f"-s {rule.src} -d {rule.dst}"
        if rule.ports:
            match += f" -p tcp -m multiport --dports {','.join(str(p) for p in rule.ports)}"
        lines.append(f"ipt -t filter -I {FILTER_CHAIN} {match} -m comment --comment {tag} -j ACCEPT")
        lines.append(f"ipt -t nat -I {NAT_CHAIN} {match} -m comment --comment {tag} -j RETURN")
    return "\n".join(lines) + "\n"


def render_delete(spec: HostForwardingSpec) -> str:
    """The delete script: remove this stack's rules, leave everything else."""
    return _prelude(spec) + "purge\n"
