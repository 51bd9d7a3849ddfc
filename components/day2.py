"""Day-2 file delivery: one idempotent remote command per config file, keyed on its hash."""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
from pulumi_command import remote


@dataclass(frozen=True)
class Connection:
    host: pulumi.Input[str]
    user: str
    private_key: pulumi.Input[str]

    def args(self) -> remote.ConnectionArgs:
        return remote.ConnectionArgs(
            host=self.host,
            user=self.user,
            private_key=self.private_key,
            # The VM may still be booting when the command starts: keep dialing.
            dial_error_limit=-1,
            per_dial_timeout=10,
        )


def install_script(*, path: str, mode: str, validate: Optional[str], activate: str) -> str:
    """Shell run on the node: stdin -> temp file -> validate -> install -> activate.

    ``validate`` gets the temp file as {file}; nothing is installed when it fails.
    """
    steps = [
        "set -eu",
        "umask 077",
        'tmp=$(mktemp)',
        'trap \'rm -f "$tmp"\' EXIT',
        'cat > "$tmp"',
    ]
    if validate:
        steps.append(validate.format(file='"$tmp"'))
    steps += [
        f"install -D -m {mode} -o root -g root \"$tmp\" {shlex.quote(path)}",
        activate,
    ]
    return "sudo sh -c " + shlex.quote("\n".join(steps))


def apply_file(
    name: str,
    *,
    conn: Connection,
    content: pulumi.Input[str],
    path: str,
    activate: str,
    validate: Optional[str] = None,
    mode: str = "0644",
    replace_with: Sequence[pulumi.Input[str]] = (),
    opts: pulumi.ResourceOptions,
) -> remote.Command:
    """Deliver ``content`` to ``path`` on the node and activate it in place.

    The command's trigger is the content's hash (plus ``replace_with``, e.g.
    the domain id so a new VM gets the file again): an unchanged file is a
    no-op on re-runs, a changed one is validated on the node before it
    replaces the old one.
    """
    content = pulumi.Output.from_input(content)
    digest = content.apply(lambda text: hashlib.sha256(text.encode()).hexdigest())
    return remote.Command(
        name,
        connection=conn.args(),
        create=install_script(path=path, mode=mode, validate=validate, activate=activate),
        stdin=content,
        triggers=[digest, *replace_with],
        opts=pulumi.ResourceOptions.merge(
            opts,
            pulumi.ResourceOptions(
                custom_timeouts=pulumi.CustomTimeouts(create="20m"),
                # stdout may echo config lines; never keep it in state in clear.
                additional_secret_outputs=["stdout", "stderr"],
            ),
        ),
    )
