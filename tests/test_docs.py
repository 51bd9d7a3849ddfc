"""README.md and docs/*.md stay navigable: links resolve, no section twice, a short README with a full map.

README is the front page (what it is, the two fresh-machine commands, the
quick start, the map of the repository, what is not done yet); the topics
live in docs/. These checks keep it that way:

- every relative link (and its `#anchor`, GitHub's slug of a heading) resolves;
- README has at most 250 lines and starts with exactly the two commands;
- no heading twice at the same level in one file, no `##` section in two files;
- README's map names every top-level entry of the repository.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 250
MAX_COMMAND_LINE = 72
# The fresh-machine commands, in order. The second is what .ci/run runs.
FIRST_COMMANDS = ["bash .ci/dev", "venv/bin/python -m pytest -q -rs tests"]
MAP_HEADING = "Map: what lives where"

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    out, fenced = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((n, line))
    return out


def headings(text: str) -> list[tuple[int, int, str]]:
    """(line number, level, text) of every ATX heading outside code blocks."""
    found = []
    for n, line in prose_lines(text):
        m = HEADING.match(line)
        if m:
            found.append((n, len(m.group(1)), m.group(2)))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: rendered text, lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # a link renders as its text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor GitHub makes for the headings of a file (a repeated slug gets -1, -2, ...)."""
    seen: Counter[str] = Counter()
    out = set()
    for _, _, text in headings(path.read_text()):
        base = slug(text)
        out.add(base if not seen[base] else f"{base}-{seen[base]}")
        seen[base] += 1
    return out


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every markdown link outside code."""
    out = []
    for n, line in prose_lines(path.read_text()):
        for m in LINK.finditer(INLINE_CODE.sub("", line)):
            out.append((n, m.group(1)))
    return out


def is_external(target: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target)) or target.startswith("//")


def broken_links(path: Path) -> list[str]:
    problems = []
    for n, target in links(path):
        if is_external(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{rel(path)}:{n}: {target}"
        if not dest.exists():
            problems.append(f"{where}: no such file")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{where}: no heading with anchor #{anchor} in {dest.relative_to(ROOT)}")
    return problems


def section(text: str, title: str) -> str:
    """The body of the `##` section with that title, up to the next heading of level <= 2."""
    lines = text.splitlines()
    hs = headings(text)
    start = next((n for n, level, t in hs if level == 2 and t == title), None)
    assert start is not None, f"README has no '## {title}' section"
    end = next((n for n, level, _ in hs if n > start and level <= 2), len(lines) + 1)
    return "\n".join(lines[start:end - 1])


def tracked_top_level() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no git checkout to list ({exc})")
    return sorted({line.split("/", 1)[0] for line in out.splitlines() if line})


# ---------------------------------------------------------------- links


def test_every_relative_link_resolves():
    problems = [p for page in pages() for p in broken_links(page)]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_readme_links_every_docs_page():
    targets = {(README.parent / t.partition("#")[0]).resolve() for _, t in links(README) if not is_external(t)}
    missing = [rel(p) for p in sorted(DOCS.glob("*.md")) if p.resolve() not in targets]
    assert not missing, f"README links to no {missing}: add them to its Documentation table"


def test_slug_is_githubs():
    assert slug("Policies (`policy/`): destructive changes stop at preview") == "policies-policy-destructive-changes-stop-at-preview"
    assert slug("Protecting data (prod) and destroying everything (dev)") == "protecting-data-prod-and-destroying-everything-dev"
    assert slug("node_exporter on the load balancers and the infra node") == "node_exporter-on-the-load-balancers-and-the-infra-node"
    assert slug("Day-2 operations") == "day-2-operations"


# ---------------------------------------------------------------- README's shape


def test_readme_is_short():
    n = len(README.read_text().splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines (at most {MAX_README_LINES}): move a topic into docs/"


def test_readme_starts_with_the_two_fresh_machine_commands():
    lines = README.read_text().splitlines()
    assert lines[0].startswith("# "), lines[0]
    body = [ln for ln in lines[1:] if ln.strip()]
    assert body and FENCE.match(body[0]), f"README's first content after the title is not a code block: {body[:1]}"
    block = []
    for ln in body[1:]:
        if FENCE.match(ln):
            break
        block.append(ln)
    else:
        pytest.fail("README's first code block is not closed")
    long = [ln for ln in block if len(ln) > MAX_COMMAND_LINE]
    assert not long, f"lines over {MAX_COMMAND_LINE} characters in README's first code block: {long}"
    commands = [re.sub(r"\s+#.*$", "", ln).strip() for ln in block if ln.strip()]
    assert commands == FIRST_COMMANDS, f"README's first code block holds {commands}, not {FIRST_COMMANDS}"


def test_readme_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert FIRST_COMMANDS[1] in [ln.strip() for ln in ci], f".ci/run does not run `{FIRST_COMMANDS[1]}`"


# ---------------------------------------------------------------- no section twice


def test_no_heading_twice_in_a_file():
    problems = []
    for page in pages():
        count = Counter((level, text) for _, level, text in headings(page.read_text()))
        problems += [f"{rel(page)}: {'#' * level} {text} ({n} times)" for (level, text), n in count.items() if n > 1]
    assert not problems, "headings repeated at the same level:\n" + "\n".join(problems)


def test_no_section_in_two_files():
    where: dict[str, list[str]] = {}
    for page in pages():
        for _, level, text in headings(page.read_text()):
            if level == 2:
                where.setdefault(text, []).append(rel(page))
    twice = {text: sorted(set(files)) for text, files in where.items() if len(set(files)) > 1}
    assert not twice, f"'##' sections in more than one file (merge them into one): {twice}"


def test_every_docs_page_opens_with_its_orientation():
    """`# Title`, then a paragraph of 2-5 lines saying what the page covers, before any section."""
    problems = []
    for page in sorted(DOCS.glob("*.md")):
        lines = page.read_text().splitlines()
        if not lines or not HEADING.match(lines[0]) or not lines[0].startswith("# "):
            problems.append(f"{rel(page)}: does not start with a '# ' title")
            continue
        rest = "\n".join(lines[1:]).lstrip("\n").split("\n\n", 1)[0].splitlines()
        if not 2 <= len(rest) <= 5 or any(HEADING.match(ln) or FENCE.match(ln) for ln in rest):
            problems.append(f"{rel(page)}: no 2-5 line orientation paragraph under the title")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- the map


def test_readme_map_names_every_top_level_entry():
    text = section(README.read_text(), MAP_HEADING)
    missing = [e for e in tracked_top_level() if f"`{e}`" not in text and f"`{e}/`" not in text]
    assert not missing, f"README's '{MAP_HEADING}' names no {missing}: add a line on what lives there"


def test_readme_map_names_the_folders_of_components_and_tests():
    text = section(README.read_text(), MAP_HEADING)
    try:
        out = subprocess.run(["git", "ls-files", "components", "tests"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no git checkout to list ({exc})")
    folders = sorted({"/".join(p.split("/")[:2]) for p in out.splitlines() if p.count("/") >= 2})
    missing = [f for f in folders if f"`{f}/`" not in text]
    assert not missing, f"README's '{MAP_HEADING}' names no {missing}: add a line on what lives there"
