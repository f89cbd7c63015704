"""The agent's HTTP health check: a 200 in time is healthy; anything else, including an answer
that trickles in past the deadline, is not; and no proxy from the environment is used."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from exporter.agent.health import check


class _Agent(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 200 if self.path == "/live" else 500
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def agent() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Agent)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_200_is_healthy_and_500_is_not(agent, monkeypatch) -> None:
    # A proxy that does not exist: the check must not go through it.
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    assert check(agent + "/live", 2.0)
    assert not check(agent + "/ready", 2.0)


def test_nothing_listening_or_a_bad_url_is_unhealthy() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert not check(f"http://127.0.0.1:{port}/live", 1.0)
    assert not check("http://127.0.0.1:notaport/live", 1.0)


def test_an_answer_that_trickles_in_is_cut_at_the_deadline() -> None:
    """One byte every 0.2 s never trips a per-read timeout; the deadline covers the whole exchange."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(1024)
            for byte in b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 100:
                if stop.wait(0.2):
                    return
                conn.sendall(bytes([byte]))

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    start = time.monotonic()
    try:
        assert not check(f"http://127.0.0.1:{listener.getsockname()[1]}/live", 1.0)
        assert time.monotonic() - start < 1.5
    finally:
        stop.set()
        thread.join(5)
        listener.close()
