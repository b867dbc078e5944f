"""A process started in a container by `Container.exec` (cf ssh), shaped like `subprocess.Popen`."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from typing import IO, TYPE_CHECKING

from .base import ContainerError

if TYPE_CHECKING:
    from .container import Container


class ExecProcess:
    """A process started by `Container.exec`, shaped like `subprocess.Popen`.

    `returncode` follows Diego: the exit code, or 128+N after signal N. With a tty, `pty` is the
    terminal's master side (read and write it; `resize` sets its size) and the pipes are None.
    """

    pid: int | None
    stdin: IO[bytes] | None
    stdout: IO[bytes] | None
    stderr: IO[bytes] | None
    pty: int | None
    returncode: int | None

    def __init__(self, container: Container, xid: str, argv: list[str], fds: list[int], tty: bool):
        self.args = argv
        self.pid = None
        self.returncode = None
        self._container, self._xid = container, xid
        self._done = threading.Event()
        if tty:
            self.pty = fds[0] if fds else None  # set by Container.exec once the init sent it
            self.stdin = self.stdout = self.stderr = None
        else:
            self.pty = None
            self.stdin = os.fdopen(fds[0], "wb", buffering=0)
            self.stdout = os.fdopen(fds[1], "rb", buffering=0)
            self.stderr = os.fdopen(fds[2], "rb", buffering=0)

    def _exited(self, status: int) -> None:
        if self.returncode is None:
            self.returncode = status
        self._done.set()

    def _close(self) -> None:
        for f in (self.stdin, self.stdout, self.stderr):
            if f is not None:
                f.close()
        if self.pty is not None:
            try:
                os.close(self.pty)
            except OSError:
                pass
            self.pty = None

    def poll(self) -> int | None:
        """The exit status if it ended, else None."""
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the end and return the exit status."""
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        return self.returncode  # type: ignore[return-value]

    def communicate(self, input: bytes | None = None, timeout: float | None = None) -> tuple[bytes, bytes]:
        """Write `input`, close stdin, read both streams to their end and wait (pipes only)."""
        if self.pty is not None:
            raise ValueError("communicate() needs pipes: this process runs on a tty, read its pty")
        assert self.stdin is not None
        out: list[bytes] = []
        err: list[bytes] = []
        readers = [threading.Thread(target=lambda f=f, acc=acc: acc.append(f.read()), daemon=True)
                   for f, acc in ((self.stdout, out), (self.stderr, err))]
        for t in readers:
            t.start()
        try:
            if input:
                self.stdin.write(input)
        except BrokenPipeError:
            pass
        self.stdin.close()
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in readers:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return b"".join(out), b"".join(err)

    def send_signal(self, sig: int, group: bool = False) -> None:
        """Send `sig` to the process inside; with `group`, to its whole process group."""
        if self.returncode is None:
            self._container._request({"op": "xsignal", "xid": self._xid, "sig": int(sig), "group": group})

    def hang_up(self, grace: float = 2.0) -> None:
        """What a cell does when an ssh session's connection drops: SIGHUP to the session's
        process group, SIGKILL to it after `grace` seconds if it has not ended."""
        try:
            self.send_signal(signal.SIGHUP, group=True)
            if not self._done.wait(grace):
                self.send_signal(signal.SIGKILL, group=True)
        except (ContainerError, OSError):
            pass  # the container is gone, and the session with it

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def resize(self, rows: int, cols: int) -> None:
        """Set the terminal size (tty only), as an ssh window-change does."""
        import fcntl
        import struct
        import termios

        if self.pty is None:
            raise ValueError("resize() needs a tty")
        fcntl.ioctl(self.pty, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def close(self) -> None:
        """Close our side of the pipes or pty."""
        self._close()
