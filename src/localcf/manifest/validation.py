"""Manifest validation: from the values of the YAML (with their lines) to `AppManifest` records.

Every error a user can cause names the file, the line and the field, what was wrong and what to
do, in one format, the one compilers use::

    manifest.yml:7: applications[0].sidecars[0]: 'command' is required; add the command ...

What Cloud Foundry does and this module copies:

- unknown top-level keys are ignored (``applications`` must be a list); unknown keys inside an app,
  a process or a sidecar are ignored too, with a warning;
- app and process keys may be written with dashes or underscores (``health-check-type`` or
  ``health_check_type``), as Cloud Controller underscores them;
- env values become strings: booleans ``true``/``false``, numbers as written;
- env names starting with ``VCAP_`` or ``VMC_``, and ``PORT``, are refused;
- ``health-check-type: none`` is the old name of ``process``;
- ``buildpack:`` (deprecated) is read as a one-element ``buildpacks:``; ``default``/``null`` mean
  auto-detect; using both is an error;
- the sidecars attached to a process must together ask for strictly less memory than it has.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .model import (
    BAD_ROUTE,
    BUILDPACK_AND_BUILDPACKS,
    DUPLICATE_PROCESS,
    ENDPOINT_NEEDS_HTTP,
    ROUTE_PROTOCOLS,
    ROUTE_RE,
    SIDECAR_MEMORY_TOO_LARGE,
    AppManifest,
    BadValue,
    ManifestError,
    ProcessSpec,
    RouteSpec,
    SidecarSpec,
    canon,
    parse_health_check_type,
    scalar_text,
    show_value,
    to_mb,
)
from .yamlread import Findings

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



def validate(data: Any, found: Findings, base_dir: Path, check_paths: bool = True) -> list[AppManifest]:
    """The apps of the manifest `data`; problems and warnings go to `found` (the caller raises)."""
    return _Validator(found, base_dir, check_paths).read_apps(data)


class _Validator:
    def __init__(self, found: Findings, base_dir: Path, check_paths: bool):
        self.found = found
        self.texts = found.texts
        self.fail = found.fail
        self.warn = found.warn
        self.base_dir = base_dir
        self.check_paths = check_paths

    def read_apps(self, data: Any) -> list[AppManifest]:
        if data is None:
            self.fail((), "the manifest is empty", "start it with 'applications:' and a '- name: APP' entry")
            return []
        if not isinstance(data, dict):
            self.fail((), f"a manifest must be a map with an 'applications' list, not {show_value(data)}",
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
            self.fail(path, f"an app must be a map of settings, not {show_value(raw)}", "write '- name: APP' and its settings below it")
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
            name = key.replace("-", "_") if what in ("app", "process") else key
            if name in known:
                out[name] = (key, value)
            elif name in unsupported:
                self.warn(path + (key,), f"localcf does not support '{key}' and ignores it")
            else:
                guess = difflib.get_close_matches(name, known, n=1)
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
            self.fail(path + (written,), f"'{written}' must be text, not {show_value(value)}",
                      f"put it in quotes: {written}: \"{scalar_text(value)}\"")
        return None

    def integer(self, values: dict, path: tuple, key: str, minimum: int, unit: str = "") -> int | None:
        if key not in values:
            return None
        written, value = values[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(path + (written,), f"{show_value(value)} is not a whole number of {minimum} or more",
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
            return to_mb(value)
        except BadValue as bad:
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
                target.health_check_type = parse_health_check_type(value, written)
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
                self.fail(path + (written,), f"'{written}' must be a buildpack name or URL, not {show_value(value)}",
                          "write buildpacks: [NAME] instead")
                return None
            return [value]
        if "buildpacks" not in values:
            return None
        written, value = values["buildpacks"]
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(path + (written,), f"'{written}' must be a list, not {show_value(value)}",
                      f"write {written}: [{scalar_text(value)}] or one '- NAME' line per buildpack")
            return None
        out = []
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                self.fail(path + (written, index), f"a buildpack must be a name or a URL, not {show_value(item)}",
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
                self.fail(where, f"an env value must be text, a number or a boolean, not {show_value(item)}",
                          "quote it as a string, e.g. a JSON text in single quotes")
            else:
                out[key] = self.env_text(item, canon(where))
        return out

    def env_text(self, value: Any, key: tuple) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return value
        if value is None:
            return ""
        return self.texts.get(key, str(value))  # numbers (and dates) as written

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
                self.fail(where, f"a process must be a map of settings, not {show_value(raw)}", "write '- type: web' and its settings")
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
                self.fail(where, f"a sidecar must be a map with name, process_types and command, not {show_value(raw)}",
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
            if not isinstance(route, str) or not ROUTE_RE.match(route):
                self.fail(where + ("route",), BAD_ROUTE.format(route=scalar_text(route)),
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

