"""A real PostgreSQL (Debian's `postgresql`) on loopback, in a temporary directory, for SPIRE's
server to keep its datastore in: the shape production SPIRE runs, which the tests slow down and
break through a harness.socket_proxy.SocketProxy between the two.

PostgreSQL refuses to run as root, so as root it runs as the package's `postgres` user.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from harness.local_spire import free_port, stop_process, wait_until

DATABASE = "spire"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL's server binaries are not installed; the message says how to get them."""


def find_bin_dir() -> Path:
    """The newest /usr/lib/postgresql/<major>/bin (where Debian puts initdb and postgres), else
    the directory of an initdb on PATH."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    if versions:
        return versions[-1].parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    raise PostgresUnavailable("PostgreSQL not installed: apt-get install postgresql (Debian's package)")


class LocalPostgres:
    """One PostgreSQL server with a `spire` database, trusting connections from loopback."""

    def __init__(self) -> None:
        self.bin_dir = find_bin_dir()
        self.dir = Path(tempfile.mkdtemp(prefix="spire-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = "postgres"
            shutil.chown(self.dir, "postgres", "postgres")

    def _run(self, *argv: str) -> None:
        done = subprocess.run(
            [str(self.bin_dir / argv[0]), *argv[1:]],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=self.dir,
            user=self._user,
            group=self._user,
            extra_groups=[] if self._user else None,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")

    def start(self) -> LocalPostgres:
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")
        with open(self.dir / "postgres.log", "ab") as log:
            self.process = subprocess.Popen(
                [
                    str(self.bin_dir / "postgres"),
                    "-D",
                    str(self.data),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"port={self.port}",
                    "-c",
                    f"unix_socket_directories={self.dir}",
                    # A test database: durability is not what is measured.
                    "-c",
                    "fsync=off",
                    "-c",
                    "max_connections=200",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.dir,
                start_new_session=True,
                user=self._user,
                group=self._user,
                extra_groups=[] if self._user else None,
            )
        wait_until(self._ready, 60, "PostgreSQL to accept connections")
        with contextlib.suppress(RuntimeError):  # already there after a restart
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", DATABASE)
        return self

    def _ready(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"postgres exited; see {self.dir / 'postgres.log'}")
        done = subprocess.run(
            [str(self.bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-t", "2"],
            capture_output=True,
            timeout=10,
            check=False,
        )
        return done.returncode == 0

    def stop(self) -> None:
        """A fast shutdown (SIGINT): open sessions are cut, as when the database goes away."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                stop_process(self.process)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def connection_string(self, port: int | None = None) -> str:
        """SPIRE's `connection_string` for this database, through `port` (a proxy's) if given."""
        return f"dbname={DATABASE} user=postgres host=127.0.0.1 port={port or self.port} sslmode=disable"

    def close(self) -> None:
        self.stop()
        if not os.environ.get("KEEP_SPIRE_DIR"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
