"""The metrics endpoint's TLS, client certificates and basic auth, and hostile HTTP clients."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import pytest
from conftest import cli, state_registry
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from exporter import web, webconfig
from exporter.config import ConfigError
from exporter.store import State


def _cert(subject: str, issuer_key, issuer_name: str | None, key, ca: bool, ip: str | None = None):
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name or subject)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), False
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test-ca", ca_key, None, ca_key, True)
    files = {"ca": ca}
    for name, ip in (("server", "127.0.0.1"), ("client", None)):
        key = ec.generate_private_key(ec.SECP256R1())
        files[name] = _cert(name, ca_key, "test-ca", key, False, ip)
        (d / f"{name}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    for name, cert in files.items():
        (d / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return {n: d / n for n in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")} | {"dir": d}


def serve(security: webconfig.WebSecurity | None, max_connections: int = 128):
    state = State()
    state.probes.register("fetch_x509_svid")
    registry = state_registry(state)
    server = web.ExporterServer(("127.0.0.1", 0), registry, state, "/metrics", max_connections, security)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, server.server_address[1]


def web_config(tmp_path: Path, text: str) -> webconfig.WebSecurity:
    path = tmp_path / "web.yml"
    path.write_text(text)
    return webconfig.load(str(path))


def get(url: str, context: ssl.SSLContext | None = None, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        request.add_header(
            "Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        )
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def client_context(pki, with_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki["ca.crt"]))
    if with_cert:
        context.load_cert_chain(str(pki["client.crt"]), str(pki["client.key"]))
    return context


def test_tls_serves_https_and_refuses_plain_http(pki, tmp_path) -> None:
    security = web_config(
        tmp_path, f"tls_server_config:\n  cert_file: {pki['server.crt']}\n  key_file: {pki['server.key']}\n"
    )
    server, port = serve(security)
    try:
        assert get(f"https://127.0.0.1:{port}/metrics", client_context(pki, False)) == 200
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert get(f"https://127.0.0.1:{port}/metrics", client_context(pki, False)) == 200  # still up
    finally:
        server.shutdown()
        server.server_close()


def test_client_certificate_required(pki, tmp_path) -> None:
    security = web_config(
        tmp_path,
        f"tls_server_config:\n  cert_file: {pki['server.crt']}\n  key_file: {pki['server.key']}\n"
        "  client_auth_type: RequireAndVerifyClientCert\n"
        f"  client_ca_file: {pki['ca.crt']}\n  min_version: TLS12\n",
    )
    server, port = serve(security)
    try:
        assert get(f"https://127.0.0.1:{port}/metrics", client_context(pki, True)) == 200
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            get(f"https://127.0.0.1:{port}/metrics", client_context(pki, False))
    finally:
        server.shutdown()
        server.server_close()


def test_basic_auth_with_bcrypt_hashes(pki, tmp_path) -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    go_style = "$2y$" + hashed[4:]  # what htpasswd and Go's bcrypt write
    security = web_config(
        tmp_path,
        f"tls_server_config:\n  cert_file: {pki['server.crt']}\n  key_file: {pki['server.key']}\n"
        f"basic_auth_users:\n  prometheus: '{go_style}'\n",
    )
    server, port = serve(security)
    url, context = f"https://127.0.0.1:{port}/metrics", client_context(pki, False)
    try:
        assert get(url, context) == 401
        assert get(url, context, ("prometheus", "wrong")) == 401
        assert get(url, context, ("someone", "s3cret")) == 401
        assert get(url, context, ("prometheus", "s3cret")) == 200
        assert get(url, context, ("prometheus", "s3cret")) == 200  # from the verified cache
        assert get(url, context, ("prometheus", "s3cret!")) == 401
        assert get(f"https://127.0.0.1:{port}/healthz", context) == 401
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "tls_server_config: {cert_file: /nope.crt, key_file: /nope.key}\n",
            "cert_file: /nope.crt does not exist",
        ),
        ("basic_auth_users: {a: plaintext}\n", "basic_auth_users.a: not a bcrypt hash"),
        ("basic_auth_user: {}\n", "basic_auth_user: unknown key"),
        ("tls_server_config: {certfile: x}\n", "tls_server_config.certfile: unknown key"),
    ],
)
def test_bad_web_config_is_a_config_error(tmp_path, text, error) -> None:
    with pytest.raises(ConfigError) as raised:
        web_config(tmp_path, text)
    assert error in str(raised.value)


def test_bad_web_config_exits_2_at_startup(pki, tmp_path) -> None:
    path = tmp_path / "web.yml"
    path.write_text(
        f"tls_server_config:\n  cert_file: {pki['server.crt']}\n  key_file: {pki['server.key']}\n"
        "  client_auth_type: RequireAnyClientCert\n"
    )
    command = [sys.executable, "-m", "exporter", "--spiffe.endpoint-socket", "/tmp/x.sock"]
    done = subprocess.run(
        [*command, "--web.config.file", str(path)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert "client_auth_type: 'RequireAnyClientCert'" in done.stderr


def _scrape_ms(port: int) -> float:
    start = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
        r.read()
    return (time.monotonic() - start) * 1000


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        return s.recv(200)


def test_hostile_clients_do_not_stop_other_scrapers() -> None:
    server, port = serve(None)
    idle, slow = [], []
    try:
        for _ in range(60):  # connections opened and left silent
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        for _ in range(10):  # slow loris: a header byte now and then
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            slow.append(s)
        for _ in range(5):  # slow readers: ask and never read
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 20)
            slow.append(s)
        assert _raw(port, b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 501")
        assert _raw(port, b"DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 405")
        huge = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
        assert _raw(port, huge).startswith(b"HTTP/1.1 431")
        many = b"GET /metrics HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(150)) + b"\r\n"
        assert _raw(port, many).startswith(b"HTTP/1.1 431")
        # Not even a request line: answered as HTTP/0.9 would be, with a bare 400 page.
        assert b"Error code: 400" in _raw(port, b"\x16\x03\x01garbage\r\n\r\n")
        times = [_scrape_ms(port) for _ in range(20)]
        assert max(times) < 1000, times
    finally:
        for s in idle + slow:
            s.close()
        server.shutdown()
        server.server_close()


def test_connections_past_the_cap_are_closed_and_the_server_recovers(monkeypatch) -> None:
    # Long enough that no admitted client's deadline frees a slot while the flood is counted.
    monkeypatch.setattr(web, "REQUEST_DEADLINE", 3.0)
    server, port = serve(None, max_connections=8)
    # Counted from here: threads left finishing by earlier tests belong to other servers.
    threads_before = threading.active_count()
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(20)]
    try:
        time.sleep(0.5)
        assert threading.active_count() - threads_before <= 8  # one per admitted connection, not per socket
        closed = 0
        for s in held:
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                closed += s.recv(1) == b""
        assert closed == 20 - 8
        time.sleep(3.0)  # the request deadline frees the slots the silent clients held
        assert _scrape_ms(port) < 1000
    finally:
        for s in held:
            s.close()
        server.shutdown()
        server.server_close()


def test_password_over_72_bytes_is_a_401_not_a_dropped_connection(tmp_path) -> None:
    import base64
    import urllib.error
    import urllib.request

    import bcrypt

    from exporter import webconfig
    from exporter.web import ExporterServer

    hashed = bcrypt.hashpw(b"right", bcrypt.gensalt(4)).decode()
    (tmp_path / "web.yml").write_text(f"basic_auth_users:\n  prom: '{hashed}'\n")
    from prometheus_client import CollectorRegistry

    server = ExporterServer(
        ("127.0.0.1", 0), CollectorRegistry(), State(), security=webconfig.load(str(tmp_path / "web.yml"))
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        auth = base64.b64encode(b"prom:" + b"x" * 100).decode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.server_address[1]}/metrics", headers={"Authorization": f"Basic {auth}"}
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=5)
        assert err.value.code == 401
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("bad", ["$2b$10$short", "$2y$04$" + "!" * 53, "$2a$99$" + "a" * 53])
def test_broken_bcrypt_hash_is_a_config_error_naming_the_user(tmp_path, bad) -> None:
    (tmp_path / "web.yml").write_text(f"basic_auth_users:\n  alice: '{bad}'\n")
    with pytest.raises(ConfigError, match=r"basic_auth_users\.alice"):
        webconfig.load(str(tmp_path / "web.yml"))


def test_check_config_loads_the_web_config_and_rejects_a_broken_hash(tmp_path) -> None:
    (tmp_path / "web.yml").write_text("basic_auth_users:\n  alice: '$2b$10$short'\n")
    (tmp_path / "exporter.yml").write_text(
        f"workload_api: {{socket: unix:///tmp/x.sock}}\nweb: {{config_file: {tmp_path / 'web.yml'}}}\n"
    )
    done = cli("check-config", str(tmp_path / "exporter.yml"), env={})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "basic_auth_users.alice" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
