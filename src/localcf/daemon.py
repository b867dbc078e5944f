"""The daemon: one process per state dir that serves the API, stages, runs instances and routes.

`start` is idempotent and returns once the API answers; `stop` shuts down gracefully (containers are
stopped, records stay); a `kill -9` loses no record either, because every write is committed when
it is answered. On start, every app whose desired state is STARTED is brought back.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from .jsondoc import JsonObject
from .paths import StateDir
from .polling import PollTimeout, poll_until

if TYPE_CHECKING:  # the daemon's parts are imported when wired: the client need not load them
    from .cell import Cell
    from .controller import Controller
    from .httpapi import ApiServer
    from .logstream import LogStream
    from .router import Router
    from .runtime import Runtime
    from .stager import Stager
    from .store import Store

SYSTEM_BUILDPACKS_DIR = Path(__file__).resolve().parent / "system_buildpacks"
from .constants import SYSTEM_BUILDPACKS  # noqa: E402

START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0
EXIT_FAILED = 1
"""The daemon's exit status when it cannot start (the cause is in its log)."""
EXIT_LOCKED = 3
"""The daemon's exit status when another daemon already holds the state dir."""
LOG_SHOWN_MAX = 64 * 1024
"""At most this much of the daemon's log goes into a start error (the end, where the cause is)."""


class DaemonError(Exception):
    """The daemon could not be started, reached or stopped."""


class StateDirTaken(DaemonError):
    """Another daemon holds the state dir (its flock on `daemon.lock`)."""


def read_endpoint(state: StateDir) -> JsonObject | None:
    try:
        return json.loads(state.endpoint_file.read_text())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child counts as dead
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def is_running(state: StateDir) -> JsonObject | None:
    """The endpoint record of a live, answering daemon, else None."""
    ep = read_endpoint(state)
    if not ep or not pid_alive(ep.get("pid", -1)):
        return None
    try:
        r = requests.get(f"http://127.0.0.1:{ep['api_port']}/localcf/v1/info",
                         headers={"Authorization": f"bearer {state.token()}"}, timeout=2)
    except requests.RequestException:
        return None
    return ep if r.status_code == 200 else None


def _lock_held(path: Path) -> bool:
    """Whether another process holds an exclusive flock on `path` (which is created if missing)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops our lock, if we got it
    return False


def _log_since(log: Path, offset: int) -> str:
    """What the daemon wrote to its log from `offset` on (this start's lines), for an error message."""
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError as e:
        return f"(its log {log} cannot be read: {e})"
    text = data.decode("utf-8", errors="replace").rstrip()
    if len(text) > LOG_SHOWN_MAX:
        text = f"(earlier lines are in {log})\n" + text[-LOG_SHOWN_MAX:].split("\n", 1)[-1]
    return text or "(it wrote nothing to its log)"


def _log_size(log: Path) -> int:
    try:
        return log.stat().st_size
    except OSError:
        return 0


def _answering(state: StateDir, pid: int | None = None) -> JsonObject | None:
    """The endpoint of the daemon (of `pid`, if given) if it answers now, else None."""
    ep = read_endpoint(state)
    return ep if ep and (pid is None or ep.get("pid") == pid) and is_running(state) else None


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _wait_running(state: StateDir, deadline: float, pid: int | None = None) -> JsonObject | None:
    """The endpoint of the daemon (of `pid`, if given) once it answers, or None at the deadline."""
    try:
        return poll_until(lambda: _answering(state, pid), timeout=_left(deadline), interval=0.02)
    except PollTimeout:
        return None


def _prepare(state: StateDir) -> StateDir:
    if state.root.exists() and not state.root.is_dir():
        raise DaemonError(f"cannot use the state dir {state.root}: it is not a folder. Set LOCALCF_HOME to "
                          "a folder you can write, or move that file away.")
    try:
        state.ensure()
        state.token()
    except OSError as e:
        raise DaemonError(f"cannot use the state dir {state.root}: {e}. Set LOCALCF_HOME to a folder "
                          "you can write, or remove what is in the way.") from None
    return state


def start(state: StateDir | None = None, timeout: float = START_TIMEOUT) -> JsonObject:
    """Start the daemon unless it runs; returns its endpoint record.

    Starters take turns (an flock on `start.lock` in the state dir): the first one spawns the
    daemon and waits until it answers; the others then find it running. A starter that finds a
    daemon holding the state dir but not answering yet (still starting) waits for it. If the
    daemon exits while starting, the error carries what it wrote to its log, the cause included."""
    state = _prepare(state or StateDir())
    ep = is_running(state)
    if ep:
        return ep
    deadline = time.monotonic() + timeout
    lock_fd = os.open(state.start_lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:

        def our_turn() -> bool:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False

        poll_until(our_turn, timeout=_left(deadline), interval=0.02, on_timeout=lambda: DaemonError(
            f"another `localcf start` on {state.root} did not finish within {timeout:.0f}s; "
            f"see {state.daemon_log}"))
        ep = is_running(state)
        if ep:
            return ep
        if _lock_held(state.lock_file):
            # a daemon holds the state dir but does not answer yet: it is still starting
            ep = _wait_running(state, deadline)
            if ep:
                return ep
            raise DaemonError(f"a localcf daemon holds {state.root} but did not answer within {timeout:.0f}s; "
                              f"see {state.daemon_log}")
        return _spawn(state, deadline, timeout)
    finally:
        os.close(lock_fd)


def _spawn(state: StateDir, deadline: float, timeout: float) -> JsonObject:
    offset = _log_size(state.daemon_log)
    env = dict(os.environ, LOCALCF_HOME=str(state.root), PYTHONUNBUFFERED="1")
    src = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(state.daemon_log, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "localcf.daemon"], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, env=env, start_new_session=True, close_fds=True)

    def answered() -> JsonObject | None:
        if proc.poll() is not None:
            if proc.returncode == EXIT_LOCKED:
                # another daemon (one started by hand) got the state dir first: use it once it answers
                ep = _wait_running(state, deadline)
                if ep:
                    return ep
            raise DaemonError(f"localcf daemon exited with status {proc.returncode} while starting:\n"
                              f"{_log_since(state.daemon_log, offset)}\n"
                              f"(its log is {state.daemon_log})")
        return _answering(state, proc.pid)

    return poll_until(answered, timeout=_left(deadline), interval=0.02, on_timeout=lambda: DaemonError(
        f"localcf daemon (pid {proc.pid}) did not answer within {timeout:.0f}s; what it wrote:\n"
        f"{_log_since(state.daemon_log, offset)}\n(its log is {state.daemon_log})"))


def stop(state: StateDir | None = None, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop the daemon if it runs; returns whether one was running."""
    state = state or StateDir()
    ep = read_endpoint(state)
    if not ep or not pid_alive(ep.get("pid", -1)):
        state.endpoint_file.unlink(missing_ok=True)
        return False
    pid = ep["pid"]
    os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(PollTimeout):
        poll_until(lambda: not pid_alive(pid), timeout=timeout, interval=0.05)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    state.endpoint_file.unlink(missing_ok=True)
    return True


def dir_digest(path: Path) -> str:
    """A digest of a directory's names, modes and bytes (zip files change with mtimes; this does not)."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if "__pycache__" in p.parts:
            continue
        rel = p.relative_to(path).as_posix()
        h.update(rel.encode() + b"\0" + oct(p.lstat().st_mode).encode() + b"\0")
        if p.is_file() and not p.is_symlink():
            h.update(p.read_bytes())
    return h.hexdigest()


@dataclass
class Parts:
    """The daemon's parts, built by `wire`."""

    store: Store
    logs: LogStream
    runtime: Runtime
    controller: Controller
    cell: Cell
    stager: Stager
    router: Router
    api: ApiServer


def api_port() -> int:
    """The API's port: `$LOCALCF_API_PORT`, else 0 (any free port)."""
    value = os.environ.get("LOCALCF_API_PORT", "").strip()
    if not value:
        return 0
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise DaemonError(f"LOCALCF_API_PORT={value!r} is not a port number (0 to 65535)")
    return int(value)


def read_timeout() -> float:
    """Seconds the API waits on a silent connection: `$LOCALCF_API_READ_TIMEOUT`, else 30."""
    from .httpapi import READ_TIMEOUT
    value = os.environ.get("LOCALCF_API_READ_TIMEOUT", "").strip()
    if not value:
        return READ_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0
    if not seconds > 0:
        raise DaemonError(f"LOCALCF_API_READ_TIMEOUT={value!r} is not a positive number of seconds")
    return seconds


def wire(state: StateDir, info: Callable[[], JsonObject]) -> Parts:
    """Build every part of the daemon in one place, each given what it depends on.

    Nothing runs yet: `Daemon.run` starts the parts once all of them exist."""
    from .api import ApiServer  # localcf.httpapi's server, with localcf.api's handlers registered
    from .assembly import assemble
    from .router import Router, RouterError
    from .runtime import Runtime

    port, timeout = api_port(), read_timeout()  # settings first: a bad one stops us before anything runs
    runtime = Runtime(state.containers)
    # container and staging-task folders a killed daemon left behind go before any container starts
    runtime.reclaim()
    core = assemble(state, runtime=runtime)
    store, logs, controller, cell, stager = core.store, core.logs, core.controller, core.cell, core.stager
    try:
        router = Router(cell, logs.emit, log_batch=logs.emit_many)
    except RouterError as e:
        raise DaemonError(f"the router cannot start: {e}") from None
    try:
        api = ApiServer(controller, state.token(), port=port, info=info, read_timeout=timeout)
    except OSError as e:
        router.shutdown()
        raise DaemonError(f"the API cannot listen on 127.0.0.1:{port}"
                          f"{' (from $LOCALCF_API_PORT)' if port else ''}: {e}") from None
    return Parts(store, logs, runtime, controller, cell, stager, router, api)


class Daemon:
    """Everything that lives in the daemon process."""

    def __init__(self, state: StateDir):
        self.state = state.ensure()
        self._lock_file = open(self.state.lock_file, "w")  # noqa: SIM115 (held for the daemon's life)
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateDirTaken(f"another localcf daemon holds {self.state.root}") from None
        parts = wire(self.state, self.info)
        self.store, self.logs, self.runtime = parts.store, parts.logs, parts.runtime
        self.controller, self.cell, self.stager = parts.controller, parts.cell, parts.stager
        self.router, self.api = parts.router, parts.api
        self.stopping = threading.Event()

    def info(self) -> JsonObject:
        return {
            "name": "localcf", "pid": os.getpid(), "state_dir": str(self.state.root),
            "api_url": self.controller.base_url,
            "router_port": self.router.port,
            "runtime": self.cell.runtime_mode,
            "runtime_notice": self.cell.runtime_notice,
        }

    def seed_buildpacks(self) -> None:
        """Install the shipped system buildpacks, and refresh them when the shipped copy changed."""
        c = self.controller
        for i, name in enumerate(SYSTEM_BUILDPACKS, start=1):
            directory = SYSTEM_BUILDPACKS_DIR / name
            if not directory.is_dir():
                continue
            digest = dir_digest(directory)
            marker = self.state.root / "system-buildpacks" / name
            existing = c.buildpack_by_name(name)
            if existing is None:
                if marker.exists():
                    continue  # installed once, deleted by the user since: respect that
                bp = c.install_buildpack_dir(name, directory, position=i)
            elif marker.exists() and marker.read_text() != digest and not existing.locked:
                from .buildpacks import zip_dir
                tmp = self.state.buildpacks / f"{existing.guid}.refresh"
                zip_dir(directory, tmp)
                bp = c.upload_buildpack(existing.guid, f"{name}.zip", tmp.read_bytes())
                tmp.unlink(missing_ok=True)
            else:
                continue
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(digest)
            del bp

    def run(self) -> None:
        self.stager.resume_interrupted()
        self.seed_buildpacks()
        self.api.serve_in_thread()
        from . import sshproxy, uaa  # Cloud Foundry's own cf CLI: its password, its ssh proxy
        uaa.password(self.state)
        self.ssh_proxy = sshproxy.start_for(self.controller)
        self.router.serve_in_thread()
        self.cell.start()
        ep = {"pid": os.getpid(), "api_port": self.api.server_address[1],
              "router_port": self.router.port}
        tmp = self.state.endpoint_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(ep))
        tmp.replace(self.state.endpoint_file)
        self.state.pid_file.write_text(str(os.getpid()))
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        print(f"localcf daemon {os.getpid()} serving {self.controller.base_url}", flush=True)
        self.stopping.wait()
        self.shutdown()

    def shutdown(self) -> None:
        proxy = getattr(self, "ssh_proxy", None)
        if proxy is not None:
            proxy.stop()
        self.cell.shutdown()
        self.router.shutdown()
        self.api.shutdown()
        ep = read_endpoint(self.state)
        if ep and ep.get("pid") == os.getpid():
            self.state.endpoint_file.unlink(missing_ok=True)
        self.store.close()
        print(f"localcf daemon {os.getpid()} stopped", flush=True)


def main() -> None:
    """The daemon process: exit status 3 when another daemon holds the state dir, 1 when it cannot
    start (the cause, in full, on stderr: the starter shows it)."""
    try:
        daemon = Daemon(StateDir())
    except DaemonError as e:
        print(f"localcf: {e}", file=sys.stderr, flush=True)
        sys.exit(EXIT_LOCKED if isinstance(e, StateDirTaken) else EXIT_FAILED)
    except Exception as e:  # noqa: BLE001 (any failure to start: shown in full, exit 1)
        traceback.print_exc()
        print(f"localcf: the daemon could not start: {e}", file=sys.stderr, flush=True)
        sys.exit(EXIT_FAILED)
    daemon.run()


if __name__ == "__main__":
    main()
