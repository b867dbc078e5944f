"""Cloud Foundry app manifests (cf CLI v7/v8 semantics): parse, substitute ((vars)), validate.

Every error a user can cause names the file, the line and the field, what was wrong and what to
do, in one format, the one compilers use::

    manifest.yml:7: applications[0].sidecars[0]: 'command' is required; add the command ...

The YAML is read with PyYAML's compose API, so every field keeps the line it was written on;
`Manifest.where()` hands that line to checks made elsewhere (an unknown buildpack, say, which only
the platform can tell), and `Manifest.error()` builds a `ManifestError` for them.

What Cloud Foundry does and this module copies:

- unknown top-level keys are ignored (``applications`` must be a list); unknown keys inside an app,
  a process or a sidecar are ignored too, with a warning in `Manifest.warnings`;
- app and process keys may be written with dashes or underscores (``health-check-type`` or
  ``health_check_type``), as Cloud Controller underscores them;
- env values become strings: booleans ``true``/``false``, numbers as written;
- env names starting with ``VCAP_`` or ``VMC_``, and ``PORT``, are refused;
- ``health-check-type: none`` is the old name of ``process``;
- ``buildpack:`` (deprecated) is read as a one-element ``buildpacks:``; ``default``/``null`` mean
  auto-detect; using both is an error;
- the sidecars attached to a process must together ask for strictly less memory than it has;
- ``((name))`` is replaced from ``--var name=value`` and ``--vars-file FILE`` (``--var`` wins, a
  later file wins over an earlier one); an unresolved name is an error.

A field given in the manifest is a value; a field not given is None (or an empty list), so that
applying a manifest changes only what it names, as ``cf apply-manifest`` does.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

DEFAULT_MEMORY_MB = 1024
DEFAULT_DISK_MB = 1024
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

_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_VAR_RE = re.compile(r"\(\(([-/.\w]+)\)\)")
_MEMORY_RE = re.compile(r"^\s*(\d+)\s*(M|MB|G|GB|T|TB)?\s*$", re.IGNORECASE)
_UNIT_MB = {"": 1, "M": 1, "MB": 1, "G": 1024, "GB": 1024, "T": 1024 * 1024, "TB": 1024 * 1024}
_ROUTE_RE = re.compile(
    r"^(?P<host>(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+)"
    r"(:(?P<port>\d{1,5}))?(?P<path>/[^\s?#]*)?$"
)

APP_KEYS = (
    "name", "path", "buildpacks", "buildpack", "command", "memory", "disk_quota", "instances",
    "env", "stack", "processes", "sidecars", "routes", "random_route", "no_route", "default_route",
    "health_check_type", "health_check_http_endpoint", "timeout", "health_check_invocation_timeout",
)
PROCESS_KEYS = (
    "type", "command", "memory", "disk_quota", "instances", "health_check_type",
    "health_check_http_endpoint", "timeout", "health_check_invocation_timeout",
)
SIDECAR_KEYS = ("name", "process_types", "command", "memory")
ROUTE_KEYS = ("route", "protocol", "options")
# Real Cloud Foundry knows these; localcf does not act on them, and says so.
UNSUPPORTED_APP_KEYS = (
    "docker", "services", "metadata", "log_rate_limit_per_second", "lifecycle", "features",
    "readiness_health_check_type", "readiness_health_check_http_endpoint",
    "readiness_health_check_invocation_timeout", "readiness_health_check_interval",
)


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
        more: Sequence["ManifestError"] = (),
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
    def problems(self) -> list["ManifestError"]:
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


class _BadValue(Exception):
    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


def _to_mb(value: Any) -> int:
    if isinstance(value, bool) or value is None:
        raise _BadValue(f"{_show(value)} is not a size", f"write it as {MEMORY_FORMS}")
    if isinstance(value, int):
        mb = value
    else:
        match = _MEMORY_RE.match(str(value))
        if not match:
            raise _BadValue(f"{_show(value)} is not a size localcf understands", f"write it as {MEMORY_FORMS}")
        mb = int(match.group(1)) * _UNIT_MB[(match.group(2) or "").upper()]
    if mb <= 0:
        raise _BadValue(f"{_show(value)} must be more than zero", f"write it as {MEMORY_FORMS}")
    return mb


def parse_memory(value: Any, where: str = "memory") -> int:
    """Megabytes from `256M`, `1G`, `512MB` or `1024` (bare = MB), any case.

    `where` names the value in the error (a field, a flag, or a `file:line: field` location).
    """
    try:
        return _to_mb(value)
    except _BadValue as bad:
        raise ManifestError(bad.message, field=where, hint=bad.hint) from None


def _show(value: Any) -> str:
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

    def to_dict(self) -> dict:
        """A JSON-able dict with every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ProcessSpec":
        """The inverse of `to_dict`."""
        return cls(**_known(cls, data))


@dataclass
class SidecarSpec:
    """A `sidecars:` entry."""

    name: str
    command: str
    process_types: list[str]
    memory: int | None = None
    """MB, or None when unset (the sidecar then shares the process's memory)."""

    def to_dict(self) -> dict:
        """A JSON-able dict with every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SidecarSpec":
        """The inverse of `to_dict`."""
        values = _known(cls, data)
        values["process_types"] = list(values.get("process_types") or [])
        return cls(**values)


@dataclass
class RouteSpec:
    """A `routes:` entry: `host.domain[:port][/path]`."""

    route: str
    protocol: str | None = None
    options: dict[str, Any] | None = None

    @property
    def host(self) -> str:
        """The full hostname, `host.domain`."""
        match = _ROUTE_RE.match(self.route)
        return match.group("host") if match else self.route.split("/", 1)[0]

    @property
    def port(self) -> int | None:
        """The TCP port, when the route names one."""
        match = _ROUTE_RE.match(self.route)
        return int(match.group("port")) if match and match.group("port") else None

    @property
    def path(self) -> str:
        """The context path (`/api`), or `""`."""
        match = _ROUTE_RE.match(self.route)
        return (match.group("path") or "") if match else ""

    def to_dict(self) -> dict:
        """A JSON-able dict with every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RouteSpec":
        """The inverse of `to_dict`."""
        return cls(**_known(cls, data))


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

    def with_overrides(self, **flags: Any) -> "AppManifest":
        """A copy with `cf push` flags applied, as the CLI merges them into the manifest.

        Flags: name, path, buildpacks (list), stack, command, memory, disk_quota (str like `1G`
        or int MB), instances, health_check_type, health_check_http_endpoint, timeout, no_route,
        random_route. A flag that is None is not given. Raises ManifestError naming the flag.
        """
        unknown = sorted(set(flags) - set(_OVERRIDE_FLAGS))
        if unknown:
            raise TypeError(f"unknown cf push flag(s): {', '.join(unknown)}; known: {', '.join(_OVERRIDE_FLAGS)}")
        given = {k: v for k, v in flags.items() if v is not None}
        app = AppManifest.from_dict(self.to_dict())
        for key, value in given.items():
            flag = _OVERRIDE_FLAGS[key]
            if key in ("memory", "disk_quota"):
                value = parse_memory(value, flag)
            elif key == "health_check_type":
                value = _health_check_type(value, flag)
            elif key == "path":
                value = Path(value).resolve()
            elif key == "buildpacks":
                value = [value] if isinstance(value, str) else value
                value = [] if list(value) in (["default"], ["null"]) else [str(b) for b in value]
            elif key in ("instances", "timeout"):
                if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "instances" else 1):
                    raise ManifestError(f"{_show(value)} is not a valid number", field=flag,
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

    # -- what the CLI sends to the daemon

    def to_dict(self) -> dict:
        """A JSON-able dict with every field, in a fixed order (the `apply_manifest` payload)."""
        return {
            "name": self.name,
            "path": str(self.path) if self.path is not None else None,
            "buildpacks": list(self.buildpacks) if self.buildpacks is not None else None,
            "stack": self.stack,
            "command": self.command,
            "memory": self.memory,
            "disk_quota": self.disk_quota,
            "instances": self.instances,
            "health_check_type": self.health_check_type,
            "health_check_http_endpoint": self.health_check_http_endpoint,
            "timeout": self.timeout,
            "health_check_invocation_timeout": self.health_check_invocation_timeout,
            "env": dict(self.env),
            "processes": [p.to_dict() for p in self.processes],
            "sidecars": [s.to_dict() for s in self.sidecars],
            "routes": [r.to_dict() for r in self.routes] if self.routes is not None else None,
            "random_route": self.random_route,
            "no_route": self.no_route,
            "default_route": self.default_route,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AppManifest":
        """The inverse of `to_dict` (missing keys take their defaults)."""
        values = _known(cls, data)
        if values.get("path") is not None:
            values["path"] = Path(values["path"])
        if values.get("buildpacks") is not None:
            values["buildpacks"] = list(values["buildpacks"])
        values["env"] = {str(k): str(v) for k, v in (values.get("env") or {}).items()}
        values["processes"] = [ProcessSpec.from_dict(p) for p in values.get("processes") or []]
        values["sidecars"] = [SidecarSpec.from_dict(s) for s in values.get("sidecars") or []]
        if values.get("routes") is not None:
            values["routes"] = [RouteSpec.from_dict(r) for r in values["routes"]]
        return cls(**values)


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


def _known(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
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
        return _nearest_line(self.lines, _canon(full))

    def where(self, app_index: int | None, *path: str | int) -> str:
        """`manifest.yml:12` for that field (`where(0, "sidecars", 0, "memory")`)."""
        return f"{self.source}:{self.line_of(app_index, *path)}"

    def error(self, app_index: int | None, *path: str | int, message: str, hint: str | None = None) -> ManifestError:
        """A ManifestError located at that field, for checks made outside this module."""
        full = (("applications", app_index) if app_index is not None else ()) + tuple(path)
        return ManifestError(message, self.source, self.line_of(app_index, *path),
                             self.fields.get(_canon(full)) or field_name(full) or None, hint=hint)


def _canon(path: Iterable[str | int]) -> tuple:
    return tuple(p.replace("-", "_") if isinstance(p, str) else p for p in path)


def _nearest_line(lines: Mapping[tuple, int], path: tuple) -> int:
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get((), 1)


# ---------------------------------------------------------------------------------------------
# Loading


def load(
    path: Path | str,
    vars: Mapping[str, Any] | None = None,
    vars_files: Sequence[Path | str] = (),
    *,
    check_paths: bool = True,
) -> Manifest:
    """Read, substitute and validate the manifest at `path` (relative app paths resolve against
    its folder). Raises ManifestError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError("no such manifest", str(path), hint="give the path of a manifest file with -f") from None
    except IsADirectoryError:
        raise ManifestError("is a folder, not a manifest", str(path),
                            hint="give the manifest file itself, e.g. -f manifest.yml") from None
    except UnicodeDecodeError as exc:
        raise ManifestError(f"is not UTF-8 text ({exc.reason})", str(path), hint="save the manifest as UTF-8") from None
    return loads(text, str(path), path.parent.resolve(), vars=vars, vars_files=vars_files, check_paths=check_paths)


def loads(
    text: str,
    source: str = "manifest.yml",
    base_dir: Path | str = ".",
    vars: Mapping[str, Any] | None = None,
    vars_files: Sequence[Path | str] = (),
    *,
    check_paths: bool = True,
) -> Manifest:
    """Parse manifest `text`; `source` names it in errors, `base_dir` anchors relative paths."""
    values = _collect_vars(vars, vars_files)
    root = _compose(text, source)
    reader = _Reader(source, Path(base_dir).resolve(), values, check_paths)
    return reader.read(root)


def parse_var_flags(flags: Iterable[str]) -> dict[str, str]:
    """`["k=v", ...]` from `--var k=v` flags into a dict."""
    out: dict[str, str] = {}
    for flag in flags:
        name, sep, value = flag.partition("=")
        if not sep or not name.strip():
            raise ManifestError(f"'{flag}' is not NAME=VALUE", field="--var",
                                hint="write it as --var NAME=VALUE, e.g. --var port=8082")
        out[name.strip()] = value
    return out


def _collect_vars(vars: Mapping[str, Any] | None, vars_files: Sequence[Path | str]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for vars_file in vars_files:
        vars_file = Path(vars_file)
        try:
            text = vars_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ManifestError(f"cannot read the vars file ({exc.strerror})", str(vars_file),
                                field="--vars-file", hint="give the path of a YAML file of NAME: VALUE lines") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise _yaml_error(exc, str(vars_file)) from None
        if data is None:
            continue
        if not isinstance(data, dict):
            raise ManifestError(f"a vars file must be a YAML map of names to values, not {_show(data)}",
                                str(vars_file), 1, hint="write one NAME: VALUE per line")
        merged.update({str(k): v for k, v in data.items()})
    merged.update(vars or {})
    return merged


def _compose(text: str, source: str) -> Node | None:
    try:
        # cf reads the first YAML document of the file; so do we.
        return next(iter(yaml.compose_all(text, Loader=yaml.SafeLoader)), None)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from None


def _yaml_error(exc: yaml.YAMLError, source: str) -> ManifestError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    message = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    hint = ("indent with spaces, YAML does not allow tabs" if "\\t" in problem or "\t" in problem
            else "check the indentation and the quoting on this line and the one before")
    if mark is None:
        return ManifestError(message, source, hint=hint)
    return ManifestError(message, source, mark.line + 1, column=mark.column + 1, hint=hint)


class _Reader:
    """Walks the node tree once (substituting vars, noting lines), then validates the values."""

    def __init__(self, source: str, base_dir: Path, vars: Mapping[str, Any], check_paths: bool):
        self.source = source
        self.base_dir = base_dir
        self.vars = vars
        self.check_paths = check_paths
        self.lines: dict[tuple, int] = {}
        self.fields: dict[tuple, str] = {}
        self.texts: dict[tuple, str] = {}
        self.missing: list[tuple[str, tuple]] = []
        self.problems: list[ManifestError] = []
        self.warnings: list[str] = []
        self.constructor = SafeConstructor()
        self.resolver = Resolver()

    # -- problems

    def fail(self, path: tuple, message: str, hint: str | None = None) -> None:
        canon = _canon(path)
        self.problems.append(ManifestError(message, self.source, _nearest_line(self.lines, canon),
                                           self.fields.get(canon) or field_name(path) or None, hint=hint))

    def warn(self, path: tuple, message: str) -> None:
        canon = _canon(path)
        where = f"{self.source}:{_nearest_line(self.lines, canon)}"
        self.warnings.append(f"{where}: {self.fields.get(canon) or field_name(path)}: {message}")

    def raise_problems(self) -> None:
        if self.problems:
            first, *rest = sorted(self.problems, key=lambda p: p.line or 0)
            first.more = rest
            raise first

    # -- the tree walk

    def read(self, root: Node | None) -> Manifest:
        self.lines[()] = 1
        data = self.value(root, ()) if root is not None else None
        if self.missing:
            names = list(dict.fromkeys(name for name, _ in self.missing))
            self.fail(self.missing[0][1], UNRESOLVED_VARS.format(names=", ".join(names)),
                      "give each with --var NAME=VALUE or in a --vars-file")
        self.raise_problems()
        apps = self.read_apps(data)
        self.raise_problems()
        return Manifest(apps, self.source, self.warnings, self.lines, self.fields)

    def value(self, node: Node, path: tuple) -> Any:
        canon = _canon(path)
        self.lines.setdefault(canon, node.start_mark.line + 1)
        self.fields.setdefault(canon, field_name(path))
        if isinstance(node, ScalarNode):
            node = self.substitute(node, path)
        if isinstance(node, ScalarNode):
            self.texts[canon] = node.value
            try:
                return self.constructor.construct_object(node, deep=True)
            except ConstructorError as exc:
                self.fail(path, f"cannot read this value: {exc.problem}", "remove the tag or quote the value")
                return None
        if isinstance(node, SequenceNode):
            return [self.value(item, path + (index,)) for index, item in enumerate(node.value)]
        return self.mapping(node, path)

    def mapping(self, node: MappingNode, path: tuple) -> dict:
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:
                continue
            key = key_node.value if isinstance(key_node, ScalarNode) else None
            if key is not None and key in seen:
                self.lines.setdefault(_canon(path + (key,)), key_node.start_mark.line + 1)
                self.fail(path + (key,), f"'{key}' is given twice (first on line {seen[key]})", "keep only one of them")
            elif key is not None:
                seen[key] = key_node.start_mark.line + 1
        try:
            self.constructor.flatten_mapping(node)  # merge keys (<<: *anchor), as YAML 1.1 defines
        except ConstructorError as exc:
            self.fail(path, f"cannot merge: {exc.problem}", "merge (<<) only maps")
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.lines.setdefault(_canon(path), key_node.start_mark.line + 1)
                self.fail(path, "a key must be a plain name, not a list or a map", "write the key as a word")
                continue
            key_node = self.substitute(key_node, path)
            key = key_node.value  # as written: `yes:` stays "yes", `8080:` stays "8080"
            child = path + (key,)
            self.lines.setdefault(_canon(child), key_node.start_mark.line + 1)
            self.fields.setdefault(_canon(child), field_name(child))
            out[key] = self.value(value_node, child)
        return out

    # -- ((vars))

    def lookup(self, name: str) -> tuple[bool, Any]:
        if name in self.vars:
            return True, self.vars[name]
        value: Any = self.vars
        for part in name.split("."):
            if not isinstance(value, Mapping) or part not in value:
                return False, None
            value = value[part]
        return True, value

    def substitute(self, node: ScalarNode, path: tuple) -> Node:
        if "((" not in node.value:
            return node
        whole = _VAR_RE.fullmatch(node.value.strip())
        if whole:
            found, value = self.lookup(whole.group(1))
            if not found:
                self.missing.append((whole.group(1), path))
                return node
            return self.node_for(value, node)

        def one(match: re.Match) -> str:
            found, value = self.lookup(match.group(1))
            if not found:
                self.missing.append((match.group(1), path))
                return match.group(0)
            if isinstance(value, (dict, list)):
                self.fail(path, f"(({match.group(1)})) is {_show(value)} and cannot be part of a longer string",
                          "use it as the whole value, or give a plain value")
                return match.group(0)
            return _scalar_text(value)

        text = _VAR_RE.sub(one, node.value)
        return self.scalar_node(text, node)

    def scalar_node(self, text: str, like: ScalarNode) -> ScalarNode:
        # A quoted value stays a string; a plain one is typed from its new text, as if written so.
        tag = _STR if like.style else self.resolver.resolve(ScalarNode, text, (True, False))
        return ScalarNode(tag, text, like.start_mark, like.end_mark, style=like.style)

    def node_for(self, value: Any, like: ScalarNode) -> Node:
        if isinstance(value, str):
            return self.scalar_node(value, like)
        node = yaml.compose(yaml.safe_dump(value), Loader=yaml.SafeLoader)
        _move_marks(node, like)
        return node

    # -- validation

    def read_apps(self, data: Any) -> list[AppManifest]:
        if data is None:
            self.fail((), "the manifest is empty", "start it with 'applications:' and a '- name: APP' entry")
            return []
        if not isinstance(data, dict):
            self.fail((), f"a manifest must be a map with an 'applications' list, not {_show(data)}",
                      "start it with 'applications:' and a '- name: APP' entry")
            return []
        if "applications" not in data:
            self.fail((), "'applications' is missing", "add 'applications:' with a '- name: APP' entry per app")
            return []
        apps = data["applications"]
        if not isinstance(apps, list) or not apps:
            self.fail(("applications",), "'applications' must be a list with at least one app",
                      "write one '- name: APP' entry per app under it")
            return []
        out = []
        names: dict[str, int] = {}
        for index, raw in enumerate(apps):
            app = self.read_app(raw, ("applications", index))
            if app is None:
                continue
            if app.name in names:
                self.fail(("applications", index, "name"), f"app '{app.name}' is already applications[{names[app.name]}]",
                          "give every app its own name")
            names.setdefault(app.name, index)
            out.append(app)
        return out

    def read_app(self, raw: Any, path: tuple) -> AppManifest | None:
        if not isinstance(raw, dict):
            self.fail(path, f"an app must be a map of settings, not {_show(raw)}", "write '- name: APP' and its settings below it")
            return None
        values = self.keys(raw, path, APP_KEYS, "app", UNSUPPORTED_APP_KEYS)
        name = self.string(values, path, "name", required=True, hint="add 'name: my-app' to the app")
        app = AppManifest(name=name or "")

        if "path" in values:
            text = self.string(values, path, "path", hint="give the app's folder, relative to the manifest")
            if text:
                resolved = (self.base_dir / os.path.expanduser(text)).resolve()
                if self.check_paths and not resolved.exists():
                    self.fail(path + (values["path"][0],), f"'{text}' does not exist (looked for {resolved})",
                              "fix the path; it is relative to the manifest's folder")
                app.path = resolved

        app.buildpacks = self.buildpacks(values, path)
        app.stack = self.string(values, path, "stack")
        self.process_settings(values, path, app)
        app.env = self.env(values, path)
        app.processes = self.processes(values, path)
        app.sidecars = self.sidecars(values, path)
        app.routes = self.routes(values, path)
        for key in ("random_route", "no_route", "default_route"):
            setattr(app, key, self.boolean(values, path, key))
        if app.random_route and app.default_route:
            self.fail(path + (values["random_route"][0],), "Random-route and default-route may not be used together",
                      "keep one of them")
        self.sidecar_memory(app, values, path)
        return app

    def keys(self, raw: dict, path: tuple, known: Sequence[str], what: str,
             unsupported: Sequence[str] = ()) -> dict[str, tuple[str, Any]]:
        """canonical key -> (key as written, value); warns about keys cf would ignore."""
        out: dict[str, tuple[str, Any]] = {}
        for key, value in raw.items():
            # Cloud Controller underscores app and process keys only; sidecar keys are taken as written.
            canon = key.replace("-", "_") if what in ("app", "process") else key
            if canon in known:
                out[canon] = (key, value)
            elif canon in unsupported:
                self.warn(path + (key,), f"localcf does not support '{key}' and ignores it")
            else:
                guess = difflib.get_close_matches(canon, known, n=1)
                suggestion = f"; did you mean '{guess[0].replace('_', '-') if '-' in key else guess[0]}'?" if guess else ""
                self.warn(path + (key,), f"unknown {what} key '{key}' is ignored, as cf ignores it{suggestion}")
        return out

    # -- typed fields: each takes the app's `values` and returns None when the key is absent

    def string(self, values: dict, path: tuple, key: str, *, required: bool = False, hint: str | None = None,
               allow_null: bool = False) -> str | None:
        if key not in values:
            if required:
                self.fail(path, f"'{key}' is required", hint)
            return None
        written, value = values[key]
        if value is None and allow_null:
            return None
        if isinstance(value, str) and value.strip():
            return value
        if isinstance(value, str) or value is None:
            self.fail(path + (written,), f"'{written}' must not be empty", hint)
        else:
            self.fail(path + (written,), f"'{written}' must be text, not {_show(value)}",
                      f"put it in quotes: {written}: \"{_scalar_text(value)}\"")
        return None

    def integer(self, values: dict, path: tuple, key: str, minimum: int, unit: str = "") -> int | None:
        if key not in values:
            return None
        written, value = values[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(path + (written,), f"{_show(value)} is not a whole number of {minimum} or more",
                      f"write a number{unit}, e.g. {written}: {max(minimum, 1)}")
            return None
        return value

    def boolean(self, values: dict, path: tuple, key: str) -> bool | None:
        if key not in values:
            return None
        written, value = values[key]
        if not isinstance(value, bool):
            self.fail(path + (written,), f"{written.capitalize()} must be a boolean", f"write {written}: true or {written}: false")
            return None
        return value

    def size(self, values: dict, path: tuple, key: str) -> int | None:
        if key not in values:
            return None
        written, value = values[key]
        try:
            return _to_mb(value)
        except _BadValue as bad:
            self.fail(path + (written,), bad.message, bad.hint)
            return None

    def process_settings(self, values: dict, path: tuple, target: AppManifest | ProcessSpec) -> None:
        target.command = self.string(values, path, "command", allow_null=True,
                                     hint="give the start command, or leave 'command' out to use the buildpack's")
        target.memory = self.size(values, path, "memory")
        target.disk_quota = self.size(values, path, "disk_quota")
        target.instances = self.integer(values, path, "instances", 0)
        target.timeout = self.integer(values, path, "timeout", 1, " of seconds")
        target.health_check_invocation_timeout = self.integer(values, path, "health_check_invocation_timeout", 1, " of seconds")
        if "health_check_type" in values:
            written, value = values["health_check_type"]
            try:
                target.health_check_type = _health_check_type(value, written)
            except ManifestError as bad:
                self.fail(path + (written,), bad.message, bad.hint)
        if "health_check_http_endpoint" in values:
            written, value = values["health_check_http_endpoint"]
            if not isinstance(value, str) or not value.startswith("/"):
                self.fail(path + (written,), "Health check http endpoint must be a valid URI path",
                          f"write a path starting with /, e.g. {written}: /health")
            elif target.health_check_type not in (None, "http"):
                self.fail(path + (written,), ENDPOINT_NEEDS_HTTP, "set health-check-type: http, or remove the endpoint")
            else:
                target.health_check_http_endpoint = value

    def buildpacks(self, values: dict, path: tuple) -> list[str] | None:
        if "buildpack" in values and "buildpacks" in values:
            self.fail(path + (values["buildpack"][0],), BUILDPACK_AND_BUILDPACKS,
                      "keep only 'buildpacks:', a list with the final buildpack last")
            return None
        if "buildpack" in values:
            written, value = values["buildpack"]
            self.warn(path + (written,), "'buildpack' is deprecated; use 'buildpacks:', a list")
            if value is None or value in ("default", "null"):
                return []
            if not isinstance(value, str) or not value.strip():
                self.fail(path + (written,), f"'{written}' must be a buildpack name or URL, not {_show(value)}",
                          "write buildpacks: [NAME] instead")
                return None
            return [value]
        if "buildpacks" not in values:
            return None
        written, value = values["buildpacks"]
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(path + (written,), f"'{written}' must be a list, not {_show(value)}",
                      f"write {written}: [{_scalar_text(value)}] or one '- NAME' line per buildpack")
            return None
        out = []
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                self.fail(path + (written, index), f"a buildpack must be a name or a URL, not {_show(item)}",
                          "write the buildpack's name, a folder, a zip or an http(s) URL")
            else:
                out.append(item)
        return out

    def env(self, values: dict, path: tuple) -> dict[str, str]:
        if "env" not in values:
            return {}
        written, value = values["env"]
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(path + (written,), "Env must be an object of keys and values", "write one NAME: value line per variable under env:")
            return {}
        out: dict[str, str] = {}
        for key, item in value.items():
            where = path + (written, key)
            upper = key.upper()
            if not key:
                self.fail(where, "Env key must be a minimum length of 1", "give the variable a name")
            elif upper.startswith("VCAP_"):
                self.fail(where, "Env cannot start with VCAP_", "the platform sets VCAP_* itself: rename the variable")
            elif upper.startswith("VMC"):
                self.fail(where, "Env cannot start with VMC_", "rename the variable")
            elif upper == "PORT":
                self.fail(where, "Env cannot set PORT", "the platform sets PORT (8080): read it, do not set it")
            elif isinstance(item, (dict, list)):
                self.fail(where, f"an env value must be text, a number or a boolean, not {_show(item)}",
                          "quote it as a string, e.g. a JSON text in single quotes")
            else:
                out[key] = self.env_text(item, _canon(where))
        return out

    def env_text(self, value: Any, canon: tuple) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return value
        if value is None:
            return ""
        return self.texts.get(canon, str(value))  # numbers (and dates) as written

    def processes(self, values: dict, path: tuple) -> list[ProcessSpec]:
        if "processes" not in values:
            return []
        written, value = values["processes"]
        if not isinstance(value, list):
            self.fail(path + (written,), "Processes must be an array of process configurations",
                      "write one '- type: NAME' entry per process type")
            return []
        out: list[ProcessSpec] = []
        seen: set[str] = set()
        for index, raw in enumerate(value):
            where = path + (written, index)
            if not isinstance(raw, dict):
                self.fail(where, f"a process must be a map of settings, not {_show(raw)}", "write '- type: web' and its settings")
                continue
            items = self.keys(raw, where, PROCESS_KEYS, "process")
            process_type = self.string(items, where, "type", required=True,
                                       hint="add 'type: web' (or worker, ...) to the process")
            if process_type is None:
                continue
            if process_type in seen:
                self.fail(where + (items["type"][0],), DUPLICATE_PROCESS.format(process_type=process_type),
                          "merge the two entries into one")
                continue
            seen.add(process_type)
            spec = ProcessSpec(type=process_type)
            self.process_settings(items, where, spec)
            out.append(spec)
        return out

    def sidecars(self, values: dict, path: tuple) -> list[SidecarSpec]:
        if "sidecars" not in values:
            return []
        written, value = values["sidecars"]
        if not isinstance(value, list):
            self.fail(path + (written,), "Sidecars must be an array of sidecar configurations",
                      "write one '- name: NAME' entry per sidecar")
            return []
        out: list[SidecarSpec] = []
        names: dict[str, int] = {}
        for index, raw in enumerate(value):
            where = path + (written, index)
            if not isinstance(raw, dict):
                self.fail(where, f"a sidecar must be a map with name, process_types and command, not {_show(raw)}",
                          "write '- name: NAME' with process_types and command below it")
                continue
            items = self.keys(raw, where, SIDECAR_KEYS, "sidecar")
            name = self.string(items, where, "name", required=True, hint="add 'name: my-sidecar' to the sidecar")
            command = self.string(items, where, "command", required=True,
                                  hint="add the command that starts the sidecar, e.g. command: ./config-server")
            process_types = self.process_types(items, where)
            memory = self.size(items, where, "memory")
            if name is not None and name in names:
                self.fail(where + ("name",), f"sidecar '{name}' is already {written}[{names[name]}]",
                          "sidecar names must be unique in an app: rename one")
                continue
            if name is not None:
                names[name] = index
            if name is not None and command is not None and process_types is not None:
                out.append(SidecarSpec(name=name, command=command, process_types=process_types, memory=memory))
        return out

    def process_types(self, items: dict, where: tuple) -> list[str] | None:
        hint = "list the process types it runs with, e.g. process_types: [web]"
        if "process_types" not in items:
            self.fail(where, "'process_types' is required", hint)
            return None
        written, value = items["process_types"]
        if not isinstance(value, list) or not value:
            self.fail(where + (written,), "'process_types' must be a list of at least one process type", hint)
            return None
        if not all(isinstance(t, str) and t.strip() for t in value):
            self.fail(where + (written,), "every process type must be a name like web or worker", hint)
            return None
        return list(value)

    def routes(self, values: dict, path: tuple) -> list[RouteSpec] | None:
        if "routes" not in values:
            return None
        written, value = values["routes"]
        hint = "write one '- route: HOST.DOMAIN[/PATH]' entry per route"
        if not isinstance(value, list) or not all(isinstance(r, dict) and r.get("route") for r in value):
            self.fail(path + (written,), "Routes must be a list of route objects", hint)
            return None
        out = []
        for index, raw in enumerate(value):
            where = path + (written, index)
            items = self.keys(raw, where, ROUTE_KEYS, "route")
            route = items["route"][1]
            if not isinstance(route, str) or not _ROUTE_RE.match(route):
                self.fail(where + ("route",), BAD_ROUTE.format(route=_scalar_text(route)),
                          "write HOST.DOMAIN[:PORT][/PATH] without a scheme, e.g. my-app.localcf.dev")
                continue
            protocol = items.get("protocol", (None, None))[1]
            if protocol is not None and protocol not in ROUTE_PROTOCOLS:
                self.fail(where + ("protocol",), "Route protocol must be 'http1', 'http2' or 'tcp'.", "use one of those")
                continue
            options = items.get("options", (None, None))[1]
            if options is not None and not isinstance(options, dict):
                self.fail(where + ("options",), f"Route '{route}': options must be an object", "write options as a map")
                continue
            out.append(RouteSpec(route=route, protocol=protocol, options=options))
        return out

    def sidecar_memory(self, app: AppManifest, values: dict, path: tuple) -> None:
        for index, process_type in app.sidecar_memory_problems():
            sidecar = app.sidecars[index]
            written = values["sidecars"][0]
            self.fail(path + (written, index, "memory"), SIDECAR_MEMORY_TOO_LARGE.format(process_type=process_type),
                      f"the sidecars of \"{process_type}\" would take all of its "
                      f"{app.process_memory(process_type)} MB (this one asks for {sidecar.memory} MB): "
                      "give the sidecar less memory or the process more")


def _health_check_type(value: Any, where: str) -> str:
    if value == "none":
        return "process"  # Cloud Foundry's old name for it
    if value not in HEALTH_CHECK_TYPES:
        raise ManifestError(BAD_HEALTH_CHECK_TYPE, field=where, hint=f"got {_show(value)}; port is the default for web")
    return value


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


def _move_marks(node: Node, like: Node) -> None:
    # A var's value was parsed from elsewhere: point all of it at the ((var)) it replaced.
    node.start_mark, node.end_mark = like.start_mark, like.end_mark
    if isinstance(node, SequenceNode):
        for item in node.value:
            _move_marks(item, like)
    elif isinstance(node, MappingNode):
        for key, value in node.value:
            _move_marks(key, like)
            _move_marks(value, like)
