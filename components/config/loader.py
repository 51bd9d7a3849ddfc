"""Entry points: ``parse_config`` (pure, for tests and tools) and ``load`` (the Pulumi program's)."""

from __future__ import annotations

import typing
from inspect import isclass
from typing import Any, Iterable, NoReturn, Optional

from pydantic import BaseModel, ValidationError

from .checks import cross_check
from .errors import CONFIG_KEY, ConfigError, StackKeyError, closest, node_labels, unknown_key_message
from .stack import StackConfig

PROJECT = CONFIG_KEY.split(":", 1)[0]
# The Python language host's exit code for "the program has already shown the
# user why it stopped" (PYTHON_PROCESS_EXITED_AFTER_SHOWING_USER_ACTIONABLE_MESSAGE_CODE
# in pulumi-language-python-exec). The engine then ends the run as failed
# without adding "an unhandled error occurred: Program exited with non-zero exit code".
SHOWN_TO_USER_EXIT = 32


def _model_at(loc: Iterable[Any]) -> Optional[type[BaseModel]]:
    """The model class that validates the value at ``loc`` (a pydantic error location), if it is a model."""
    tp: Any = StackConfig
    for part in loc:
        tp = _unoptional(tp)
        if isclass(tp) and issubclass(tp, BaseModel) and isinstance(part, str):
            field = tp.model_fields.get(part)
            if field is None:
                return None
            tp = field.annotation
        elif typing.get_origin(tp) is tuple and isinstance(part, int):
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        else:
            return None
    tp = _unoptional(tp)
    return tp if isclass(tp) and issubclass(tp, BaseModel) else None


def _unoptional(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is typing.Union and len(args) == 1:
        return args[0]
    return tp


def _key_of(loc: tuple, raw: Any) -> str:
    """The dotted key of a pydantic error location, nodes named as ``node_labels`` names them."""
    loc = tuple(p for p in loc if p != "[key]")
    parts: list[str] = []
    for i, p in enumerate(loc):
        if isinstance(p, int):
            if i == 1 and loc[0] == "nodes" and isinstance(raw.get("nodes"), list) and p < len(raw["nodes"]):
                parts[-1] = node_labels(raw["nodes"])[p]
            else:
                parts[-1] = f"{parts[-1]}[{p}]" if parts else f"[{p}]"
        else:
            parts.append(str(p))
    return ".".join(parts) or "(root)"


def _format_validation_error(err: ValidationError, raw: dict) -> ConfigError:
    first = err.errors()[0]
    loc = tuple(first["loc"])
    key = _key_of(loc, raw)
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        model = _model_at(loc[:-1])
        valid = list(model.model_fields) if model is not None else []
        msg = unknown_key_message(str(loc[-1]), valid) if valid else "unknown key; check its spelling against the documented config"
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
        raise _format_validation_error(err, raw) from None
    cross_check(cfg)
    return cfg


def check_stack_keys(keys: Iterable[str], secret_keys: Iterable[str] = ()) -> None:
    """The stack's own config keys: ``microcloud:config`` is there, and no other key of this project but secrets.

    A project key set with ``--secret`` (in ``secret_keys``) is a secret value the config names
    (``check_secret_keys`` checks that one names it); any other is a mistake.

    A key in this project's namespace is a typo of microcloud:config (the
    project has no other); a missing microcloud:config with a look-alike key
    in another namespace (``microclud:config``) is one too.
    """
    keys = sorted(keys)
    secret = set(secret_keys)
    for key in keys:
        if key.startswith(f"{PROJECT}:") and key != CONFIG_KEY and key not in secret:
            if closest(key, [CONFIG_KEY], cutoff=0.8):
                raise StackKeyError(key, f"is not a key of this project; did you mean {CONFIG_KEY}?")
            raise StackKeyError(key, f"is not a key of this project; its only key is {CONFIG_KEY}, the whole stack goes below it")
    if CONFIG_KEY not in keys:
        guess = closest(CONFIG_KEY, [k for k in keys if not k.startswith("pulumi:")], cutoff=0.8)
        if guess is not None:
            raise StackKeyError(guess, f"is not a key of this project; did you mean {CONFIG_KEY}?")
        raise StackKeyError(CONFIG_KEY, "is not set; copy the shape of Pulumi.dev.yaml into Pulumi.<stack>.yaml")


def check_secret_keys(cfg: StackConfig, keys: Iterable[str], secret_keys: Iterable[str]) -> None:
    """Each secret the config names by key (``password_key``) is set, and set as a secret; each secret key set is named."""
    keys, secret = set(keys), set(secret_keys)
    named = cfg.secret_keys()
    for name, where in sorted(named.items()):
        key = f"{PROJECT}:{name}"
        if key not in keys:
            raise StackKeyError(key, f"is not set; {where} names it: pulumi config set --secret {name} <value>")
        if key not in secret:
            raise StackKeyError(key, f"is set in clear; {where} needs it as a secret: pulumi config set --secret {name} <value>")
    for key in sorted(k for k in secret if k.startswith(f"{PROJECT}:") and k != CONFIG_KEY):
        if key.split(":", 1)[1] not in named:
            raise StackKeyError(key, "is a secret no setting names (k3s.registries.configs.<host>.auth.password_key); "
                                     f"remove it with pulumi config rm {key.split(':', 1)[1]}, or name it")


def secret_value(name: str):
    """The secret config value ``name`` (a key ``check_secret_keys`` admitted), as a secret Output."""
    import pulumi

    return pulumi.Config(PROJECT).require_secret(name)


def check_local_files(cfg: StackConfig) -> None:
    """Files on the machine that runs Pulumi which the config names: present (a release url fetched), and as pinned."""
    cfg.dns.coredns.ensure("dns.coredns")
    cfg.monitoring.node_exporter.ensure("monitoring.node_exporter")
    if cfg.k3s.enabled:
        for what in ("binary", "images"):
            art = getattr(cfg.k3s, what)
            if art is None or art.path is None:
                continue
            path = art.local_path()
            art.check_file(f"k3s.{what}", path, f"no file at {path} on this machine")


def _secret_keys() -> set[str]:
    """The running stack's config keys that hold secrets: the engine names them in PULUMI_CONFIG_SECRET_KEYS; mocks set them directly."""
    import pulumi.runtime.config as rc

    return set(rc._SECRET_KEYS.get()) | set(rc.get_config_secret_keys_env())


def _stack_keys() -> set[str]:
    """Every config key of the running stack: the engine passes them in PULUMI_CONFIG; mocks set them directly."""
    import pulumi.runtime

    return set(pulumi.runtime.config.CONFIG.get()) | set(pulumi.runtime.get_config_env())


def _stop(line: str) -> NoReturn:
    """End the program with ``line`` as its only error.

    Under the language host the line goes to the engine as one error
    diagnostic, sent once the stack resource is registered (so the display
    shows it under the stack's row, not before it), then the process exits
    with SHOWN_TO_USER_EXIT. Raising pulumi.RunError instead makes the host
    exit 1, and the engine adds "an unhandled error occurred". Under mocks
    (in-process tests) there is no language host: raise RunError, which the
    test runner records.
    """
    import pulumi
    from pulumi.runtime.mocks import MockEngine

    engine = pulumi.runtime.settings.get_engine()
    if engine is None or isinstance(engine, MockEngine):
        raise pulumi.RunError(line)
    stack = pulumi.runtime.get_root_resource()
    if stack is not None:
        # An apply's task is awaited before the process exits, even when the program raised.
        stack.urn.apply(lambda _: pulumi.log.error(line))
    else:
        pulumi.log.error(line)
    raise SystemExit(SHOWN_TO_USER_EXIT)


def fail(line: str) -> NoReturn:
    """End the run with ``line`` as its one error (as a config mistake does); for input errors found past the config."""
    _stop(line)


def load() -> StackConfig:
    """Read ``microcloud:config`` from the stack; config mistakes end the run in one line."""
    import pulumi  # local import keeps parse_config usable without Pulumi

    try:
        keys, secret = _stack_keys(), _secret_keys()
        if CONFIG_KEY not in keys:
            check_stack_keys(keys, secret)
        cfg = parse_config(pulumi.Config(PROJECT).get_object("config"))
        # A key the config names is judged by check_secret_keys ("set in clear"), not as a typo.
        check_stack_keys(keys, secret | {f"{PROJECT}:{k}" for k in cfg.secret_keys()})
        check_secret_keys(cfg, keys, secret)
        check_local_files(cfg)
        return cfg
    except ConfigError as err:
        _stop(str(err))
