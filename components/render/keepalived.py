"""keepalived.conf for one member of the load-balancer pair, and the pair check."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ._template import render

VRRP_PASS_MAX = 8  # VRRP PASS authentication uses only the first 8 characters


@dataclass(frozen=True)
class VrrpInstance:
    name: str
    router_id: int
    vip: str


# Where the day-2 command installs the haproxy check (render_check_script).
CHECK_SCRIPT = "/usr/local/libexec/microcloud/chk_haproxy"


@dataclass(frozen=True)
class KeepalivedSpec:
    """One member's keepalived.conf.

    Addresses, priority, instances and the VRRP settings always come from the
    stack config (``specs.keepalived_confs``), so they have no default here;
    the check script's path and timers are not in the config and default here.
    """

    router_name: str
    self_ip: str
    peer_ip: str
    priority: int
    master: bool
    instances: tuple[VrrpInstance, ...]
    auth_pass: str
    interface: str
    advert_int: int
    preempt: bool
    check_script: str = CHECK_SCRIPT
    check_interval: int = 1
    check_timeout: int = 1
    check_fall: int = 2
    check_rise: int = 2
    script_user: str = "root"


@dataclass(frozen=True)
class CheckScriptSpec:
    """The haproxy check: it asks the monitor URI on haproxy's stats port."""

    stats_port: int


def render_keepalived(spec: KeepalivedSpec) -> str:
    """Render keepalived.conf: one VRRP instance per VIP, unicast to the peer.

    A failing haproxy check puts both instances into FAULT, so both VIPs
    move together. With preempt off both members start as BACKUP, as
    keepalived requires for nopreempt.
    """
    if not 1 <= len(spec.auth_pass) <= VRRP_PASS_MAX:
        raise ValueError(f"keepalived: auth_pass must be 1-{VRRP_PASS_MAX} characters")
    if spec.self_ip == spec.peer_ip:
        raise ValueError("keepalived: unicast peer must be the other load balancer")
    if len({i.router_id for i in spec.instances}) != len(spec.instances):
        raise ValueError("keepalived: VRRP router ids must differ between instances")
    state = "MASTER" if (spec.master and spec.preempt) else "BACKUP"
    return render(
        "keepalived.conf.j2",
        router_name=spec.router_name,
        self_ip=spec.self_ip,
        peer_ip=spec.peer_ip,
        priority=spec.priority,
        state=state,
        instances=spec.instances,
        auth_pass=spec.auth_pass,
        interface=spec.interface,
        advert_int=spec.advert_int,
        preempt=spec.preempt,
        check_script=spec.check_script,
        check_interval=spec.check_interval,
        check_timeout=spec.check_timeout,
        check_fall=spec.check_fall,
        check_rise=spec.check_rise,
        script_user=spec.script_user,
    )


def render_check_script(spec: CheckScriptSpec) -> str:
    """The haproxy liveness check: HAProxy's monitor URI on loopback.

    Loopback is per network namespace, so unlike `pidof haproxy` this sees
    only the haproxy of this host.
    """
    return (
        "#!/bin/bash\n"
        "# Rendered by microcloud: exit 0 only if this host's haproxy answers.\n"
        f"exec 3<>/dev/tcp/127.0.0.1/{spec.stats_port} || exit 1\n"
        "printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3\n"
        "read -r -t 1 status <&3 || exit 1\n"
        "[[ $status == *' 200 '* ]]\n"
    )


_UNICAST = re.compile(r"unicast_src_ip\s+(\S+)\s+unicast_peer\s*\{\s*(\S+)\s*\}", re.S)
_INSTANCE = re.compile(r"vrrp_instance\s+(\S+)\s*\{(.*?)\n\}", re.S)


def _instances(conf: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for name, body in _INSTANCE.findall(conf):
        src_peer = _UNICAST.search(body)
        fields = dict(re.findall(r"^\s*(virtual_router_id|priority|auth_pass|state)\s+(\S+)", body, re.M))
        vip = re.search(r"virtual_ipaddress\s*\{\s*(\S+)", body)
        fields["src"], fields["peer"] = src_peer.groups() if src_peer else ("", "")
        fields["vip"] = vip.group(1) if vip else ""
        out[name] = fields
    return out


def check_pair(conf_a: str, conf_b: str) -> None:
    """Raise ValueError unless two rendered keepalived.conf form a working pair.

    Each member's unicast peer must be the other's source address, instances
    must match by name, router id, VIP and password, and priorities must differ.
    """
    a, b = _instances(conf_a), _instances(conf_b)
    if not a or set(a) != set(b):
        raise ValueError(f"keepalived pair: instances differ ({sorted(a)} vs {sorted(b)})")
    for name in a:
        x, y = a[name], b[name]
        for ip in (x["src"], x["peer"], y["src"], y["peer"]):
            ipaddress.IPv4Address(ip or "0.0.0.0")
        if x["peer"] != y["src"] or y["peer"] != x["src"]:
            raise ValueError(
                f"keepalived pair: {name}: unicast peers do not point at each other "
                f"({x['src']}->{x['peer']}, {y['src']}->{y['peer']})"
            )
        for field in ("virtual_router_id", "vip", "auth_pass"):
            if x.get(field) != y.get(field):
                raise ValueError(f"keepalived pair: {name}: {field} differs between the members")
        if x.get("priority") == y.get("priority"):
            raise ValueError(f"keepalived pair: {name}: both members have priority {x.get('priority')}")
