"""The API's HTTP layer: the route table, the request and answer types, and the server.

The order of work for every request is fixed, so that nobody can make the daemon hold memory or a
thread without the token:

1. the head is read (request line and headers; Python's own limits apply);
2. the bearer token is checked: without it the answer is 401 and the connection is closed,
   before a single byte of the body is read;
3. the body's framing is checked: `Content-Length` must be a non-negative integer (else 400), a
   `Transfer-Encoding` must be `chunked` (else 411), both at once is refused (400);
4. the route is found (404/405, again without reading the body);
5. the body is read up to the route's cap (1 MiB for JSON, 1 GiB for package and buildpack
   uploads; more is 413), every read bounded by `READ_TIMEOUT` and the whole body by a minimum
   pace (`MIN_BODY_RATE`): a stalled or trickling sender gets 408;
6. the handler runs (`localcf.api`), its `ApiError`s become CAPI error bodies.

Handlers register with `@route(method, pattern, max_body=...)` and get a `Request`.
"""

from __future__ import annotations

import hmac
import json
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .controller import ApiError, Controller
from .jsondoc import JsonObject

Handler = Callable[..., Any]

JSON_MAX = 1 << 20
"""Largest JSON (or manifest) body a route accepts by default: 1 MiB."""
UPLOAD_MAX = 1 << 30
"""Largest package or buildpack upload: 1 GiB."""
READ_TIMEOUT = 30.0
"""Seconds a connection may stay silent while the server waits for its head or body."""
MIN_BODY_RATE = 64 << 10
"""Bytes a second a body must arrive at, on average (after `READ_TIMEOUT` of grace): a sender that
trickles a byte now and then cannot hold a thread for long."""


class RouteSpec:
    """One entry of the route table."""

    def __init__(self, method: str, pattern: re.Pattern[str], fn: Handler, max_body: int):
        self.method, self.pattern, self.fn, self.max_body = method, pattern, fn, max_body

    def __iter__(self) -> Any:  # unpacks as (method, pattern, fn), the table's older shape
        return iter((self.method, self.pattern, self.fn))


ROUTES: list[RouteSpec] = []
# set by localcf.entry (localcf.uaa.check): True lets a request through, an ApiError is its 401,
# None leaves it to the state dir's token
AUTH_HOOK: Callable[[Any], bool | ApiError | None] | None = None


def route(method: str, pattern: str, max_body: int = JSON_MAX) -> Callable[[Handler], Handler]:
    """Register a handler for `method` on paths matching `pattern` (anchored), with a body cap."""
    def deco(fn: Handler) -> Handler:
        ROUTES.append(RouteSpec(method, re.compile("^" + pattern + "$"), fn, max_body))
        return fn
    return deco


def bad_request(detail: str) -> ApiError:
    return ApiError(400, 1001, "CF-MessageParseError", detail)


class Request:
    """What a handler sees: method, path, query, the (already read) body and the headers."""

    def __init__(self, method: str, path: str, query: dict[str, list[str]], body: bytes,
                 headers: Any, handler: ApiHandler):
        self.method, self.path, self.query, self.body, self.headers = method, path, query, body, headers
        self.handler = handler

    def json(self) -> JsonObject:
        if not self.body:
            return {}
        try:
            data = json.loads(self.body)
        except ValueError as e:
            raise bad_request(f"Request invalid due to parse error: {e}") from None
        if not isinstance(data, dict):
            raise bad_request("Request invalid due to parse error: expected an object")
        return data

    def q(self, name: str) -> list[str]:
        vals = self.query.get(name) or []
        return [v for item in vals for v in item.split(",") if v]


class Raw:
    """A non-JSON answer (a file download)."""

    def __init__(self, data: bytes, content_type: str = "application/octet-stream",
                 headers: dict[str, str] | None = None):
        self.data, self.content_type, self.headers = data, content_type, headers or {}


class Upgrade:
    """A connection taken over after `101 Switching Protocols`: `fn(rfile, socket)` runs on it."""

    def __init__(self, fn: Callable[[Any, Any], None], protocol: str):
        self.fn, self.protocol = fn, protocol


class Stream:
    """A streamed answer: an iterator of byte chunks, written as they come."""

    def __init__(self, chunks: Any, content_type: str = "application/x-ndjson"):
        self.chunks, self.content_type = chunks, content_type


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"


class _BodyError(Exception):
    """The body could not be read: the answer to send, and the connection is not reusable."""

    def __init__(self, error: ApiError):
        super().__init__(error.detail)
        self.error = error


class ApiHandler(BaseHTTPRequestHandler):
    server_version = "localcf"
    protocol_version = "HTTP/1.1"
    # head and body go out in two writes; with Nagle on, a keep-alive client waits 40 ms for the body
    disable_nagle_algorithm = True
    # every read from the socket (head or body) gives up after this long; see READ_TIMEOUT
    timeout = READ_TIMEOUT

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self._read_timeout)

    @property
    def _read_timeout(self) -> float:
        return float(self.server.read_timeout)  # type: ignore[attr-defined]

    def handle_one_request(self) -> None:
        # the head (request line and headers) must be complete within the read timeout, however
        # slowly it trickles in: the server's watchdog cuts the connection otherwise
        watchdog: HeadWatchdog = self.server.watchdog  # type: ignore[attr-defined]
        watchdog.watch(self.connection, self._read_timeout)
        try:
            super().handle_one_request()
        finally:
            watchdog.unwatch(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the daemon log is for events
        pass

    def handle_expect_100(self) -> bool:
        # `100 Continue` is sent only once the token and the route are known to be good (_dispatch)
        return True

    def _send_json(self, status: int, body: Any, close: bool = False) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, e: ApiError, close: bool = False) -> None:
        self._send_json(e.status, e.body(), close=close)

    def _auth_error(self) -> ApiError | None:
        verdict = AUTH_HOOK(self) if AUTH_HOOK is not None else None  # UAA's tokens, public documents
        if verdict is not None:
            return verdict if isinstance(verdict, ApiError) else None
        auth = self.headers.get("Authorization", "")
        token = self.server.token  # type: ignore[attr-defined]
        if not auth:
            return ApiError(401, 10002, "CF-NotAuthenticated", "Authentication error")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            return ApiError(401, 1000, "CF-InvalidAuthToken", "Invalid Auth Token")
        return None

    def _framing(self) -> tuple[int | None, bool]:
        """(Content-Length or None, chunked?) of the request body, or raises the 400/411 to send."""
        te = self.headers.get_all("Transfer-Encoding") or []
        cl = self.headers.get_all("Content-Length") or []
        codings = [c.strip().lower() for v in te for c in v.split(",") if c.strip()]
        if codings:
            if cl:
                raise bad_request("Request invalid: both Content-Length and Transfer-Encoding are set; "
                                  "send one of them")
            if codings != ["chunked"]:
                raise ApiError(411, 1001, "CF-LengthRequired",
                               f"Transfer-Encoding {', '.join(codings)} is not supported: send the body "
                               "with a Content-Length or as Transfer-Encoding: chunked")
            return None, True
        if not cl:
            return 0, False
        values = {v.strip() for v in cl}
        if len(values) != 1:
            raise bad_request(f"Request invalid: conflicting Content-Length headers {sorted(values)}")
        value = values.pop()
        if not value.isdigit() or not value.isascii():
            raise bad_request(f"Request invalid: Content-Length {value!r} is not a non-negative integer "
                              "of bytes")
        return int(value), False

    def _too_large(self, size: str, limit: int) -> ApiError:
        return ApiError(413, 10001, "CF-RequestEntityTooLarge",
                        f"The request body is too large: {size}, but {self.command} {urlsplit(self.path).path} "
                        f"accepts at most {_size(limit)}")

    def _stalled(self) -> _BodyError:
        return _BodyError(ApiError(408, 10001, "CF-RequestTimeout",
                                   f"The request body stopped arriving: nothing for {self._read_timeout:g}s"))

    def _check_pace(self) -> None:
        if time.monotonic() > self._body_deadline:
            raise _BodyError(ApiError(
                408, 10001, "CF-RequestTimeout",
                f"The request body arrived too slowly: {self._body_read} bytes in "
                f"{time.monotonic() - self._body_started:.0f}s (at least {_size(MIN_BODY_RATE)} a second "
                "is expected)"))

    def _start_body(self, size: int) -> None:
        """Set the deadline of reading a body of (at most) `size` bytes."""
        self._body_started = time.monotonic()
        self._body_deadline = self._body_started + self._read_timeout + size / MIN_BODY_RATE
        self._body_read = 0

    def _read_exact(self, n: int) -> bytes:
        parts: list[bytes] = []
        while n > 0:
            self._check_pace()
            try:
                data = self.rfile.read1(min(n, 1 << 20))  # one socket read at most: the pace is checked between
            except TimeoutError:
                raise self._stalled() from None
            if not data:
                raise _BodyError(bad_request("Request invalid: the body ended before its announced length"))
            parts.append(data)
            n -= len(data)
            self._body_read += len(data)
        return b"".join(parts)

    def _read_line(self) -> bytes:
        self._check_pace()
        try:
            line = self.rfile.readline(1026)
        except TimeoutError:
            raise self._stalled() from None
        if not line.endswith(b"\n"):
            raise _BodyError(bad_request("Request invalid: malformed chunked body"))
        return line

    def _read_chunked(self, limit: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size_text = self._read_line().split(b";", 1)[0].strip()
            if not re.fullmatch(rb"[0-9a-fA-F]{1,16}", size_text):
                raise _BodyError(bad_request(f"Request invalid: malformed chunk size {size_text[:20]!r}"))
            size = int(size_text, 16)
            if size == 0:
                break
            total += size
            if total > limit:
                raise _BodyError(self._too_large(f"more than {_size(limit)} (chunked)", limit))
            parts.append(self._read_exact(size))
            if self._read_line().strip():
                raise _BodyError(bad_request("Request invalid: malformed chunked body"))
        while self._read_line().strip():  # trailers, up to the blank line
            pass
        return b"".join(parts)

    def _match(self, method: str, path: str) -> tuple[RouteSpec | None, dict[str, str], bool]:
        matched_path = False
        for spec in self.server.routes:  # type: ignore[attr-defined]
            match = spec.pattern.match(path)
            if not match:
                continue
            matched_path = True
            if spec.method == method:
                return spec, match.groupdict(), True
        return None, {}, matched_path

    def _dispatch(self, method: str) -> None:
        self.server.watchdog.unwatch(self.connection)  # type: ignore[attr-defined]  # the head is in
        # 1. the token, before anything else is looked at or read
        auth_error = self._auth_error()
        try:
            length, chunked = self._framing()
        except ApiError as e:
            # a body we cannot frame cannot be skipped: answer and drop the connection
            self._send_error(auth_error or e, close=True)
            return
        body_pending = chunked or bool(length)
        if auth_error:
            self._send_error(auth_error, close=body_pending)
            return
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        spec, params, matched_path = self._match(method, path)
        if spec is None:
            if matched_path:
                self._send_json(405, {"errors": [{"code": 10000, "title": "CF-NotFound",
                                                   "detail": f"{method} is not allowed on {path}"}]},
                                close=body_pending)
            else:
                self._send_json(404, {"errors": [{"code": 10000, "title": "CF-NotFound",
                                                   "detail": "Unknown request"}]}, close=body_pending)
            return
        if length is not None and length > spec.max_body:
            self._send_error(self._too_large(f"{length} bytes", spec.max_body), close=True)
            return
        if body_pending and self.headers.get("Expect", "").lower() == "100-continue":
            self.send_response_only(100)
            self.end_headers()
            self.wfile.flush()
        try:
            self._start_body(spec.max_body if chunked else length or 0)
            body = self._read_chunked(spec.max_body) if chunked else self._read_exact(length or 0)
        except _BodyError as e:
            try:
                self._send_error(e.error, close=True)
            except OSError:
                self.close_connection = True
            return
        req = Request(method, path, parse_qs(parts.query), body, self.headers, self)
        try:
            result = spec.fn(req, **params)
        except ApiError as e:
            self._send_error(e)
            return
        except Exception as e:  # noqa: BLE001 (report, keep serving)
            self.server.log_error(f"{method} {path}: {e!r}")  # type: ignore[attr-defined]
            self._send_json(500, {"errors": [{"code": 10001, "title": "UnknownError",
                                               "detail": f"An unknown error occurred: {e}"}]})
            return
        self._respond(result)

    def _respond(self, result: Any) -> None:
        status = 200
        if isinstance(result, tuple):
            status, result = result
        if isinstance(result, Raw):
            self.send_response(status)
            self.send_header("Content-Type", result.content_type)
            self.send_header("Content-Length", str(len(result.data)))
            for k, v in result.headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(result.data)
        elif isinstance(result, Upgrade):
            self.send_response(101)
            self.send_header("Connection", "Upgrade")
            self.send_header("Upgrade", result.protocol)
            self.end_headers()
            self.wfile.flush()
            self.close_connection = True
            self.connection.settimeout(None)  # an ssh session may rightly stay silent for long
            try:
                result.fn(self.rfile, self.connection)
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif isinstance(result, Stream):
            self.send_response(status)
            self.send_header("Content-Type", result.content_type)
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            try:
                for chunk in result.chunks:
                    self.wfile.write(chunk)
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                pass
        else:
            self._send_json(status, result)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")


class HeadWatchdog:
    """Closes connections whose request head is not complete by its deadline (one thread for all)."""

    def __init__(self) -> None:
        self._deadlines: dict[socket.socket, float] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        threading.Thread(target=self._run, name="api-head-watchdog", daemon=True).start()

    def watch(self, conn: socket.socket, seconds: float) -> None:
        with self._lock:
            self._deadlines[conn] = time.monotonic() + seconds
        self._wake.set()

    def unwatch(self, conn: socket.socket) -> None:
        with self._lock:
            self._deadlines.pop(conn, None)

    def _run(self) -> None:
        while True:
            self._wake.clear()  # before looking: a watch() from now on wakes the wait below
            with self._lock:
                now = time.monotonic()
                late = [c for c, d in self._deadlines.items() if d <= now]
                for c in late:
                    del self._deadlines[c]
                nearest = min(self._deadlines.values(), default=None)
            for c in late:
                try:
                    c.shutdown(socket.SHUT_RDWR)  # the handler's blocked read returns; it closes
                except OSError:
                    pass
            self._wake.wait(max(0.05, nearest - now) if nearest is not None else None)


class ApiServer(ThreadingHTTPServer):
    """The API on 127.0.0.1 (`port` 0 picks a free one); `routes` defaults to localcf.api's table."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, controller: Controller, token: str, port: int = 0,
                 info: Callable[[], JsonObject] | None = None,
                 routes: list[RouteSpec] | None = None, read_timeout: float = READ_TIMEOUT):
        if routes is None:
            from . import api  # noqa: F401  (importing it registers its handlers in ROUTES)
            routes = ROUTES
        super().__init__(("127.0.0.1", port), ApiHandler)
        self.routes = routes
        self.read_timeout = read_timeout
        self.watchdog = HeadWatchdog()
        self.controller = controller
        self.token = token
        self.info = info or dict
        controller.base_url = f"http://127.0.0.1:{self.server_address[1]}"

    def log_error(self, msg: str) -> None:
        print(f"localcf api: {msg}", file=sys.stderr, flush=True)

    def serve_in_thread(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, name="api", daemon=True)
        t.start()
        return t
