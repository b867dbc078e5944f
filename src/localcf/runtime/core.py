"""The runtime: chooses the mode once, creates containers, runs staging tasks."""

from __future__ import annotations

import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from localcf import container_init

from .base import (
    _ID,
    HOME_INSIDE,
    MODES,
    ROUTED_PORT,
    ContainerError,
    ContainerSpec,
    ExitCallback,
    IsolationUnavailable,
    OutputCallback,
    TaskOutputCallback,
    _rmtree,
    free_port,
)
from .container import Container, _short_relay_path
from .probe import (
    SYSTEM_DIRS,
    _chown_tree,
    _covered,
    _host_ids,
    _init_argv,
    _ns_flags,
    _rootfs_cfg,
    _unshare,
    interpreter_paths,
    namespace_support,
)
from .tasks import _linked_dirs, _pump_task

log = logging.getLogger("localcf.runtime")


def _load_prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


class _Spawner:
    """Starts children from one thread that lives as long as the process.

    PR_SET_PDEATHSIG fires when the parent *thread* ends, so a container started from a
    short-lived worker thread would die with that thread.
    """

    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._prctl = _load_prctl()

    def popen(self, argv: list[str], deathsig: int, **kwargs) -> subprocess.Popen:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="localcf-spawner", daemon=True)
                self._thread.start()
        done = threading.Event()
        box: list = []
        self._jobs.put((argv, deathsig, kwargs, box, done))
        done.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    def _serve(self) -> None:
        while True:
            argv, deathsig, kwargs, box, done = self._jobs.get()
            try:
                box.append(subprocess.Popen(argv, preexec_fn=self._child_setup(deathsig), **kwargs))
            except BaseException as exc:  # handed to the caller's thread
                box.append(exc)
            done.set()

    def _child_setup(self, deathsig: int) -> Callable[[], None]:
        prctl, parent = self._prctl, os.getpid()

        def setup() -> None:
            os.setsid()  # a Ctrl-C meant for the daemon's terminal is not the container's
            if prctl is not None:
                prctl(1, deathsig, 0, 0, 0)  # PR_SET_PDEATHSIG
                if os.getppid() != parent:
                    os._exit(1)  # the daemon died before the signal was armed

        return setup


class Runtime:
    """Creates containers and runs staging tasks, in one mode chosen once."""

    mode: str
    notice: str | None

    def __init__(self, base_dir: Path, mode: str | None = None):
        """`mode` None: `$LOCALCF_RUNTIME` if set, else namespaces when they work here."""
        self.base_dir = Path(base_dir).expanduser().resolve()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        forced = mode or os.environ.get("LOCALCF_RUNTIME") or None
        if forced is not None and forced not in MODES:
            raise ValueError(f"unknown container runtime mode {forced!r} (from "
                             f"{'the mode argument' if mode else 'LOCALCF_RUNTIME'}): "
                             "use 'namespaces' or 'process', or leave it unset to choose automatically")
        self.home_notice: str | None = None
        if forced == "process":
            self.mode = "process"
            self.notice = ("process mode chosen by LOCALCF_RUNTIME=process or the caller: no container "
                           "isolation, apps run as the user running localcf and can reach everything that user can")
        else:
            support = namespace_support(self.base_dir)
            if support.ok:
                self.mode, self.notice = "namespaces", None
            elif forced == "namespaces":
                raise ContainerError(f"namespaces mode is not available here: {support.reason}. "
                                     "Unset LOCALCF_RUNTIME or set it to 'process' to run without isolation.")
            else:
                self.mode = "process"
                self.notice = (f"Linux namespaces are not available ({support.reason}); containers run "
                               "as plain processes, without isolation: apps run as the user running "
                               "localcf and can reach everything that user can")
        self._spawner = _Spawner()
        self._containers: dict[str, Container] = {}
        self._lock = threading.Lock()

    # Where things will be, for the caller's environment ------------------------------------
    def allocate_port(self) -> int:
        """The routed port of the next container: 8080 inside a namespace, else a free host port."""
        return ROUTED_PORT if self.mode == "namespaces" else free_port()

    def container_dir(self, container_id: str) -> Path:
        """The host directory of a container (its droplet is in `vcap/`)."""
        if not _ID.fullmatch(container_id or ""):
            raise ValueError(f"container id {container_id!r} is not valid: use letters, digits, '.', '_' "
                             "or '-' (at most 64), for example an instance guid")
        return self.base_dir / container_id

    def home_root(self, container_id: str) -> str:
        """Where the droplet is, as the container's processes see it: /home/vcap or a host path."""
        if self.mode == "namespaces":
            return HOME_INSIDE
        return str(self.container_dir(container_id) / "vcap")

    def task_paths(self, binds: dict[Path, str] | None) -> dict[Path, str]:
        """Where a staging task sees each bound host path; build its argv and env with these."""
        if not binds:
            return {}
        if self.mode == "namespaces":
            return {Path(host): inside for host, inside in binds.items()}
        return {Path(host): str(Path(host).resolve()) for host in binds}

    # Containers ---------------------------------------------------------------------------
    def create(self, spec: ContainerSpec, on_output: OutputCallback, on_exit: ExitCallback) -> Container:
        """Make the container and unpack the droplet; `Container.start()` starts the processes."""
        names = [p.name for p in spec.processes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"container {spec.id}: process names must be unique, {', '.join(dupes)} repeats")
        container = Container(self, spec, on_output, on_exit)
        with self._lock:
            if spec.id in self._containers:
                raise ContainerError(f"container {spec.id} already exists: destroy it first")
            self._containers[spec.id] = container
        try:
            container._launch()
        except BaseException:
            container.destroy(graceful=0)
            raise
        return container

    def containers(self) -> list[Container]:
        """The containers created and not yet destroyed."""
        with self._lock:
            return list(self._containers.values())

    def close(self, graceful: float = 10.0) -> None:
        """Destroy every container (the daemon's shutdown)."""
        for container in self.containers():
            container.destroy(graceful=graceful)

    def reclaim(self) -> list[Path]:
        """Remove what containers and staging tasks of a daemon that died (even by SIGKILL) left:
        their directories and routed-port sockets. Call it at daemon start, before creating
        containers; a directory whose init still runs is kept. Returns what was removed."""
        import psutil  # see procfs: only where used

        with self._lock:
            ours = {c.dir for c in self._containers.values()}
        live: set[str] = set()
        for proc in psutil.process_iter(["cmdline"]):
            cmd = proc.info.get("cmdline") or []
            if any(str(a).endswith("/init.json") for a in cmd):
                live.update(str(Path(a).parent) for a in cmd if str(a).endswith("/init.json"))
        removed = []
        candidates = [p for p in self.base_dir.iterdir() if p.name not in (".tasks", ".lifecycle")] \
            if self.base_dir.is_dir() else []
        tasks = self.base_dir / ".tasks"
        if tasks.is_dir():
            candidates += list(tasks.iterdir())
        for path in candidates:
            if path in ours or str(path) in live or not path.is_dir():
                continue
            if path.parent == self.base_dir and not (_ID.fullmatch(path.name) or path.name.startswith(".probe-")):
                continue  # not something the runtime made
            _rmtree(path)
            short = _short_relay_path(path)
            if short is not None:
                try:
                    short.unlink()
                except OSError:
                    pass
            removed.append(path)
        return removed

    def _forget(self, container: Container) -> None:
        with self._lock:
            if self._containers.get(container.id) is container:
                del self._containers[container.id]

    def _spawn_init(self, cfg: dict, where: Path, *, net: bool, **kwargs) -> subprocess.Popen:
        init = _init_argv(cfg, where)
        if self.mode == "namespaces":
            argv = [_unshare() or "unshare", *_ns_flags(), *(["--net"] if net else []), *init]
            # unshare passes the kill on to the init, and the PID namespace to everything in it.
            return self._spawner.popen(argv, signal.SIGKILL, cwd=where, **kwargs)
        # SIGTERM lets the process-mode init kill its process groups first.
        return self._spawner.popen(init, signal.SIGTERM, cwd=where, **kwargs)

    # Staging tasks ------------------------------------------------------------------------
    def run_task(self, argv: list[str], *, env: dict[str, str], binds: dict[Path, str] | None = None,
                 network: str = "host", on_output: TaskOutputCallback, cwd: str | None = None,
                 timeout: float | None = None) -> int:
        """Run a staging task to its end and return its exit status (128+N if killed by signal N).

        `binds` maps host paths to paths under /home/vcap inside; `task_paths(binds)` says which
        path to put in argv (they are the host paths in process mode). `network="none"` runs in an
        empty network namespace (air-gapped) and needs namespaces mode.
        """
        if network not in ("host", "none"):
            raise ValueError(f"network must be 'host' or 'none', not {network!r}")
        ns = self.mode == "namespaces"
        if network == "none" and not ns:
            raise IsolationUnavailable(f"an air-gapped staging task needs namespaces mode; {self.notice}")
        task_id = "task-" + uuid.uuid4().hex[:12]
        tdir = self.base_dir / ".tasks" / task_id
        root = tdir / "vcap"
        root.mkdir(parents=True)
        try:
            cfg = {"kind": "task", "ns": ns, "net": network == "none", "hostname": task_id,
                   "root": str(root), "argv": list(argv), "cwd": cwd}
            if ns:
                cfg.update(_rootfs_cfg(tdir, root))
                cfg["binds"] = (self._task_binds(binds, root) + _linked_dirs(binds)
                                + self._lifecycle_binds())
                ids = _host_ids()
                _chown_tree(root, ids)
                for host in (binds or {}):
                    _chown_tree(Path(host), ids)
                # The task's home is the container's, not the host user's.
                env = {**env, "HOME": HOME_INSIDE}
            popen = self._spawn_init(cfg, tdir, net=network == "none", stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(env))
            timed_out = _pump_task(popen, on_output, timeout, graceful_kill=not ns)
            status = popen.wait()
            if timed_out:
                raise TimeoutError(f"staging task {argv[0]} ran longer than {timeout:g} s and was killed")
            return 128 - status if status < 0 else status
        finally:
            shutil.rmtree(tdir, ignore_errors=True)

    def _task_binds(self, binds: dict[Path, str] | None, root: Path) -> list[list]:
        out = []
        for host, inside in (binds or {}).items():
            host = Path(host).resolve()
            rel = PurePosixPath(inside)
            if not rel.is_absolute() or rel == PurePosixPath(HOME_INSIDE) or \
                    PurePosixPath(HOME_INSIDE) not in rel.parents or ".." in rel.parts:
                raise ValueError(f"bind target {inside!r} for {host}: staging binds go under {HOME_INSIDE}/, "
                                 f"for example {HOME_INSIDE}/app")
            if not host.exists():
                raise ValueError(f"bind source {host} does not exist")
            target = root / rel.relative_to(HOME_INSIDE)
            if host.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch()
            out.append([str(host), inside, False])
        return out

    def _lifecycle_binds(self) -> list[list]:
        """The staging builder (`python -m localcf.builder`), as CF's lifecycle: read-only, and
        alone: the rest of localcf's source is not in the container.

        Where localcf is installed under the interpreter's prefix, that view already holds it.
        """
        package = Path(container_init.__file__).resolve().parent
        if _covered(str(package), interpreter_paths() + list(SYSTEM_DIRS)):
            return []
        lifecycle = self.base_dir / ".lifecycle"
        wanted = {"__init__.py": package / "__init__.py", "builder.py": package / "builder.py"}
        target = lifecycle / "localcf"
        with self._lock:
            target.mkdir(parents=True, exist_ok=True)
            for name, src in wanted.items():
                data = src.read_bytes()
                dest = target / name
                if not dest.is_file() or dest.read_bytes() != data:
                    tmp = target / f".{name}.{uuid.uuid4().hex[:8]}"
                    tmp.write_bytes(data)
                    tmp.chmod(0o644)
                    os.replace(tmp, dest)
        return [[str(target), str(package), True]]
