"""The connections the router holds, and the policies that bind them.

A `Client` is a connection from a client, an `Upstream` one to an app instance (in use by a
client, or idle in the pool); both belong to the event loop until it hands them to a worker
thread, which then holds them in a `Conn` (so that shutdown can wake it).
"""

from __future__ import annotations

import socket
import struct
import time

from .http1 import Count, Request, Response
from .routes import Backend

# gorouter's defaults for its frontend idle and endpoint timeouts (15 minutes).
CLIENT_IDLE_TIMEOUT = 900.0
BACKEND_TIMEOUT = 900.0
# gorouter retries an endpoint that failed on another one; localcf tries one more, at most.
MAX_ENDPOINTS_TRIED = 2
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

READ = 0x001  # the values of EPOLLIN and EPOLLOUT
WRITE = 0x004

# what a file descriptor in the loop is
K_LISTEN, K_WAKE, K_CLIENT, K_UPSTREAM, K_IDLE = range(5)


class Client:
    """A client connection served by the loop."""

    __slots__ = ("sock", "fd", "rbuf", "wbuf", "remote", "ip", "req", "up", "backends", "first",
                 "tried", "last_backend", "busy", "closing", "closed", "eof", "mask", "last",
                 "head_since", "scanned")

    def __init__(self, sock: socket.socket, addr: tuple) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.rbuf = bytearray()
        self.wbuf = bytearray()
        self.remote = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
        self.ip = addr[0] if isinstance(addr, tuple) else "-"
        self.req: Request | None = None
        self.up: Upstream | None = None
        self.backends: list[Backend] = []
        self.first = 0
        self.tried = 0
        self.last_backend: Backend | None = None
        self.busy = False  # a request is with a backend (or a worker thread)
        self.closing = False  # close once wbuf is written
        self.closed = False
        self.eof = False
        self.mask = READ
        self.last = time.monotonic()
        # a request head that has begun to arrive: since when, and how far it has been checked
        self.head_since = 0.0
        self.scanned = 0


class Upstream:
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
        self.client: Client | None = None
        self.reused = False
        self.resp: Response | None = None
        self.count = Count()
        # the loop's handler entries, made once
        self.as_active = (K_UPSTREAM, self)
        self.as_idle = (K_IDLE, self)


class Conn:
    """Sockets a worker thread is using (shutdown wakes it up by shutting them down)."""

    __slots__ = ("csock", "bsock")

    def __init__(self, csock: socket.socket, bsock: socket.socket | None = None) -> None:
        self.csock = csock
        self.bsock = bsock


def tune(sock: socket.socket, timeout: float) -> None:
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


def close_quietly(sock: socket.socket | None) -> None:
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass
