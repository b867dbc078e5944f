"""Typed records through the real store (SQLite), their JSON shapes, and the daemon's wiring."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from localcf import presenters as P
from localcf.assembly import assemble
from localcf.controller import Controller, NotWired
from localcf.logstream import LogStream
from localcf.paths import StateDir
from localcf.records import Actor, App, AuditEvent, Droplet, DropletSidecar, Process
from localcf.runtime import Runtime
from localcf.store import NotFound, Store


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    return StateDir(tmp_path / "state").ensure()


def test_records_round_trip_with_nested_fields(state: StateDir) -> None:
    store = Store(state.db)
    app = store.insert(App(name="a", env={"K": "v"}))
    assert app.guid and app.created_at and app.updated_at
    assert store.get(App, app.guid) == app
    droplet = store.insert(Droplet(app_guid=app.guid, process_types={"web": "python app.py"},
                                   sidecars=[DropletSidecar(name="s", command="./s", memory=32)]))
    back = store.get(Droplet, droplet.guid)
    assert back.sidecars == [DropletSidecar(name="s", command="./s", process_types=["web"], memory=32)]
    event = store.insert(AuditEvent(app_guid=app.guid, type="app.crash",
                                    actor=Actor(guid=app.guid, type="app", name="a"),
                                    target=Actor(guid=app.guid, type="app", name="a"), data={"index": 0}))
    assert store.get(AuditEvent, event.guid).actor == Actor(guid=app.guid, type="app", name="a")
    # indexed columns: processes are found by their type, events by theirs
    proc = store.insert(Process(app_guid=app.guid, type="worker", instances=0))
    assert store.first(Process, app_guid=app.guid, name="worker") == proc
    assert store.find(AuditEvent, app_guid=app.guid, name="app.crash") == [store.get(AuditEvent, event.guid)]
    # update reads afresh and changes only what it is given; unknown fields are refused
    moved = store.update(App, app.guid, state="STARTED")
    assert (moved.state, moved.env, moved.created_at) == ("STARTED", {"K": "v"}, app.created_at)
    with pytest.raises(TypeError, match="no field"):
        store.update(App, app.guid, colour="red")
    store.delete(App, app.guid)
    with pytest.raises(NotFound):
        store.get(App, app.guid)


def test_rows_of_an_older_localcf_still_read(state: StateDir) -> None:
    Store(state.db).close()
    db = sqlite3.connect(state.db)
    # as the dict-based store wrote them: keys the record no longer has (`command`, `name`), and
    # none of the health-check fields it has now (they take their defaults)
    db.execute("INSERT INTO processes (guid, app_guid, name, position, created_at, updated_at, data)"
               " VALUES (?, ?, ?, NULL, ?, ?, ?)",
               ("p1", "a1", "web", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z",
                json.dumps({"app_guid": "a1", "name": "web", "type": "web", "command": None, "user_command": None,
                            "instances": 2, "memory_in_mb": 256, "disk_in_mb": 1024,
                            "health_check_type": "port", "version": "v1"})))
    db.commit()
    db.close()
    proc = Store(state.db).get(Process, "p1")
    assert (proc.type, proc.instances, proc.memory_in_mb, proc.health_check_timeout) == ("web", 2, 256, None)


def test_presenters_keep_the_capi_shape(state: StateDir) -> None:
    store = Store(state.db)
    c = Controller(state, store, LogStream(store))
    c.base_url = "http://api"
    app = store.insert(App(name="a"))
    body = P.app(c, app)
    assert list(body) == ["guid", "name", "state", "created_at", "updated_at", "lifecycle", "relationships",
                          "metadata", "links"]
    assert body["relationships"]["current_droplet"] == {"data": None}
    assert body["lifecycle"] == {"type": "buildpack", "data": {"buildpacks": [], "stack": "cflinuxfs4"}}
    json.dumps(body)  # plain JSON all the way down


def test_assemble_wires_the_parts_once(state: StateDir) -> None:
    store = Store(state.db)
    bare = Controller(state, store, LogStream(store))
    with pytest.raises(NotWired):
        bare.cell.remove_app("x")
    store.close()
    told: list[str] = []
    parts = assemble(state, runtime=Runtime(state.containers, mode="process"),
                     routes_changed=[lambda: told.append("routes")])
    try:
        c = parts.controller
        assert c.cell is parts.cell and c.stager is parts.stager
        with pytest.raises(RuntimeError, match="wired already"):
            c.wire(cell=parts.cell, stager=parts.stager)
        app = c.create_app("wired")
        c.add_route(app.guid, "wired.apps.localhost")
        assert told == ["routes"]
        c.delete_app(app.guid)
        assert told == ["routes", "routes"]
    finally:
        parts.cell.shutdown()
        parts.store.close()


def test_the_daemon_refreshes_a_changed_system_buildpack(tmp_path: Path) -> None:
    """A shipped buildpack that changed since it was installed is uploaded again on start."""
    from conftest import LocalCF

    cf = LocalCF(tmp_path / "home")
    cf("start")
    try:
        marker = cf.home / "system-buildpacks" / "python_buildpack"
        digest = marker.read_text()
        cf("stop")
        marker.write_text("a digest of an older copy")
        cf("start")
        assert marker.read_text() == digest
        assert "python_buildpack" in cf("buildpacks").out
    finally:
        cf("stop", check=False)
