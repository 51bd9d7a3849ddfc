"""Entry points: ``parse_config`` (pure, for tests and tools) and ``load`` (the Pulumi program's)."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from pydantic import ValidationError

from .checks import cross_check
from .errors import CONFIG_KEY, ConfigError
from .stack import StackConfig


def _format_validation_error(err: ValidationError) -> ConfigError:
    first = err.errors()[0]
    parts: list[str] = []
    for p in first["loc"]:
        if p == "[key]":
            continue
        if isinstance(p, int):
            parts[-1] = f"{parts[-1]}[{p}]" if parts else f"[{p}]"
        else:
            parts.append(str(p))
    key = ".".join(parts) or "(root)"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key; check its spelling against the documented config"
    elif first["type"] == "missing":
        msg = "is required"
    elif first["type"] == "literal_error":
        msg = f"{first.get('input')!r} is not allowed; {msg.lower()}"
    elif "input" in first and first["type"] not in ("value_error",):
        msg = f"{first['input']!r}: {msg}" if not isinstance(first["input"], (dict, list)) else msg
    return ConfigError(key, msg)


def parse_config(raw: Any) -> StackConfig:
    """Parse and validate a stack config dict; raise ConfigError (one line) on any mistake."""
    if not isinstance(raw, dict):
        raise ConfigError("(root)", f"must be a mapping, got {type(raw).__name__}; see Pulumi.dev.yaml")
    try:
        cfg = StackConfig.model_validate(raw)
    except ValidationError as err:
        raise _format_validation_error(err) from None
    cross_check(cfg)
    return cfg


def check_local_files(cfg: StackConfig) -> None:
    """Files on the machine that runs Pulumi which the config names: present, and as pinned."""
    spec = cfg.dns.coredns
    path = spec.local_path()
    if not os.path.isfile(path):
        key = "dns.coredns.path" if spec.path else "dns.coredns"
        raise ConfigError(key, f"no CoreDNS binary at {path}; run bash .ci/coredns.sh or set dns.coredns.path")
    if spec.sha256:
        got = file_sha256(path)
        if got != spec.sha256:
            raise ConfigError("dns.coredns.sha256", f"{path} has sha256 {got}, not the pinned {spec.sha256}")


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load() -> StackConfig:
    """Read ``microcloud:config`` from the stack; config mistakes end the run in one line."""
    import pulumi  # local import keeps parse_config usable without Pulumi

    raw = pulumi.Config("microcloud").get_object("config")
    if raw is None:
        raise pulumi.RunError(f"{CONFIG_KEY}: is not set; copy the shape of Pulumi.dev.yaml into Pulumi.<stack>.yaml")
    try:
        cfg = parse_config(raw)
        check_local_files(cfg)
        return cfg
    except ConfigError as err:
        raise pulumi.RunError(str(err)) from None
