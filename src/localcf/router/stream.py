"""The streaming path: what the event loop does not move whole, a worker thread streams.

Bigger or endless bodies, websockets and other upgrades, and chunked responses to HTTP/1.0
clients are passed on here with blocking sockets, piece by piece; the loop hands a client (and
maybe its backend connection) to a worker thread and gets it back, with a backend connection to
pool, when the exchange is over.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Callable, Iterator

from .access_log import AccessLog
from .connections import BACKEND_TIMEOUT, IDEMPOTENT, MAX_ENDPOINTS_TRIED, Client, Conn, Upstream, close_quietly, tune
from .http1 import (
    BAD_GATEWAY_TEXT,
    BUF,
    R_CHUNKED,
    R_CLOSE,
    R_DECHUNK,
    R_INTERIM,
    R_LENGTH,
    R_SWITCH,
    WHOLE_LIMIT,
    BadMessage,
    Reader,
    Request,
    Response,
    Truncated,
    iter_chunked,
    iter_length,
    iter_until_close,
    plain_response,
    prepare_response,
    request_body,
)
from .routes import Backend


class EndpointFailed(Exception):
    """A backend failed before its response head: nothing has gone to the client yet."""

    def __init__(self, retry_other: bool) -> None:
        super().__init__()
        self.retry_other = retry_other


class ClientGone(Exception):
    """The client broke off (closed, reset, malformed chunks) while sending its body."""


class Streamer:
    """The worker threads' side of the proxy: each method runs one exchange to its end and
    returns whether the client connection is kept, and the backend connection to pool."""

    def __init__(self, access_log: AccessLog, stopping: Callable[[], bool]) -> None:
        self._record = access_log.record
        self._stopping = stopping

    def proxy_request(self, conn: Conn, c: Client) -> tuple[bool, Upstream | None]:
        """A request whose body is too big to hold, or an upgrade: stream it, then the answer."""
        req = c.req
        assert req is not None
        reader = Reader(c.sock, c.rbuf)
        req.body_rest = request_body(req, reader)
        if req.body_rest is not None and req.expect_continue and not req.continue_sent \
                and req.version != "HTTP/1.0":
            c.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if not req.upgrade:
            self._read_ahead(req)
        n = len(c.backends)
        backend = c.backends[c.first]
        for attempt in range(min(n, MAX_ENDPOINTS_TRIED)):
            backend = c.backends[(c.first + attempt) % n]
            try:
                return self._exchange(conn, reader, req, backend, c.remote)
            except EndpointFailed as failure:
                if not failure.retry_other:
                    break
        keep = req.keep_alive and req.body_rest is None
        c.sock.sendall(plain_response(req.version, 502, "Bad Gateway", BAD_GATEWAY_TEXT,
                                       "endpoint_failure", close=not keep, method=req.method))
        self._record(req, backend, c.remote, 502, len(BAD_GATEWAY_TEXT), -1.0,
                         "endpoint_failure")
        return keep, None

    @staticmethod
    def _read_ahead(req: Request) -> None:
        """Read what fits of the body ahead, so that a failed backend can still be retried."""
        if req.body_rest is None:
            return
        total = 0
        try:
            for piece in req.body_rest:
                req.body_prefix.append(piece)
                total += len(piece)
                if total > WHOLE_LIMIT:
                    return  # the rest streams straight to the app
        except (OSError, Truncated, BadMessage) as e:
            raise ClientGone() from e
        req.body_rest = None

    @staticmethod
    def _send_request(bsock: socket.socket, req: Request) -> None:
        """Send the head and the body; a client failing mid-body raises ClientGone."""
        bsock.sendall(req.head_out + b"".join(req.body_prefix) if req.body_prefix
                      else req.head_out)
        rest = req.body_rest
        if rest is None:
            return
        while True:
            try:
                piece = next(rest)
            except StopIteration:
                break
            except (OSError, Truncated, BadMessage) as e:
                raise ClientGone() from e
            bsock.sendall(piece)
        req.body_rest = None

    def _exchange(self, conn: Conn, reader: Reader, req: Request, backend: Backend,
                  remote: str) -> tuple[bool, Upstream | None]:
        """Send the request to one backend and relay its response. Raises EndpointFailed when
        the backend fails before its response head."""
        replay = req.body_rest is None and req.method in IDEMPOTENT
        try:
            bsock = backend.connect()
        except Exception:  # refused, reset, or the instance's container is gone
            raise EndpointFailed(retry_other=True) from None
        try:
            bsock.setblocking(True)
            tune(bsock, BACKEND_TIMEOUT)
        except OSError:
            close_quietly(bsock)
            raise EndpointFailed(retry_other=True) from None
        conn.bsock = bsock
        req.app_t0 = time.perf_counter()
        breader = Reader(bsock)
        try:
            self._send_request(bsock, req)
            while True:
                head = breader.read_head()
                if head is None:
                    raise ConnectionResetError("closed before a response")
                resp = prepare_response(req, head, body_done=req.body_rest is None)
                if resp.kind != R_INTERIM:
                    break
                if req.version != "HTTP/1.0":
                    conn.csock.sendall(resp.head_out)
        except ClientGone:
            close_quietly(bsock)
            raise
        except (OSError, Truncated, BadMessage):
            close_quietly(bsock)
            raise EndpointFailed(retry_other=replay) from None
        up = Upstream(bsock, backend, (backend.app_guid, backend.instance_index, backend.address))
        up.rbuf = breader.buf
        return self._stream_response(conn, reader, up, req, resp, remote)

    def relay_response(self, conn: Conn, c: Client, up: Upstream,
                         resp: Response) -> tuple[bool, Upstream | None]:
        """A response the loop handed over (too big, endless, or a protocol switch)."""
        up.sock.setblocking(True)
        assert c.req is not None
        return self._stream_response(conn, Reader(c.sock, c.rbuf), up, c.req, resp, c.remote)

    def _stream_response(self, conn: Conn, reader: Reader, up: Upstream, req: Request,
                         resp: Response, remote: str) -> tuple[bool, Upstream | None]:
        """Pass the response on as it comes; the backend connection comes back if reusable."""
        csock = conn.csock
        breader = Reader(up.sock, up.rbuf)
        if resp.kind == R_SWITCH:
            csock.sendall(resp.head_out)
            self._tunnel(reader, breader)
            close_quietly(up.sock)
            self._record(req, up.backend, remote, 101, 0, time.perf_counter() - req.app_t0, "")
            return False, None
        count = up.count
        body: Iterator[bytes] | None = None
        if resp.kind == R_LENGTH and resp.length:
            body = iter_length(breader, resp.length, count)
        elif resp.kind == R_CHUNKED:
            body = iter_chunked(breader, count, raw=True)
        elif resp.kind == R_DECHUNK:
            body = iter_chunked(breader, count, raw=False)
        elif resp.kind == R_CLOSE:
            body = iter_until_close(breader, count)
        keep = resp.keep
        complete = False
        head_sent = False
        try:
            if body is None:
                csock.sendall(resp.head_out)
                head_sent = True
            else:
                # the head and what has already come of the body leave in one send
                piece = next(body, b"")
                csock.sendall(resp.head_out + piece)
                head_sent = True
                for piece in body:
                    csock.sendall(piece)
            complete = True
        except (OSError, Truncated, BadMessage):
            if not head_sent:
                # the app broke off before anything went to the client: still a clean 502
                close_quietly(up.sock)
                csock.sendall(plain_response(req.version, 502, "Bad Gateway", BAD_GATEWAY_TEXT,
                                              "endpoint_failure", close=True, method=req.method))
                self._record(req, up.backend, remote, 502, len(BAD_GATEWAY_TEXT), -1.0,
                                 "endpoint_failure")
                return False, None
            keep = False  # one side broke off: the client can only learn it by the close
        app_time = time.perf_counter() - req.app_t0
        self._record(req, up.backend, remote, resp.code, count.n, app_time, "")
        if complete and resp.backend_keep and not breader.buf:
            return keep, up
        close_quietly(up.sock)
        return keep, None

    def _tunnel(self, creader: Reader, breader: Reader) -> None:
        """Pass bytes both ways until both sides are done (websockets and other upgrades)."""
        a, b = creader.sock, breader.sock
        try:
            if creader.buf:
                b.sendall(bytes(creader.buf))
                creader.buf.clear()
            if breader.buf:
                a.sendall(bytes(breader.buf))
                breader.buf.clear()
            peer = {a.fileno(): (a, b), b.fileno(): (b, a)}
            sel = selectors.DefaultSelector()
            try:
                for fd in peer:
                    sel.register(fd, selectors.EVENT_READ)
                open_fds = set(peer)
                while open_fds and not self._stopping():
                    for key, _events in sel.select(1.0):
                        src, dst = peer[key.fd]
                        try:
                            data = src.recv(BUF)
                        except OSError:
                            data = b""
                        if data:
                            dst.sendall(data)
                            continue
                        sel.unregister(key.fd)
                        open_fds.discard(key.fd)
                        try:
                            dst.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass
            finally:
                sel.close()
        except OSError:
            pass

    # -- access logs ----------------------------------------------------------------------------
