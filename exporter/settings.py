"""One definition per setting, as a typed dataclass field: key, type, default, help and flag.

The parser, `--help`, docs/configuration.md and the exporter's part of the chart's values schema
are all derived from these fields, so they cannot drift apart. A value either fits its field's
kind and constraints or is a ConfigError whose message is one line naming the key.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

ENV_PREFIX = "SPIRE_HEALTH_EXPORTER_"
# A positive decimal number of milliseconds, seconds, minutes or hours; the chart's schema uses
# the same expression, so a value the schema accepts is one this parser accepts.
DURATION_PATTERN = r"^([0-9]*[1-9][0-9]*(\.[0-9]+)?|[0-9]+\.[0-9]*[1-9][0-9]*)(ms|s|m|h)$"
_DURATION = re.compile(DURATION_PATTERN)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
DURATION_HINT = "use e.g. 500ms, 15s, 5m"

T = TypeVar("T")


class ConfigError(Exception):
    """A configuration mistake; str() is one line naming the key."""


@dataclass(frozen=True)
class Meta:
    """What the table knows of one setting beyond its name and default."""

    kind: str  # "str", "bool", "int" or "duration"
    help: str  # a sentence
    shown: str  # the default as a person writes it
    flag: str | None = None
    env: tuple[str, ...] = ()  # names read besides the flag's own SPIRE_HEALTH_EXPORTER_ name
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    pattern: str | None = None  # searched in the value, as JSON Schema's `pattern` is
    expect: str = ""  # what `pattern` asks for, for the error message
    forbidden: tuple[str, ...] = ()
    inherit: str | None = None  # durations: unset (0) means the value of this other key
    check: Callable[[str], str | None] | None = None  # a further check: the problem, or None

    @property
    def envs(self) -> tuple[str, ...]:
        own = (ENV_PREFIX + re.sub(r"[.-]", "_", self.flag).upper(),) if self.flag else ()
        return (*self.env, *own)


def _field(default: Any, meta: Meta) -> Any:
    return dataclasses.field(default=default, metadata={"setting": meta})


def text(default: str, help: str, **kw: Any) -> Any:
    return _field(default, Meta("str", help, '""' if default == "" else default, **kw))


def boolean(default: bool, help: str, **kw: Any) -> Any:
    return _field(default, Meta("bool", help, str(default).lower(), **kw))


def integer(default: int, help: str, **kw: Any) -> Any:
    return _field(default, Meta("int", help, str(default), **kw))


def duration(default: str | None, help: str, **kw: Any) -> Any:
    """A duration in seconds; None as default means 'inherit', with `inherit` naming the key."""
    seconds = 0.0 if default is None else parse_duration(default, "default")
    shown = default if default is not None else f"as {kw.get('inherit')}"
    return _field(seconds, Meta("duration", help, shown, **kw))


def audience_setting(default: str, help: str) -> Any:
    """A JWT-SVID audience: text that must not be empty (the agent refuses an empty one)."""
    return text(default, help, pattern=".", expect="an audience: it must not be empty")


def section(cls: type[T]) -> Any:
    """A nested group of settings, itself a dataclass of settings."""
    return dataclasses.field(default_factory=cls, metadata={"section": cls})


@dataclass(frozen=True)
class Setting:
    key: str  # dotted path in the file
    name: str  # the dataclass field
    default: Any
    meta: Meta


def settings_of(cls: type[Any], prefix: str = "") -> Iterator[Setting | tuple[str, type[Any]]]:
    """The settings of a section, in order; nested sections come as (key, class)."""
    for f in dataclasses.fields(cls):
        if "section" in f.metadata:
            yield prefix + f.name, f.metadata["section"]
        elif "setting" in f.metadata:
            yield Setting(prefix + f.name, f.name, f.default, f.metadata["setting"])


def walk(cls: type[Any], prefix: str = "") -> Iterator[Setting]:
    """Every setting below a section, depth first."""
    for item in settings_of(cls, prefix):
        if isinstance(item, Setting):
            yield item
        else:
            yield from walk(item[1], item[0] + ".")


def parse_duration(value: object, key: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: {value!r} is not a duration ({DURATION_HINT})")
    if isinstance(value, int | float):
        if value <= 0:
            raise ConfigError(f"{key}: duration must be positive, got {value!r}")
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        if re.match(r"^-|^[0.]+(ms|s|m|h)$", str(value)):
            raise ConfigError(f"{key}: duration must be positive, got {value!r}")
        raise ConfigError(f"{key}: {value!r} is not a duration ({DURATION_HINT})")
    return float(match.group(1)) * _UNITS[match.group(3)]


def coerce(meta: Meta, value: object, key: str) -> Any:
    """The value as its setting's type, or a ConfigError naming the key."""
    if meta.kind == "duration":
        return parse_duration(value, key)
    if meta.kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{key}: {value!r} is not true or false")
    if meta.kind == "int":
        if isinstance(value, bool | float):
            raise ConfigError(f"{key}: {value!r} is not a whole number")
        try:
            number = int(str(value))
        except ValueError:
            raise ConfigError(f"{key}: {value!r} is not a whole number") from None
        if meta.minimum is not None and number < meta.minimum:
            raise ConfigError(f"{key}: must be at least {meta.minimum}")
        return number
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ConfigError(f"{key}: {value!r} is not a string")
    return _check_text(meta, str(value), key)


def _check_text(meta: Meta, value: str, key: str) -> str:
    if meta.choices and value not in meta.choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(meta.choices)}")
    if meta.pattern is not None and not re.search(meta.pattern, value):
        raise ConfigError(f"{key}: {value!r} is not {meta.expect}")
    if value in meta.forbidden:
        raise ConfigError(f"{key}: {value!r} is not allowed here")
    if meta.check is not None and (problem := meta.check(value)):
        raise ConfigError(f"{key}: {problem}")
    return value


def resolve(cls: type[T], data: object, prefix: str = "") -> T:
    """A section from a mapping of raw values, over the fields' defaults; unknown keys are errors."""
    where = prefix.rstrip(".") or "config"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls) if f.metadata}  # type: ignore[arg-type]
    for key in data:
        if key not in known:
            raise ConfigError(f"{prefix}{key}: unknown key")
    values: dict[str, Any] = {}
    for item in settings_of(cls, prefix):
        if isinstance(item, Setting):
            if item.name in data and data[item.name] is not None:
                values[item.name] = coerce(item.meta, data[item.name], item.key)
        else:
            name = item[0].rsplit(".", 1)[-1]
            values[name] = resolve(item[1], data.get(name), item[0] + ".")
    return cls(**values)


@dataclass(frozen=True)
class ProbeSettings:
    """What every probe has; a probe with settings of its own subclasses this (one place)."""

    enabled: bool = boolean(True, "Whether this probe runs.")
    interval: float = duration(None, "Time between two runs of this probe.", inherit="probes.interval")
    timeout: float = duration(
        None, "Deadline of this probe, for everything it does.", inherit="probes.timeout"
    )


@dataclass(frozen=True)
class AudienceSettings(ProbeSettings):
    """A probe that asks for a JWT-SVID names the audience it asks for."""

    audience: str = audience_setting("spire-health-exporter", "Audience of the JWT-SVID this probe asks for.")
