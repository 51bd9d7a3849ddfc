"""Prometheus node_exporter on the VMs outside the cluster (load balancers, infra node): its systemd unit and the on-node checks of the binary and /metrics.

The in-cluster Prometheus scrapes ``<node ip>:9100``. The exporter listens
on the node's own address only (never 0.0.0.0: a load balancer also holds
the VIPs), runs as an unprivileged system user that owns no file, with no
capabilities and a read-only view of the system, and systemd's per-unit IP
firewall (IPAddressDeny / IPAddressAllow, cgroup BPF) answers only the
networks given, whether or not the node runs a firewall of its own.

Why a static system user (declared in sysusers.d) and not DynamicUser=: the
systemd collector asks PID 1 over the system D-Bus. Since systemd 250.4
PID 1 starts dbus-daemon with SYSTEMD_NSS_DYNAMIC_BYPASS=1 (so a lookup
cannot deadlock on PID 1), so dbus-daemon cannot resolve a dynamic UID, and
it drops a peer whose user it cannot resolve right after authentication:
the collector fails with "write: broken pipe" on Debian 12 (dbus-daemon,
systemd 252), whether or not nss-systemd is installed (systemd issues
#22737, #9503). A user in /etc/passwd resolves for dbus-daemon and
dbus-broker (Rocky/Alma 9) alike; everything DynamicUser= implied is set
explicitly below.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .shell import output_matches

NODE_EXPORTER_PORT = 9100
UNIT_NAME = "node_exporter.service"

# What a small VM that runs packaged services has to say; everything about
# hardware a VM does not have (hwmon, thermal, rapl, edac, cpufreq, nvme,
# infiniband, fibrechannel, powersupply, tape, mdadm, bcache, btrfs, ...) or
# does not use (nfs, ipvs, zfs, arp, bonding) is off, so a scrape is cheap and
# never reports a collector error for missing sysfs entries. These cover the
# node-exporter rules and dashboards of kube-prometheus-stack (filesystem,
# cpu, memory, disk, network, clock sync, file descriptors, failed systemd
# services); conntrack only where the node has a table (CONNTRACK_COLLECTOR).
VM_COLLECTORS = (
    "cpu",
    "diskstats",
    "filefd",
    "filesystem",
    "loadavg",
    "meminfo",
    "netclass",  # link state of each interface
    "netdev",
    "netstat",
    "os",
    "pressure",  # PSI, where the kernel has it enabled
    "sockstat",
    "softnet",  # packet drops in softirq: the LBs forward every request
    "stat",
    "systemd",  # haproxy, keepalived, coredns, chrony: active or failed
    "time",
    "timex",  # NTP sync state of the clock (chrony)
    "udp_queues",  # CoreDNS' and VRRP's UDP receive queues
    "uname",
    "vmstat",
)

# Only services: unit states of mounts, slices, sockets ... are noise here.
SYSTEMD_UNIT_INCLUDE = r".+\.service"

# The netfilter connection tracking table, collected only on a node that has
# one. haproxy (a proxy: its own connections to the backends, no NAT) and
# keepalived (VRRP only, no IPVS) do not use conntrack, and nothing the
# program installs loads nf_conntrack; without the module the collector has
# no data and reports node_scrape_collector_success 0 on every scrape. Where a
# firewall does track connections (firewalld on Rocky/Alma), every proxied
# connection takes two entries of a table that is small on a small VM (4096
# on a 512 MiB Debian LB), and a full table drops new connections: there it
# is collected (the install finds out, see components/node_exporter.py).
CONNTRACK_COLLECTOR = "conntrack"

# The exporter's system user: declared in sysusers.d, created by systemd-sysusers.
SERVICE_USER = "node_exporter"


def node_collectors(tracks_connections: bool) -> tuple[str, ...]:
    """The collectors of a node: VM_COLLECTORS, plus conntrack where the node has a conntrack table."""
    return (*VM_COLLECTORS, CONNTRACK_COLLECTOR) if tracks_connections else VM_COLLECTORS


# sysusers.d(5) entry of the exporter's user (constant: nothing in it depends on
# the stack): a system user and group of the same name, UID/GID picked by
# systemd-sysusers, home /, no login shell, no files.
SYSUSERS_CONF = (
    "# Rendered by microcloud (components/render/node_exporter.py).\n"
    f'u {SERVICE_USER} - "Prometheus node_exporter"\n'
)


@dataclass(frozen=True)
class NodeExporterUnitSpec:
    """``listen_address``: the node's own IPv4 address. ``allowed_sources``: CIDRs
    whose clients may connect (besides the node itself); empty means no IP
    restriction in the unit."""

    binary: str
    listen_address: str
    port: int = NODE_EXPORTER_PORT
    allowed_sources: tuple[str, ...] = ()
    collectors: tuple[str, ...] = VM_COLLECTORS


def exporter_args(spec: NodeExporterUnitSpec, listen: str | None = None) -> list[str]:
    """node_exporter's argv (without the binary). ``listen`` overrides ``ip:port`` (the tests' loopback)."""
    if not spec.collectors:
        raise ValueError("node_exporter: at least one collector is required")
    if len(set(spec.collectors)) != len(spec.collectors):
        raise ValueError("node_exporter: a collector is listed twice")
    ip = ipaddress.IPv4Address(spec.listen_address)
    if ip.is_unspecified or ip.is_loopback:
        raise ValueError(f"node_exporter: listen on the node's own address, not {ip}")
    args = [
        f"--web.listen-address={listen or f'{ip}:{spec.port}'}",
        "--collector.disable-defaults",
        *(f"--collector.{c}" for c in sorted(spec.collectors)),
    ]
    if "systemd" in spec.collectors:
        args.append(f"--collector.systemd.unit-include={SYSTEMD_UNIT_INCLUDE}")
    return args


def _systemd_quote(arg: str) -> str:
    """One word of ExecStart: backslashes doubled (C escapes), no variables, quoted if it has blanks."""
    if "$" in arg or "%" in arg or '"' in arg or "'" in arg:
        raise ValueError(f"node_exporter: {arg!r} would need systemd quoting this renderer does not do")
    arg = arg.replace("\\", "\\\\")
    return f'"{arg}"' if any(c.isspace() for c in arg) else arg


def render_unit(spec: NodeExporterUnitSpec) -> str:
    """systemd unit for the node_exporter binary.

    A system user of its own (SERVICE_USER, no home, no files of its own;
    not DynamicUser=, see the module docstring) with the sandbox DynamicUser=
    would imply set explicitly (ProtectSystem=strict, ProtectHome=read-only,
    PrivateTmp, RemoveIPC, RestrictSUIDSGID, NoNewPrivileges), no
    capabilities at all (port 9100 is not privileged), read-only view of the
    file system (ProtectHome=read-only, not yes, so the filesystem collector
    still sees /home's usage), no ProtectProc (the filesystem collector reads
    /proc/1/mountinfo), no ProtectClock (the timex collector calls
    adjtimex(2) read-only, which ProtectClock's seccomp filter would deny;
    it is allowed explicitly below). A syscall outside the filter fails with
    EPERM instead of killing the exporter, so one collector cannot take the
    others down.
    """
    binary = spec.binary
    if not binary.startswith("/"):
        raise ValueError(f"node_exporter: binary {binary!r} must be an absolute path")
    sources = [str(ipaddress.IPv4Network(s, strict=False)) for s in spec.allowed_sources]
    exec_start = " \\\n    ".join(_systemd_quote(a) for a in [binary, *exporter_args(spec)])
    lines = [
        "# Rendered by microcloud (components/render/node_exporter.py).",
        "[Unit]",
        "Description=Prometheus node_exporter (scraped by the cluster's Prometheus)",
        "Documentation=https://github.com/prometheus/node_exporter",
        "Wants=network-online.target",
        # The listen address must exist before the exporter can bind it.
        "After=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={exec_start}",
        "Restart=on-failure",
        "RestartSec=5s",
        f"User={SERVICE_USER}",
        f"Group={SERVICE_USER}",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectHostname=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes",
        "RemoveIPC=yes",
        "UMask=0077",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service adjtimex",
        "SystemCallErrorNumber=EPERM",
    ]
    if sources:
        # systemd's own IP firewall for this unit (cgroup BPF): the scrapers'
        # networks and the node itself (the install's check of /metrics).
        lines += [
            "IPAddressDeny=any",
            f"IPAddressAllow={' '.join(['localhost', f'{spec.listen_address}/32', *sources])}",
        ]
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


# The node's own /metrics, with whichever HTTP client the image has: curl
# (Rocky/Alma: curl-minimal), wget, else python3 (always there: cloud-init
# is Python; the Debian test image has neither curl nor wget).
FETCH = (
    "fetch() { "
    "if command -v curl >/dev/null 2>&1; then curl -fsS --max-time 5 \"$1\"; "
    "elif command -v wget >/dev/null 2>&1; then wget -q -T 5 -O - \"$1\"; "
    "else python3 -c 'import sys, urllib.request; "
    "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' \"$1\"; fi; }"
)


def binary_check(target: str, version: str) -> str:
    """Shell: the installed binary runs and is ``version``.

    Whole output first, then match: ``--version | grep -q`` could SIGPIPE it.
    """
    return f'v=$({target} --version 2>&1) && case "$v" in "node_exporter, version {version.lstrip("v")} "*) true;; *) false;; esac'


def metrics_check(version: str) -> str:
    """Shell (inside day2's verify, ``$path`` = the installed unit): ``/metrics`` answers on the
    address the unit listens on, from the exporter of ``version``.

    The address is read back from the unit, so the check fetches exactly what
    Prometheus will.
    """
    addr = "a=$(sed -n 's/^ *--web.listen-address=\\([^ ]*\\).*$/\\1/p' \"$path\")"
    build_info = f'^node_exporter_build_info{{.*version="{version.lstrip("v")}"'
    found = output_matches('fetch "http://$a/metrics"', build_info)
    return f'{{ {FETCH}; {addr} && [ -n "$a" ] && {found}; }}'
