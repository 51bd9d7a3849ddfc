"""InfraServices: CoreDNS and the chrony NTP server on the infra node, configured in place."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Optional

import pulumi
from pulumi_command import remote

from . import specs
from .config import StackConfig, file_sha256
from .day2 import QUIET, NodeAccess, apply_file, install_script
from .render.coredns import CoreDnsUnitSpec, dig_check, render_unit, version_check
from .render.os_family import family_of

COREDNS_DIR = "/etc/coredns"
COREDNS_LIB = "/usr/local/lib/microcloud"


@dataclass(frozen=True)
class InfraServicesArgs:
    stack: StackConfig
    # Every node: the infra node is reached through it, and every address is a DNS record.
    access: NodeAccess


class InfraServices(pulumi.ComponentResource):
    hosts_file: pulumi.Output[str]
    dns_server: str
    ntp_server: str

    def __init__(self, name: str, args: InfraServicesArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("microcloud:infra:InfraServices", name, None, opts)
        cfg = args.stack
        infra = cfg.infra_node
        fam = family_of(infra.os)
        self.dns_server = self.ntp_server = str(infra.ip)
        self._conn = args.access.conn(infra.name)
        self._node = infra.name
        self._again = [args.access.domain_ids[infra.name]]
        child = pulumi.ResourceOptions(parent=self)

        apply_file(
            "chrony",
            conn=self._conn,
            node=infra.name,
            content=specs.chrony_server_conf(cfg),
            path=fam.chrony_conf,
            validate="chronyd -p -f {file} >/dev/null",
            activate=f"systemctl enable -q {fam.chrony_unit} && systemctl restart {fam.chrony_unit}",
            # chronyd started from the new file and answers its control socket.
            verify=f"restarted {fam.chrony_unit} && chronyc -n tracking >/dev/null",
            replace_with=self._again,
            opts=child,
        )
        self.hosts_file = pulumi.Output.all(**args.access.ips).apply(lambda ips: specs.hosts_file(cfg, ips))
        # No restart for any of these: CoreDNS re-reads the hosts file by
        # itself (hosts plugin reload), so a new node only rewrites it; the zone
        # (the SOA that turns unknown names into NXDOMAIN) never changes; the
        # reload plugin swaps in a changed Corefile only if it parses. Once
        # CoreDNS runs, each is verified by a query it must answer.
        running = "! systemctl is-active -q coredns || "
        every_record = (
            f"while read -r ip fqdn; do case $ip in ''|'#'*) continue;; esac; "
            f"[ \"$(dig +short +time=1 +tries=1 @127.0.0.1 \"$fqdn\" A)\" = \"$ip\" ] || exit 1; "
            f"done < {COREDNS_DIR}/hosts"
        )
        coredns_files = {
            "coredns-hosts": ("hosts", self.hosts_file, f"{running}( {every_record} )"),
            "coredns-zone": ("zone.db", specs.zone_file(cfg), f"{running}{dig_check(cfg.domain, 'SOA')}"),
            "coredns-corefile": ("Corefile", specs.corefile(cfg), f"{running}{dig_check(cfg.domain, 'SOA')}"),
        }
        delivered = [
            apply_file(
                res_name,
                conn=self._conn,
                node=infra.name,
                content=content,
                path=f"{COREDNS_DIR}/{file}",
                activate="true",
                verify=verify,
                replace_with=self._again,
                opts=child,
            )
            for res_name, (file, content, verify) in coredns_files.items()
        ]
        binary_path, binary_installed = self._install_coredns_binary(cfg)
        apply_file(
            "coredns-unit",
            conn=self._conn,
            node=infra.name,
            content=render_unit(CoreDnsUnitSpec(binary=binary_path)),
            path="/etc/systemd/system/coredns.service",
            # systemd-analyze wants a unit name; it also checks ExecStart exists.
            validate='d=$(mktemp -d); cp {file} "$d/coredns.service"; systemd-analyze verify "$d/coredns.service"; '
            'rc=$?; rm -rf "$d"; exit $rc',
            activate="systemctl daemon-reload && systemctl enable -q coredns && systemctl restart coredns",
            verify=f"restarted coredns && {dig_check(cfg.fqdn(infra.name))}",
            replace_with=[*self._again, binary_installed.id],
            # CoreDNS needs its files in place to start; no data flows.
            opts=pulumi.ResourceOptions(parent=self, depends_on=delivered),
        )
        self.register_outputs({"hosts_file": self.hosts_file})

    def _install_coredns_binary(self, cfg: StackConfig) -> tuple[str, remote.Command]:
        """Copy the pinned CoreDNS binary from the Pulumi host, check its sha256 on the node, install it.

        Returns where it is installed and the command that installs it.
        """
        spec = cfg.dns.coredns
        local = spec.local_path()
        sha = file_sha256(local)
        upload = f"/tmp/microcloud-coredns-{spec.version}-{sha[:12]}"
        target = f"{COREDNS_LIB}/coredns-{spec.version}/coredns"
        child = pulumi.ResourceOptions(parent=self)
        copy = remote.CopyToRemote(
            "coredns-upload",
            connection=self._conn.args(),
            source=pulumi.FileAsset(local),
            remote_path=upload,
            triggers=[sha, *self._again],
            opts=self._conn.options(child),
        )
        check = f"echo {sha}  {upload} | sha256sum -c --quiet"
        script = install_script(
            node=self._node,
            path=target,
            mode="0755",
            validate=None,
            activate=f"rm -f {upload}",
            verify=version_check(target, spec.version),
        )
        # The install script reads the file from stdin: feed it the upload,
        # after checking that it arrived unchanged.
        command = remote.Command(
            "coredns-binary",
            connection=self._conn.args(),
            create=f"sudo sh -c {shlex.quote(check)} && sudo cat {upload} | {script}",
            triggers=[sha, *self._again],
            logging=QUIET,
            opts=self._conn.options(pulumi.ResourceOptions(
                parent=self,
                # The upload must be there first; CopyToRemote has no output to pass.
                depends_on=[copy],
                custom_timeouts=pulumi.CustomTimeouts(create="20m"),
                additional_secret_outputs=["stdout", "stderr"],
            )),
        )
        return target, command
