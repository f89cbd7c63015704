"""Finds the spire-agent process and reads its memory, CPU, FDs and threads from /proc."""

from __future__ import annotations

import os
import re
import socket
import struct
from pathlib import Path

import psutil

from exporter.store.agent import ProcessSample

PEER_TIMEOUT_SECONDS = 1.0
NOBODY = 0  # socket_peer's answer when nothing listens on the socket


def socket_peer(path: str) -> int | None:
    """The PID of the process listening on a Unix socket, as the kernel gives it (SO_PEERCRED);
    NOBODY when no process listens there; None when it can't tell: the listener is outside our
    PID namespace (no hostPID), the socket can't be reached, or it did not answer in time."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(PEER_TIMEOUT_SECONDS)
            s.connect(path)
            creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            pid, _, _ = struct.unpack("3i", creds)
    except (FileNotFoundError, ConnectionRefusedError):
        return NOBODY
    except OSError:
        return None
    return pid or None


class ProcessFinder:
    """Finds the agent by pid file, else cmdline pattern, else the process that listens on the
    Workload API socket, else process name; remembers it. The socket's listener is the agent this
    exporter probes, even on a host that runs more than one process named spire-agent."""

    def __init__(
        self,
        name: str,
        cmdline_pattern: str = "",
        pid_file: str = "",
        proc_root: str = "/proc",
        socket_path: str = "",
    ) -> None:
        self.name = name
        self.pattern = re.compile(cmdline_pattern) if cmdline_pattern else None
        self.pid_file = Path(pid_file) if pid_file else None
        self.socket_path = socket_path
        self.proc_root = Path(proc_root)
        psutil.PROCFS_PATH = proc_root
        self._proc: psutil.Process | None = None

    def find(self) -> psutil.Process | None:
        try:
            # is_running() compares the start time too, so a PID handed to a new process after
            # the agent exited is not mistaken for the agent.
            if (
                self._proc is not None
                and self._proc.is_running()
                and self._proc.status() != psutil.STATUS_ZOMBIE
            ):
                return self._proc
        except psutil.Error:
            pass
        self._proc = self._search()
        return self._proc

    def _search(self) -> psutil.Process | None:
        if self.pid_file:
            try:
                return psutil.Process(int(self.pid_file.read_text().strip()))
            except (OSError, ValueError, psutil.Error):
                return None
        me = os.getpid()
        if self.socket_path and not self.pattern:
            pid = socket_peer(self.socket_path)
            if pid == NOBODY:
                # Nothing serves the socket the exporter probes: that agent is down, whatever
                # else on the host is called spire-agent.
                return None
            if pid is not None and pid != me:  # as below: never ourselves (a test's fake agent)
                try:
                    return psutil.Process(pid)
                except psutil.Error:
                    pass
        for proc in psutil.process_iter(["name", "cmdline"]):
            if proc.pid == me:  # our own argv may hold the pattern
                continue
            try:
                cmdline = proc.info["cmdline"] or []
                if self.pattern:
                    if self.pattern.search(" ".join(cmdline)):
                        return proc
                elif proc.info["name"] == self.name or (cmdline and Path(cmdline[0]).name == self.name):
                    return proc
            except psutil.Error:
                continue
        return None


def peak_rss(proc_root: Path, pid: int) -> int | None:
    """VmHWM: the high-water mark of RSS, which keeps a startup spike we sampled too late to see."""
    try:
        for line in (proc_root / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


ACCEPTING = 0x10000  # __SO_ACCEPTCON in /proc/net/unix's Flags: a listening socket
CONNECTED = "03"  # SS_CONNECTED in its St column


def socket_connections(proc_root: Path, pid: int, socket_path: str) -> int | None:
    """Connections open to the agent's Workload API socket: the server-side sockets in the
    agent's network namespace that carry its listener's path. The kernel accounts an accepted
    Unix socket to the connecting client's network namespace, so only clients in the agent's
    own (host processes, host-network pods) are seen. A snapshot: a connection opened and
    closed between two samples is never seen either. The exporter may know the socket under another
    path (a pod's mount): the listener with the same path, else the only one with the same file
    name; None if there is neither."""
    if not socket_path:
        return None
    name = Path(socket_path).name
    try:
        lines = (proc_root / str(pid) / "net" / "unix").read_text().splitlines()[1:]
    except OSError:
        return None
    listeners: set[str] = set()
    connected: dict[str, int] = {}
    for line in lines:
        fields = line.split(None, 7)
        if len(fields) < 8 or Path(fields[7]).name != name:
            continue
        path = fields[7]
        if int(fields[3], 16) & ACCEPTING:
            listeners.add(path)
        elif fields[5] == CONNECTED:
            connected[path] = connected.get(path, 0) + 1
    if socket_path in listeners:
        return connected.get(socket_path, 0)
    if len(listeners) != 1:
        return None
    return connected.get(listeners.pop(), 0)


def sample(proc: psutil.Process, proc_root: Path, socket_path: str = "") -> ProcessSample | None:
    try:
        with proc.oneshot():
            cpu = proc.cpu_times()
            try:
                fds: int | None = proc.num_fds()
            except psutil.AccessDenied:
                fds = None
            return ProcessSample(
                pid=proc.pid,
                rss=proc.memory_info().rss,
                peak_rss=peak_rss(proc_root, proc.pid),
                cpu_seconds=cpu.user + cpu.system,
                open_fds=fds,
                threads=proc.num_threads(),
                start_time=proc.create_time(),
                socket_connections=socket_connections(proc_root, proc.pid, socket_path),
            )
    except psutil.Error:
        return None
