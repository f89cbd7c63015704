"""Configuration: defaults, then a YAML file, then environment variables, then flags.

Every mistake is a ConfigError whose message is one line that names the key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from exporter.endpoint import ENDPOINT_ENV, socket_target
from exporter.names import (
    FETCH_JWT_SVID,
    FETCH_JWT_SVID_ROUNDTRIP,
    HEALTH_CHECK,
    PROBES,
    VALIDATE_JWT_SVID,
    WORKLOAD_RPCS,
)

ENV_PREFIX = "SPIRE_HEALTH_EXPORTER_"


class ConfigError(Exception):
    """A configuration mistake; str() is one line naming the key."""


@dataclass(frozen=True)
class Field:
    kind: str  # "str", "bool", "int", "duration"
    default: Any


def _probe(enabled: bool, interval: str | None = None, **extra: Field) -> dict[str, Any]:
    return {
        "enabled": Field("bool", enabled),
        # None: inherit probes.interval / probes.timeout.
        "interval": Field("duration", interval),
        "timeout": Field("duration", None),
        **extra,
    }


SCHEMA: dict[str, Any] = {
    "workload_api": {"socket": Field("str", "")},
    "probes": {
        "interval": Field("duration", "15s"),
        "timeout": Field("duration", "5s"),
        **{name: _probe(True) for name in WORKLOAD_RPCS if name != FETCH_JWT_SVID},
        FETCH_JWT_SVID: _probe(True, audience=Field("str", "spire-health-exporter")),
        HEALTH_CHECK: _probe(True),
        # Longer than half the default 5 min JWT-SVID lifetime, so the agent's cached token is
        # always due for renewal and every call reaches the server.
        FETCH_JWT_SVID_ROUNDTRIP: _probe(
            False, "3m", audience=Field("str", "spire-health-exporter/roundtrip")
        ),
    },
    "watch": {"enabled": Field("bool", True), "max_stream_age": Field("duration", "1h")},
    "limits": {"max_spiffe_ids": Field("int", 10), "max_trust_domains": Field("int", 32)},
    "agent": {
        "sample_interval": Field("duration", "15s"),
        "proc_root": Field("str", "/proc"),
        "process": {
            "enabled": Field("bool", True),
            "name": Field("str", "spire-agent"),
            "cmdline_pattern": Field("str", ""),
            "pid_file": Field("str", ""),
        },
        "cgroup": {"enabled": Field("bool", True), "root": Field("str", "/sys/fs/cgroup")},
        "health": {
            "url": Field("str", ""),
            "live_path": Field("str", "/live"),
            "ready_path": Field("str", "/ready"),
            "timeout": Field("duration", "2s"),
        },
    },
    "web": {
        "listen_address": Field("str", ":9989"),
        "telemetry_path": Field("str", "/metrics"),
        "config_file": Field("str", ""),
        "max_connections": Field("int", 128),
    },
    "log": {"level": Field("str", "info"), "format": Field("str", "logfmt")},
}

# Flag name -> key path. Each flag can also be given as SPIRE_HEALTH_EXPORTER_<FLAG> in the
# environment, with dots and dashes as underscores.
FLAGS: dict[str, tuple[str, ...]] = {
    "spiffe.endpoint-socket": ("workload_api", "socket"),
    "web.listen-address": ("web", "listen_address"),
    "web.telemetry-path": ("web", "telemetry_path"),
    "web.config.file": ("web", "config_file"),
    "log.level": ("log", "level"),
    "log.format": ("log", "format"),
    "probes.interval": ("probes", "interval"),
    "probes.timeout": ("probes", "timeout"),
    "agent.health-url": ("agent", "health", "url"),
    "agent.cmdline-pattern": ("agent", "process", "cmdline_pattern"),
    "agent.pid-file": ("agent", "process", "pid_file"),
}

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object, key: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: {value!r} is not a duration (use e.g. 500ms, 15s, 5m)")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value).strip())
        if not match:
            raise ConfigError(f"{key}: {value!r} is not a duration (use e.g. 500ms, 15s, 5m)")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ConfigError(f"{key}: duration must be positive, got {value!r}")
    return seconds


def _coerce(field: Field, value: object, key: str) -> Any:
    if value is None:
        return None
    if field.kind == "duration":
        return parse_duration(value, key)
    if field.kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{key}: {value!r} is not true or false")
    if field.kind == "int":
        if isinstance(value, bool):
            raise ConfigError(f"{key}: {value!r} is not a whole number")
        try:
            return int(str(value))
        except ValueError:
            raise ConfigError(f"{key}: {value!r} is not a whole number") from None
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ConfigError(f"{key}: {value!r} is not a string")
    return str(value)


def _resolve(schema: Mapping[str, Any], layers: list[Mapping[str, Any]], prefix: str) -> dict[str, Any]:
    """Merge the layers (later wins) over the schema's defaults, rejecting unknown keys."""
    for layer in layers:
        if not isinstance(layer, Mapping):
            raise ConfigError(
                f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(layer).__name__}"
            )
        for key in layer:
            if key not in schema:
                raise ConfigError(f"{prefix}{key}: unknown key")
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        path = prefix + key
        if isinstance(spec, Field):
            value = _coerce(spec, spec.default, path)
            for layer in layers:
                if key in layer:
                    value = _coerce(spec, layer[key], path)
            out[key] = value
        else:
            out[key] = _resolve(spec, [layer.get(key) or {} for layer in layers], path + ".")
    return out


@dataclass(frozen=True)
class ProbeSettings:
    name: str
    enabled: bool
    interval: float
    timeout: float
    audience: str = ""


@dataclass(frozen=True)
class Config:
    tree: dict[str, Any]
    endpoint: str
    probes: dict[str, ProbeSettings]

    def get(self, *path: str) -> Any:
        node: Any = self.tree
        for part in path:
            node = node[part]
        return node


def load_file(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"config file {path}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path}: not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    return data


def _nest(path: tuple[str, ...], value: object) -> dict[str, Any]:
    node: dict[str, Any] = {path[-1]: value}
    for part in reversed(path[:-1]):
        node = {part: node}
    return node


def _merge(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    if environ.get(ENDPOINT_ENV):
        layer = _merge(layer, _nest(("workload_api", "socket"), environ[ENDPOINT_ENV]))
    for flag, path in FLAGS.items():
        name = ENV_PREFIX + re.sub(r"[.-]", "_", flag).upper()
        if environ.get(name):
            layer = _merge(layer, _nest(path, environ[name]))
    return layer


def flag_overrides(flags: Mapping[str, str | None]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for flag, value in flags.items():
        if value is not None:
            layer = _merge(layer, _nest(FLAGS[flag], value))
    return layer


def build(
    file_data: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, str | None] | None = None,
    require_endpoint: bool = True,
) -> Config:
    layers = [
        file_data or {},
        env_overrides(os.environ if environ is None else environ),
        flag_overrides(flags or {}),
    ]
    tree = _resolve(SCHEMA, layers, "")
    return _validate(tree, require_endpoint)


def load(
    path: str | None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, str | None] | None = None,
) -> Config:
    return build(load_file(path) if path else {}, environ, flags)


def _validate(tree: dict[str, Any], require_endpoint: bool) -> Config:
    endpoint = tree["workload_api"]["socket"]
    if endpoint:
        try:
            socket_target(endpoint)
        except ValueError as e:
            raise ConfigError(f"workload_api.socket: {e}") from None
    elif require_endpoint:
        raise ConfigError(
            f"workload_api.socket: not set (set it in the file, {ENDPOINT_ENV}, or --spiffe.endpoint-socket)"
        )
    p = tree["probes"]
    probes = {}
    for name in PROBES:
        own = p[name]
        interval = own["interval"] or p["interval"]
        timeout = own["timeout"] or p["timeout"]
        if own["enabled"] and timeout > interval:
            raise ConfigError(
                f"probes.{name}.timeout: {timeout:g}s is longer than its interval {interval:g}s, "
                "so probes would overlap"
            )
        # ValidateJWTSVID checks the token the fetch_jwt_svid probe's audience gets.
        audience = own.get("audience", p[FETCH_JWT_SVID]["audience"] if name == VALIDATE_JWT_SVID else "")
        probes[name] = ProbeSettings(name, own["enabled"], interval, timeout, audience)
    for name in (FETCH_JWT_SVID, FETCH_JWT_SVID_ROUNDTRIP):
        if not p[name]["audience"]:
            raise ConfigError(f"probes.{name}.audience: must not be empty")
    if p[FETCH_JWT_SVID]["audience"] == p[FETCH_JWT_SVID_ROUNDTRIP]["audience"]:
        raise ConfigError(
            f"probes.{FETCH_JWT_SVID_ROUNDTRIP}.audience: must differ from probes.fetch_jwt_svid.audience, "
            "or the cached probe would keep renewing the round-trip token"
        )
    for key in ("max_spiffe_ids", "max_trust_domains"):
        if tree["limits"][key] < 1:
            raise ConfigError(f"limits.{key}: must be at least 1")
    web = tree["web"]
    try:
        split_listen_address(web["listen_address"])
    except ValueError as e:
        raise ConfigError(f"web.listen_address: {e}") from None
    path = web["telemetry_path"]
    if not path.startswith("/") or path in ("/", "/healthz"):
        raise ConfigError(f"web.telemetry_path: {path!r} must start with / and not be / or /healthz")
    if web["max_connections"] < 1:
        raise ConfigError("web.max_connections: must be at least 1")
    if tree["log"]["level"] not in ("debug", "info", "warn", "error"):
        raise ConfigError(f"log.level: {tree['log']['level']!r} is not one of debug, info, warn, error")
    if tree["log"]["format"] not in ("logfmt", "json"):
        raise ConfigError(f"log.format: {tree['log']['format']!r} is not logfmt or json")
    try:
        re.compile(tree["agent"]["process"]["cmdline_pattern"])
    except re.error as e:
        raise ConfigError(f"agent.process.cmdline_pattern: not a regular expression ({e})") from None
    health_url = tree["agent"]["health"]["url"]
    if health_url and not re.match(r"^https?://[^/\s]+", health_url):
        raise ConfigError(f"agent.health.url: {health_url!r} is not an http(s) URL")
    return Config(tree, endpoint, probes)


def split_listen_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{address!r} is not host:port")
    return host.strip("[]"), int(port)
