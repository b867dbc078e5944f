"""Field validation of request bodies, with Cloud Controller's texts.

Each function takes the parsed body of one kind of request and raises the 422
`CF-UnprocessableEntity` (code 10008) Cloud Controller answers, its detail listing every failure
joined by ", " (`Name must be a string, Environment variables must be an object`). Handlers call one
of these first, so a refused request changes nothing. Only types, lengths and formats are checked
here; the rules that need the store (a name already taken, an unknown buildpack) stay the
controller's.
"""

from __future__ import annotations

import re
from typing import Any

from .buildpacks import buildpack_upload_problem
from .controller import unprocessable
from .jsondoc import JsonObject

NAME_MAX = 255
"""Longest app, sidecar or process name (Cloud Controller's column size)."""
BUILDPACK_NAME_MAX = 250
STACK_MAX = 250
COMMAND_MAX = 4096
HOST_MAX = 63
HOST_RE = re.compile(r"\A([\w\-]+|\*)?\Z", re.ASCII)
HEALTH_CHECK_TYPES = ("port", "process", "http")


class Errors:
    """Collects failures in order; `raise_any` raises them as one 422."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, text: str) -> None:
        if text not in self.items:
            self.items.append(text)

    def raise_any(self) -> None:
        if self.items:
            raise unprocessable(", ".join(self.items))

    # --- typed checks; each returns whether the value passed, so callers can go deeper

    def string(self, label: str, value: Any, maximum: int | None = None, required: bool = False) -> bool:
        if value is None and not required:
            return True
        if not isinstance(value, str):
            self.add(f"{label} must be a string")
            return False
        if maximum is not None and len(value) > maximum:
            self.add(f"{label} is too long (maximum is {maximum} characters)")
            return False
        return True

    def obj(self, label: str, value: Any) -> bool:
        if value is None:
            return True
        if not isinstance(value, dict):
            self.add(f"{label} must be an object")
            return False
        return True

    def boolean(self, label: str, value: Any) -> bool:
        if value is None or isinstance(value, bool):
            return True
        self.add(f"{label} must be a boolean")
        return False

    def integer(self, label: str, value: Any, minimum: int | None = None) -> bool:
        if value is None:
            return True
        if not isinstance(value, int) or isinstance(value, bool):
            self.add(f"{label} must be an integer")
            return False
        if minimum is not None and value < minimum:
            self.add(f"{label} must be greater than or equal to {minimum}")
            return False
        return True

    def string_list(self, label: str, value: Any) -> bool:
        if value is None:
            return True
        if not isinstance(value, list):
            self.add(f"{label} must be an array")
            return False
        if not all(isinstance(v, str) for v in value):
            self.add(f"{label} can only contain strings")
            return False
        return True

    def env(self, label: str, value: Any) -> None:
        if value is None or not self.obj(label, value):
            return
        for key, val in value.items():
            if not key:
                self.add(f"{label} key must be a minimum length of 1")
            elif key.upper().startswith("VCAP_"):
                self.add(f"{label} cannot start with VCAP_")
            elif key.upper().startswith("VMC"):
                self.add(f"{label} cannot start with VMC_")
            elif key.upper() == "PORT":
                self.add(f"{label} cannot set PORT")
            if val is not None and not isinstance(val, str):
                self.add(f"Non-string value in environment variable for key '{key}', value '{_shown(val)}'")

    def lifecycle(self, value: Any) -> None:
        if value is None or not self.obj("Lifecycle", value):
            return
        data = value.get("data")
        if data is None or not self.obj("Lifecycle data", data):
            return
        self.string_list("Lifecycle Buildpacks", data.get("buildpacks"))
        self.string("Lifecycle Stack", data.get("stack"), STACK_MAX)


def _shown(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ------------------------------------------------------------------------------- the requests

def app_create(body: JsonObject) -> None:
    """`POST /v3/apps`."""
    e = Errors()
    e.string("Name", body.get("name"), NAME_MAX, required=True)
    e.env("Environment variables", body.get("environment_variables"))
    e.lifecycle(body.get("lifecycle"))
    e.raise_any()


def app_update(body: JsonObject) -> None:
    """`PATCH /v3/apps/:guid`."""
    e = Errors()
    if "name" in body:
        e.string("Name", body["name"], NAME_MAX, required=True)
    e.lifecycle(body.get("lifecycle"))
    e.raise_any()


def env_update(body: JsonObject) -> None:
    """`PATCH /v3/apps/:guid/environment_variables` (`{"var": {...}}`)."""
    e = Errors()
    e.env("Var", body.get("var"))
    e.raise_any()


def process_update(body: JsonObject) -> None:
    """`PATCH /v3/processes/:guid`."""
    e = Errors()
    command = body.get("command")
    if command is not None and e.string("Command", command) and not 1 <= len(command) <= COMMAND_MAX:
        e.add(f"Command must be between 1 and {COMMAND_MAX} characters")
    hc = body.get("health_check")
    if hc is not None and e.obj("Health check", hc):
        hc_type = hc.get("type")
        if hc_type is not None and hc_type not in HEALTH_CHECK_TYPES:
            e.add('Health check type must be "port", "process", or "http"')
        data = hc.get("data")
        if data is not None and e.obj("Health check data", data):
            e.string("Endpoint", data.get("endpoint"))
            e.integer("Timeout", data.get("timeout"), minimum=1)
            e.integer("Invocation timeout", data.get("invocation_timeout"), minimum=1)
    e.raise_any()


def sidecar_create(body: JsonObject) -> None:
    """`POST /v3/apps/:guid/sidecars`."""
    e = Errors()
    e.string("Name", body.get("name"), NAME_MAX, required=True)
    command = body.get("command")
    if e.string("Command", command, required=True) and isinstance(command, str) \
            and not 1 <= len(command) <= COMMAND_MAX:
        e.add(f"Command must be between 1 and {COMMAND_MAX} characters")
    types = body.get("process_types")
    if types is None:
        e.add("Process types must have at least 1 process_type")
    elif e.string_list("Process types", types):
        if not types:
            e.add("Process types must have at least 1 process_type")
        for t in types:
            e.string("Process type", t, NAME_MAX)
    e.integer("Memory in mb", body.get("memory_in_mb"), minimum=1)
    e.raise_any()


def buildpack_create(body: JsonObject) -> None:
    """`POST /v3/buildpacks`."""
    e = Errors()
    e.string("Name", body.get("name"), BUILDPACK_NAME_MAX, required=True)
    buildpack_fields(body, e)


def buildpack_update(body: JsonObject) -> None:
    """`PATCH /v3/buildpacks/:guid`."""
    e = Errors()
    if "name" in body:
        e.string("Name", body["name"], BUILDPACK_NAME_MAX, required=True)
    buildpack_fields(body, e)


def buildpack_fields(body: JsonObject, e: Errors) -> None:
    e.string("Stack", body.get("stack"), STACK_MAX)
    e.integer("Position", body.get("position"), minimum=1)
    e.boolean("Enabled", body.get("enabled"))
    e.boolean("Locked", body.get("locked"))
    e.raise_any()


def route_host(route: str) -> list[str]:
    """Cloud Controller's host rules for the host part of a route URL (`host.domain[:port][/path]`)."""
    host = route.split("/", 1)[0].split(":", 1)[0].split(".", 1)[0]
    if len(host) > HOST_MAX:
        return [f"Host is too long (maximum is {HOST_MAX} characters)"]
    if not HOST_RE.match(host):
        return ['Host must be either "*" or contain only alphanumeric characters, "_", or "-"']
    return []


def manifest(body: bytes) -> None:
    """`POST /v3/spaces/:guid/actions/apply_manifest`: app names and route hosts, before anything
    is applied. The manifest's own structure is `localcf.manifest`'s to check."""
    import json

    import yaml

    try:
        doc = json.loads(body)  # what `localcf` sends
    except ValueError:
        try:
            doc = yaml.safe_load(body)  # what `cf` sends
        except yaml.YAMLError:
            return  # the manifest reader reports it, with the line
    apps = doc.get("applications") if isinstance(doc, dict) else None
    if not isinstance(apps, list):
        return
    e = Errors()
    for app in apps:
        if not isinstance(app, dict):
            continue
        name = app.get("name")
        e.string("Name", name, NAME_MAX)
        routes = app.get("routes")
        if isinstance(routes, list):
            for r in routes:
                url = r.get("route") if isinstance(r, dict) else None
                if isinstance(url, str):
                    for text in route_host(url):
                        e.add(text)
        elif isinstance(name, str) and len(name) <= NAME_MAX and not _flag(app, "no-route") \
                and not _flag(app, "random-route"):
            default_host = name.lower().replace("_", "-").replace(" ", "-")
            if len(default_host) > HOST_MAX:
                e.add(f"Host is too long (maximum is {HOST_MAX} characters): the default route's host "
                      f"is the app name; give the app a route with a shorter host under routes:")
    e.raise_any()


def _flag(app: JsonObject, key: str) -> bool:
    return bool(app.get(key) or app.get(key.replace("-", "_")))


def buildpack_zip(data: bytes) -> None:
    """A buildpack upload: a readable zip whose entries all stay inside it and that holds bin/."""
    problem = buildpack_upload_problem(data)
    if problem:
        raise unprocessable(f"The buildpack upload is invalid: {problem}")
