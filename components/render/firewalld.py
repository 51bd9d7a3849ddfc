"""Shell fragments for firewalld: open one TCP port to some networks only, and report conntrack.

Used by the node_exporter and storage components on the packaged-OS nodes
that run firewalld; pure (strings in, a script out), tested by running them.
"""

from __future__ import annotations

import ipaddress
import shlex

from .host_firewall import rich_rule
from .shell import output_matches
from typing import Optional, Sequence

# Present once nf_conntrack is loaded (a firewall that tracks connections).
CONNTRACK_TABLE = "/proc/sys/net/netfilter/nf_conntrack_max"
CONNTRACK_REPORT = "microcloud-conntrack="



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
    # The same form as the node firewall's zone (first boot), so a rule already there is found, not added twice.
    rules = [rich_rule(str(ipaddress.IPv4Network(s, strict=False)), "tcp", (port, port)) for s in sources]
    want = "\n".join(rules)
    listed = output_matches("firewall-cmd --list-rich-rules", f'port port="{port}"', fixed=True)
    lines = [
        "set -eu",
        f"node={shlex.quote(node)}",
        # First boot may still be installing packages (firewalld among them).
        "if [ -e /run/cloud-init/enabled ] && command -v cloud-init >/dev/null 2>&1; then cloud-init status --wait >/dev/null 2>&1 || true; fi",
        f"report() {{ if [ -e {shlex.quote(conntrack_table)} ]; then echo {CONNTRACK_REPORT}yes; else echo {CONNTRACK_REPORT}no; fi; }}",
        "if ! command -v firewall-cmd >/dev/null 2>&1 || ! systemctl is-active -q firewalld; then",
        # The one line a person sees (stderr, which the command logs); stdout is for the program.
        f'  echo "microcloud: $node: no firewalld running: {without_firewalld}" >&2; report; exit 0',
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
        f"{listed} || "
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
