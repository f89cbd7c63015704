#!/usr/bin/env python3
"""A real SPIRE server and agent on one host, for the tests and for a person's demo.

Everything listens on 127.0.0.1 or on Unix sockets inside one temporary directory.

    python -m harness.local_spire run          # SPIRE only; prints the agent socket
    python -m harness.local_spire demo         # SPIRE plus the exporter; prints the metrics URL
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from harness.paths import ROOT
from harness.versions import SPIRE as SPIRE_VERSION
from harness.versions import spire_binary_version

T = TypeVar("T")
TRUST_DOMAIN = "example.org"
UNIX_ATTESTOR = """  WorkloadAttestor "unix" {
    plugin_data {}
  }"""

SCRIPTS = ROOT / "scripts"


class SpireUnavailable(RuntimeError):
    """SPIRE binaries can't be found or built; the message is one line saying how to provide them."""


def find_spire_bin_dir(version: str = SPIRE_VERSION) -> Path:
    """SPIRE_BIN_DIR if set, else the build cache's `version` (building it if Go is here).

    Not PATH: a SPIRE installed there is whatever release it is, and the tests must run the
    pinned one (versions.env) unless told otherwise.
    """
    named = os.environ.get("SPIRE_BIN_DIR")
    if named:
        for candidate in (Path(named), Path(named) / "bin"):
            if (candidate / "spire-server").is_file() and (candidate / "spire-agent").is_file():
                return candidate
        raise SpireUnavailable(f"SPIRE_BIN_DIR={named} holds no spire-server and spire-agent")
    built = subprocess.run(
        [str(SCRIPTS / "build-spire"), version],
        stdout=subprocess.PIPE,
        stderr=sys.stderr,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        raise SpireUnavailable(
            "SPIRE not available: set SPIRE_BIN_DIR to an unpacked SPIRE "
            f"{version} release, or install a Go toolchain and gcc so scripts/build-spire can build it"
        )
    return Path(built.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class LocalSpire:
    """Starts, controls and tears down a SPIRE server and agent in a temporary directory."""

    def __init__(
        self,
        bin_dir: Path | None = None,
        workdir: Path | None = None,
        agent_log_level: str = "INFO",
        agent_extra: str = "",
        trust_domain: str = TRUST_DOMAIN,
        server_extra: str = "",
        postgres: str | None = None,
    ) -> None:
        """`postgres`: a connection string; the server keeps its datastore there, else in SQLite."""
        self.bin_dir = bin_dir or find_spire_bin_dir()
        self.version = spire_binary_version(self.bin_dir)
        self.agent_log_level = agent_log_level
        self.agent_extra = agent_extra  # HCL added inside the agent block, e.g. an experimental one
        self.server_extra = server_extra  # HCL added inside the server block, e.g. federation
        self.postgres = postgres
        self.workload_attestors = UNIX_ATTESTOR
        self._own_workdir = workdir is None
        self.dir = workdir or Path(tempfile.mkdtemp(prefix="spire-"))
        self.trust_domain = trust_domain
        self.server_port = free_port()
        # Where the agent reaches the server: a load balancer's port in front of several.
        self.agent_server_port = self.server_port
        self.health_port = free_port()
        self.telemetry_port = free_port()
        self.server_telemetry_port = free_port()
        self.server_socket = self.dir / "server" / "api.sock"
        self.agent_socket = self.dir / "agent" / "agent.sock"
        # The Debug API's socket; SPIRE wants it outside the Workload API socket's directory.
        self.admin_socket = self.dir / "admin" / "admin.sock"
        self.agent_id = f"spiffe://{trust_domain}/host"
        self.workload_id = f"spiffe://{trust_domain}/probe"
        self.server: subprocess.Popen[bytes] | None = None
        self.agent: subprocess.Popen[bytes] | None = None
        self.entry_id: str | None = None
        self.agent_cgroup: Path | None = None

    # -- configuration -------------------------------------------------------------------------

    def _write_configs(self) -> None:
        (self.dir / "server" / "data").mkdir(parents=True, exist_ok=True)
        (self.dir / "agent" / "data").mkdir(parents=True, exist_ok=True)
        (self.dir / "admin").mkdir(parents=True, exist_ok=True)
        d = self.dir
        database = (
            f'database_type = "postgres"\n      connection_string = "{self.postgres}"'
            if self.postgres
            else f'database_type = "sqlite3"\n      connection_string = "{d}/server/data/datastore.sqlite3"'
        )
        (d / "server" / "server.conf").write_text(
            f"""server {{
  bind_address = "127.0.0.1"
  bind_port = "{self.server_port}"
  socket_path = "{self.server_socket}"
  trust_domain = "{self.trust_domain}"
  data_dir = "{d}/server/data"
  log_level = "INFO"
{self.server_extra}
}}
plugins {{
  DataStore "sql" {{
    plugin_data {{
      {database}
    }}
  }}
  NodeAttestor "join_token" {{
    plugin_data {{}}
  }}
  KeyManager "disk" {{
    plugin_data {{
      keys_path = "{d}/server/data/keys.json"
    }}
  }}
}}
telemetry {{
  Prometheus {{
    host = "127.0.0.1"
    port = {self.server_telemetry_port}
  }}
}}
"""
        )
        (d / "agent" / "agent.conf").write_text(
            f"""agent {{
  data_dir = "{d}/agent/data"
  log_level = "{self.agent_log_level}"
  server_address = "127.0.0.1"
  server_port = "{self.agent_server_port}"
  socket_path = "{self.agent_socket}"
  admin_socket_path = "{self.admin_socket}"
  trust_bundle_path = "{d}/agent/bundle.pem"
  trust_domain = "{self.trust_domain}"
{self.agent_extra}
}}
plugins {{
  NodeAttestor "join_token" {{
    plugin_data {{}}
  }}
  KeyManager "disk" {{
    plugin_data {{
      directory = "{d}/agent/data"
    }}
  }}
{self.workload_attestors}
}}
health_checks {{
  listener_enabled = true
  bind_address = "127.0.0.1"
  bind_port = "{self.health_port}"
  live_path = "/live"
  ready_path = "/ready"
}}
telemetry {{
  Prometheus {{
    host = "127.0.0.1"
    port = {self.telemetry_port}
  }}
}}
"""
        )

    # -- processes -----------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str], log_path: Path | None = None) -> subprocess.Popen[bytes]:
        log = open(log_path or self.dir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        try:
            return subprocess.Popen(
                [str(self.bin_dir / name), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()

    def server_cli(self, *args: str, check: bool = True) -> str:
        cmd = [str(self.bin_dir / "spire-server"), args[0], *args[1:], "-socketPath", str(self.server_socket)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def agent_cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / "spire-agent"), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)

    def start_server(self) -> None:
        self.server = self._spawn(
            "spire-server", ["run", "-config", str(self.dir / "server" / "server.conf")]
        )

        def healthy() -> bool:
            self._raise_if_dead(self.server, "spire-server")
            return self.server_cli("healthcheck", check=False).find("healthy") >= 0

        wait_until(healthy, 60, "spire-server to become healthy")

    def stop_server(self) -> None:
        self._stop(self.server)
        self.server = None

    def start_agent(self, join_token: str | None = None) -> None:
        args = ["run", "-config", str(self.dir / "agent" / "agent.conf")]
        if join_token:
            args += ["-joinToken", join_token]
        self.agent = self._spawn("spire-agent", args)
        if self.agent_cgroup:
            (self.agent_cgroup / "cgroup.procs").write_text(str(self.agent.pid))
        wait_until(self._agent_healthy, 60, "spire-agent to serve its socket")

    def _agent_healthy(self) -> bool:
        self._raise_if_dead(self.agent, "spire-agent")
        done = self.agent_cli("healthcheck", "-socketPath", str(self.agent_socket), timeout=10)
        return done.returncode == 0

    def kill_agent(self) -> None:
        """SIGKILL, as the OOM killer would."""
        if self.agent and self.agent.poll() is None:
            os.kill(self.agent.pid, signal.SIGCONT)
            self.agent.kill()
            self.agent.wait(10)
        self.agent = None

    def restart_agent(self) -> None:
        """Kill and start again; the disk key manager keeps its node SVID, so no new join token."""
        self.kill_agent()
        self.start_agent()

    def replace_workload_attestors(self, hcl: str) -> None:
        """Restart the agent with these workload attestors instead of `unix` (its node SVID is
        kept); the entries, whose selectors are unix ones, then match nothing."""
        self.workload_attestors = hcl
        self._write_configs()
        self.restart_agent()

    def pause_agent(self) -> None:
        assert self.agent
        os.kill(self.agent.pid, signal.SIGSTOP)

    def resume_agent(self) -> None:
        assert self.agent
        os.kill(self.agent.pid, signal.SIGCONT)

    @contextlib.contextmanager
    def a_node_with_a_bad_join_token(self) -> Iterator[None]:
        """A second node whose join token the server never issued, for the `with` block: SPIRE's
        agent keeps retrying its attestation, and the server counts each refusal. Its own data
        directory and socket, no telemetry or health port, so it touches nothing of this one's."""
        node = Path(tempfile.mkdtemp(prefix="bad-node-", dir=self.dir))
        (node / "agent.conf").write_text(
            f"""agent {{
  data_dir = "{node}/data"
  log_level = "WARN"
  server_address = "127.0.0.1"
  server_port = "{self.agent_server_port}"
  socket_path = "{node}/agent.sock"
  trust_bundle_path = "{self.dir}/agent/bundle.pem"
  trust_domain = "{self.trust_domain}"
}}
plugins {{
  NodeAttestor "join_token" {{
    plugin_data {{}}
  }}
  KeyManager "memory" {{
    plugin_data {{}}
  }}
{UNIX_ATTESTOR}
}}
"""
        )
        args = ["run", "-config", str(node / "agent.conf"), "-joinToken", "never-issued"]
        agent = self._spawn("spire-agent", args, self.dir / "bad-node-agent.log")
        try:
            yield
            self._raise_if_dead(agent, "the badly attested spire-agent")
        finally:
            self._stop(agent)
            shutil.rmtree(node, ignore_errors=True)

    def limit_agent_memory(self, limit_bytes: int) -> bool:
        """Put the agent (now and after restarts) in a memory cgroup with this limit, as a
        container runtime would. False where this process can't make child memory cgroups."""
        assert self.agent
        try:
            own = Path("/proc/self/cgroup").read_text().splitlines()
            v1 = [line.split(":", 2)[2] for line in own if "memory" in line.split(":")[1].split(",")]
            if v1:
                parent, limit_file = Path("/sys/fs/cgroup/memory" + v1[0]), "memory.limit_in_bytes"
            else:
                parent, limit_file = Path("/sys/fs/cgroup" + own[0].split(":", 2)[2]), "memory.max"
                (parent / "cgroup.subtree_control").write_text("+memory")
            group = parent / f"spire-agent-{os.getpid()}-{self.server_port}"
            group.mkdir(exist_ok=True)
            (group / limit_file).write_text(str(limit_bytes))
            (group / "cgroup.procs").write_text(str(self.agent.pid))
        except OSError:
            return False
        self.agent_cgroup = group
        return True

    @property
    def agent_pid(self) -> int:
        assert self.agent
        return self.agent.pid

    @staticmethod
    def _raise_if_dead(proc: subprocess.Popen[bytes] | None, name: str) -> None:
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"{name} exited; see its log in the SPIRE work directory")

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes] | None) -> None:
        stop_process(proc)

    # -- registration --------------------------------------------------------------------------

    def create_entry(
        self,
        spiffe_id: str | None = None,
        uid: int | None = None,
        x509_ttl: int | None = None,
        jwt_ttl: int | None = None,
        federates_with: tuple[str, ...] = (),
    ) -> str:
        args = [
            "entry",
            "create",
            "-parentID",
            self.agent_id,
            "-spiffeID",
            spiffe_id or self.workload_id,
            "-selector",
            f"unix:uid:{os.getuid() if uid is None else uid}",
            "-output",
            "json",
        ]
        if x509_ttl:
            args += ["-x509SVIDTTL", str(x509_ttl)]
        if jwt_ttl:
            args += ["-jwtSVIDTTL", str(jwt_ttl)]
        for trust_domain in federates_with:
            args += ["-federatesWith", f"spiffe://{trust_domain}"]
        out = json.loads(self.server_cli(*args))
        return str(out["results"][0]["entry"]["id"])

    def delete_entry(self, entry_id: str) -> None:
        self.server_cli("entry", "delete", "-entryID", entry_id)

    def bundle_pem(self) -> str:
        return self.server_cli("bundle", "show", "-format", "pem")

    def fetch_x509_ok(self) -> bool:
        done = self.agent_cli("api", "fetch", "x509", "-socketPath", str(self.agent_socket), "-timeout", "3s")
        return done.returncode == 0 and self.workload_id in done.stdout

    def wait_for_svid(self, timeout: float = 60) -> None:
        wait_until(self.fetch_x509_ok, timeout, f"the agent to serve {self.workload_id}", interval=0.5)

    # -- whole lifecycle -----------------------------------------------------------------------

    def start_server_only(self) -> LocalSpire:
        """The server alone, e.g. a second trust domain's to federate with."""
        self._write_configs()
        self.start_server()
        return self

    def start(self) -> LocalSpire:
        self._write_configs()
        self.start_server()
        (self.dir / "agent" / "bundle.pem").write_text(self.bundle_pem())
        out = self.server_cli("token", "generate", "-spiffeID", self.agent_id)
        match = re.search(r"Token:\s*(\S+)", out)
        if not match:
            raise RuntimeError("spire-server token generate printed no token")
        self.start_agent(join_token=match.group(1))
        self.entry_id = self.create_entry()
        self.wait_for_svid()
        return self

    def stop(self) -> None:
        self._stop(self.agent)
        self._stop(self.server)
        self.agent = self.server = None
        if self.agent_cgroup:
            with contextlib.suppress(OSError):  # the kernel may hold it a moment longer
                self.agent_cgroup.rmdir()
            self.agent_cgroup = None
        if self._own_workdir and not os.environ.get("KEEP_SPIRE_DIR"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalSpire:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 10) -> None:
    """SIGCONT (it may be paused), SIGTERM, and SIGKILL if it has not gone after `grace` s."""
    if proc is None or proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGCONT)
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _wait_for_signal(duration: float | None) -> None:
    stop = {"now": False}

    def handler(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    end = time.monotonic() + duration if duration else None
    while not stop["now"] and (end is None or time.monotonic() < end):
        time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["run", "demo"])
    parser.add_argument("--listen", default="127.0.0.1:9989", help="exporter listen address (demo)")
    parser.add_argument("--duration", type=float, default=None, help="stop by itself after this many seconds")
    args = parser.parse_args()
    try:
        spire = LocalSpire()
    except SpireUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    with spire:
        print(f"SPIRE {spire.version} running in {spire.dir}", flush=True)
        print(f"  agent socket:  unix://{spire.agent_socket}", flush=True)
        print(f"  agent health:  http://127.0.0.1:{spire.health_port}/ready", flush=True)
        print(f"  SVID for uid {os.getuid()}: {spire.workload_id}", flush=True)
        exporter = None
        if args.mode == "demo":
            exporter = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "exporter",
                    "--spiffe.endpoint-socket",
                    f"unix://{spire.agent_socket}",
                    "--web.listen-address",
                    args.listen,
                    "--agent.health-url",
                    f"http://127.0.0.1:{spire.health_port}",
                    "--agent.cmdline-pattern",
                    f"spire-agent run -config {spire.dir}/agent/agent.conf",
                ]
            )
            print(f"exporter metrics at http://{args.listen}/metrics (status page at /)", flush=True)
        print("Ctrl-C stops everything.", flush=True)
        try:
            _wait_for_signal(args.duration)
        finally:
            if exporter:
                exporter.terminate()
                exporter.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
