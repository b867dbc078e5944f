"""The records of the embedded Cloud Controller, one dataclass per resource kind.

The store reads and writes these (`localcf.store`), the controller and the cell work on them, and
`localcf.presenters` turns them into CAPI v3 JSON, the only place that knows the wire shapes. Field
names follow Cloud Controller's where it has one.

Every stored record has `guid`, `created_at` and `updated_at` (the store assigns them) and belongs to
one table, its `KIND`. A record's other fields are kept as JSON in the table's `data` column; a
field missing from a stored row (written by an older localcf) takes its default, an unknown one is
ignored, so old state dirs keep working.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar, Self

# localcf has exactly one org and one space; their guids are fixed (in localcf.constants) so that
# VCAP_APPLICATION, the API and the logs agree across daemon restarts.
from .constants import ORG_GUID, ORG_NAME, SPACE_GUID, SPACE_NAME, STACK  # noqa: E402,F401  (re-exported)
from .jsondoc import JsonObject

# The JSON kept in a table's `data` column, and what a record is read back from.
# JSON boundary: SQLite stores the record's fields as one JSON object.



def _known(cls: type, data: JsonObject) -> JsonObject:
    """The entries of `data` that are fields of dataclass `cls`."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass(kw_only=True)
class Record:
    """What every stored record has."""

    KIND: ClassVar[str] = ""
    guid: str = ""
    created_at: str = ""
    updated_at: str = ""

    # -- the indexed columns the store can search by -------------------------------------------

    @property
    def index_app_guid(self) -> str | None:
        value = getattr(self, "app_guid", None)
        return value if isinstance(value, str) else None

    @property
    def index_name(self) -> str | None:
        value = getattr(self, "name", None)
        return value if isinstance(value, str) else None

    @property
    def index_position(self) -> int | None:
        return None

    # -- (de)serialisation of the `data` column -------------------------------------------------

    def to_data(self) -> JsonObject:
        data = asdict(self)
        for key in ("guid", "created_at", "updated_at"):
            data.pop(key, None)
        return data

    @classmethod
    def from_data(cls, data: JsonObject, guid: str, created_at: str, updated_at: str) -> Self:
        values = {k: v for k, v in _known(cls, data).items() if k not in ("guid", "created_at", "updated_at")}
        values.update(cls._nested(values))
        return cls(guid=guid, created_at=created_at, updated_at=updated_at, **values)

    @classmethod
    def _nested(cls, values: JsonObject) -> JsonObject:
        """Turn nested JSON objects back into their dataclasses (kinds with nested records)."""
        return {}

    def changed(self, **changes: object) -> Self:
        """A copy with some fields changed; an unknown field name is an error."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {', '.join(sorted(unknown))}")
        new = copy.copy(self)
        for name, value in changes.items():
            setattr(new, name, value)
        return new


# ----------------------------------------------------------------------------------------- apps

@dataclass(kw_only=True)
class App(Record):
    """An app: its desired state, its buildpacks and env, and the droplet it runs."""

    KIND: ClassVar[str] = "apps"
    name: str
    state: str = "STOPPED"  # STARTED | STOPPED, the desired state
    buildpacks: list[str] = field(default_factory=list)
    stack: str = STACK
    env: dict[str, str] = field(default_factory=dict)  # the app's own env (`cf set-env`, manifest `env:`)
    droplet_guid: str | None = None  # the current droplet


@dataclass(kw_only=True)
class Process(Record):
    """A process type of an app (`web`, `worker`, ...) and how many instances of it run."""

    KIND: ClassVar[str] = "processes"
    app_guid: str
    type: str
    user_command: str | None = None  # the user's command; else the droplet's for this type
    instances: int = 1
    memory_in_mb: int = 1024
    disk_in_mb: int = 1024
    health_check_type: str = "port"  # port | process | http
    health_check_endpoint: str | None = None
    health_check_timeout: int | None = None
    health_check_invocation_timeout: int | None = None
    version: str = ""  # a new guid whenever what runs changes

    @property
    def index_name(self) -> str | None:
        return self.type


@dataclass(kw_only=True)
class Sidecar(Record):
    """A sidecar: a command run beside the given process types, in the same container."""

    KIND: ClassVar[str] = "sidecars"
    app_guid: str
    name: str
    command: str
    process_types: list[str] = field(default_factory=list)
    memory_in_mb: int | None = None  # carved out of the process's memory; None: not set
    origin: str = "user"  # user | buildpack


@dataclass(kw_only=True)
class Route(Record):
    """A route mapped to an app's web process: `host` plus an optional path prefix."""

    KIND: ClassVar[str] = "routes"
    app_guid: str
    name: str  # the URL without scheme: host + path, what `cf routes` shows
    host: str  # the full host name, e.g. `myapp.apps.localhost`
    path: str = ""  # "" or "/prefix"


# ------------------------------------------------------------------------- packages to droplets

@dataclass(kw_only=True)
class Package(Record):
    """The app's bits as uploaded (a zip blob named by the app and package guids)."""

    KIND: ClassVar[str] = "packages"
    app_guid: str
    type: str = "bits"
    state: str = "AWAITING_UPLOAD"  # AWAITING_UPLOAD | READY
    checksum: str | None = None  # sha256 of the blob
    size: int | None = None

    @property
    def index_name(self) -> str | None:
        return None


@dataclass(kw_only=True)
class Build(Record):
    """One staging of a package: STAGING, then STAGED with a droplet or FAILED with an error."""

    KIND: ClassVar[str] = "builds"
    app_guid: str
    package_guid: str
    state: str = "STAGING"  # STAGING | STAGED | FAILED
    error: str | None = None  # Cloud Controller's text, e.g. `BuildpackCompileFailed - ...`
    buildpacks: list[str] = field(default_factory=list)  # given explicitly: no detection
    stack: str = STACK
    droplet_guid: str | None = None


@dataclass(kw_only=True)
class DropletSidecar:
    """A sidecar a buildpack declared (launch.yml `sidecar_for`), as the builder reported it."""

    name: str
    command: str
    process_types: list[str] = field(default_factory=lambda: ["web"])
    memory: int | None = None  # MB


@dataclass(kw_only=True)
class DropletBuildpack:
    """A buildpack that took part in staging, named as CAPI's droplet `buildpacks` entries."""

    name: str | None = None  # the key the build used (admin name or URL)
    detect_output: str | None = None
    buildpack_name: str | None = None
    version: str | None = None


@dataclass(kw_only=True)
class Droplet(Record):
    """A staged app (a .tgz blob) with what the buildpacks detected."""

    KIND: ClassVar[str] = "droplets"
    app_guid: str
    package_guid: str | None = None
    build_guid: str | None = None
    state: str = "STAGED"  # STAGED | FAILED
    error: str | None = None
    process_types: dict[str, str] = field(default_factory=dict)  # type -> detected start command
    execution_metadata: str = ""
    detected_buildpack: str | None = None
    sidecars: list[DropletSidecar] = field(default_factory=list)
    buildpacks: list[DropletBuildpack] = field(default_factory=list)
    stack: str = STACK
    checksum: str | None = None
    size: int | None = None

    @property
    def index_name(self) -> str | None:
        return None

    @classmethod
    def _nested(cls, values: JsonObject) -> JsonObject:
        return {"sidecars": [s if isinstance(s, DropletSidecar) else DropletSidecar(**_known(DropletSidecar, s))
                             for s in values.get("sidecars") or []],
                "buildpacks": [b if isinstance(b, DropletBuildpack) else DropletBuildpack(**_known(DropletBuildpack, b))
                               for b in values.get("buildpacks") or []]}


# ---------------------------------------------------------------------------------- buildpacks

@dataclass(kw_only=True)
class Buildpack(Record):
    """An admin buildpack: a zip blob named by its guid, tried in `position` order."""

    KIND: ClassVar[str] = "buildpacks"
    name: str
    position: int = 1
    enabled: bool = True
    locked: bool = False
    stack: str | None = STACK
    filename: str | None = None
    state: str = "AWAITING_UPLOAD"  # AWAITING_UPLOAD | READY
    checksum: str | None = None

    @property
    def index_position(self) -> int | None:
        return self.position


# -------------------------------------------------------------------------------------- events

@dataclass(kw_only=True)
class Actor:
    """Who did it (`actor`) or what it was done to (`target`) in an audit event."""

    guid: str
    type: str  # user | app | process
    name: str


@dataclass(kw_only=True)
class AuditEvent(Record):
    """An audit event, as Cloud Controller records them (`cf events`)."""

    KIND: ClassVar[str] = "audit_events"
    app_guid: str
    type: str
    actor: Actor
    target: Actor
    # JSON boundary: an event's metadata is free-form JSON, its shape chosen per event type
    # (as in Cloud Controller's `metadata` column), and served as is.
    data: JsonObject = field(default_factory=dict)

    @property
    def index_name(self) -> str | None:
        return self.type

    @classmethod
    def _nested(cls, values: JsonObject) -> JsonObject:
        return {k: v if isinstance(v, Actor) else Actor(**_known(Actor, v))
                for k, v in values.items() if k in ("actor", "target")}


@dataclass(kw_only=True)
class CrashPayload:
    """What Diego reports to Cloud Controller when an instance crashes, plus the process version
    Cloud Controller adds, in that order (the `[API]` log line renders it so)."""

    instance: str
    index: int
    cell_id: str
    reason: str  # CRASHED
    exit_description: str
    crash_count: int
    crash_timestamp: int  # ns
    version: str | None

    def as_json(self) -> JsonObject:
        """The payload as Cloud Controller keeps it in `audit.app.process.crash` (all of it)."""
        return asdict(self)


# ---------------------------------------------------------------------------------- instances

@dataclass(kw_only=True)
class InstanceStats:
    """One instance of a process as the cell sees it (`/v3/processes/:guid/stats`)."""

    type: str
    index: int
    state: str  # STARTING | RUNNING | CRASHED | DOWN
    instance_guid: str | None
    uptime: int  # seconds
    mem_quota: int  # bytes
    disk_quota: int  # bytes
    details: str | None  # why it crashed
    crash_count: int
    cpu: float = 0
    mem: int = 0
    disk: int = 0
    fds_quota: int = 16384
    host: str = "127.0.0.1"


# ----------------------------------------------------------------------------------------- logs

@dataclass(kw_only=True)
class Envelope:
    """One log line: the fields of loggregator's envelopes that the cf CLI prints."""

    app_guid: str
    timestamp: int  # ns
    source_type: str  # APP/PROC/WEB, STG, API, CELL, RTR, SSH, ...
    instance: str
    stream: str  # OUT | ERR
    message: str

    def as_json(self) -> JsonObject:
        return asdict(self)


ALL_KINDS: tuple[type[Record], ...] = (App, Process, Sidecar, Route, Package, Build, Droplet, Buildpack,
                                       AuditEvent)
