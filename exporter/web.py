"""The HTTP side: /metrics, /healthz and a status page for people. It only reads probe state.

Connections are capped and every socket has a timeout, so clients that hold connections open
or read slowly can't take threads or file descriptors without bound.
"""

from __future__ import annotations

import html
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from exporter import __version__
from exporter.logs import event
from exporter.store import State
from exporter.webconfig import WebSecurity

log = logging.getLogger("exporter.web")
SOCKET_TIMEOUT = 10.0
# A whole request (or the wait for the next one on a kept-alive connection) must arrive within
# this, however slowly its bytes trickle in; a slow-loris client can't hold a thread longer.
REQUEST_DEADLINE = 10.0
MAX_HEADER_BYTES = 16 * 1024


class _DeadlineReader:
    """The request stream, with one deadline for everything read until the request is parsed."""

    def __init__(self, raw: Any, connection: socket.socket) -> None:
        self._raw = raw
        self._connection = connection
        self.deadline = time.monotonic() + REQUEST_DEADLINE

    def _arm(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request deadline passed")
        self._connection.settimeout(remaining)

    def readline(self, limit: int = -1) -> bytes:
        self._arm()
        return bytes(self._raw.readline(limit))

    def read(self, n: int = -1) -> bytes:
        self._arm()
        return bytes(self._raw.read(n))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class ExporterServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        registry: CollectorRegistry,
        state: State,
        telemetry_path: str = "/metrics",
        max_connections: int = 128,
        security: WebSecurity | None = None,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.registry = registry
        self.state = state
        self.telemetry_path = telemetry_path
        self.security = security
        self._slots = threading.BoundedSemaphore(max_connections)
        self._cache: dict[str, tuple[int, bytes]] = {}
        self._cache_lock = threading.Lock()
        super().__init__(address, Handler)

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """The encoded metrics, rendered again only when the probe state has changed since.

        Probes change state every few seconds while scrapes can come in bursts from several
        Prometheus replicas; rendering once per change keeps every scrape cheap.
        """
        encoder, content_type = choose_encoder(accept)
        version = self.state.version
        with self._cache_lock:
            cached = self._cache.get(content_type)
            if cached is not None and cached[0] == version:
                return cached[1], content_type
        body = encoder(self.registry)
        with self._cache_lock:
            self._cache[content_type] = (version, body)
        return body, content_type

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def process_request(self, request: Any, client_address: Any) -> None:
        # Past the cap, a new connection is closed at once rather than queued behind idle ones.
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def get_request(self) -> tuple[Any, Any]:
        conn, addr = super().get_request()
        conn.settimeout(SOCKET_TIMEOUT)
        if self.security is not None:
            conn = self.security.wrap(conn)
        return conn, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        event(log, logging.DEBUG, "HTTP connection error", client=str(client_address[0]))


class Handler(BaseHTTPRequestHandler):
    server: ExporterServer
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT
    server_version = f"spire-health-exporter/{__version__}"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per scrape would drown the state-change lines

    def setup(self) -> None:
        super().setup()
        self.rfile = _DeadlineReader(self.rfile, self.connection)  # type: ignore[assignment]

    def handle_one_request(self) -> None:
        self.rfile.deadline = time.monotonic() + REQUEST_DEADLINE  # type: ignore[attr-defined]
        super().handle_one_request()

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if sum(len(k) + len(v) for k, v in self.headers.items()) > MAX_HEADER_BYTES:
            self.send_error(431, "Request header fields too large")
            return False
        return True

    def do_GET(self) -> None:
        self._route(head=False)

    def do_HEAD(self) -> None:
        self._route(head=True)

    def _not_allowed(self) -> None:
        self.send_response(405)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def _route(self, head: bool) -> None:
        security = self.server.security
        if security is not None and not security.authorized(self.headers.get("Authorization")):
            self._reply(
                401, b"Unauthorized\n", "text/plain", head, {"WWW-Authenticate": 'Basic realm="exporter"'}
            )
            return
        path = self.path.split("?", 1)[0]
        if path == self.server.telemetry_path:
            self._reply(200, *self.server.exposition(self.headers.get("Accept", "")), head)
        elif path == "/healthz":
            stalled = self.server.state.own.stalled_jobs()
            if stalled:
                # The process answers, but these figures have stopped moving: restart it.
                body = f"stalled: {', '.join(stalled)}\n".encode()
                self._reply(503, body, "text/plain; charset=utf-8", head)
            else:
                self._reply(200, b"ok\n", "text/plain; charset=utf-8", head)
        elif path == "/":
            page = status_page(self.server.state, self.server.telemetry_path)
            self._reply(200, page.encode(), "text/html; charset=utf-8", head)
        else:
            self._reply(404, b"Not found\n", "text/plain; charset=utf-8", head)

    def _reply(
        self, status: int, body: bytes, content_type: str, head: bool, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)


def _ago(ts: float | None) -> str:
    return "never" if ts is None else f"{time.time() - ts:.0f} s ago"


def _bytes(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f} MiB"


def status_page(state: State, telemetry_path: str) -> str:
    agent = state.agent.snapshot()
    now = time.time()
    rows = []
    for rpc, stats in sorted(state.probes.snapshot().items()):
        last = stats.last
        result = "pending" if last is None else last.outcome
        latency = "-" if last is None else f"{last.duration * 1000:.1f} ms"
        detail = "" if last is None or last.ok else last.message
        rows.append(
            f"<tr><td>{rpc}</td><td class={'ok' if last and last.ok else 'bad'}>{html.escape(result)}</td>"
            f"<td>{latency}</td><td>{_ago(stats.last_success)}</td><td>{html.escape(detail)}</td></tr>"
        )
    svids = [
        f"<tr><td>{kind}</td><td>{html.escape(sid)}</td><td>{(s.expiry - now) / 60:.1f} min</td></tr>"
        for (kind, sid), s in sorted(state.identities.snapshot().svids.items())
    ]
    proc, group = agent.process, agent.cgroup
    memory = (
        "agent process not found"
        if proc is None
        else f"pid {proc.pid}: RSS {_bytes(proc.rss)}, peak {_bytes(proc.peak_rss)}"
        + (f"; cgroup {_bytes(group.usage)}" if group else "")
        + ((f" of its {_bytes(group.limit)} limit" if group.limit else " (no memory limit)") if group else "")
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>spire-health-exporter</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.2em .8em;text-align:left}}
.ok{{color:#080}}.bad{{color:#b00;font-weight:bold}}</style></head><body>
<h1>spire-health-exporter {__version__}</h1>
<p><a href="{telemetry_path}">Metrics</a> · <a href="/healthz">healthz</a></p>
<h2>Probes</h2><table>
<tr><th>RPC</th><th>Latest result</th><th>Latency</th><th>Last success</th><th>Error</th></tr>
{"".join(rows)}</table>
<h2>SVIDs</h2><table><tr><th>Kind</th><th>SPIFFE ID</th><th>Time to expiry</th></tr>{"".join(svids)}</table>
<h2>Agent memory</h2><p>{html.escape(memory)}</p>
</body></html>
"""
