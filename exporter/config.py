"""The exporter's configuration: defaults, then a YAML file, then environment variables, then flags.

Each setting is defined once, below, with its type, default, help and flag (see settings.py);
each probe brings its own settings class (probes/). Every mistake is a ConfigError whose
message is one line that names the key.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from exporter.endpoint import ENDPOINT_ENV
from exporter.probes import registered
from exporter.settings import (
    ConfigError,
    ProbeSettings,
    Setting,
    boolean,
    duration,
    integer,
    resolve,
    section,
    text,
    walk,
)
from exporter.sources import env_overrides, flag_overrides, load_file, merge

__all__ = ["Config", "ConfigError", "ProbeSettings", "build", "load", "table"]

# host:port, the host possibly empty or a bracketed IPv6 address, the port at most 65535.
PORT = r"([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
LISTEN_ADDRESS = r"^(\[[0-9a-fA-F:.]*\]|[^:\[\]]*):" + PORT + "$"


def _regex_problem(value: str) -> str | None:
    try:
        re.compile(value)
    except re.error as e:
        return f"not a regular expression ({e})"
    return None


@dataclass(frozen=True)
class WorkloadApi:
    socket: str = text(
        "",
        "The agent's Workload API socket, unix:///path; required.",
        flag="spiffe.endpoint-socket",
        env=(ENDPOINT_ENV,),
        pattern=r"^$|^(unix://|unix:)?/",
        expect="an absolute unix socket path, e.g. unix:///run/spire/agent.sock",
    )


@dataclass(frozen=True)
class Schedule:
    interval: float = duration(
        "15s", "Time between two runs of each probe; one cycle's probes start spread over it.",
        flag="probes.interval",
    )  # fmt: skip
    timeout: float = duration(
        "5s", "Deadline of each probe, for everything it does; at most its interval.", flag="probes.timeout"
    )


@dataclass(frozen=True)
class Watch:
    enabled: bool = boolean(True, "Keep a long-lived FetchX509SVID stream open to count rotations.")
    max_stream_age: float = duration("1h", "The stream's deadline; it is reopened at once when reached.")
    keepalive: float = duration(
        "5m",
        "Time between keepalive pings on an open stream; one unanswered for 20s ends the stream. "
        "The agent (grpc-go) refuses pings more often than every 5m.",
    )


@dataclass(frozen=True)
class Limits:
    max_spiffe_ids: int = integer(10, "SPIFFE IDs exported as label values at most.", minimum=1)
    max_trust_domains: int = integer(32, "Trust domains exported as label values at most.", minimum=1)


@dataclass(frozen=True)
class Process:
    enabled: bool = boolean(True, "Sample the agent process: memory, peak, CPU, threads, FDs.")
    name: str = text("spire-agent", "Process name to look for when nothing else finds the agent.")
    cmdline_pattern: str = text(
        "", "Regular expression that finds the agent by its command line.",
        flag="agent.cmdline-pattern", check=_regex_problem,
    )  # fmt: skip
    pid_file: str = text("", "File that holds the agent's pid.", flag="agent.pid-file")


@dataclass(frozen=True)
class Cgroup:
    enabled: bool = boolean(
        True, "Read the agent's cgroup memory: usage, working set, limit, peak, OOM kills."
    )
    root: str = text("/sys/fs/cgroup", "Where the cgroup filesystem is mounted.")


@dataclass(frozen=True)
class Health:
    url: str = text(
        "", "Base URL of the agent's HTTP health listener, e.g. http://127.0.0.1:9982; empty: not read.",
        flag="agent.health-url", pattern=r"^$|^https?://[^/\s]+", expect="an http(s) URL",
    )  # fmt: skip
    live_path: str = text("/live", "Path of the agent's liveness check.")
    ready_path: str = text("/ready", "Path of the agent's readiness check.")
    timeout: float = duration("2s", "Deadline of each health request.")


@dataclass(frozen=True)
class Agent:
    sample_interval: float = duration("15s", "Time between two samples of the agent process and health.")
    proc_root: str = text("/proc", "The host's /proc, where it is mounted elsewhere.")
    process: Process = section(Process)
    cgroup: Cgroup = section(Cgroup)
    health: Health = section(Health)


@dataclass(frozen=True)
class Web:
    listen_address: str = text(
        ":9989", "Address to serve metrics on, host:port.",
        flag="web.listen-address", pattern=LISTEN_ADDRESS, expect="host:port",
    )  # fmt: skip
    telemetry_path: str = text(
        "/metrics", "Path of the metrics page.", flag="web.telemetry-path",
        pattern="^/.", expect="a path that starts with / and is more than /", forbidden=("/healthz",),
    )  # fmt: skip
    config_file: str = text(
        "", "exporter-toolkit web configuration (TLS, basic auth).", flag="web.config.file"
    )
    max_connections: int = integer(128, "Open connections at most; more are closed at once.", minimum=1)


@dataclass(frozen=True)
class Log:
    level: str = text(
        "info", "Lowest level logged.", flag="log.level", choices=("debug", "info", "warn", "error")
    )
    format: str = text("logfmt", "Log line format.", flag="log.format", choices=("logfmt", "json"))


@dataclass(frozen=True)
class Config:
    workload_api: WorkloadApi = section(WorkloadApi)
    probes: Schedule = section(Schedule)
    watch: Watch = section(Watch)
    limits: Limits = section(Limits)
    agent: Agent = section(Agent)
    web: Web = section(Web)
    log: Log = section(Log)
    # Each registered probe's settings, inherited values filled in (probes.<name> in the file).
    each: Mapping[str, ProbeSettings] = dataclasses.field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return self.workload_api.socket

    def enabled(self) -> list[tuple[str, ProbeSettings]]:
        return [(name, s) for name, s in self.each.items() if s.enabled]


def table() -> Iterator[Setting]:
    """Every setting, in the order of the file; each probe's settings follow probes.timeout."""
    for setting in walk(Config):
        yield setting
        if setting.key == "probes.timeout":
            for spec in registered():
                yield from walk(spec.settings, f"probes.{spec.name}.")


def flag_table() -> dict[str, Setting]:
    return {s.meta.flag: s for s in table() if s.meta.flag}


def build(
    file_data: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, str | None] | None = None,
) -> Config:
    layers = [
        file_data or {},
        env_overrides(os.environ if environ is None else environ, table()),
        flag_overrides(flags or {}, flag_table()),
    ]
    for layer in layers:  # each layer on its own, so a bad value is named even when overridden
        _resolve(layer)
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = merge(merged, layer)
    return _check(_resolve(merged))


def load(
    path: str | None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, str | None] | None = None,
) -> Config:
    return build(load_file(path) if path else {}, environ, flags)


def _resolve(data: Mapping[str, Any]) -> Config:
    if not isinstance(data, Mapping):
        raise ConfigError(f"config: expected a mapping, got {type(data).__name__}")
    probes = data.get("probes") or {}
    if not isinstance(probes, Mapping):
        raise ConfigError(f"probes: expected a mapping, got {type(probes).__name__}")
    names = {spec.name for spec in registered()}
    schedule = {k: v for k, v in probes.items() if k not in names}
    config = resolve(Config, {**data, "probes": schedule})
    each = {}
    for spec in registered():
        own = resolve(spec.settings, probes.get(spec.name), f"probes.{spec.name}.")
        each[spec.name] = dataclasses.replace(
            own,
            interval=own.interval or config.probes.interval,
            timeout=own.timeout or config.probes.timeout,
        )
    for spec in registered():
        if spec.settle is not None:
            each[spec.name] = spec.settle(each[spec.name], each)
    return dataclasses.replace(config, each=each)


def _check(config: Config) -> Config:
    """What no single setting can judge alone."""
    if not config.endpoint:
        raise ConfigError(
            f"workload_api.socket: not set (set it in the file, {ENDPOINT_ENV}, or --spiffe.endpoint-socket)"
        )
    for name, own in config.enabled():
        if own.timeout > own.interval:
            raise ConfigError(
                f"probes.{name}.timeout: {own.timeout:g}s is longer than its interval {own.interval:g}s, "
                "so probes would overlap"
            )
    return config


def split_listen_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)
