"""SPIRE in its HA shape on one host: two servers on one PostgreSQL, an agent reaching them
through a load balancer, and a relay between the servers and the database that can slow every
query or stop answering. Loopback only; every process and thread it starts, stop() stops.

    database  <- db_proxy (delay / stall) <- server "a" (LocalSpire, with the agent)
                                           <- server "b" (server only)
    agent -> balancer -> a, else b
"""

from __future__ import annotations

from harness.local_spire import LocalSpire
from harness.postgres import LocalPostgres
from harness.socket_proxy import SocketProxy

LOOPBACK = "127.0.0.1"
# The entry cache SPIRE servers on a shared database are usually given: it polls the datastore's
# event tables instead of reloading every entry every 5 s (server_extra).
EVENTS_CACHE = "  experimental {\n    events_based_cache = true\n  }"


class ServerStack:
    def __init__(self, server_extra: str = "") -> None:
        self.postgres = LocalPostgres()
        self.db_proxy: SocketProxy | None = None
        self.balancer: SocketProxy | None = None
        self.a: LocalSpire | None = None
        self.b: LocalSpire | None = None
        self.server_extra = server_extra

    def start(self) -> ServerStack:
        try:
            self.postgres.start()
            self.db_proxy = SocketProxy((LOOPBACK, 0), (LOOPBACK, self.postgres.port)).start()
            database = self.postgres.connection_string(self.db_proxy.port)
            self.a = LocalSpire(postgres=database, server_extra=self.server_extra)
            self.b = LocalSpire(postgres=database, server_extra=self.server_extra)
            self.balancer = SocketProxy(
                (LOOPBACK, 0), [(LOOPBACK, self.a.server_port), (LOOPBACK, self.b.server_port)]
            ).start()
            self.a.agent_server_port = self.balancer.port
            # b first, so that its CA is in the bundle the agent starts from.
            self.b.start_server_only()
            self.a.start()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def servers(self) -> dict[str, LocalSpire]:
        assert self.a and self.b
        return {"a": self.a, "b": self.b}

    def server_telemetry(self) -> dict[str, str]:
        """Each server's telemetry address, by name."""
        return {name: f"{LOOPBACK}:{s.server_telemetry_port}" for name, s in self.servers.items()}

    def set_delay(self, seconds: float) -> None:
        """Every request from a server to the database waits this long first."""
        assert self.db_proxy
        self.db_proxy.delay = seconds

    def stop(self) -> None:
        for spire in (self.a, self.b):
            if spire:
                spire.stop()
        for proxy in (self.balancer, self.db_proxy):
            if proxy:
                proxy.stop()
        self.postgres.close()

    def __enter__(self) -> ServerStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
