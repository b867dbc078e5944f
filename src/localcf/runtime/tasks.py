"""Staging tasks: what their container shows of the host, and pumping their output."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from localcf.container_init import MAX_LINE

from .base import TaskOutputCallback, _text
from .probe import _covered


def _linked_dirs(binds: dict[Path, str] | None) -> list[list]:
    """Read-only views for the symlinks near the top of bound directories that lead elsewhere
    on the host (the stager links admin buildpacks from its unpacked cache): the link's own
    target path shows in the container, the rest of the host does not."""
    roots = [Path(host).resolve() for host in (binds or {})]
    out: list[list] = []
    for root in roots:
        if not root.is_dir():
            continue
        level = [root]
        for _ in range(2):
            below = []
            for folder in level:
                try:
                    entries = list(os.scandir(folder))
                except OSError:
                    continue
                for entry in entries:
                    if entry.is_symlink():
                        link = os.readlink(entry.path)
                        real = os.path.realpath(entry.path)
                        if os.path.isabs(link) and os.path.isdir(real) and \
                                not _covered(real, [str(r) for r in roots]):
                            out.append([real, os.path.normpath(link), True])
                    elif entry.is_dir():
                        below.append(Path(entry.path))
            level = below
    return out


def _pump_task(popen: subprocess.Popen, on_output: TaskOutputCallback, timeout: float | None,
               graceful_kill: bool) -> bool:
    """Forward the task's lines until both streams end; True if the timeout killed it."""
    import selectors

    deadline = None if timeout is None else time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    pending: dict[int, bytes] = {}
    assert popen.stdout is not None and popen.stderr is not None, "run the task with stdout and stderr piped"
    for stream, name in ((popen.stdout, "OUT"), (popen.stderr, "ERR")):
        os.set_blocking(stream.fileno(), False)
        sel.register(stream, selectors.EVENT_READ, name)
        pending[stream.fileno()] = b""
    timed_out = False
    while sel.get_map():
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        events = sel.select(wait)
        if not events and deadline is not None and time.monotonic() >= deadline and not timed_out:
            timed_out = True
            _kill_task(popen, graceful_kill)
            deadline = None
            continue
        for key, _ in events:
            fd = key.fd
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            buf = pending[fd] + data
            lines = buf.split(b"\n")
            rest = lines.pop()
            if not data:
                if rest:
                    lines.append(rest)
                rest = b""
                sel.unregister(key.fileobj)
            while len(rest) > MAX_LINE:
                lines.append(rest[:MAX_LINE])
                rest = rest[MAX_LINE:]
            pending[fd] = rest
            for line in lines:
                on_output(key.data, _text(line))
    sel.close()
    return timed_out


def _kill_task(popen: subprocess.Popen, graceful: bool) -> None:
    if graceful:
        popen.terminate()  # the process-mode init kills the task's process group, then exits
        try:
            popen.wait(5)
            return
        except subprocess.TimeoutExpired:
            pass
    popen.kill()
