"""Containers: one per app instance or staging task, in `namespaces` or `process` mode.

`namespaces` (Linux, unprivileged): user, pid, net, mount and uts namespaces made by `unshare`,
with our init (`localcf.container_init`) as PID 1. The droplet shows at /home/vcap, `ps aux`
inside lists the container's processes only, and ports inside are unreachable from the host
except through the init: the routed port's relay (a unix socket, like Diego's envoy) and
`Container.connect` (a socket opened inside and handed over, like `cf ssh -L`).

`process` (macOS, hosts that forbid namespaces, or `LOCALCF_RUNTIME=process`): the same init runs
as a plain supervisor; processes share the host's network and filesystem, the droplet stays in
the container's host directory, and the routed port is a free host port (`allocate_port`).

Before `create`, the caller asks the runtime where the container will be: `home_root(id)` for
HOME, TMPDIR, DEPS_DIR..., and `allocate_port()` for PORT and `ContainerSpec.routed_port`.

If the daemon dies, even by SIGKILL, its containers die with it: `unshare` (or the process-mode
init) gets PR_SET_PDEATHSIG, `unshare --kill-child` passes it on to the init, the init kills
everything when its control socket closes, and a PID namespace dies with its PID 1.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Callable

from localcf import container_init
from localcf.container_init import MAX_LINE, recv_frame, send_frame
from localcf.launcher import launcher_argv

log = logging.getLogger(__name__)

MODES = ("namespaces", "process")
ROUTED_PORT = 8080
HOME_INSIDE = "/home/vcap"
INIT_SCRIPT = Path(container_init.__file__).resolve()

OutputCallback = Callable[[str, str, str], None]   # (process name, "OUT"|"ERR", line)
ExitCallback = Callable[[str, int], None]          # (process name, exit status)
TaskOutputCallback = Callable[[str, str], None]    # ("OUT"|"ERR", line)

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_NS_FLAGS = ["--pid", "--kill-child", "--mount", "--propagation", "private", "--uts"]
# Run by an ordinary user, the container's root is that user (the only id it may map). Run by
# root, the init builds the root filesystem as host root, then leaves for a user namespace whose
# root is this unprivileged host id: nothing in a container is ever host root.
CONTAINER_HOST_ID = 200000
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


class ContainerError(Exception):
    """A container could not be created, started or reached."""


class _Halted(ContainerError):
    """The init refused to start a process because the container is stopping."""


class IsolationUnavailable(ContainerError):
    """What was asked needs namespaces mode, and this runtime runs in process mode."""


@dataclass
class ProcessDef:
    """One process of a container: the app ("web") or a sidecar."""

    name: str               # unique inside the container
    command: str            # start command, run through the launcher
    env: dict[str, str]     # the whole environment, computed by the caller


@dataclass
class ContainerSpec:
    """What to run in a container."""

    id: str                 # instance guid; also the hostname inside
    droplet: Path           # droplet .tgz, unpacked at home_root()
    processes: list[ProcessDef]
    routed_port: int = ROUTED_PORT   # use Runtime.allocate_port()


@dataclass(frozen=True)
class NamespaceSupport:
    """What the one-time probe found about unprivileged namespaces on this host."""

    ok: bool
    reason: str | None = None         # why namespaces cannot be used
    home: bool = False                # /home/vcap can be made inside
    home_reason: str | None = None    # why it cannot


# The probe answers a question about the host, which does not change while we run.
_probe_lock = threading.Lock()
_probe_result: NamespaceSupport | None = None


def _init_argv(cfg: dict, where: Path) -> list[str]:
    """The init's command line; its config goes to a file so `ps` inside stays readable."""
    config = where / "init.json"
    config.write_text(json.dumps(cfg))
    # -I: neither the environment nor the script's directory (src/localcf) shapes sys.path;
    # -S: no site import, the init needs the standard library only (and starts faster).
    return [sys.executable, "-I", "-S", str(INIT_SCRIPT), str(config)]


def _ns_flags() -> list[str]:
    """unshare's options: a user namespace of our own unless we are root (the init drops later)."""
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return [*user, *_NS_FLAGS]


def _host_ids() -> tuple[int, int] | None:
    """The host uid:gid that a container's root maps to when localcf runs as root, else None."""
    return (CONTAINER_HOST_ID, CONTAINER_HOST_ID) if os.geteuid() == 0 else None


def _chown_tree(path: Path, ids: tuple[int, int] | None) -> None:
    """Hand a container's own directory to its host id (run as root only)."""
    if ids is None:
        return
    uid, gid = ids
    os.lchown(path, uid, gid)
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                os.lchown(os.path.join(top, name), uid, gid)
            except FileNotFoundError:
                pass


def _covered(path: str, by: list[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in by)


def interpreter_paths() -> list[str]:
    """Directories a container sees read-only besides the stack's: the Python localcf runs with,
    which the system buildpacks give apps and the staging builder runs on."""
    found: list[str] = []
    for raw in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                os.path.dirname(os.path.realpath(sys.executable))):
        path = os.path.realpath(raw)
        if os.path.isdir(path) and path != "/" and not _covered(path, list(SYSTEM_DIRS)):
            found.append(path)
    found.sort(key=len)
    out: list[str] = []
    for path in found:
        if not _covered(path, out):
            out.append(path)
    return out


def _rootfs_cfg(where: Path, root: Path) -> dict:
    """The root filesystem part of an init's config (namespaces mode)."""
    rootfs = where / "rootfs"
    rootfs.mkdir(exist_ok=True)
    ids = _host_ids()
    return {"rootfs": str(rootfs), "root": str(root), "system": [d for d in SYSTEM_DIRS if os.path.lexists(d)],
            "readonly": interpreter_paths(), "drop": list(ids) if ids else None}


def _unshare() -> str | None:
    return shutil.which("unshare") or next(
        (p for p in ("/usr/bin/unshare", "/bin/unshare") if os.access(p, os.X_OK)), None)


def namespace_support(scratch: Path) -> NamespaceSupport:
    """Whether unprivileged namespaces work here: checked once per process, by trying them."""
    global _probe_result
    with _probe_lock:
        if _probe_result is None:
            _probe_result = _probe(Path(scratch))
        return _probe_result


def _probe(scratch: Path) -> NamespaceSupport:
    if not sys.platform.startswith("linux"):
        return NamespaceSupport(False, f"Linux namespaces do not exist on {sys.platform}")
    unshare = _unshare()
    if unshare is None:
        return NamespaceSupport(False, "the unshare command (util-linux) is not installed")
    scratch.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".probe-", dir=scratch))
    try:
        (tmp / "vcap").mkdir()
        _chown_tree(tmp / "vcap", _host_ids())
        cfg = {"kind": "probe", "ns": True, "net": True, "hostname": "localcf-probe",
               **_rootfs_cfg(tmp, tmp / "vcap")}
        try:
            done = subprocess.run([unshare, *_ns_flags(), "--net", *_init_argv(cfg, tmp)],
                                  capture_output=True, text=True, timeout=20,
                                  stdin=subprocess.DEVNULL, cwd=tmp)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return NamespaceSupport(False, f"unshare could not run: {exc}")
        try:
            found = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            err = done.stderr.strip().splitlines()
            return NamespaceSupport(False, err[-1] if err else f"unshare exited with {done.returncode}")
        if not found.get("ok"):
            return NamespaceSupport(False, found.get("error") or "the namespace setup failed")
        return NamespaceSupport(True, None, True, None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
    def create(self, spec: ContainerSpec, on_output: OutputCallback, on_exit: ExitCallback) -> "Container":
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

    def containers(self) -> list["Container"]:
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
        import psutil

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

    def _forget(self, container: "Container") -> None:
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

    def _task_binds(self, binds: dict[Path, str] | None, root: Path) -> list[list[str]]:
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
            fd = key.fileobj.fileno()
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


def _text(line: bytes) -> str:
    if line.endswith(b"\r"):
        line = line[:-1]
    return line.decode("utf-8", "replace")


def _short_relay_path(container_dir: Path, make: bool = False) -> Path | None:
    """The routed-port socket of a container whose directory's path is too long for one: in a
    directory of our own under the temp dir (None if that directory is not private to us)."""
    short = Path(tempfile.gettempdir()) / f"localcf-{os.getuid()}"
    try:
        if make:
            short.mkdir(mode=0o700, exist_ok=True)
        st = short.lstat()
        private = short.is_dir() and not short.is_symlink() and st.st_uid == os.getuid() \
            and (st.st_mode & 0o077) == 0
    except OSError:
        private = False
    if not private:
        return None
    return short / f"{hashlib.sha256(str(container_dir).encode()).hexdigest()[:20]}.sock"


def _listen_unix(path: str) -> socket.socket:
    """A listening unix socket that only our user may connect to (the router, health checks)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    os.chmod(path, 0o600)  # before listen: nobody can connect until then
    s.listen(128)
    return s


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class _Pending:
    event: threading.Event = field(default_factory=threading.Event)
    reply: dict | None = None
    fds: list[int] = field(default_factory=list)
    on_reply: Callable[[dict], None] | None = None


class Container:
    """One app instance: its processes, exec sessions and ports. Made by `Runtime.create`."""

    id: str
    root: Path   # host path of the droplet (what is /home/vcap inside in namespaces mode)
    dir: Path    # the container's host directory
    port: int    # the routed port
    mode: str

    def __init__(self, runtime: Runtime, spec: ContainerSpec, on_output: OutputCallback,
                 on_exit: ExitCallback):
        self.id = spec.id
        self.spec = spec
        self.mode = runtime.mode
        self.dir = runtime.container_dir(spec.id)
        self.root = self.dir / "vcap"
        self.port = spec.routed_port
        self._runtime = runtime
        self._on_output, self._on_exit = on_output, on_exit
        self._home = runtime.home_root(spec.id)
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._running: dict[str, int] = {}          # name -> pid as the init sees it
        self._execs: dict[str, ExecProcess] = {}
        self._events: queue.Queue = queue.Queue()
        self._ready = threading.Event()
        self._ready_info: dict = {}
        self._dead = threading.Event()
        self._destroyed = False
        self._started = False
        self._halted = False
        self._ctrl: socket.socket | None = None
        self._popen: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._dispatcher: threading.Thread | None = None
        self._relay_path: str | None = None
        self._relay_tmp: str | None = None   # a directory of our own to remove
        self._relay_own: str | None = None   # a socket outside our directory to remove
        self._init_pid: int | None = None
        self._cpu_sample: tuple[float, float] | None = None

    def __repr__(self) -> str:
        return f"<Container {self.id} {self.mode}>"

    def __enter__(self) -> "Container":
        return self

    def __exit__(self, *exc) -> None:
        self.destroy(graceful=1.0)

    # Making it -----------------------------------------------------------------------------
    def _launch(self) -> None:
        droplet = Path(self.spec.droplet)
        if not droplet.is_file():
            raise ContainerError(f"container {self.id}: droplet {droplet} does not exist or is not a file")
        if self.dir.exists():
            _rmtree(self.dir)  # left by a daemon that died: its container died with it
        self.root.mkdir(parents=True)
        ns = self.mode == "namespaces"
        relay: socket.socket | None = None
        if ns:
            self._relay_path = self._choose_relay_path()
            relay = _listen_unix(self._relay_path)
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._ctrl = parent_end
        passed = [child_end.fileno()] + ([relay.fileno()] if relay is not None else [])
        cfg = {"kind": "container", "id": self.id, "ns": ns, "net": True, "hostname": self.id,
               "root": str(self.root), "ctrl": child_end.fileno(),
               "relay_fd": relay.fileno() if relay is not None else None, "relay_port": self.port}
        if ns:
            cfg.update(_rootfs_cfg(self.dir, self.root))
            _chown_tree(self.root, _host_ids())
        try:
            with open(self.dir / "init.log", "wb") as errlog:
                self._popen = self._runtime._spawn_init(
                    cfg, self.dir, net=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=errlog, env={"PATH": os.environ.get("PATH", os.defpath)},
                    pass_fds=tuple(passed))
        finally:
            child_end.close()
            if relay is not None:
                relay.close()
        self._reader = threading.Thread(target=self._read_loop, name=f"container-{self.id[:8]}-reader",
                                        daemon=True)
        self._dispatcher = threading.Thread(target=self._dispatch_loop,
                                            name=f"container-{self.id[:8]}-events", daemon=True)
        self._reader.start()
        self._dispatcher.start()
        # The droplet unpacks while the init boots: the bind mount shows files as they land.
        _unpack(droplet, self.root)
        for sub in ("tmp", "logs"):
            (self.root / sub).mkdir(exist_ok=True)
        if ns:
            _chown_tree(self.root, _host_ids())
        if not self._ready.wait(30) or self._ready_info.get("ev") != "ready":
            why = self._ready_info.get("error") or self._init_log() or "it did not report ready within 30 s"
            raise ContainerError(f"container {self.id}: the init could not set it up: {why}")

    def _choose_relay_path(self) -> str:
        path = str(self.dir / "routed.sock")
        if len(path.encode()) <= 100:  # sun_path holds 108 bytes
            return path
        # Too long for a socket address: a short, stable name in a private directory, so that
        # the socket of a container whose daemon was SIGKILLed is replaced when it comes back.
        own = _short_relay_path(self.dir, make=True)
        if own is None:
            tmp = Path(tempfile.mkdtemp(prefix="localcf-"))
            self._relay_tmp = str(tmp)
            own = tmp / "routed.sock"
        self._relay_own = str(own)
        return self._relay_own

    def _init_log(self) -> str:
        try:
            lines = (self.dir / "init.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""

    # The control channel ----------------------------------------------------------------------
    def _read_loop(self) -> None:
        ctrl = self._ctrl
        try:
            while True:
                frame = recv_frame(ctrl)
                if frame is None:
                    break
                header, body, fds = frame
                if "re" in header:
                    self._resolve(header, fds)
                    continue
                ev = header.get("ev")
                if ev == "out":
                    self._events.put((self._on_output, (header["name"], header["stream"], _text(body))))
                elif ev == "exit":
                    with self._lock:
                        self._running.pop(header["name"], None)
                    self._events.put((self._on_exit, (header["name"], int(header["status"]))))
                elif ev == "xexit":
                    with self._lock:
                        proc = self._execs.pop(header["xid"], None)
                    if proc is not None:
                        proc._exited(int(header["status"]))
                elif ev in ("ready", "failed"):
                    self._ready_info = header
                    self._ready.set()
                for fd in fds:
                    os.close(fd)
        except (OSError, ValueError) as exc:
            log.debug("container %s: control channel broke: %s", self.id, exc)
        finally:
            self._init_gone()

    def _resolve(self, header: dict, fds: list[int]) -> None:
        with self._lock:
            pending = self._pending.pop(header["re"], None)
        if pending is None:
            for fd in fds:
                os.close(fd)  # the caller gave up waiting
            return
        pending.reply, pending.fds = header, fds
        if pending.on_reply is not None and "error" not in header:
            pending.on_reply(header)
        pending.event.set()

    def _init_gone(self) -> None:
        self._dead.set()
        self._ready.set()
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
            running, self._running = dict(self._running), {}
            execs, self._execs = list(self._execs.values()), {}
        for p in pending:
            p.reply = {"error": "the container's init is gone", "errno": 0}
            p.event.set()
        if self.mode == "process":
            # Without a PID namespace, what the init could not kill (it was SIGKILLed) is ours to kill.
            for pid in running.values():
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
        # The processes died with their init: as Diego would see a SIGKILL.
        for name in running:
            self._events.put((self._on_exit, (name, 128 + signal.SIGKILL)))
        for proc in execs:
            proc._exited(128 + signal.SIGKILL)
        self._events.put(None)

    def _dispatch_loop(self) -> None:
        # Callbacks run here, never on the reader: a callback may call stop(), which needs the reader.
        while True:
            item = self._events.get()
            if item is None:
                return
            fn, args = item
            try:
                fn(*args)
            except Exception:
                log.exception("container %s: callback %r failed", self.id, fn)

    def _flush_events(self, timeout: float = 5.0) -> None:
        """Wait until the callbacks queued so far have run (unless called from one of them)."""
        if threading.current_thread() is self._dispatcher or self._dead.is_set():
            return
        done = threading.Event()
        self._events.put((done.set, ()))
        done.wait(timeout)

    def _request(self, header: dict, fds: list[int] | tuple = (), timeout: float = 30.0,
                 on_reply: Callable[[dict], None] | None = None) -> tuple[dict, list[int]]:
        if self._dead.is_set() or self._ctrl is None:
            raise ContainerError(f"container {self.id} is not running (its init is gone)")
        pending = _Pending(on_reply=on_reply)
        with self._lock:
            rid = next(self._ids)
            self._pending[rid] = pending
        header = {**header, "id": rid}
        try:
            with self._send_lock:
                send_frame(self._ctrl, header, b"", fds)
        except OSError as exc:
            with self._lock:
                self._pending.pop(rid, None)
            raise ContainerError(f"container {self.id}: cannot reach its init: {exc}") from exc
        if not pending.event.wait(timeout):
            with self._lock:
                self._pending.pop(rid, None)
            raise ContainerError(f"container {self.id}: the init did not answer {header['op']!r} "
                                 f"within {timeout:g} s")
        reply = pending.reply or {}
        if "error" in reply:
            if reply.get("errno"):
                args = [reply["errno"], reply["error"]] + ([reply["filename"]] if reply.get("filename") else [])
                raise OSError(*args)
            kind = _Halted if reply.get("halted") else ContainerError
            raise kind(f"container {self.id}: {header['op']}: {reply['error']}")
        return reply, pending.fds

    # Processes -------------------------------------------------------------------------------
    def home_root(self) -> str:
        """Where the droplet is for the processes: /home/vcap, or the host path in process mode."""
        return self._home

    def start(self) -> None:
        """Start every process of the spec through the launcher.

        If `stop()` comes first (a codependent process already ended), the processes not yet
        started are not started, and get no on_exit.
        """
        if self._started:
            raise ContainerError(f"container {self.id} was already started")
        self._started = True
        bash = shutil.which("bash") or "/bin/bash"
        app_dir = f"{self._home}/app"
        for proc in self.spec.processes:
            if self._halted:
                return

            def running(reply: dict, name: str = proc.name) -> None:
                with self._lock:
                    self._running[name] = int(reply["pid"])

            try:
                self._request({"op": "spawn", "name": proc.name,
                               "argv": launcher_argv(bash, app_dir, proc.command),
                               "env": dict(proc.env), "cwd": self._home}, on_reply=running)
            except _Halted:
                return
            except OSError as exc:
                raise ContainerError(f"container {self.id}: cannot start process {proc.name!r}: {exc}") from exc

    def kill_process(self, name: str, sig: int) -> None:
        """Send `sig` to one process (its main pid), as `kill -<sig>` inside would."""
        self._request({"op": "signal", "name": name, "sig": int(sig)})

    def pids(self) -> dict[str, int]:
        """Host pids of the processes still running, by name."""
        with self._lock:
            running = dict(self._running)
        if self.mode == "process" or not running:
            return running
        inside = _ns_pids(self._init_host_pid())
        return {name: inside[pid] for name, pid in running.items() if pid in inside}

    def running(self) -> list[str]:
        """Names of the processes that have not exited."""
        with self._lock:
            return list(self._running)

    def stop(self, graceful: float = 10.0) -> None:
        """SIGTERM every process, SIGKILL what is left after `graceful` seconds; returns when all exited."""
        self._halted = True
        if self._dead.is_set() or self._ctrl is None:
            return
        try:
            self._request({"op": "stop", "graceful": float(graceful)}, timeout=graceful + 30)
        except ContainerError:
            if not self._dead.is_set():
                raise
        self._flush_events()

    def destroy(self, graceful: float = 10.0) -> None:
        """Stop, end the init and remove the container's directories. Safe to call twice."""
        with self._lock:
            if self._destroyed:
                return
            self._destroyed = True
        try:
            if self._ready.is_set() and not self._dead.is_set():
                self.stop(graceful)
        except ContainerError as exc:
            log.warning("container %s: stop before destroy failed: %s", self.id, exc)
        finally:
            self._teardown()

    def _teardown(self) -> None:
        if self._ctrl is not None:
            try:
                self._ctrl.shutdown(socket.SHUT_RDWR)  # the init sees the end and takes everything down
            except OSError:
                pass
        if self._popen is not None:
            try:
                self._popen.wait(5)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait()
        for thread in (self._reader, self._dispatcher):
            if thread is not None and thread is not threading.current_thread():
                thread.join(5)
        if self._ctrl is not None:
            self._ctrl.close()
        _rmtree(self.dir)
        if self._relay_own:
            try:
                os.unlink(self._relay_own)
            except OSError:
                pass
        if self._relay_tmp:
            shutil.rmtree(self._relay_tmp, ignore_errors=True)
        self._runtime._forget(self)

    # Reaching inside ---------------------------------------------------------------------------
    def connect(self, port: int | None = None, timeout: float = 2.0) -> socket.socket:
        """A connected stream to `port` (default: the routed port) inside the container."""
        port = self.port if port is None else int(port)
        if self.mode == "process":
            s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        else:
            _, fds = self._request({"op": "connect", "port": port, "timeout": timeout}, timeout=timeout + 5)
            s = socket.socket(fileno=fds[0])
        s.settimeout(None)
        return s

    def port_open(self, port: int, timeout: float = 1.0) -> bool:
        """The "port" health check: does something accept connections on `port` inside?"""
        try:
            self.connect(port, timeout).close()
            return True
        except (OSError, ContainerError):
            return False

    def http_ok(self, port: int, path: str, timeout: float = 1.0) -> bool:
        """The "http" health check: does GET `path` on `port` inside answer 2xx?"""
        try:
            with self.connect(port, timeout) as s:
                s.settimeout(timeout)
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
                head = b""
                while b"\r\n" not in head and len(head) < 4096:
                    data = s.recv(4096)
                    if not data:
                        break
                    head += data
        except (OSError, ContainerError):
            return False
        parts = head.split(b"\r\n", 1)[0].split()
        return len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1][:1] == b"2" and len(parts[1]) == 3

    def upstream(self) -> str:
        """Where the router sends requests: "unix:<relay socket>" or "127.0.0.1:<port>"."""
        if self._relay_path:
            return f"unix:{self._relay_path}"
        return f"127.0.0.1:{self.port}"

    def exec(self, argv: list[str], env: dict[str, str], tty: bool = False,
             cwd: str | None = None) -> "ExecProcess":
        """Run `argv` inside (cf ssh); with `tty`, on a new pseudo-terminal (`ExecProcess.pty`)."""
        xid = uuid.uuid4().hex[:16]
        mine: list[int] = []
        theirs: list[int] = []
        if not tty:  # with a tty, the init opens the terminal inside and hands its master back
            in_r, in_w = os.pipe()
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            mine, theirs = [in_w, out_r, err_r], [in_r, out_w, err_w]
        proc = ExecProcess(self, xid, list(argv), mine, tty)
        with self._lock:
            self._execs[xid] = proc
        try:
            reply, fds = self._request({"op": "exec", "xid": xid, "argv": list(argv), "env": dict(env),
                                        "cwd": cwd or self._home, "tty": bool(tty)}, theirs)
        except BaseException:
            with self._lock:
                self._execs.pop(xid, None)
            proc._close()
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        if tty:
            if not fds:
                raise ContainerError(f"container {self.id}: exec: the init sent no terminal")
            proc.pty = fds[0]
        proc.pid = int(reply["pid"])
        return proc

    # Usage ---------------------------------------------------------------------------------------
    def stats(self) -> dict:
        """Usage as the /v3 stats endpoint shows it: cpu (1.0 = one core), mem and disk in bytes."""
        pids = _descendants(self._init_host_pid())
        ticks, rss = 0, 0
        for pid in pids:
            t, r = _proc_usage(pid)
            ticks, rss = ticks + t, rss + r
        now = time.monotonic()
        cpu_seconds = ticks / _CLK_TCK
        cpu = 0.0
        if self._cpu_sample is not None:
            then, was = self._cpu_sample
            if now > then:
                cpu = max(0.0, (cpu_seconds - was) / (now - then))
        self._cpu_sample = (now, cpu_seconds)
        return {"cpu": round(cpu, 4), "mem": rss, "disk": _disk_usage(self.root)}

    def init_pid(self) -> int | None:
        """Host pid of the container's init (PID 1 inside in namespaces mode), None if it never ran."""
        return self._init_host_pid()

    def _init_host_pid(self) -> int | None:
        if self._popen is None:
            return None
        if self.mode == "process":
            return self._popen.pid
        if self._init_pid is None:
            kids = [pid for pid, ppid in _proc_table().items() if ppid == self._popen.pid]
            self._init_pid = kids[0] if kids else None
        return self._init_pid


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
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode  # type: ignore[return-value]

    def communicate(self, input: bytes | None = None, timeout: float | None = None) -> tuple[bytes, bytes]:
        """Write `input`, close stdin, read both streams to their end and wait (pipes only)."""
        if self.pty is not None:
            raise ValueError("communicate() needs pipes: this process runs on a tty, read its pty")
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
                raise subprocess.TimeoutExpired(self.args, timeout)
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


# --- droplets, /proc and the disk -------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _unpack(droplet: Path, root: Path) -> None:
    tar = shutil.which("tar")
    if tar:
        done = subprocess.run([tar, "-xzf", str(droplet), "-C", str(root), "--no-same-owner"],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise ContainerError(f"cannot unpack droplet {droplet}: {done.stderr.strip() or 'tar failed'} "
                                 "(a droplet is a .tgz with app/ at its top)")
        return
    import tarfile

    try:
        with tarfile.open(droplet, "r:gz") as tf:
            if hasattr(tarfile, "data_filter"):
                tf.extractall(root, filter="data")
            else:
                tf.extractall(root)
    except (OSError, tarfile.TarError) as exc:
        raise ContainerError(f"cannot unpack droplet {droplet}: {exc} (a droplet is a .tgz with app/ at its top)")


def _rmtree(path: Path) -> None:
    def retry(func, p, _exc):
        # Processes may leave read-only directories behind; make them writable and go on.
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    if path.exists():
        shutil.rmtree(path, onerror=retry)


def _proc_table() -> dict[int, int]:
    """pid -> parent pid of every process we can see."""
    table = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(b")", 1)[-1].split()
        if len(fields) > 1:
            table[int(name)] = int(fields[1])
    return table


def _descendants(pid: int | None) -> list[int]:
    """Every process below `pid` (not `pid` itself)."""
    if pid is None:
        return []
    children: dict[int, list[int]] = {}
    for child, parent in _proc_table().items():
        children.setdefault(parent, []).append(child)
    out, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _ns_pids(init_host_pid: int | None) -> dict[int, int]:
    """pid inside the namespace -> host pid, for the processes below a namespaced init."""
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


def _proc_usage(pid: int) -> tuple[int, int]:
    """(cpu ticks, resident bytes) of one process, zeros if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[-1].split()
        with open(f"/proc/{pid}/statm", "rb") as f:
            rss_pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return 0, 0
    return int(fields[11]) + int(fields[12]), rss_pages * _PAGE


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
