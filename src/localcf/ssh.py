"""`cf ssh` for localcf: commands, interactive shells and port forwards into an instance's container.

The client asks the API to upgrade its HTTP connection (as Diego's ssh proxy upgrades an ssh
connection into the container's sshd). After the `101 Switching Protocols` answer the connection
carries frames: one type byte, a 4-byte big-endian length, the data.
A forward (`-L`) carries raw bytes instead of frames.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import sys
import threading
from typing import IO, Any, BinaryIO

from localcf.container_init import splice

from .jsondoc import JsonObject

STDIN, STDIN_EOF, STDOUT, STDERR, EXIT, WINDOW = b"i", b"e", b"o", b"r", b"x", b"w"
UPGRADE = "localcf-ssh"


def send_frame(sock: socket.socket, lock: threading.Lock, kind: bytes, data: bytes = b"") -> None:
    with lock:
        sock.sendall(kind + struct.pack(">I", len(data)) + data)


def read_exact(f: BinaryIO, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = f.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def read_frame(f: BinaryIO) -> tuple[bytes, bytes] | None:
    head = read_exact(f, 5)
    if head is None:
        return None
    kind, length = head[:1], struct.unpack(">I", head[1:])[0]
    data = read_exact(f, length) if length else b""
    if data is None:
        return None
    return kind, data


# ------------------------------------------------------------------------------- daemon side

def serve_exec(rfile: BinaryIO, sock: socket.socket, proc: Any) -> int:
    """Pump one exec session between the upgraded connection and a container process."""
    lock = threading.Lock()

    def pump_out(f: Any, kind: bytes) -> None:
        try:
            while True:
                data = f.read(65536) if hasattr(f, "read") else os.read(f, 65536)
                if not data:
                    break
                send_frame(sock, lock, kind, data)
        except OSError:
            pass

    pumps = []
    if proc.pty is not None:
        pumps.append(threading.Thread(target=pump_out, args=(proc.pty, STDOUT), daemon=True))
    else:
        pumps.append(threading.Thread(target=pump_out, args=(proc.stdout, STDOUT), daemon=True))
        pumps.append(threading.Thread(target=pump_out, args=(proc.stderr, STDERR), daemon=True))
    for t in pumps:
        t.start()

    def to_process(kind: bytes, data: bytes) -> None:
        if kind == STDIN:
            if proc.pty is not None:
                os.write(proc.pty, data)
            else:
                proc.stdin.write(data)
        elif kind == STDIN_EOF:
            if proc.pty is None:
                proc.stdin.close()
            else:
                os.write(proc.pty, b"\x04")
        elif kind == WINDOW and proc.pty is not None and hasattr(proc, "resize"):
            rows, cols = struct.unpack(">HH", data)
            proc.resize(rows, cols)

    def pump_in() -> None:
        while True:
            try:
                frame = read_frame(rfile)
            except (OSError, ValueError):
                frame = None
            if frame is None:
                break
            try:
                to_process(*frame)
            except (OSError, ValueError):
                pass  # the process closed its stdin or terminal: the session goes on
        # The client is gone (a clean end comes only after our EXIT frame): hang up, as a cell
        # does when an ssh connection drops.
        if proc.poll() is None and hasattr(proc, "hang_up"):
            proc.hang_up()

    threading.Thread(target=pump_in, daemon=True).start()
    status = proc.wait()
    for t in pumps:
        t.join(2 if proc.pty is not None else 10)
    try:
        send_frame(sock, lock, EXIT, struct.pack(">i", status))
    except OSError:
        pass
    return status


def serve_forward(rfile: BinaryIO, sock: socket.socket, inner: socket.socket) -> None:
    """Pipe raw bytes between the upgraded connection and a socket inside the container."""
    # rfile may already hold the first bytes the client sent after the upgrade's head.
    splice(sock, inner, read_a=rfile.read1, linger=30)  # type: ignore[attr-defined]


def _splice(a: socket.socket, b: socket.socket, first_reader: Any = None) -> None:
    """Both ways between `a` (read through `first_reader` if given) and `b`: the client's `-L`."""
    splice(a, b, read_a=first_reader.read1 if first_reader is not None else None, linger=30)


# ------------------------------------------------------------------------------- client side

def open_upgraded(port: int, token: str, path: str, body: JsonObject) -> tuple[socket.socket, BinaryIO]:
    """POST to the API asking for an upgrade; returns the socket and a reader positioned after the head."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    data = json.dumps(body).encode()
    sock.sendall((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: bearer {token}\r\n"
                  f"Connection: Upgrade\r\nUpgrade: {UPGRADE}\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(data)}\r\n\r\n").encode() + data)
    reader = sock.makefile("rb", buffering=65536)
    status = reader.readline().decode("latin-1")
    headers = {}
    while True:
        line = reader.readline().decode("latin-1")
        if line in ("\r\n", "\n", ""):
            break
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if " 101 " not in status:
        length = int(headers.get("content-length") or 0)
        payload = reader.read(length) if length else b""
        sock.close()
        try:
            detail = json.loads(payload)["errors"][0]["detail"]
        except (ValueError, KeyError, IndexError):
            detail = payload.decode(errors="replace") or status.strip()
        raise ConnectionError(detail)
    sock.settimeout(None)
    return sock, reader  # type: ignore[return-value]  # makefile("rb") is a BufferedReader


def run_client(sock: socket.socket, reader: BinaryIO, tty: bool, stdin: IO[bytes] | None = None,
               stdout: IO[bytes] | None = None, stderr: IO[bytes] | None = None) -> int:
    """Attach local stdin/stdout/stderr to a remote exec session; returns its exit status."""
    stdout = stdout or sys.stdout.buffer
    stderr = stderr or sys.stderr.buffer
    lock = _LOCKS.setdefault(sock.fileno(), threading.Lock())
    in_fd = (stdin or sys.stdin.buffer).fileno() if (stdin or sys.stdin) is not None else None

    def pump_in() -> None:
        assert in_fd is not None
        try:
            while True:
                r, _, _ = select.select([in_fd], [], [], 0.5)
                if not r:
                    continue
                data = os.read(in_fd, 65536)
                if not data:
                    send_frame(sock, lock, STDIN_EOF)
                    return
                send_frame(sock, lock, STDIN, data)
        except (OSError, ValueError):
            pass

    if in_fd is not None:
        threading.Thread(target=pump_in, daemon=True).start()
    status = 255
    while True:
        frame = read_frame(reader)
        if frame is None:
            break
        kind, data = frame
        if kind == STDOUT:
            stdout.write(data)
            stdout.flush()
        elif kind == STDERR:
            stderr.write(data)
            stderr.flush()
        elif kind == EXIT:
            status = struct.unpack(">i", data)[0]
            break
    _LOCKS.pop(sock.fileno(), None)
    sock.close()
    return status


_LOCKS: dict[int, threading.Lock] = {}


def send_window(sock: socket.socket, rows: int, cols: int) -> None:
    send_frame(sock, _LOCKS.setdefault(sock.fileno(), threading.Lock()), WINDOW, struct.pack(">HH", rows, cols))
