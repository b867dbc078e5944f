"""The router: a gorouter-like HTTP reverse proxy on 127.0.0.1.

A request's Host header (port stripped, case-insensitive) and path choose a route; the route's
healthy instances (what the lookup returns) are served round robin. The texts a learner sees
are gorouter's: `404 Not Found: Requested route ('<host>') does not exist.` with
`X-Cf-RouterError: unknown_route`, and `502 Bad Gateway: Registered endpoint failed to handle
the request.` with `X-Cf-RouterError: endpoint_failure`. Each proxied request produces one `RTR`
access log line in gorouter's format.

How it is built, and why: the budget is 70% of the throughput of hitting the app directly, on two
cores shared with the app and the client. The standard library's HTTP classes spend most of a
request's time in Python object churn, and one thread per connection spends the rest handing
the GIL around. So one event-loop thread (epoll, or the platform's selector) parses heads itself
and moves whole messages: a request with its body, a response with its body, each up to 256 KiB,
in one send each way, over keep-alive connections to the apps. What does not fit that shape
(bigger or endless bodies, websockets and other upgrades, HTTP/1.0 clients of chunked responses)
is handed to a worker thread that streams it with blocking sockets, then back to the loop.
New connections to instances are opened by a small pool of connector threads, because opening
one may be an exchange with the instance's container init, which must not stall every route.
"""

from __future__ import annotations

import collections
import itertools
import os
import re
import select
import selectors
import socket
import struct
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import formatdate
from random import getrandbits
from typing import Callable, Iterator, Protocol, Union

__all__ = [
    "BAD_GATEWAY_TEXT",
    "Backend",
    "DEFAULT_PORTS",
    "NOT_FOUND_TEXT",
    "PORT_ENV",
    "RouteTable",
    "Router",
    "RouterError",
]

PORT_ENV = "LOCALCF_ROUTER_PORT"
DEFAULT_PORTS = range(61080, 61100)

NOT_FOUND_TEXT = "404 Not Found: Requested route ('{host}') does not exist.\n"
BAD_GATEWAY_TEXT = "502 Bad Gateway: Registered endpoint failed to handle the request.\n"

_BUF = 65536
_MAX_HEAD = 64 * 1024
# Bodies up to this size are moved whole by the loop. A request body is read before a backend
# gets it, so that a failed backend can be retried; bigger bodies stream and are not retried.
_WHOLE_LIMIT = 256 * 1024
# A client may send requests ahead (pipelining); past this much unread, it waits.
_MAX_AHEAD = 1024 * 1024
# gorouter's defaults for its frontend idle and endpoint timeouts (15 minutes).
_CLIENT_IDLE_TIMEOUT = 900.0
_BACKEND_TIMEOUT = 900.0
_MAX_IDLE_PER_BACKEND = 16
# access log lines waiting for a slow log sink; past this, new ones are dropped
_MAX_PENDING_LOGS = 50_000
# gorouter retries an endpoint that failed on another one; localcf tries one more, at most.
_MAX_ENDPOINTS_TRIED = 2

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


@dataclass
class Backend:
    """One routable app instance: how to reach its routed port, and what to log about it.

    `connect` is called from a thread of the router's (never its loop), whenever a new
    connection to the instance is needed; any exception it raises counts as a refusal."""

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
        # host -> list of (path, backends), longest path first; replaced, never mutated, so
        # that readers need no lock
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
# Wire level: messages, heads, bodies


class _BadMessage(Exception):
    """A peer sent something that is not HTTP/1.x the router is willing to pass on."""


class _Truncated(Exception):
    """The peer closed the connection in the middle of a message."""


class _EndpointFailed(Exception):
    """A backend failed before its response head: nothing has gone to the client yet."""

    def __init__(self, retry_other: bool) -> None:
        super().__init__()
        self.retry_other = retry_other


class _ClientGone(Exception):
    """The client broke off (closed, reset, malformed chunks) while sending its body."""


class _Count:
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


class _Request:
    """A request being proxied: what the app is sent, and what the access log needs."""

    __slots__ = ("method", "target", "version", "host", "keep_alive", "expect_continue",
                 "continue_sent", "upgrade", "body_length", "head_out", "body", "body_prefix",
                 "body_rest", "body_count", "request_id", "user_agent", "referer", "xff_raw",
                 "xfp_raw",
                 "started_ns", "t0", "app_t0")

    def __init__(self, method: str, target: str, version: str) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.host = ""
        self.keep_alive = True
        self.expect_continue = False
        self.continue_sent = False
        self.upgrade = False
        self.body_length = 0  # -1: chunked
        self.head_out = b""
        self.body = b""  # the raw body, when the loop has read it whole
        # the streaming path: what is read ahead, and what is still to read (None: all read)
        self.body_prefix: list[bytes] = []
        self.body_rest: Iterator[bytes] | None = None
        self.body_count = _Count()
        self.request_id = ""
        self.user_agent = ""
        self.referer = ""
        self.xff_raw = b""
        self.xfp_raw = b""
        self.started_ns = 0
        self.t0 = 0.0
        self.app_t0 = -1.0


# kinds of response bodies
_R_INTERIM, _R_SWITCH, _R_EMPTY, _R_LENGTH, _R_CHUNKED, _R_DECHUNK, _R_CLOSE = range(7)


class _Response:
    """A response head as it goes to the client, and how its body is framed."""

    __slots__ = ("code", "kind", "length", "backend_keep", "keep", "head_out")

    def __init__(self, code: int, kind: int, length: int, backend_keep: bool, keep: bool,
                 head_out: bytes) -> None:
        self.code = code
        self.kind = kind
        self.length = length
        self.backend_keep = backend_keep
        self.keep = keep
        self.head_out = head_out


def _request_id() -> str:
    """A version 4 UUID. uuid.uuid4() asks the kernel for randomness on every call; a request
    id needs none of that quality, and this is the hot path."""
    h = "%032x" % ((getrandbits(128) & _UUID_CLEAR) | _UUID_SET)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID_SET = (0x4000 << 64) | (0x8000 << 48)

# A message head as the router accepts it: a start line, then `name:value` lines whose names are
# tokens, no bare CR or LF anywhere. Whitespace before a colon and folded lines are refused: they
# are the stuff of request smuggling, and no client a learner uses sends them.
_HEAD_OK = re.compile(rb"[^\r\n]*(?:\r\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\r\n]*)*\Z")


def _head_error(head: bytes) -> _BadMessage:
    """Say which line of a refused head is wrong."""
    for line in head.split(b"\r\n")[1:]:
        name, sep, _ = line.partition(b":")
        if not sep or not re.fullmatch(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name) \
                or b"\r" in line or b"\n" in line:
            return _BadMessage(f"malformed header line {line[:60]!r}")
    return _BadMessage("bare CR or LF in the message head")


def _header_re(names: str) -> re.Pattern:
    """Header lines with one of these names: group 1 the name, group 2 the trimmed value."""
    return re.compile(rb"\r\n(" + names.encode() + rb"):[ \t]*([^\r\n]*?)[ \t]*(?=\r\n|\Z)",
                      re.IGNORECASE)


def _drop_re(names: str) -> re.Pattern:
    return re.compile(rb"\r\n(?:" + names.encode() + rb"):[^\r\n]*", re.IGNORECASE)


# The headers of a request the router looks at; all others pass as they are, untouched.
_REQUEST_SPECIAL = _header_re(
    "host|content-length|transfer-encoding|connection|upgrade|keep-alive|proxy-connection|te|"
    "trailer|proxy-authorization|x-vcap-request-id|x-forwarded-for|x-forwarded-proto|expect|"
    "x-request-start|user-agent|referer")
# ... of those, the ones the app does not get as sent: hop-by-hop headers, and those the router
# sets itself (gorouter gives every request a request id of its own)
_REQUEST_DROP = _drop_re(
    "connection|upgrade|keep-alive|proxy-connection|te|trailer|proxy-authorization|"
    "x-vcap-request-id|x-forwarded-for|expect")
(_H_HOST, _H_LENGTH, _H_TE, _H_CONNECTION, _H_UPGRADE, _H_DROP, _H_XFF, _H_XFP, _H_EXPECT,
 _H_START, _H_UA, _H_REFERER) = range(12)
_REQUEST_KIND = {
    b"host": _H_HOST, b"content-length": _H_LENGTH, b"transfer-encoding": _H_TE,
    b"connection": _H_CONNECTION, b"upgrade": _H_UPGRADE,
    b"keep-alive": _H_DROP, b"proxy-connection": _H_DROP, b"te": _H_DROP, b"trailer": _H_DROP,
    b"proxy-authorization": _H_DROP, b"x-vcap-request-id": _H_DROP,
    b"x-forwarded-for": _H_XFF, b"x-forwarded-proto": _H_XFP, b"expect": _H_EXPECT,
    b"x-request-start": _H_START, b"user-agent": _H_UA, b"referer": _H_REFERER,
}
_RESPONSE_SPECIAL = _header_re(
    "content-length|transfer-encoding|connection|keep-alive|proxy-connection|te|trailer|upgrade")
_RESPONSE_DROP = _drop_re("connection|keep-alive|proxy-connection|te|trailer|upgrade")
_RESPONSE_DROP_FRAMING = _drop_re(
    "connection|keep-alive|proxy-connection|te|trailer|upgrade|content-length|transfer-encoding")
_RESPONSE_DROP_LENGTH = _drop_re(
    "connection|keep-alive|proxy-connection|te|trailer|upgrade|content-length")


def _drop_named(head: bytes, named: set[bytes]) -> bytes:
    """Remove the header lines a Connection header named (rare: the slow way will do)."""
    lines = head.split(b"\r\n")
    return b"\r\n".join(lines[:1] + [h for h in lines[1:]
                                     if h.partition(b":")[0].lower() not in named])


def _parse_request(head: bytes, client_ip: str) -> _Request:
    """Parse a request head and prepare the head that goes to the app."""
    if _HEAD_OK.match(head) is None:
        raise _head_error(head)
    eol = head.find(b"\r\n")
    if eol < 0:
        eol = len(head)
    parts = head[:eol].decode("latin-1").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0] or not parts[1]:
        raise _BadMessage(f"malformed request line {head[:min(eol, 80)]!r}")
    req = _Request(*parts)
    host = b""
    length = -1
    te = b""
    tokens: set[bytes] | None = None
    xff = xfp = upgrade = b""
    have_start = drop = False
    for m in _REQUEST_SPECIAL.finditer(head, eol):
        kind = _REQUEST_KIND[m.group(1).lower()]
        value = m.group(2)
        if kind == _H_HOST:
            if host and host != value:
                raise _BadMessage("more than one Host header")
            host = value
        elif kind == _H_LENGTH:
            if not value.isdigit() or (length >= 0 and length != int(value)):
                raise _BadMessage(f"bad Content-Length {value[:40]!r}")
            length = int(value)
        elif kind == _H_TE:
            te = te + b", " + value if te else value
        elif kind == _H_XFP:
            xfp = xfp or value
        elif kind == _H_START:
            have_start = True
        elif kind == _H_UA:
            req.user_agent = value.decode("latin-1")
        elif kind == _H_REFERER:
            req.referer = value.decode("latin-1")
        else:
            drop = True
            if kind == _H_CONNECTION:
                if tokens is None:
                    tokens = set()
                tokens.update(t.strip(b" \t").lower() for t in value.split(b","))
            elif kind == _H_UPGRADE:
                upgrade = value
            elif kind == _H_XFF:
                xff = xff + b", " + value if xff else value
            elif kind == _H_EXPECT:
                # the router answers `100-continue` itself, so the app never sees it
                req.expect_continue = value.lower() == b"100-continue"
    out = _REQUEST_DROP.sub(b"", head) if drop else head
    if parts[2] != "HTTP/1.1":
        out = f"{parts[0]} {parts[1]} HTTP/1.1".encode("latin-1") + out[eol:]
    req.host = host.decode("latin-1")
    if req.target.startswith(("http://", "https://")):
        # absolute-form: its authority wins over the Host header (RFC 9112 3.2.2)
        req.host = req.target.split("/", 3)[2].rpartition("@")[2]
    if tokens:
        named = tokens - {b"close", b"keep-alive", b"upgrade", b""}
        if named:  # headers the client declared hop-by-hop
            out = _drop_named(out, named)
        req.keep_alive = (b"keep-alive" in tokens) if req.version == "HTTP/1.0" \
            else (b"close" not in tokens)
        req.upgrade = bool(upgrade) and b"upgrade" in tokens
    else:
        req.keep_alive = req.version != "HTTP/1.0"
    if te:
        if te.split(b",")[-1].strip(b" \t").lower() != b"chunked":
            raise _BadMessage(f"unsupported Transfer-Encoding {te[:40]!r}")
        if length >= 0:  # both: chunked wins, and the length must not reach the app
            out = _drop_named(out, {b"content-length"})
        req.body_length = -1
    elif length >= 0:
        req.body_length = length
    ip = client_ip.encode()
    xff = xff + b", " + ip if xff else ip
    req.xff_raw = xff
    req.xfp_raw = xfp or b"http"
    request_id = _request_id()
    req.request_id = request_id
    extra = b"\r\nX-Forwarded-For: " + xff + (b"" if xfp else b"\r\nX-Forwarded-Proto: http")
    if not have_start:
        extra += b"\r\nX-Request-Start: %d" % (time.time_ns() // 1_000_000)
    extra += b"\r\nX-Vcap-Request-Id: " + request_id.encode()
    if req.upgrade:
        extra += b"\r\nConnection: Upgrade\r\nUpgrade: " + upgrade
    req.head_out = out + extra + b"\r\n\r\n"
    return req


def _prepare_response(req: _Request, head: bytes, body_done: bool) -> _Response:
    """Parse a response head from an app and prepare the head that goes to the client."""
    if _HEAD_OK.match(head) is None:
        raise _head_error(head)
    eol = head.find(b"\r\n")
    if eol < 0:
        eol = len(head)
    parts = head[:eol].split(b" ", 2)
    if (len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3
            or not parts[1].isdigit()):
        raise _BadMessage(f"malformed status line {head[:min(eol, 80)]!r}")
    code = int(parts[1])
    if code == 101:
        if not req.upgrade:
            raise _BadMessage("101 Switching Protocols to a request that asked for none")
        return _Response(code, _R_SWITCH, 0, False, False, head + b"\r\n\r\n")
    if 100 <= code < 200:
        # interim responses (103 Early Hints...) go to HTTP/1.1 clients as they are
        return _Response(code, _R_INTERIM, 0, True, True, head + b"\r\n\r\n")
    client11 = req.version != "HTTP/1.0"
    empty = req.method == "HEAD" or code == 204 or code == 304
    length = -1
    te = b""
    tokens: set[bytes] | None = None
    drop = False
    for m in _RESPONSE_SPECIAL.finditer(head, eol):
        name = m.group(1).lower()
        value = m.group(2)
        if name == b"content-length":
            if not value.isdigit() or (length >= 0 and length != int(value)):
                if not empty:
                    raise _BadMessage(f"bad Content-Length {value[:40]!r}")
            else:
                length = int(value)
        elif name == b"transfer-encoding":
            te = te + b", " + value if te else value
        else:
            drop = True
            if name == b"connection":
                if tokens is None:
                    tokens = set()
                tokens.update(t.strip(b" \t").lower() for t in value.split(b","))
    if tokens is None:
        backend_keep = parts[0] != b"HTTP/1.0"
    else:
        backend_keep = (b"keep-alive" in tokens) if parts[0] == b"HTTP/1.0" \
            else (b"close" not in tokens)
    keep = req.keep_alive and body_done
    dropper = _RESPONSE_DROP
    if empty:
        kind = _R_EMPTY  # a Content-Length stays: it describes the body a GET would get
    elif te and te.split(b",")[-1].strip(b" \t").lower() == b"chunked":
        if client11:
            kind = _R_CHUNKED
            if length >= 0:  # both: chunked wins, and the length must not reach the client
                dropper = _RESPONSE_DROP_LENGTH
                drop = True
        else:
            kind = _R_DECHUNK
            keep = False  # an HTTP/1.0 client learns where the body ends by the close
            dropper = _RESPONSE_DROP_FRAMING
            drop = True
    elif length >= 0 and not te:
        kind = _R_LENGTH
    else:
        # no framing: the body ends when the app closes the connection
        kind = _R_CLOSE
        backend_keep = False
        keep = False
    out = dropper.sub(b"", head) if drop else head
    if tokens:
        named = tokens - {b"close", b"keep-alive", b""}
        if named:
            out = _drop_named(out, named)
    if client11:
        if parts[0] != b"HTTP/1.1":
            out = b"HTTP/1.1" + out[len(parts[0]):]
    elif parts[0] != b"HTTP/1.0":
        out = b"HTTP/1.0" + out[len(parts[0]):]
    if not keep:
        out += b"\r\nConnection: close\r\n\r\n"
    elif client11:
        out += b"\r\n\r\n"
    else:
        out += b"\r\nConnection: keep-alive\r\n\r\n"
    return _Response(code, kind, length, backend_keep, keep, out)


def _chunk_size(line: bytes) -> int:
    """The size on a chunk-size line (terminator included)."""
    if not line.endswith(b"\r\n"):
        raise _BadMessage(f"bad chunk size line {line[:40]!r}")
    size_text = line[:-2].split(b";", 1)[0].strip(b" \t")
    # int() alone would also take "0x1f", "+1f" and "1_f": a smuggler's friends
    if not size_text or size_text.strip(b"0123456789abcdefABCDEF") or len(size_text) > 15:
        raise _BadMessage(f"bad chunk size line {line[:40]!r}")
    return int(size_text, 16)


def _chunked_end(buf: bytearray, count: _Count) -> int:
    """Where a chunked body at the start of `buf` ends, or -1 if it is not all there yet."""
    pos = 0
    data = 0
    while True:
        eol = buf.find(b"\n", pos)
        if eol < 0:
            if len(buf) - pos > 8192:
                raise _BadMessage("chunk size line longer than 8 KiB")
            return -1
        size = _chunk_size(bytes(buf[pos:eol + 1]))
        pos = eol + 1
        if size == 0:
            while True:  # trailer section, up to the empty line
                eol = buf.find(b"\n", pos)
                if eol < 0:
                    return -1
                line = buf[pos:eol + 1]
                pos = eol + 1
                if line == b"\r\n":
                    count.n = data
                    return pos
                if not line.endswith(b"\r\n"):
                    raise _BadMessage("bare LF in a chunked trailer")
        if len(buf) < pos + size + 2:
            return -1
        if buf[pos + size:pos + size + 2] != b"\r\n":
            raise _BadMessage("chunk data longer than its size")
        data += size
        pos += size + 2


class _Reader:
    """Buffered blocking reads from a socket; what is read past a message stays in `buf`."""

    __slots__ = ("sock", "buf")

    def __init__(self, sock: socket.socket, buf: bytearray | None = None) -> None:
        self.sock = sock
        self.buf = buf if buf is not None else bytearray()

    def read_head(self) -> bytes | None:
        """The next message head (without the blank line), or None at EOF between messages."""
        buf = self.buf
        searched = 0
        while True:
            while buf[:2] == b"\r\n":  # RFC 9112: ignore empty lines before a request line
                del buf[:2]
                searched = 0
            i = buf.find(b"\r\n\r\n", searched)
            if i >= 0:
                head = bytes(buf[:i])
                del buf[:i + 4]
                return head
            if len(buf) > _MAX_HEAD:
                raise _BadMessage("message head larger than 64 KiB")
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
        """One line, terminator included (chunk sizes, trailers)."""
        buf = self.buf
        while True:
            i = buf.find(b"\n")
            if i >= 0:
                line = bytes(buf[:i + 1])
                del buf[:i + 1]
                return line
            if len(buf) > 8192:
                raise _BadMessage("chunk line longer than 8 KiB")
            data = self.sock.recv(_BUF)
            if not data:
                raise _Truncated("connection closed inside a chunked body")
            buf += data


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
        size = _chunk_size(line)
        if raw:
            yield line
        if size == 0:
            while True:  # trailer section, up to the empty line
                line = reader.readline()
                if not line.endswith(b"\r\n"):
                    raise _BadMessage("bare LF in a chunked trailer")
                if raw:
                    yield line
                if line == b"\r\n":
                    return
        yield from _iter_length(reader, size, count)
        crlf = reader.readline()
        if crlf != b"\r\n":
            raise _BadMessage("chunk data longer than its size")
        if raw:
            yield crlf


def _iter_until_close(reader: _Reader, count: _Count) -> Iterator[bytes]:
    while True:
        piece = reader.read_some(_BUF)
        if not piece:
            return
        count.n += len(piece)
        yield piece


def _request_body(req: _Request, reader: _Reader) -> Iterator[bytes] | None:
    if req.body_length < 0:
        return _iter_chunked(reader, req.body_count)
    if req.body_length > 0:
        return _iter_length(reader, req.body_length, req.body_count)
    return None


def _split_host(host: str) -> str:
    """The host of a Host header value, without the port."""
    if host.startswith("["):
        end = host.find("]")
        return host[:end + 1] if end > 0 else host
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        return name
    return host


def _lookup_path(target: str) -> str:
    """The path of a request target (origin-form or absolute-form), without the query."""
    if target.startswith(("http://", "https://")):
        parts = target.split("/", 3)
        target = "/" + (parts[3] if len(parts) > 3 else "")
    return target.split("?", 1)[0].split("#", 1)[0]


def _tune(sock: socket.socket, timeout: float) -> None:
    """NODELAY, and timeouts kept by the kernel for the blocking (worker thread) paths."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        # the head and a body leave in one send; when a message does need two, Nagle plus
        # delayed ACKs would add 40 ms
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # Python's own socket timeouts poll() before every recv and send; the kernel's cost nothing
    # per call (a timed-out call fails with EAGAIN, an OSError like any other)
    tv = struct.pack("ll", int(timeout), 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


def _close(sock: socket.socket | None) -> None:
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass


def _ns_timestamp(ns: int, _cache: list = [-1, ""]) -> str:
    """gorouter's access log time: `2006-01-02T15:04:05.000000000Z`, UTC."""
    secs, frac = divmod(ns, 1_000_000_000)
    if secs != _cache[0]:  # one strftime a second (the log thread is the only caller)
        _cache[:] = [secs, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))]
    return f"{_cache[1]}.{frac:09d}Z"


def _quote(value: str) -> str:
    """A quoted access log value, `"-"` when empty (Go's strconv.Quote for the usual text)."""
    if not value:
        return '"-"'
    if '"' in value or "\\" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + value + '"'


def _fmt_time(seconds: float) -> str:
    return f"{seconds:.6f}" if seconds >= 0 else '"-"'


def _plain_response(version: str, code: int, reason: str, body: str, router_error: str,
                    close: bool, method: str = "") -> bytes:
    """A response of the router itself, with the headers gorouter's error writer sets (and
    no body for a HEAD request)."""
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
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (
        b"" if method == "HEAD" else data)


# ---------------------------------------------------------------------------------------------
# The event loop's pieces


_READ = 0x001  # the values of EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP
_WRITE = 0x004
_READABLE = 0x001 | 0x008 | 0x010  # errors and hang-ups show when reading
_HANGUP = 0x008 | 0x010


class _SelectorPoller:
    """epoll's interface over the platform's selector (kqueue on macOS)."""

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._masks: dict[int, int] = {}

    def _apply(self, fd: int, mask: int) -> None:
        events = (selectors.EVENT_READ if mask & _READ else 0) | \
                 (selectors.EVENT_WRITE if mask & _WRITE else 0)
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
        return [(key.fd, (_READ if ev & selectors.EVENT_READ else 0)
                 | (_WRITE if ev & selectors.EVENT_WRITE else 0))
                for key, ev in self._sel.select(timeout)]

    def close(self) -> None:
        self._sel.close()


def _new_poller() -> "select.epoll | _SelectorPoller":
    if hasattr(select, "epoll"):
        return select.epoll()
    return _SelectorPoller()


# what a file descriptor in the loop is
_K_LISTEN, _K_WAKE, _K_CLIENT, _K_UPSTREAM, _K_IDLE = range(5)


class _Client:
    """A client connection served by the loop."""

    __slots__ = ("sock", "fd", "rbuf", "wbuf", "remote", "ip", "req", "up", "backends", "first",
                 "tried", "last_backend", "busy", "closing", "closed", "eof", "mask", "last")

    def __init__(self, sock: socket.socket, addr: tuple) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.rbuf = bytearray()
        self.wbuf = bytearray()
        self.remote = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
        self.ip = addr[0] if isinstance(addr, tuple) else "-"
        self.req: _Request | None = None
        self.up: _Upstream | None = None
        self.backends: list[Backend] = []
        self.first = 0
        self.tried = 0
        self.last_backend: Backend | None = None
        self.busy = False  # a request is with a backend (or a worker thread)
        self.closing = False  # close once wbuf is written
        self.closed = False
        self.eof = False
        self.mask = _READ
        self.last = time.monotonic()


class _Upstream:
    """A connection to a backend: in use by a client, or idle in the pool."""

    __slots__ = ("sock", "fd", "backend", "key", "rbuf", "wbuf", "client", "reused", "resp",
                 "count", "as_active", "as_idle")

    def __init__(self, sock: socket.socket, backend: Backend, key: tuple) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.backend = backend
        self.key = key
        self.rbuf = bytearray()
        self.wbuf = b""
        self.client: _Client | None = None
        self.reused = False
        self.resp: _Response | None = None
        self.count = _Count()
        # the loop's handler entries, made once
        self.as_active = (_K_UPSTREAM, self)
        self.as_idle = (_K_IDLE, self)


class _Conn:
    """Sockets a worker thread is using (shutdown wakes it up by shutting them down)."""

    __slots__ = ("csock", "bsock")

    def __init__(self, csock: socket.socket, bsock: socket.socket | None = None) -> None:
        self.csock = csock
        self.bsock = bsock


# ---------------------------------------------------------------------------------------------


class Router:
    """A gorouter-like reverse proxy listening on 127.0.0.1."""

    def __init__(self, lookup: Union[LookupFn, BackendLookup], log: LogFn,
                 port: int | None = None,
                 log_batch: Callable[[list[tuple[str, str, int, str, str]]], None] | None = None
                 ) -> None:
        """`lookup(host, path)` (or `lookup.backends(host, path)`) gives the RUNNING instances of
        the route (host lowercased, without port; path without query); `log(app_guid, "RTR",
        index, "OUT", line)` receives access log lines, from a thread of the router's, a few
        milliseconds after the request; `log_batch`, if given, receives them instead as lists
        of those argument tuples (one store transaction per batch, say). `port` None picks
        $LOCALCF_ROUTER_PORT, else the first free of 61080..61099, else any free port.
        Raises RouterError when the port cannot be had."""
        backends = getattr(lookup, "backends", None)
        self._lookup: LookupFn = backends if callable(backends) else lookup  # type: ignore
        self._log = log
        self._sock = self._listen(port)
        self.port: int = self._sock.getsockname()[1]
        self._stopping = False
        self._rr: dict[str, Iterator[int]] = {}
        self._hosts: dict[str, str] = {}  # Host header -> the host routes are looked up by
        # loop state: touched by the loop thread only
        self._poller = _new_poller()
        self._handlers: dict[int, tuple[int, object]] = {}
        self._clients: dict[int, _Client] = {}
        self._idle: dict[tuple, list[_Upstream]] = {}
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
        self._workers: dict[threading.Thread, _Conn] = {}
        self._workers_lock = threading.Lock()
        # access log lines, written by their own thread
        self._log_pending: collections.deque = collections.deque()
        self._logs_dropped = 0
        self._log_batch = log_batch
        self._log_wake = threading.Event()
        self._log_thread: threading.Thread | None = None

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
        self._poller.register(self._sock.fileno(), _READ)
        self._handlers[self._sock.fileno()] = (_K_LISTEN, None)
        self._poller.register(self._wake_r, _READ)
        self._handlers[self._wake_r] = (_K_WAKE, None)
        self._log_thread = threading.Thread(target=self._log_loop, name="router-log", daemon=True)
        self._log_thread.start()
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
        if self._log_thread is not None:
            self._log_wake.set()
            self._log_thread.join(10)

    def __enter__(self) -> "Router":
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
                _close(up.sock)
        self._idle.clear()
        _close(self._sock)
        try:
            self._poller.close()
        except OSError:
            pass

    def _log_loop(self) -> None:
        # Access log lines are written off the request path (the log stream may hit the disk),
        # in batches: waking this thread for every request would cost the loop a GIL hand-off.
        pending = self._log_pending
        while True:
            self._log_wake.wait()
            self._log_wake.clear()
            stopping = self._stopping
            if not stopping:
                time.sleep(0.01)
            while pending:
                batch = []
                while pending and len(batch) < 500:
                    item = pending.popleft()
                    batch.append((item[0].app_guid, "RTR", item[0].instance_index, "OUT",
                                  self._format_access_log(*item)))
                try:
                    if self._log_batch is not None:
                        self._log_batch(batch)
                    else:
                        for entry in batch:
                            self._log(*entry)
                except Exception as e:  # a broken log sink must not take the router down
                    print(f"localcf router: writing access log lines failed: {e!r}",
                          file=sys.stderr)
            if self._logs_dropped:
                dropped, self._logs_dropped = self._logs_dropped, 0
                print(f"localcf router: {dropped} access log lines dropped: the log sink is "
                      f"slower than the requests", file=sys.stderr)
            if stopping:
                return

    # -- the loop -------------------------------------------------------------------------------

    def _run(self) -> None:
        poll = self._poller.poll
        handlers = self._handlers
        try:
            while not self._stopping:
                for fd, mask in poll(1.0):
                    entry = handlers.get(fd)
                    if entry is None:
                        continue
                    kind, obj = entry
                    try:
                        if kind == _K_CLIENT:
                            self._client_event(obj, mask)  # type: ignore[arg-type]
                        elif kind == _K_UPSTREAM:
                            self._upstream_event(obj, mask)  # type: ignore[arg-type]
                        elif kind == _K_IDLE:
                            self._idle_event(obj)  # type: ignore[arg-type]
                        elif kind == _K_LISTEN:
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
                if now - self._last_sweep > 5.0:
                    self._sweep(now)
        finally:
            self._close_all()

    def _drop_after_bug(self, kind: int, obj: object) -> None:
        try:
            if kind == _K_CLIENT:
                self._close_client(obj)  # type: ignore[arg-type]
            elif kind in (_K_UPSTREAM, _K_IDLE):
                up: _Upstream = obj  # type: ignore[assignment]
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
        _close(sock)

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
                _tune(sock, _CLIENT_IDLE_TIMEOUT)
            except OSError:
                _close(sock)
                continue
            client = _Client(sock, addr)
            self._clients[client.fd] = client
            self._handlers[client.fd] = (_K_CLIENT, client)
            self._poller.register(client.fd, _READ)

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        now_pc = time.perf_counter()
        for client in list(self._clients.values()):
            up = client.up
            if up is not None:
                req = client.req
                if req is not None and now_pc - req.app_t0 > _BACKEND_TIMEOUT and up.resp is None:
                    self._forget(up.fd, up.sock)
                    client.up = None
                    self._bad_gateway(client)
            elif not client.busy and now - client.last > _CLIENT_IDLE_TIMEOUT:
                self._close_client(client)

    # -- clients --------------------------------------------------------------------------------

    def _client_event(self, c: _Client, mask: int) -> None:
        if mask & _HANGUP:
            # gone both ways (a half-close only shows as EOF): nobody to answer any more
            self._close_client(c)
            return
        if mask & _WRITE and c.wbuf:
            self._flush(c)
            if c.closed:
                return
        if mask & _READABLE:
            try:
                data = c.sock.recv(_BUF)
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

    def _update_mask(self, c: _Client) -> None:
        if c.closed or c.mask < 0:  # closed, or with a worker thread
            return
        want = _WRITE if c.wbuf else 0
        # read on while the client is within bounds: requests ahead, answers it has not taken
        if not c.eof and not c.closing and len(c.wbuf) < _MAX_AHEAD and (
                not c.busy or len(c.rbuf) < _MAX_AHEAD):
            want |= _READ
        if want != c.mask:
            c.mask = want
            self._poller.modify(c.fd, want)

    def _write(self, c: _Client, data: bytes) -> None:
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

    def _flush(self, c: _Client) -> None:
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

    def _close_client(self, c: _Client) -> None:
        if c.closed:
            return
        c.closed = True
        self._clients.pop(c.fd, None)
        if c.up is not None:
            self._forget(c.up.fd, c.up.sock)
            c.up = None
        self._forget(c.fd, c.sock)

    def _finish_or_close(self, c: _Client) -> None:
        """After an answer went to a client that is not kept: close once it is written."""
        c.closing = True
        if not c.wbuf:
            self._close_client(c)
        else:
            self._update_mask(c)

    def _advance(self, c: _Client) -> None:
        """Take the next request from what the client sent, as far as it has come."""
        while not c.busy and not c.closed and not c.closing and len(c.wbuf) < _MAX_AHEAD:
            req = c.req
            buf = c.rbuf
            if req is None:
                while buf[:2] == b"\r\n":  # RFC 9112: ignore empty lines before a request
                    del buf[:2]
                i = buf.find(b"\r\n\r\n")
                if i < 0:
                    if len(buf) > _MAX_HEAD:
                        self._bad_request(c, "HTTP/1.1", "request head larger than 64 KiB")
                    elif c.eof:
                        self._close_client(c)
                    return
                head = bytes(buf[:i])
                del buf[:i + 4]
                try:
                    req = _parse_request(head, c.ip)
                except _BadMessage as e:
                    self._bad_request(c, "HTTP/1.1", str(e))
                    return
                req.started_ns = time.time_ns()
                req.t0 = time.perf_counter()
                host = self._hosts.get(req.host)
                if host is None:
                    if len(self._hosts) > 1000:
                        self._hosts.clear()
                    host = self._hosts[req.host] = _split_host(req.host.strip()).lower()
                target = req.target
                backends = self._lookup(host, target.partition("?")[0] if target[0] == "/"
                                        else _lookup_path(target))
                if not backends:
                    # an unread body would be taken for the next request: close instead
                    keep = req.keep_alive and req.body_length == 0
                    self._write(c, _plain_response(
                        req.version, 404, "Not Found",
                        NOT_FOUND_TEXT.format(host=_split_host(req.host.strip())),
                        "unknown_route", close=not keep, method=req.method))
                    if not keep:
                        self._finish_or_close(c)
                    continue
                c.req = req
                c.backends = backends
                c.tried = 0
                c.first = next(self._rr.setdefault(host, itertools.count())) % len(backends)
                if req.upgrade or req.body_length > _WHOLE_LIMIT:
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
                    end = _chunked_end(buf, req.body_count)
                except _BadMessage as e:
                    self._bad_request(c, req.version, str(e))
                    return
                if end < 0:
                    if len(buf) > _WHOLE_LIMIT:
                        self._hand_off_request(c)
                    elif c.eof:
                        self._close_client(c)
                    return
                req.body = bytes(buf[:end])
                del buf[:end]
            c.busy = True
            self._connect(c)

    def _bad_request(self, c: _Client, version: str, why: str) -> None:
        self._write(c, _plain_response(version, 400, "Bad Request", f"400 Bad Request: {why}\n",
                                       "", close=True))
        self._finish_or_close(c)

    def _request_done(self, c: _Client, keep: bool) -> None:
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

    def _connect(self, c: _Client, fresh: bool = False) -> None:
        """Send the client's request to the next backend to try: on a kept connection if there
        is one, else on a new one, opened by the connector."""
        n = len(c.backends)
        if c.tried >= min(n, _MAX_ENDPOINTS_TRIED):
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

    def _open(self, c: _Client, backend: Backend, key: tuple) -> None:
        """(connector thread) Open a connection to `backend`, and give it to the loop."""
        sock = None
        try:
            sock = backend.connect()
            sock.setblocking(False)
            _tune(sock, _BACKEND_TIMEOUT)
        except Exception:  # refused, reset, or the instance's container is gone
            _close(sock)
            sock = None
        self._calls.append(lambda: self._opened(c, backend, key, sock))
        self._wake()

    def _opened(self, c: _Client, backend: Backend, key: tuple,
                sock: socket.socket | None) -> None:
        if self._stopping or c.closed:
            _close(sock)
            return
        if sock is None:
            c.tried += 1  # nothing reached the app: any request may go elsewhere
            self._connect(c)
            return
        up = _Upstream(sock, backend, key)
        self._poller.register(up.fd, _READ)
        self._send(c, up)

    def _send(self, c: _Client, up: _Upstream) -> None:
        """Send the request, whole, on a connection to a backend."""
        req = c.req
        assert req is not None
        self._handlers[up.fd] = up.as_active
        up.client = c
        up.resp = None
        up.count = _Count()
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
            self._poller.modify(up.fd, _READ | _WRITE)

    def _upstream_failed(self, up: _Upstream, got_bytes: bool) -> None:
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
        replay = not got_bytes and req.method in _IDEMPOTENT
        if replay and up.reused:
            self._connect(c, fresh=True)  # an idle connection the app had just closed
        elif replay:
            c.tried += 1
            self._connect(c)
        else:
            self._bad_gateway(c)

    def _bad_gateway(self, c: _Client) -> None:
        req = c.req
        assert req is not None
        keep = req.keep_alive
        self._write(c, _plain_response(req.version, 502, "Bad Gateway", BAD_GATEWAY_TEXT,
                                       "endpoint_failure", close=not keep, method=req.method))
        if c.last_backend is not None:
            self._access_log(req, c.last_backend, c.remote, 502, len(BAD_GATEWAY_TEXT),
                             -1.0, "endpoint_failure")
        self._request_done(c, keep)

    def _upstream_event(self, up: _Upstream, mask: int) -> None:
        if mask & _WRITE and up.wbuf:
            try:
                sent = up.sock.send(up.wbuf)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._upstream_failed(up, got_bytes=False)
                return
            up.wbuf = up.wbuf[sent:]
            if not up.wbuf:
                self._poller.modify(up.fd, _READ)
        if mask & _READABLE:
            try:
                data = up.sock.recv(_BUF)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._upstream_failed(up, got_bytes=bool(up.rbuf) or up.resp is not None)
                return
            up.rbuf += data
            self._upstream_progress(up)

    def _upstream_progress(self, up: _Upstream) -> None:
        """Relay the response once it is all there (or hand it to a worker thread)."""
        c = up.client
        assert c is not None and c.req is not None
        req = c.req
        buf = up.rbuf
        while up.resp is None:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                if len(buf) > _MAX_HEAD:
                    self._upstream_failed(up, got_bytes=True)
                return
            head = bytes(buf[:i])
            del buf[:i + 4]
            try:
                resp = _prepare_response(req, head, body_done=True)
            except _BadMessage:
                self._upstream_failed(up, got_bytes=True)
                return
            if resp.kind == _R_INTERIM:
                if req.version != "HTTP/1.0":
                    self._write(c, resp.head_out)
                    if c.closed:
                        return
                continue
            if resp.kind in (_R_SWITCH, _R_DECHUNK, _R_CLOSE) or resp.length > _WHOLE_LIMIT:
                self._hand_off_response(c, up, resp)
                return
            up.resp = resp
        resp = up.resp
        if resp.kind == _R_LENGTH:
            if len(buf) < resp.length:
                return
            body = bytes(buf[:resp.length])
            del buf[:resp.length]
            up.count.n = resp.length
        elif resp.kind == _R_CHUNKED:
            try:
                end = _chunked_end(buf, up.count)
            except _BadMessage:
                self._upstream_failed(up, got_bytes=True)
                return
            if end < 0:
                if len(buf) > _WHOLE_LIMIT:
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

    def _pool(self, up: _Upstream) -> None:
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

    def _idle_event(self, up: _Upstream) -> None:
        idle = self._idle.get(up.key)
        if idle and up in idle:
            idle.remove(up)
        self._forget(up.fd, up.sock)

    # -- hand-offs to worker threads ------------------------------------------------------------

    def _hand_off_request(self, c: _Client) -> None:
        """Stream this request (and its response) with blocking sockets in a worker thread."""
        c.busy = True
        self._detach(c.fd)
        c.mask = -1
        self._start_worker(c, _Conn(c.sock), self._proxy_streaming, c)

    def _hand_off_response(self, c: _Client, up: _Upstream, resp: _Response) -> None:
        """Stream this response with blocking sockets in a worker thread."""
        self._detach(c.fd)
        self._detach(up.fd)
        c.mask = -1
        c.up = None
        self._start_worker(c, _Conn(c.sock, up.sock), self._relay_streaming, c, up, resp)

    def _start_worker(self, c: _Client, conn: _Conn, target: Callable, *args: object) -> None:
        # the worker owns the client now; shutdown() reaches it through `conn`
        self._clients.pop(c.fd, None)
        thread = threading.Thread(target=self._worker, args=(c, conn, target, args),
                                  name="router-stream", daemon=True)
        with self._workers_lock:
            self._workers[thread] = conn
        thread.start()

    def _worker(self, c: _Client, conn: _Conn, target: Callable, args: tuple) -> None:
        keep, pooled = False, None
        try:
            c.sock.setblocking(True)
            keep, pooled = target(conn, *args)
        except (OSError, _Truncated, _ClientGone, _BadMessage):
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

    def _handed_back(self, c: _Client, keep: bool, up: _Upstream | None) -> None:
        """A worker thread is done with a client (and maybe a backend connection to keep)."""
        if self._stopping:
            _close(c.sock)
            if up is not None:
                _close(up.sock)
            return
        if up is not None:
            try:
                up.sock.setblocking(False)
                self._poller.register(up.fd, _READ)
                self._handlers[up.fd] = up.as_idle
                self._pool(up)
            except OSError:
                self._forget(up.fd, up.sock)
        if not keep or c.closed:
            c.closed = True
            _close(c.sock)
            return
        try:
            c.sock.setblocking(False)
            c.mask = _READ
            self._poller.register(c.fd, _READ)
            self._handlers[c.fd] = (_K_CLIENT, c)
            self._clients[c.fd] = c
        except OSError:
            _close(c.sock)
            return
        self._request_done(c, True)

    # -- the streaming paths (worker threads, blocking sockets) ---------------------------------

    def _proxy_streaming(self, conn: _Conn, c: _Client) -> tuple[bool, _Upstream | None]:
        """A request whose body is too big to hold, or an upgrade: stream it, then the answer."""
        req = c.req
        assert req is not None
        reader = _Reader(c.sock, c.rbuf)
        req.body_rest = _request_body(req, reader)
        if req.body_rest is not None and req.expect_continue and not req.continue_sent \
                and req.version != "HTTP/1.0":
            c.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if not req.upgrade:
            self._read_ahead(req)
        n = len(c.backends)
        backend = c.backends[c.first]
        for attempt in range(min(n, _MAX_ENDPOINTS_TRIED)):
            backend = c.backends[(c.first + attempt) % n]
            try:
                return self._exchange(conn, reader, req, backend, c.remote)
            except _EndpointFailed as failure:
                if not failure.retry_other:
                    break
        keep = req.keep_alive and req.body_rest is None
        c.sock.sendall(_plain_response(req.version, 502, "Bad Gateway", BAD_GATEWAY_TEXT,
                                       "endpoint_failure", close=not keep, method=req.method))
        self._access_log(req, backend, c.remote, 502, len(BAD_GATEWAY_TEXT), -1.0,
                         "endpoint_failure")
        return keep, None

    @staticmethod
    def _read_ahead(req: _Request) -> None:
        """Read what fits of the body ahead, so that a failed backend can still be retried."""
        if req.body_rest is None:
            return
        total = 0
        try:
            for piece in req.body_rest:
                req.body_prefix.append(piece)
                total += len(piece)
                if total > _WHOLE_LIMIT:
                    return  # the rest streams straight to the app
        except (OSError, _Truncated, _BadMessage) as e:
            raise _ClientGone() from e
        req.body_rest = None

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
            except (OSError, _Truncated, _BadMessage) as e:
                raise _ClientGone() from e
            bsock.sendall(piece)
        req.body_rest = None

    def _exchange(self, conn: _Conn, reader: _Reader, req: _Request, backend: Backend,
                  remote: str) -> tuple[bool, _Upstream | None]:
        """Send the request to one backend and relay its response. Raises _EndpointFailed when
        the backend fails before its response head."""
        replay = req.body_rest is None and req.method in _IDEMPOTENT
        try:
            bsock = backend.connect()
        except Exception:  # refused, reset, or the instance's container is gone
            raise _EndpointFailed(retry_other=True) from None
        try:
            bsock.setblocking(True)
            _tune(bsock, _BACKEND_TIMEOUT)
        except OSError:
            _close(bsock)
            raise _EndpointFailed(retry_other=True) from None
        conn.bsock = bsock
        req.app_t0 = time.perf_counter()
        breader = _Reader(bsock)
        try:
            self._send_request(bsock, req)
            while True:
                head = breader.read_head()
                if head is None:
                    raise ConnectionResetError("closed before a response")
                resp = _prepare_response(req, head, body_done=req.body_rest is None)
                if resp.kind != _R_INTERIM:
                    break
                if req.version != "HTTP/1.0":
                    conn.csock.sendall(resp.head_out)
        except _ClientGone:
            _close(bsock)
            raise
        except (OSError, _Truncated, _BadMessage):
            _close(bsock)
            raise _EndpointFailed(retry_other=replay) from None
        up = _Upstream(bsock, backend, (backend.app_guid, backend.instance_index, backend.address))
        up.rbuf = breader.buf
        return self._stream_response(conn, reader, up, req, resp, remote)

    def _relay_streaming(self, conn: _Conn, c: _Client, up: _Upstream,
                         resp: _Response) -> tuple[bool, _Upstream | None]:
        """A response the loop handed over (too big, endless, or a protocol switch)."""
        up.sock.setblocking(True)
        assert c.req is not None
        return self._stream_response(conn, _Reader(c.sock, c.rbuf), up, c.req, resp, c.remote)

    def _stream_response(self, conn: _Conn, reader: _Reader, up: _Upstream, req: _Request,
                         resp: _Response, remote: str) -> tuple[bool, _Upstream | None]:
        """Pass the response on as it comes; the backend connection comes back if reusable."""
        csock = conn.csock
        breader = _Reader(up.sock, up.rbuf)
        if resp.kind == _R_SWITCH:
            csock.sendall(resp.head_out)
            self._tunnel(reader, breader)
            _close(up.sock)
            self._access_log(req, up.backend, remote, 101, 0, time.perf_counter() - req.app_t0, "")
            return False, None
        count = up.count
        body: Iterator[bytes] | None = None
        if resp.kind == _R_LENGTH and resp.length:
            body = _iter_length(breader, resp.length, count)
        elif resp.kind == _R_CHUNKED:
            body = _iter_chunked(breader, count, raw=True)
        elif resp.kind == _R_DECHUNK:
            body = _iter_chunked(breader, count, raw=False)
        elif resp.kind == _R_CLOSE:
            body = _iter_until_close(breader, count)
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
        except (OSError, _Truncated, _BadMessage):
            if not head_sent:
                # the app broke off before anything went to the client: still a clean 502
                _close(up.sock)
                csock.sendall(_plain_response(req.version, 502, "Bad Gateway", BAD_GATEWAY_TEXT,
                                              "endpoint_failure", close=True, method=req.method))
                self._access_log(req, up.backend, remote, 502, len(BAD_GATEWAY_TEXT), -1.0,
                                 "endpoint_failure")
                return False, None
            keep = False  # one side broke off: the client can only learn it by the close
        app_time = time.perf_counter() - req.app_t0
        self._access_log(req, up.backend, remote, resp.code, count.n, app_time, "")
        if complete and resp.backend_keep and not breader.buf:
            return keep, up
        _close(up.sock)
        return keep, None

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
            sel = selectors.DefaultSelector()
            try:
                for fd in peer:
                    sel.register(fd, selectors.EVENT_READ)
                open_fds = set(peer)
                while open_fds and not self._stopping:
                    for key, _events in sel.select(1.0):
                        src, dst = peer[key.fd]
                        try:
                            data = src.recv(_BUF)
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

    def _access_log(self, req: _Request, backend: Backend, remote: str, code: int,
                    bytes_sent: int, app_time: float, router_error: str) -> None:
        """Queue one access log line; it is formatted and written by the log thread."""
        response_time = time.perf_counter() - req.t0
        if len(self._log_pending) >= _MAX_PENDING_LOGS:
            # like loggregator, lossy under pressure rather than without bound
            self._logs_dropped += 1
            return
        self._log_pending.append((backend, req, remote, code, bytes_sent, response_time,
                                  app_time, router_error))
        if not self._log_wake.is_set():
            self._log_wake.set()

    @staticmethod
    def _format_access_log(backend: Backend, req: _Request, remote: str, code: int,
                           bytes_sent: int, response_time: float, app_time: float,
                           router_error: str) -> str:
        """gorouter's access log line, its fields in gorouter's order."""
        gorouter_time = response_time - app_time if app_time >= 0 else -1.0
        request_line = _quote(f"{req.method} {req.target} {req.version}")
        return (
            f"{req.host} - [{_ns_timestamp(req.started_ns)}] {request_line} {code} "
            f"{req.body_count.n} {bytes_sent} {_quote(req.referer)} {_quote(req.user_agent)} "
            f"{_quote(remote)} {_quote(backend.address)} "
            f"x_forwarded_for:{_quote(req.xff_raw.decode('latin-1'))} "
            f"x_forwarded_proto:{_quote(req.xfp_raw.decode('latin-1'))} "
            f"vcap_request_id:{_quote(req.request_id)} response_time:{response_time:.6f} "
            f"gorouter_time:{_fmt_time(gorouter_time)} app_id:{_quote(backend.app_guid)} "
            f"app_index:{_quote(str(backend.instance_index))} "
            f"instance_id:{_quote(backend.instance_id)} route_service_url:\"-\" "
            f"x_cf_routererror:{_quote(router_error)}"
        )
