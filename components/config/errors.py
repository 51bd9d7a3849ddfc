"""How a config mistake is reported: one line naming the key, the way a user would find it in Pulumi.<stack>.yaml."""

from __future__ import annotations

import difflib
from collections import Counter
from typing import Any, Iterable, Optional, Sequence

from .base import HOSTNAME

CONFIG_KEY = "microcloud:config"


class ConfigError(Exception):
    """A config mistake: ``key`` is the dotted path below microcloud:config."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{CONFIG_KEY}.{key}: {message}")
        self.key = key
        self.message = message


class StackKeyError(ConfigError):
    """A mistake in the stack's own keys (``config:`` of Pulumi.<stack>.yaml): ``key`` is the whole Pulumi key."""

    def __init__(self, key: str, message: str):
        Exception.__init__(self, f"{key} {message}")
        self.key = key
        self.message = message


def closest(word: str, choices: Iterable[str], cutoff: float = 0.6) -> Optional[str]:
    """The choice ``word`` was most likely meant to be (difflib), or None."""
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return found[0] if found else None


def unknown_key_message(key: str, valid: Sequence[str]) -> str:
    guess = closest(key, valid)
    if guess is not None:
        return f"unknown key; did you mean {guess}?"
    return f"unknown key; valid keys here: {', '.join(valid)}"


def _name_of(node: Any) -> Any:
    return node.get("name") if isinstance(node, dict) else getattr(node, "name", None)


def node_labels(nodes: Sequence[Any]) -> list[str]:
    """How errors name each node (raw dicts or NodeConfigs): ``nodes[worker1]``.

    By its name when that is a valid hostname used by no other node and not a
    number (``nodes[3]`` must stay an index); by its position otherwise.
    """
    names = [_name_of(n) for n in nodes]
    counts = Counter(n for n in names if isinstance(n, str))
    labels = []
    for i, name in enumerate(names):
        named = isinstance(name, str) and HOSTNAME.match(name) and not name.isdigit() and counts[name] == 1
        labels.append(f"nodes[{name}]" if named else f"nodes[{i}]")
    return labels
