"""Log Cache's read API over localcf's log stream: what Cloud Foundry's own `cf` CLI reads for
`cf logs --recent`, streaming `cf logs`, and the staging output `cf push` traces.

- `GET /api/v1/info`: `{"version", "vm_uptime"}` (the cf CLI asks it first; a version from 2.x on
  makes it read under `/api/v1`).
- `GET /api/v1/read/:source_id` (also `/v1/read/:source_id`, the older path): envelopes of an app
  (the source id is the app's guid) in loggregator's v2 JSON, `{"envelopes": {"batch": [...]}}`,
  each `{timestamp, source_id, instance_id, tags: {source_type}, log: {payload (base64), type}}`.
  Query: `start_time` and `end_time` (ns, inclusive start, exclusive end as Log Cache takes them),
  `envelope_types` (only `LOG` exists here), `limit` (at most 1000), `descending`.

The cf CLI streams by polling this read ("walking" from the newest timestamp it saw), so a live
`cf logs` and push's staging trace need nothing else. Envelopes come from the store's log table
through `LogStream.recent`, which keeps the newest 2000 per app; they are read again only when a
newer one came, and an empty answer to a walk waits up to 0.2 s for news before it is sent.
"""

from __future__ import annotations

import base64
import threading
import time
from typing import Any

from .api import Request, route
from .controller import ApiError, Controller
from .records import Envelope

VERSION = "2.11.4"
# The cf CLI (v7) looks for its starting envelope among those at least a second old, then walks
# on taking envelopes at least two seconds old (its walk delay).
START_SETTLE_NS = 1_000_000_000
FOLLOW_SETTLE_NS = 2_000_000_000
SETTLE_WAIT = 2.5
MAX_LIMIT = 1000
ENVELOPE_TYPES = ("LOG", "COUNTER", "GAUGE", "TIMER", "EVENT")
_STARTED = time.monotonic()
_READS: dict[str, tuple[int, int]] = {}  # source id -> times (ns) of its two latest reads, newest first
_READS_LOCK = threading.Lock()
_CACHE: dict[str, tuple[int, list[Envelope]]] = {}  # source id -> (newest timestamp, envelopes)
KEPT = 2000  # what the store keeps per app
EMPTY_WAIT = 0.2  # an empty answer waits this long for news first (the cf CLI re-asks at once)


def _c(req: Request) -> Controller:
    return req.handler.server.controller  # type: ignore[attr-defined]


def _bad(detail: str) -> ApiError:
    return ApiError(400, 10005, "CF-BadQueryParameter", detail)


def _int(req: Request, name: str, default: int) -> int:
    raw = (req.query.get(name) or [""])[-1]
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise _bad(f"{name} must be an integer (nanoseconds since the epoch for times), not {raw!r}") from None


def to_v2(env: Envelope) -> dict[str, Any]:
    """One localcf envelope as loggregator's v2 envelope in JSON (int64 fields as strings)."""
    return {
        "timestamp": str(env.timestamp),
        "source_id": env.app_guid,
        "instance_id": str(env.instance),
        "deprecated_tags": {},
        "tags": {"source_type": env.source_type},
        "log": {"payload": base64.b64encode(env.message.encode()).decode(), "type": env.stream},
    }


def _newest(c: Controller, source_id: str) -> int:
    found = c.logs.recent(source_id, 1)
    return int(found[-1].timestamp) if found else 0


def _envelopes(c: Controller, source_id: str) -> list[Envelope]:
    """The source's kept envelopes, oldest first; read again only when a newer one came."""
    newest = _newest(c, source_id)
    cached = _CACHE.get(source_id)
    if cached is not None and cached[0] == newest:
        return cached[1]
    found = sorted(c.logs.recent(source_id, KEPT), key=lambda e: e.timestamp)
    _CACHE[source_id] = (newest, found)
    return found


def read(c: Controller, source_id: str, start_time: int = 0, end_time: int | None = None,
         envelope_types: list[str] | None = None, limit: int = 100, descending: bool = False) -> list[Envelope]:
    """Envelopes of one source in `[start_time, end_time)`, oldest first (newest first when descending),
    at most `limit` of them: the newest ones when descending, the oldest ones otherwise."""
    if envelope_types and "LOG" not in envelope_types:
        return []
    if not any(a.guid == source_id for a in c.apps()):
        _CACHE.pop(source_id, None)
        return []  # Log Cache answers an unknown source with an empty batch
    end = end_time if end_time is not None else time.time_ns() + 1
    found = [e for e in _envelopes(c, source_id) if start_time <= e.timestamp < end]
    if descending:
        found = found[::-1]
    return found[:limit]


def wait_until_traced(c: Controller, source_id: str, settle_ns: int = FOLLOW_SETTLE_NS,
                      timeout: float = SETTLE_WAIT) -> bool:
    """Wait until a reader has read `source_id` after its newest envelope settled (was `settle_ns`
    old) and has come back for more (so it has taken that answer in): a cf CLI walk then holds
    every envelope up to the newest. False when `timeout` passed first (or there is no envelope)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        newest = c.logs.recent(source_id, 1)
        if not newest:
            return False
        with _READS_LOCK:
            answered_read = _READS.get(source_id, (0, 0))[1]
        if answered_read >= newest[-1].timestamp + settle_ns:
            return True
        time.sleep(0.02)
    return False


@route("GET", "/api/v1/info")
def info(req: Request) -> Any:
    return {"version": VERSION, "vm_uptime": str(int(time.monotonic() - _STARTED))}


def _read(req: Request, source_id: str) -> Any:
    types = [t.upper() for t in req.q("envelope_types")]
    unknown = [t for t in types if t not in ENVELOPE_TYPES]
    if unknown:
        raise _bad(f"envelope_types must be among {', '.join(ENVELOPE_TYPES)}, not {', '.join(unknown)}")
    limit = _int(req, "limit", 100)
    if limit < 0 or limit > MAX_LIMIT:
        raise _bad(f"limit must be between 0 and {MAX_LIMIT}, not {limit}")
    start = _int(req, "start_time", 0)
    end_raw = (req.query.get("end_time") or [""])[-1]
    end = _int(req, "end_time", 0) if end_raw else None
    descending = (req.query.get("descending") or ["false"])[-1].lower() in ("true", "1")
    with _READS_LOCK:
        _READS[source_id] = (time.time_ns(), _READS.get(source_id, (0, 0))[0])
    c = _c(req)
    batch = read(c, source_id, max(start, 0), end, types or None, limit, descending)
    if not batch and not descending and end is None:
        # The cf CLI's walk asks again at once after an empty answer, hundreds of times a second;
        # holding an empty answer until news come (or briefly) keeps a running `cf logs` cheap.
        before, deadline = _newest(c, source_id), time.monotonic() + EMPTY_WAIT
        while time.monotonic() < deadline and _newest(c, source_id) == before:
            time.sleep(0.02)
        batch = read(c, source_id, max(start, 0), end, types or None, limit, descending)
    return {"envelopes": {"batch": [to_v2(e) for e in batch]}}


@route("GET", "/api/v1/read/(?P<source_id>[^/]+)")
def read_v1(req: Request, source_id: str) -> Any:
    return _read(req, source_id)


@route("GET", "/v1/read/(?P<source_id>[^/]+)")
def read_legacy(req: Request, source_id: str) -> Any:
    return _read(req, source_id)
