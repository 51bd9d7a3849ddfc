"""NodeExporters: Prometheus node_exporter on the VMs outside the cluster, for the in-cluster Prometheus.

Per node, like CoreDNS on the infra node: the pinned binary is copied from
the machine that runs Pulumi, its sha256 checked on the node, installed
under a versioned path; the exporter's system user is declared in
sysusers.d and created by systemd-sysusers; where the node runs firewalld
(Rocky/Alma images that ship it), port 9100 is opened to the scrapers'
networks only, and the same step reports whether the node has a netfilter
conntrack table; then the systemd unit (with the conntrack collector only
where there is a table) is delivered by ``day2.apply_file`` (validated with
``systemd-analyze verify``, verified after activation by fetching
``/metrics`` from the node's own address). Everything is keyed on the VM's
domain id: a rebuilt VM gets it all again.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import pulumi
from pulumi_command import remote

from .config import K3S_ROLES, StackConfig, file_sha256
from .config.monitoring import NodeExporterBinary
from .day2 import Connection, apply_file, install_script
from .render.node_exporter import (
    NODE_EXPORTER_PORT,
    SERVICE_USER,
    UNIT_NAME,
    NodeExporterUnitSpec,
    node_collectors,
    SYSUSERS_CONF,
    render_unit,
)

LIB_DIR = "/usr/local/lib/microcloud"
UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"
UNIT = UNIT_NAME.removesuffix(".service")
SYSUSERS_PATH = "/etc/sysusers.d/microcloud-node-exporter.conf"

# Present once nf_conntrack is loaded (a firewall that tracks connections).
CONNTRACK_TABLE = "/proc/sys/net/netfilter/nf_conntrack_max"
CONNTRACK_REPORT = "microcloud-conntrack="

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
    return f'{{ {FETCH}; {addr} && [ -n "$a" ] && fetch "http://$a/metrics" | grep -q {shlex.quote(build_info)}; }}'


def monitored_nodes(cfg: StackConfig) -> list[str]:
    """The VMs outside the cluster that get node_exporter: the load balancers and the infra node."""
    return [n.name for n in cfg.nodes_with("load_balancer", "infra")]


def scrape_sources(cfg: StackConfig) -> tuple[str, ...]:
    """CIDRs of the networks the K3s nodes are on.

    Prometheus runs in a pod; K3s' flannel masquerades its traffic to
    addresses outside the cluster to the node's own address, so a scrape
    arrives from one of these networks.
    """
    nets = {n.network for n in cfg.nodes if n.role in K3S_ROLES}
    return tuple(str(cfg.network_by_name[name].cidr) for name in sorted(nets))


def firewalld_commands(
    node: str,
    port: int,
    sources: Sequence[str],
    conntrack_table: str = CONNTRACK_TABLE,
    without_firewalld: str = "the node_exporter unit itself admits only the scraper networks",
) -> str:
    """Shell (as root) that opens ``port``/tcp to ``sources`` only, in firewalld's default zone,
    then reports whether the node has a conntrack table (last stdout line
    ``microcloud-conntrack=yes|no``, read by ``tracks_connections``).

    Rich rules (not a zone of its own: a source bound to another zone would
    change what else those networks reach). Rules for the port from sources
    no longer listed are removed, so the command converges. A node without a
    running firewalld needs nothing: the unit's own IPAddressAllow applies.
    The table is looked for after first boot and after firewalld has its
    rules (firewalld loads nf_conntrack), never loaded here.
    ``without_firewalld`` says, on a node without it, what limits the port instead.
    """
    rules = [
        f'rule family="ipv4" source address="{ipaddress.IPv4Network(s, strict=False)}" port port="{port}" protocol="tcp" accept'
        for s in sources
    ]
    want = "\n".join(rules)
    lines = [
        "set -eu",
        f"node={shlex.quote(node)}",
        # First boot may still be installing packages (firewalld among them).
        "if [ -e /run/cloud-init/enabled ] && command -v cloud-init >/dev/null 2>&1; then cloud-init status --wait >/dev/null 2>&1 || true; fi",
        f"report() {{ if [ -e {shlex.quote(conntrack_table)} ]; then echo {CONNTRACK_REPORT}yes; else echo {CONNTRACK_REPORT}no; fi; }}",
        "if ! command -v firewall-cmd >/dev/null 2>&1 || ! systemctl is-active -q firewalld; then",
        f'  echo "microcloud: $node: no firewalld running: {without_firewalld}"; report; exit 0',
        "fi",
        f"want={shlex.quote(want)}",
        f"firewall-cmd --permanent --list-rich-rules | grep -F 'port port=\"{port}\" protocol=\"tcp\"' | "
        "while IFS= read -r rule; do",
        '  printf \'%s\\n\' "$want" | grep -qxF "$rule" || firewall-cmd -q --permanent --remove-rich-rule="$rule"',
        "done",
        'printf \'%s\\n\' "$want" | while IFS= read -r rule; do',
        '  if [ -n "$rule" ]; then firewall-cmd -q --permanent --add-rich-rule="$rule"; fi',
        "done",
        "firewall-cmd -q --reload",
        f"firewall-cmd --list-rich-rules | grep -qF 'port port=\"{port}\"' || "
        f"{{ echo \"microcloud: $node: firewalld does not list the rule for port {port}\" >&2; exit 1; }}",
        "report",
    ]
    return "\n".join(lines)


def tracks_connections(stdout: Optional[str]) -> bool:
    """What ``firewalld_commands`` reported: the node has a conntrack table."""
    lines = (stdout or "").strip().splitlines()
    return bool(lines) and lines[-1].strip() == f"{CONNTRACK_REPORT}yes"


def firewalld_script(node: str, port: int, sources: Sequence[str], **kw: str) -> str:
    """``firewalld_commands`` as the remote command runs it: as root."""
    return "sudo sh -c " + shlex.quote(firewalld_commands(node, port, sources, **kw))


@dataclass(frozen=True)
class NodeExportersArgs:
    """``hosts``: node name -> its IP (SSH and the exporter's listen address);
    ``domain_ids``: node name -> its VM's domain id (a new VM gets everything again);
    ``allowed_sources``: CIDRs that may scrape (see ``scrape_sources``)."""

    binary: NodeExporterBinary
    hosts: Mapping[str, pulumi.Input[str]]
    domain_ids: Mapping[str, pulumi.Input[str]]
    allowed_sources: tuple[str, ...]
    ssh_user: str
    ssh_private_key: pulumi.Input[str]
    port: int = NODE_EXPORTER_PORT


class NodeExporters(pulumi.ComponentResource):
    """``targets``: node name -> ``ip:port``, what the in-cluster Prometheus scrapes."""

    targets: pulumi.Output[dict]

    def __init__(self, name: str, args: NodeExportersArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("microcloud:monitoring:NodeExporters", name, None, opts)
        if set(args.hosts) != set(args.domain_ids):
            raise ValueError(f"node_exporter: hosts {sorted(args.hosts)} and domain ids {sorted(args.domain_ids)} name different nodes")
        if not args.allowed_sources:
            raise ValueError("node_exporter: allowed_sources is empty: nothing could scrape the exporters")
        self._args = args
        local = args.binary.local_path()
        self._sha = file_sha256(local)
        self._local = local
        self.binary_path = f"{LIB_DIR}/node_exporter-{args.binary.version}/node_exporter"
        for node in sorted(args.hosts):
            self._install(node)
        port = args.port
        self.targets = pulumi.Output.all(**args.hosts).apply(lambda ips: {n: f"{ip}:{port}" for n, ip in sorted(ips.items())})
        self.register_outputs({"targets": self.targets})

    def _install(self, node: str) -> None:
        args = self._args
        conn = Connection(host=args.hosts[node], user=args.ssh_user, private_key=args.ssh_private_key)
        again = [args.domain_ids[node]]
        child = pulumi.ResourceOptions(parent=self)
        version = args.binary.version
        sha = self._sha
        upload = f"/tmp/microcloud-node-exporter-{version}-{sha[:12]}"
        target = self.binary_path

        copy = remote.CopyToRemote(
            f"{node}-node-exporter-upload",
            connection=conn.args(),
            source=pulumi.FileAsset(self._local),
            remote_path=upload,
            triggers=[sha, *again],
            opts=child,
        )
        check = f"echo {sha}  {upload} | sha256sum -c --quiet"
        script = install_script(
            node=node,
            path=target,
            mode="0755",
            validate=None,
            activate=f"rm -f {upload}",
            verify=binary_check(target, version),
        )
        binary = remote.Command(
            f"{node}-node-exporter-binary",
            connection=conn.args(),
            # The upload must arrive unchanged before the install script reads it from stdin.
            create=f"sudo sh -c {shlex.quote(check)} && sudo cat {upload} | {script}",
            triggers=[sha, *again],
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[copy],  # CopyToRemote has no output to pass
                custom_timeouts=pulumi.CustomTimeouts(create="20m"),
                additional_secret_outputs=["stdout", "stderr"],
            ),
        )

        firewall = remote.Command(
            f"{node}-node-exporter-firewall",
            connection=conn.args(),
            create=firewalld_script(node, args.port, args.allowed_sources),
            triggers=[*sorted(args.allowed_sources), *again],
            opts=pulumi.ResourceOptions(
                parent=self,
                custom_timeouts=pulumi.CustomTimeouts(create="20m"),
                additional_secret_outputs=["stdout", "stderr"],
            ),
        )
        # Only the yes/no leaves the secret stdout: it is not a secret, and the unit's diff stays readable.
        conntrack = pulumi.Output.unsecret(firewall.stdout.apply(tracks_connections))

        user = apply_file(
            f"{node}-node-exporter-user",
            conn=conn,
            node=node,
            content=SYSUSERS_CONF,
            path=SYSUSERS_PATH,
            validate="systemd-sysusers --dry-run {file} >/dev/null",
            activate=f"systemd-sysusers {SYSUSERS_PATH}",
            verify=f"getent passwd {SERVICE_USER} >/dev/null",
            replace_with=again,
            opts=child,
        )

        unit = pulumi.Output.all(args.hosts[node], conntrack).apply(
            lambda a: render_unit(
                NodeExporterUnitSpec(
                    binary=target,
                    listen_address=a[0],
                    port=args.port,
                    allowed_sources=args.allowed_sources,
                    collectors=node_collectors(a[1]),
                )
            )
        )
        apply_file(
            f"{node}-node-exporter-unit",
            conn=conn,
            node=node,
            content=unit,
            path=UNIT_PATH,
            # systemd-analyze wants a unit name; it also checks ExecStart exists.
            validate=f'd=$(mktemp -d); cp {{file}} "$d/{UNIT_NAME}"; systemd-analyze verify "$d/{UNIT_NAME}"; '
            'rc=$?; rm -rf "$d"; exit $rc',
            activate=f"systemctl daemon-reload && systemctl enable -q {UNIT} && systemctl restart {UNIT}",
            verify=f"restarted {UNIT} && {metrics_check(version)}",
            # A reinstalled binary (same path) needs a restart: the command's new id triggers one.
            replace_with=[*again, binary.id],
            # The user must exist before the unit starts as it; the firewall step's report is in the content.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[binary, user]),
        )
