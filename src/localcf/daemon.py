"""The daemon: one process per state dir that serves the API, stages, runs instances and routes.

`start` is idempotent and returns once the API answers; `stop` shuts down gracefully (containers are
stopped, records stay); a `kill -9` loses no record either, because every write is committed when
it is answered. On start, every app whose desired state is STARTED is brought back.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests

from .paths import StateDir

SYSTEM_BUILDPACKS_DIR = Path(__file__).resolve().parent / "system_buildpacks"
SYSTEM_BUILDPACKS = ("python_buildpack", "binary_buildpack")
START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0


class DaemonError(Exception):
    """The daemon could not be started, reached or stopped."""


def read_endpoint(state: StateDir) -> dict[str, Any] | None:
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


def is_running(state: StateDir) -> dict[str, Any] | None:
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


def start(state: StateDir | None = None, timeout: float = START_TIMEOUT) -> dict[str, Any]:
    """Start the daemon unless it runs; returns its endpoint record."""
    state = (state or StateDir()).ensure()
    ep = is_running(state)
    if ep:
        return ep
    state.token()
    log = open(state.daemon_log, "ab")
    env = dict(os.environ, LOCALCF_HOME=str(state.root), PYTHONUNBUFFERED="1")
    src = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen([sys.executable, "-m", "localcf.daemon"], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=log, env=env, start_new_session=True, close_fds=True)
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            # lost the race to another starter, which is fine if that one answers
            ep = is_running(state)
            if ep:
                return ep
            raise DaemonError(f"localcf daemon exited with status {proc.returncode} while starting; "
                              f"see {state.daemon_log}")
        ep = read_endpoint(state)
        if ep and ep.get("pid") == proc.pid and is_running(state):
            return ep
        time.sleep(0.02)
    raise DaemonError(f"localcf daemon did not answer within {timeout:.0f}s; see {state.daemon_log}")


def stop(state: StateDir | None = None, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop the daemon if it runs; returns whether one was running."""
    state = state or StateDir()
    ep = read_endpoint(state)
    if not ep or not pid_alive(ep.get("pid", -1)):
        state.endpoint_file.unlink(missing_ok=True)
        return False
    pid = ep["pid"]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.05)
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


class Daemon:
    """Everything that lives in the daemon process."""

    def __init__(self, state: StateDir):
        from .api import ApiServer
        from .cell import Cell
        from .controller import Controller
        from .logstream import LogStream
        from .router import Router
        from .stager import Stager
        from .store import Store

        self.state = state.ensure()
        self._lock_file = open(self.state.root / "daemon.lock", "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DaemonError(f"another localcf daemon holds {self.state.root}") from None
        self.store = Store(self.state.db)
        self.logs = LogStream(self.store)
        self.controller = Controller(self.state, self.store, self.logs)
        # the cell runs instances and staging tasks in the container runtime; the router fronts it
        self.cell = Cell(self.controller)
        self.controller.cell = self.cell
        self.stager = Stager(self.controller, self.cell.task_runner,
                             air_gapped=os.environ.get("LOCALCF_STAGING_NETWORK") == "none")
        self.controller.stager = self.stager
        self.router = Router(self.cell, self.logs.emit, log_batch=self.logs.emit_many)
        self.api = ApiServer(self.controller, self.state.token(), info=self.info)
        self.stopping = threading.Event()

    def info(self) -> dict[str, Any]:
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
        self.cell.shutdown()
        self.router.shutdown()
        self.api.shutdown()
        ep = read_endpoint(self.state)
        if ep and ep.get("pid") == os.getpid():
            self.state.endpoint_file.unlink(missing_ok=True)
        self.store.close()
        print(f"localcf daemon {os.getpid()} stopped", flush=True)


def main() -> None:
    try:
        Daemon(StateDir()).run()
    except DaemonError as e:
        print(f"localcf: {e}", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
