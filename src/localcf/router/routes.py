"""Routes: what a request's Host and path are matched against, with gorouter's rules.

One matcher serves both the cell's lookup (routes from the store, to app guids) and
`RouteTable` (routes registered directly, to backends): the host matches exactly, case
insensitive, without its port; then the longest route path that is a prefix of the request
path at a `/` boundary wins, also case insensitive (gorouter lowercases the whole route key),
and a route without a path serves whatever no longer route path claims.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

__all__ = [
    "Backend",
    "BackendLookup",
    "LookupFn",
    "RouteTable",
    "build_routes",
    "lookup_path",
    "match_route",
    "route_path",
    "split_host",
]

T = TypeVar("T")


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


def route_path(path: str) -> str:
    """A route's path as the matcher keeps it: lowercase, with a leading `/` and no trailing
    one; "" for a route without a path (and for "/", which is the same route)."""
    path = path.lower().rstrip("/")
    if path and not path.startswith("/"):
        path = "/" + path
    return path


def build_routes(routes: Iterable[tuple[str, str, T]]) -> dict[str, list[tuple[str, T]]]:
    """A table for `match_route` from (host, path, value) triples: host -> its routes, longest
    path first. Of two triples with the same host and path, the later one wins."""
    by_host: dict[str, dict[str, T]] = {}
    for host, path, value in routes:
        by_host.setdefault(host.lower(), {})[route_path(path)] = value
    return {host: sorted(paths.items(), key=lambda e: len(e[0]), reverse=True)
            for host, paths in by_host.items()}


def match_route(table: Mapping[str, Sequence[tuple[str, T]]], host: str,
                path: str) -> T | None:
    """The value of the route that serves `host` (without port) and request path `path`
    (without query), or None. `table` is what `build_routes` makes (longest path first)."""
    entries = table.get(host.lower())
    if not entries:
        return None
    lowered = path.lower()
    for prefix, value in entries:
        if not prefix:
            return value
        if lowered.startswith(prefix) and (
                len(lowered) == len(prefix) or lowered[len(prefix)] == "/"):
            return value
    return None


class RouteTable:
    """A thread-safe route table, for a router that is not fed by a cell (tests, tools)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # host -> list of (path, backends), longest path first; replaced, never mutated, so
        # that readers need no lock
        self._routes: dict[str, list[tuple[str, list[Backend]]]] = {}

    def _replace(self, host: str, path: str, backends: list[Backend] | None) -> None:
        host, path = host.lower(), route_path(path)
        with self._lock:
            entries = [(p, b) for p, b in self._routes.get(host, []) if p != path]
            if backends is not None:
                entries.append((path, list(backends)))
            if entries:
                self._routes[host] = build_routes((host, p, b) for p, b in entries)[host]
            else:
                self._routes.pop(host, None)

    def set_backends(self, host: str, path: str, backends: list[Backend]) -> None:
        """Register (or replace) the backends of route `host` + `path` (path "" for none)."""
        self._replace(host, path, backends)

    def remove(self, host: str, path: str = "") -> None:
        """Forget route `host` + `path`; unknown routes are ignored."""
        self._replace(host, path, None)

    def backends(self, host: str, path: str) -> list[Backend]:
        """The backends of the route that serves `host` and request path `path`."""
        return match_route(self._routes, host, path) or []


def split_host(host: str) -> str:
    """The host of a Host header value, without the port."""
    if host.startswith("["):
        end = host.find("]")
        return host[:end + 1] if end > 0 else host
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        return name
    return host


def lookup_path(target: str) -> str:
    """The path of a request target (origin-form or absolute-form), without the query."""
    if target.startswith(("http://", "https://")):
        parts = target.split("/", 3)
        target = "/" + (parts[3] if len(parts) > 3 else "")
    return target.split("?", 1)[0].split("#", 1)[0]
