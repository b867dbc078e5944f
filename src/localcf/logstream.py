"""The log stream: envelopes per app, persisted for `logs --recent`, and a live tail.

An envelope (`localcf.records.Envelope`) is `{app_guid, timestamp (ns), source_type, instance,
stream (OUT|ERR), message}`, the fields loggregator's envelopes carry that the cf CLI prints.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime

from .jsondoc import JsonObject
from .records import Envelope
from .store import Store


def envelope(app_guid: str, source_type: str, instance: str | int, stream: str, message: str,
             timestamp: int | None = None) -> Envelope:
    return Envelope(app_guid=app_guid, timestamp=timestamp if timestamp is not None else time.time_ns(),
                    source_type=source_type, instance=str(instance), stream=stream, message=message)


def format_line(env: JsonObject | Envelope) -> str:  # JSON boundary: the CLI passes the API's JSON
    """One envelope in the cf CLI v7/v8 format:
    `   2019-05-18T02:53:35.00+0000 [APP/PROC/WEB/0] OUT message`.

    Takes an Envelope, or its JSON as the API serves it (JSON boundary: the CLI prints what it got).
    """
    e = env.as_json() if isinstance(env, Envelope) else env
    ts = datetime.fromtimestamp(e["timestamp"] / 1e9).astimezone()
    stamp = ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 10000:02d}" + ts.strftime("%z")
    header = f"   {stamp} [{e['source_type']}/{e['instance']}] {e['stream']} "
    return "\n".join(header + part for part in e["message"].split("\n"))


class LogStream:
    """Fan-out of envelopes to the store and to live subscribers."""

    def __init__(self, store: Store):
        self.store = store
        self._cond = threading.Condition()
        self._seq = 0
        self._tail: list[tuple[int, Envelope]] = []  # recent envelopes for live followers
        self._lost_reported = -1e9

    def emit(self, app_guid: str, source_type: str, instance: str | int, stream: str,
             message: str) -> None:
        """Record one log line (a message with newlines is split, as loggregator does)."""
        self.emit_many([(app_guid, source_type, instance, stream, message)])

    def emit_many(self, items: Sequence[tuple[str, str, str | int, str, str]]) -> None:
        """Record several log lines in one transaction (the router's access lines come in batches)."""
        envs: list[Envelope] = []
        for app_guid, source_type, instance, stream, message in items:
            lines = message.rstrip("\n").split("\n") if message else [""]
            envs += [envelope(app_guid, source_type, instance, stream, line) for line in lines]
        try:
            self.store.append_logs(envs)
        except sqlite3.Error as e:
            # a full disk must not fail what is being logged (a crash, a deletion, a staging):
            # the lines still reach live followers; `logs --recent` misses them
            self._report_lost(e)
        with self._cond:
            for env in envs:
                self._seq += 1
                self._tail.append((self._seq, env))
            if len(self._tail) > 5000:
                del self._tail[: len(self._tail) - 5000]
            self._cond.notify_all()

    def _report_lost(self, error: Exception) -> None:
        now = time.monotonic()
        if now - self._lost_reported > 60:
            self._lost_reported = now
            print(f"localcf: log lines not persisted ({error}); they reach live tails only",
                  file=sys.stderr, flush=True)

    def recent(self, app_guid: str, limit: int = 1000) -> list[Envelope]:
        return self.store.recent_logs(app_guid, limit)

    def follow(self, app_guid: str, stop: threading.Event | None = None,
               heartbeat: float = 1.0) -> Iterator[Envelope | None]:
        """Yield new envelopes of an app as they come; yields None every `heartbeat` seconds
        without news, so that a caller can notice a closed connection."""
        with self._cond:
            seen = self._seq
        while not (stop and stop.is_set()):
            with self._cond:
                if self._seq == seen:
                    self._cond.wait(heartbeat)
                news = [e for s, e in self._tail if s > seen]
                seen = self._seq
            mine = [e for e in news if e.app_guid == app_guid]
            if not mine:
                yield None
            yield from mine
