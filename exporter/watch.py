"""A long-lived FetchX509SVID stream that counts rotations, as a workload's X509Source would see them.

The stream is reopened with capped exponential backoff when it breaks, and proactively when it
reaches its maximum age, so that even this call carries a deadline. The loop is its own
supervisor: whatever a stream raises is counted, logged and followed by a new stream, so the
thread never ends before stop().
"""

from __future__ import annotations

import logging
import threading
import time

import grpc

from exporter.answers import MalformedAnswer, x509_svids
from exporter.client import WatchStream, WorkloadClient
from exporter.logs import LogBudget, describe
from exporter.probes.base import classify
from exporter.result import EXPORTER_ERROR
from exporter.store import State

log = logging.getLogger("exporter.watch")
MIN_BACKOFF, MAX_BACKOFF = 0.5, 30.0
JOB = "watch"


class RotationWatch:
    def __init__(self, client: WorkloadClient, state: State, max_stream_age: float) -> None:
        self.client = client
        self.own = state.own
        self.identities = state.identities
        self.max_stream_age = max_stream_age
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stream: WatchStream | None = None
        self._broken = False
        # Every line here is written at the agent's pace, not ours.
        self._log = LogBudget()
        self._thread = threading.Thread(target=self._run, name="watch-x509", daemon=True)

    @property
    def max_quiet(self) -> float:
        """The longest a healthy watch goes without finishing a cycle: one stream's life and a backoff."""
        return self.max_stream_age + 2 * MAX_BACKOFF

    def start(self) -> None:
        self.own.register_job(JOB, self.max_quiet)
        self.own.set_watch_up(False)
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
                self.own.job_done(JOB)
            except Exception as e:  # a bug must not end the watch: count it, then open a new stream
                self.own.job_failed(JOB)
                got_message, code, message = False, EXPORTER_ERROR, describe(e)
            self.own.set_watch_up(False)
            if self._stop.is_set():
                return
            if got_message:
                backoff = MIN_BACKOFF
            if code == "DEADLINE_EXCEEDED" and time.monotonic() - opened >= self.max_stream_age * 0.99:
                continue  # aged out on purpose: reopen at once
            if not self._broken:
                self._log.event(log, logging.WARNING, "rotation watch stream broke", code=code, error=message)
                self._broken = True
            self._stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
            self.own.count_watch_reconnect()

    def _answer_handled(self) -> None:
        """A heartbeat, and the watch is up; the first answer after a break restores it."""
        self.own.job_done(JOB)
        self.own.set_watch_up(True)
        if self._broken:
            self._log.event(log, logging.INFO, "rotation watch stream restored")
            self._broken = False

    def _follow(self) -> tuple[bool, str, str]:
        """Follow one stream until it ends: (got a message, code, message)."""
        stream = self.client.watch_x509_svid(self.max_stream_age)
        with self._lock:
            self._stream = stream
        got_message = False
        try:
            for answer in stream:
                got_message = True
                try:
                    svids = x509_svids(answer, time.time())
                except MalformedAnswer as e:
                    self._log.event(
                        log, logging.WARNING, "rotation watch got a malformed update", error=str(e)
                    )
                else:
                    for spiffe_id in self.identities.record_watch(svids):
                        self._log.event(log, logging.INFO, "X.509-SVID rotated", spiffe_id=spiffe_id)
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
