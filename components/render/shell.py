"""Shell fragments several renderers share."""

from __future__ import annotations

import shlex


def output_matches(command: str, regex: str, *, fixed: bool = False) -> str:
    """Shell: ``command`` runs to its end, then its whole stdout is searched for ``regex`` (grep BRE, or a
    fixed string); the fragment's status is the search's.

    Never ``command | grep -q``: grep -q stops reading at the first match, so a
    producer still writing dies on the closed pipe (python3 prints
    BrokenPipeError, a Go binary exits on SIGPIPE): noise in the display, and
    a failure wherever the shell runs with ``pipefail``. Here nothing is
    piped: the output goes to a scratch file that the fragment removes.
    """
    flags = "-qF" if fixed else "-q"
    return (
        f'{{ _out=$(mktemp) && {{ {command}; }} >"$_out" && grep {flags} -- {shlex.quote(regex)} "$_out"; '
        f'_rc=$?; rm -f "$_out"; [ "$_rc" = 0 ]; }}'
    )
