"""The router, over real sockets: real HTTP apps on port 0, real clients, gorouter's texts."""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest
import requests

from localcf.router import (BAD_GATEWAY_TEXT, HEAD_TIMEOUT_ENV, PORT_ENV, Backend, RouteTable,
                            Router, RouterError, build_routes, match_route)

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
BIG = bytes(range(256)) * 8192  # 2 MiB: more than the router holds whole


# -- apps --------------------------------------------------------------------------------------


def _read_chunked(rfile) -> bytes:
    body = b""
    while True:
        size = int(rfile.readline().split(b";")[0], 16)
        if size == 0:
            while rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return body
        body += rfile.read(size)
        rfile.readline()


class EchoApp:
    """A small HTTP/1.1 keep-alive app that says who it is and what it received."""

    def __init__(self, name: str) -> None:
        app = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 65536  # one send per response

            def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-App", name)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/chunked":
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for part in (b"hello ", b"chunked ", b"world"):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                    self.wfile.write(b"0\r\n\r\n")
                    return
                if self.path == "/big":
                    return self._send(200, BIG, "application/octet-stream")
                if self.path == "/medium":
                    return self._send(200, BIG[:200_000], "application/octet-stream")
                self._send(200, json.dumps({
                    "name": name, "path": self.path,
                    "headers": [[k, v] for k, v in self.headers.items()],
                    "peer_port": self.client_address[1],
                }).encode())

            do_HEAD = do_GET

            def do_POST(self) -> None:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = _read_chunked(self.rfile)
                else:
                    body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self._send(200, body, "application/octet-stream")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()
        self.name = name
        app.requests = 0

    def backend(self, guid: str | None = None, index: int = 0) -> Backend:
        port = self.port
        return Backend(app_guid=guid or f"guid-{self.name}", instance_index=index,
                       connect=lambda: socket.create_connection(("127.0.0.1", port)),
                       address=f"127.0.0.1:{port}", instance_id=f"instance-{self.name}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Logs:
    """The router's log sink: collects (app_guid, source, index, stream, message)."""

    def __init__(self) -> None:
        self.entries: list[tuple] = []
        self.cond = threading.Condition()

    def __call__(self, *entry: object) -> None:
        with self.cond:
            self.entries.append(entry)
            self.cond.notify_all()

    def wait(self, count: int) -> list[tuple]:
        with self.cond:
            self.cond.wait_for(lambda: len(self.entries) >= count, timeout=20)
            return list(self.entries)


@pytest.fixture
def apps() -> Iterator[callable]:
    started: list[EchoApp] = []

    def start(name: str) -> EchoApp:
        app = EchoApp(name)
        started.append(app)
        return app

    yield start
    for app in started:
        app.close()


@pytest.fixture
def routers() -> Iterator[callable]:
    started: list[Router] = []

    def start(table: dict[str, list[Backend]] | RouteTable, **options: object
              ) -> tuple[Router, Logs]:
        logs = Logs()
        lookup = table if isinstance(table, RouteTable) else (
            lambda host, path: table.get(host, []))
        router = Router(lookup, logs, port=0, **options)  # type: ignore[arg-type]
        router.serve_in_thread()
        started.append(router)
        return router, logs

    yield start
    for router in started:
        router.shutdown()


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A port that refuses connections: bound, never listening."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def refusing_backend(port: int, guid: str = "guid-dead") -> Backend:
    return Backend(app_guid=guid, instance_index=1, address=f"127.0.0.1:{port}",
                   connect=lambda: socket.create_connection(("127.0.0.1", port)))


def raw_app(serve) -> tuple[int, callable]:
    """Run `serve(conn)` for each connection to a new listener; returns its port and a stop."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stopping = threading.Event()

    def accept_loop() -> None:
        while True:
            conn, _ = listener.accept()
            if stopping.is_set():
                conn.close()
                return
            with conn:
                serve(conn)

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()

    def stop() -> None:
        stopping.set()
        socket.create_connection(listener.getsockname()).close()  # wakes accept()
        thread.join(5)
        listener.close()

    return listener.getsockname()[1], stop


def url(router: Router, path: str = "/") -> str:
    return f"http://127.0.0.1:{router.port}{path}"


def recv_response(sock: socket.socket, buf: bytearray) -> tuple[bytes, bytes]:
    """Read one response with a Content-Length body from a raw socket."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        assert data, f"connection closed; got {bytes(buf)!r}"
        buf += data
    i = buf.index(b"\r\n\r\n")
    head = bytes(buf[:i])
    del buf[:i + 4]
    length = int(re.search(rb"(?im)^content-length: *(\d+)", head).group(1))
    while len(buf) < length:
        data = sock.recv(65536)
        assert data
        buf += data
    body = bytes(buf[:length])
    del buf[:length]
    return head, body


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while True:
        piece = sock.recv(65536)
        if not piece:
            return data
        data += piece


# -- routing -----------------------------------------------------------------------------------


def test_round_robin_across_two_backends(apps, routers):
    a, b = apps("a"), apps("b")
    router, _ = routers({"app.localcf.test": [a.backend(), b.backend()]})
    with requests.Session() as s:
        names = [s.get(url(router, "/echo"), headers={"Host": "app.localcf.test"}).json()["name"]
                 for _ in range(6)]
    assert sorted(names) == ["a"] * 3 + ["b"] * 3
    assert all(x != y for x, y in zip(names, names[1:])), names


def test_host_port_and_case_are_ignored(apps, routers):
    a = apps("a")
    router, _ = routers({"myapp.localcf.test": [a.backend()]})
    r = requests.get(url(router, "/echo"), headers={"Host": "MyApp.LocalCF.test:61080"})
    assert r.status_code == 200
    assert r.json()["name"] == "a"
    # the app gets the Host header as the client sent it
    assert ["Host", "MyApp.LocalCF.test:61080"] in r.json()["headers"]


def test_route_table_longest_path_prefix(apps, routers):
    root, api, api_v2 = apps("root"), apps("api"), apps("api-v2")
    table = RouteTable()
    table.set_backends("shop.localcf.test", "", [root.backend()])
    table.set_backends("shop.localcf.test", "/api", [api.backend()])
    table.set_backends("shop.localcf.test", "/api/v2/", [api_v2.backend()])
    router, _ = routers(table)
    paths = ("/", "/apix", "/api", "/API/items?q=1", "/api/v2", "/api/v2/x")
    host = {"Host": "shop.localcf.test"}
    seen = {path: requests.get(url(router, path), headers=host).json()["name"] for path in paths}
    assert seen == {"/": "root", "/apix": "root", "/api": "api", "/API/items?q=1": "api",
                    "/api/v2": "api-v2", "/api/v2/x": "api-v2"}
    table.remove("shop.localcf.test", "/api")
    assert table.backends("shop.localcf.test", "/api/items")[0].app_guid == "guid-root"


def test_one_matcher_for_the_cell_and_the_route_table():
    """The cell's lookup builds its table from the store's routes with `build_routes`: the
    same rules as RouteTable (host and path case-insensitive, longest path at a `/` boundary,
    `/` the same route as none)."""
    table = build_routes([("Shop.localcf.test", "", "root"),
                          ("shop.localcf.test", "/api", "api"),
                          ("shop.localcf.test", "/api/v2/", "v2"),
                          ("other.localcf.test", "/", "o")])
    seen = {path: match_route(table, "SHOP.localcf.test", path)
            for path in ("/", "/apix", "/API/items", "/api/v2", "/api/v2/x")}
    assert seen == {"/": "root", "/apix": "root", "/API/items": "api", "/api/v2": "v2",
                    "/api/v2/x": "v2"}
    assert match_route(table, "other.localcf.test", "/anything") == "o"
    assert match_route(table, "nobody.localcf.test", "/") is None
    only_api = build_routes([("shop.localcf.test", "/api", "api")])
    assert match_route(only_api, "shop.localcf.test", "/apix") is None


# -- gorouter's errors -------------------------------------------------------------------------


def test_unknown_route_is_404_with_gorouter_text(routers):
    router, _ = routers({})
    r = requests.get(url(router, "/x"), headers={"Host": "nope.localcf.test:61080"})
    assert r.status_code == 404
    assert r.text == "404 Not Found: Requested route ('nope.localcf.test') does not exist.\n"
    assert r.headers["X-Cf-RouterError"] == "unknown_route"
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_unknown_route_answers_head_without_body(routers):
    router, _ = routers({})
    with socket.create_connection(("127.0.0.1", router.port)) as s:
        s.sendall(b"HEAD / HTTP/1.1\r\nHost: nope.localcf.test\r\n\r\n"
                  b"GET / HTTP/1.1\r\nHost: nope.localcf.test\r\nConnection: close\r\n\r\n")
        raw = read_all(s)
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert b"X-Cf-RouterError: unknown_route" in head
    # no body after the HEAD answer: the GET's answer follows at once
    assert rest.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert rest.endswith(b"404 Not Found: Requested route ('nope.localcf.test') does not exist.\n")


def test_route_without_healthy_instance_is_404(routers):
    router, _ = routers({"app.localcf.test": []})
    r = requests.get(url(router), headers={"Host": "app.localcf.test"})
    assert r.status_code == 404
    assert r.text == "404 Not Found: Requested route ('app.localcf.test') does not exist.\n"


def test_refusing_backend_is_502_with_gorouter_text(routers, refusing_port):
    router, logs = routers({"app.localcf.test": [refusing_backend(refusing_port)]})
    with requests.Session() as s:
        r = s.get(url(router), headers={"Host": "app.localcf.test"})
        assert r.status_code == 502
        assert r.text == "502 Bad Gateway: Registered endpoint failed to handle the request.\n"
        assert r.text == BAD_GATEWAY_TEXT
        assert r.headers["X-Cf-RouterError"] == "endpoint_failure"
        # the connection stays usable
        assert s.get(url(router), headers={"Host": "other.localcf.test"}).status_code == 404
    (guid, source, index, stream, line), = logs.wait(1)
    assert (guid, source, index, stream) == ("guid-dead", "RTR", 1, "OUT")
    assert '"GET / HTTP/1.1" 502 ' in line
    assert line.endswith('x_cf_routererror:"endpoint_failure"')


def test_refused_backend_is_retried_on_the_next_one(apps, routers, refusing_port):
    good = apps("good")
    router, _ = routers({"app.localcf.test": [refusing_backend(refusing_port), good.backend()]})
    with requests.Session() as s:
        for _ in range(4):
            r = s.get(url(router, "/echo"), headers={"Host": "app.localcf.test"})
            assert r.status_code == 200
            assert r.json()["name"] == "good"


def test_app_closing_without_answer_is_502(routers):
    port, stop = raw_app(lambda conn: conn.recv(65536))  # reads the request, answers nothing
    try:
        backend = Backend("guid-rude", 0, lambda: socket.create_connection(("127.0.0.1", port)),
                          f"127.0.0.1:{port}")
        router, _ = routers({"rude.localcf.test": [backend]})
        r = requests.post(url(router), data=b"x", headers={"Host": "rude.localcf.test"})
        assert r.status_code == 502
        assert r.headers["X-Cf-RouterError"] == "endpoint_failure"
    finally:
        stop()


def test_malformed_response_is_502(routers):
    def garbage_app(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")

    port, stop = raw_app(garbage_app)
    try:
        backend = Backend("guid-g", 0, lambda: socket.create_connection(("127.0.0.1", port)),
                          f"127.0.0.1:{port}")
        router, _ = routers({"g.localcf.test": [backend]})
        r = requests.get(url(router), headers={"Host": "g.localcf.test"})
        assert r.status_code == 502
        assert r.text == BAD_GATEWAY_TEXT
    finally:
        stop()


def test_malformed_request_is_400(routers):
    router, _ = routers({})
    with socket.create_connection(("127.0.0.1", router.port)) as s:
        s.sendall(b"NONSENSE\r\n\r\n")
        assert read_all(s).startswith(b"HTTP/1.1 400 Bad Request\r\n")


# Bad heads are answered and closed without waiting for anything more; each test reads with a
# generous socket timeout, so a router that held the connection would fail it, not hang it.
BOUND = 30.0


def answer_and_close(s: socket.socket) -> bytes:
    """Everything the router sends until it closes the connection (within BOUND seconds)."""
    s.settimeout(BOUND)
    try:
        return read_all(s)
    except TimeoutError:
        pytest.fail(f"the router still held the connection after {BOUND:g} s")


def test_nul_in_the_path_is_400(apps, routers):
    a = apps("a")
    reached = threading.Event()

    def connect() -> socket.socket:
        reached.set()
        return socket.create_connection(("127.0.0.1", a.port))

    backend = Backend("guid-a", 0, connect, f"127.0.0.1:{a.port}")
    router, _ = routers({"app.localcf.test": [backend]})
    with socket.create_connection(("127.0.0.1", router.port)) as s:
        s.sendall(b"GET /files/a\x00b HTTP/1.1\r\nHost: app.localcf.test\r\n\r\n")
        answer = answer_and_close(s)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close\r\n" in answer
    assert answer.endswith(b"\r\n\r\n400 Bad Request: control character NUL in the request "
                           b"line: percent-encode it in the request target\n")
    assert not reached.is_set()  # the router did not pass it on


@pytest.mark.parametrize("value, name", [(b"a\x01b", b"0x01"), (b"a\x7fb", b"DEL"),
                                         (b"a\x00b", b"NUL"), (b"a\rb", b"CR")])
def test_control_character_in_a_header_value_is_400(apps, routers, value, name):
    a = apps("a")
    router, _ = routers({"app.localcf.test": [a.backend()]})
    with socket.create_connection(("127.0.0.1", router.port)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: app.localcf.test\r\nX-Note: " + value
                  + b"\r\n\r\n")
        answer = answer_and_close(s)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    if name == b"CR":
        assert b"400 Bad Request: bare CR in " in answer
    else:
        assert answer.endswith(b"400 Bad Request: control character " + name + b" in the value "
                               b"of header 'X-Note': a header value may hold no control "
                               b"character but TAB\n")


def test_a_tab_in_a_header_value_passes(apps, routers):
    a = apps("a")
    router, _ = routers({"app.localcf.test": [a.backend()]})
    r = requests.get(url(router, "/echo"), headers={"Host": "app.localcf.test",
                                                    "X-Note": "a\tb"})
    assert r.status_code == 200
    assert ["X-Note", "a\tb"] in r.json()["headers"]


def trickle(s: socket.socket, line: bytes, stop: threading.Event) -> threading.Thread:
    """Send `line` every 50 ms until the router closes the connection (a slowloris)."""
    def run() -> None:
        while not stop.is_set():
            try:
                s.sendall(line)
            except OSError:
                return
            stop.wait(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_bare_lf_slowloris_gets_400_and_is_closed(routers):
    """A head with LF-only lines would never end (the router looks for CRLF CRLF): it is
    refused at its first bare LF, however long the client would keep going."""
    router, _ = routers({})
    stop = threading.Event()
    with socket.create_connection(("127.0.0.1", router.port)) as s:
        s.sendall(b"GET / HTTP/1.1\nHost: app.localcf.test\n")
        thread = trickle(s, b"X-Wait: more\n", stop)
        try:
            answer = answer_and_close(s)
        finally:
            stop.set()
            thread.join(5)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert answer.endswith(b"400 Bad Request: bare LF in the request line: every line of a "
                           b"request head ends with CRLF\n")


def test_bare_lf_after_a_crlf_request_line_gets_400(routers):
    router, _ = routers({})
    with socket.create_connection(("127.0.0.1", router.port)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: app.localcf.test\nX-A: b\n")  # and no more
        answer = answer_and_close(s)
    assert answer.endswith(b"400 Bad Request: bare LF in a header line: every line of a "
                           b"request head ends with CRLF\n")


def test_head_that_never_ends_is_closed_after_the_head_timeout(routers):
    """Well-formed header lines that never end the head: a 408 once the head timeout (set
    small here) has passed, then the close."""
    router, _ = routers({}, head_timeout=0.5)
    stop = threading.Event()
    with socket.create_connection(("127.0.0.1", router.port)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: app.localcf.test\r\n")
        thread = trickle(s, b"X-Wait: more\r\n", stop)
        try:
            answer = answer_and_close(s)
        finally:
            stop.set()
            thread.join(5)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert answer.endswith(b"408 Request Timeout: the request head did not come whole within "
                           b"0.5 s; end every header line with CRLF, and the head with an "
                           b"empty line\n")


def test_head_timeout_from_the_environment(routers, monkeypatch):
    monkeypatch.setenv(HEAD_TIMEOUT_ENV, "0.5")
    router, _ = routers({})
    with socket.create_connection(("127.0.0.1", router.port)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: app.localcf.test\r\n")  # and no more
        answer = answer_and_close(s)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"within 0.5 s;" in answer


@pytest.mark.parametrize("value", ["soon", "0", "-1", "nan"])
def test_head_timeout_from_the_environment_must_be_seconds(monkeypatch, value):
    monkeypatch.setenv(HEAD_TIMEOUT_ENV, value)
    with pytest.raises(RouterError) as e:
        Router(lambda host, path: [], lambda *entry: None, port=0)
    assert str(e.value) == (f"router: {HEAD_TIMEOUT_ENV}={value!r} is not a number of seconds "
                            f"above 0; set it to, say, 10, or unset it.")


def test_a_head_in_one_byte_pieces_is_fine(apps, routers):
    """The check of an unfinished head must not take a CR whose LF is still on the way for a
    bare CR."""
    a = apps("a")
    router, _ = routers({"app.localcf.test": [a.backend()]})
    with socket.create_connection(("127.0.0.1", router.port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in b"GET /echo HTTP/1.1\r\nHost: app.localcf.test\r\nX-A: b\r\n\r\n":
            s.sendall(bytes([byte]))
            time.sleep(0.002)
        head, body = recv_response(s, bytearray())
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert json.loads(body)["path"] == "/echo"


def tls_client_hello() -> bytes:
    """The first bytes a TLS client sends (a real ClientHello, from the ssl module)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing,
                                                server_hostname="app.localcf.test")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_tls_client_hello_on_the_plain_port_gets_400(routers):
    """An https:// URL to the router's http port: the ClientHello never ends a head; it is
    answered at once (a TLS client shows it as a handshake failure) and closed."""
    router, _ = routers({})
    hello = tls_client_hello()
    assert hello[:2] == b"\x16\x03" and b"\r\n\r\n" not in hello
    with socket.create_connection(("127.0.0.1", router.port)) as s:
        s.sendall(hello)  # and waits for a ServerHello
        answer = answer_and_close(s)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert answer.endswith(b"400 Bad Request: a TLS handshake on the router's plain HTTP "
                           b"port: use an http:// URL\n")


# -- what passes through -----------------------------------------------------------------------


def test_forwarding_headers_are_added(apps, routers):
    a = apps("a")
    router, _ = routers({"app.localcf.test": [a.backend()]})
    before_ms = time.time() * 1000
    r = requests.get(url(router, "/echo"), headers={"Host": "app.localcf.test",
                                                    "X-Forwarded-For": "10.0.0.1",
                                                    "X-Vcap-Request-Id": "spoofed"})
    headers = {k.lower(): v for k, v in r.json()["headers"]}
    assert headers["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert re.fullmatch(UUID, headers["x-vcap-request-id"])
    assert int(headers["x-request-start"]) >= int(before_ms) - 1
    assert "connection" not in headers  # hop-by-hop: not passed on


def test_post_bodies_pass_through(apps, routers):
    a = apps("a")
    router, _ = routers({"app.localcf.test": [a.backend()]})
    small = b"sidecar " * 1000
    with requests.Session() as s:
        r = s.post(url(router, "/echo"), data=small, headers={"Host": "app.localcf.test"})
        assert r.content == small
        # a generator body goes out chunked
        r = s.post(url(router, "/echo"), data=iter([b"one ", b"two ", b"three"]),
                   headers={"Host": "app.localcf.test"})
        assert r.content == b"one two three"
        r = s.post(url(router, "/echo"), data=BIG, headers={"Host": "app.localcf.test"})
        assert r.content == BIG
        pieces = (BIG[i:i + 100_000] for i in range(0, len(BIG), 100_000))
        r = s.post(url(router, "/echo"), data=pieces, headers={"Host": "app.localcf.test"})
        assert r.content == BIG
        # and the connection still serves the next request
        assert s.get(url(router, "/big"), headers={"Host": "app.localcf.test"}).content == BIG


def test_chunked_response_passes_through(apps, routers):
    a = apps("a")
    router, _ = routers({"app.localcf.test": [a.backend()]})
    with socket.create_connection(("127.0.0.1", router.port)) as s:
        s.sendall(b"GET /chunked HTTP/1.1\r\nHost: app.localcf.test\r\nConnection: close\r\n\r\n")
        raw = read_all(s)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"Transfer-Encoding: chunked" in head
    assert body == b"6\r\nhello \r\n8\r\nchunked \r\n5\r\nworld\r\n0\r\n\r\n"
    r = requests.get(url(router, "/chunked"), headers={"Host": "app.localcf.test"})
    assert r.content == b"hello chunked world"


def test_http10_client_gets_chunked_body_without_framing(apps, routers):
    a = apps("a")
    router, _ = routers({"app.localcf.test": [a.backend()]})
    with socket.create_connection(("127.0.0.1", router.port)) as s:
        s.sendall(b"GET /chunked HTTP/1.0\r\nHost: app.localcf.test\r\n\r\n")
        raw = read_all(s)  # the router closes: that is how an HTTP/1.0 client sees the end
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 ")
    assert b"chunked" not in head.lower()
    assert body == b"hello chunked world"


def test_head_request_keeps_content_length(apps, routers):
    a = apps("a")
    router, _ = routers({"app.localcf.test": [a.backend()]})
    with socket.create_connection(("127.0.0.1", router.port)) as s:
        buf = bytearray()
        s.sendall(b"HEAD /big HTTP/1.1\r\nHost: app.localcf.test\r\n\r\n")
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        assert f"Content-Length: {len(BIG)}".encode() in bytes(buf)
        assert buf.endswith(b"\r\n\r\n")  # and no body follows: the next answer comes next
        del buf[:]
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: app.localcf.test\r\n\r\n")
        head, body = recv_response(s, buf)
        assert json.loads(body)["path"] == "/echo"


def test_expect_100_continue(apps, routers):
    a = apps("a")
    router, _ = routers({"app.localcf.test": [a.backend()]})
    with socket.create_connection(("127.0.0.1", router.port)) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: app.localcf.test\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        assert buf.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        del buf[:len(b"HTTP/1.1 100 Continue\r\n\r\n")]
        s.sendall(b"hello")
        head, body = recv_response(s, buf)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert body == b"hello"


def test_websocket_upgrade_is_tunnelled(routers):
    def ws_app(conn: socket.socket) -> None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += conn.recv(65536)
        assert b"Upgrade: websocket" in buf
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\n\r\n")
        while True:
            data = conn.recv(65536)
            if not data:
                return
            conn.sendall(data.upper())

    port, stop = raw_app(ws_app)
    try:
        backend = Backend("guid-ws", 0, lambda: socket.create_connection(("127.0.0.1", port)),
                          f"127.0.0.1:{port}")
        router, logs = routers({"ws.localcf.test": [backend]})
        with socket.create_connection(("127.0.0.1", router.port)) as s:
            s.sendall(b"GET /socket HTTP/1.1\r\nHost: ws.localcf.test\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\n\r\n")
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += s.recv(65536)
            assert buf.startswith(b"HTTP/1.1 101 ")
            s.sendall(b"ping")
            got = b""
            while len(got) < 4:
                got += s.recv(65536)
            assert got == b"PING"
            s.shutdown(socket.SHUT_WR)
            assert read_all(s) == b""
        assert '" 101 ' in logs.wait(1)[0][4]
    finally:
        stop()


# -- connections -------------------------------------------------------------------------------


def test_keep_alive_two_requests_on_one_connection(apps, routers):
    a = apps("a")
    router, logs = routers({"app.localcf.test": [a.backend()]})
    with socket.create_connection(("127.0.0.1", router.port)) as s:
        buf = bytearray()
        peers = []
        for _ in range(2):
            s.sendall(b"GET /echo HTTP/1.1\r\nHost: app.localcf.test\r\n\r\n")
            head, body = recv_response(s, buf)
            assert head.startswith(b"HTTP/1.1 200 ")
            assert b"connection: close" not in head.lower()
            peers.append(json.loads(body)["peer_port"])
    # the router kept its connection to the app too
    assert peers[0] == peers[1]
    lines = [e[4] for e in logs.wait(2)]
    client_ports = {re.search(r'" "(127\.0\.0\.1:\d+)" "127\.0\.0\.1', line).group(1)
                    for line in lines}
    assert len(client_ports) == 1


def test_slow_reader_gets_the_whole_response(apps, routers):
    a = apps("a")
    router, _ = routers({"app.localcf.test": [a.backend()]})
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the router must wait for us
        s.connect(("127.0.0.1", router.port))
        # 8 MB of answers, more than the sockets between us hold: the router keeps some back
        s.sendall(b"GET /medium HTTP/1.1\r\nHost: app.localcf.test\r\n\r\n" * 40)
        time.sleep(0.3)
        buf = bytearray()
        for _ in range(40):
            head, body = recv_response(s, buf)
            assert body == BIG[:200_000]


def test_pipelined_requests_are_answered_in_order(apps, routers):
    a = apps("a")
    router, _ = routers({"app.localcf.test": [a.backend()]})
    with socket.create_connection(("127.0.0.1", router.port)) as s:
        s.sendall(b"".join(b"GET /echo/%d HTTP/1.1\r\nHost: app.localcf.test\r\n\r\n" % i
                           for i in range(3)))
        buf = bytearray()
        paths = [json.loads(recv_response(s, buf)[1])["path"] for _ in range(3)]
    assert paths == ["/echo/0", "/echo/1", "/echo/2"]


def test_app_closing_idle_connections_is_harmless(routers):
    """An app that closes every connection after one answer, without saying so."""
    def one_shot_app(conn: socket.socket) -> None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = conn.recv(65536)
            if not data:
                return
            buf += data
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    port, stop = raw_app(one_shot_app)
    try:
        backend = Backend("guid-1", 0, lambda: socket.create_connection(("127.0.0.1", port)),
                          f"127.0.0.1:{port}")
        router, _ = routers({"app.localcf.test": [backend]})
        with requests.Session() as s:
            for _ in range(5):
                r = s.get(url(router), headers={"Host": "app.localcf.test"})
                assert (r.status_code, r.text) == (200, "ok")
    finally:
        stop()


# -- access log --------------------------------------------------------------------------------

RTR_LINE = re.compile(
    r'^app\.localcf\.test:(?P<port>\d+) - \[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z\] '
    r'"POST /echo\?x=1 HTTP/1\.1" 200 5 5 "https://ref\.example/" "test-agent/1\.0" '
    r'"127\.0\.0\.1:\d+" "127\.0\.0\.1:(?P<app_port>\d+)" '
    r'x_forwarded_for:"127\.0\.0\.1" x_forwarded_proto:"http" '
    rf'vcap_request_id:"{UUID}" response_time:\d+\.\d{{6}} gorouter_time:\d+\.\d{{6}} '
    r'app_id:"guid-a" app_index:"3" instance_id:"instance-a" route_service_url:"-" '
    r'x_cf_routererror:"-"$'
)


def test_access_log_line_has_gorouter_format(apps, routers):
    a = apps("a")
    router, logs = routers({"app.localcf.test": [a.backend(index=3)]})
    r = requests.post(url(router, "/echo?x=1"), data=b"hello",
                      headers={"Host": f"app.localcf.test:{router.port}",
                               "User-Agent": "test-agent/1.0",
                               "Referer": "https://ref.example/"})
    assert r.status_code == 200
    (guid, source, index, stream, line), = logs.wait(1)
    assert (guid, source, index, stream) == ("guid-a", "RTR", 3, "OUT")
    match = RTR_LINE.match(line)
    assert match, line
    assert int(match["app_port"]) == a.port


# -- starting and stopping ---------------------------------------------------------------------


def test_port_from_environment_that_is_taken_says_what_to_do(monkeypatch):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    monkeypatch.setenv(PORT_ENV, str(port))
    try:
        with pytest.raises(RouterError) as info:
            Router(lambda host, path: [], lambda *a: None)
        message = str(info.value)
        assert f"127.0.0.1:{port}" in message and PORT_ENV in message
    finally:
        holder.close()


def test_port_from_environment_is_used(monkeypatch):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    monkeypatch.setenv(PORT_ENV, str(port))
    router = Router(lambda host, path: [], lambda *a: None)
    try:
        assert router.port == port
    finally:
        router.shutdown()


def test_shutdown_closes_everything(apps):
    a = apps("a")
    logs = Logs()
    router = Router(lambda host, path: [a.backend()], logs, port=0)
    router.serve_in_thread()
    idle = socket.create_connection(("127.0.0.1", router.port))
    with requests.Session() as s:  # leaves a kept-alive connection behind
        assert s.get(url(router, "/echo"), headers={"Host": "x"}).status_code == 200
        router.shutdown()
    assert read_all(idle) == b""  # the router closed it
    idle.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", router.port), timeout=2).close()
    assert len(logs.entries) == 1  # written before shutdown() returned
    assert not [t for t in threading.enumerate() if t.name.startswith("router-")]


def test_portable_selector_loop_works_too(apps, monkeypatch):
    """Where there is no epoll (macOS, in process mode), the loop runs on the platform selector."""
    import select
    monkeypatch.delattr(select, "epoll")
    a = apps("a")
    router = Router(lambda host, path: [a.backend()] if host == "app.localcf.test" else [],
                    lambda *entry: None, port=0)
    router.serve_in_thread()
    try:
        host = {"Host": "app.localcf.test"}
        with requests.Session() as s:
            for _ in range(3):
                assert s.get(url(router, "/echo"), headers=host).json()["name"] == "a"
            assert s.post(url(router, "/echo"), data=BIG, headers=host).content == BIG
            assert s.get(url(router), headers={"Host": "nope"}).status_code == 404
    finally:
        router.shutdown()


def test_access_logs_can_be_taken_in_batches(apps):
    a = apps("a")
    batches: list[list[tuple]] = []
    router = Router(lambda host, path: [a.backend()], lambda *entry: None, port=0,
                    log_batch=batches.append)
    router.serve_in_thread()
    try:
        with requests.Session() as s:
            for _ in range(5):
                assert s.get(url(router, "/echo"), headers={"Host": "x"}).status_code == 200
    finally:
        router.shutdown()  # writes what is pending
    entries = [entry for batch in batches for entry in batch]
    assert len(entries) == 5
    assert all(e[:4] == ("guid-a", "RTR", 0, "OUT") and '"GET /echo HTTP/1.1" 200' in e[4]
               for e in entries)


def test_a_slow_instance_connect_does_not_hold_up_other_routes(apps, routers):
    """Opening a connection can be an exchange with a container's init: it must not block
    the router while it lasts. The slow connect lasts until the test releases it (or 10 s):
    a router that waited for it would answer the fast route only after it returned."""
    fast = apps("fast")
    slow_app = apps("slow")
    connecting, release, connected = threading.Event(), threading.Event(), threading.Event()

    def slow_connect() -> socket.socket:
        connecting.set()
        release.wait(10)
        connected.set()
        return socket.create_connection(("127.0.0.1", slow_app.port))

    slow = Backend("guid-slow", 0, slow_connect, f"127.0.0.1:{slow_app.port}")
    router, _ = routers({"slow.localcf.test": [slow], "fast.localcf.test": [fast.backend()]})
    slow_answer: list[requests.Response] = []
    thread = threading.Thread(target=lambda: slow_answer.append(requests.get(
        url(router, "/echo"), headers={"Host": "slow.localcf.test"}, timeout=30)))
    thread.start()
    try:
        assert connecting.wait(10)
        r = requests.get(url(router, "/echo"), headers={"Host": "fast.localcf.test"}, timeout=30)
        answered_during_the_slow_connect = not connected.is_set()
        assert r.json()["name"] == "fast"
        assert answered_during_the_slow_connect, \
            "the fast route was answered only after the slow connect had returned"
    finally:
        release.set()
        thread.join(30)
    assert slow_answer[0].json()["name"] == "slow"


def test_a_connect_that_raises_is_an_endpoint_failure(routers):
    def broken() -> socket.socket:
        raise RuntimeError("container abc123 is not running (its init is gone)")

    router, _ = routers({"app.localcf.test": [Backend("guid-x", 0, broken, "unix:/gone")]})
    r = requests.get(url(router), headers={"Host": "app.localcf.test"})
    assert (r.status_code, r.headers["X-Cf-RouterError"]) == (502, "endpoint_failure")
