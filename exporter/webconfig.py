"""TLS, client certificates and basic auth for the metrics endpoint, configured the way
Prometheus' exporter-toolkit does it (`--web.config.file`), so operators reuse what they know:

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: ca.crt
      min_version: TLS12
    basic_auth_users:
      prometheus: $2y$10$...      # bcrypt hash

Unknown keys and unreadable files are configuration errors (exit code 2).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from exporter.config import ConfigError

# exporter-toolkit's RequestClientCert and RequireAnyClientCert accept unverified client
# certificates, which Python's TLS cannot; they are refused rather than silently tightened.
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version"}
TOP_KEYS = {"tls_server_config", "basic_auth_users"}


class WebSecurity:
    """What the HTTP server asks: wrap a new connection, and is this request authorized."""

    def __init__(self, tls: ssl.SSLContext | None, users: dict[str, bytes]) -> None:
        self.tls = tls
        self.users = users
        # bcrypt is deliberately slow; remember digests of credentials that already passed.
        self._verified: set[bytes] = set()
        self._lock = threading.Lock()

    def wrap(self, conn: socket.socket) -> socket.socket:
        if self.tls is None:
            return conn
        # The handshake happens on the first read, in the connection's own thread, so a client
        # that never completes it can't stall the accept loop.
        return self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)

    def authorized(self, header: str | None) -> bool:
        if not self.users:
            return True
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        if hashed is None:
            return False
        digest = hashlib.sha256(user.encode() + b"\0" + password.encode() + b"\0" + hashed).digest()
        with self._lock:
            if any(hmac.compare_digest(digest, seen) for seen in self._verified):
                return True
        try:
            if not bcrypt.checkpw(password.encode(), hashed):
                return False
        except ValueError:  # bcrypt 5 refuses passwords over 72 bytes rather than truncating them
            return False
        with self._lock:
            if len(self._verified) < 1024:
                self._verified.add(digest)
        return True


def _path(base: Path, value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"web config {key}: must be a file path")
    path = (base / value) if not Path(value).is_absolute() else Path(value)
    if not path.is_file():
        raise ConfigError(f"web config {key}: {path} does not exist")
    return str(path)


def _tls(base: Path, section: Any) -> ssl.SSLContext | None:
    if section is None:
        return None
    if not isinstance(section, dict):
        raise ConfigError("web config tls_server_config: must be a mapping")
    unknown = set(section) - TLS_KEYS
    if unknown:
        raise ConfigError(f"web config tls_server_config.{sorted(unknown)[0]}: unknown key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for key, attribute in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
        if key in section:
            if section[key] not in TLS_VERSIONS:
                raise ConfigError(
                    f"web config tls_server_config.{key}: {section[key]!r} is not TLS12 or TLS13"
                )
            setattr(context, attribute, TLS_VERSIONS[section[key]])
    if "min_version" not in section:
        context.minimum_version = ssl.TLSVersion.TLSv1_2
    cert = _path(base, section.get("cert_file"), "tls_server_config.cert_file")
    key = _path(base, section.get("key_file"), "tls_server_config.key_file")
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as e:
        raise ConfigError(f"web config tls_server_config: cannot load certificate and key ({e})") from None
    auth = section.get("client_auth_type", "NoClientCert")
    if auth not in CLIENT_AUTH:
        raise ConfigError(
            f"web config tls_server_config.client_auth_type: {auth!r} is not one of {sorted(CLIENT_AUTH)}"
        )
    context.verify_mode = CLIENT_AUTH[auth]
    if auth != "NoClientCert":
        ca = _path(base, section.get("client_ca_file"), "tls_server_config.client_ca_file")
        try:
            context.load_verify_locations(ca)
        except (ssl.SSLError, OSError) as e:
            raise ConfigError(f"web config tls_server_config.client_ca_file: cannot load ({e})") from None
    return context


def _users(section: Any) -> dict[str, bytes]:
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ConfigError("web config basic_auth_users: must map user names to bcrypt hashes")
    users = {}
    for user, hashed in section.items():
        text = str(hashed)
        if not text.startswith(("$2a$", "$2b$", "$2y$")):
            raise ConfigError(f"web config basic_auth_users.{user}: not a bcrypt hash")
        # Go's bcrypt writes $2y$; the C library behind `bcrypt` checks the identical $2b$.
        users[str(user)] = ("$2b$" + text[4:]).encode()
        try:
            bcrypt.checkpw(b"", users[str(user)])  # the library's own check of cost, salt and length
        except ValueError:
            raise ConfigError(f"web config basic_auth_users.{user}: not a valid bcrypt hash") from None
    return users


def load(path: str) -> WebSecurity:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as e:
        raise ConfigError(f"web config {path}: {e.strerror}") from None
    except yaml.YAMLError:
        raise ConfigError(f"web config {path}: not valid YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"web config {path}: top level must be a mapping")
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise ConfigError(f"web config {sorted(unknown)[0]}: unknown key")
    base = Path(path).resolve().parent
    return WebSecurity(_tls(base, data.get("tls_server_config")), _users(data.get("basic_auth_users")))
