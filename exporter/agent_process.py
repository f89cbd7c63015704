"""Finds the spire-agent process and reads its memory, CPU, FDs and threads from /proc."""

from __future__ import annotations

import os
import re
from pathlib import Path

import psutil

from exporter.state import ProcessSample


class ProcessFinder:
    """Finds the agent by pid file, else cmdline pattern, else process name; remembers it."""

    def __init__(
        self, name: str, cmdline_pattern: str = "", pid_file: str = "", proc_root: str = "/proc"
    ) -> None:
        self.name = name
        self.pattern = re.compile(cmdline_pattern) if cmdline_pattern else None
        self.pid_file = Path(pid_file) if pid_file else None
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


def sample(proc: psutil.Process, proc_root: Path) -> ProcessSample | None:
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
            )
    except psutil.Error:
        return None
