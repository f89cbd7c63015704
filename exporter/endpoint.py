"""Where the Workload API listens: the standard environment variable and the socket URI forms."""

from __future__ import annotations

ENDPOINT_ENV = "SPIFFE_ENDPOINT_SOCKET"


def socket_target(endpoint: str) -> str:
    """Turn a socket path or a `unix://` URI into a grpc target."""
    return "unix:" + socket_path(endpoint)


def socket_path(endpoint: str) -> str:
    """The filesystem path of a socket path or a `unix://` URI."""
    if endpoint.startswith("unix://"):
        path = endpoint[len("unix://") :]
    elif endpoint.startswith("unix:"):
        path = endpoint[len("unix:") :]
    else:
        path = endpoint
    if not path.startswith("/"):
        raise ValueError(f"workload API endpoint must be an absolute unix socket path, got {endpoint!r}")
    return path
