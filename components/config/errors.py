"""How a config mistake is reported: one line naming the key."""

from __future__ import annotations

CONFIG_KEY = "microcloud:config"


class ConfigError(Exception):
    """A config mistake: ``key`` is the dotted path below microcloud:config."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{CONFIG_KEY}.{key}: {message}")
        self.key = key
        self.message = message
