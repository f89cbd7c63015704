"""The agent's own HTTP health listener (/live and /ready). SPIRE refreshes it only every ~60 s."""

from __future__ import annotations

import urllib.error
import urllib.request


def check(url: str, timeout: float) -> bool:
    """True for a 200; any other status or no answer within the timeout is unhealthy."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read(4096)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False
