"""K3sCluster: K3s in HA with embedded etcd on the server/agent/storage nodes, joined through the API VIP.

One install command per node (``render/k3s.py``), keyed on the hash of its
rendered script, run one node at a time: the bootstrap server initializes
etcd, servers 2..n join through the VIP, then the bootstrap server is
re-pointed at the VIP like the others, then every agent. Each command waits
until its node is Ready again before the next one starts, so a day-2 change
of a label, taint or flag rolls through the cluster without replacing a VM.

The join secrets come from ClusterPki (components/cluster_pki.py): each
node's install command reads them on its standard input (servers: the
server and agent tokens; the cluster-init server also every cluster CA,
placed before K3s first starts; agents: the agent token only). The script
writes them to 0600 files that config.yaml names. They are never in a
command line, a log or clear state.

The same stdin carries K3s' registries.yaml (k3s.registries, the
passwords from secret config keys): the script installs it 0600 and
restarts K3s only where it changed, so a new registry token rolls through
the nodes in the same order, each Ready before the next, no VM replaced.

``k3s-ready`` proves the cluster from the bootstrap server: the API answers
through the VIP and every node is Ready (bounded, naming the node that is
not); it prints nothing. The admin kubeconfig is built here, after it, from
the client certificate ClusterPki signs: server = the API VIP, trusting only
the cluster's server CA; secret; ``__main__`` makes the one kubernetes
provider from it.
"""

from __future__ import annotations

import hashlib
import posixpath
import shlex
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import pulumi
from pulumi_command import remote

from . import specs
from .cluster_pki import ClusterPki
from .config import NodeConfig, StackConfig, file_sha256
from .config import K3sArtifact
from .day2 import QUIET, NodeAccess
from .render import k3s
from .render.k3s_registries import render_registries

# Where files copied from the Pulumi host wait on the node until installed.
UPLOAD_DIR = "/var/tmp/microcloud-k3s"
# K3s' own admin kubeconfig on a server: read there by k3s-ready, never sent back.
ADMIN_KUBECONFIG = "/etc/rancher/k3s/k3s.yaml"


@dataclass(frozen=True)
class K3sClusterArgs:
    stack: StackConfig
    # Every node (the K3s nodes are picked from the config) is reached through it.
    access: NodeAccess
    # The cluster's CAs, join tokens and admin certificate.
    pki: ClusterPki
    # What must be up first: the load-balancer pair (the VIP every node joins through) and DNS/NTP.
    wait_for: Sequence[pulumi.Resource] = ()
    # k3s.registries' password keys -> their secret values (config.secret_value): registries.yaml's passwords.
    registry_passwords: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)


def ready_script(*, node: str, binary: str, server: str, names: Sequence[str], timeout: int, kubeconfig: str = ADMIN_KUBECONFIG) -> str:
    """Root sh on the bootstrap server: the API answers at ``server`` and each of ``names`` is Ready; prints nothing."""
    q = shlex.quote
    jsonpath = 'jsonpath={.status.conditions[?(@.type=="Ready")].status}'
    lines = [
        "set -eu",
        f"node={q(node)}",
        'fail() { echo "microcloud: $node: k3s: $*" >&2; exit 1; }',
        f"k() {{ {q(binary)} kubectl --kubeconfig {q(kubeconfig)} --server {q(server)} --request-timeout=5s \"$@\"; }}",
        f"t={int(timeout)}",
        "i=0",
        "until k get --raw /readyz >/dev/null 2>&1; do",
        f'  [ $i -lt "$t" ] || fail "the API does not answer through {server} after ${{t}}s (haproxy on the load balancers, k3s on the servers)"',
        "  i=$((i + 5)); sleep 5",
        "done",
        "for n in " + " ".join(q(n) for n in names) + "; do",
        "  while :; do",
        f'    st=$(k get node "$n" -o {q(jsonpath)} 2>/dev/null) || st=',
        '    [ "$st" = True ] && break',
        '    [ $i -lt "$t" ] || fail "node $n is not Ready after ${t}s (kubectl describe node $n; journalctl -u k3s or k3s-agent on $n)"',
        "    i=$((i + 5)); sleep 5",
        "  done",
        "done",
    ]
    return "sudo sh -c " + q("\n".join(lines))


class K3sCluster(pulumi.ComponentResource):
    kubeconfig: pulumi.Output[str]
    kubeconfig_expires_at: pulumi.Output[str]
    installs: dict[str, remote.Command]

    def __init__(self, name: str, args: K3sClusterArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("microcloud:k3s:K3sCluster", name, None, opts)
        cfg = args.stack
        kc = cfg.k3s
        self._args = args
        self._child = pulumi.ResourceOptions(parent=self)
        self._uploads: dict[str, dict[str, remote.CopyToRemote]] = {}
        # The hardening profile is relaxed only out loud: one warning per relaxed part, every run.
        for what in kc.relaxations():
            pulumi.log.warn(what, resource=self)

        # registries.yaml travels in every install command's stdin (secret: it holds the passwords); a new
        # token changes that stdin, so each node's install runs again in order and restarts K3s only there.
        keys = sorted(args.registry_passwords)
        self._registries = pulumi.Output.secret(
            pulumi.Output.all(*(args.registry_passwords[k] for k in keys)).apply(
                lambda vals: render_registries(specs.k3s_registries(cfg, dict(zip(keys, vals))))
            )
        )
        self._api_server = f"https://{cfg.load_balancer.api_vip}:{cfg.load_balancer.api_port}"
        first = specs.k3s_bootstrap_server(cfg)
        previous: list[pulumi.Resource] = list(args.wait_for)
        if len(cfg.servers) > 1:
            # cluster-init once; a node already holding etcd data, or a cluster
            # already answering at the VIP, is never initialized again.
            boot = self._install(first, specs.k3s_node_spec(cfg, first, bootstrap=True), f"{first.name}-k3s-bootstrap", previous, bootstrap=True)
            previous = [boot]
        self.installs = {}
        servers, agents = specs.k3s_install_waves(cfg)
        # Servers one at a time: each changes etcd's membership, and a restart takes one of the quorum.
        for node in servers:
            cmd = self._install(node, specs.k3s_node_spec(cfg, node), f"{node.name}-k3s", previous)
            self.installs[node.name] = cmd
            previous = [cmd]
        # Every agent at once once the servers are up: a new node takes nothing from the cluster, and
        # a member's restart waits for a slot of the disruption budget (at most max_unavailable agents
        # down at a time, held in the cluster: render/budget.py), not for the agent before it.
        after_servers = previous
        # The engine runs at most --parallel steps at once (its default is 8 on a 2-core machine: `pulumi up --help`).
        # A wave wider than that joins in batches: say so, with what the stack needs (docs/scale.md).
        warning = specs.parallel_warning(cfg, getattr(pulumi.runtime.settings.SETTINGS, "parallel", None))
        if warning:
            pulumi.log.warn(warning, resource=self)
        for node in agents:
            self.installs[node.name] = self._install(node, specs.k3s_node_spec(cfg, node), f"{node.name}-k3s", after_servers)
        previous = list(self.installs.values()) or previous

        server = f"https://{cfg.load_balancer.api_vip}:{cfg.load_balancer.api_port}"
        names = sorted(n.name for n in cfg.nodes_with("server", "agent", "storage"))
        ready_conn = args.access.conn(first.name)
        ready = remote.Command(
            "k3s-ready",
            connection=ready_conn.args(),
            create=ready_script(
                node=first.name,
                binary=posixpath.join(specs.k3s_bin_dir(first), "k3s"),
                server=server,
                names=names,
                timeout=kc.ready_timeout,
            ),
            # Again when the node set changes or the bootstrap server is a new VM.
            triggers=[hashlib.sha256(" ".join(names).encode()).hexdigest(), args.access.domain_ids[first.name]],
            # It prints nothing on success; a failure names the node in the error.
            logging=QUIET,
            opts=ready_conn.options(pulumi.ResourceOptions(
                parent=self,
                depends_on=previous,
                custom_timeouts=pulumi.CustomTimeouts(create="60m"),
                # Like every command's: nothing of a node's output reaches clear state.
                additional_secret_outputs=["stdout", "stderr"],
            )),
        )
        # After k3s-ready (its id flows in): a provider made from it finds the cluster answering.
        self.kubeconfig = args.pki.kubeconfig(server, after=ready.id)
        self.kubeconfig_expires_at = args.pki.admin_expires_at
        self.register_outputs({"kubeconfig": self.kubeconfig, "kubeconfig_expires_at": self.kubeconfig_expires_at})

    # ------------------------------------------------------------------ helpers

    def _artifact(self, node: NodeConfig, what: str, art: Optional[K3sArtifact]) -> tuple[Optional[k3s.Artifact], list]:
        """The renderer's Artifact for ``art`` on ``node``, and what must run first (the copy of a local file)."""
        if art is None:
            return None, []
        if art.url is not None:
            return k3s.Artifact(sha256=art.sha256, url=art.url), []
        # config.load() checked that the file is there and, when pinned, is the pinned one.
        local = art.local_path()
        sha = file_sha256(local)
        # /var/tmp is the login user's to write (sticky, 1777) and survives a reboot.
        remote_path = f"{UPLOAD_DIR}-{sha[:16]}-{posixpath.basename(local)}"
        conn = self._args.access.conn(node.name)
        copy = remote.CopyToRemote(
            f"{node.name}-k3s-{what}",
            connection=conn.args(),
            source=pulumi.FileAsset(local),
            remote_path=remote_path,
            triggers=[sha, self._args.access.domain_ids[node.name]],
            opts=conn.options(self._child),
        )
        return k3s.Artifact(sha256=sha, path=remote_path), [copy]

    def _install(
        self, node: NodeConfig, spec: k3s.K3sNodeSpec, res_name: str, after: Sequence[pulumi.Resource], bootstrap: bool = False
    ) -> remote.Command:
        cfg, a = self._args.stack, self._args
        binary, copies = self._artifact(node, "binary", cfg.k3s.binary)
        images, more = self._artifact(node, "images", cfg.k3s.images)
        install = k3s.K3sInstallSpec(
            node=spec,
            version=cfg.k3s.version,
            binary=binary,
            images=images,
            bin_dir=specs.k3s_bin_dir(node),
            ready_timeout=0 if bootstrap else cfg.k3s.ready_timeout,
            bootstrap=bootstrap,
            # The bootstrap run never restarts a member (it leaves any node with etcd data alone).
            budget=None if bootstrap else specs.k3s_budget(cfg),
            budget_pool="" if bootstrap else specs.budget_pool(node),
        )
        script = k3s.render_k3s_install(install)
        conn = a.access.conn(node.name)
        return remote.Command(
            res_name,
            connection=conn.args(),
            create="sudo sh -c " + shlex.quote(script),
            # The tokens (and the CAs) arrive here, never in the script, a file name or an argument.
            stdin=self._args.pki.join_input(spec.role, spec.cluster_init, self._registries,
                                            budget_server="" if bootstrap else self._api_server),
            # Keyed on the script (config.yaml, unit, pinned files are in it; the secrets are not:
            # a changed join input is an update of stdin, which runs the script again).
            triggers=[hashlib.sha256(script.encode()).hexdigest(), a.access.domain_ids[node.name]],
            # The installer's progress is for the failure message, which carries it anyway.
            logging=QUIET,
            opts=conn.options(pulumi.ResourceOptions(
                parent=self,
                depends_on=[*after, *copies, *more],
                custom_timeouts=pulumi.CustomTimeouts(create="60m"),
                additional_secret_outputs=["stdout", "stderr"],
            )),
        )
