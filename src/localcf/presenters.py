"""CAPI v3 JSON shapes of localcf's records (the fields we hold, named as Cloud Controller names them)."""

from __future__ import annotations

from typing import Any

from .controller import ORG_GUID, SPACE_GUID, STACK, Controller


def paginated(base: str, path: str, resources: list[dict[str, Any]]) -> dict[str, Any]:
    href = {"href": f"{base}{path}"}
    return {
        "pagination": {"total_results": len(resources), "total_pages": 1, "first": href,
                       "last": href, "next": None, "previous": None},
        "resources": resources,
    }


def _meta() -> dict[str, Any]:
    return {"labels": {}, "annotations": {}}


def app(c: Controller, rec: dict[str, Any]) -> dict[str, Any]:
    b = c.base_url
    g = rec["guid"]
    return {
        "guid": g, "name": rec["name"], "state": rec["state"],
        "created_at": rec["created_at"], "updated_at": rec["updated_at"],
        "lifecycle": {"type": "buildpack",
                      "data": {"buildpacks": rec.get("buildpacks") or [], "stack": rec.get("stack") or STACK}},
        "relationships": {"space": {"data": {"guid": SPACE_GUID}},
                          "current_droplet": {"data": {"guid": rec["droplet_guid"]} if rec.get("droplet_guid") else None}},
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


def process(c: Controller, rec: dict[str, Any]) -> dict[str, Any]:
    b = c.base_url
    g = rec["guid"]
    return {
        "guid": g, "type": rec["type"], "command": c.effective_command(rec),
        "instances": rec["instances"], "memory_in_mb": rec["memory_in_mb"], "disk_in_mb": rec["disk_in_mb"],
        "log_rate_limit_in_bytes_per_second": -1,
        "health_check": {"type": rec["health_check_type"],
                         "data": {"timeout": rec.get("health_check_timeout"),
                                  "invocation_timeout": rec.get("health_check_invocation_timeout"),
                                  **({"endpoint": rec.get("health_check_endpoint") or "/"}
                                     if rec["health_check_type"] == "http" else {})}},
        "readiness_health_check": {"type": "process", "data": {"invocation_timeout": None, "interval": None}},
        "relationships": {"app": {"data": {"guid": rec["app_guid"]}}, "revision": None},
        "metadata": _meta(), "version": rec.get("version"),
        "created_at": rec["created_at"], "updated_at": rec["updated_at"],
        "links": {"self": {"href": f"{b}/v3/processes/{g}"},
                  "scale": {"href": f"{b}/v3/processes/{g}/actions/scale", "method": "POST"},
                  "app": {"href": f"{b}/v3/apps/{rec['app_guid']}"},
                  "stats": {"href": f"{b}/v3/processes/{g}/stats"}},
    }


def sidecar(c: Controller, rec: dict[str, Any]) -> dict[str, Any]:
    return {
        "guid": rec["guid"], "name": rec["name"], "command": rec["command"],
        "process_types": sorted(rec.get("process_types") or []),
        "memory_in_mb": rec.get("memory_in_mb"), "origin": rec.get("origin", "user"),
        "relationships": {"app": {"data": {"guid": rec["app_guid"]}}},
        "created_at": rec["created_at"], "updated_at": rec["updated_at"],
    }


def package(c: Controller, rec: dict[str, Any]) -> dict[str, Any]:
    b = c.base_url
    g = rec["guid"]
    return {
        "guid": g, "type": "bits", "state": rec["state"],
        "data": {"checksum": {"type": "sha256", "value": rec.get("checksum")}, "error": None},
        "relationships": {"app": {"data": {"guid": rec["app_guid"]}}},
        "metadata": _meta(), "created_at": rec["created_at"], "updated_at": rec["updated_at"],
        "links": {"self": {"href": f"{b}/v3/packages/{g}"},
                  "upload": {"href": f"{b}/v3/packages/{g}/upload", "method": "POST"},
                  "download": {"href": f"{b}/v3/packages/{g}/download"},
                  "app": {"href": f"{b}/v3/apps/{rec['app_guid']}"}},
    }


def build(c: Controller, rec: dict[str, Any]) -> dict[str, Any]:
    b = c.base_url
    g = rec["guid"]
    return {
        "guid": g, "state": rec["state"], "error": rec.get("error"),
        "staging_memory_in_mb": 1024, "staging_disk_in_mb": 1024,
        "lifecycle": {"type": "buildpack", "data": {"buildpacks": rec.get("buildpacks") or [],
                                                    "stack": rec.get("stack") or STACK}},
        "package": {"guid": rec["package_guid"]},
        "droplet": {"guid": rec["droplet_guid"]} if rec.get("droplet_guid") else None,
        "created_by": {"guid": "admin", "name": "admin", "email": "admin"},
        "relationships": {"app": {"data": {"guid": rec["app_guid"]}}},
        "metadata": _meta(), "created_at": rec["created_at"], "updated_at": rec["updated_at"],
        "links": {"self": {"href": f"{b}/v3/builds/{g}"}, "app": {"href": f"{b}/v3/apps/{rec['app_guid']}"}},
    }


def droplet(c: Controller, rec: dict[str, Any]) -> dict[str, Any]:
    b = c.base_url
    g = rec["guid"]
    return {
        "guid": g, "state": rec["state"], "error": rec.get("error"),
        "lifecycle": {"type": "buildpack", "data": {}},
        "execution_metadata": rec.get("execution_metadata", ""),
        "process_types": rec.get("process_types") or {},
        "checksum": {"type": "sha256", "value": rec.get("checksum")},
        "buildpacks": rec.get("buildpacks") or [],
        "stack": rec.get("stack") or STACK, "image": None,
        "relationships": {"app": {"data": {"guid": rec["app_guid"]}}},
        "metadata": _meta(), "created_at": rec["created_at"], "updated_at": rec["updated_at"],
        "links": {"self": {"href": f"{b}/v3/droplets/{g}"},
                  "package": {"href": f"{b}/v3/packages/{rec.get('package_guid')}"},
                  "app": {"href": f"{b}/v3/apps/{rec['app_guid']}"},
                  "download": {"href": f"{b}/v3/droplets/{g}/download"}},
    }


def buildpack(c: Controller, rec: dict[str, Any]) -> dict[str, Any]:
    b = c.base_url
    g = rec["guid"]
    return {
        "guid": g, "name": rec["name"], "stack": rec.get("stack"), "position": rec["position"],
        "enabled": rec["enabled"], "locked": rec["locked"], "filename": rec.get("filename"),
        "state": rec.get("state", "READY"), "lifecycle": "buildpack",
        "metadata": _meta(), "created_at": rec["created_at"], "updated_at": rec["updated_at"],
        "links": {"self": {"href": f"{b}/v3/buildpacks/{g}"},
                  "upload": {"href": f"{b}/v3/buildpacks/{g}/upload", "method": "POST"}},
    }


def audit_event(c: Controller, rec: dict[str, Any]) -> dict[str, Any]:
    return {
        "guid": rec["guid"], "type": rec["type"], "actor": rec["actor"], "target": rec["target"],
        "data": rec.get("data") or {}, "space": {"guid": SPACE_GUID}, "organization": {"guid": ORG_GUID},
        "created_at": rec["created_at"], "updated_at": rec["updated_at"],
        "links": {"self": {"href": f"{c.base_url}/v3/audit_events/{rec['guid']}"}},
    }


def route(c: Controller, rec: dict[str, Any]) -> dict[str, Any]:
    host, _, domain = rec["host"].partition(".")
    return {
        "guid": rec["guid"], "host": host, "path": rec.get("path", ""), "url": rec["name"],
        "protocol": "http", "port": None,
        "destinations": [{"app": {"guid": rec["app_guid"], "process": {"type": "web"}}, "port": 8080,
                          "protocol": "http1"}],
        "relationships": {"space": {"data": {"guid": SPACE_GUID}}},
        "metadata": _meta(), "created_at": rec["created_at"], "updated_at": rec["updated_at"],
    }
