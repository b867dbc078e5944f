"""CAPI v3 JSON shapes of localcf's records: the one place that knows the wire format.

Each function takes a typed record (`localcf.records`) and returns the JSON object Cloud Controller
serves for it, fields named as Cloud Controller names them. Every return value here is a JSON
boundary, so it is a `JsonObject` (`JsonObject`): json.dumps writes it as it is.
"""

from __future__ import annotations

import time
from dataclasses import asdict

from .controller import Controller
from .records import (
    ORG_GUID,
    ORG_NAME,
    SPACE_GUID,
    SPACE_NAME,
    STACK,
    App,
    AuditEvent,
    Build,
    Buildpack,
    Droplet,
    InstanceStats,
    JsonObject,
    Package,
    Process,
    Route,
    Sidecar,
)


def paginated(base: str, path: str, resources: list[JsonObject]) -> JsonObject:
    href = {"href": f"{base}{path}"}
    return {
        "pagination": {"total_results": len(resources), "total_pages": 1, "first": href,
                       "last": href, "next": None, "previous": None},
        "resources": resources,
    }


def _meta() -> JsonObject:
    return {"labels": {}, "annotations": {}}


def app(c: Controller, rec: App) -> JsonObject:
    b = c.base_url
    g = rec.guid
    return {
        "guid": g, "name": rec.name, "state": rec.state,
        "created_at": rec.created_at, "updated_at": rec.updated_at,
        "lifecycle": {"type": "buildpack",
                      "data": {"buildpacks": list(rec.buildpacks), "stack": rec.stack or STACK}},
        "relationships": {"space": {"data": {"guid": SPACE_GUID}},
                          "current_droplet": {"data": {"guid": rec.droplet_guid} if rec.droplet_guid else None}},
        "metadata": _meta(),
        "links": {
            "self": {"href": f"{b}/v3/apps/{g}"},
            "space": {"href": f"{b}/v3/spaces/{SPACE_GUID}"},
            "processes": {"href": f"{b}/v3/apps/{g}/processes"},
            "packages": {"href": f"{b}/v3/apps/{g}/packages"},
            "environment_variables": {"href": f"{b}/v3/apps/{g}/environment_variables"},
            "current_droplet": {"href": f"{b}/v3/apps/{g}/droplets/current"},
            "droplets": {"href": f"{b}/v3/apps/{g}/droplets"},
            "sidecars": {"href": f"{b}/v3/apps/{g}/sidecars"},
        },
    }


def app_env(c: Controller, rec: App, web: Process | None, routes: list[Route]) -> JsonObject:
    """`GET /v3/apps/:guid/env`: the env groups Cloud Controller shows for an app."""
    uris = [r.name for r in routes]
    vcap = {"application_id": rec.guid, "application_name": rec.name, "name": rec.name,
            "application_uris": uris, "uris": uris,
            "space_name": SPACE_NAME, "space_id": SPACE_GUID, "organization_name": ORG_NAME,
            "cf_api": c.base_url, "limits": {"mem": web.memory_in_mb if web else None,
                                             "disk": web.disk_in_mb if web else None, "fds": 16384},
            "application_version": web.version if web else None, "version": web.version if web else None}
    return {"staging_env_json": {}, "running_env_json": {},
            "environment_variables": dict(rec.env),
            "system_env_json": {"VCAP_SERVICES": {}},
            "application_env_json": {"VCAP_APPLICATION": vcap}}


def environment_variables(c: Controller, rec: App) -> JsonObject:
    """`GET /v3/apps/:guid/environment_variables`."""
    return {"var": dict(rec.env),
            "links": {"self": {"href": f"{c.base_url}/v3/apps/{rec.guid}/environment_variables"},
                      "app": {"href": f"{c.base_url}/v3/apps/{rec.guid}"}}}


def process(c: Controller, rec: Process) -> JsonObject:
    b = c.base_url
    g = rec.guid
    hc_data: JsonObject = {"timeout": rec.health_check_timeout,
                           "invocation_timeout": rec.health_check_invocation_timeout}
    if rec.health_check_type == "http":
        hc_data["endpoint"] = rec.health_check_endpoint or "/"
    return {
        "guid": g, "type": rec.type, "command": c.effective_command(rec),
        "instances": rec.instances, "memory_in_mb": rec.memory_in_mb, "disk_in_mb": rec.disk_in_mb,
        "log_rate_limit_in_bytes_per_second": -1,
        "health_check": {"type": rec.health_check_type, "data": hc_data},
        "readiness_health_check": {"type": "process", "data": {"invocation_timeout": None, "interval": None}},
        "relationships": {"app": {"data": {"guid": rec.app_guid}}, "revision": None},
        "metadata": _meta(), "version": rec.version or None,
        "created_at": rec.created_at, "updated_at": rec.updated_at,
        "links": {"self": {"href": f"{b}/v3/processes/{g}"},
                  "scale": {"href": f"{b}/v3/processes/{g}/actions/scale", "method": "POST"},
                  "app": {"href": f"{b}/v3/apps/{rec.app_guid}"},
                  "stats": {"href": f"{b}/v3/processes/{g}/stats"}},
    }


def process_stats(stats: list[InstanceStats]) -> JsonObject:
    """`GET /v3/processes/:guid/stats`."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"resources": [{
        "type": s.type, "index": s.index, "state": s.state, "instance_guid": s.instance_guid,
        "usage": {"time": now, "cpu": s.cpu, "mem": s.mem, "disk": s.disk},
        "host": s.host, "uptime": s.uptime, "mem_quota": s.mem_quota, "disk_quota": s.disk_quota,
        "fds_quota": s.fds_quota, "isolation_segment": None, "details": s.details, "crash_count": s.crash_count,
    } for s in stats]}


def sidecar(c: Controller, rec: Sidecar) -> JsonObject:
    return {
        "guid": rec.guid, "name": rec.name, "command": rec.command,
        "process_types": sorted(rec.process_types),
        "memory_in_mb": rec.memory_in_mb, "origin": rec.origin,
        "relationships": {"app": {"data": {"guid": rec.app_guid}}},
        "created_at": rec.created_at, "updated_at": rec.updated_at,
    }


def package(c: Controller, rec: Package) -> JsonObject:
    b = c.base_url
    g = rec.guid
    return {
        "guid": g, "type": "bits", "state": rec.state,
        "data": {"checksum": {"type": "sha256", "value": rec.checksum}, "error": None},
        "relationships": {"app": {"data": {"guid": rec.app_guid}}},
        "metadata": _meta(), "created_at": rec.created_at, "updated_at": rec.updated_at,
        "links": {"self": {"href": f"{b}/v3/packages/{g}"},
                  "upload": {"href": f"{b}/v3/packages/{g}/upload", "method": "POST"},
                  "download": {"href": f"{b}/v3/packages/{g}/download"},
                  "app": {"href": f"{b}/v3/apps/{rec.app_guid}"}},
    }


def build(c: Controller, rec: Build) -> JsonObject:
    b = c.base_url
    g = rec.guid
    return {
        "guid": g, "state": rec.state, "error": rec.error,
        "staging_memory_in_mb": 1024, "staging_disk_in_mb": 1024,
        "lifecycle": {"type": "buildpack", "data": {"buildpacks": list(rec.buildpacks),
                                                    "stack": rec.stack or STACK}},
        "package": {"guid": rec.package_guid},
        "droplet": {"guid": rec.droplet_guid} if rec.droplet_guid else None,
        "created_by": {"guid": "admin", "name": "admin", "email": "admin"},
        "relationships": {"app": {"data": {"guid": rec.app_guid}}},
        "metadata": _meta(), "created_at": rec.created_at, "updated_at": rec.updated_at,
        "links": {"self": {"href": f"{b}/v3/builds/{g}"}, "app": {"href": f"{b}/v3/apps/{rec.app_guid}"}},
    }


def droplet(c: Controller, rec: Droplet) -> JsonObject:
    b = c.base_url
    g = rec.guid
    return {
        "guid": g, "state": rec.state, "error": rec.error,
        "lifecycle": {"type": "buildpack", "data": {}},
        "execution_metadata": rec.execution_metadata,
        "process_types": dict(rec.process_types),
        "checksum": {"type": "sha256", "value": rec.checksum},
        "buildpacks": [asdict(bp) for bp in rec.buildpacks],
        "stack": rec.stack or STACK, "image": None,
        "relationships": {"app": {"data": {"guid": rec.app_guid}}},
        "metadata": _meta(), "created_at": rec.created_at, "updated_at": rec.updated_at,
        "links": {"self": {"href": f"{b}/v3/droplets/{g}"},
                  "package": {"href": f"{b}/v3/packages/{rec.package_guid}"},
                  "app": {"href": f"{b}/v3/apps/{rec.app_guid}"},
                  "download": {"href": f"{b}/v3/droplets/{g}/download"}},
    }


def buildpack(c: Controller, rec: Buildpack) -> JsonObject:
    b = c.base_url
    g = rec.guid
    return {
        "guid": g, "name": rec.name, "stack": rec.stack, "position": rec.position,
        "enabled": rec.enabled, "locked": rec.locked, "filename": rec.filename,
        "state": rec.state, "lifecycle": "buildpack",
        "metadata": _meta(), "created_at": rec.created_at, "updated_at": rec.updated_at,
        "links": {"self": {"href": f"{b}/v3/buildpacks/{g}"},
                  "upload": {"href": f"{b}/v3/buildpacks/{g}/upload", "method": "POST"}},
    }


def audit_event(c: Controller, rec: AuditEvent) -> JsonObject:
    return {
        "guid": rec.guid, "type": rec.type, "actor": asdict(rec.actor), "target": asdict(rec.target),
        "data": rec.data, "space": {"guid": SPACE_GUID}, "organization": {"guid": ORG_GUID},
        "created_at": rec.created_at, "updated_at": rec.updated_at,
        "links": {"self": {"href": f"{c.base_url}/v3/audit_events/{rec.guid}"}},
    }


def route(c: Controller, rec: Route) -> JsonObject:
    host, _, _domain = rec.host.partition(".")
    return {
        "guid": rec.guid, "host": host, "path": rec.path, "url": rec.name,
        "protocol": "http", "port": None,
        "destinations": [{"app": {"guid": rec.app_guid, "process": {"type": "web"}}, "port": 8080,
                          "protocol": "http1"}],
        "relationships": {"space": {"data": {"guid": SPACE_GUID}}},
        "metadata": _meta(), "created_at": rec.created_at, "updated_at": rec.updated_at,
    }
