"""Day-2 file delivery: one idempotent remote command per config file, keyed on its hash.

Before any step that connects to a node (a command or copy created, replaced
or updated), the program checks on its own machine that the node answers
with the SSH host key Pulumi generated for it (``NodeAccess``'s host-key
check, a resource hook): another key fails that step at once, naming the
node and both fingerprints, and nothing reaches the node.

Every command, on the node, as root:

1. waits until first boot has finished (``cloud-init status --wait``; on
   Flatcar, Ignition ran before sshd started) and fails naming the node if
   cloud-init reported an error;
2. validates the new file with the program that will read it; nothing is
   installed when that fails;
3. installs it, activates it (reload/restart) and VERIFIES that the service
   runs it: a reload that failed behind a zero exit status (haproxy keeps its
   old workers) fails the command, the previous file is put back and
   re-activated, so the node keeps serving what it served before.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import shlex
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence

import pulumi
from pulumi_command import remote

from .render.host_key import HostKeyCheck, render_check

# Shell helpers every day-2 script can use in ``activate`` and ``verify``.
# Times are seconds since boot (/proc/uptime, /proc/PID/stat), so a clock
# step on the node (chrony's first sync) cannot fool them.
_HELPERS = r"""
uptime_now() { cut -d' ' -f1 /proc/uptime; }
# %.2f, not awk's default %.6g: after 10^4 s of uptime that rounds to 0.1 s, and
# to whole seconds after a day, so a restart in the same second looked older.
started_at() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f\n", $22 / hz}' "/proc/$1/stat" 2>/dev/null; }
after() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && a + 0 >= b + 0) }'; }
main_pid() { systemctl show -p MainPID --value "$1"; }
# The unit is active and its main process was started after the install.
restarted() {
  systemctl is-active -q "$1" || return 1
  pid=$(main_pid "$1"); [ "${pid:-0}" -gt 0 ] || return 1
  after "$(started_at "$pid")" "$since"
}
# haproxy (master-worker): a reload that worked forks a new worker; one that
# failed ('Loading failure!', exit status 0) leaves only the old workers.
new_worker() {
  systemctl is-active -q "$1" || return 1
  pid=$(main_pid "$1"); [ "${pid:-0}" -gt 0 ] || return 1
  for w in $(pgrep -P "$pid"); do
    if after "$(started_at "$w")" "$since"; then return 0; fi
  done
  return 1
}
"""


# What a command's output shows in the `pulumi up` display. pulumi-command logs stdout and stderr by
# default, and additional_secret_outputs protects only the state: a command printing a secret prints
# it to the display, CI logs and the event stream. So every command of the program sets `logging`:
# QUIET (nothing) unless a person needs a line, and then NOTICES (stderr only: the script writes that
# one line to stderr and keeps what the program reads, e.g. the conntrack marker, on stdout). A
# failure shows both streams anyway: the provider puts them in the error, which is what a person
# needs to act; no script sends a secret to either (files and the token arrive on stdin).
QUIET = remote.Logging.NONE
NOTICES = remote.Logging.STDERR


# How long a node's sshd may take to start answering before the host-key check gives up: a new VM
# boots first (minutes under software emulation). After the check, the session's own dial only
# has to ride out a blip (sshd restarted by first boot's last modules): 10 dials back off from
# 0.1 s to about 4 s, so a refused port gets some 11 s, and a key that changed in between fails
# as fast.
BOOT_WAIT_S = 900
DIAL_ATTEMPTS = 10


class HostKeyRefused(Exception):
    """The node did not answer with its pinned host key (or not at all): its step fails with this line."""


def host_key_check(node: str, host: pulumi.Input[str], expected: pulumi.Input[str], *,
                   wait_s: int = BOOT_WAIT_S, port: int = 22):
    """The coroutine function the node's host-key hook runs (``host_key_gate``).

    It runs the rendered check (render/host_key.py) with the node's address and pinned key,
    without blocking the program's event loop, and raises its ``microcloud: <node>: ...`` line,
    which becomes the step's error. One check at a time per node (a node's commands start
    together, and a booting VM's sshd limits unauthenticated connections); once a check timed
    out, the node's later steps in this run fail at once with the same line instead of waiting
    out the bound again.
    """
    lock = asyncio.Lock()
    timed_out: list[str] = []

    async def check(_args: Optional[pulumi.ResourceHookArgs] = None) -> None:
        async with lock:
            if timed_out:
                raise HostKeyRefused(timed_out[0])
            spec = HostKeyCheck(node=node, host=await pulumi.Output.from_input(host).future(),
                                expected=await pulumi.Output.from_input(expected).future(), wait_s=wait_s, port=port)
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh", "-c", render_check(spec),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )
            _, err = await proc.communicate()
            if proc.returncode == 0:
                return
            said = [ln for ln in err.decode(errors="replace").splitlines() if ln.startswith(f"microcloud: {node}: ")]
            line = said[-1] if said else f"microcloud: {node}: the ssh host key check failed (exit status {proc.returncode})"
            if "did not answer within" in line:
                timed_out.append(line)
            raise HostKeyRefused(line)

    return check


def host_key_gate(node: str, host: pulumi.Input[str], expected: pulumi.Input[str], *,
                  wait_s: int = BOOT_WAIT_S) -> pulumi.ResourceHook:
    """The resource hook ``<node>-host-key-check``, run by the engine before a step that connects to ``node``
    (not in previews: they connect to nothing)."""
    return pulumi.ResourceHook(f"{node}-host-key-check", host_key_check(node, host, expected, wait_s=wait_s))


@dataclass(frozen=True)
class NodeAccess:
    """What a day-2 component needs to reach the nodes, built once in __main__.

    ``ips``: node name -> its address, an output of its VM (a command waits for the VM);
    ``domain_ids``: node name -> its libvirt domain id (a new VM gets every file again);
    ``user`` and ``private_key``: the one SSH identity every node trusts;
    ``host_keys``: node name -> the host key Pulumi generated for it: a connection accepts
    exactly that key, so root scripts, files and the token reach that node or nothing, and
    the node's host-key check (one per node, ``host_key_gate``) refuses another key at once;
    ``boot_wait_s``: how long that check waits for a node's sshd to answer.
    """

    ips: Mapping[str, pulumi.Input[str]]
    domain_ids: Mapping[str, pulumi.Input[str]]
    user: str
    private_key: pulumi.Input[str]
    host_keys: Mapping[str, pulumi.Input[str]]
    boot_wait_s: int = BOOT_WAIT_S
    _gates: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def conn(self, node: str) -> "Connection":
        if node not in self._gates:
            self._gates[node] = host_key_gate(node, self.ips[node], self.host_keys[node], wait_s=self.boot_wait_s)
        return Connection(host=self.ips[node], user=self.user, private_key=self.private_key,
                          host_key=self.host_keys[node], gate=self._gates[node])

    def ips_of(self, names: Iterable[str]) -> dict[str, pulumi.Input[str]]:
        """name -> address of ``names``, in their order (what a rendered file lists)."""
        return {n: self.ips[n] for n in names}


@dataclass(frozen=True)
class Connection:
    host: pulumi.Input[str]
    user: str
    private_key: pulumi.Input[str]
    # The one host key accepted (OpenSSH public form); the session fails on any other.
    host_key: pulumi.Input[str]
    # The node's host-key check, bound to every resource that uses this connection (options()).
    gate: pulumi.ResourceHook

    def args(self) -> remote.ConnectionArgs:
        return remote.ConnectionArgs(
            host=self.host,
            user=self.user,
            private_key=self.private_key,
            host_key=self.host_key,
            # The host-key check waited for sshd and saw the right key just before this dial.
            dial_error_limit=DIAL_ATTEMPTS,
            per_dial_timeout=10,
        )

    def options(self, opts: pulumi.ResourceOptions) -> pulumi.ResourceOptions:
        """``opts`` with the node's host-key check run before the resource is created, replaced or updated."""
        gated = pulumi.ResourceOptions(hooks=pulumi.ResourceHookBinding(before_create=[self.gate], before_update=[self.gate]))
        return pulumi.ResourceOptions.merge(opts, gated)


def install_script(
    *,
    node: str,
    path: str,
    mode: str,
    validate: Optional[str],
    activate: str,
    verify: Optional[str] = None,
    verify_timeout: int = 30,
    group: str = "root",
) -> str:
    """Shell run on the node: wait for first boot -> stdin -> validate -> install -> activate -> verify.

    ``validate`` gets the temp file as {file}; nothing is installed when it
    fails. ``verify`` (shell, may use the helpers above and ``$since``) is
    retried for ``verify_timeout`` seconds after ``activate``; when
    activation or verification fails, the previous file (or none) is
    restored and re-activated, and the script exits 1 naming node and file.
    """
    q_node, q_path = shlex.quote(node), shlex.quote(path)
    steps = [
        "set -eu",
        "umask 077",
        _HELPERS,
        f"node={q_node}",
        f"path={q_path}",
        "fail() { echo \"microcloud: $node: $path: $*\" >&2; exit 1; }",
        # Only where cloud-init runs at boot (its generator leaves this file);
        # exit status: 0 done, 2 done with warnings (deprecated keys), 1 error.
        "if [ -e /run/cloud-init/enabled ] && command -v cloud-init >/dev/null 2>&1; then",
        "  rc=0; cloud-init status --wait >/dev/null 2>&1 || rc=$?",
        "  if [ \"$rc\" -eq 1 ]; then",
        "    echo \"microcloud: $node: first boot failed: cloud-init reported an error"
        " (run 'cloud-init status --long' on the node)\" >&2; exit 1",
        "  fi",
        "fi",
        'tmp=$(mktemp); prev=$(mktemp)',
        'trap \'rm -f "$tmp" "$prev"\' EXIT',
        'cat > "$tmp"',
    ]
    if validate:
        check = validate.format(file='"$tmp"')
        steps.append(f"( {check} ) || fail 'rejected by its validator; nothing installed'")
    steps += [
        'had_prev=0; if [ -e "$path" ]; then cp -p "$path" "$prev"; had_prev=1; fi',
        "since=$(uptime_now)",
        f'install -D -m {mode} -o root -g {shlex.quote(group)} "$tmp" "$path"',
        f"activate() {{ {activate}; }}",
        f"verify() {{ {verify or 'true'}; }}",
        "ok=0",
        "if activate; then",
        f"  i=0; while [ $i -lt {verify_timeout} ]; do if verify; then ok=1; break; fi; i=$((i + 1)); sleep 1; done",
        "fi",
        '[ "$ok" = 1 ] && exit 0',
        'if [ "$had_prev" = 1 ]; then install -m "$(stat -c %a "$prev")" -o root -g "$(stat -c %g "$prev")" "$prev" "$path"; else rm -f "$path"; fi',
        "since=$(uptime_now); activate >/dev/null 2>&1 || true",
        "fail 'validated but could not be activated (the service does not run it); the previous file is back in place'",
    ]
    return "sudo sh -c " + shlex.quote("\n".join(steps))


def trigger_digest(content: str, key: str) -> str:
    """HMAC-SHA256 of a file under a stack secret.

    It changes exactly when the file does, but says nothing about a secret
    inside it (a plain hash of a file holding an 8-character VRRP password
    could be brute-forced), so it can sit in state and in the ``triggers``
    list in clear: a secret there next to an unknown value (a new VM's id)
    makes the real engine fail the preview with "malformed RPC secret".
    """
    return hmac.new(key.encode(), content.encode(), hashlib.sha256).hexdigest()


def apply_file(
    name: str,
    *,
    conn: Connection,
    node: str,
    content: pulumi.Input[str],
    path: str,
    activate: str,
    validate: Optional[str] = None,
    verify: Optional[str] = None,
    mode: str = "0644",
    group: str = "root",
    replace_with: Sequence[pulumi.Input[str]] = (),
    opts: pulumi.ResourceOptions,
) -> remote.Command:
    """Deliver ``content`` to ``path`` on ``node`` and activate it in place.

    The command's trigger is the content's keyed digest (plus
    ``replace_with``, e.g. the domain id so a new VM gets the file again): an
    unchanged file is a no-op on re-runs, a changed one is validated on the
    node before it replaces the old one, and verified after.
    """
    content = pulumi.Output.from_input(content)
    digest = pulumi.Output.unsecret(
        pulumi.Output.all(content, conn.private_key).apply(lambda a: trigger_digest(a[0], a[1]))
    )
    return remote.Command(
        name,
        connection=conn.args(),
        create=install_script(node=node, path=path, mode=mode, validate=validate, activate=activate, verify=verify, group=group),
        stdin=content,
        triggers=[digest, *replace_with],
        # Validators and activations talk on success (sysusers, reloads): nobody needs it.
        logging=QUIET,
        opts=conn.options(pulumi.ResourceOptions.merge(
            opts,
            pulumi.ResourceOptions(
                custom_timeouts=pulumi.CustomTimeouts(create="20m"),
                # stdout may echo config lines; never keep it in state in clear.
                additional_secret_outputs=["stdout", "stderr"],
            ),
        )),
    )
