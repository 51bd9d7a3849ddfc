"""InfraServices: CoreDNS and the chrony NTP server on the infra node, configured in place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import pulumi

from . import topology
from .config import StackConfig
from .day2 import Connection, apply_file

COREDNS_DIR = "/etc/coredns"


def coredns_unit(image: str) -> str:
    """systemd unit running the pinned CoreDNS image with host networking."""
    return (
        "[Unit]\n"
        "Description=CoreDNS for the microcloud domain\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n\n"
        "[Service]\n"
        "Restart=always\n"
        "ExecStartPre=-/usr/bin/podman rm -f coredns\n"
        f"ExecStart=/usr/bin/podman run --rm --name coredns --network host "
        f"-v {COREDNS_DIR}:{COREDNS_DIR}:ro,Z {image} -conf {COREDNS_DIR}/Corefile\n"
        "ExecStop=/usr/bin/podman stop -t 10 coredns\n\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


@dataclass(frozen=True)
class InfraServicesArgs:
    stack: StackConfig
    host: pulumi.Input[str]
    domain_id: pulumi.Input[str]
    # name -> IP output of every node: the DNS records
    node_ips: Mapping[str, pulumi.Input[str]]
    ssh_user: str
    ssh_private_key: pulumi.Input[str]


class InfraServices(pulumi.ComponentResource):
    hosts_file: pulumi.Output[str]
    dns_server: str
    ntp_server: str

    def __init__(self, name: str, args: InfraServicesArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("microcloud:infra:InfraServices", name, None, opts)
        cfg = args.stack
        self.dns_server = self.ntp_server = str(cfg.infra_node.ip)
        conn = Connection(host=args.host, user=args.ssh_user, private_key=args.ssh_private_key)
        child = pulumi.ResourceOptions(parent=self)
        again = [args.domain_id]

        apply_file(
            "chrony",
            conn=conn,
            content=topology.chrony_server_conf(cfg),
            path="/etc/chrony.conf",
            validate="chronyd -p -f {file} >/dev/null",
            activate="systemctl enable chronyd && systemctl restart chronyd",
            replace_with=again,
            opts=child,
        )
        self.hosts_file = pulumi.Output.all(**args.node_ips).apply(lambda ips: topology.hosts_file(cfg, ips))
        # No restart for any of these: CoreDNS re-reads the hosts file by
        # itself (hosts plugin reload), so a new node only rewrites it; the zone
        # (the SOA that turns unknown names into NXDOMAIN) never changes; the
        # reload plugin swaps in a changed Corefile only if it parses.
        coredns_files = {
            "coredns-hosts": ("hosts", self.hosts_file),
            "coredns-zone": ("zone.db", topology.zone_file(cfg)),
            "coredns-corefile": ("Corefile", topology.corefile(cfg)),
        }
        delivered = [
            apply_file(
                name,
                conn=conn,
                content=content,
                path=f"{COREDNS_DIR}/{file}",
                activate="true",
                replace_with=again,
                opts=child,
            )
            for name, (file, content) in coredns_files.items()
        ]
        apply_file(
            "coredns-unit",
            conn=conn,
            content=coredns_unit(cfg.dns.coredns_image),
            path="/etc/systemd/system/coredns.service",
            activate="systemctl daemon-reload && systemctl enable coredns && systemctl restart coredns",
            replace_with=again,
            # The unit starts CoreDNS, which needs its files in place; no data flows.
            opts=pulumi.ResourceOptions(parent=self, depends_on=delivered),
        )
        self.register_outputs({"hosts_file": self.hosts_file})
