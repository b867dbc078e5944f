"""The router's event loop: one thread that accepts clients, reads their request heads, sends
each request whole to an instance over a pooled keep-alive connection, and relays the answer.

It runs on epoll (or the platform's selector where there is none, e.g. kqueue on macOS).
Opening a connection to an instance is done by a small pool of connector threads, because it
may be an exchange with the instance's container init, which must not stall every route; what
is not moved whole (see `stream`) goes to a worker thread and comes back when it is done.
Worker and connector threads hand their results back through a queue of calls and a wake-up
pipe; everything else here is touched by the loop thread only.
"""

from __future__ import annotations

import collections
import itertools
import os
import select
import selectors
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from .access_log import AccessLog, BatchFn, LogFn
from .connections import (
    BACKEND_TIMEOUT,
    CLIENT_IDLE_TIMEOUT,
    IDEMPOTENT,
    K_CLIENT,
    K_IDLE,
    K_LISTEN,
    K_UPSTREAM,
    K_WAKE,
    MAX_ENDPOINTS_TRIED,
    READ,
    WRITE,
    Client,
    Conn,
    Upstream,
    close_quietly,
    tune,
)
from .http1 import (
    BAD_GATEWAY_TEXT,
    BUF,
    MAX_HEAD,
    NOT_FOUND_TEXT,
    R_CHUNKED,
    R_CLOSE,
    R_DECHUNK,
    R_INTERIM,
    R_LENGTH,
    R_SWITCH,
    WHOLE_LIMIT,
    BadMessage,
    Count,
    Response,
    Truncated,
    chunked_end,
    parse_request,
    plain_response,
    prepare_response,
    unfinished_head_error,
)
from .routes import Backend, BackendLookup, LookupFn, lookup_path, split_host
from .stream import ClientGone, Streamer

PORT_ENV = "LOCALCF_ROUTER_PORT"
DEFAULT_PORTS = range(61080, 61100)
HEAD_TIMEOUT_ENV = "LOCALCF_ROUTER_HEAD_TIMEOUT"
# Seconds a client has to finish a request head it has begun. gorouter sets no such limit and
# holds a connection for its idle timeout (15 minutes); a head that has not come whole in this
# long never will (a TLS client on the plain port, a client that ends lines with LF alone).
DEFAULT_HEAD_TIMEOUT = 10.0

# A client may send requests ahead (pipelining); past this much unread, it waits.
_MAX_AHEAD = 1024 * 1024
_MAX_IDLE_PER_BACKEND = 16

_READABLE = 0x001 | 0x008 | 0x010  # EPOLLIN, EPOLLERR, EPOLLHUP: errors show when reading
_HANGUP = 0x008 | 0x010


class RouterError(Exception):
    """The router could not start (its port is taken or not allowed, or a setting is wrong)."""


def _head_timeout(given: float | None) -> float:
    if given is not None:
        if not given > 0:
            raise RouterError(f"router: head_timeout={given!r} must be a number of seconds above 0")
        return float(given)
    wanted = os.environ.get(HEAD_TIMEOUT_ENV, "").strip()
    if not wanted:
        return DEFAULT_HEAD_TIMEOUT
    try:
        value = float(wanted)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise RouterError(f"router: {HEAD_TIMEOUT_ENV}={wanted!r} is not a number of seconds "
                          f"above 0; set it to, say, {DEFAULT_HEAD_TIMEOUT:g}, or unset it.")
    return value



class _SelectorPoller:
    """epoll's interface over the platform's selector (kqueue on macOS)."""

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._masks: dict[int, int] = {}

    def _apply(self, fd: int, mask: int) -> None:
        events = (selectors.EVENT_READ if mask & READ else 0) | \
                 (selectors.EVENT_WRITE if mask & WRITE else 0)
        registered = self._masks.get(fd, 0)
        if registered and events:
            self._sel.modify(fd, events)
        elif events:
            self._sel.register(fd, events)
        elif registered:
            self._sel.unregister(fd)
        self._masks[fd] = events

    def register(self, fd: int, mask: int) -> None:
        self._apply(fd, mask)

    def modify(self, fd: int, mask: int) -> None:
        self._apply(fd, mask)

    def unregister(self, fd: int) -> None:
        if self._masks.pop(fd, 0):
            self._sel.unregister(fd)

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        return [(key.fd, (READ if ev & selectors.EVENT_READ else 0)
                 | (WRITE if ev & selectors.EVENT_WRITE else 0))
                for key, ev in self._sel.select(timeout)]

    def close(self) -> None:
        self._sel.close()


def _new_poller() -> select.epoll | _SelectorPoller:
    if hasattr(select, "epoll"):
        return select.epoll()
    return _SelectorPoller()



class Router:
    """A gorouter-like reverse proxy listening on 127.0.0.1."""

    def __init__(self, lookup: LookupFn | BackendLookup, log: LogFn,
                 port: int | None = None,
                 log_batch: BatchFn | None = None,
                 head_timeout: float | None = None) -> None:
        """`lookup(host, path)` (or `lookup.backends(host, path)`) gives the RUNNING instances of
        the route (host lowercased, without port; path without query); `log(app_guid, "RTR",
        index, "OUT", line)` receives access log lines, from a thread of the router's, a few
        milliseconds after the request; `log_batch`, if given, receives them instead as lists
        of those argument tuples (one store transaction per batch, say). `port` None picks
        $LOCALCF_ROUTER_PORT, else the first free of 61080..61099, else any free port.
        `head_timeout` is how many seconds a client has to send a whole request head once it
        has begun one (None: $LOCALCF_ROUTER_HEAD_TIMEOUT, else 10).
        Raises RouterError when the port cannot be had or a setting is not valid."""
        backends = getattr(lookup, "backends", None)
        self._lookup: LookupFn = backends if callable(backends) else lookup  # type: ignore
        self._head_timeout = _head_timeout(head_timeout)
        # idle clients, late backends and unfinished heads are looked for this often
        self._sweep_every = min(5.0, self._head_timeout / 2)
        self._sock = self._listen(port)
        self.port: int = self._sock.getsockname()[1]
        self._stopping = False
        self._rr: dict[str, Iterator[int]] = {}
        self._hosts: dict[str, str] = {}  # Host header -> the host routes are looked up by
        # loop state: touched by the loop thread only
        self._poller = _new_poller()
        self._handlers: dict[int, tuple[int, object]] = {}
        self._clients: dict[int, Client] = {}
        self._idle: dict[tuple, list[Upstream]] = {}
        self._loop_thread: threading.Thread | None = None
        self._last_sweep = time.monotonic()
        # hand-backs from worker threads to the loop
        self._calls: collections.deque = collections.deque()  # of callables
        # Opening a connection to an instance may be an exchange with its container's init:
        # it is done off the loop, so that one slow container cannot stall every route.
        self._connector: ThreadPoolExecutor | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._workers: dict[threading.Thread, Conn] = {}
        self._workers_lock = threading.Lock()
        # access log lines, written by their own thread
        self._access_logs = AccessLog(log, log_batch)
        self._access_log = self._access_logs.record
        self._streamer = Streamer(self._access_logs, lambda: self._stopping)

    # -- lifecycle ------------------------------------------------------------------------------

    @staticmethod
    def _bind(port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(512)
        except OSError:
            sock.close()
            raise
        return sock

    def _listen(self, port: int | None) -> socket.socket:
        if port is not None:
            try:
                return self._bind(port)
            except OSError as e:
                raise RouterError(f"router: cannot listen on 127.0.0.1:{port}: {e.strerror}. "
                                  f"Stop what uses that port, or choose another one.") from e
        wanted = os.environ.get(PORT_ENV, "").strip()
        if wanted:
            if not wanted.isdigit() or not 0 <= int(wanted) <= 65535:
                raise RouterError(f"router: {PORT_ENV}={wanted!r} is not a port number; "
                                  f"set it to a number from 1 to 65535, or unset it.")
            try:
                return self._bind(int(wanted))
            except OSError as e:
                raise RouterError(
                    f"router: cannot listen on 127.0.0.1:{wanted} (from {PORT_ENV}): "
                    f"{e.strerror}. Free that port, set {PORT_ENV} to another port, or unset it "
                    f"to use the first free one of {DEFAULT_PORTS.start}..{DEFAULT_PORTS.stop - 1}."
                ) from e
        for candidate in DEFAULT_PORTS:
            try:
                return self._bind(candidate)
            except OSError:
                continue
        return self._bind(0)

    def serve_in_thread(self) -> None:
        """Start serving in a background thread (idempotent)."""
        if self._loop_thread is not None or self._stopping:
            return
        self._sock.setblocking(False)
        self._poller.register(self._sock.fileno(), READ)
        self._handlers[self._sock.fileno()] = (K_LISTEN, None)
        self._poller.register(self._wake_r, READ)
        self._handlers[self._wake_r] = (K_WAKE, None)
        self._access_logs.start()
        self._connector = ThreadPoolExecutor(max_workers=4, thread_name_prefix="router-connect")
        self._loop_thread = threading.Thread(target=self._run, name=f"router-{self.port}",
                                             daemon=True)
        self._loop_thread.start()

    def shutdown(self) -> None:
        """Stop listening, close every connection, and write the pending access log lines."""
        if self._stopping:
            return
        self._stopping = True
        if self._loop_thread is not None:
            self._wake()
            self._loop_thread.join(10)
        else:
            self._close_all()
        with self._workers_lock:
            workers = list(self._workers.items())
        for _thread, conn in workers:
            for s in (conn.csock, conn.bsock):
                if s is not None:
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
        for thread, _conn in workers:
            thread.join(10)
        if self._connector is not None:
            self._connector.shutdown(wait=True, cancel_futures=True)
        # what came back from workers and connects after the loop stopped: they see
        # `_stopping` and close their sockets
        self._run_calls()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._access_logs.stop()

    def __enter__(self) -> Router:
        self.serve_in_thread()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass  # the pipe is full: the loop is awake anyway

    def _close_all(self) -> None:
        for client in list(self._clients.values()):
            self._close_client(client)
        for idle in self._idle.values():
            for up in idle:
                close_quietly(up.sock)
        self._idle.clear()
        close_quietly(self._sock)
        try:
            self._poller.close()
        except OSError:
            pass

    # -- the loop -------------------------------------------------------------------------------

    def _run(self) -> None:
        poll = self._poller.poll
        handlers = self._handlers
        poll_timeout = min(1.0, self._sweep_every)
        try:
            while not self._stopping:
                for fd, mask in poll(poll_timeout):
                    entry = handlers.get(fd)
                    if entry is None:
                        continue
                    kind, obj = entry
                    try:
                        if kind == K_CLIENT:
                            self._client_event(obj, mask)  # type: ignore[arg-type]
                        elif kind == K_UPSTREAM:
                            self._upstream_event(obj, mask)  # type: ignore[arg-type]
                        elif kind == K_IDLE:
                            self._idle_event(obj)  # type: ignore[arg-type]
                        elif kind == K_LISTEN:
                            self._accept()
                        else:
                            self._drain_wake()
                    except Exception:
                        # a bug must cost one connection, not the router
                        traceback.print_exc()
                        self._drop_after_bug(kind, obj)
                if self._calls:
                    self._run_calls()
                now = time.monotonic()
                if now - self._last_sweep > self._sweep_every:
                    self._sweep(now)
        finally:
            self._close_all()

    def _drop_after_bug(self, kind: int, obj: object) -> None:
        try:
            if kind == K_CLIENT:
                self._close_client(obj)  # type: ignore[arg-type]
            elif kind in (K_UPSTREAM, K_IDLE):
                up: Upstream = obj  # type: ignore[assignment]
                if up.client is not None:
                    self._close_client(up.client)
                self._forget(up.fd, up.sock)
        except Exception:
            traceback.print_exc()

    def _forget(self, fd: int, sock: socket.socket) -> None:
        """Take a socket out of the loop and close it."""
        if self._handlers.pop(fd, None) is not None:
            try:
                self._poller.unregister(fd)
            except (OSError, ValueError, KeyError):
                pass
        close_quietly(sock)

    def _detach(self, fd: int) -> None:
        """Take a socket out of the loop, open (it goes to a worker thread)."""
        if self._handlers.pop(fd, None) is not None:
            try:
                self._poller.unregister(fd)
            except (OSError, ValueError, KeyError):
                pass

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except OSError:
            pass

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, addr = self._sock.accept()
            except BlockingIOError:
                return
            except OSError:
                return  # out of file descriptors, say: the next event will try again
            try:
                sock.setblocking(False)
                tune(sock, CLIENT_IDLE_TIMEOUT)
            except OSError:
                close_quietly(sock)
                continue
            client = Client(sock, addr)
            self._clients[client.fd] = client
            self._handlers[client.fd] = (K_CLIENT, client)
            self._poller.register(client.fd, READ)

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        now_pc = time.perf_counter()
        for client in list(self._clients.values()):
            up = client.up
            if up is not None:
                req = client.req
                if req is not None and now_pc - req.app_t0 > BACKEND_TIMEOUT and up.resp is None:
                    self._forget(up.fd, up.sock)
                    client.up = None
                    self._bad_gateway(client)
            elif client.busy:
                continue
            elif (client.head_since and not client.closing
                  and now - client.head_since > self._head_timeout):
                self._write(client, plain_response(
                    "HTTP/1.1", 408, "Request Timeout",
                    f"408 Request Timeout: the request head did not come whole within "
                    f"{self._head_timeout:g} s; end every header line with CRLF, and the head "
                    f"with an empty line\n", "", close=True))
                self._finish_or_close(client)
            elif now - client.last > CLIENT_IDLE_TIMEOUT:
                self._close_client(client)

    # -- clients --------------------------------------------------------------------------------

    def _client_event(self, c: Client, mask: int) -> None:
        if mask & _HANGUP:
            # gone both ways (a half-close only shows as EOF): nobody to answer any more
            self._close_client(c)
            return
        if mask & WRITE and c.wbuf:
            self._flush(c)
            if c.closed:
                return
        if mask & _READABLE:
            try:
                data = c.sock.recv(BUF)
            except BlockingIOError:
                data = None
            except OSError:
                data = b""
            if data is None:
                pass
            elif not data:
                c.eof = True
                if not c.busy:
                    self._close_client(c)
                    return
                # the client is done sending; the response still goes to it, then the close
            else:
                c.rbuf += data
                if not c.busy:
                    self._advance(c)
                    if c.closed:
                        return
        self._update_mask(c)

    def _update_mask(self, c: Client) -> None:
        if c.closed or c.mask < 0:  # closed, or with a worker thread
            return
        want = WRITE if c.wbuf else 0
        # read on while the client is within bounds: requests ahead, answers it has not taken
        if not c.eof and not c.closing and len(c.wbuf) < _MAX_AHEAD and (
                not c.busy or len(c.rbuf) < _MAX_AHEAD):
            want |= READ
        if want != c.mask:
            c.mask = want
            self._poller.modify(c.fd, want)

    def _write(self, c: Client, data: bytes) -> None:
        if c.closed:
            return
        if c.wbuf:
            c.wbuf += data
            return
        try:
            n = c.sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError:
            self._close_client(c)
            return
        if n < len(data):
            c.wbuf += data[n:]
            self._update_mask(c)

    def _flush(self, c: Client) -> None:
        try:
            n = c.sock.send(c.wbuf)
        except BlockingIOError:
            return
        except OSError:
            self._close_client(c)
            return
        del c.wbuf[:n]
        if not c.wbuf and c.closing:
            self._close_client(c)
            return
        if not c.busy and c.rbuf and len(c.wbuf) < _MAX_AHEAD:
            self._advance(c)  # requests that waited for the client to take its answers
        self._update_mask(c)

    def _close_client(self, c: Client) -> None:
        if c.closed:
            return
        c.closed = True
        self._clients.pop(c.fd, None)
        if c.up is not None:
            self._forget(c.up.fd, c.up.sock)
            c.up = None
        self._forget(c.fd, c.sock)

    def _finish_or_close(self, c: Client) -> None:
        """After an answer went to a client that is not kept: close once it is written."""
        c.closing = True
        if not c.wbuf:
            self._close_client(c)
        else:
            self._update_mask(c)

    def _advance(self, c: Client) -> None:
        """Take the next request from what the client sent, as far as it has come."""
        while not c.busy and not c.closed and not c.closing and len(c.wbuf) < _MAX_AHEAD:
            req = c.req
            buf = c.rbuf
            if req is None:
                while buf[:2] == b"\r\n":  # RFC 9112: ignore empty lines before a request
                    del buf[:2]
                    c.scanned = 0
                i = buf.find(b"\r\n\r\n")
                if i < 0:
                    if len(buf) > MAX_HEAD:
                        self._bad_request(c, "HTTP/1.1", "request head larger than 64 KiB")
                    elif c.eof:
                        self._close_client(c)
                    elif buf:
                        # a head under way: refuse it as soon as it cannot become valid, and
                        # give it a bounded time to end (see _sweep)
                        problem = unfinished_head_error(buf, c.scanned)
                        if problem is not None:
                            self._bad_request(c, "HTTP/1.1", str(problem))
                            return
                        c.scanned = len(buf) - 1
                        if not c.head_since:
                            c.head_since = time.monotonic()
                    return
                head = bytes(buf[:i])
                del buf[:i + 4]
                if c.head_since:
                    c.head_since = 0.0
                    c.scanned = 0
                try:
                    req = parse_request(head, c.ip)
                except BadMessage as e:
                    self._bad_request(c, "HTTP/1.1", str(e))
                    return
                req.started_ns = time.time_ns()
                req.t0 = time.perf_counter()
                host = self._hosts.get(req.host)
                if host is None:
                    if len(self._hosts) > 1000:
                        self._hosts.clear()
                    host = self._hosts[req.host] = split_host(req.host.strip()).lower()
                target = req.target
                backends = self._lookup(host, target.partition("?")[0] if target[0] == "/"
                                        else lookup_path(target))
                if not backends:
                    # an unread body would be taken for the next request: close instead
                    keep = req.keep_alive and req.body_length == 0
                    self._write(c, plain_response(
                        req.version, 404, "Not Found",
                        NOT_FOUND_TEXT.format(host=split_host(req.host.strip())),
                        "unknown_route", close=not keep, method=req.method))
                    if not keep:
                        self._finish_or_close(c)
                    continue
                c.req = req
                c.backends = backends
                c.tried = 0
                c.first = next(self._rr.setdefault(host, itertools.count())) % len(backends)
                if req.upgrade or req.body_length > WHOLE_LIMIT:
                    self._hand_off_request(c)
                    return
                if req.expect_continue and req.version != "HTTP/1.0" and (
                        req.body_length < 0 or len(buf) < req.body_length):
                    self._write(c, b"HTTP/1.1 100 Continue\r\n\r\n")
                    req.continue_sent = True
            # the body, whole
            if req.body_length > 0:
                if len(buf) < req.body_length:
                    if c.eof:
                        self._close_client(c)
                    return
                req.body = bytes(buf[:req.body_length])
                del buf[:req.body_length]
                req.body_count.n = req.body_length
            elif req.body_length < 0:
                try:
                    end = chunked_end(buf, req.body_count)
                except BadMessage as e:
                    self._bad_request(c, req.version, str(e))
                    return
                if end < 0:
                    if len(buf) > WHOLE_LIMIT:
                        self._hand_off_request(c)
                    elif c.eof:
                        self._close_client(c)
                    return
                req.body = bytes(buf[:end])
                del buf[:end]
            c.busy = True
            self._connect(c)

    def _bad_request(self, c: Client, version: str, why: str) -> None:
        self._write(c, plain_response(version, 400, "Bad Request", f"400 Bad Request: {why}\n",
                                       "", close=True))
        self._finish_or_close(c)

    def _request_done(self, c: Client, keep: bool) -> None:
        c.req = None
        c.up = None
        c.busy = False
        c.last = time.monotonic()
        if c.closed:
            return
        if not keep or c.eof:
            self._finish_or_close(c)
            return
        if c.rbuf:
            self._advance(c)  # requests the client sent ahead
        self._update_mask(c)

    # -- backends -------------------------------------------------------------------------------

    def _connect(self, c: Client, fresh: bool = False) -> None:
        """Send the client's request to the next backend to try: on a kept connection if there
        is one, else on a new one, opened by the connector."""
        n = len(c.backends)
        if c.tried >= min(n, MAX_ENDPOINTS_TRIED):
            self._bad_gateway(c)
            return
        backend = c.backends[(c.first + c.tried) % n]
        c.last_backend = backend
        key = (backend.app_guid, backend.instance_index, backend.address)
        if not fresh:
            idle = self._idle.get(key)
            if idle:
                up = idle.pop()
                up.reused = True
                self._send(c, up)
                return
        assert self._connector is not None
        self._connector.submit(self._open, c, backend, key)

    def _open(self, c: Client, backend: Backend, key: tuple) -> None:
        """(connector thread) Open a connection to `backend`, and give it to the loop."""
        sock = None
        try:
            sock = backend.connect()
            sock.setblocking(False)
            tune(sock, BACKEND_TIMEOUT)
        except Exception:  # refused, reset, or the instance's container is gone
            close_quietly(sock)
            sock = None
        self._calls.append(lambda: self._opened(c, backend, key, sock))
        self._wake()

    def _opened(self, c: Client, backend: Backend, key: tuple,
                sock: socket.socket | None) -> None:
        if self._stopping or c.closed:
            close_quietly(sock)
            return
        if sock is None:
            c.tried += 1  # nothing reached the app: any request may go elsewhere
            self._connect(c)
            return
        up = Upstream(sock, backend, key)
        self._poller.register(up.fd, READ)
        self._send(c, up)

    def _send(self, c: Client, up: Upstream) -> None:
        """Send the request, whole, on a connection to a backend."""
        req = c.req
        assert req is not None
        self._handlers[up.fd] = up.as_active
        up.client = c
        up.resp = None
        up.count = Count()
        c.up = up
        req.app_t0 = time.perf_counter()
        data = req.head_out + req.body if req.body else req.head_out
        try:
            sent = up.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._upstream_failed(up, got_bytes=False)
            return
        if sent < len(data):
            up.wbuf = data[sent:]
            self._poller.modify(up.fd, READ | WRITE)

    def _upstream_failed(self, up: Upstream, got_bytes: bool) -> None:
        """The backend failed before a whole response came: retry, or answer 502."""
        c = up.client
        self._forget(up.fd, up.sock)
        if c is None or c.closed:
            return
        c.up = None
        req = c.req
        assert req is not None
        # Sent again only what the app cannot have acted on twice: like Go's transport and
        # gorouter, a request is retried after the app got it only if it is idempotent.
        replay = not got_bytes and req.method in IDEMPOTENT
        if replay and up.reused:
            self._connect(c, fresh=True)  # an idle connection the app had just closed
        elif replay:
            c.tried += 1
            self._connect(c)
        else:
            self._bad_gateway(c)

    def _bad_gateway(self, c: Client) -> None:
        req = c.req
        assert req is not None
        keep = req.keep_alive
        self._write(c, plain_response(req.version, 502, "Bad Gateway", BAD_GATEWAY_TEXT,
                                       "endpoint_failure", close=not keep, method=req.method))
        if c.last_backend is not None:
            self._access_log(req, c.last_backend, c.remote, 502, len(BAD_GATEWAY_TEXT),
                             -1.0, "endpoint_failure")
        self._request_done(c, keep)

    def _upstream_event(self, up: Upstream, mask: int) -> None:
        if mask & WRITE and up.wbuf:
            try:
                sent = up.sock.send(up.wbuf)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._upstream_failed(up, got_bytes=False)
                return
            up.wbuf = up.wbuf[sent:]
            if not up.wbuf:
                self._poller.modify(up.fd, READ)
        if mask & _READABLE:
            try:
                data = up.sock.recv(BUF)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._upstream_failed(up, got_bytes=bool(up.rbuf) or up.resp is not None)
                return
            up.rbuf += data
            self._upstream_progress(up)

    def _upstream_progress(self, up: Upstream) -> None:
        """Relay the response once it is all there (or hand it to a worker thread)."""
        c = up.client
        assert c is not None and c.req is not None
        req = c.req
        buf = up.rbuf
        while up.resp is None:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                if len(buf) > MAX_HEAD:
                    self._upstream_failed(up, got_bytes=True)
                return
            head = bytes(buf[:i])
            del buf[:i + 4]
            try:
                resp = prepare_response(req, head, body_done=True)
            except BadMessage:
                self._upstream_failed(up, got_bytes=True)
                return
            if resp.kind == R_INTERIM:
                if req.version != "HTTP/1.0":
                    self._write(c, resp.head_out)
                    if c.closed:
                        return
                continue
            if resp.kind in (R_SWITCH, R_DECHUNK, R_CLOSE) or resp.length > WHOLE_LIMIT:
                self._hand_off_response(c, up, resp)
                return
            up.resp = resp
        resp = up.resp
        if resp.kind == R_LENGTH:
            if len(buf) < resp.length:
                return
            body = bytes(buf[:resp.length])
            del buf[:resp.length]
            up.count.n = resp.length
        elif resp.kind == R_CHUNKED:
            try:
                end = chunked_end(buf, up.count)
            except BadMessage:
                self._upstream_failed(up, got_bytes=True)
                return
            if end < 0:
                if len(buf) > WHOLE_LIMIT:
                    self._hand_off_response(c, up, resp)
                return
            body = bytes(buf[:end])
            del buf[:end]
        else:
            body = b""
        app_time = time.perf_counter() - req.app_t0
        c.up = None
        up.client = None
        if resp.backend_keep and not buf:
            self._pool(up)
        else:
            self._forget(up.fd, up.sock)
        self._write(c, resp.head_out + body if body else resp.head_out)
        self._access_log(req, up.backend, c.remote, resp.code, up.count.n, app_time, "")
        self._request_done(c, resp.keep)

    def _pool(self, up: Upstream) -> None:
        idle = self._idle.setdefault(up.key, [])
        if len(idle) >= _MAX_IDLE_PER_BACKEND or self._stopping:
            self._forget(up.fd, up.sock)
            return
        up.client = None
        up.resp = None
        up.reused = True
        idle.append(up)
        # An idle connection stays watched: when the app closes it, it leaves the pool at once
        # (what Go's transport does with its background read).
        self._handlers[up.fd] = up.as_idle

    def _idle_event(self, up: Upstream) -> None:
        idle = self._idle.get(up.key)
        if idle and up in idle:
            idle.remove(up)
        self._forget(up.fd, up.sock)

    # -- hand-offs to worker threads ------------------------------------------------------------

    def _hand_off_request(self, c: Client) -> None:
        """Stream this request (and its response) with blocking sockets in a worker thread."""
        c.busy = True
        self._detach(c.fd)
        c.mask = -1
        self._start_worker(c, Conn(c.sock), self._streamer.proxy_request, c)

    def _hand_off_response(self, c: Client, up: Upstream, resp: Response) -> None:
        """Stream this response with blocking sockets in a worker thread."""
        self._detach(c.fd)
        self._detach(up.fd)
        c.mask = -1
        c.up = None
        self._start_worker(c, Conn(c.sock, up.sock), self._streamer.relay_response, c, up, resp)

    def _start_worker(self, c: Client, conn: Conn, target: Callable, *args: object) -> None:
        # the worker owns the client now; shutdown() reaches it through `conn`
        self._clients.pop(c.fd, None)
        thread = threading.Thread(target=self._worker, args=(c, conn, target, args),
                                  name="router-stream", daemon=True)
        with self._workers_lock:
            self._workers[thread] = conn
        thread.start()

    def _worker(self, c: Client, conn: Conn, target: Callable, args: tuple) -> None:
        keep, pooled = False, None
        try:
            c.sock.setblocking(True)
            keep, pooled = target(conn, *args)
        except (OSError, Truncated, ClientGone, BadMessage):
            pass  # the client went away, or broke its request off: nobody to answer
        except Exception:
            traceback.print_exc()
        finally:
            with self._workers_lock:
                self._workers.pop(threading.current_thread(), None)
            self._calls.append(lambda: self._handed_back(c, keep, pooled))
            self._wake()

    def _run_calls(self) -> None:
        while self._calls:
            call = self._calls.popleft()
            try:
                call()
            except Exception:
                traceback.print_exc()

    def _handed_back(self, c: Client, keep: bool, up: Upstream | None) -> None:
        """A worker thread is done with a client (and maybe a backend connection to keep)."""
        if self._stopping:
            close_quietly(c.sock)
            if up is not None:
                close_quietly(up.sock)
            return
        if up is not None:
            try:
                up.sock.setblocking(False)
                self._poller.register(up.fd, READ)
                self._handlers[up.fd] = up.as_idle
                self._pool(up)
            except OSError:
                self._forget(up.fd, up.sock)
        if not keep or c.closed:
            c.closed = True
            close_quietly(c.sock)
            return
        try:
            c.sock.setblocking(False)
            c.mask = READ
            self._poller.register(c.fd, READ)
            self._handlers[c.fd] = (K_CLIENT, c)
            self._clients[c.fd] = c
        except OSError:
            close_quietly(c.sock)
            return
        self._request_done(c, True)
