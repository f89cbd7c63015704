"""Structured logs in logfmt or JSON: an event name plus key=value fields."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}


def event(logger: logging.Logger, level: int, name: str, **fields: Any) -> None:
    logger.log(level, name, extra={"fields": fields})


class LogBudget:
    """Bounds the lines of events whose rate the agent sets (a rotation storm re-sends SVIDs many
    times a second): per event name, `burst` lines at once, then one every `every` seconds. The
    next line written says how many were left out (`suppressed=N`); the counters tell the rate.
    """

    def __init__(
        self, burst: int = 10, every: float = 6.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst, self.every, self._clock = burst, every, clock
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[float, float]] = {}  # name -> (tokens, when counted)
        self._suppressed: dict[str, int] = {}

    def event(self, logger: logging.Logger, level: int, name: str, **fields: Any) -> None:
        if not logger.isEnabledFor(level):
            return
        with self._lock:
            now = self._clock()
            tokens, then = self._tokens.get(name, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) / self.every)
            if tokens < 1:
                self._tokens[name] = (tokens, now)
                self._suppressed[name] = self._suppressed.get(name, 0) + 1
                return
            self._tokens[name] = (tokens - 1, now)
            suppressed = self._suppressed.pop(name, 0)
        if suppressed:
            fields["suppressed"] = suppressed
        event(logger, level, name, **fields)


def describe(error: BaseException) -> str:
    """An exception's type and where it was raised; never its text, which could quote an answer."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(error).__name__}{where}"


def _logfmt_value(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in ' ="\\\n'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class Formatter(logging.Formatter):
    def __init__(self, fmt: str) -> None:
        super().__init__()
        self.json = fmt == "json"

    def format(self, record: logging.LogRecord) -> str:
        items: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": logging.getLevelName(record.levelno).lower().replace("warning", "warn"),
            "logger": record.name,
            "msg": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            items["exc"] = self.formatException(record.exc_info).splitlines()[-1]
        if self.json:
            return json.dumps(items, default=str)
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in items.items())


def setup(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
