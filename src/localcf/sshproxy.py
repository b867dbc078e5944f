"""The ssh proxy: a real SSH server (asyncssh) on 127.0.0.1 that Cloud Foundry's own `cf ssh` logs into.

Cloud Foundry's login form is kept: the user is `cf:<process-guid>/<index>` and the password is a
one-time code from UAA (`GET /oauth/authorize?response_type=code&client_id=ssh-proxy`, what
`cf ssh-code` prints and `cf ssh` fetches itself). The root document announces the proxy as
`links.app_ssh` (`127.0.0.1:PORT`, `meta.host_key_fingerprint`: the SHA-1 of the host key,
colon-separated hex, as cf-deployment announces it; `meta.oauth_client: ssh-proxy`).

Behind the login, every session goes into the instance's container through the same exec and
connect paths localcf's own `ssh` uses (`Container.exec`, `Container.connect`):
- `exec` requests (`cf ssh APP -c CMD`): `/bin/bash -c CMD`, stdout and stderr apart, the exit status;
- `shell` requests (`cf ssh APP`): `/bin/bash -l`, on a pseudo-terminal when the client asked
  for one (`pty-req`, window changes follow), else on pipes;
- `direct-tcpip` channels (`cf ssh -L LOCAL:localhost:PORT`, `-N`): a stream to PORT inside the
  container; only the container's own addresses (`localhost`, `127.0.0.1`, `::1`) are reachable.
Each accepted login writes `[SSH/<index>] Successful remote access by <peer>` to the app's log
and records `audit.app.ssh-authorized`; its end writes `Remote access ended for <peer>`.

The host key (`ssh_host_ed25519_key`, mode 0600) lives in the state dir, so the fingerprint stays
the same across restarts. The server runs its own asyncio loop on a thread of the daemon.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import queue
import threading
from typing import Any

import asyncssh

from . import uaa
from .controller import ApiError, Controller
from .paths import StateDir
from .records import App

HOST_KEY_FILE = "ssh_host_ed25519_key"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "0:0:0:0:0:0:0:1")

_RUNNING: dict[str, SSHProxy] = {}


def running_for(state: StateDir) -> SSHProxy | None:
    """The proxy serving a state dir in this process, if one was started."""
    return _RUNNING.get(str(state.root))


def host_key(state: StateDir) -> asyncssh.SSHKey:
    """The proxy's host key, generated on first use into the state dir (mode 0600)."""
    path = state.root / HOST_KEY_FILE
    if not path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519")
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.export_private_key())
        tmp.replace(path)
    os.chmod(path, 0o600)
    return asyncssh.read_private_key(str(path))


def sha1_fingerprint(key: asyncssh.SSHKey) -> str:
    """`aa:bb:...`: the SHA-1 of the public key blob, what `app_ssh.meta.host_key_fingerprint` holds."""
    return ":".join(f"{b:02x}" for b in hashlib.sha1(key.public_data).digest())


def parse_user(username: str) -> tuple[str, int] | None:
    """`cf:<process-guid>/<index>` -> (process guid, index); None for any other form."""
    if not username.startswith("cf:"):
        return None
    guid, sep, index = username[3:].partition("/")
    if not guid or not sep or not index.isdigit():
        return None
    return guid, int(index)


class SSHProxy:
    """The asyncssh server and the thread that runs its loop."""

    def __init__(self, controller: Controller, host: str = "127.0.0.1", port: int = 0):
        self.c = controller
        self.key = host_key(controller.state)
        self.fingerprint = sha1_fingerprint(self.key)
        self._host, self._port = host, port
        self._loop = asyncio.new_event_loop()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @classmethod
    def start(cls, controller: Controller, port: int = 0) -> SSHProxy:
        proxy = cls(controller, port=port)
        ready: queue.Queue[BaseException | None] = queue.Queue()
        proxy._thread = threading.Thread(target=proxy._run, args=(ready,), name="ssh-proxy", daemon=True)
        proxy._thread.start()
        error = ready.get(timeout=30)
        if error is not None:
            raise error
        _RUNNING[str(controller.state.root)] = proxy
        return proxy

    def _run(self, ready: queue.Queue[BaseException | None]) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(asyncssh.create_server(
                lambda: _Server(self), self._host, self._port, server_host_keys=[self.key],
                encoding=None, allow_scp=False, agent_forwarding=False, x11_forwarding=False,
                keepalive_interval=0, line_editor=False))
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as e:  # reported to the starter
            ready.put(e)
            return
        ready.put(None)
        self._loop.run_forever()
        self._loop.close()

    def stop(self) -> None:
        _RUNNING.pop(str(self.c.state.root), None)
        if self._server is None or self._loop.is_closed():
            return

        async def close() -> None:
            self._server.close()
            await self._server.wait_closed()
        try:
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        except Exception:
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(5)


def start_for(controller: Controller) -> SSHProxy | None:
    """Start the proxy for the daemon; if it cannot start, say why on stderr and go on without it
    (the root document then announces no `app_ssh`, and only `cf ssh` is unavailable)."""
    try:
        return SSHProxy.start(controller)
    except Exception as e:
        import sys
        print(f"localcf: the ssh proxy could not start ({e}); the cf CLI's `cf ssh` is unavailable, "
              f"`localcf ssh` still works", file=sys.stderr, flush=True)
        return None


class _Target:
    """The instance a login reached: app record, instance, peer address."""

    def __init__(self, app: App, inst: Any, peer: str):
        self.app, self.inst, self.peer = app, inst, peer


class _Server(asyncssh.SSHServer):
    """One SSH connection: CF's login form, then sessions and forwards into one instance."""

    def __init__(self, proxy: SSHProxy):
        self.proxy = proxy
        self.conn: asyncssh.SSHServerConnection | None = None
        self.target: _Target | None = None
        self.peer = "unknown"

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername")
        if peer:
            self.peer = f"{peer[0]}:{peer[1]}"

    def connection_lost(self, exc: Exception | None) -> None:
        if self.target is not None:
            t = self.target
            self.proxy.c.logs.emit(t.app.guid, "SSH", t.inst.index, "OUT", f"Remote access ended for {self.peer}")

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        return await asyncio.get_running_loop().run_in_executor(None, self._login, username, password)

    def _login(self, username: str, password: str) -> bool:
        """CF's check: a one-time code from UAA, for a RUNNING instance of the named process."""
        c = self.proxy.c
        parsed = parse_user(username)
        if parsed is None or uaa.for_state(c.state).redeem_code(password) is None:
            return False
        process_guid, index = parsed
        try:
            proc = c.process_by_guid(process_guid)
            app = c.app_by_guid(proc.app_guid)
        except ApiError:
            return False
        cell: Any = c.cell  # the cell's view of the instances (not part of the controller's AppRunner)
        inst = next((i for i in cell.instances(process_guid) if i.index == index), None)
        if app.state != "STARTED" or inst is None or inst.container is None or inst.state != "RUNNING":
            return False
        self.target = _Target(app, inst, self.peer)
        c.logs.emit(app.guid, "SSH", index, "OUT", f"Successful remote access by {self.peer}")
        c.audit("audit.app.ssh-authorized", app, {"index": index})
        return True

    def session_requested(self) -> asyncssh.SSHServerSession | bool:
        return _Session(self) if self.target is not None else False

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> Any:
        """`direct-tcpip` (`cf ssh -L`): a stream to `dest_port` inside the container."""
        if self.target is None:
            return False
        if dest_host.lower() not in LOCAL_HOSTS:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                f"localcf forwards to ports inside the container only (localhost), not to {dest_host}")
        container = self.target.inst.container

        async def forward(reader: asyncssh.SSHReader, writer: asyncssh.SSHWriter) -> None:
            loop = asyncio.get_running_loop()
            try:
                sock = await loop.run_in_executor(None, container.connect, dest_port)
            except Exception:
                writer.close()
                return
            sock.setblocking(False)
            inner_r, inner_w = await asyncio.open_connection(sock=sock)

            async def pipe(src: Any, dst: Any) -> None:
                try:
                    while True:
                        data = await src.read(65536)
                        if not data:
                            break
                        dst.write(data)
                        await dst.drain()
                except (OSError, asyncssh.Error):
                    pass
                finally:
                    try:
                        dst.write_eof()
                    except (OSError, asyncssh.Error, AttributeError):
                        pass

            await asyncio.gather(pipe(reader, inner_w), pipe(inner_r, writer))
            inner_w.close()
            writer.close()
        return forward


class _Session(asyncssh.SSHServerSession):
    """One session channel: a command or a shell in the container, on pipes or a pty."""

    def __init__(self, server: _Server):
        self.server = server
        self.chan: Any = None
        self.command: str | None = None
        self.term: tuple[str, int, int] | None = None  # type, rows, cols
        self.proc: Any = None
        self.loop = asyncio.get_running_loop()
        self._stdin: queue.Queue[bytes | None] = queue.Queue()

    def connection_made(self, chan: Any) -> None:
        self.chan = chan

    def pty_requested(self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Any) -> bool:
        cols, rows = term_size[0], term_size[1]
        self.term = (term_type or "xterm", rows or 24, cols or 80)
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self.command = command if isinstance(command, str) else bytes(command).decode("utf-8", "replace")
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        return False

    def session_started(self) -> None:
        threading.Thread(target=self._run, name="ssh-session", daemon=True).start()

    def _run(self) -> None:
        target = self.server.target
        assert target is not None
        inst = target.inst
        env = dict(inst.env)
        env.update({k: v for k, v in (self._chan_env() or {}).items() if k in ("LANG", "LC_ALL", "TERM")})
        if self.term:
            env["TERM"] = self.term[0]
        argv = ["/bin/bash", "-c", self.command] if self.command is not None else ["/bin/bash", "-l"]
        try:
            proc = inst.container.exec(argv, env, tty=self.term is not None, cwd=inst.container.home_root())
        except Exception as e:
            self._call(self._fail, f"could not start the session in instance {inst.index}: {e}\n")
            return
        self.proc = proc
        if self.term and proc.pty is not None:
            try:
                proc.resize(self.term[1], self.term[2])
            except OSError:
                pass
        threading.Thread(target=self._pump_in, name="ssh-stdin", daemon=True).start()
        pumps = []
        if proc.pty is not None:
            pumps.append(threading.Thread(target=self._pump_out, args=(proc.pty, False), daemon=True))
        else:
            pumps.append(threading.Thread(target=self._pump_out, args=(proc.stdout, False), daemon=True))
            pumps.append(threading.Thread(target=self._pump_out, args=(proc.stderr, True), daemon=True))
        for t in pumps:
            t.start()
        status = proc.wait()
        for t in pumps:
            t.join(2 if proc.pty is not None else 10)
        self._stdin.put(None)
        self._call(self._exit, status)

    def _chan_env(self) -> dict[str, str] | None:
        try:
            raw = self.chan.get_environment()
        except Exception:
            return None
        return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                for k, v in raw.items()}

    def _call(self, fn: Any, *args: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass  # the proxy's loop is gone

    def _pump_out(self, source: Any, stderr: bool) -> None:
        while True:
            try:
                data = os.read(source, 65536) if isinstance(source, int) else source.read(65536)
            except OSError:
                break
            if not data:
                break
            self._call(self._write, data, stderr)

    def _write(self, data: bytes, stderr: bool) -> None:
        try:
            if stderr:
                self.chan.write_stderr(data)
            else:
                self.chan.write(data)
        except (OSError, asyncssh.Error, BrokenPipeError):
            pass

    def _pump_in(self) -> None:
        proc = self.proc
        while True:
            data = self._stdin.get()
            try:
                if data is None:
                    if proc.pty is None and proc.poll() is None:
                        proc.stdin.close()
                    return
                if proc.pty is not None:
                    os.write(proc.pty, data)
                else:
                    proc.stdin.write(data)
            except (OSError, ValueError):
                return

    def _exit(self, status: int) -> None:
        try:
            self.chan.exit(max(0, min(255, int(status))))
        except (OSError, asyncssh.Error):
            pass

    def _fail(self, message: str) -> None:
        try:
            self.chan.write_stderr(message.encode())
            self.chan.exit(1)
        except (OSError, asyncssh.Error):
            pass

    def data_received(self, data: bytes, datatype: Any) -> None:
        self._stdin.put(bytes(data))

    def eof_received(self) -> bool:
        if self.proc is not None and self.proc.pty is not None:
            self._stdin.put(b"\x04")
        else:
            self._stdin.put(None)
        return True

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        if self.proc is not None and self.proc.pty is not None and width and height:
            try:
                self.proc.resize(height, width)
            except OSError:
                pass

    def connection_lost(self, exc: Exception | None) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                proc.kill()
            except Exception:
                pass

