"""K3sCluster: K3s in HA with embedded etcd on the server/agent/storage nodes, joined through the API VIP.

One install command per node (``render/k3s.py``), keyed on the hash of its
rendered script, run one node at a time: the bootstrap server initializes
etcd, servers 2..n join through the VIP, then the bootstrap server is
re-pointed at the VIP like the others, then every agent. Each command waits
until its node is Ready again before the next one starts, so a day-2 change
of a label, taint or flag rolls through the cluster without replacing a VM.

The cluster token is a pulumi-random secret that reaches each node on the
install command's standard input; the script writes it to a 0600 file that
config.yaml names. It is never in a command line, a log or clear state.

``k3s-ready`` proves the cluster from the bootstrap server: the API answers
through the VIP and every node is Ready (bounded, naming the node that is
not); its output is the admin kubeconfig, re-pointed at the VIP, secret, from
which ``__main__`` makes the one kubernetes provider.
"""

from __future__ import annotations

import hashlib
import posixpath
import shlex
from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_random as random
import yaml
from pulumi_command import remote

from . import specs
from .config import NodeConfig, StackConfig, file_sha256
from .config import K3sArtifact
from .day2 import QUIET, NodeAccess
from .render import k3s

# Where files copied from the Pulumi host wait on the node until installed.
UPLOAD_DIR = "/var/tmp/microcloud-k3s"
ADMIN_KUBECONFIG = "/etc/rancher/k3s/k3s.yaml"


@dataclass(frozen=True)
class K3sClusterArgs:
    stack: StackConfig
    # Every node (the K3s nodes are picked from the config) is reached through it.
    access: NodeAccess
    # What must be up first: the load-balancer pair (the VIP every node joins through) and DNS/NTP.
    wait_for: Sequence[pulumi.Resource] = ()


def kubeconfig_at(text: str, server: str) -> str:
    """K3s' admin kubeconfig (server https://127.0.0.1:<port>) pointed at ``server``; fails on anything else."""
    doc = yaml.safe_load(text) or {}
    clusters = doc.get("clusters") or []
    if len(clusters) != 1 or "cluster" not in clusters[0]:
        raise ValueError("k3s: the admin kubeconfig does not hold exactly one cluster")
    clusters[0]["cluster"]["server"] = server
    return yaml.safe_dump(doc, sort_keys=False)


def ready_script(*, node: str, binary: str, server: str, names: Sequence[str], timeout: int, kubeconfig: str = ADMIN_KUBECONFIG) -> str:
    """Root sh on the bootstrap server: the API answers at ``server`` and each of ``names`` is Ready; then the kubeconfig."""
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
        f"cat {q(kubeconfig)}",
    ]
    return "sudo sh -c " + q("\n".join(lines))


class K3sCluster(pulumi.ComponentResource):
    kubeconfig: pulumi.Output[str]
    installs: dict[str, remote.Command]

    def __init__(self, name: str, args: K3sClusterArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("microcloud:k3s:K3sCluster", name, None, opts)
        cfg = args.stack
        kc = cfg.k3s
        self._args = args
        self._child = pulumi.ResourceOptions(parent=self)
        token = random.RandomPassword(
            "k3s-token",
            length=64,
            special=False,
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["result"]),
        )
        self._token = pulumi.Output.secret(token.result)
        self._uploads: dict[str, dict[str, remote.CopyToRemote]] = {}

        first = specs.k3s_bootstrap_server(cfg)
        previous: list[pulumi.Resource] = list(args.wait_for)
        if len(cfg.servers) > 1:
            # cluster-init once; a node already holding etcd data, or a cluster
            # already answering at the VIP, is never initialized again.
            boot = self._install(first, specs.k3s_node_spec(cfg, first, bootstrap=True), f"{first.name}-k3s-bootstrap", previous, bootstrap=True)
            previous = [boot]
        self.installs = {}
        for node in specs.k3s_install_order(cfg):
            cmd = self._install(node, specs.k3s_node_spec(cfg, node), f"{node.name}-k3s", previous)
            self.installs[node.name] = cmd
            previous = [cmd]

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
            # Again when the node set changes, the bootstrap server is a new VM, or the keeper moves.
            triggers=[hashlib.sha256(" ".join(names).encode()).hexdigest(), kc.kubeconfig_keeper, args.access.domain_ids[first.name]],
            # stdout is the admin kubeconfig: never in the display, CI logs or the event stream.
            logging=QUIET,
            opts=ready_conn.options(pulumi.ResourceOptions(
                parent=self,
                depends_on=previous,
                custom_timeouts=pulumi.CustomTimeouts(create="60m"),
                # stdout is the admin kubeconfig (a client key).
                additional_secret_outputs=["stdout", "stderr"],
            )),
        )
        self.kubeconfig = pulumi.Output.secret(ready.stdout.apply(lambda text: kubeconfig_at(text, server)))
        self.register_outputs({"kubeconfig": self.kubeconfig})

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
        )
        script = k3s.render_k3s_install(install)
        conn = a.access.conn(node.name)
        return remote.Command(
            res_name,
            connection=conn.args(),
            create="sudo sh -c " + shlex.quote(script),
            # The token arrives here, never in the script, a file name or an argument.
            stdin=self._token,
            # Keyed on the script (config.yaml, unit, pinned files are in it; the token is not).
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
