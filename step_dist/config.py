"""Typed configs: dataclasses loaded from YAML plus ``key.sub=value`` overrides, strict about unknown keys.

Each component owns its dataclass next to its code; this module only knows how to fill a dataclass tree
from a mapping, apply overrides, and write the resolved config out next to a run's outputs.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

import yaml

C = TypeVar("C")


class ConfigError(ValueError):
    """A config key is unknown, has the wrong type, or the combination is impossible."""


class _NoAliasLoader(yaml.SafeLoader):
    """safe_load without anchors/aliases: a recipe has no use for them, and nested aliases expand
    exponentially (a 400-byte "billion laughs" YAML takes minutes and gigabytes to turn into dicts)."""

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ConfigError(f"YAML aliases (*{event.anchor}) are not accepted in recipes (line "
                              f"{event.start_mark.line + 1}); write the values out")
        return super().compose_node(parent, index)


def safe_yaml(text: str | bytes) -> Any:
    """yaml.safe_load without aliases: the one YAML parser for recipes and --set values."""
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass


def from_dict(cls: type[C], data: dict[str, Any] | None, where: str = "") -> C:
    """Build dataclass ``cls`` from a mapping; unknown keys fail naming the full key path."""
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"config section '{where.rstrip('.') or '<root>'}' must be a mapping of keys, got "
                          f"{type(data).__name__} {str(data)[:60]!r}")
    data = dict(data or {})
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        full = ", ".join(f"{where}{k}" for k in unknown)
        raise ConfigError(f"unknown config key(s): {full}. Known keys under '{where or '<root>'}': {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _coerce(hints[f.name], data[f.name], f"{where}{f.name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid config at '{where or '<root>'}': {e}") from e


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = get_origin(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        last: Exception | None = None
        for a in args:
            try:
                return _coerce(a, value, key)
            except ConfigError as e:
                last = e
        raise last or ConfigError(f"{key}: cannot interpret {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where=key + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = get_args(tp)[:1] or (Any,)
        items = [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        _, vt = get_args(tp) or (Any, Any)
        return {k: _coerce(vt, v, f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            out = tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}") from None
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return out
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings (values parsed as YAML scalars) to a nested mapping."""
    data = dict(data)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = safe_yaml(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({str(e).splitlines()[0]}); quote it "
                              "or fix the brackets") from None
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = {}
            elif not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: '{p}' is not a section")
            node[p] = dict(nxt)
            node = node[p]
        node[parts[-1]] = value
    return data


def load_yaml(uri: str) -> dict[str, Any]:
    from step_dist import storage

    try:
        raw = storage.read_bytes(uri)
    except FileNotFoundError:
        raise ConfigError(f"config file {uri} not found") from None
    try:
        data = safe_yaml(raw) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {uri} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {uri} must hold a mapping at the top level")
    return data


def load(cls: type[C], path: str | None, overrides: list[str] | None = None) -> C:
    data = load_yaml(path) if path else {}
    return from_dict(cls, apply_overrides(data, overrides or []))


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
