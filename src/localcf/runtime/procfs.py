"""What the host's process table says about a container: its processes, their pids inside,
their CPU and memory (psutil), and the disk its droplet takes."""

from __future__ import annotations

import os
from pathlib import Path

# psutil is imported where it is used: making containers, exec and staging tasks need the
# standard library only, and importing the runtime stays quick.


def _init_child(pid: int) -> int | None:
    """The first child of `pid` (the init, below `unshare`), None if there is none (yet)."""
    import psutil

    try:
        kids = psutil.Process(pid).children()
    except psutil.Error:
        return None
    return min((k.pid for k in kids), default=None)


def _descendants(pid: int | None) -> list[int]:
    """Every process below `pid` (not `pid` itself)."""
    if pid is None:
        return []
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _ns_pids(init_host_pid: int | None) -> dict[int, int]:
    """pid inside the namespace -> host pid, for the processes below a namespaced init.

    Read from the NSpid line of /proc/PID/status, which psutil does not expose.
    """
    out = {}
    for pid in _descendants(init_host_pid):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("NSpid:"):
                        out[int(line.split()[-1])] = pid
                        break
        except OSError:
            continue
    return out


def _proc_usage(pid: int) -> tuple[float, int]:
    """(cpu seconds, resident bytes) of one process, zeros if it is gone."""
    import psutil

    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            times = proc.cpu_times()
            return times.user + times.system, proc.memory_info().rss
    except psutil.Error:
        return 0.0, 0


def _disk_usage(root: Path) -> int:
    total = 0
    stack = [str(root)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += getattr(st, "st_blocks", 0) * 512 or st.st_size
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return total
