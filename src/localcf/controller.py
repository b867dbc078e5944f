"""The Cloud Controller: resources, their rules, and their CAPI v3 JSON shapes.

The HTTP layer (`localcf.api`) only routes requests here. Errors are `ApiError`s carrying CAPI's
error code, title and detail, so the client can print what `cf` prints.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import threading
from pathlib import Path
from typing import Any

from . import blobs
from . import manifest as manifest_mod
from .buildpacks import is_url, zip_dir
from .logstream import LogStream
from .paths import StateDir
from .store import NotFound, Store, new_guid

ORG_NAME = "localcf"
ORG_GUID = "7ce1f3a5-0000-4000-8000-00000000c0de"
SPACE_NAME = "dev"
SPACE_GUID = "5bace5ba-0000-4000-8000-00000000c0de"
USER_NAME = "admin"
USER_GUID = "ad314ad3-0000-4000-8000-00000000c0de"
STACK = "cflinuxfs4"
DEFAULT_DOMAIN = "apps.localhost"
DEFAULT_MEMORY_MB = 1024
DEFAULT_DISK_MB = 1024
DEFAULT_HEALTH_TIMEOUT = 60


class ApiError(Exception):
    """A CAPI error: `{"errors": [{"code", "title", "detail"}]}` with an HTTP status."""

    def __init__(self, status: int, code: int, title: str, detail: str):
        super().__init__(detail)
        self.status, self.code, self.title, self.detail = status, code, title, detail

    def body(self) -> dict[str, Any]:
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


class Controller:
    """Every resource rule of the embedded Cloud Controller."""

    def __init__(self, state: StateDir, store: Store, logs: LogStream):
        self.state = state
        self.store = store
        self.logs = logs
        self.base_url = ""  # set by the API once it knows its port
        self._lock = threading.RLock()
        self.stager: Any = None  # set by the daemon (localcf.stager.Stager)
        self.cell: Any = None  # set by the daemon (localcf.cell.Cell)

    # ------------------------------------------------------------------ apps

    def app_by_guid(self, guid: str) -> dict[str, Any]:
        try:
            return self.store.get("apps", guid)
        except NotFound:
            raise not_found("App") from None

    def app_by_name(self, name: str) -> dict[str, Any] | None:
        return self.store.first("apps", name=name)

    def create_app(self, name: str, buildpacks: list[str] | None = None,
                   env: dict[str, str] | None = None, stack: str | None = None) -> dict[str, Any]:
        with self._lock:
            if not name:
                raise unprocessable("Name must not be empty")
            if self.app_by_name(name):
                raise unprocessable(f"App with the name '{name}' already exists.")
            for bp in buildpacks or []:
                self.check_buildpack(bp)
            app = self.store.insert("apps", {
                "name": name, "state": "STOPPED", "buildpacks": list(buildpacks or []),
                "stack": stack or STACK, "env": dict(env or {}), "droplet_guid": None,
            })
            self.store.insert("processes", {
                "app_guid": app["guid"], "name": "web", "type": "web", "command": None,
                "user_command": None, "instances": 1, "memory_in_mb": DEFAULT_MEMORY_MB,
                "disk_in_mb": DEFAULT_DISK_MB, "health_check_type": "port",
                "health_check_endpoint": None, "health_check_timeout": None,
                "health_check_invocation_timeout": None, "version": _new_version(),
            })
            self.audit("audit.app.create", app, {"request": {"name": name}})
            return app

    def update_app(self, guid: str, **changes: Any) -> dict[str, Any]:
        return self.store.update("apps", guid, **changes)

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
            for kind in ("processes", "sidecars", "packages", "builds", "droplets", "routes"):
                for rec in self.store.find(kind, app_guid=guid):
                    self.store.delete(kind, rec["guid"])
            self.store.delete("apps", guid)
        self.audit("audit.app.delete-request", app, {"request": {"recursive": True}})
        self.store.keep_reserve()

    def set_env(self, guid: str, changes: dict[str, str | None]) -> dict[str, Any]:
        """PATCH semantics: a None value removes the variable."""
        app = self.app_by_guid(guid)
        env = dict(app.get("env") or {})
        for k, v in changes.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
        app = self.store.update("apps", guid, env=env)
        self.audit("audit.app.update", app, {"request": {"environment_variables": "[PRIVATE DATA HIDDEN]"}})
        return app

    # ------------------------------------------------------------- processes

    def processes(self, app_guid: str) -> list[dict[str, Any]]:
        return self.store.find("processes", app_guid=app_guid)

    def process(self, app_guid: str, ptype: str) -> dict[str, Any] | None:
        return self.store.first("processes", app_guid=app_guid, name=ptype)

    def process_by_guid(self, guid: str) -> dict[str, Any]:
        try:
            return self.store.get("processes", guid)
        except NotFound:
            raise not_found("Process") from None

    def ensure_process(self, app_guid: str, ptype: str) -> dict[str, Any]:
        proc = self.process(app_guid, ptype)
        if proc:
            return proc
        return self.store.insert("processes", {
            "app_guid": app_guid, "name": ptype, "type": ptype, "command": None, "user_command": None,
            "instances": 1 if ptype == "web" else 0, "memory_in_mb": DEFAULT_MEMORY_MB,
            "disk_in_mb": DEFAULT_DISK_MB, "health_check_type": "port" if ptype == "web" else "process",
            "health_check_endpoint": None, "health_check_timeout": None,
            "health_check_invocation_timeout": None, "version": _new_version(),
        })

    def update_process(self, proc_guid: str, **changes: Any) -> dict[str, Any]:
        proc = self.process_by_guid(proc_guid)
        if "memory_in_mb" in changes:
            self.check_sidecar_memory(proc["app_guid"], proc["type"], changes["memory_in_mb"])
        if any(k in changes for k in ("user_command", "memory_in_mb", "disk_in_mb", "health_check_type",
                                      "health_check_endpoint")):
            changes["version"] = _new_version()
        return self.store.update("processes", proc_guid, **changes)

    def effective_command(self, proc: dict[str, Any]) -> str | None:
        """The user's command, else the one the current droplet detected for this type."""
        if proc.get("user_command"):
            return proc["user_command"]
        app = self.store.maybe("apps", proc["app_guid"])
        droplet = self.store.maybe("droplets", app and app.get("droplet_guid"))
        if droplet:
            return (droplet.get("process_types") or {}).get(proc["type"])
        return None

    # -------------------------------------------------------------- sidecars

    def sidecars(self, app_guid: str) -> list[dict[str, Any]]:
        return self.store.find("sidecars", app_guid=app_guid)

    def check_sidecar_memory(self, app_guid: str, ptype: str, process_memory: int,
                             sidecars: list[dict[str, Any]] | None = None) -> None:
        """Sidecar memory is carved out of the process memory, so it must be strictly less."""
        for sc in sidecars if sidecars is not None else self.sidecars(app_guid):
            mem = sc.get("memory_in_mb")
            if mem is not None and ptype in sc.get("process_types", []) and mem >= process_memory:
                raise unprocessable(
                    f'The memory allocation defined is too large to run with the dependent "{ptype}" process')

    def upsert_sidecar(self, app_guid: str, name: str, command: str, process_types: list[str],
                       memory_in_mb: int | None, origin: str = "user") -> dict[str, Any]:
        if not name:
            raise unprocessable("Name can't be blank")
        if not command:
            raise unprocessable("Command can't be blank")
        if not process_types:
            raise unprocessable("Process types must have at least 1 process_type")
        for ptype in process_types:
            proc = self.process(app_guid, ptype)
            if proc and memory_in_mb is not None:
                self.check_sidecar_memory(app_guid, ptype, proc["memory_in_mb"],
                                          [{"memory_in_mb": memory_in_mb, "process_types": [ptype]}])
        fields = {"command": command, "process_types": sorted(set(process_types)),
                  "memory_in_mb": memory_in_mb, "origin": origin}
        existing = self.store.first("sidecars", app_guid=app_guid, name=name)
        if existing:
            return self.store.update("sidecars", existing["guid"], **fields)
        return self.store.insert("sidecars", {"app_guid": app_guid, "name": name, **fields})

    def sidecar_conflicts(self, app_guid: str, droplet_sidecars: list[dict[str, Any]]) -> str | None:
        for sc in droplet_sidecars:
            user = self.store.first("sidecars", app_guid=app_guid, name=sc["name"])
            if user and user.get("origin") == "user":
                return (f"Buildpack defined sidecar '{sc['name']}' conflicts with an existing "
                        f"user-defined sidecar. Consider renaming '{sc['name']}'.")
        return None

    def sync_buildpack_sidecars(self, app_guid: str, droplet: dict[str, Any]) -> None:
        """Buildpack sidecars are deleted and recreated from each newly assigned droplet."""
        conflict = self.sidecar_conflicts(app_guid, droplet.get("sidecars") or [])
        if conflict:
            raise unprocessable(conflict)
        with self.store.transaction():
            for sc in self.sidecars(app_guid):
                if sc.get("origin") == "buildpack":
                    self.store.delete("sidecars", sc["guid"])
            for sc in droplet.get("sidecars") or []:
                self.store.insert("sidecars", {
                    "app_guid": app_guid, "name": sc["name"], "command": sc["command"],
                    "process_types": sorted(sc.get("process_types") or ["web"]),
                    "memory_in_mb": sc.get("memory"), "origin": "buildpack",
                })

    # ------------------------------------------------------------ buildpacks

    def buildpacks(self) -> list[dict[str, Any]]:
        return self.store.find("buildpacks", order="position")

    def buildpack_by_name(self, name: str) -> dict[str, Any] | None:
        return self.store.first("buildpacks", name=name)

    def check_buildpack(self, ref: str) -> None:
        """A buildpack reference must name an admin buildpack, or be a URL or a local path."""
        if ref in ("", "default", "null"):
            return
        if self.buildpack_by_name(ref) or is_url(ref) or ref.startswith("/"):
            return
        raise unknown_buildpack(ref)

    def create_buildpack(self, name: str, position: int | None = None, enabled: bool = True,
                         locked: bool = False, stack: str | None = STACK) -> dict[str, Any]:
        with self._lock:
            if not re.fullmatch(r"[\w\-]+", name or ""):
                raise unprocessable("Name can only contain alphanumeric characters")
            if self.buildpack_by_name(name):
                raise unprocessable(f"The buildpack name {name} is already in use for the stack {stack}")
            bps = self.buildpacks()
            pos = len(bps) + 1 if not position or position > len(bps) else max(1, position)
            bp = self.store.insert("buildpacks", {
                "name": name, "position": 10**6, "enabled": enabled, "locked": locked,
                "stack": stack, "filename": None, "state": "AWAITING_UPLOAD", "checksum": None,
            })
            self._reposition(bp["guid"], pos)
            return self.store.get("buildpacks", bp["guid"])

    def _reposition(self, guid: str, position: int) -> None:
        others = [b for b in self.buildpacks() if b["guid"] != guid]
        position = max(1, min(position, len(others) + 1))
        others.insert(position - 1, {"guid": guid})
        with self.store.transaction():
            for i, b in enumerate(others, start=1):
                self.store.update("buildpacks", b["guid"], position=i)

    def update_buildpack(self, guid: str, **changes: Any) -> dict[str, Any]:
        bp = self.store.get("buildpacks", guid)
        position = changes.pop("position", None)
        if changes:
            bp = self.store.update("buildpacks", guid, **changes)
        if position is not None:
            self._reposition(guid, int(position))
            bp = self.store.get("buildpacks", guid)
        return bp

    def upload_buildpack(self, guid: str, filename: str, data: bytes) -> dict[str, Any]:
        bp = self.store.get("buildpacks", guid)
        if bp.get("locked"):
            raise unprocessable("The buildpack is locked")
        self._write_blob(self.state.buildpacks / f"{guid}.zip", data, "buildpack")
        return self.store.update("buildpacks", guid, filename=Path(filename).name, state="READY",
                                 checksum=hashlib.sha256(data).hexdigest())

    def install_buildpack_dir(self, name: str, directory: Path, position: int | None = None) -> dict[str, Any]:
        """Install a buildpack directory as an admin buildpack (used for the preinstalled ones)."""
        bp = self.create_buildpack(name, position)
        zpath = self.state.buildpacks / f"{bp['guid']}.upload"
        zip_dir(directory, zpath)
        try:
            return self.upload_buildpack(bp["guid"], f"{name}.zip", zpath.read_bytes())
        finally:
            zpath.unlink(missing_ok=True)

    def delete_buildpack(self, guid: str) -> None:
        self.store.get("buildpacks", guid)
        self.store.delete("buildpacks", guid)
        (self.state.buildpacks / f"{guid}.zip").unlink(missing_ok=True)
        self._renumber()

    def _renumber(self) -> None:
        with self.store.transaction():
            for i, b in enumerate(self.buildpacks(), start=1):
                if b["position"] != i:
                    self.store.update("buildpacks", b["guid"], position=i)

    # ------------------------------------------------------------- packages

    def create_package(self, app_guid: str) -> dict[str, Any]:
        self.app_by_guid(app_guid)
        return self.store.insert("packages", {"app_guid": app_guid, "type": "bits",
                                              "state": "AWAITING_UPLOAD", "checksum": None})

    def upload_package(self, guid: str, data: bytes) -> dict[str, Any]:
        pkg = self.store.get("packages", guid)
        self._write_blob(self.package_path(pkg), data, "package")
        return self.store.update("packages", guid, state="READY",
                                 checksum=hashlib.sha256(data).hexdigest(), size=len(data))

    def _write_blob(self, path: Path, data: bytes, what: str) -> None:
        """Store a blob whole or not at all; one that does not fit is refused before writing."""
        try:
            blobs.write_atomically(path, data)
        except blobs.NoSpace as e:
            raise not_enough_space(what, e.needed, path.parent, e.free) from None

    def package_path(self, pkg: dict[str, Any]) -> Path:
        return self.state.packages / f"{pkg['app_guid']}-{pkg['guid']}.zip"

    def droplet_path(self, droplet: dict[str, Any]) -> Path:
        return self.state.droplets / f"{droplet['app_guid']}-{droplet['guid']}.tgz"

    # --------------------------------------------------------------- builds

    def create_build(self, package_guid: str, buildpacks: list[str] | None = None,
                     stack: str | None = None, staging_memory_in_mb: int | None = None) -> dict[str, Any]:
        try:
            pkg = self.store.get("packages", package_guid)
        except NotFound:
            raise not_found("Package") from None
        if pkg["state"] != "READY":
            raise unprocessable("Unable to stage package: the package is not uploaded yet")
        app = self.app_by_guid(pkg["app_guid"])
        bps = list(buildpacks) if buildpacks is not None else list(app.get("buildpacks") or [])
        bps = [b for b in bps if b not in ("", "default", "null")]
        for bp in bps:
            self.check_buildpack(bp)
        build = self.store.insert("builds", {
            "app_guid": app["guid"], "package_guid": package_guid, "state": "STAGING", "error": None,
            "buildpacks": bps, "stack": stack or app.get("stack") or STACK, "droplet_guid": None,
        })
        self.audit("audit.app.build.create", app, {"package_guid": package_guid, "build_guid": build["guid"]})
        self.stager.stage(build)
        return build

    # ------------------------------------------------------------- droplets

    def set_current_droplet(self, app_guid: str, droplet_guid: str) -> dict[str, Any]:
        app = self.app_by_guid(app_guid)
        try:
            droplet = self.store.get("droplets", droplet_guid)
        except NotFound:
            raise unprocessable("Unable to assign current droplet. Ensure the droplet exists and belongs to this app.") from None
        if droplet["app_guid"] != app_guid or droplet.get("state") != "STAGED":
            raise unprocessable("Unable to assign current droplet. Ensure the droplet exists and belongs to this app.")
        self.sync_buildpack_sidecars(app_guid, droplet)
        for ptype in (droplet.get("process_types") or {}):
            self.ensure_process(app_guid, ptype)
        for proc in self.processes(app_guid):
            self.store.update("processes", proc["guid"], version=_new_version())
        app = self.store.update("apps", app_guid, droplet_guid=droplet_guid)
        self.audit("audit.app.droplet.mapped", app, {"request": {"droplet_guid": droplet_guid}})
        return app

    # --------------------------------------------------------------- events

    def audit(self, etype: str, app: dict[str, Any], data: dict[str, Any],
              actor: dict[str, str] | None = None) -> dict[str, Any]:
        return self.store.insert("audit_events", {
            "app_guid": app["guid"], "name": etype, "type": etype,
            "actor": actor or {"guid": USER_GUID, "type": "user", "name": USER_NAME},
            "target": {"guid": app["guid"], "type": "app", "name": app["name"]},
            "data": data,
        })

    def events(self, app_guid: str | None = None, types: list[str] | None = None) -> list[dict[str, Any]]:
        found = self.store.find("audit_events", app_guid=app_guid) if app_guid else self.store.find("audit_events")
        if types:
            found = [e for e in found if e["type"] in types]
        return found

    # --------------------------------------------------------------- routes

    def routes(self, app_guid: str) -> list[dict[str, Any]]:
        return self.store.find("routes", app_guid=app_guid)

    def add_route(self, app_guid: str, url: str) -> dict[str, Any]:
        host, _, path = url.partition("/")
        host = host.lower()
        clash = self.store.first("routes", name=host + ("/" + path if path else ""))
        if clash and clash["app_guid"] != app_guid:
            other = self.store.maybe("apps", clash["app_guid"])
            raise unprocessable(f"Route '{host}' is already in use by app '{other and other['name']}'.")
        if clash:
            return clash
        return self.store.insert("routes", {"app_guid": app_guid, "name": host + ("/" + path if path else ""),
                                            "host": host, "path": ("/" + path) if path else ""})

    # -------------------------------------------------------------- manifest

    def apply_manifest(self, body: bytes, content_type: str = "application/x-yaml") -> list[dict[str, Any]]:
        """Server-side manifest: create or update apps, env, processes, sidecars and routes.

        Takes manifest YAML (as Cloud Controller does), or the JSON the localcf CLI sends after it
        has validated the manifest file itself (so that its errors can name the file's lines).
        """
        try:
            if content_type.startswith("application/json"):
                import json
                payload = json.loads(body)
                apps = [manifest_mod.AppManifest.from_dict(a) for a in payload.get("applications") or []]
            else:
                apps = manifest_mod.loads(body.decode("utf-8", "replace"), source="manifest",
                                          base_dir=".", check_paths=False).apps
        except manifest_mod.ManifestError as e:
            raise unprocessable(str(e)) from None
        except (ValueError, TypeError, AttributeError) as e:
            raise unprocessable(f"The manifest could not be read: {e}") from None
        return [self._apply_app(am) for am in apps]

    def _apply_app(self, am: Any) -> dict[str, Any]:
        spec = am.to_dict()
        with self._lock:
            app = self.app_by_name(spec["name"]) or self.create_app(spec["name"])
            bps = spec.get("buildpacks")
            for bp in bps or []:
                self.check_buildpack(bp)
            changes: dict[str, Any] = {}
            if bps is not None:
                changes["buildpacks"] = list(bps)
            if spec.get("stack"):
                changes["stack"] = spec["stack"]
            if spec.get("env"):
                changes["env"] = {**(app.get("env") or {}), **{k: str(v) for k, v in spec["env"].items()}}
            if changes:
                app = self.store.update("apps", app["guid"], **changes)
            # processes: the app-level keys describe web
            wanted: dict[str, dict[str, Any]] = {}
            web = {k: spec.get(k) for k in ("command", "memory", "disk_quota", "instances",
                                            "health_check_type", "health_check_http_endpoint",
                                            "timeout", "health_check_invocation_timeout")}
            if any(v is not None for v in web.values()):
                wanted["web"] = web
            for p in spec.get("processes") or []:
                wanted.setdefault(p["type"], {}).update({k: v for k, v in p.items() if v is not None})
            sidecars = spec.get("sidecars") or []
            # validate sidecar memory against the memory the processes will have
            for sc in sidecars:
                for ptype in sc.get("process_types") or []:
                    proc = self.process(app["guid"], ptype)
                    pmem = (wanted.get(ptype) or {}).get("memory") or (proc and proc["memory_in_mb"])
                    if sc.get("memory") is not None and pmem and sc["memory"] >= pmem:
                        raise unprocessable(
                            f'The memory allocation defined is too large to run with the dependent "{ptype}" process')
            for ptype, p in wanted.items():
                proc = self.ensure_process(app["guid"], ptype)
                upd: dict[str, Any] = {}
                if p.get("command") is not None:
                    upd["user_command"] = p["command"]
                if p.get("memory") is not None:
                    upd["memory_in_mb"] = p["memory"]
                if p.get("disk_quota") is not None:
                    upd["disk_in_mb"] = p["disk_quota"]
                if p.get("instances") is not None:
                    upd["instances"] = p["instances"]
                if p.get("health_check_type") is not None:
                    upd["health_check_type"] = p["health_check_type"]
                if p.get("health_check_http_endpoint") is not None:
                    upd["health_check_endpoint"] = p["health_check_http_endpoint"]
                if p.get("timeout") is not None:
                    upd["health_check_timeout"] = p["timeout"]
                if p.get("health_check_invocation_timeout") is not None:
                    upd["health_check_invocation_timeout"] = p["health_check_invocation_timeout"]
                if upd:
                    self.update_process(proc["guid"], **upd)
            for sc in sidecars:
                self.upsert_sidecar(app["guid"], sc["name"], sc["command"], sc["process_types"],
                                    sc.get("memory"), origin="user")
            # routes
            if spec.get("no_route"):
                for r in self.routes(app["guid"]):
                    self.store.delete("routes", r["guid"])
            elif spec.get("routes"):
                for r in spec["routes"]:
                    self.add_route(app["guid"], r["route"] if isinstance(r, dict) else r)
            elif not self.routes(app["guid"]):
                host = spec["name"].lower().replace("_", "-").replace(" ", "-")
                if spec.get("random_route"):
                    host += "-" + _random_words()
                self.add_route(app["guid"], f"{host}.{DEFAULT_DOMAIN}")
            self.audit("audit.app.apply_manifest", app, {"request": {"manifest": "[PRIVATE DATA HIDDEN]"}})
            return self.app_by_guid(app["guid"])


def _new_version() -> str:
    """A process version: a new guid whenever what runs changes (CAPI's process `version`)."""
    return new_guid()


_WORDS_A = ("brave", "quiet", "lucky", "shiny", "rapid", "happy", "calm", "bold", "fuzzy", "witty")
_WORDS_B = ("otter", "panda", "lynx", "heron", "bison", "koala", "gecko", "tapir", "ibex", "wombat")


def _random_words() -> str:
    import random
    return f"{random.choice(_WORDS_A)}-{random.choice(_WORDS_B)}-{random.randint(10, 99)}"

