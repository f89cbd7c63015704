"""A relay for transport faults no agent or database produces on demand: a slow HTTP/2 handshake
(the first bytes from the server held back), a stall (bytes stop flowing both ways, the
connection stays open, as with an agent that hangs mid-stream or a database that stops
answering), and a delay on every request (each chunk the client sends is held back, as a slow
database or network would hold each query).

It relays Unix sockets or loopback TCP. Given several upstreams it connects each client to the
first that accepts, as a load balancer in front of SPIRE servers does.

Every thread it starts ends on stop(); every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time

Address = str | os.PathLike[str] | tuple[str, int]


def _socket(address: Address) -> socket.socket:
    family = socket.AF_INET if isinstance(address, tuple) else socket.AF_UNIX
    return socket.socket(family, socket.SOCK_STREAM)


def _address(address: Address) -> str | tuple[str, int]:
    return address if isinstance(address, tuple) else os.fspath(address)


class SocketProxy:
    def __init__(
        self,
        listen: Address,
        upstream: Address | list[Address],
        handshake_delay: float = 0.0,
        delay: float = 0.0,
    ) -> None:
        """`listen` is a Unix socket path or a (host, port) on loopback; port 0 picks a free
        one, then in `port`."""
        self.upstreams = [_address(a) for a in (upstream if isinstance(upstream, list) else [upstream])]
        self.handshake_delay = handshake_delay
        self.delay = delay  # seconds each chunk from a client waits; may be changed while running
        self.connections = 0
        self._stalled = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server = _socket(listen)
        if isinstance(listen, tuple):
            self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(_address(listen))
        self.port = self._server.getsockname()[1] if isinstance(listen, tuple) else 0
        self._server.listen(64)
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
            upstream = self._connect()
            if upstream is None:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
                self.connections += 1
            self._spawn(self._relay, client, upstream, 0.0, True)
            self._spawn(self._relay, upstream, client, self.handshake_delay, False)

    def _connect(self) -> socket.socket | None:
        for address in self.upstreams:
            upstream = _socket(address)
            upstream.settimeout(2)
            try:
                upstream.connect(address)
            except OSError:
                upstream.close()
                continue
            upstream.settimeout(None)
            return upstream
        return None

    def _relay(self, source: socket.socket, sink: socket.socket, first_delay: float, request: bool) -> None:
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
                if request and self.delay:
                    self._stop.wait(self.delay)
                if self._stalled.is_set():
                    continue  # swallowed: a stalled peer never reads it
                sink.sendall(data)
            except OSError:
                break
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
