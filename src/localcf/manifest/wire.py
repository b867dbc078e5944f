"""The one JSON shape of a parsed manifest, shared by the `localcf` command and the daemon.

The command reads and validates a manifest file itself, so that every error names the file's line;
it then sends the result to the API's `apply_manifest` endpoint as JSON::

    POST /v3/spaces/SPACE/actions/apply_manifest   (Content-Type: application/json)
    {"applications": [AppWire, ...]}

and the controller turns each entry back into an `AppManifest` with `from_wire`. The shape is
written down once, here, as TypedDicts: every key is always present (None when the manifest does
not give it), so that applying changes only what the manifest names.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

from ..jsondoc import JsonObject
from .model import AppManifest, ProcessSpec, RouteSpec, SidecarSpec, known_fields


class ProcessWire(TypedDict):
    type: str
    command: str | None
    memory: int | None
    disk_quota: int | None
    instances: int | None
    health_check_type: str | None
    health_check_http_endpoint: str | None
    timeout: int | None
    health_check_invocation_timeout: int | None


class SidecarWire(TypedDict):
    name: str
    command: str
    process_types: list[str]
    memory: int | None


class RouteWire(TypedDict):
    route: str
    protocol: str | None
    options: JsonObject | None


class AppWire(TypedDict):
    """One app; the keys in this order (the order `to_wire` writes them)."""

    name: str
    path: str | None
    buildpacks: list[str] | None
    stack: str | None
    command: str | None
    memory: int | None
    disk_quota: int | None
    instances: int | None
    health_check_type: str | None
    health_check_http_endpoint: str | None
    timeout: int | None
    health_check_invocation_timeout: int | None
    env: dict[str, str]
    processes: list[ProcessWire]
    sidecars: list[SidecarWire]
    routes: list[RouteWire] | None
    random_route: bool | None
    no_route: bool | None
    default_route: bool | None


class ManifestWire(TypedDict):
    applications: list[AppWire]


def to_wire(app: AppManifest) -> AppWire:
    """The app as JSON-able data of the shared shape (every key, in a fixed order)."""
    return AppWire(
        name=app.name,
        path=str(app.path) if app.path is not None else None,
        buildpacks=list(app.buildpacks) if app.buildpacks is not None else None,
        stack=app.stack,
        command=app.command,
        memory=app.memory,
        disk_quota=app.disk_quota,
        instances=app.instances,
        health_check_type=app.health_check_type,
        health_check_http_endpoint=app.health_check_http_endpoint,
        timeout=app.timeout,
        health_check_invocation_timeout=app.health_check_invocation_timeout,
        env=dict(app.env),
        processes=[_process_wire(p) for p in app.processes],
        sidecars=[SidecarWire(name=s.name, command=s.command, process_types=list(s.process_types),
                              memory=s.memory) for s in app.sidecars],
        routes=[RouteWire(route=r.route, protocol=r.protocol, options=r.options) for r in app.routes]
        if app.routes is not None else None,
        random_route=app.random_route,
        no_route=app.no_route,
        default_route=app.default_route,
    )


def _process_wire(p: ProcessSpec) -> ProcessWire:
    return ProcessWire(
        type=p.type, command=p.command, memory=p.memory, disk_quota=p.disk_quota, instances=p.instances,
        health_check_type=p.health_check_type, health_check_http_endpoint=p.health_check_http_endpoint,
        timeout=p.timeout, health_check_invocation_timeout=p.health_check_invocation_timeout,
    )


def from_wire(data: Mapping[str, Any]) -> AppManifest:
    """The inverse of `to_wire`; missing keys take their defaults, unknown keys are ignored."""
    values = known_fields(AppManifest, data)
    if values.get("path") is not None:
        values["path"] = Path(values["path"])
    if values.get("buildpacks") is not None:
        values["buildpacks"] = list(values["buildpacks"])
    values["env"] = {str(k): str(v) for k, v in (values.get("env") or {}).items()}
    values["processes"] = [ProcessSpec(**known_fields(ProcessSpec, p)) for p in values.get("processes") or []]
    values["sidecars"] = [_sidecar(s) for s in values.get("sidecars") or []]
    if values.get("routes") is not None:
        values["routes"] = [RouteSpec(**known_fields(RouteSpec, r)) for r in values["routes"]]
    return AppManifest(**values)


def _sidecar(data: Mapping[str, Any]) -> SidecarSpec:
    values = known_fields(SidecarSpec, data)
    values["process_types"] = list(values.get("process_types") or [])
    return SidecarSpec(**values)


def manifest_to_wire(apps: list[AppManifest]) -> ManifestWire:
    """The whole `apply_manifest` body."""
    return ManifestWire(applications=[to_wire(a) for a in apps])


def manifest_from_wire(payload: Mapping[str, Any]) -> list[AppManifest]:
    """The apps of an `apply_manifest` JSON body."""
    return [from_wire(a) for a in payload.get("applications") or []]
