"""The one Jinja2 environment for line-oriented config templates."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import jinja2

TEMPLATES = Path(__file__).parent / "templates"


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def render(name: str, **values: object) -> str:
    return _env().get_template(name).render(**values)


def sha256(text: str) -> str:
    """Content hash used as the trigger of day-2 commands."""
    return hashlib.sha256(text.encode()).hexdigest()
