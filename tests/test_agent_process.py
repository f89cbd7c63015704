"""Agent process and cgroup readers: v1 and v2 fixture trees, and this machine's own process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
from conftest import require

from exporter.agent import cgroup
from exporter.agent import process as agent_process
from harness.local_spire import wait_until


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def proc_tree(tmp_path: Path, pid: int, cgroup_text: str) -> Path:
    proc = tmp_path / "proc"
    write(proc, f"{pid}/cgroup", cgroup_text)
    return proc


def test_v2_tree_reads_usage_effective_limit_peak_and_oom_kills(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    pod = "kubepods.slice/kubepods-burstable.slice/pod1"
    write(root, f"{pod}/memory.max", "268435456\n")
    write(root, f"{pod}/agent/memory.current", "104857600\n")
    write(root, f"{pod}/agent/memory.max", "max\n")
    write(root, f"{pod}/agent/memory.peak", "199999488\n")
    # 30 MiB of it is inactive page cache: reclaimable, so not in the working set.
    write(root, f"{pod}/agent/memory.stat", "anon 60000000\nfile 44857600\ninactive_file 31457280\n")
    write(root, f"{pod}/agent/memory.events", "low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\noom_group_kill 0\n")
    proc = proc_tree(tmp_path, 42, f"0::/{pod}/agent\n")
    sample = cgroup.read(42, proc, cgroup.Locator(root))
    assert sample == cgroup.CgroupSample(
        version=2, usage=104857600, working_set=73400320, limit=268435456, peak=199999488, oom_kills=2
    )


def test_v2_without_limit_or_peak(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    write(root, "svc/memory.current", "1000\n")
    write(root, "svc/memory.max", "max\n")
    proc = proc_tree(tmp_path, 7, "0::/svc\n")
    sample = cgroup.read(7, proc, cgroup.Locator(root))
    assert sample is not None
    assert (sample.usage, sample.limit, sample.peak, sample.oom_kills) == (1000, None, None, None)


def test_v1_tree(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    d = "memory/kubepods/burstable/pod1/agent"
    write(root, f"{d}/memory.usage_in_bytes", "52428800\n")
    write(root, f"{d}/memory.limit_in_bytes", "9223372036854771712\n")
    write(
        root,
        f"{d}/memory.stat",
        "cache 0\nrss 1\ninactive_file 0\nhierarchical_memory_limit 134217728\n"
        "total_inactive_file 10485760\n",
    )
    write(root, f"{d}/memory.max_usage_in_bytes", "73400320\n")
    write(root, f"{d}/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    proc = proc_tree(tmp_path, 9, "12:pids:/kubepods\n4:memory:/kubepods/burstable/pod1/agent\n0::/\n")
    assert cgroup.read(9, proc, cgroup.Locator(root)) == cgroup.CgroupSample(
        version=1, usage=52428800, working_set=41943040, limit=134217728, peak=73400320, oom_kills=3
    )


def test_v1_unlimited_is_no_limit(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    write(root, "memory/a/memory.usage_in_bytes", "5\n")
    write(root, "memory/a/memory.limit_in_bytes", "9223372036854771712\n")
    proc = proc_tree(tmp_path, 9, "4:memory:/a\n")
    sample = cgroup.read(9, proc, cgroup.Locator(root))
    assert sample is not None and sample.limit is None and sample.usage == 5


def test_path_outside_the_mounted_tree_is_not_read(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    write(tmp_path, "secret/memory.current", "1\n")
    proc = proc_tree(tmp_path, 5, "0::/../secret\n")
    assert cgroup.read(5, proc, cgroup.Locator(root)) is None


def test_namespace_relative_path_is_anchored_at_our_own_cgroup(tmp_path: Path) -> None:
    """In a cgroup namespace the agent's path is relative to ours; find ours by pid and resolve."""
    root = tmp_path / "cg"
    write(root, "kubepods/podA/exporter/cgroup.procs", f"1\n{os.getpid()}\n")
    write(root, "kubepods/podB/agent/memory.current", "4096\n")
    write(root, "kubepods/podB/agent/memory.max", "8192\n")
    write(root, "kubepods/podB/memory.max", "max\n")
    proc = proc_tree(tmp_path, 77, "0::/../../podB/agent\n")
    sample = cgroup.read(77, proc, cgroup.Locator(root))
    assert sample is not None and (sample.usage, sample.limit) == (4096, 8192)
    # Too far up for the tree we were given: not read.
    proc = proc_tree(tmp_path, 78, "0::/../../../../../etc\n")
    assert cgroup.read(78, proc, cgroup.Locator(root)) is None


def test_missing_process_gives_none(tmp_path: Path) -> None:
    assert cgroup.read(123456, tmp_path, cgroup.Locator(tmp_path)) is None


def test_this_machines_own_cgroup() -> None:
    """Whatever this machine runs (v1 here, v2 on most), our own process's memory cgroup reads."""
    sample = cgroup.read(os.getpid(), Path("/proc"), cgroup.Locator(Path("/sys/fs/cgroup")))
    if sample is None:
        require("no memory cgroup is visible to this process")
    assert sample.version in (1, 2)
    assert sample.usage is not None and sample.usage > psutil.Process().memory_info().rss / 2
    assert sample.limit is None or sample.limit >= sample.usage * 0.5


def test_process_sample_matches_proc_for_a_child(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; b = bytearray(30 * 2**20); time.sleep(60)"],
    )
    try:
        time.sleep(1.0)
        finder = agent_process.ProcessFinder("unused", cmdline_pattern=r"bytearray\(30 \* 2\*\*20\)")
        proc = finder.find()
        assert proc is not None and proc.pid == child.pid
        sample = agent_process.sample(proc, Path("/proc"))
        assert sample is not None
        status = dict(
            line.split(":", 1)
            for line in Path(f"/proc/{child.pid}/status").read_text().splitlines()
            if ":" in line
        )
        assert sample.peak_rss == int(status["VmHWM"].split()[0]) * 1024
        assert abs(sample.rss - int(status["VmRSS"].split()[0]) * 1024) < 2**20
        assert sample.rss > 30 * 2**20
        assert sample.threads == int(status["Threads"])
        assert sample.open_fds == len(os.listdir(f"/proc/{child.pid}/fd"))
    finally:
        child.kill()
        child.wait()
    assert finder.find() is None


def test_pid_file(tmp_path: Path) -> None:
    pid_file = tmp_path / "agent.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    finder = agent_process.ProcessFinder("unused", pid_file=str(pid_file))
    found = finder.find()
    assert found is not None and found.pid == os.getpid()
    pid_file.write_text("garbage")
    assert agent_process.ProcessFinder("unused", pid_file=str(pid_file)).find() is None


def test_the_agent_is_the_process_that_listens_on_the_socket(tmp_path: Path) -> None:
    """Two processes could be the agent by name; the one serving the Workload API socket is."""
    sock = tmp_path / "agent.sock"
    listener = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import socket, sys, time; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen();"
            " time.sleep(60)",
            str(sock),
        ],
    )
    decoy_name = f"she-decoy-{os.getpid()}"  # an agent by name that nothing else is called
    (tmp_path / decoy_name).symlink_to(shutil.which("sleep") or "/bin/sleep")
    decoy = subprocess.Popen([str(tmp_path / decoy_name), "60"])
    try:
        wait_until(sock.exists, 10, "the listener's socket")
        assert agent_process.socket_peer(str(sock)) == listener.pid
        found = agent_process.ProcessFinder(decoy_name, socket_path=str(sock)).find()
        assert found is not None and found.pid == listener.pid
        # Nothing listening on the socket: the agent is down, though a process has its name.
        assert agent_process.socket_peer(str(tmp_path / "absent.sock")) == agent_process.NOBODY
        assert (
            agent_process.ProcessFinder(decoy_name, socket_path=str(tmp_path / "absent.sock")).find() is None
        )
        listener.kill()
        listener.wait()
        assert agent_process.socket_peer(str(sock)) == agent_process.NOBODY  # the file stays, refused
        assert agent_process.ProcessFinder(decoy_name, socket_path=str(sock)).find() is None
        # No socket to ask (or one the exporter can't see the listener of): the name decides.
        found = agent_process.ProcessFinder(decoy_name).find()
        assert found is not None and found.pid == decoy.pid
    finally:
        for child in (listener, decoy):
            child.kill()
            child.wait()


def test_the_exporter_is_never_its_own_agent(tmp_path: Path) -> None:
    """A fake agent served from the exporter's own process (as in the fault tests) is not
    measured as the agent: the name decides, as it always skipped ourselves."""
    import socket as socket_module

    sock = tmp_path / "own.sock"
    with socket_module.socket(socket_module.AF_UNIX) as own:
        own.bind(str(sock))
        own.listen()
        assert agent_process.socket_peer(str(sock)) == os.getpid()
        assert agent_process.ProcessFinder(f"she-nothing-{os.getpid()}", socket_path=str(sock)).find() is None


def fake_proc(root: Path, pid: int, name: str, start_ticks: int) -> None:
    """The few /proc files psutil reads to name a process and tell when it started."""
    (root / str(pid)).mkdir(parents=True, exist_ok=True)
    (root / "stat").write_text("cpu 0 0 0 0 0 0 0 0 0 0\nbtime 1700000000\n")
    fields = ["S", "1", "1", "1", "0", "-1", "0"] + ["0"] * 12 + [str(start_ticks)] + ["0"] * 30
    (root / str(pid) / "stat").write_text(f"{pid} ({name}) " + " ".join(fields) + "\n")
    (root / str(pid) / "comm").write_text(name + "\n")
    (root / str(pid) / "cmdline").write_text(f"/opt/{name}\0run\0")
    (root / str(pid) / "status").write_text(f"Name:\t{name}\nState:\tS (sleeping)\n")


def test_cached_agent_process_is_not_trusted_after_pid_reuse(tmp_path) -> None:
    import psutil

    from exporter.agent.process import ProcessFinder

    saved = psutil.PROCFS_PATH
    try:
        (tmp_path / "pid").write_text("4242\n")
        fake_proc(tmp_path / "proc", 4242, "spire-agent", 1000)
        finder = ProcessFinder(
            "spire-agent", pid_file=str(tmp_path / "pid"), proc_root=str(tmp_path / "proc")
        )
        first = finder.find()
        assert first is not None and first.pid == 4242
        # The agent exits; its PID is handed to another process that started later.
        fake_proc(tmp_path / "proc", 4242, "impostor", 5000)
        (tmp_path / "pid").write_text("")
        assert finder.find() is None
        # The pid file names the new agent: it is found again, with its own start time.
        fake_proc(tmp_path / "proc", 4343, "spire-agent", 6000)
        (tmp_path / "pid").write_text("4343\n")
        again = finder.find()
        assert again is not None and again.pid == 4343
    finally:
        psutil.PROCFS_PATH = saved
