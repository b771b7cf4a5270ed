"""Typed YAML: plain data -> frozen dataclasses, strictly, and the one way to change a loaded config.

`build(cls, data, file)` converts parsed YAML (safe_load only) into dataclass `cls`: an unknown key, a
missing key or a wrong type is a `ConfigError` that names the file and the dotted key, and each
dataclass validates its own values. `overlay` lays a partial mapping over a full one (training.yaml's
`cpu` section); `override` replaces dotted keys of a built config (flags, environment arguments).
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Mapping
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file is malformed; the message names the file and the key."""


def read_yaml(file: Path | Traversable) -> Any:
    """One YAML file's data (safe_load only), naming the file in every error."""
    if not file.is_file():
        raise ConfigError(f"{file}: config file not found")
    try:
        return yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from exc


def load_yaml_as(cls: type[T], file: Path | Traversable) -> T:
    """Parse one YAML file into dataclass `cls`, naming the file in every error."""
    return build(cls, read_yaml(file), str(file))


def overlay(base: Mapping[str, Any], changes: Any, where: str) -> dict[str, Any]:
    """`base` with `changes` laid over it, mapping by mapping; a key `base` lacks is an error naming it."""
    if not isinstance(changes, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(changes).__name__}")
    merged = dict(base)
    for key, value in changes.items():
        if key not in base:
            raise ConfigError(f"{where}.{key}: not a key of the file it overrides; valid keys: {sorted(base)}")
        nested = isinstance(base[key], Mapping) and isinstance(value, Mapping)
        merged[key] = overlay(base[key], value, f"{where}.{key}") if nested else value
    return merged


def build(cls: type[T], data: Any, file: str, key: str = "") -> T:
    """Convert plain YAML data into dataclass `cls`, strictly: no unknown, missing or mistyped keys."""
    where = f"{file}: {key or '<top level>'}"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    values = {}
    for name, f in fields.items():
        dotted = f"{key}.{name}" if key else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{file}: {dotted}: missing required key")
            continue
        values[name] = _convert(hints[name], data[name], file, dotted)
    try:
        return cls(**values)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _convert(tp: Any, value: Any, file: str, key: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)

    def wrong(expected: str) -> ConfigError:
        return ConfigError(f"{file}: {key}: expected {expected}, got {type(value).__name__} {value!r}")

    if dataclasses.is_dataclass(tp):
        return build(tp, value, file, key)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, file, key)
    if origin is Literal:
        if value not in args:
            raise wrong(f"one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise wrong("a list")
        return tuple(_convert(args[0], item, file, f"{key}[{i}]") for i, item in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise wrong("a mapping")
        return {str(k): _convert(args[1], v, file, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise wrong("a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise wrong("a string")
        return value
    raise TypeError(f"config schema uses an unsupported type {tp!r} at {key}")


def override(config: T, changes: Mapping[str, Any]) -> T:
    """`config` (a frozen dataclass) with dotted keys replaced and validated again; a None value leaves its
    key as it is (an unset flag or argument). The one way flags and arguments reach a config."""
    nested: dict[str, dict[str, Any]] = {}
    direct: dict[str, Any] = {}
    for key, value in changes.items():
        if value is None:
            continue
        head, _, rest = key.partition(".")
        if not hasattr(config, head):
            raise ConfigError(f"{type(config).__name__} has no key {head!r}")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    for head, inner in nested.items():
        direct[head] = override(getattr(config, head), inner)
    return dataclasses.replace(config, **direct) if direct else config  # type: ignore[type-var]
