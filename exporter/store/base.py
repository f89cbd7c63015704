"""What every store shares: one lock, and a version that grows with every change readers can see."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class Store:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._version = 0

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """Every visible change goes through here, so readers can tell whether anything changed."""
        with self._lock:
            self._version += 1
            yield

    @property
    def version(self) -> int:
        """Grows with every change; equal versions mean equal snapshots."""
        return self._version
