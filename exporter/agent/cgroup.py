"""Reads a process's memory cgroup, v1 or v2: usage, effective limit, peak and OOM kills."""

from __future__ import annotations

import os
from pathlib import Path

from exporter.store.agent import CgroupSample

# v1 reports "no limit" as a page-rounded 2^63-1; anything this large is no limit.
_UNLIMITED = 1 << 60


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _read_keyed(path: Path, key: str) -> int | None:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        return None
    return None


def _inside(root: Path, relative: str) -> Path | None:
    """The cgroup directory, or None if the path leaves the mounted tree (another cgroup namespace)."""
    full = Path(os.path.normpath(str(root) + "/" + relative.lstrip("/")))
    return full if full == root or root in full.parents else None


def find_own_cgroup(tree: Path, pid: int, limit: int = 50_000) -> str | None:
    """Where this process sits in the host's cgroup tree, found by its pid in cgroup.procs.

    Inside a cgroup namespace the kernel names other processes' cgroups relative to our own
    ("/../../pod/agent"); with the host's tree mounted and hostPID, this anchors those paths.
    """
    wanted = str(pid)
    for count, (directory, _, files) in enumerate(os.walk(tree)):
        if count >= limit:
            return None
        if "cgroup.procs" in files:
            try:
                if wanted in Path(directory, "cgroup.procs").read_text().split():
                    relative = os.path.relpath(directory, tree)
                    return "/" if relative == "." else "/" + relative
            except OSError:
                continue
    return None


class Locator:
    """Finds a process's memory cgroup under `root`, resolving namespace-relative paths once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._own: dict[Path, str | None] = {}

    def _anchored(self, tree: Path, relative: str) -> Path | None:
        directory = _inside(tree, relative)
        if directory is None and relative.startswith("/.."):
            if tree not in self._own:
                self._own[tree] = find_own_cgroup(tree, os.getpid())
            own = self._own[tree]
            if own is not None:
                directory = _inside(tree, own.rstrip("/") + relative)
        return directory

    def locate(self, proc_cgroup: str) -> tuple[int, Path] | None:
        """(version, directory) of the memory cgroup named by a /proc/<pid>/cgroup text."""
        v2_path = None
        for line in proc_cgroup.splitlines():
            hierarchy, _, rest = line.partition(":")
            controllers, _, path = rest.partition(":")
            if hierarchy != "0" and "memory" in controllers.split(","):
                directory = self._anchored(self.root / "memory", path)
                if directory and directory.is_dir():
                    return 1, directory
            if hierarchy == "0" and controllers == "":
                v2_path = path
        if v2_path is not None:
            directory = self._anchored(self.root, v2_path)
            if directory and (directory / "memory.current").exists():
                return 2, directory
        return None


def _v2_limit(directory: Path, root: Path) -> int | None:
    """The smallest memory.max from the cgroup up to the root: the limit that actually applies."""
    limits = []
    node = directory
    while True:
        value = _read_int(node / "memory.max")
        if value is not None:
            limits.append(value)
        if node == root or root not in node.parents:
            break
        node = node.parent
    return min(limits) if limits else None


def _working_set(usage: int | None, directory: Path, inactive_key: str) -> int | None:
    """The kubelet's working set: page cache the kernel can drop is no memory pressure."""
    inactive = _read_keyed(directory / "memory.stat", inactive_key)
    if usage is None or inactive is None:
        return None
    return max(usage - inactive, 0)


def read(pid: int, proc_root: Path, locator: Locator) -> CgroupSample | None:
    try:
        text = (proc_root / str(pid) / "cgroup").read_text()
    except OSError:
        return None
    found = locator.locate(text)
    if found is None:
        return None
    version, directory = found
    root = locator.root
    if version == 2:
        usage = _read_int(directory / "memory.current")
        return CgroupSample(
            version=2,
            usage=usage,
            working_set=_working_set(usage, directory, "inactive_file"),
            limit=_v2_limit(directory, root),
            peak=_read_int(directory / "memory.peak"),
            oom_kills=_read_keyed(directory / "memory.events", "oom_kill"),
        )
    limit = _read_keyed(directory / "memory.stat", "hierarchical_memory_limit")
    if limit is None:
        limit = _read_int(directory / "memory.limit_in_bytes")
    usage = _read_int(directory / "memory.usage_in_bytes")
    return CgroupSample(
        version=1,
        usage=usage,
        working_set=_working_set(usage, directory, "total_inactive_file"),
        limit=limit if limit is not None and limit < _UNLIMITED else None,
        peak=_read_int(directory / "memory.max_usage_in_bytes"),
        oom_kills=_read_keyed(directory / "memory.oom_control", "oom_kill"),
    )
