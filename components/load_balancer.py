"""LoadBalancerPair: HAProxy + Keepalived on the two load balancers (EL9 or Debian), configured in place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi

from . import specs
from .config import StackConfig
from .day2 import NodeAccess, apply_file


@dataclass(frozen=True)
class LoadBalancerPairArgs:
    stack: StackConfig
    # The two load balancers are reached through it; HAProxy's backends (servers, ingress nodes) are its addresses.
    access: NodeAccess
    vrrp_auth: pulumi.Input[str]


class LoadBalancerPair(pulumi.ComponentResource):
    haproxy_cfg: pulumi.Output[str]
    api_vip: str
    ingress_vip: str

    def __init__(self, name: str, args: LoadBalancerPairArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("microcloud:network:LoadBalancerPair", name, None, opts)
        cfg = args.stack
        self.api_vip = str(cfg.load_balancer.api_vip)
        self.ingress_vip = str(cfg.load_balancer.ingress_vip)
        self.haproxy_cfg = pulumi.Output.all(**args.access.ips_of(specs.haproxy_backends(cfg))).apply(lambda ips: specs.haproxy_cfg(cfg, ips))
        # Rendered together and checked as a pair (unicast peers, ids, priorities).
        keepalived = pulumi.Output.secret(args.vrrp_auth).apply(lambda pw: specs.keepalived_confs(cfg, pw))
        check_script = specs.keepalived_check_script(cfg)
        # Everything that makes the VIPs answer: what joins through them waits for it.
        self.commands: list[pulumi.Resource] = []
        for lb in cfg.load_balancers:
            self.commands += self._configure(lb.name, args, keepalived[lb.name], check_script)
        self.register_outputs({"haproxy_cfg": self.haproxy_cfg})

    def _configure(self, lb: str, args: LoadBalancerPairArgs, keepalived_conf, check_script: str) -> list[pulumi.Resource]:
        conn = args.access.conn(lb)
        again = [args.access.domain_ids[lb]]
        child = pulumi.ResourceOptions(parent=self)
        haproxy = apply_file(
            f"{lb}-haproxy",
            conn=conn,
            node=lb,
            content=self.haproxy_cfg,
            path="/etc/haproxy/haproxy.cfg",
            validate="haproxy -c -q -f {file}",
            activate="systemctl enable -q haproxy && systemctl reload-or-restart haproxy",
            # reload-or-restart exits 0 even when haproxy could not load the
            # file (it keeps the old workers): only a new worker proves it.
            verify="new_worker haproxy",
            replace_with=again,
            opts=child,
        )
        script = apply_file(
            f"{lb}-chk-haproxy",
            conn=conn,
            node=lb,
            content=check_script,
            path=specs.CHECK_SCRIPT,
            validate="bash -n {file}",
            mode="0755",
            activate="true",
            replace_with=again,
            opts=child,
        )
        keepalived = apply_file(
            f"{lb}-keepalived",
            conn=conn,
            node=lb,
            content=keepalived_conf,
            path="/etc/keepalived/keepalived.conf",
            # keepalived -t also checks that the tracked script exists and is safe.
            validate="keepalived -t -f {file}",
            mode="0600",
            activate="systemctl enable -q keepalived && systemctl reload-or-restart keepalived",
            verify="systemctl is-active -q keepalived",
            replace_with=again,
            # keepalived -t rejects a config whose check script is missing; no data flows.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[script]),
        )
        return [haproxy, script, keepalived]
