"""The embedded S3 server: started as a detached process with a pid file and a port file in a state
dir (``$SIDECARLAB_HOME/blobstore``, else ``build/blobstore`` of the checkout), watched with psutil
(liveness, command line) so the same code runs on Linux and macOS.

The server never outlives its owner: ``start()`` ties it to the calling process by default (a
notebook's kernel, a test worker), and the server exits on its own as soon as that process ends,
however it ends. ``stop()`` ends it at once.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from ..polling import PollTimeout, poll_until
from ..sidecar import project_root
from .errors import BlobStoreError

__all__ = [
    "ServerStatus",
    "default_state_dir",
    "require_moto",
    "start",
    "status",
    "stop",
    "stop_if_mine",
]

_PID_FILE = "blobstore.pid"
_PORT_FILE = "blobstore.port"
_OWNER_FILE = "blobstore.owner"
_LOG_FILE = "blobstore.log"
_LOCK_FILE = "blobstore.lock"

# Guards against hanging, not performance claims.
_START_DEADLINE = 60.0
_STOP_DEADLINE = 10.0


def require_moto() -> None:
    """Raise BlobStoreError (what to install) when moto's server is missing."""
    try:
        import moto.server  # noqa: F401  (an optional dependency: the kit extra)
    except ImportError:
        raise BlobStoreError(
            f"The embedded S3 server needs moto's server, which is not installed in {sys.prefix}: "
            "install the kit with `pip install -e '.[kit]'` (or `pip install 'moto[server]'`).") from None


# ----------------------------------------------------------------------- the embedded server

@dataclass(frozen=True)
class ServerStatus:
    """A running embedded S3 server: its pid, port and owner (the process it exits with)."""

    state_dir: Path
    pid: int
    port: int
    owner_pid: int | None
    started: bool = False  # True when this very call started it

    @property
    def endpoint_url(self) -> str:
        """The URL S3 clients (and staging containers on this machine) use."""
        return f"http://127.0.0.1:{self.port}"

    def describe(self) -> str:
        """One line for people: where it listens and what ends it."""
        owner = f"exits with process {self.owner_pid}" if self.owner_pid else "runs until stopped"
        return f"embedded S3 server at {self.endpoint_url} (pid {self.pid}, {owner}; state in {self.state_dir})"


def default_state_dir() -> Path:
    """`$SIDECARLAB_HOME/blobstore`, else `build/blobstore` of the checkout, else a per-user temp dir."""
    home = os.environ.get("SIDECARLAB_HOME")
    if home:
        return Path(home).expanduser().resolve() / "blobstore"
    root = project_root()
    if root is not None:
        return root / "build" / "blobstore"
    return Path(tempfile.gettempdir()) / f"sidecarlab-{os.getuid()}" / "blobstore"


def _dir(state_dir: Path | None) -> Path:
    return Path(state_dir).resolve() if state_dir else default_state_dir()


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_our_server(pid: int, state_dir: Path) -> bool:
    """The pid is alive and is the embedded server of this state dir (not a recycled pid)."""
    try:
        args = psutil.Process(pid).cmdline()
    except psutil.NoSuchProcess:  # gone, or a zombie
        return False
    except psutil.AccessDenied:
        return psutil.pid_exists(pid)  # another user's process: the pid file is all there is
    return "sidecarlab.blobstore" in args and str(state_dir) in args


def status(state_dir: Path | None = None) -> ServerStatus | None:
    """The running embedded server of `state_dir`, or None."""
    directory = _dir(state_dir)
    pid = _read_int(directory / _PID_FILE)
    port = _read_int(directory / _PORT_FILE)
    if pid is None or port is None or not _is_our_server(pid, directory):
        return None
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    except OSError:
        return None
    owner = _read_int(directory / _OWNER_FILE)
    return ServerStatus(directory, pid, port, owner or None)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / _LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


_CALLER = -1


def start(state_dir: Path | None = None, owner_pid: int | None = _CALLER) -> ServerStatus:
    """Start the embedded S3 server on 127.0.0.1 (a free port), or return the one already running.

    By default the server exits by itself when the calling process ends (a notebook's kernel, a test);
    `owner_pid=None` keeps it running until `stop()`, another pid ties it to that process.
    """
    require_moto()
    directory = _dir(state_dir)
    owner = os.getpid() if owner_pid == _CALLER else owner_pid
    with _locked(directory):
        running = status(directory)
        if running is not None:
            return running
        for name in (_PID_FILE, _PORT_FILE, _OWNER_FILE):
            (directory / name).unlink(missing_ok=True)
        log_path = directory / _LOG_FILE
        argv = [sys.executable, "-m", "sidecarlab.blobstore", "serve", "--state-dir", str(directory),
                "--owner-pid", str(owner or 0), "--detach"]
        with open(log_path, "ab") as log:
            # The launcher forks the server and exits at once, so the server is nobody's child:
            # no zombie is left in the caller when it later stops.
            launcher = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True, close_fds=True, timeout=_START_DEADLINE)
        if launcher.returncode != 0:
            raise BlobStoreError(f"The embedded S3 server did not start (exit {launcher.returncode}):\n"
                                 f"{_tail(log_path)}")

        def not_up() -> BlobStoreError:
            return BlobStoreError(f"The embedded S3 server did not come up within {_START_DEADLINE:.0f}s. Its "
                                  f"log ({log_path}) ends with:\n{_tail(log_path)}")

        def came_up() -> ServerStatus | None:
            running = status(directory)
            if running is not None:
                return ServerStatus(running.state_dir, running.pid, running.port, running.owner_pid, started=True)
            pid = _read_int(directory / _PID_FILE)
            if pid is not None and not _is_our_server(pid, directory):
                raise not_up()
            return None

        return poll_until(came_up, timeout=_START_DEADLINE, interval=0.05, on_timeout=not_up)


def stop(state_dir: Path | None = None) -> bool:
    """Stop the embedded server of `state_dir`; True if one was running. Idempotent."""
    directory = _dir(state_dir)
    if not directory.is_dir():
        return False
    with _locked(directory):
        pid = _read_int(directory / _PID_FILE)
        was_running = pid is not None and _is_our_server(pid, directory)
        if was_running:
            assert pid is not None
            _terminate(pid, directory)
        for name in (_PID_FILE, _PORT_FILE, _OWNER_FILE):
            (directory / name).unlink(missing_ok=True)
        return was_running


def stop_if_mine(state_dir: Path | None = None) -> bool:
    """Stop the embedded server if it is tied to this process (`start()` from here); True if stopped.

    A notebook's clean-up calls this: it ends the server the notebook started, and leaves alone
    one started from a terminal with `sidecarlab blobstore start`.
    """
    running = status(state_dir)
    if running is None or running.owner_pid != os.getpid():
        return False
    return stop(state_dir)


def _terminate(pid: int, directory: Path) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    try:
        poll_until(lambda: not _is_our_server(pid, directory), timeout=_STOP_DEADLINE, interval=0.05)
    except PollTimeout:  # it ignored SIGTERM
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        poll_until(lambda: not (_is_our_server(pid, directory) and _alive(pid)), timeout=None, interval=0.05)


def _alive(pid: int) -> bool:
    """The process runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return psutil.pid_exists(pid)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------- the server process itself


def _wait_for_exit(pid: int, stop_event: threading.Event) -> None:
    """Set `stop_event` when process `pid` ends (or is a zombie: dead, not yet reaped by its parent)."""
    try:
        owner = psutil.Process(pid)
    except psutil.NoSuchProcess:
        stop_event.set()
        return
    while not stop_event.is_set():
        try:
            # psutil compares the start time too, so a recycled pid does not pass for the owner.
            if not owner.is_running() or owner.status() == psutil.STATUS_ZOMBIE:
                break
            owner.wait(timeout=0.5)
            break
        except psutil.TimeoutExpired:
            continue
        except psutil.NoSuchProcess:
            break
        except psutil.AccessDenied:
            time.sleep(0.5)
    stop_event.set()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _serve(state_dir: Path, owner_pid: int) -> int:
    from moto.server import ThreadedMotoServer

    stop_event = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop_event.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if owner_pid:
        threading.Thread(target=_wait_for_exit, args=(owner_pid, stop_event), daemon=True).start()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _host, port = server.get_host_and_port()
    me = os.getpid()
    _write_atomic(state_dir / _OWNER_FILE, str(owner_pid))
    _write_atomic(state_dir / _PID_FILE, str(me))
    _write_atomic(state_dir / _PORT_FILE, str(port))
    print(f"embedded S3 server pid {me} listening on 127.0.0.1:{port}"
          + (f", exits with process {owner_pid}" if owner_pid else ""), flush=True)
    while not stop_event.wait(0.5):
        pass
    # Only remove the files if they are still ours (a newer server may have replaced them).
    if _read_int(state_dir / _PID_FILE) == me:
        for name in (_PID_FILE, _PORT_FILE, _OWNER_FILE):
            (state_dir / name).unlink(missing_ok=True)
    print(f"embedded S3 server pid {me} stopping", flush=True)
    # Exit without waiting for in-flight requests: the data is in memory and goes with the process.
    os._exit(0)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sidecarlab.blobstore",
                                     description="The embedded S3 server (started by sidecarlab.blobstore.start).")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("--state-dir", required=True, type=Path)
    serve.add_argument("--owner-pid", type=int, default=0)
    serve.add_argument("--detach", action="store_true")
    args = parser.parse_args(argv)
    state_dir = args.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    if args.detach:
        # Double fork: the launcher exits now, the server is re-parented and never becomes a zombie
        # of the process that started it.
        if os.fork() > 0:
            return 0
        os.setsid()
        if os.fork() > 0:
            os._exit(0)
    try:
        return _serve(state_dir, args.owner_pid)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(f"embedded S3 server: no free port on 127.0.0.1 ({exc})", file=sys.stderr)
        raise
