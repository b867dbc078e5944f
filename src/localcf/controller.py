"""The Cloud Controller: resources and their rules.

The HTTP layer (`localcf.api`) only routes requests here; the records are `localcf.records`'
dataclasses and their JSON shapes `localcf.presenters`'. Errors are `ApiError`s carrying CAPI's
error code, title and detail, so the client can print what `cf` prints.

The controller's parts are wired in one place (`localcf.assembly.assemble`): it is constructed with
the store and the log stream, and `wire()` gives it, once, what runs apps (`AppRunner`, the cell),
what stages builds (`BuildRunner`, the stager) and who hears of route changes (the router's table).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from . import blobs
from . import manifest as manifest_mod
from .applog import api_line
from .buildpacks import is_url, zip_dir
from .logstream import LogStream
from .paths import StateDir
from .records import (
    ORG_GUID,
    ORG_NAME,
    SPACE_GUID,
    SPACE_NAME,
    STACK,
    Actor,
    App,
    AuditEvent,
    Build,
    Buildpack,
    Droplet,
    DropletSidecar,
    JsonObject,
    Package,
    Process,
    Route,
    Sidecar,
)
from .store import NotFound, Store, new_guid

__all__ = ["ORG_GUID", "ORG_NAME", "SPACE_GUID", "SPACE_NAME", "STACK", "ApiError", "AppRunner", "BuildRunner",
           "Controller", "NotWired", "RoutesChanged", "not_found", "unprocessable"]

if TYPE_CHECKING:
    from .cell import Instance
    from .records import InstanceStats

from .constants import (  # noqa: E402,F401  (re-exported: rooms that know the controller read them here)
    DEFAULT_DISK_MB,
    DEFAULT_DOMAIN,
    DEFAULT_HEALTH_TIMEOUT,
    DEFAULT_MEMORY_MB,
    USER_GUID,
    USER_NAME,
)


class ApiError(Exception):
    """A CAPI error: `{"errors": [{"code", "title", "detail"}]}` with an HTTP status."""

    def __init__(self, status: int, code: int, title: str, detail: str):
        super().__init__(detail)
        self.status, self.code, self.title, self.detail = status, code, title, detail

    def body(self) -> JsonObject:  # JSON boundary: the error document the API serves
        return {"errors": [{"code": self.code, "title": self.title, "detail": self.detail}]}


def not_found(what: str) -> ApiError:
    return ApiError(404, 10010, "CF-ResourceNotFound", f"{what} not found")


def unprocessable(detail: str) -> ApiError:
    return ApiError(422, 10008, "CF-UnprocessableEntity", detail)


def not_enough_space(what: str, needed: int, where: Path, free: int | None = None) -> ApiError:
    """A blob that does not fit on the state dir's disk: 507 Insufficient Storage, naming the cause."""
    if free is None:
        free = blobs.free_space(where)
    return ApiError(507, 150007, "CF-BlobstoreError",
                    f"Not enough space to store the {what}: it needs {blobs.human_size(needed)}, the disk of "
                    f"{where} has {blobs.human_size(free)} free. Free some space (delete apps you no longer "
                    f"need: `localcf delete APP`) and try again.")


def unknown_buildpack(name: str) -> ApiError:
    return unprocessable(f'Buildpack "{name}" must be an existing admin buildpack or a valid git URI')


class AppRunner(Protocol):
    """What the controller and the API ask of the cell (`localcf.cell.Cell`)."""

    def converge_app(self, app_guid: str) -> None: ...
    def start_app(self, app_guid: str) -> App: ...
    def stop_app(self, app_guid: str) -> App: ...
    def restart_app(self, app_guid: str) -> App: ...
    def remove_app(self, app_guid: str) -> None: ...
    def stats(self, proc: Process) -> list[InstanceStats]: ...
    def instance(self, app_guid: str, index: int = 0) -> Instance | None: ...


class BuildRunner(Protocol):
    """What the controller and the API ask of the stager (`localcf.stager.Stager`)."""

    def stage(self, build: Build) -> None: ...
    def follow(self, build_guid: str, heartbeat: float = 1.0) -> Iterator[tuple[str, str] | None]: ...


RoutesChanged = Callable[[], None]
"""Told that some app's routes were added or removed (the router's route table refreshes)."""


class NotWired(RuntimeError):
    """A part of the daemon used before `Controller.wire` gave it to the controller."""


class Controller:
    """Every resource rule of the embedded Cloud Controller."""

    def __init__(self, state: StateDir, store: Store, logs: LogStream):
        self.state = state
        self.store = store
        self.logs = logs
        self.base_url = ""  # set by the API once it knows its port
        self._lock = threading.RLock()
        self._cell: AppRunner | None = None
        self._stager: BuildRunner | None = None
        self._routes_changed: list[RoutesChanged] = []

    # ------------------------------------------------------------------ wiring

    def wire(self, *, cell: AppRunner, stager: BuildRunner, routes_changed: list[RoutesChanged] | None = None) -> None:
        """Give the controller the parts that depend on it; once, before the API serves."""
        if self._cell is not None or self._stager is not None:
            raise RuntimeError("the controller is wired already")
        self._cell, self._stager = cell, stager
        self._routes_changed = list(routes_changed or [])

    @property
    def cell(self) -> AppRunner:
        if self._cell is None:
            raise NotWired("the controller has no cell: call Controller.wire() first")
        return self._cell

    @cell.setter
    def cell(self, cell: AppRunner) -> None:  # the former way to wire; kept for compatibility
        self._cell = cell

    @property
    def stager(self) -> BuildRunner:
        if self._stager is None:
            raise NotWired("the controller has no stager: call Controller.wire() first")
        return self._stager

    @stager.setter
    def stager(self, stager: BuildRunner) -> None:  # the former way to wire; kept for compatibility
        self._stager = stager

    def subscribe_routes(self, hook: RoutesChanged) -> None:
        """Also tell `hook` when routes are added or removed (e.g. a router built after the wiring)."""
        self._routes_changed.append(hook)

    def _tell_routes_changed(self) -> None:
        for hook in self._routes_changed:
            hook()

    # ------------------------------------------------------------------ apps

    def apps(self, names: list[str] | None = None) -> list[App]:
        found = self.store.find(App)
        return [a for a in found if a.name in names] if names else found

    def app_by_guid(self, guid: str) -> App:
        try:
            return self.store.get(App, guid)
        except NotFound:
            raise not_found("App") from None

    def app_by_name(self, name: str) -> App | None:
        return self.store.first(App, name=name)

    def create_app(self, name: str, buildpacks: list[str] | None = None,
                   env: dict[str, str] | None = None, stack: str | None = None) -> App:
        with self._lock:
            if not name:
                raise unprocessable("Name must not be empty")
            if self.app_by_name(name):
                raise unprocessable(f"App with the name '{name}' already exists.")
            for bp in buildpacks or []:
                self.check_buildpack(bp)
            app = self.store.insert(App(name=name, state="STOPPED", buildpacks=list(buildpacks or []),
                                        stack=stack or STACK, env={str(k): str(v) for k, v in (env or {}).items()}))
            self.store.insert(Process(app_guid=app.guid, type="web", instances=1, memory_in_mb=DEFAULT_MEMORY_MB,
                                      disk_in_mb=DEFAULT_DISK_MB, health_check_type="port",
                                      version=_new_version()))
            self.audit("audit.app.create", app, {"request": {"name": name}})
            return app

    def update_app(self, guid: str, **changes: object) -> App:
        """Change fields of an app (`name`, `state`, `buildpacks`, `stack`, `env`, `droplet_guid`)."""
        return self.store.update(App, guid, **changes)

    def delete_app(self, guid: str) -> None:
        """Delete an app and everything it owns. Works on a full disk: the blobs go first, which
        frees the space the database needs to record the deletion."""
        app = self.app_by_guid(guid)
        self.cell.remove_app(guid)
        shutil.rmtree(self.state.caches / guid, ignore_errors=True)
        for folder in (self.state.packages, self.state.droplets):
            for f in folder.glob(f"{guid}-*"):
                f.unlink(missing_ok=True)
        with self.store.transaction():
            for kind in (Process, Sidecar, Package, Build, Droplet, Route):
                for rec in self.store.find(kind, app_guid=guid):
                    self.store.delete(kind, rec.guid)
            self.store.delete(App, guid)
        self._tell_routes_changed()
        self.audit("audit.app.delete-request", app, {"request": {"recursive": True}})
        self.store.keep_reserve()

    def set_env(self, guid: str, changes: dict[str, str | None]) -> App:
        """PATCH semantics: a None value removes the variable."""
        app = self.app_by_guid(guid)
        env = dict(app.env)
        for k, v in changes.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
        app = self.store.update(App, guid, env=env)
        self.audit("audit.app.update", app, {"request": {"environment_variables": "[PRIVATE DATA HIDDEN]"}})
        return app

    # ------------------------------------------------------------- processes

    def processes(self, app_guid: str) -> list[Process]:
        return self.store.find(Process, app_guid=app_guid)

    def process(self, app_guid: str, ptype: str) -> Process | None:
        return self.store.first(Process, app_guid=app_guid, name=ptype)

    def process_by_guid(self, guid: str) -> Process:
        try:
            return self.store.get(Process, guid)
        except NotFound:
            raise not_found("Process") from None

    def ensure_process(self, app_guid: str, ptype: str) -> Process:
        proc = self.process(app_guid, ptype)
        if proc:
            return proc
        return self.store.insert(Process(
            app_guid=app_guid, type=ptype, instances=1 if ptype == "web" else 0, memory_in_mb=DEFAULT_MEMORY_MB,
            disk_in_mb=DEFAULT_DISK_MB, health_check_type="port" if ptype == "web" else "process",
            version=_new_version()))

    def update_process(self, proc_guid: str, **changes: object) -> Process:
        """Change fields of a process; a change of what runs gives it a new version."""
        proc = self.process_by_guid(proc_guid)
        memory = changes.get("memory_in_mb")
        if isinstance(memory, int):
            self.check_sidecar_memory(proc.app_guid, proc.type, memory)
        if any(k in changes for k in ("user_command", "memory_in_mb", "disk_in_mb", "health_check_type",
                                      "health_check_endpoint")):
            changes["version"] = _new_version()
        return self.store.update(Process, proc_guid, **changes)

    def effective_command(self, proc: Process) -> str | None:
        """The user's command, else the one the current droplet detected for this type."""
        if proc.user_command:
            return proc.user_command
        app = self.store.maybe(App, proc.app_guid)
        droplet = self.store.maybe(Droplet, app.droplet_guid if app else None)
        if droplet:
            return droplet.process_types.get(proc.type)
        return None

    # -------------------------------------------------------------- sidecars

    def sidecars(self, app_guid: str, process_type: str | None = None) -> list[Sidecar]:
        """The app's sidecars; with `process_type`, those that run beside that type."""
        found = self.store.find(Sidecar, app_guid=app_guid)
        return [s for s in found if process_type in s.process_types] if process_type else found

    def sidecar_by_guid(self, guid: str) -> Sidecar:
        try:
            return self.store.get(Sidecar, guid)
        except NotFound:
            raise not_found("Sidecar") from None

    def check_sidecar_memory(self, app_guid: str, ptype: str, process_memory: int,
                             sidecars: list[tuple[int | None, list[str]]] | None = None) -> None:
        """Sidecar memory is carved out of the process memory, so it must be strictly less.
        `sidecars`: (memory_in_mb, process_types) pairs to check instead of the app's sidecars."""
        pairs = sidecars if sidecars is not None else [(s.memory_in_mb, s.process_types)
                                                       for s in self.sidecars(app_guid)]
        for mem, ptypes in pairs:
            if mem is not None and ptype in ptypes and mem >= process_memory:
                raise unprocessable(
                    f'The memory allocation defined is too large to run with the dependent "{ptype}" process')

    def create_sidecar(self, app_guid: str, name: str, command: str, process_types: list[str],
                       memory_in_mb: int | None) -> Sidecar:
        """`POST /v3/apps/:guid/sidecars`: a new user sidecar (its name must be new for the app)."""
        self.app_by_guid(app_guid)
        if self.store.first(Sidecar, app_guid=app_guid, name=name):
            raise unprocessable(f"Sidecar with name '{name}' already exists for given app")
        return self.upsert_sidecar(app_guid, name, command, process_types, memory_in_mb)

    def upsert_sidecar(self, app_guid: str, name: str, command: str, process_types: list[str],
                       memory_in_mb: int | None, origin: str = "user") -> Sidecar:
        if not name:
            raise unprocessable("Name can't be blank")
        if not command:
            raise unprocessable("Command can't be blank")
        if not process_types:
            raise unprocessable("Process types must have at least 1 process_type")
        for ptype in process_types:
            proc = self.process(app_guid, ptype)
            if proc and memory_in_mb is not None:
                self.check_sidecar_memory(app_guid, ptype, proc.memory_in_mb, [(memory_in_mb, [ptype])])
        types = sorted(set(process_types))
        existing = self.store.first(Sidecar, app_guid=app_guid, name=name)
        if existing:
            return self.store.update(Sidecar, existing.guid, command=command, process_types=types,
                                     memory_in_mb=memory_in_mb, origin=origin)
        return self.store.insert(Sidecar(app_guid=app_guid, name=name, command=command, process_types=types,
                                         memory_in_mb=memory_in_mb, origin=origin))

    def sidecar_conflicts(self, app_guid: str, droplet_sidecars: list[DropletSidecar]) -> str | None:
        for sc in droplet_sidecars:
            user = self.store.first(Sidecar, app_guid=app_guid, name=sc.name)
            if user and user.origin == "user":
                return (f"Buildpack defined sidecar '{sc.name}' conflicts with an existing "
                        f"user-defined sidecar. Consider renaming '{sc.name}'.")
        return None

    def sync_buildpack_sidecars(self, app_guid: str, droplet: Droplet) -> None:
        """Buildpack sidecars are deleted and recreated from each newly assigned droplet."""
        conflict = self.sidecar_conflicts(app_guid, droplet.sidecars)
        if conflict:
            raise unprocessable(conflict)
        with self.store.transaction():
            for sc in self.sidecars(app_guid):
                if sc.origin == "buildpack":
                    self.store.delete(Sidecar, sc.guid)
            for ds in droplet.sidecars:
                self.store.insert(Sidecar(app_guid=app_guid, name=ds.name, command=ds.command,
                                          process_types=sorted(ds.process_types or ["web"]),
                                          memory_in_mb=ds.memory, origin="buildpack"))

    # ------------------------------------------------------------ buildpacks

    def buildpacks(self, names: list[str] | None = None) -> list[Buildpack]:
        found = self.store.find(Buildpack, order="position")
        return [b for b in found if b.name in names] if names else found

    def buildpack_by_name(self, name: str) -> Buildpack | None:
        return self.store.first(Buildpack, name=name)

    def buildpack_by_guid(self, guid: str) -> Buildpack:
        try:
            return self.store.get(Buildpack, guid)
        except NotFound:
            raise not_found("Buildpack") from None

    def check_buildpack(self, ref: str) -> None:
        """A buildpack reference must name an admin buildpack, or be a URL or a local path."""
        if ref in ("", "default", "null"):
            return
        if self.buildpack_by_name(ref) or is_url(ref) or ref.startswith("/"):
            return
        raise unknown_buildpack(ref)

    def create_buildpack(self, name: str, position: int | None = None, enabled: bool = True,
                         locked: bool = False, stack: str | None = STACK) -> Buildpack:
        with self._lock:
            if not re.fullmatch(r"[\w\-]+", name or ""):
                raise unprocessable("Name can only contain alphanumeric characters")
            if self.buildpack_by_name(name):
                raise unprocessable(f"The buildpack name {name} is already in use for the stack {stack}")
            bps = self.buildpacks()
            pos = len(bps) + 1 if not position or position > len(bps) else max(1, position)
            bp = self.store.insert(Buildpack(name=name, position=10**6, enabled=enabled, locked=locked,
                                             stack=stack, filename=None, state="AWAITING_UPLOAD"))
            self._reposition(bp.guid, pos)
            return self.store.get(Buildpack, bp.guid)

    def _reposition(self, guid: str, position: int) -> None:
        others = [b.guid for b in self.buildpacks() if b.guid != guid]
        position = max(1, min(position, len(others) + 1))
        others.insert(position - 1, guid)
        with self.store.transaction():
            for i, g in enumerate(others, start=1):
                self.store.update(Buildpack, g, position=i)

    def update_buildpack(self, guid: str, *, position: int | None = None, **changes: object) -> Buildpack:
        """Change fields of a buildpack (`name`, `enabled`, `locked`, `stack`); `position` moves it."""
        bp = self.buildpack_by_guid(guid)
        if changes:
            bp = self.store.update(Buildpack, guid, **changes)
        if position is not None:
            self._reposition(guid, int(position))
            bp = self.store.get(Buildpack, guid)
        return bp

    def upload_buildpack(self, guid: str, filename: str, data: bytes) -> Buildpack:
        bp = self.buildpack_by_guid(guid)
        if bp.locked:
            raise unprocessable("The buildpack is locked")
        self._write_blob(self.state.buildpacks / f"{guid}.zip", data, "buildpack")
        return self.store.update(Buildpack, guid, filename=Path(filename).name, state="READY",
                                 checksum=hashlib.sha256(data).hexdigest())

    def install_buildpack_dir(self, name: str, directory: Path, position: int | None = None) -> Buildpack:
        """Install a buildpack directory as an admin buildpack (used for the preinstalled ones)."""
        bp = self.create_buildpack(name, position)
        zpath = self.state.buildpacks / f"{bp.guid}.upload"
        try:
            zip_dir(directory, zpath)
            return self.upload_buildpack(bp.guid, f"{name}.zip", zpath.read_bytes())
        finally:
            zpath.unlink(missing_ok=True)

    def delete_buildpack(self, guid: str) -> None:
        self.buildpack_by_guid(guid)
        self.store.delete(Buildpack, guid)
        (self.state.buildpacks / f"{guid}.zip").unlink(missing_ok=True)
        self._renumber()

    def _renumber(self) -> None:
        with self.store.transaction():
            for i, b in enumerate(self.buildpacks(), start=1):
                if b.position != i:
                    self.store.update(Buildpack, b.guid, position=i)

    # ------------------------------------------------------------- packages

    def create_package(self, app_guid: str) -> Package:
        self.app_by_guid(app_guid)
        return self.store.insert(Package(app_guid=app_guid, type="bits", state="AWAITING_UPLOAD"))

    def package_by_guid(self, guid: str) -> Package:
        try:
            return self.store.get(Package, guid)
        except NotFound:
            raise not_found("Package") from None

    def packages(self, app_guid: str) -> list[Package]:
        return self.store.find(Package, app_guid=app_guid)

    def upload_package(self, guid: str, data: bytes) -> Package:
        pkg = self.package_by_guid(guid)
        self._write_blob(self.package_path(pkg), data, "package")
        return self.store.update(Package, guid, state="READY", checksum=hashlib.sha256(data).hexdigest(),
                                 size=len(data))

    def _write_blob(self, path: Path, data: bytes, what: str) -> None:
        """Store a blob whole or not at all; one that does not fit is refused before writing."""
        try:
            blobs.write_atomically(path, data)
        except blobs.NoSpace as e:
            raise not_enough_space(what, e.needed, path.parent, e.free) from None

    def package_path(self, pkg: Package) -> Path:
        return self.state.packages / f"{pkg.app_guid}-{pkg.guid}.zip"

    def droplet_path(self, droplet: Droplet) -> Path:
        return self.droplet_blob(droplet.app_guid, droplet.guid)

    def droplet_blob(self, app_guid: str, droplet_guid: str) -> Path:
        return self.state.droplets / f"{app_guid}-{droplet_guid}.tgz"

    # --------------------------------------------------------------- builds

    def create_build(self, package_guid: str | None, buildpacks: list[str] | None = None,
                     stack: str | None = None, staging_memory_in_mb: int | None = None) -> Build:
        pkg = self.store.maybe(Package, package_guid)
        if pkg is None:
            raise not_found("Package")
        if pkg.state != "READY":
            raise unprocessable("Unable to stage package: the package is not uploaded yet")
        app = self.app_by_guid(pkg.app_guid)
        bps = list(buildpacks) if buildpacks is not None else list(app.buildpacks)
        bps = [b for b in bps if b not in ("", "default", "null")]
        for bp in bps:
            self.check_buildpack(bp)
        build = self.store.insert(Build(app_guid=app.guid, package_guid=pkg.guid, state="STAGING", buildpacks=bps,
                                        stack=stack or app.stack or STACK))
        self.audit("audit.app.build.create", app, {"package_guid": pkg.guid, "build_guid": build.guid})
        self.stager.stage(build)
        return build

    def build_by_guid(self, guid: str) -> Build:
        try:
            return self.store.get(Build, guid)
        except NotFound:
            raise not_found("Build") from None

    def builds(self, app_guid: str) -> list[Build]:
        return self.store.find(Build, app_guid=app_guid)

    # ------------------------------------------------------------- droplets

    def droplet_by_guid(self, guid: str) -> Droplet:
        try:
            return self.store.get(Droplet, guid)
        except NotFound:
            raise not_found("Droplet") from None

    def droplets(self, app_guid: str) -> list[Droplet]:
        return self.store.find(Droplet, app_guid=app_guid)

    def current_droplet(self, app: App) -> Droplet | None:
        return self.store.maybe(Droplet, app.droplet_guid)

    def set_current_droplet(self, app_guid: str, droplet_guid: str | None) -> App:
        self.app_by_guid(app_guid)
        droplet = self.store.maybe(Droplet, droplet_guid)
        if droplet is None or droplet.app_guid != app_guid or droplet.state != "STAGED":
            raise unprocessable("Unable to assign current droplet. Ensure the droplet exists and belongs to this app.")
        self.sync_buildpack_sidecars(app_guid, droplet)
        for ptype in droplet.process_types:
            self.ensure_process(app_guid, ptype)
        for proc in self.processes(app_guid):
            self.store.update(Process, proc.guid, version=_new_version())
        app = self.store.update(App, app_guid, droplet_guid=droplet.guid)
        self.audit("audit.app.droplet.mapped", app, {"request": {"droplet_guid": droplet.guid}})
        return app

    # --------------------------------------------------------------- events

    def audit(self, etype: str, app: App, data: JsonObject, actor: Actor | None = None) -> AuditEvent:
        """Record an audit event about `app`; the actor is the user unless given (crashes: the app
        or the process). `data` is the event's metadata, JSON as Cloud Controller records it."""
        rec = self.store.insert(AuditEvent(
            app_guid=app.guid, type=etype,
            actor=actor or Actor(guid=USER_GUID, type="user", name=USER_NAME),
            target=Actor(guid=app.guid, type="app", name=app.name),
            data=data,
        ))
        line = api_line(etype, app.guid, data)  # Cloud Controller also logs app events to the app's stream
        if line:
            self.logs.emit(app.guid, "API", 0, "OUT", line)
        return rec

    def events(self, app_guids: list[str] | None = None, types: list[str] | None = None) -> list[AuditEvent]:
        if app_guids and len(app_guids) == 1:
            found = self.store.find(AuditEvent, app_guid=app_guids[0])
        else:
            found = self.store.find(AuditEvent)
            if app_guids:
                found = [e for e in found if e.target.guid in app_guids]
        if types:
            found = [e for e in found if e.type in types]
        return found

    # --------------------------------------------------------------- routes

    def routes(self, app_guid: str | None = None) -> list[Route]:
        """The routes of an app, or every route."""
        return self.store.find(Route, app_guid=app_guid)

    def add_route(self, app_guid: str, url: str) -> Route:
        host, _, path = url.partition("/")
        host = host.lower()
        name = host + ("/" + path if path else "")
        clash = self.store.first(Route, name=name)
        if clash and clash.app_guid != app_guid:
            other = self.store.maybe(App, clash.app_guid)
            raise unprocessable(f"Route '{host}' is already in use by app '{other and other.name}'.")
        if clash:
            return clash
        route = self.store.insert(Route(app_guid=app_guid, name=name, host=host, path=("/" + path) if path else ""))
        self._tell_routes_changed()
        return route

    def remove_routes(self, app_guid: str) -> None:
        for r in self.routes(app_guid):
            self.store.delete(Route, r.guid)
        self._tell_routes_changed()

    # -------------------------------------------------------------- manifest

    def apply_manifest(self, body: bytes, content_type: str = "application/x-yaml") -> list[App]:
        """Server-side manifest: create or update apps, env, processes, sidecars and routes.

        Takes manifest YAML (as Cloud Controller does), or the JSON the localcf CLI sends after it
        has validated the manifest file itself (so that its errors can name the file's lines).
        """
        try:
            if content_type.startswith("application/json"):
                payload = json.loads(body)
                apps = [manifest_mod.from_wire(a) for a in payload.get("applications") or []]
            else:
                apps = manifest_mod.loads(body.decode("utf-8", "replace"), source="manifest",
                                          base_dir=".", check_paths=False).apps
        except manifest_mod.ManifestError as e:
            raise unprocessable(str(e)) from None
        except (ValueError, TypeError, AttributeError) as e:
            raise unprocessable(f"The manifest could not be read: {e}") from None
        return [self._apply_app(am) for am in apps]

    def _apply_app(self, am: manifest_mod.AppManifest) -> App:
        with self._lock:
            known = self.app_by_name(am.name)
            host = None
            if not am.no_route and not am.routes and not (known and self.routes(known.guid)):
                try:  # before anything is written: a name that cannot be a host fails the whole apply
                    host = manifest_mod.default_route_host(am.name)
                except manifest_mod.ManifestError as e:
                    raise unprocessable(f"For application '{am.name}': {e.message}") from None
            app = known or self.create_app(am.name)
            for bp in am.buildpacks or []:
                self.check_buildpack(bp)
            changes: dict[str, object] = {}
            if am.buildpacks is not None:
                changes["buildpacks"] = list(am.buildpacks)
            if am.stack:
                changes["stack"] = am.stack
            if am.env:
                changes["env"] = {**app.env, **{k: str(v) for k, v in am.env.items()}}
            if changes:
                app = self.store.update(App, app.guid, **changes)
            wanted = _wanted_processes(am)
            # validate sidecar memory against the memory the processes will have
            for sc in am.sidecars:
                for ptype in sc.process_types:
                    proc = self.process(app.guid, ptype)
                    spec = wanted.get(ptype)
                    pmem = (spec.memory if spec else None) or (proc.memory_in_mb if proc else None)
                    if sc.memory is not None and pmem and sc.memory >= pmem:
                        raise unprocessable(
                            f'The memory allocation defined is too large to run with the dependent "{ptype}" process')
            for ptype, p in wanted.items():
                proc = self.ensure_process(app.guid, ptype)
                upd: dict[str, object] = {}
                for spec_field, proc_field in _PROCESS_FIELDS:
                    value = getattr(p, spec_field)
                    if value is not None:
                        upd[proc_field] = value
                if upd:
                    self.update_process(proc.guid, **upd)
            for sc in am.sidecars:
                self.upsert_sidecar(app.guid, sc.name, sc.command, sc.process_types, sc.memory, origin="user")
            # routes
            if am.no_route:
                self.remove_routes(app.guid)
            elif am.routes:
                for r in am.routes:
                    self.add_route(app.guid, r.route)
            elif host is not None:
                if am.random_route:
                    host += "-" + _random_words()
                self.add_route(app.guid, f"{host}.{DEFAULT_DOMAIN}")
            self.audit("audit.app.apply_manifest", app, {"request": {"manifest": "[PRIVATE DATA HIDDEN]"}})
            return self.app_by_guid(app.guid)


# manifest process field -> the process record's field
_PROCESS_FIELDS = (
    ("command", "user_command"), ("memory", "memory_in_mb"), ("disk_quota", "disk_in_mb"),
    ("instances", "instances"), ("health_check_type", "health_check_type"),
    ("health_check_http_endpoint", "health_check_endpoint"), ("timeout", "health_check_timeout"),
    ("health_check_invocation_timeout", "health_check_invocation_timeout"),
)


def _wanted_processes(am: manifest_mod.AppManifest) -> dict[str, manifest_mod.ProcessSpec]:
    """What the manifest sets per process type: the app-level keys describe web, then each
    `processes:` entry's set keys override."""
    wanted: dict[str, manifest_mod.ProcessSpec] = {}
    names = [f.name for f in fields(manifest_mod.ProcessSpec) if f.name != "type"]
    web = {n: getattr(am, n) for n in names}
    if any(v is not None for v in web.values()):
        wanted["web"] = manifest_mod.ProcessSpec(type="web", **web)
    for p in am.processes:
        base = wanted.get(p.type) or manifest_mod.ProcessSpec(type=p.type)
        for n in names:
            value = getattr(p, n)
            if value is not None:
                setattr(base, n, value)
        wanted[p.type] = base
    return wanted


def _new_version() -> str:
    """A process version: a new guid whenever what runs changes (CAPI's process `version`)."""
    return new_guid()


_WORDS_A = ("brave", "quiet", "lucky", "shiny", "rapid", "happy", "calm", "bold", "fuzzy", "witty")
_WORDS_B = ("otter", "panda", "lynx", "heron", "bison", "koala", "gecko", "tapir", "ibex", "wombat")


def _random_words() -> str:
    return f"{random.choice(_WORDS_A)}-{random.choice(_WORDS_B)}-{random.randint(10, 99)}"
