"""The store: SQLite (WAL) records of every resource, and blob files beside it.

Records are the dataclasses of `localcf.records`. Each kind is a table (the record's `KIND`) with a
few indexed columns (`app_guid`, `name`, `position`) and the rest of the record as JSON. Every write
is its own committed transaction, so a `kill -9` of the daemon loses nothing that was answered.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from . import blobs
from .paths import StateDir
from .records import ALL_KINDS, Envelope, Record

KINDS = tuple(kind.KIND for kind in ALL_KINDS)
R = TypeVar("R", bound=Record)

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
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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

    def execute(self, sql: str, args: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        """One SQL statement under the store's lock, for rooms that keep tables of their own."""
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- records --------------------------------------------------------------------------------

    @staticmethod
    def _record(kind: type[R], row: sqlite3.Row) -> R:
        return kind.from_data(json.loads(row["data"]), row["guid"], row["created_at"], row["updated_at"])

    def insert(self, rec: R) -> R:
        """Store a new record; assigns its `guid` (unless it has one) and timestamps. Returns it as stored."""
        ts = now_iso()
        rec = rec.changed(guid=rec.guid or new_guid(), created_at=ts, updated_at=ts)
        with self._lock:
            self.make_room()
            self._db.execute(
                f"INSERT INTO {rec.KIND} (guid, app_guid, name, position, created_at, updated_at, data)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (rec.guid, rec.index_app_guid, rec.index_name, rec.index_position, ts, ts,
                 json.dumps(rec.to_data())),
            )
        return rec

    def get(self, cls: type[R], guid: str) -> R:
        with self._lock:
            row = self._db.execute(f"SELECT * FROM {cls.KIND} WHERE guid = ?", (guid,)).fetchone()
        if row is None:
            raise NotFound(f"{cls.KIND} {guid}")
        return self._record(cls, row)

    def maybe(self, cls: type[R], guid: str | None) -> R | None:
        if not guid:
            return None
        try:
            return self.get(cls, guid)
        except NotFound:
            return None

    def update(self, cls: type[R], guid: str, **changes: object) -> R:
        """Change some fields of the stored record (read afresh under the lock); bumps `updated_at`."""
        with self._lock:
            return self.save(self.get(cls, guid).changed(**changes))

    def save(self, rec: R) -> R:
        """Write a whole record back (it must exist); bumps `updated_at`. Returns it as stored."""
        rec = rec.changed(updated_at=now_iso())
        with self._lock:
            self.make_room()
            cur = self._db.execute(
                f"UPDATE {rec.KIND} SET app_guid = ?, name = ?, position = ?, updated_at = ?, data = ?"
                " WHERE guid = ?",
                (rec.index_app_guid, rec.index_name, rec.index_position, rec.updated_at,
                 json.dumps(rec.to_data()), rec.guid),
            )
            if cur.rowcount == 0:
                raise NotFound(f"{rec.KIND} {rec.guid}")
        return rec

    def delete(self, cls: type[Record], guid: str) -> None:
        with self._lock:
            self.make_room()
            self._db.execute(f"DELETE FROM {cls.KIND} WHERE guid = ?", (guid,))

    def find(self, cls: type[R], *, app_guid: str | None = None, name: str | None = None,
             order: str = "created_at, rowid") -> list[R]:
        """Records of a kind, all or those whose `app_guid` and/or `name` column equal the given values."""
        clauses, args = [], []
        for col, val in (("app_guid", app_guid), ("name", name)):
            if val is not None:
                clauses.append(f"{col} = ?")
                args.append(val)
        sql = f"SELECT * FROM {cls.KIND}"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += f" ORDER BY {order}"
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [self._record(cls, r) for r in rows]

    def first(self, cls: type[R], *, app_guid: str | None = None, name: str | None = None) -> R | None:
        found = self.find(cls, app_guid=app_guid, name=name)
        return found[0] if found else None

    # -- logs -----------------------------------------------------------------------------------

    def append_logs(self, envelopes: list[Envelope], keep: int = 2000) -> None:
        """Persist log envelopes, keeping the newest `keep` per app (what `logs --recent` reads)."""
        if not envelopes:
            return
        with self.transaction():
            self._db.executemany(
                "INSERT INTO logs (app_guid, timestamp, source_type, instance, stream, message)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(e.app_guid, e.timestamp, e.source_type, e.instance, e.stream, e.message) for e in envelopes],
            )
            for app in {e.app_guid for e in envelopes}:
                self._db.execute(
                    "DELETE FROM logs WHERE app_guid = ? AND id <= "
                    "(SELECT id FROM logs WHERE app_guid = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (app, app, keep),
                )

    def recent_logs(self, app_guid: str, limit: int = 1000) -> list[Envelope]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM (SELECT * FROM logs WHERE app_guid = ? ORDER BY id DESC LIMIT ?)"
                " ORDER BY id",
                (app_guid, limit),
            ).fetchall()
        return [Envelope(app_guid=r["app_guid"], timestamp=r["timestamp"], source_type=r["source_type"],
                         instance=r["instance"], stream=r["stream"], message=r["message"]) for r in rows]

    def delete_logs(self, app_guid: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM logs WHERE app_guid = ?", (app_guid,))
