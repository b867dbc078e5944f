"""HTTP/1.x on the wire: request and response heads, body framing, and the router's own answers.

The router parses only what it must: the start line and the headers it acts on (framing,
hop-by-hop headers, the ones it sets itself); every other header passes untouched. Heads are
checked whole against one regular expression, and what it refuses gets a 400 that says which
line was wrong. Bodies are either found whole in a buffer (`chunked_end`, for the event loop)
or read piece by piece from a blocking socket (`Reader` and the `iter_*` functions, for the
streaming path).
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from email.utils import formatdate
from random import getrandbits

NOT_FOUND_TEXT = "404 Not Found: Requested route ('{host}') does not exist.\n"
BAD_GATEWAY_TEXT = "502 Bad Gateway: Registered endpoint failed to handle the request.\n"

BUF = 65536
MAX_HEAD = 64 * 1024
# Bodies up to this size are moved whole by the loop. A request body is read before a backend
# gets it, so that a failed backend can be retried; bigger bodies stream and are not retried.
WHOLE_LIMIT = 256 * 1024


class BadMessage(Exception):
    """A peer sent something that is not HTTP/1.x the router is willing to pass on."""


class Truncated(Exception):
    """The peer closed the connection in the middle of a message."""


class Count:
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


class Request:
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
        self.body_count = Count()
        self.request_id = ""
        self.user_agent = ""
        self.referer = ""
        self.xff_raw = b""
        self.xfp_raw = b""
        self.started_ns = 0
        self.t0 = 0.0
        self.app_t0 = -1.0


# kinds of response bodies
R_INTERIM, R_SWITCH, R_EMPTY, R_LENGTH, R_CHUNKED, R_DECHUNK, R_CLOSE = range(7)


class Response:
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


_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_TOKEN_RE = re.compile(_TOKEN)
# A request head as the router accepts it: a request line without control characters, then
# `name:value` lines whose names are tokens and whose values hold no control character but HTAB
# (RFC 9110 5.5; Go's net/http, and so gorouter, refuse the same), and no bare CR or LF anywhere.
# Whitespace before a colon and folded lines are refused: they are the stuff of request
# smuggling, and no client a learner uses sends them.
_REQUEST_HEAD_OK = re.compile(
    rb"[^\x00-\x1f\x7f]*(?:\r\n" + _TOKEN + rb":[^\x00-\x08\x0a-\x1f\x7f]*)*\Z")
# A response head: the same lines, but the values an app sends pass on as they are (only CR and
# LF, which would split a line, are refused).
_RESPONSE_HEAD_OK = re.compile(rb"[^\r\n]*(?:\r\n" + _TOKEN + rb":[^\r\n]*)*\Z")
_CTL_IN_LINE = re.compile(rb"[\x00-\x1f\x7f]")
_CTL_IN_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# in the header lines of a head still coming: a control character, a bare CR or a bare LF
_BAD_IN_FIELDS = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n")
_CTL_NAMES = {0: "NUL", 9: "TAB", 10: "LF", 13: "CR", 127: "DEL"}


def _ctl_problem(byte: int, where: str) -> BadMessage:
    name = _CTL_NAMES.get(byte, f"0x{byte:02X}")
    if byte in (10, 13):
        why = "every line of a request head ends with CRLF"
    elif where == "the request line":
        why = "percent-encode it in the request target"
    else:
        why = "a header value may hold no control character but TAB"
    return BadMessage(f"{'bare' if byte in (10, 13) else 'control character'} {name} in "
                      f"{where}: {why}")


def _head_error(head: bytes, request: bool = True) -> BadMessage:
    """Say which line of a refused head is wrong, and how."""
    lines = head.split(b"\r\n")
    m = _CTL_IN_LINE.search(lines[0]) if request else None
    if m:
        return _ctl_problem(lines[0][m.start()], "the request line")
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN_RE.fullmatch(name):
            return BadMessage(f"malformed header line {line[:60]!r}")
        m = _CTL_IN_VALUE.search(value) if request else None
        if m:
            return _ctl_problem(value[m.start()], f"the value of header {name.decode()!r}")
        if b"\r" in line or b"\n" in line:
            return BadMessage(f"bare CR or LF in header line {line[:60]!r}")
    return BadMessage("bare CR or LF in the message head")


def unfinished_head_error(buf: bytearray, start: int) -> BadMessage | None:
    """What already makes a request head that has not ended yet unacceptable, whatever
    follows: a TLS handshake, a control character, a bare CR or LF. Only `buf[start:]` is
    looked at (with the bytes before it as context), so that a head arriving in many small
    pieces is looked at once, not once per piece."""
    if buf[:2] == b"\x16\x03":
        return BadMessage("a TLS handshake on the router's plain HTTP port: use an http:// URL")
    eol = buf.find(b"\r\n")
    end = len(buf) - 1 if buf.endswith(b"\r") else len(buf)  # its LF may be on the way
    line_end = end if eol < 0 else eol
    if start < line_end:
        m = _CTL_IN_LINE.search(buf, start, line_end)
        if m:
            return _ctl_problem(buf[m.start()], "the request line")
    if eol >= 0:
        m = _BAD_IN_FIELDS.search(buf, max(start, eol + 2), end)
        if m:
            return _ctl_problem(buf[m.start()], "a header line")
    return None


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


def parse_request(head: bytes, client_ip: str) -> Request:
    """Parse a request head and prepare the head that goes to the app."""
    if _REQUEST_HEAD_OK.match(head) is None:
        raise _head_error(head)
    eol = head.find(b"\r\n")
    if eol < 0:
        eol = len(head)
    parts = head[:eol].decode("latin-1").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0] or not parts[1]:
        raise BadMessage(f"malformed request line {head[:min(eol, 80)]!r}")
    req = Request(*parts)
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
                raise BadMessage("more than one Host header")
            host = value
        elif kind == _H_LENGTH:
            if not value.isdigit() or (length >= 0 and length != int(value)):
                raise BadMessage(f"bad Content-Length {value[:40]!r}")
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
            raise BadMessage(f"unsupported Transfer-Encoding {te[:40]!r}")
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


def prepare_response(req: Request, head: bytes, body_done: bool) -> Response:
    """Parse a response head from an app and prepare the head that goes to the client."""
    if _RESPONSE_HEAD_OK.match(head) is None:
        raise _head_error(head, request=False)
    eol = head.find(b"\r\n")
    if eol < 0:
        eol = len(head)
    parts = head[:eol].split(b" ", 2)
    if (len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3
            or not parts[1].isdigit()):
        raise BadMessage(f"malformed status line {head[:min(eol, 80)]!r}")
    code = int(parts[1])
    if code == 101:
        if not req.upgrade:
            raise BadMessage("101 Switching Protocols to a request that asked for none")
        return Response(code, R_SWITCH, 0, False, False, head + b"\r\n\r\n")
    if 100 <= code < 200:
        # interim responses (103 Early Hints...) go to HTTP/1.1 clients as they are
        return Response(code, R_INTERIM, 0, True, True, head + b"\r\n\r\n")
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
                    raise BadMessage(f"bad Content-Length {value[:40]!r}")
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
        kind = R_EMPTY  # a Content-Length stays: it describes the body a GET would get
    elif te and te.split(b",")[-1].strip(b" \t").lower() == b"chunked":
        if client11:
            kind = R_CHUNKED
            if length >= 0:  # both: chunked wins, and the length must not reach the client
                dropper = _RESPONSE_DROP_LENGTH
                drop = True
        else:
            kind = R_DECHUNK
            keep = False  # an HTTP/1.0 client learns where the body ends by the close
            dropper = _RESPONSE_DROP_FRAMING
            drop = True
    elif length >= 0 and not te:
        kind = R_LENGTH
    else:
        # no framing: the body ends when the app closes the connection
        kind = R_CLOSE
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
    return Response(code, kind, length, backend_keep, keep, out)


def chunk_size(line: bytes) -> int:
    """The size on a chunk-size line (terminator included)."""
    if not line.endswith(b"\r\n"):
        raise BadMessage(f"bad chunk size line {line[:40]!r}")
    size_text = line[:-2].split(b";", 1)[0].strip(b" \t")
    # int() alone would also take "0x1f", "+1f" and "1_f": a smuggler's friends
    if not size_text or size_text.strip(b"0123456789abcdefABCDEF") or len(size_text) > 15:
        raise BadMessage(f"bad chunk size line {line[:40]!r}")
    return int(size_text, 16)


def chunked_end(buf: bytearray, count: Count) -> int:
    """Where a chunked body at the start of `buf` ends, or -1 if it is not all there yet."""
    pos = 0
    data = 0
    while True:
        eol = buf.find(b"\n", pos)
        if eol < 0:
            if len(buf) - pos > 8192:
                raise BadMessage("chunk size line longer than 8 KiB")
            return -1
        size = chunk_size(bytes(buf[pos:eol + 1]))
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
                    raise BadMessage("bare LF in a chunked trailer")
        if len(buf) < pos + size + 2:
            return -1
        if buf[pos + size:pos + size + 2] != b"\r\n":
            raise BadMessage("chunk data longer than its size")
        data += size
        pos += size + 2


class Reader:
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
            if len(buf) > MAX_HEAD:
                raise BadMessage("message head larger than 64 KiB")
            searched = max(0, len(buf) - 3)
            data = self.sock.recv(BUF)
            if not data:
                if buf:
                    raise Truncated("connection closed inside a message head")
                return None
            buf += data

    def read_some(self, limit: int) -> bytes:
        """Up to `limit` bytes: buffered ones first, else one recv (b"" at EOF)."""
        if self.buf:
            data = bytes(self.buf[:limit])
            del self.buf[:limit]
            return data
        return self.sock.recv(min(limit, BUF))

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
                raise BadMessage("chunk line longer than 8 KiB")
            data = self.sock.recv(BUF)
            if not data:
                raise Truncated("connection closed inside a chunked body")
            buf += data


def iter_length(reader: Reader, length: int, count: Count) -> Iterator[bytes]:
    """The pieces of a body of `length` bytes."""
    remaining = length
    while remaining > 0:
        piece = reader.read_some(remaining)
        if not piece:
            raise Truncated("connection closed inside a body")
        remaining -= len(piece)
        count.n += len(piece)
        yield piece


def iter_chunked(reader: Reader, count: Count, raw: bool = True) -> Iterator[bytes]:
    """The pieces of a chunked body: the raw framing (to pass on as is) or only the data."""
    while True:
        line = reader.readline()
        size = chunk_size(line)
        if raw:
            yield line
        if size == 0:
            while True:  # trailer section, up to the empty line
                line = reader.readline()
                if not line.endswith(b"\r\n"):
                    raise BadMessage("bare LF in a chunked trailer")
                if raw:
                    yield line
                if line == b"\r\n":
                    return
        yield from iter_length(reader, size, count)
        crlf = reader.readline()
        if crlf != b"\r\n":
            raise BadMessage("chunk data longer than its size")
        if raw:
            yield crlf


def iter_until_close(reader: Reader, count: Count) -> Iterator[bytes]:
    while True:
        piece = reader.read_some(BUF)
        if not piece:
            return
        count.n += len(piece)
        yield piece


def request_body(req: Request, reader: Reader) -> Iterator[bytes] | None:
    if req.body_length < 0:
        return iter_chunked(reader, req.body_count)
    if req.body_length > 0:
        return iter_length(reader, req.body_length, req.body_count)
    return None


def plain_response(version: str, code: int, reason: str, body: str, router_error: str,
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
