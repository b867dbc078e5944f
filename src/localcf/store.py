"""The store: SQLite (WAL) records of every resource, and blob files beside it.

Each resource kind is a table with a few indexed columns and the rest of the record as JSON. Every
write is its own committed transaction, so a `kill -9` of the daemon loses nothing that was answered.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from . import blobs
from .paths import StateDir

KINDS = (
    "apps", "processes", "sidecars", "packages", "builds", "droplets", "buildpacks",
    "audit_events", "routes", "jobs",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {kind} (
    guid TEXT PRIMARY KEY,
    app_guid TEXT,
    name TEXT,
    position INTEGER,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS {kind}_app ON {kind}(app_guid);
CREATE INDEX IF NOT EXISTS {kind}_name ON {kind}(name);
"""

_LOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app_guid TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    source_type TEXT NOT NULL,
    instance TEXT NOT NULL,
    stream TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_app ON logs(app_guid, id);
"""

_COLUMNS = ("app_guid", "name", "position")
RESERVE_FILE = "space-reserve"
RESERVE_BYTES = 2 << 20


def now_iso() -> str:
    """UTC timestamp the way CAPI renders them: `2026-11-22T02:53:35Z`."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_guid() -> str:
    return str(uuid.uuid4())


class NotFound(KeyError):
    """A record that does not exist."""


class Store:
    """Records of one localcf state dir. Thread-safe; one connection guarded by a lock."""

    def __init__(self, db_path: Path):
        self.path = Path(db_path)
        # A daemon that died mid-write left partial blobs beside the database: they only take
        # space, maybe all of it, and SQLite cannot even open its WAL on a full disk. They go first.
        blobs.remove_partial(StateDir(self.path.parent))
        # Room kept in reserve so that a full disk never stops the daemon from opening its records,
        # deleting an app or recording a failure: released when space runs out, made again later.
        self._reserve = self.path.parent / RESERVE_FILE
        self.make_room()
        self.keep_reserve()
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable against a crash of the process (not of the OS), which is what we promise.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        with self._lock:
            for kind in KINDS:
                self._db.executescript(_SCHEMA.format(kind=kind))
            self._db.executescript(_LOG_SCHEMA)

    def make_room(self) -> None:
        """Release the reserve when the disk is (nearly) full, so that the next write fits."""
        if blobs.free_space(self.path.parent) < RESERVE_BYTES:
            self._reserve.unlink(missing_ok=True)

    def keep_reserve(self) -> None:
        """Make the reserve again, when there is room for it and then some."""
        if self._reserve.exists() or blobs.free_space(self.path.parent) < 3 * RESERVE_BYTES:
            return
        try:
            with open(self._reserve, "wb") as f:
                f.write(b"\0" * RESERVE_BYTES)
        except OSError:
            self._reserve.unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group several writes into one atomic transaction."""
        with self._lock:
            self.make_room()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @staticmethod
    def _row(row: sqlite3.Row | None) -> dict[str, Any] | None:
        if row is None:
            return None
        rec = json.loads(row["data"])
        rec["guid"] = row["guid"]
        rec["created_at"] = row["created_at"]
        rec["updated_at"] = row["updated_at"]
        return rec

    def insert(self, kind: str, rec: dict[str, Any]) -> dict[str, Any]:
        """Store a new record; assigns `guid` (unless given) and timestamps."""
        assert kind in KINDS, kind
        rec = dict(rec)
        guid = rec.pop("guid", None) or new_guid()
        ts = now_iso()
        rec.pop("created_at", None)
        rec.pop("updated_at", None)
        cols = {c: rec.get(c) for c in _COLUMNS}
        with self._lock:
            self.make_room()
            self._db.execute(
                f"INSERT INTO {kind} (guid, app_guid, name, position, created_at, updated_at, data)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (guid, cols["app_guid"], cols["name"], cols["position"], ts, ts, json.dumps(rec)),
            )
        return {**rec, "guid": guid, "created_at": ts, "updated_at": ts}

    def get(self, kind: str, guid: str) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute(f"SELECT * FROM {kind} WHERE guid = ?", (guid,)).fetchone()
        rec = self._row(row)
        if rec is None:
            raise NotFound(f"{kind} {guid}")
        return rec

    def maybe(self, kind: str, guid: str | None) -> dict[str, Any] | None:
        if not guid:
            return None
        try:
            return self.get(kind, guid)
        except NotFound:
            return None

    def update(self, kind: str, guid: str, **changes: Any) -> dict[str, Any]:
        """Merge `changes` into a record and bump `updated_at`."""
        with self._lock:
            self.make_room()
            rec = self.get(kind, guid)
            rec.update(changes)
            ts = now_iso()
            data = {k: v for k, v in rec.items() if k not in ("guid", "created_at", "updated_at")}
            self._db.execute(
                f"UPDATE {kind} SET app_guid = ?, name = ?, position = ?, updated_at = ?, data = ?"
                " WHERE guid = ?",
                (data.get("app_guid"), data.get("name"), data.get("position"), ts,
                 json.dumps(data), guid),
            )
            rec["updated_at"] = ts
            return rec

    def delete(self, kind: str, guid: str) -> None:
        with self._lock:
            self.make_room()
            self._db.execute(f"DELETE FROM {kind} WHERE guid = ?", (guid,))

    def find(self, kind: str, order: str = "created_at, rowid", **where: Any) -> list[dict[str, Any]]:
        """Records whose indexed columns (`app_guid`, `name`, `position`) equal the given values."""
        clauses, args = [], []
        for col, val in where.items():
            assert col in _COLUMNS, col
            clauses.append(f"{col} = ?")
            args.append(val)
        sql = f"SELECT * FROM {kind}"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += f" ORDER BY {order}"
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [self._row(r) for r in rows]  # type: ignore[misc]

    def first(self, kind: str, **where: Any) -> dict[str, Any] | None:
        found = self.find(kind, **where)
        return found[0] if found else None

    # -- logs -----------------------------------------------------------------------------------

    def append_logs(self, envelopes: list[dict[str, Any]], keep: int = 2000) -> None:
        """Persist log envelopes, keeping the newest `keep` per app (what `logs --recent` reads)."""
        if not envelopes:
            return
        with self.transaction():
            self._db.executemany(
                "INSERT INTO logs (app_guid, timestamp, source_type, instance, stream, message)"
                " VALUES (:app_guid, :timestamp, :source_type, :instance, :stream, :message)",
                envelopes,
            )
            for app in {e["app_guid"] for e in envelopes}:
                self._db.execute(
                    "DELETE FROM logs WHERE app_guid = ? AND id <= "
                    "(SELECT id FROM logs WHERE app_guid = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (app, app, keep),
                )

    def recent_logs(self, app_guid: str, limit: int = 1000) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM (SELECT * FROM logs WHERE app_guid = ? ORDER BY id DESC LIMIT ?)"
                " ORDER BY id",
                (app_guid, limit),
            ).fetchall()
        return [
            {k: r[k] for k in ("app_guid", "timestamp", "source_type", "instance", "stream", "message")}
            for r in rows
        ]

    def delete_logs(self, app_guid: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM logs WHERE app_guid = ?", (app_guid,))
