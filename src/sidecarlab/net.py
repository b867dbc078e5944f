"""Small network helpers the kit shares."""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (bound to port 0 and released)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
