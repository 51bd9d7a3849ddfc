"""The shared shell fragments (components/render/shell.py), run by real shells."""

from __future__ import annotations

import subprocess
import sys

import pytest

from components.render.shell import output_matches

pytestmark = pytest.mark.unit

# A producer that writes the match, then (once a reader could have stopped) more than a pipe holds,
# as an HTTP client streaming /metrics does.
PRODUCER = (f"{sys.executable} -c \"import sys, time; sys.stdout.write('wanted line\\n'); sys.stdout.flush(); "
            f"time.sleep(0.3); sys.stdout.write('x' * 200000 + '\\n')\"")
SHELLS = (["/bin/sh", "-c"], ["bash", "-o", "pipefail", "-c"])


def run(shell: list[str], script: str) -> subprocess.CompletedProcess:
    return subprocess.run([*shell, script], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("shell", SHELLS, ids=["sh", "bash-pipefail"])
def test_output_matches_reads_the_whole_output(shell):
    for script in (output_matches(PRODUCER, "^wanted line$"), output_matches(PRODUCER, "wanted", fixed=True)):
        res = run(shell, script)
        assert (res.returncode, res.stderr) == (0, ""), res
    for script in (output_matches(PRODUCER, "^unwanted$"), output_matches("false", "wanted", fixed=True),
                   output_matches(PRODUCER, "wanted line$.", fixed=True)):
        assert run(shell, script).returncode != 0, script


def test_the_pipe_it_replaces_kills_the_producer():
    """Why the fragment exists: `producer | grep -q` stops reading at the first match; the producer dies on the
    closed pipe, says so on stderr, and pipefail turns the match into a failure."""
    res = run(["bash", "-o", "pipefail", "-c"], f"{PRODUCER} | grep -q '^wanted line$'")
    assert res.returncode != 0 and "BrokenPipeError" in res.stderr, res


def test_output_matches_leaves_no_scratch_file(tmp_path):
    script = f"TMPDIR={tmp_path}; export TMPDIR; {output_matches(PRODUCER, 'wanted', fixed=True)}"
    assert run(["/bin/sh", "-c"], script).returncode == 0
    assert list(tmp_path.iterdir()) == []
