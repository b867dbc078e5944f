"""The manifest's model: the records a parsed manifest is made of, its errors, and sizes.

`AppManifest` (with its `ProcessSpec`, `SidecarSpec` and `RouteSpec`) is what the rest of localcf
works with, on both sides of the API: the command builds one from a file and `cf push` flags, the
controller applies one. `Manifest` adds where it came from and the line of every field, so checks
made elsewhere can still point at the file (`Manifest.error()`).

A field given in the manifest is a value; a field not given is None (or an empty list), so that
applying a manifest changes only what it names, as ``cf apply-manifest`` does.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..constants import HOST_MAX_LENGTH
from ..jsondoc import JsonObject

HEALTH_CHECK_TYPES = ("port", "process", "http")
ROUTE_PROTOCOLS = ("http1", "http2", "tcp")
MEMORY_FORMS = "256M, 1G, 512MB or 1024 (a bare number is megabytes)"

# Cloud Foundry's texts, reproduced character for character.
SIDECAR_MEMORY_TOO_LARGE = (
    'The memory allocation defined is too large to run with the dependent "{process_type}" process'
)
BUILDPACK_AND_BUILDPACKS = "Buildpack and Buildpacks fields cannot be used together."
DUPLICATE_PROCESS = 'Process "{process_type}" may only be present once'
BAD_ROUTE = "The route '{route}' is not a properly formed URL"
BAD_HEALTH_CHECK_TYPE = 'Health check type must be "port", "process", or "http"'
ENDPOINT_NEEDS_HTTP = 'Health check type must be "http" to set a health check HTTP endpoint'
UNRESOLVED_VARS = "Expected to find variables: {names}"

_MEMORY_RE = re.compile(r"^\s*(\d+)\s*(M|MB|G|GB|T|TB)?\s*$", re.IGNORECASE)
_UNIT_MB = {"": 1, "M": 1, "MB": 1, "G": 1024, "GB": 1024, "T": 1024 * 1024, "TB": 1024 * 1024}
ROUTE_RE = re.compile(
    r"^(?P<host>(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+)"
    r"(:(?P<port>\d{1,5}))?(?P<path>/[^\s?#]*)?$"
)
DEFAULT_ROUTE_PREFIX = "Failed to create default route from app name:"
DEFAULT_ROUTE_TOO_LONG = f"{DEFAULT_ROUTE_PREFIX} Host cannot exceed {HOST_MAX_LENGTH} characters"
DEFAULT_ROUTE_BAD_HOST = (
    f'{DEFAULT_ROUTE_PREFIX} Host must be either "*" or contain only alphanumeric characters, "_", or "-"'
)
_HOST_RE = re.compile(r"[A-Za-z0-9_-]+")

# ---------------------------------------------------------------------------------------------
# Errors


class ManifestError(ValueError):
    """A manifest problem: what was wrong (`message`), where (`file`, `line`, `field`), what to do
    (`hint`). `more` holds further problems found in the same pass; `str()` shows them all."""

    def __init__(
        self,
        message: str,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
        *,
        column: int | None = None,
        hint: str | None = None,
        more: Sequence[ManifestError] = (),
    ):
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        self.column = column
        self.hint = hint
        self.more = list(more)
        super().__init__(message)

    @property
    def location(self) -> str:
        """`file:line[:column]`, or as much of it as is known."""
        parts = [p for p in (self.file, self.line, self.column if self.line else None) if p]
        return ":".join(str(p) for p in parts)

    def one_line(self) -> str:
        """This problem alone, as `file:line: field: message; hint`."""
        text = self.message + (f"; {self.hint}" if self.hint else "")
        prefix = ": ".join(p for p in (self.location, self.field) if p)
        return f"{prefix}: {text}" if prefix else text

    def to_dict(self) -> dict:
        """A JSON-able form (for API error bodies), further problems under `more`."""
        return {"message": self.message, "file": self.file, "line": self.line, "field": self.field,
                "column": self.column, "hint": self.hint, "text": self.one_line(),
                "more": [p.to_dict() for p in self.more]}

    @property
    def problems(self) -> list[ManifestError]:
        """This problem and every further one."""
        return [self, *self.more]

    def __str__(self) -> str:
        return "\n".join(p.one_line() for p in self.problems)


def field_name(path: Sequence[str | int]) -> str:
    """`("applications", 0, "sidecars", 1, "memory")` -> `applications[0].sidecars[1].memory`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out

# ---------------------------------------------------------------------------------------------
# Sizes


class BadValue(Exception):
    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


def to_mb(value: Any) -> int:
    if isinstance(value, bool) or value is None:
        raise BadValue(f"{show_value(value)} is not a size", f"write it as {MEMORY_FORMS}")
    if isinstance(value, int):
        mb = value
    else:
        match = _MEMORY_RE.match(str(value))
        if not match:
            raise BadValue(f"{show_value(value)} is not a size localcf understands", f"write it as {MEMORY_FORMS}")
        mb = int(match.group(1)) * _UNIT_MB[(match.group(2) or "").upper()]
    if mb <= 0:
        raise BadValue(f"{show_value(value)} must be more than zero", f"write it as {MEMORY_FORMS}")
    return mb


def parse_memory(value: Any, where: str = "memory") -> int:
    """Megabytes from `256M`, `1G`, `512MB` or `1024` (bare = MB), any case.

    `where` names the value in the error (a field, a flag, or a `file:line: field` location).
    """
    try:
        return to_mb(value)
    except BadValue as bad:
        raise ManifestError(bad.message, field=where, hint=bad.hint) from None


def show_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return "a map" if isinstance(value, dict) else "a list"
    return f"'{value}'" if isinstance(value, str) else str(value)

# ---------------------------------------------------------------------------------------------
# Records


@dataclass
class ProcessSpec:
    """A `processes:` entry (or the app-level settings of the web process)."""

    type: str
    command: str | None = None
    memory: int | None = None
    """MB."""
    disk_quota: int | None = None
    """MB."""
    instances: int | None = None
    health_check_type: str | None = None
    health_check_http_endpoint: str | None = None
    timeout: int | None = None
    health_check_invocation_timeout: int | None = None



@dataclass
class SidecarSpec:
    """A `sidecars:` entry."""

    name: str
    command: str
    process_types: list[str]
    memory: int | None = None
    """MB, or None when unset (the sidecar then shares the process's memory)."""


@dataclass
class RouteSpec:
    """A `routes:` entry: `host.domain[:port][/path]`."""

    route: str
    protocol: str | None = None
    options: JsonObject | None = None

    @property
    def host(self) -> str:
        """The full hostname, `host.domain`."""
        match = ROUTE_RE.match(self.route)
        return match.group("host") if match else self.route.split("/", 1)[0]

    @property
    def port(self) -> int | None:
        """The TCP port, when the route names one."""
        match = ROUTE_RE.match(self.route)
        return int(match.group("port")) if match and match.group("port") else None

    @property
    def path(self) -> str:
        """The context path (`/api`), or `""`."""
        match = ROUTE_RE.match(self.route)
        return (match.group("path") or "") if match else ""


@dataclass
class AppManifest:
    """One entry of `applications:`. Memory and disk are in MB; None means "not given"."""

    name: str
    path: Path | None = None
    """Absolute (a manifest's relative path is resolved against the manifest's folder)."""
    buildpacks: list[str] | None = None
    """None: not given; []: auto-detect; else the buildpacks in order (the last is the final one)."""
    stack: str | None = None
    command: str | None = None
    memory: int | None = None
    disk_quota: int | None = None
    instances: int | None = None
    health_check_type: str | None = None
    health_check_http_endpoint: str | None = None
    timeout: int | None = None
    health_check_invocation_timeout: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    processes: list[ProcessSpec] = field(default_factory=list)
    sidecars: list[SidecarSpec] = field(default_factory=list)
    routes: list[RouteSpec] | None = None
    random_route: bool | None = None
    no_route: bool | None = None
    default_route: bool | None = None

    # -- the processes as Cloud Foundry will run them

    def process(self, process_type: str) -> ProcessSpec | None:
        """The `processes:` entry of that type, if the manifest has one."""
        return next((p for p in self.processes if p.type == process_type), None)

    def process_specs(self) -> list[ProcessSpec]:
        """Every process type the manifest configures, web first, the app-level settings folded
        into web (a `processes:` web entry's own values win over them)."""
        web = ProcessSpec(type="web")
        for name in _WEB_FIELDS:
            setattr(web, name, getattr(self, name))
        entry = self.process("web")
        if entry is not None:
            for name in _WEB_FIELDS:
                if getattr(entry, name) is not None:
                    setattr(web, name, getattr(entry, name))
        return [web] + [dataclasses.replace(p) for p in self.processes if p.type != "web"]

    def process_memory(self, process_type: str) -> int | None:
        """The memory (MB) the manifest gives that process type, or None when it gives none."""
        spec = next((p for p in self.process_specs() if p.type == process_type), None)
        return spec.memory if spec else None

    def sidecars_for(self, process_type: str) -> list[SidecarSpec]:
        """The sidecars attached to that process type."""
        return [s for s in self.sidecars if process_type in s.process_types]

    def sidecar_memory_problems(self) -> list[tuple[int, str]]:
        """(sidecar index, process type) for each sidecar that pushes the memory its process's
        sidecars ask for to the process's memory or beyond (where both are known)."""
        problems = []
        used: dict[str, int] = {}
        for index, sidecar in enumerate(self.sidecars):
            if sidecar.memory is None:
                continue
            for process_type in sidecar.process_types:
                limit = self.process_memory(process_type)
                if limit is None:
                    continue
                used[process_type] = used.get(process_type, 0) + sidecar.memory
                if used[process_type] >= limit:
                    problems.append((index, process_type))
                    break
        return problems

    # -- cf push flags

    def with_overrides(self, **flags: Any) -> AppManifest:
        """A copy with `cf push` flags applied, as the CLI merges them into the manifest.

        Flags: name, path, buildpacks (list), stack, command, memory, disk_quota (str like `1G`
        or int MB), instances, health_check_type, health_check_http_endpoint, timeout, no_route,
        random_route. A flag that is None is not given. Raises ManifestError naming the flag.
        """
        unknown = sorted(set(flags) - set(_OVERRIDE_FLAGS))
        if unknown:
            raise TypeError(f"unknown cf push flag(s): {', '.join(unknown)}; known: {', '.join(_OVERRIDE_FLAGS)}")
        given = {k: v for k, v in flags.items() if v is not None}
        app = copy.deepcopy(self)
        for key, value in given.items():
            flag = _OVERRIDE_FLAGS[key]
            if key in ("memory", "disk_quota"):
                value = parse_memory(value, flag)
            elif key == "health_check_type":
                value = parse_health_check_type(value, flag)
            elif key == "path":
                value = Path(value).resolve()
            elif key == "buildpacks":
                value = [value] if isinstance(value, str) else value
                value = [] if list(value) in (["default"], ["null"]) else [str(b) for b in value]
            elif key in ("instances", "timeout") and (
                isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "instances" else 1)
            ):
                raise ManifestError(f"{show_value(value)} is not a valid number", field=flag,
                                    hint="give a whole number" + (" of 0 or more" if key == "instances" else " of seconds, 1 or more"))
            setattr(app, key, value)
            # The flags are the web process's: they beat a `processes:` web entry too.
            web = app.process("web")
            if web is not None and key in _WEB_FIELDS:
                setattr(web, key, value)
        for index, process_type in app.sidecar_memory_problems():
            raise ManifestError(
                SIDECAR_MEMORY_TOO_LARGE.format(process_type=process_type),
                field=_OVERRIDE_FLAGS["memory"] if "memory" in given else None,
                hint=f"sidecar '{app.sidecars[index].name}' asks for {app.sidecars[index].memory} MB "
                     f"of the {app.process_memory(process_type)} MB of \"{process_type}\": "
                     "give the process more memory or the sidecar less",
            )
        return app

    # -- the default route

    def default_route_host(self) -> str:
        """The host of the route `cf push` makes when the manifest names none (see
        `default_route_host`). Raises ManifestError saying why the name cannot be one."""
        return default_route_host(self.name)


def default_route_host(app_name: str) -> str:
    """The host of an app's default route, as Cloud Controller derives it for `cf push` (v7/v8):
    the app name itself, which must be 1 to 63 of `A-Z a-z 0-9 _ -` (no dots, slashes, spaces or
    non-ASCII letters); a route's host is case-insensitive, so it is given in lower case.

    Otherwise ManifestError with Cloud Controller's text and a hint (give `routes:`, or
    `--no-route`), rather than a route that would never answer.
    """
    hint = ("give the app a route of your own (routes: [{route: HOST.apps.localhost}]), "
            "push it with --no-route, or rename it")
    if len(app_name) > HOST_MAX_LENGTH:
        raise ManifestError(DEFAULT_ROUTE_TOO_LONG, field="name", hint=hint)
    if not _HOST_RE.fullmatch(app_name):
        raise ManifestError(DEFAULT_ROUTE_BAD_HOST, field="name", hint=hint)
    return app_name.lower()


_WEB_FIELDS = tuple(f.name for f in dataclasses.fields(ProcessSpec) if f.name != "type")
_OVERRIDE_FLAGS = {
    "name": "APP_NAME",
    "path": "-p/--path",
    "buildpacks": "-b/--buildpack",
    "stack": "-s/--stack",
    "command": "-c/--start-command",
    "memory": "-m/--memory",
    "disk_quota": "-k/--disk",
    "instances": "-i/--instances",
    "health_check_type": "-u/--health-check-type",
    "health_check_http_endpoint": "--endpoint",
    "timeout": "-t/--app-start-timeout",
    "no_route": "--no-route",
    "random_route": "--random-route",
}


def known_fields(cls: type, data: Mapping[str, Any]) -> JsonObject:
    """The items of `data` that are fields of the dataclass `cls` (the others are ignored)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass
class Manifest:
    """A parsed, validated manifest: its apps, where it came from, and the line of every field."""

    apps: list[AppManifest]
    source: str
    warnings: list[str] = field(default_factory=list)
    lines: dict[tuple, int] = field(default_factory=dict, repr=False, compare=False)
    """Line (1-based) of every field path, e.g. `("applications", 0, "sidecars", 0, "memory")`."""
    fields: dict[tuple, str] = field(default_factory=dict, repr=False, compare=False)
    """The field name as written (dashes kept) of every path."""

    def app(self, name: str) -> AppManifest:
        """The app of that name; KeyError naming the apps there are otherwise."""
        for app in self.apps:
            if app.name == name:
                return app
        raise KeyError(f"{self.source}: no app named '{name}'; the manifest has: "
                       + ", ".join(a.name for a in self.apps))

    def line_of(self, app_index: int | None, *path: str | int) -> int:
        """The line of that field of that app, or of its nearest ancestor the manifest has."""
        full = (("applications", app_index) if app_index is not None else ()) + tuple(path)
        return nearest_line(self.lines, canon(full))

    def where(self, app_index: int | None, *path: str | int) -> str:
        """`manifest.yml:12` for that field (`where(0, "sidecars", 0, "memory")`)."""
        return f"{self.source}:{self.line_of(app_index, *path)}"

    def error(self, app_index: int | None, *path: str | int, message: str, hint: str | None = None) -> ManifestError:
        """A ManifestError located at that field, for checks made outside this module."""
        full = (("applications", app_index) if app_index is not None else ()) + tuple(path)
        return ManifestError(message, self.source, self.line_of(app_index, *path),
                             self.fields.get(canon(full)) or field_name(full) or None, hint=hint)


def canon(path: Iterable[str | int]) -> tuple:
    return tuple(p.replace("-", "_") if isinstance(p, str) else p for p in path)


def nearest_line(lines: Mapping[tuple, int], path: tuple) -> int:
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get((), 1)

def parse_health_check_type(value: Any, where: str) -> str:
    if value == "none":
        return "process"  # Cloud Foundry's old name for it
    if value not in HEALTH_CHECK_TYPES:
        raise ManifestError(BAD_HEALTH_CHECK_TYPE, field=where, hint=f"got {show_value(value)}; port is the default for web")
    return value


def scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)
