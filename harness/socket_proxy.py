"""A Unix socket relay for transport faults no agent produces on demand: a slow HTTP/2 handshake
(the first bytes from the server held back) and a stall (bytes stop flowing both ways, the
connection stays open, as with an agent that hangs mid-stream).

Every thread it starts ends on stop(); every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time


class SocketProxy:
    def __init__(
        self,
        listen_path: str | os.PathLike[str],
        upstream_path: str | os.PathLike[str],
        handshake_delay: float = 0.0,
    ) -> None:
        self.listen_path = os.fspath(listen_path)
        self.upstream_path = os.fspath(upstream_path)
        self.handshake_delay = handshake_delay
        self.connections = 0
        self._stalled = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.listen_path)
        self._server.listen(16)
        self._server.settimeout(0.2)

    def start(self) -> SocketProxy:
        self._spawn(self._accept)
        return self

    def stall(self) -> None:
        """From now on no byte passes either way; connections stay open."""
        self._stalled.set()

    def resume(self) -> None:
        self._stalled.clear()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            for s in [self._server, *self._sockets]:
                with contextlib.suppress(OSError):
                    s.close()
        for t in self._threads:
            t.join(5)

    def _spawn(self, target: object, *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        with self._lock:
            self._threads.append(t)
        t.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.upstream_path)
            except OSError:
                client.close()
                upstream.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
                self.connections += 1
            self._spawn(self._relay, client, upstream, 0.0)
            self._spawn(self._relay, upstream, client, self.handshake_delay)

    def _relay(self, source: socket.socket, sink: socket.socket, first_delay: float) -> None:
        held_until = time.monotonic() + first_delay
        while not self._stop.is_set():
            if self._stalled.is_set() or time.monotonic() < held_until:
                self._stop.wait(0.05)
                continue
            try:
                ready, _, _ = select.select([source], [], [], 0.2)
                if not ready:
                    continue
                data = source.recv(65536)
                if not data:
                    break
                if self._stalled.is_set():
                    continue  # swallowed: a stalled peer never reads it
                sink.sendall(data)
            except OSError:
                break
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
