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

import shlex
from dataclasses import dataclass
from typing import Optional

import pulumi
from pulumi_command import remote

from .config import file_sha256
from .config.monitoring import NodeExporterBinary
from .day2 import NOTICES, QUIET, NodeAccess, apply_file, install_script
from .render.firewalld import firewalld_script, tracks_connections
from .render.node_exporter import (
    NODE_EXPORTER_PORT,
    binary_check,
    metrics_check,
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


@dataclass(frozen=True)
class NodeExportersArgs:
    """``nodes``: the nodes that get an exporter, reached through ``access`` (its address is
    also the exporter's listen address); ``allowed_sources``: CIDRs that may scrape (see
    ``scrape_sources``)."""

    binary: NodeExporterBinary
    nodes: tuple[str, ...]
    access: NodeAccess
    allowed_sources: tuple[str, ...]
    port: int = NODE_EXPORTER_PORT


class NodeExporters(pulumi.ComponentResource):
    """``targets``: node name -> ``ip:port``, what the in-cluster Prometheus scrapes."""

    targets: pulumi.Output[dict]

    def __init__(self, name: str, args: NodeExportersArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("microcloud:monitoring:NodeExporters", name, None, opts)
        unknown = sorted(n for n in args.nodes if n not in args.access.ips or n not in args.access.domain_ids)
        if unknown:
            raise ValueError(f"node_exporter: no address or domain id for {', '.join(unknown)}")
        if not args.allowed_sources:
            raise ValueError("node_exporter: allowed_sources is empty: nothing could scrape the exporters")
        self._args = args
        local = args.binary.local_path()
        self._sha = file_sha256(local)
        self._local = local
        self.binary_path = f"{LIB_DIR}/node_exporter-{args.binary.version}/node_exporter"
        hosts = args.access.ips_of(args.nodes)
        for node in sorted(hosts):
            self._install(node)
        port = args.port
        self.targets = pulumi.Output.all(**hosts).apply(lambda ips: {n: f"{ip}:{port}" for n, ip in sorted(ips.items())})
        self.register_outputs({"targets": self.targets})

    def _install(self, node: str) -> None:
        args = self._args
        conn = args.access.conn(node)
        again = [args.access.domain_ids[node]]
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
            opts=conn.options(child),
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
            logging=QUIET,
            opts=conn.options(pulumi.ResourceOptions(
                parent=self,
                depends_on=[copy],  # CopyToRemote has no output to pass
                custom_timeouts=pulumi.CustomTimeouts(create="20m"),
                additional_secret_outputs=["stdout", "stderr"],
            )),
        )

        firewall = remote.Command(
            f"{node}-node-exporter-firewall",
            connection=conn.args(),
            create=firewalld_script(node, args.port, args.allowed_sources),
            triggers=[*sorted(args.allowed_sources), *again],
            # One line when firewalld is not running; the conntrack marker on stdout is for the program.
            logging=NOTICES,
            opts=conn.options(pulumi.ResourceOptions(
                parent=self,
                custom_timeouts=pulumi.CustomTimeouts(create="20m"),
                additional_secret_outputs=["stdout", "stderr"],
            )),
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

        unit = pulumi.Output.all(args.access.ips[node], conntrack).apply(
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
