"""The router: a gorouter-like HTTP reverse proxy on 127.0.0.1.

A request's Host header (port stripped, case-insensitive) and path choose a route; the route's
healthy instances (what the lookup returns) are served round robin. The texts a learner sees
are gorouter's: `404 Not Found: Requested route ('<host>') does not exist.` with
`X-Cf-RouterError: unknown_route`, and `502 Bad Gateway: Registered endpoint failed to handle
the request.` with `X-Cf-RouterError: endpoint_failure`. Each proxied request produces one `RTR`
access log line in gorouter's format.

Why raw sockets and threads instead of http.server + http.client: the router's budget is 70% of
the throughput of hitting the app directly, and the standard library's HTTP classes spend most of
a request's time in Python parsing and object creation. Here a request costs one small head
parse, one send and one receive each way, and backend connections are kept alive in a pool.
"""

from __future__ import annotations

import itertools
import os
import collections
import select
import socket
import struct
import sys
import threading
import time
from random import getrandbits as _getrandbits
from dataclasses import dataclass
from email.utils import formatdate
from typing import Callable, Iterator, Protocol, Union

__all__ = [
    "Backend",
    "RouteTable",
    "Router",
    "RouterError",
    "DEFAULT_PORTS",
    "PORT_ENV",
]

PORT_ENV = "LOCALCF_ROUTER_PORT"
DEFAULT_PORTS = range(61080, 61100)

NOT_FOUND_TEXT = "404 Not Found: Requested route ('{host}') does not exist.\n"
BAD_GATEWAY_TEXT = "502 Bad Gateway: Registered endpoint failed to handle the request.\n"

_BUF = 65536
_MAX_HEAD = 64 * 1024
# Request bodies up to this size are read before the backend is chosen, so that a failed
# backend can be retried; bigger (or longer chunked) bodies stream and are not retried.
_REPLAY_LIMIT = 256 * 1024
# gorouter's defaults for frontend idle and endpoint timeouts (15 minutes).
_CLIENT_IDLE_TIMEOUT = 900.0
_BACKEND_TIMEOUT = 900.0
_MAX_IDLE_PER_BACKEND = 16
# gorouter retries a failed endpoint on another one; the brief of localcf: one more endpoint.
_MAX_ENDPOINTS_TRIED = 2

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_HOP_BY_HOP = frozenset({"keep-alive", "proxy-connection", "te", "trailer", "upgrade",
                         "proxy-authenticate", "proxy-authorization"})


@dataclass
class Backend:
    """One routable app instance: how to reach its routed port, and what to log about it."""

    app_guid: str
    instance_index: int
    connect: Callable[[], socket.socket]
    address: str
    instance_id: str = ""


class BackendLookup(Protocol):
    """What the router asks for a request's backends (the cell's route table)."""

    def backends(self, host: str, path: str) -> list[Backend]: ...


LookupFn = Callable[[str, str], list[Backend]]
LogFn = Callable[[str, str, int, str, str], None]


class RouterError(Exception):
    """The router could not start (its port is taken or not allowed)."""


class RouteTable:
    """A thread-safe route table with gorouter's matching: host exact (case-insensitive), then
    the longest route path that is a prefix of the request path at a `/` boundary."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # host -> list of (path, backends), longest path first
        self._routes: dict[str, list[tuple[str, list[Backend]]]] = {}

    @staticmethod
    def _norm_path(path: str) -> str:
        path = path.lower().rstrip("/")
        if path and not path.startswith("/"):
            path = "/" + path
        return path

    def set_backends(self, host: str, path: str, backends: list[Backend]) -> None:
        """Register (or replace) the backends of route `host` + `path` (path "" for none)."""
        host, path = host.lower(), self._norm_path(path)
        with self._lock:
            entries = [e for e in self._routes.get(host, []) if e[0] != path]
            entries.append((path, list(backends)))
            entries.sort(key=lambda e: len(e[0]), reverse=True)
            self._routes[host] = entries

    def remove(self, host: str, path: str = "") -> None:
        """Forget route `host` + `path`; unknown routes are ignored."""
        host, path = host.lower(), self._norm_path(path)
        with self._lock:
            entries = [e for e in self._routes.get(host, []) if e[0] != path]
            if entries:
                self._routes[host] = entries
            else:
                self._routes.pop(host, None)

    def backends(self, host: str, path: str) -> list[Backend]:
        """The backends of the route that serves `host` and request path `path`."""
        entries = self._routes.get(host.lower())
        if not entries:
            return []
        lowered = path.lower()
        for route_path, backends in entries:
            if not route_path:
                return backends
            if lowered.startswith(route_path) and (
                    len(lowered) == len(route_path) or lowered[len(route_path)] == "/"):
                return backends
        return []


# ---------------------------------------------------------------------------------------------
# Wire level: reading heads and bodies


class _BadRequest(Exception):
    """The client sent something that is not HTTP/1.x we are willing to proxy."""


class _Truncated(Exception):
    """The peer closed the connection in the middle of a message."""


class _Reader:
    """Buffered reads from a socket; what is read past a message stays for the next one."""

    __slots__ = ("sock", "buf")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def read_head(self) -> bytes | None:
        """The next message head (without the blank line), or None at EOF between messages."""
        buf = self.buf
        searched = 0
        while True:
            # RFC 9112: a server should ignore empty lines before a request line
            while buf[:2] == b"\r\n":
                del buf[:2]
                searched = 0
            i = buf.find(b"\r\n\r\n", searched)
            if i >= 0:
                head = bytes(buf[:i])
                del buf[:i + 4]
                return head
            if len(buf) > _MAX_HEAD:
                raise _BadRequest("message head larger than 64 KiB")
            searched = max(0, len(buf) - 3)
            data = self.sock.recv(_BUF)
            if not data:
                if buf:
                    raise _Truncated("connection closed inside a message head")
                return None
            buf += data

    def read_some(self, limit: int) -> bytes:
        """Up to `limit` bytes: buffered ones first, else one recv (b"" at EOF)."""
        if self.buf:
            data = bytes(self.buf[:limit])
            del self.buf[:limit]
            return data
        return self.sock.recv(min(limit, _BUF))

    def readline(self) -> bytes:
        """One CRLF-terminated line, terminator included (chunk sizes, trailers)."""
        buf = self.buf
        while True:
            i = buf.find(b"\n")
            if i >= 0:
                line = bytes(buf[:i + 1])
                del buf[:i + 1]
                return line
            if len(buf) > 8192:
                raise _BadRequest("chunk line longer than 8 KiB")
            data = self.sock.recv(_BUF)
            if not data:
                raise _Truncated("connection closed inside a chunked body")
            buf += data


class _Count:
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


def _iter_length(reader: _Reader, length: int, count: _Count) -> Iterator[bytes]:
    """The pieces of a body of `length` bytes."""
    remaining = length
    while remaining > 0:
        piece = reader.read_some(remaining)
        if not piece:
            raise _Truncated("connection closed inside a body")
        remaining -= len(piece)
        count.n += len(piece)
        yield piece


def _iter_chunked(reader: _Reader, count: _Count, raw: bool = True) -> Iterator[bytes]:
    """The pieces of a chunked body: the raw framing (to pass on as is) or only the data."""
    while True:
        line = reader.readline()
        size_text = line.split(b";", 1)[0].strip(b" \t\r\n")
        # int() alone would also take "0x1f", "+1f" and "1_f": a smuggler's friends
        if not size_text or size_text.strip(b"0123456789abcdefABCDEF") or len(size_text) > 16:
            raise _BadRequest(f"bad chunk size line {line[:40]!r}")
        size = int(size_text, 16)
        if raw:
            yield line
        if size == 0:
            # trailer section, up to the empty line
            while True:
                line = reader.readline()
                if raw:
                    yield line
                if line in (b"\r\n", b"\n"):
                    return
        for piece in _iter_length(reader, size, count):
            yield piece
        crlf = reader.readline()
        if crlf not in (b"\r\n", b"\n"):
            raise _BadRequest("chunk data longer than its size")
        if raw:
            yield crlf


def _parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    """Start line and headers of a message head (latin-1, as HTTP/1.x octets are)."""
    text = head.decode("latin-1")
    lines = text.split("\r\n")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        # whitespace in a name, folded lines and bare LFs are refused: they are the stuff of
        # request smuggling, and no client a learner uses sends them
        if not sep or not name or " " in name or "\t" in name or "\n" in line:
            raise _BadRequest(f"malformed header line {line[:60]!r}")
        headers.append((name, value.strip(" \t")))
    return lines[0], headers


def _split_host(host: str) -> str:
    """The host of a Host header value, without the port."""
    if host.startswith("["):
        end = host.find("]")
        return host[:end + 1] if end > 0 else host
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        return name
    return host


def _tune(sock: socket.socket, timeout: float) -> None:
    """NODELAY, and a timeout kept by the kernel (SO_RCVTIMEO/SO_SNDTIMEO)."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        # the head and a small body go out in one send; without NODELAY, Nagle plus delayed
        # ACKs add 40 ms whenever a message does need two sends
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # Python's own socket timeouts poll() before every recv and send; the kernel's timeouts cost
    # nothing per call (a timed-out call fails with EAGAIN, an OSError like any other)
    sock.settimeout(None)
    tv = struct.pack("ll", int(timeout), 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


def _close(sock: socket.socket | None) -> None:
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass


def _ns_timestamp(ns: int) -> str:
    """gorouter's access log time: `2006-01-02T15:04:05.000000000Z`, UTC."""
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


def _quote(value: str) -> str:
    """A quoted access log value, `"-"` when empty (Go's strconv.Quote for the usual text)."""
    if not value:
        return '"-"'
    if '"' in value or "\\" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + value + '"'


class _Pool:
    """Idle keep-alive connections per backend."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, int, str], list[socket.socket]] = {}
        self._closed = False

    def take(self, key: tuple[str, int, str]) -> socket.socket | None:
        while True:
            with self._lock:
                idle = self._idle.get(key)
                sock = idle.pop() if idle else None
            if sock is None:
                return None
            # An idle connection with something to read was closed by the app (or it sent
            # garbage): the check Go's transport makes with its background read.
            try:
                sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                return sock
            except OSError:
                pass
            _close(sock)

    def put(self, key: tuple[str, int, str], sock: socket.socket) -> None:
        with self._lock:
            if not self._closed:
                idle = self._idle.setdefault(key, [])
                if len(idle) < _MAX_IDLE_PER_BACKEND:
                    idle.append(sock)
                    return
        _close(sock)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            socks = [s for idle in self._idle.values() for s in idle]
            self._idle.clear()
        for s in socks:
            _close(s)


class _Conn:
    """A client connection being served, and the backend socket it is using (for shutdown)."""

    __slots__ = ("csock", "bsock")

    def __init__(self, csock: socket.socket) -> None:
        self.csock = csock
        self.bsock: socket.socket | None = None


class _EndpointFailed(Exception):
    """A backend failed before its response head: nothing has gone to the client yet."""

    def __init__(self, retry_other: bool) -> None:
        super().__init__()
        self.retry_other = retry_other


class _ClientGone(Exception):
    """The client broke off (closed, reset, malformed chunks) while sending its body."""


class _Request:
    """A request being proxied: what the app is sent, and what the access log needs."""

    __slots__ = ("method", "target", "version", "host", "keep_alive", "expect_continue",
                 "upgrade", "head_out", "body_prefix", "body_rest", "body_count", "request_id",
                 "user_agent", "referer", "xff", "xfp")

    def __init__(self, method: str, target: str, version: str, host: str) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.host = host
        self.keep_alive = True
        self.expect_continue = False
        self.upgrade = False
        self.head_out = b""
        self.body_prefix: list[bytes] = []
        # the part of the body not yet read from the client; None once it is all read
        self.body_rest: Iterator[bytes] | None = None
        self.body_count = _Count()
        self.request_id = ""
        self.user_agent = ""
        self.referer = ""
        self.xff = ""
        self.xfp = ""


def _lookup_path(target: str) -> str:
    """The path of a request target (origin-form or absolute-form), without the query."""
    if target.startswith(("http://", "https://")):
        parts = target.split("/", 3)
        target = "/" + (parts[3] if len(parts) > 3 else "")
    return target.split("?", 1)[0].split("#", 1)[0]


def _request_id() -> str:
    """A version 4 UUID. Python's uuid4() reads the kernel's random source on every call; a
    request id needs no cryptographic randomness, and this is the hot path."""
    h = "%032x" % ((_getrandbits(128) & _UUID_CLEAR) | _UUID_SET)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID_SET = (0x4000 << 64) | (0x8000 << 48)

# what the request parser does with a header, by lowercased name (anything else passes as is)
_H_HOST, _H_LENGTH, _H_TE, _H_CONNECTION, _H_UPGRADE, _H_DROP, _H_XFF, _H_XFP, _H_EXPECT, \
    _H_START, _H_UA, _H_REFERER = range(12)
_REQUEST_HEADERS = {
    b"host": _H_HOST, b"content-length": _H_LENGTH, b"transfer-encoding": _H_TE,
    b"connection": _H_CONNECTION, b"upgrade": _H_UPGRADE,
    b"keep-alive": _H_DROP, b"proxy-connection": _H_DROP, b"te": _H_DROP, b"trailer": _H_DROP,
    b"proxy-authorization": _H_DROP,
    b"x-vcap-request-id": _H_DROP,  # gorouter gives every request an id of its own
    b"x-forwarded-for": _H_XFF, b"x-forwarded-proto": _H_XFP, b"expect": _H_EXPECT,
    b"x-request-start": _H_START, b"user-agent": _H_UA, b"referer": _H_REFERER,
}
_RESPONSE_DROP = frozenset({b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"})


def _check_head(head: bytes) -> list[bytes]:
    """The lines of a message head. Bare CR or LF, whitespace in a header name and folded lines
    are refused: they are the stuff of request smuggling, and no client a learner uses sends them."""
    crlf = head.count(b"\r\n")
    if head.count(b"\n") != crlf or head.count(b"\r") != crlf:
        raise _BadRequest("bare CR or LF in the message head")
    return head.split(b"\r\n")


def _bad_header(line: bytes) -> _BadRequest:
    return _BadRequest(f"malformed header line {line[:60]!r}")


def _parse_request(reader: _Reader, head: bytes, client_ip: str) -> _Request:
    """Parse a request head and prepare the head that goes to the app."""
    lines = _check_head(head)
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1.") or not parts[0] or not parts[1]:
        raise _BadRequest(f"malformed request line {lines[0][:80]!r}")
    method, target, version = (p.decode("latin-1") for p in parts)
    host = b""
    length = -1
    te = b""
    tokens: set[bytes] = set()
    xff = xfp = upgrade = b""
    have_start = False
    req = _Request(method, target, version, "")
    out = [b"%s %s HTTP/1.1" % (parts[0], parts[1])]
    get_kind = _REQUEST_HEADERS.get
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or b" " in name or b"\t" in name:
            raise _bad_header(line)
        kind = get_kind(name.lower())
        if kind is None:
            out.append(line)
            continue
        value = value.strip(b" \t")
        if kind == _H_HOST:
            if host and host != value:
                raise _BadRequest("more than one Host header")
            if not host:
                out.append(line)
            host = value
        elif kind == _H_LENGTH:
            if not value.isdigit() or (length >= 0 and length != int(value)):
                raise _BadRequest(f"bad Content-Length {value[:40]!r}")
            length = int(value)
        elif kind == _H_TE:
            te = te + b", " + value if te else value
        elif kind == _H_CONNECTION:
            tokens.update(t.strip(b" \t").lower() for t in value.split(b","))
        elif kind == _H_UPGRADE:
            upgrade = value
        elif kind == _H_XFF:
            xff = xff + b", " + value if xff else value
        elif kind == _H_XFP:
            xfp = xfp or value
        elif kind == _H_EXPECT and value.lower() == b"100-continue":
            req.expect_continue = True  # the router answers it (see _handle), the app never sees it
        elif kind != _H_DROP:
            if kind == _H_START:
                have_start = True
            elif kind == _H_UA:
                req.user_agent = value.decode("latin-1")
            elif kind == _H_REFERER:
                req.referer = value.decode("latin-1")
            out.append(line)
    req.host = host.decode("latin-1")
    if target.startswith(("http://", "https://")):
        # absolute-form: its authority wins over the Host header (RFC 9112 3.2.2)
        req.host = target.split("/", 3)[2].rpartition("@")[2]
    if tokens:
        named = tokens - {b"close", b"keep-alive", b"upgrade", b""}
        if named:  # headers the client declared hop-by-hop
            out = [out[0]] + [h for h in out[1:] if h.partition(b":")[0].lower() not in named]
        req.keep_alive = (b"keep-alive" in tokens) if version == "HTTP/1.0" \
            else (b"close" not in tokens)
        req.upgrade = bool(upgrade) and b"upgrade" in tokens
    else:
        req.keep_alive = version != "HTTP/1.0"

    if te:
        if te.split(b",")[-1].strip(b" \t").lower() != b"chunked":
            raise _BadRequest(f"unsupported Transfer-Encoding {te[:40]!r}")
        out.append(b"Transfer-Encoding: " + te)
        req.body_rest = _iter_chunked(reader, req.body_count)
    elif length >= 0:
        out.append(b"Content-Length: %d" % length)
        if length:
            req.body_rest = _iter_length(reader, length, req.body_count)
    xff = xff + b", " + client_ip.encode() if xff else client_ip.encode()
    xfp = xfp or b"http"
    req.xff = xff.decode("latin-1")
    req.xfp = xfp.decode("latin-1")
    req.request_id = _request_id()
    out.append(b"X-Forwarded-For: " + xff)
    out.append(b"X-Forwarded-Proto: " + xfp)
    if not have_start:
        out.append(b"X-Request-Start: %d" % (time.time_ns() // 1_000_000))
    out.append(b"X-Vcap-Request-Id: " + req.request_id.encode())
    if req.upgrade:
        out.append(b"Connection: Upgrade")
        out.append(b"Upgrade: " + upgrade)
    out.append(b"\r\n")
    req.head_out = b"\r\n".join(out)
    return req


def _iter_until_close(reader: _Reader, count: _Count) -> Iterator[bytes]:
    while True:
        piece = reader.read_some(_BUF)
        if not piece:
            return
        count.n += len(piece)
        yield piece


def _fmt_time(seconds: float) -> str:
    return f"{seconds:.6f}" if seconds >= 0 else '"-"'


# ---------------------------------------------------------------------------------------------


class Router:
    """A gorouter-like reverse proxy listening on 127.0.0.1."""

    def __init__(self, lookup: Union[LookupFn, BackendLookup], log: LogFn,
                 port: int | None = None) -> None:
        """`lookup(host, path)` (or `lookup.backends(host, path)`) gives the RUNNING instances of
        the route (host lowercased, without port; path without query); `log(app_guid, "RTR",
        index, "OUT", line)` receives access log lines; `port` None picks $LOCALCF_ROUTER_PORT,
        else the first free of 61080..61099, else any free port. Raises RouterError."""
        backends = getattr(lookup, "backends", None)
        self._lookup: LookupFn = backends if callable(backends) else lookup  # type: ignore
        self._log = log
        self._sock = self._listen(port)
        self.port: int = self._sock.getsockname()[1]
        self._pool = _Pool()
        self._rr: dict[str, Iterator[int]] = {}
        self._conns: set[_Conn] = set()
        self._conns_lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._stopping = False
        self._accept_thread: threading.Thread | None = None
        self._log_pending: collections.deque = collections.deque()
        self._log_wake = threading.Event()
        self._log_thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    @staticmethod
    def _bind(port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(256)
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
        """Start accepting connections in a background thread (idempotent)."""
        if self._accept_thread is not None:
            return
        self._log_thread = threading.Thread(target=self._log_loop, name="router-log", daemon=True)
        self._log_thread.start()
        self._accept_thread = threading.Thread(target=self._accept_loop,
                                               name=f"router-{self.port}", daemon=True)
        self._accept_thread.start()

    def shutdown(self) -> None:
        """Stop listening, close every connection, and write the pending access log lines."""
        if self._stopping:
            return
        self._stopping = True
        if self._accept_thread is not None:
            # close() does not wake a blocked accept() everywhere; a connection to it does
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                pass
            self._accept_thread.join(5)
        _close(self._sock)
        with self._conns_lock:
            conns = list(self._conns)
            threads = list(self._threads)
        for conn in conns:
            for s in (conn.csock, conn.bsock):
                if s is not None:
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
        for t in threads:
            t.join(5)
        self._pool.close()
        if self._log_thread is not None:
            self._log_wake.set()
            self._log_thread.join(5)

    def __enter__(self) -> "Router":
        self.serve_in_thread()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def _accept_loop(self) -> None:
        while not self._stopping:
            try:
                csock, addr = self._sock.accept()
            except OSError:
                if self._stopping:
                    return
                time.sleep(0.05)  # out of file descriptors, say: do not spin
                continue
            if self._stopping:
                _close(csock)
                return
            conn = _Conn(csock)
            t = threading.Thread(target=self._serve_client, args=(conn, addr),
                                 name="router-conn", daemon=True)
            with self._conns_lock:
                self._conns.add(conn)
                self._threads.add(t)
            t.start()

    def _log_loop(self) -> None:
        # Access log lines are written off the request path (the log stream may hit the disk),
        # in batches: waking this thread for every request would cost the router a GIL hand-off.
        pending = self._log_pending
        while True:
            self._log_wake.wait()
            self._log_wake.clear()
            stopping = self._stopping
            if not stopping:
                time.sleep(0.01)
            while pending:
                try:
                    self._log(*pending.popleft())
                except Exception as e:  # a broken log sink must not take the router down
                    print(f"localcf router: writing an access log line failed: {e!r}",
                          file=sys.stderr)
            if stopping:
                return

    # -- one client connection ------------------------------------------------------------------

    def _serve_client(self, conn: _Conn, addr: tuple) -> None:
        csock = conn.csock
        try:
            _tune(csock, _CLIENT_IDLE_TIMEOUT)
            reader = _Reader(csock)
            remote = f"{addr[0]}:{addr[1]}"
            while not self._stopping:
                try:
                    head = reader.read_head()
                    if head is None:
                        return
                    if not self._handle(conn, reader, head, remote, addr[0]):
                        return
                except _BadRequest as e:
                    self._send_plain(csock, "HTTP/1.1", 400, "Bad Request",
                                     f"400 Bad Request: {e}\n", close=True)
                    return
        except (OSError, _Truncated, _ClientGone):
            pass  # the client went away or idled out: nobody to answer
        finally:
            _close(conn.bsock)
            _close(csock)
            with self._conns_lock:
                self._conns.discard(conn)
                self._threads.discard(threading.current_thread())

    @staticmethod
    def _prefetch_body(req: _Request) -> None:
        """Read a small body ahead, so that the request can go to another backend on failure."""
        if req.body_rest is None:
            return
        total = 0
        try:
            for piece in req.body_rest:
                req.body_prefix.append(piece)
                total += len(piece)
                if total > _REPLAY_LIMIT:
                    return  # a big one: it streams, the rest of it straight to the app
        except (OSError, _Truncated, _BadRequest) as e:
            raise _ClientGone() from e
        req.body_rest = None

    def _handle(self, conn: _Conn, reader: _Reader, head: bytes, remote: str,
                client_ip: str) -> bool:
        """Serve one request; True when the client connection stays open for the next one."""
        started_ns = time.time_ns()
        t0 = time.perf_counter()
        csock = conn.csock
        req = _parse_request(reader, head, client_ip)
        host = _split_host(req.host.strip())
        backends = self._lookup(host.lower(), _lookup_path(req.target))
        if not backends:
            # an unread body would be taken for the next request: close instead
            keep = req.keep_alive and req.body_rest is None
            self._send_plain(csock, req.version, 404, "Not Found",
                             NOT_FOUND_TEXT.format(host=host), router_error="unknown_route",
                             close=not keep)
            return keep
        if req.expect_continue and req.body_rest is not None and req.version != "HTTP/1.0":
            csock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if not req.upgrade:
            self._prefetch_body(req)

        n = len(backends)
        first = next(self._rr.setdefault(host.lower(), itertools.count())) % n
        backend = backends[first]
        for attempt in range(min(n, _MAX_ENDPOINTS_TRIED)):
            backend = backends[(first + attempt) % n]
            try:
                return self._exchange(conn, reader, req, backend, started_ns, t0, remote)
            except _EndpointFailed as failure:
                if not failure.retry_other:
                    break
        keep = req.keep_alive and req.body_rest is None
        self._send_plain(csock, req.version, 502, "Bad Gateway", BAD_GATEWAY_TEXT,
                         router_error="endpoint_failure", close=not keep)
        self._access_log(req, backend, started_ns, remote, 502, len(BAD_GATEWAY_TEXT),
                         time.perf_counter() - t0, -1.0, "endpoint_failure")
        return keep

    @staticmethod
    def _send_request(bsock: socket.socket, req: _Request) -> None:
        """Send the head and the body; a client failing mid-body raises _ClientGone."""
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
            except (OSError, _Truncated, _BadRequest) as e:
                raise _ClientGone() from e
            bsock.sendall(piece)
        req.body_rest = None

    def _exchange(self, conn: _Conn, reader: _Reader, req: _Request, backend: Backend,
                  started_ns: int, t0: float, remote: str) -> bool:
        """Send the request to one backend and relay its response. Raises _EndpointFailed when
        the backend fails before its response head."""
        key = (backend.app_guid, backend.instance_index, backend.address)
        # Sent again only what the app cannot have acted on twice: like Go's transport and
        # gorouter, a request is retried after the app got it only if it is idempotent.
        replay = req.body_rest is None and req.method in _IDEMPOTENT
        pooled = not req.upgrade and req.body_rest is None
        while True:
            bsock = self._pool.take(key) if pooled else None
            reused = bsock is not None
            if bsock is None:
                try:
                    bsock = backend.connect()
                except OSError:
                    # nothing reached the app: any request may go elsewhere
                    raise _EndpointFailed(retry_other=True) from None
                try:
                    _tune(bsock, _BACKEND_TIMEOUT)
                except OSError:
                    _close(bsock)
                    raise _EndpointFailed(retry_other=True) from None
            conn.bsock = bsock
            app_t0 = time.perf_counter()
            breader = _Reader(bsock)
            try:
                self._send_request(bsock, req)
                resp_head = breader.read_head()
                if resp_head is None:
                    raise ConnectionResetError("closed before a response")
            except _ClientGone:
                conn.bsock = None
                _close(bsock)
                raise
            except (OSError, _Truncated, _BadRequest):
                conn.bsock = None
                _close(bsock)
                if reused and replay:
                    continue  # an idle connection the app closed meanwhile: again, afresh
                raise _EndpointFailed(retry_other=replay) from None
            return self._relay(conn, reader, breader, req, backend, key, resp_head,
                               started_ns, t0, app_t0, remote)

    def _relay(self, conn: _Conn, reader: _Reader, breader: _Reader, req: _Request,
               backend: Backend, key: tuple[str, int, str], resp_head: bytes, started_ns: int,
               t0: float, app_t0: float, remote: str) -> bool:
        """Relay the backend's response, whose head is read, to the client."""
        csock = conn.csock
        bsock = breader.sock
        client11 = req.version != "HTTP/1.0"
        try:
            while True:
                status_line, headers = _parse_head(resp_head)
                parts = status_line.split(" ", 2)
                if (len(parts) < 2 or not parts[0].startswith("HTTP/1.")
                        or not parts[1].isdigit() or len(parts[1]) != 3):
                    raise _BadRequest(f"malformed status line {status_line[:80]!r}")
                code = int(parts[1])
                if 100 <= code < 200 and code != 101:
                    # interim responses (103 Early Hints...) go to HTTP/1.1 clients as they are
                    if client11:
                        csock.sendall(resp_head + b"\r\n\r\n")
                    resp_head = breader.read_head()
                    if resp_head is None:
                        raise ConnectionResetError("closed before a final response")
                    continue
                break
            if code == 101 and not req.upgrade:
                raise _BadRequest("101 Switching Protocols to a request that asked for none")
        except (OSError, _Truncated, _BadRequest):
            conn.bsock = None
            _close(bsock)
            raise _EndpointFailed(retry_other=False) from None
        reason = parts[2] if len(parts) > 2 else ""

        if code == 101:
            csock.sendall(resp_head + b"\r\n\r\n")
            self._tunnel(reader, breader)
            conn.bsock = None
            _close(bsock)
            self._access_log(req, backend, started_ns, remote, 101, 0,
                             time.perf_counter() - t0, time.perf_counter() - app_t0, "")
            return False

        head_only = req.method == "HEAD" or code in (204, 304)
        length: int | None = None
        te = ""
        tokens: set[str] = set()
        out = [f"{req.version} {code} {reason}".rstrip()]
        for name, value in headers:
            low = name.lower()
            if low == "content-length":
                if head_only:
                    out.append(f"{name}: {value}")  # describes the body a GET would get
                elif value.isdigit():
                    length = int(value)
                else:
                    length = -1
            elif low == "transfer-encoding":
                te = f"{te}, {value}" if te else value
            elif low == "connection":
                tokens.update(t.strip().lower() for t in value.split(","))
            elif low in _HOP_BY_HOP:
                continue
            else:
                out.append(f"{name}: {value}")
        named = tokens - {"close", "keep-alive", ""}
        if named:
            out = [out[0]] + [h for h in out[1:] if h.partition(":")[0].lower() not in named]
        backend_keep = ("keep-alive" in tokens) if parts[0] == "HTTP/1.0" else ("close" not in tokens)
        keep = req.keep_alive and req.body_rest is None
        count = _Count()
        body: Iterator[bytes] | None = None
        if head_only:
            if te and client11:
                out.append(f"Transfer-Encoding: {te}")
        elif te and te.split(",")[-1].strip().lower() == "chunked":
            if client11:
                out.append(f"Transfer-Encoding: {te}")
                body = _iter_chunked(breader, count, raw=True)
            else:
                body = _iter_chunked(breader, count, raw=False)
                keep = False  # an HTTP/1.0 client learns where the body ends by the close
        elif length is not None and length >= 0 and not te:
            out.append(f"Content-Length: {length}")
            if length:
                body = _iter_length(breader, length, count)
        else:
            # no framing: the body ends when the app closes the connection
            body = _iter_until_close(breader, count)
            backend_keep = False
            keep = False
        if not keep:
            out.append("Connection: close")
        elif not client11:
            out.append("Connection: keep-alive")
        head_bytes = ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")

        complete = False
        head_sent = False
        try:
            if body is None:
                csock.sendall(head_bytes)
                head_sent = True
            else:
                # the head and what has already come of the body leave in one send
                piece = next(body, b"")
                csock.sendall(head_bytes + piece)
                head_sent = True
                for piece in body:
                    csock.sendall(piece)
            complete = True
        except (OSError, _Truncated, _BadRequest):
            if not head_sent:
                conn.bsock = None
                _close(bsock)
                raise _EndpointFailed(retry_other=False) from None
            keep = False  # one side broke off: the client can only learn it by the close
        app_time = time.perf_counter() - app_t0
        conn.bsock = None
        if complete and backend_keep and not breader.buf:
            self._pool.put(key, bsock)
        else:
            _close(bsock)
        self._access_log(req, backend, started_ns, remote, code, count.n,
                         time.perf_counter() - t0, app_time, "")
        return keep

    def _tunnel(self, creader: _Reader, breader: _Reader) -> None:
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
            poller = select.poll()
            for fd in peer:
                poller.register(fd, select.POLLIN)
            open_fds = set(peer)
            while open_fds and not self._stopping:
                for fd, _events in poller.poll(1000):
                    src, dst = peer[fd]
                    try:
                        data = src.recv(_BUF)
                    except OSError:
                        data = b""
                    if data:
                        dst.sendall(data)
                        continue
                    poller.unregister(fd)
                    open_fds.discard(fd)
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
        except OSError:
            pass

    # -- answers of the router itself, and access logs ------------------------------------------

    @staticmethod
    def _send_plain(csock: socket.socket, version: str, code: int, reason: str, body: str,
                    router_error: str = "", close: bool = False) -> None:
        data = body.encode("utf-8")
        lines = [f"{'HTTP/1.0' if version == 'HTTP/1.0' else 'HTTP/1.1'} {code} {reason}",
                 "Content-Type: text/plain; charset=utf-8",
                 "X-Content-Type-Options: nosniff"]
        if router_error:
            lines.append(f"X-Cf-RouterError: {router_error}")
        lines.append(f"Date: {formatdate(usegmt=True)}")
        lines.append(f"Content-Length: {len(data)}")
        if close:
            lines.append("Connection: close")
        elif version == "HTTP/1.0":
            lines.append("Connection: keep-alive")
        try:
            csock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data)
        except OSError:
            pass

    def _access_log(self, req: _Request, backend: Backend, started_ns: int, remote: str,
                    code: int, bytes_sent: int, response_time: float, app_time: float,
                    router_error: str) -> None:
        """Queue gorouter's access log line (fields in gorouter's order) for the app."""
        gorouter_time = response_time - app_time if app_time >= 0 else -1.0
        request_line = _quote(f"{req.method} {req.target} {req.version}")
        line = (
            f"{req.host} - [{_ns_timestamp(started_ns)}] {request_line} {code} "
            f"{req.body_count.n} {bytes_sent} {_quote(req.referer)} {_quote(req.user_agent)} "
            f"{_quote(remote)} {_quote(backend.address)} "
            f"x_forwarded_for:{_quote(req.xff)} x_forwarded_proto:{_quote(req.xfp)} "
            f"vcap_request_id:{_quote(req.request_id)} response_time:{response_time:.6f} "
            f"gorouter_time:{_fmt_time(gorouter_time)} app_id:{_quote(backend.app_guid)} "
            f"app_index:{_quote(str(backend.instance_index))} "
            f"instance_id:{_quote(backend.instance_id)} route_service_url:\"-\" "
            f"x_cf_routererror:{_quote(router_error)}"
        )
        self._log_pending.append((backend.app_guid, "RTR", backend.instance_index, "OUT", line))
        if not self._log_wake.is_set():
            self._log_wake.set()
