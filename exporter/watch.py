"""Long-lived streams kept open as a workload keeps them: FetchX509SVID, to count rotations as an
X509Source sees them (here), and the SDS StreamSecrets (exporter/sds_watch.py).

A stream is reopened with capped exponential backoff when it breaks, and proactively when it
reaches its maximum age, so that even these calls carry a deadline. The loop is its own
supervisor: whatever a stream raises is counted, logged and followed by a new stream, so the
thread never ends before stop(). Its lines are written at the agent's pace, so they are bounded.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import grpc

from exporter.answers import MalformedAnswer, x509_svids
from exporter.client import WatchStream, WorkloadClient
from exporter.logs import LogBudget, describe
from exporter.probes.base import classify
from exporter.result import EXPORTER_ERROR
from exporter.store import State
from exporter.store.own import OwnStore

log = logging.getLogger("exporter.watch")
MIN_BACKOFF, MAX_BACKOFF = 0.5, 30.0
JOB = "watch"


class StreamWatch:
    """One stream at a time, reopened for ever; subclasses open it and handle each answer."""

    stream = ""  # its name in the state ("x509", "sds")
    job = ""  # its job name for /healthz and job errors
    what = ""  # how its log lines name it

    def __init__(self, own: OwnStore, max_stream_age: float) -> None:
        self.own = own
        self.max_stream_age = max_stream_age
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stream: WatchStream | None = None
        self._broken = False
        self._log = LogBudget()
        self._thread = threading.Thread(target=self._run, name=f"watch-{self.stream}", daemon=True)

    def _open(self) -> WatchStream:
        raise NotImplementedError

    def _handle(self, answer: Any, first: bool) -> None:
        """One answer (the stream's first, or a push); raises MalformedAnswer for a bad one."""
        raise NotImplementedError

    @property
    def max_quiet(self) -> float:
        """The longest a healthy watch goes without finishing a cycle: one stream's life and a backoff."""
        return self.max_stream_age + 2 * MAX_BACKOFF

    def start(self) -> None:
        self.own.register_job(self.job, self.max_quiet)
        self.own.set_stream_up(self.stream, False)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            if self._stream:
                self._stream.cancel()
        self._thread.join(5)

    def _run(self) -> None:
        backoff = MIN_BACKOFF
        while not self._stop.is_set():
            opened = time.monotonic()
            try:
                got_message, code, message = self._follow()
                self.own.job_done(self.job)
            except Exception as e:  # a bug must not end the watch: count it, then open a new stream
                self.own.job_failed(self.job)
                got_message, code, message = False, EXPORTER_ERROR, describe(e)
            self.own.set_stream_up(self.stream, False)
            if self._stop.is_set():
                return
            if got_message:
                backoff = MIN_BACKOFF
            if code == "DEADLINE_EXCEEDED" and time.monotonic() - opened >= self.max_stream_age * 0.99:
                continue  # aged out on purpose: reopen at once
            if not self._broken:
                self._log.event(log, logging.WARNING, f"{self.what} stream broke", code=code, error=message)
                self._broken = True
            self._stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
            self.own.count_stream_reconnect(self.stream)

    def _answer_handled(self) -> None:
        """A heartbeat, and the watch is up; the first answer after a break restores it."""
        self.own.job_done(self.job)
        self.own.set_stream_up(self.stream, True)
        if self._broken:
            self._log.event(log, logging.INFO, f"{self.what} stream restored")
            self._broken = False

    def _follow(self) -> tuple[bool, str, str]:
        """Follow one stream until it ends: (got a message, code, message)."""
        stream = self._open()
        with self._lock:
            self._stream = stream
        got_message = False
        try:
            for answer in stream:
                try:
                    self._handle(answer, first=not got_message)
                except MalformedAnswer as e:
                    self._log.event(log, logging.WARNING, f"{self.what} got a malformed update", error=str(e))
                if got_message:
                    self.own.count_stream_push(self.stream)
                got_message = True
                # Up once an answer has been handled: one that raises ends the stream instead.
                self._answer_handled()
            return got_message, "OK", "stream ended"
        except grpc.RpcError as e:
            code, message = classify(e)
            return got_message, code, message
        finally:
            with self._lock:
                self._stream = None
            stream.cancel()


class RotationWatch(StreamWatch):
    stream, job, what = "x509", JOB, "rotation watch"

    def __init__(self, client: WorkloadClient, state: State, max_stream_age: float) -> None:
        super().__init__(state.own, max_stream_age)
        self.client = client
        self.identities = state.identities

    def _open(self) -> WatchStream:
        return self.client.watch_x509_svid(self.max_stream_age)

    def _handle(self, answer: Any, first: bool) -> None:
        svids = x509_svids(answer, time.time())
        for spiffe_id in self.identities.record_watch(svids):
            self._log.event(log, logging.INFO, "X.509-SVID rotated", spiffe_id=spiffe_id)
