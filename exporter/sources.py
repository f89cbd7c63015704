"""Where settings come from besides their defaults: the YAML file, the environment, the flags.
Each source becomes a layer of the same shape as the file; config.py merges and judges them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from exporter.settings import ConfigError, Setting


def load_file(path: str) -> dict[str, Any]:
    try:
        text_ = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"config file {path}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text_)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path}: not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    return data


def _nest(key: str, value: object) -> dict[str, Any]:
    node: dict[str, Any] = {}
    *parents, leaf = key.split(".")
    cursor = node
    for part in parents:
        cursor = cursor.setdefault(part, {})
    cursor[leaf] = value
    return node


def merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def env_overrides(environ: Mapping[str, str], settings: Iterable[Setting]) -> dict[str, Any]:
    """The settings given in the environment, as a layer like the file's."""
    layer: dict[str, Any] = {}
    for setting in settings:
        for name in setting.meta.envs:  # later names win
            if environ.get(name):
                layer = merge(layer, _nest(setting.key, environ[name]))
    return layer


def flag_overrides(given: Mapping[str, str | None], known: Mapping[str, Setting]) -> dict[str, Any]:
    """The flags given, as a layer like the file's."""
    layer: dict[str, Any] = {}
    for flag, value in given.items():
        if value is not None:
            layer = merge(layer, _nest(known[flag].key, value))
    return layer
