"""The config table of docs/config.md, generated from the model: every field's key, type, default and description.

    venv/bin/python -m components.config.doc                        # print the table
    venv/bin/python -m components.config.doc --write docs/config.md # replace it between the markers

tests/test_config.py fails when docs/config.md and the model disagree.
"""

from __future__ import annotations

import ipaddress
import sys
import typing
from inspect import isclass
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .base import OsName
from .stack import StackConfig

START = "<!-- config-table:start -->"
END = "<!-- config-table:end -->"


def _unoptional(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) is typing.Union and len(args) == 1 else tp


def _is_model(tp: Any) -> bool:
    return isclass(tp) and issubclass(tp, BaseModel)


def _bounds(field: FieldInfo) -> tuple[Any, Any]:
    """(lower, upper) bound of a number, or (min length, None) of a list; None where unbounded."""
    lo = hi = None
    for m in field.metadata:
        if isinstance(m, annotated_types.Ge):
            lo = m.ge
        elif isinstance(m, annotated_types.Le):
            hi = m.le
        elif isinstance(m, annotated_types.MinLen):
            lo = m.min_length
    return lo, hi


def _type_name(tp: Any) -> str:
    tp = _unoptional(tp)
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:  # a field rule inside a list (tuple[Cidr, ...]): the type is what it wraps
        return _type_name(typing.get_args(tp)[0])
    if origin is typing.Literal:
        return " \\| ".join(f"`{v}`" for v in typing.get_args(tp))
    if origin is tuple or origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is typing.Union:
        return " or ".join(_type_name(t) for t in typing.get_args(tp))
    if origin is dict:
        key, value = typing.get_args(tp)
        return f"{_type_name(value)} per OS" if key is OsName else f"map of {_type_name(value)}"
    if _is_model(tp):
        return "mapping"
    return {
        str: "string",
        Any: "any",
        int: "integer",
        bool: "boolean",
        ipaddress.IPv4Address: "IPv4 address",
        ipaddress.IPv4Network: "IPv4 network",
    }[tp]


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, BaseModel):
        return "optional"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return f"`{list(value)}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        if not field.description:
            raise ValueError(f"{model.__name__}.{name} has no description; give its Field a description= (README's config table is generated from it)")
        tp = _unoptional(field.annotation)
        kind = _type_name(tp)
        lo, hi = _bounds(field)
        if lo is not None and hi is not None:
            kind += f" {lo}-{hi}"
        elif lo is not None:
            kind += f", at least {lo}" if typing.get_origin(tp) is tuple else f" ≥ {lo}"
        rows.append(f"| `{key}` | {kind} | {_default(field)} | {_cell(field.description)} |")
        origin = typing.get_origin(tp)
        if _is_model(tp):
            rows += _rows(tp, f"{key}.")
        elif origin is tuple and _is_model(typing.get_args(tp)[0]):
            rows += _rows(typing.get_args(tp)[0], f"{key}[].")
        elif origin is dict and _is_model(typing.get_args(tp)[1]):
            placeholder = "<os>" if typing.get_args(tp)[0] is OsName else "<name>"
            rows += _rows(typing.get_args(tp)[1], f"{key}.{placeholder}.")
    return rows


def config_table() -> str:
    """The markdown table of every key below microcloud:config, in model order."""
    head = ["| key | type | default | description |", "|---|---|---|---|"]
    return "\n".join(head + _rows(StackConfig, "")) + "\n"


def readme_table(text: str) -> str:
    """The text between the markers of a README."""
    if START not in text or END not in text:
        raise ValueError(f"README has no {START} ... {END} block")
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def write_readme(path: Path) -> bool:
    """Replace the table between the markers; True if the file changed."""
    text = path.read_text()
    readme_table(text)  # both markers present
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    new = f"{before}{START}\n{config_table()}{END}{after}"
    if new != text:
        path.write_text(new)
    return new != text


def main(argv: list[str]) -> int:
    if argv[:1] == ["--write"] and len(argv) == 2:
        changed = write_readme(Path(argv[1]))
        print(f"{argv[1]}: {'updated' if changed else 'already up to date'}")
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    sys.stdout.write(config_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
