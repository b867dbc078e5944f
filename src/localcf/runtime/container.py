"""One container: its init, control channel, processes, health checks and usage."""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from localcf.container_init import recv_frame, send_frame
from localcf.launcher import launcher_argv

from .base import ContainerError, ContainerSpec, ExitCallback, OutputCallback, _Halted, _rmtree, _text
from .exec_process import ExecProcess
from .probe import _chown_tree, _host_ids, _rootfs_cfg
from .procfs import _descendants, _disk_usage, _init_child, _ns_pids, _proc_usage

if TYPE_CHECKING:
    from .core import Runtime

log = logging.getLogger("localcf.runtime")


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

    def __enter__(self) -> Container:
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
        assert ctrl is not None, "the reader starts once the control channel exists"
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
             cwd: str | None = None) -> ExecProcess:
        """Run `argv` inside (cf ssh); with `tty`, on a new pseudo-terminal (`ExecProcess.pty`)."""
        xid = uuid.uuid4().hex[:16]
        mine: list[int] = []
        theirs: list[int] = []
        outside_pty = tty and self._ready_info.get("pts") is False
        if outside_pty:  # the container has no terminals of its own: one of the host's
            master, slave = os.openpty()
            mine, theirs = [master], [slave]
        elif not tty:  # with a tty, the init opens the terminal inside and hands its master back
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
        if tty and not outside_pty:
            if not fds:
                raise ContainerError(f"container {self.id}: exec: the init sent no terminal")
            proc.pty = fds[0]
        proc.pid = int(reply["pid"])
        return proc

    # Usage ---------------------------------------------------------------------------------------
    def stats(self) -> dict:
        """Usage as the /v3 stats endpoint shows it: cpu (1.0 = one core), mem and disk in bytes."""
        pids = _descendants(self._init_host_pid())
        cpu_seconds, rss = 0.0, 0
        for pid in pids:
            t, r = _proc_usage(pid)
            cpu_seconds, rss = cpu_seconds + t, rss + r
        now = time.monotonic()
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
            self._init_pid = _init_child(self._popen.pid)
        return self._init_pid


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
        raise ContainerError(
            f"cannot unpack droplet {droplet}: {exc} (a droplet is a .tgz with app/ at its top)") from exc
