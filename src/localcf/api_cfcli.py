"""The CAPI v3 calls Cloud Foundry's own `cf` CLI (v7) makes that localcf's own client does not.

localcf has one organization (`localcf`), one space (`dev`), one user (`admin`), one shared domain
(`apps.localhost`) and one stack (`cflinuxfs4`); these are served in Cloud Controller's shapes so
that `cf target`, `cf apps`, `cf app`, `cf push`, `cf events`, `cf delete -r` and the buildpack
verbs work unchanged. Registered on the API's routes when `localcf.api` imports this module.

- `/v3/organizations`, `/v3/organizations/:guid/domains[/default]`, `/v3/spaces`, `/v3/spaces/:guid`,
  `/v3/spaces/:guid/features`, `/v3/spaces/:guid/manifest_diff`, `/v3/spaces/:guid/routes` (DELETE
  of unmapped routes), `/v3/domains`, `/v3/stacks`, `/v3/feature_flags`, `/v3/users`, `/v3/roles`
- `/v3/routes` (filters, POST), `/v3/routes/:guid` (GET, DELETE), `/v3/routes/:guid/destinations`
- `/v3/processes/:guid/stats` in Cloud Controller's shape (`resources` of `{type, index, state,
  usage, host, uptime, mem_quota, ...}`)
- `/v3/resource_matches` (the resource pool: files already uploaded), the cf CLI's multipart
  `POST /v3/packages/:guid/upload` (`bits` zip plus `resources` the pool already holds)
- `/v3/spaces/:guid/actions/apply_manifest` as an asynchronous job, `/v3/jobs/:guid`
- `/v3/apps` filters the cf CLI sends (`space_guids`, `names`, `include=space.organization`)
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import zipfile
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from . import api, logcache, resource_pool
from . import presenters as P
from .api import GUID, Raw, Request, route
from .controller import (
    DEFAULT_DOMAIN,
    ORG_GUID,
    ORG_NAME,
    SPACE_GUID,
    SPACE_NAME,
    STACK,
    USER_GUID,
    USER_NAME,
    ApiError,
    Controller,
    not_found,
    unprocessable,
)
from .entry import override
from .records import Route
from .store import new_guid

DOMAIN_GUID = "d0d0d0d0-0000-4000-8000-00000000c0de"
QUOTA_GUID = "90a79a70-0000-4000-8000-00000000c0de"
STACK_GUID = "57ac4a11-0000-4000-8000-00000000c0de"
ROLE_GUIDS = {"organization_manager": "a11a0001-0000-4000-8000-00000000c0de",
              "space_developer": "a11a0002-0000-4000-8000-00000000c0de"}
FEATURE_FLAGS = {
    "app_bits_upload": True, "app_scaling": True, "diego_docker": False, "env_var_visibility": True,
    "hide_marketplace_from_unauthenticated_users": False, "private_domain_creation": False,
    "resource_matching": True, "route_creation": True, "route_sharing": False,
    "service_instance_creation": True, "service_instance_sharing": False, "set_roles_by_username": True,
    "space_developer_env_var_visibility": True, "space_scoped_private_broker_creation": True,
    "task_creation": True, "unset_roles_by_username": True, "user_org_creation": False,
}


def _c(req: Request) -> Controller:
    return req.handler.server.controller  # type: ignore[attr-defined]


def _meta() -> dict[str, Any]:
    return {"labels": {}, "annotations": {}}


def _born(c: Controller) -> str:
    """When this foundation was set up: the state dir's token, written once on first start."""
    try:
        ts = os.stat(c.state.token_file).st_mtime
    except OSError:
        ts = time.time()
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _maybe(get: Any, guid: str) -> Any:
    """A record by guid, or None where the controller answers that it does not exist."""
    try:
        return get(guid)
    except ApiError:
        return None


def _filtered(values: list[str], wanted: str) -> bool:
    """A `names=`/`guids=` filter: no filter passes everything."""
    return not values or wanted in values


def _page(c: Controller, req: Request, path: str, resources: list[dict[str, Any]],
          included: dict[str, Any] | None = None) -> dict[str, Any]:
    body = P.paginated(c.base_url, path, resources)
    if included is not None:
        body["included"] = included
    return body


# ------------------------------------------------------------------------- organizations

def organization(c: Controller) -> dict[str, Any]:
    b, g, born = c.base_url, ORG_GUID, _born(c)
    return {"guid": g, "created_at": born, "updated_at": born, "name": ORG_NAME, "suspended": False,
            "relationships": {"quota": {"data": {"guid": QUOTA_GUID}}}, "metadata": _meta(),
            "links": {"self": {"href": f"{b}/v3/organizations/{g}"},
                      "domains": {"href": f"{b}/v3/organizations/{g}/domains"},
                      "default_domain": {"href": f"{b}/v3/organizations/{g}/domains/default"},
                      "quota": {"href": f"{b}/v3/organization_quotas/{QUOTA_GUID}"}}}


def space(c: Controller) -> dict[str, Any]:
    b, g, born = c.base_url, SPACE_GUID, _born(c)
    return {"guid": g, "created_at": born, "updated_at": born, "name": SPACE_NAME,
            "relationships": {"organization": {"data": {"guid": ORG_GUID}}, "quota": {"data": None}},
            "metadata": _meta(),
            "links": {"self": {"href": f"{b}/v3/spaces/{g}"},
                      "features": {"href": f"{b}/v3/spaces/{g}/features"},
                      "organization": {"href": f"{b}/v3/organizations/{ORG_GUID}"},
                      "apply_manifest": {"href": f"{b}/v3/spaces/{g}/actions/apply_manifest", "method": "POST"}}}


def domain(c: Controller) -> dict[str, Any]:
    b, g, born = c.base_url, DOMAIN_GUID, _born(c)
    return {"guid": g, "created_at": born, "updated_at": born, "name": DEFAULT_DOMAIN, "internal": False,
            "router_group": None, "supported_protocols": ["http"], "metadata": _meta(),
            "relationships": {"organization": {"data": None}, "shared_organizations": {"data": []}},
            "links": {"self": {"href": f"{b}/v3/domains/{g}"},
                      "route_reservations": {"href": f"{b}/v3/domains/{g}/route_reservations"}}}


def _org_guid_ok(guid: str) -> None:
    if guid != ORG_GUID:
        raise not_found("Organization")


def _space_guid_ok(guid: str) -> None:
    if guid != SPACE_GUID:
        raise not_found("Space")


@route("GET", "/v3/organizations")
def list_orgs(req: Request) -> Any:
    c = _c(req)
    found = [organization(c)] if _filtered(req.q("names"), ORG_NAME) and _filtered(req.q("guids"), ORG_GUID) else []
    return _page(c, req, "/v3/organizations", found)


@route("GET", f"/v3/organizations/{GUID}")
def get_org(req: Request, guid: str) -> Any:
    _org_guid_ok(guid)
    return organization(_c(req))


@route("GET", f"/v3/organizations/{GUID}/domains")
def org_domains(req: Request, guid: str) -> Any:
    _org_guid_ok(guid)
    c = _c(req)
    found = [domain(c)] if _filtered(req.q("names"), DEFAULT_DOMAIN) else []
    return _page(c, req, f"/v3/organizations/{guid}/domains", found)


@route("GET", f"/v3/organizations/{GUID}/domains/default")
def org_default_domain(req: Request, guid: str) -> Any:
    _org_guid_ok(guid)
    return domain(_c(req))


@route("GET", "/v3/spaces")
def list_spaces(req: Request) -> Any:
    c = _c(req)
    ok = (_filtered(req.q("names"), SPACE_NAME) and _filtered(req.q("guids"), SPACE_GUID)
          and _filtered(req.q("organization_guids"), ORG_GUID))
    included = {"organizations": [organization(c)]} if "organization" in req.q("include") else None
    return _page(c, req, "/v3/spaces", [space(c)] if ok else [], included)


@override("GET", f"/v3/spaces/{GUID}")
def get_space(req: Request, guid: str) -> Any:
    _space_guid_ok(guid)
    return space(_c(req))


@route("GET", f"/v3/spaces/{GUID}/features/(?P<feature>[^/]+)")
def space_feature(req: Request, guid: str, feature: str) -> Any:
    _space_guid_ok(guid)
    if feature != "ssh":
        raise not_found("Feature")
    return {"name": "ssh", "description": "Enable SSHing into apps in the space.", "enabled": True}


@route("GET", "/v3/domains")
def list_domains(req: Request) -> Any:
    c = _c(req)
    ok = _filtered(req.q("names"), DEFAULT_DOMAIN) and _filtered(req.q("guids"), DOMAIN_GUID)
    return _page(c, req, "/v3/domains", [domain(c)] if ok else [])


@route("GET", f"/v3/domains/{GUID}")
def get_domain(req: Request, guid: str) -> Any:
    if guid != DOMAIN_GUID:
        raise not_found("Domain")
    return domain(_c(req))


@route("GET", "/v3/stacks")
def list_stacks(req: Request) -> Any:
    c = _c(req)
    born = _born(c)
    found: list[dict[str, Any]] = [{"guid": STACK_GUID, "created_at": born, "updated_at": born, "name": STACK,
              "description": "The stack localcf runs apps on: the host's own system directories",
              "build_rootfs_image": STACK, "run_rootfs_image": STACK, "default": True, "metadata": _meta(),
              "links": {"self": {"href": f"{c.base_url}/v3/stacks/{STACK_GUID}"}}}]
    return _page(c, req, "/v3/stacks", [s for s in found if _filtered(req.q("names"), s["name"])])


@route("GET", "/v3/feature_flags")
def list_feature_flags(req: Request) -> Any:
    c = _c(req)
    flags = [{"name": k, "enabled": v, "updated_at": None, "custom_error_message": None,
              "links": {"self": {"href": f"{c.base_url}/v3/feature_flags/{k}"}}}
             for k, v in sorted(FEATURE_FLAGS.items())]
    return _page(c, req, "/v3/feature_flags", flags)


@route("GET", "/v3/feature_flags/(?P<name>[^/]+)")
def get_feature_flag(req: Request, name: str) -> Any:
    if name not in FEATURE_FLAGS:
        raise not_found("Feature flag")
    return {"name": name, "enabled": FEATURE_FLAGS[name], "updated_at": None, "custom_error_message": None,
            "links": {"self": {"href": f"{_c(req).base_url}/v3/feature_flags/{name}"}}}


def user(c: Controller) -> dict[str, Any]:
    born = _born(c)
    return {"guid": USER_GUID, "created_at": born, "updated_at": born, "username": USER_NAME,
            "presentation_name": USER_NAME, "origin": "uaa", "metadata": _meta(),
            "links": {"self": {"href": f"{c.base_url}/v3/users/{USER_GUID}"}}}


@route("GET", "/v3/users")
def list_users(req: Request) -> Any:
    c = _c(req)
    ok = _filtered(req.q("usernames"), USER_NAME) and _filtered(req.q("guids"), USER_GUID)
    return _page(c, req, "/v3/users", [user(c)] if ok else [])


@route("GET", "/v3/roles")
def list_roles(req: Request) -> Any:
    c = _c(req)
    born = _born(c)
    roles: list[dict[str, Any]] = []
    for rtype, g in ROLE_GUIDS.items():
        rel: dict[str, Any] = {"user": {"data": {"guid": USER_GUID}},
                               "organization": {"data": {"guid": ORG_GUID} if rtype.startswith("org") else None},
                               "space": {"data": {"guid": SPACE_GUID} if rtype.startswith("space") else None}}
        roles.append({"guid": g, "created_at": born, "updated_at": born, "type": rtype, "relationships": rel,
                      "links": {"self": {"href": f"{c.base_url}/v3/roles/{g}"}}})
    roles = [r for r in roles if _filtered(req.q("types"), r["type"])]
    included = {"users": [user(c)]} if "user" in req.q("include") else None
    return _page(c, req, "/v3/roles", roles, included)


# --------------------------------------------------------------------------------- apps

@override("GET", "/v3/apps")
def list_apps(req: Request) -> Any:
    c = _c(req)
    if not _filtered(req.q("space_guids"), SPACE_GUID) or not _filtered(req.q("organization_guids"), ORG_GUID):
        return _page(c, req, "/v3/apps", [])
    names, guids = req.q("names"), req.q("guids")
    apps = [a for a in c.apps() if _filtered(names, a.name) and _filtered(guids, a.guid)]
    if (req.query.get("order_by") or [""])[-1].lstrip("-") == "name":
        apps = _ordered(req, apps)
    include = req.q("include")
    included = None
    if "space" in include or "space.organization" in include:
        included = {"spaces": [space(c)]}
        if "space.organization" in include:
            included["organizations"] = [organization(c)]
    return _page(c, req, "/v3/apps", [P.app(c, a) for a in apps], included)


# --------------------------------------------------------------------------------- jobs

_JOBS: dict[str, dict[str, Any]] = {}
_JOBS_LOCK = threading.Lock()
_JOBS_KEPT = 500


def run_job(c: Controller, operation: str, work: Any, links: dict[str, Any] | None = None) -> str:
    """Run `work()` as a Cloud Controller job and return the job's guid.

    localcf's operations are quick, so the work runs before the 202 is answered and the first poll
    (the cf CLI polls at once, then every few seconds) already sees the outcome. A refusal of the
    request itself (an `ApiError`: an invalid manifest, a missing resource) is raised as the
    request's own error, as Cloud Controller validates before it enqueues; anything failing after
    that fails the job with Cloud Controller's `UnknownError`."""
    guid = new_guid()
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    job: dict[str, Any] = {"guid": guid, "created_at": now, "updated_at": now, "operation": operation,
                           "state": "PROCESSING", "errors": [], "warnings": [],
                           "links": {"self": {"href": f"{c.base_url}/v3/jobs/{guid}"}, **(links or {})}}
    try:
        work()
    except ApiError:
        raise
    except Exception as e:  # reported in the job, as Cloud Controller reports an unknown error
        job["errors"] = [{"code": 10001, "title": "UnknownError", "detail": f"An unknown error occurred: {e}"}]
        job["state"] = "FAILED"
    else:
        job["state"] = "COMPLETE"
    job["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with _JOBS_LOCK:
        _JOBS[guid] = job
        if len(_JOBS) > _JOBS_KEPT:
            for old in list(_JOBS)[: len(_JOBS) - _JOBS_KEPT]:
                del _JOBS[old]
    return guid


def _accepted(c: Controller, job_guid: str) -> Any:
    return 202, Raw(b"", "application/json", headers={"Location": f"{c.base_url}/v3/jobs/{job_guid}"})


@route("GET", f"/v3/jobs/{GUID}")
def get_job(req: Request, guid: str) -> Any:
    with _JOBS_LOCK:
        job = _JOBS.get(guid)
    if job is None:
        raise not_found("Job")
    return job


@override("POST", f"/v3/spaces/{GUID}/actions/apply_manifest")
def apply_manifest(req: Request, guid: str) -> Any:
    _space_guid_ok(guid)
    c = _c(req)
    # the API's own handler validates and applies; here it runs as the job CAPI answers with
    job = run_job(c, "app.apply_manifest", lambda: api.apply_manifest(req, guid),
                  {"space": {"href": f"{c.base_url}/v3/spaces/{guid}"}})
    return _accepted(c, job)


# ----------------------------------------------------------------------------- packages

@route("POST", "/v3/resource_matches")
def resource_matches(req: Request) -> Any:
    """Which of the listed files the platform already holds (see `localcf.resource_pool`)."""
    body = req.json()
    if not isinstance(body.get("resources"), list):
        raise unprocessable("Resources must be an array")
    return 201, {"resources": resource_pool.matches(_c(req).state.blobs, body["resources"])}


def _multipart(req: Request, filenames: dict[str, str] | None = None) -> dict[str, bytes]:
    """The parts of a `multipart/form-data` body, by field name (file names into `filenames`)."""
    ctype = req.headers.get("Content-Type") or ""
    head = f"Content-Type: {ctype}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    msg = BytesParser(policy=HTTP).parsebytes(head + req.body)
    if not msg.is_multipart():
        raise ApiError(400, 1001, "CF-MessageParseError",
                       "Request invalid due to parse error: expected a multipart/form-data body")
    parts: dict[str, bytes] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            payload = part.get_payload(decode=True)
            parts[name] = payload if isinstance(payload, bytes) else b""
            if filenames is not None and part.get_filename():
                filenames[name] = str(part.get_filename())
    return parts


@override("POST", f"/v3/packages/{GUID}/upload")
def upload_package(req: Request, guid: str) -> Any:
    """The bits of a package: a zip as localcf's client sends it, or the cf CLI's multipart form
    (`bits`, a zip of the files to upload, and `resources`, the files it says we already hold)."""
    c = _c(req)
    pkg = c.package_by_guid(guid)
    data = req.body
    if (req.headers.get("Content-Type") or "").startswith("multipart/form-data"):
        parts = _multipart(req)
        data = parts.get("bits", b"")
        try:
            claimed = json.loads(parts.get("resources") or b"[]")
        except ValueError as e:
            raise unprocessable(f"Resources could not be read: {e}") from None
        if not isinstance(claimed, list):
            raise unprocessable("Resources must be an array")
        if claimed:
            try:
                data = resource_pool.assemble(c.state.blobs, data, claimed)
            except (resource_pool.ResourceError, zipfile.BadZipFile) as e:
                raise unprocessable(str(e)) from None
        elif not data:
            data = _empty_zip()
    if pkg.state == "READY":
        raise unprocessable("Package has already been uploaded")
    uploaded = c.upload_package(guid, data)
    c.audit("audit.app.upload-bits", c.app_by_guid(pkg.app_guid), {})
    try:
        resource_pool.add_from_zip(c.state.blobs, c.package_path(uploaded))
    except (OSError, zipfile.BadZipFile):
        pass  # not a zip we can read: staging will say so; the pool just stays without its files
    return P.package(c, uploaded)


@override("POST", "/v3/builds")
def create_build(req: Request) -> Any:
    """`POST /v3/builds`, first letting a cf CLI that traces staging through Log Cache find its start.

    The cf CLI starts its staging trace from the newest envelope that is at least a second old
    (its Log Cache walk leaves younger ones for later, two seconds while it follows). localcf
    stages in about a second, right after the upload's `[API]` line, so without a pause the CLI
    would find its start only after staging and show none of it. When the client is the cf CLI,
    staging therefore begins once the CLI has read the app's newest envelope settled (at most
    `logcache.SETTLE_WAIT` seconds)."""
    body = req.json()
    pkg_guid = (body.get("package") or {}).get("guid")
    if (req.headers.get("User-Agent") or "").startswith("cf/") and isinstance(pkg_guid, str):
        c = _c(req)
        pkg = _maybe(c.package_by_guid, pkg_guid)
        if pkg is not None:
            logcache.wait_until_traced(c, pkg.app_guid, logcache.START_SETTLE_NS)
    return api.create_build(req)


def _empty_zip() -> bytes:
    buf = io.BytesIO()
    zipfile.ZipFile(buf, "w").close()
    return buf.getvalue()


@override("GET", f"/v3/builds/{GUID}")
def get_build(req: Request, guid: str) -> Any:
    """`GET /v3/builds/:guid`; to the cf CLI, a finished build is shown once its staging trace has
    settled and been read, so that the CLI, which stops tracing when it sees the build finished,
    has shown the last staging lines: at most `logcache.SETTLE_WAIT` seconds later, and not at all
    when its poll comes two seconds after staging ended, as it mostly does (it polls every 3 s)."""
    c = _c(req)
    build = _maybe(c.build_by_guid, guid)
    if (build is not None and build.state in ("STAGED", "FAILED")
            and (req.headers.get("User-Agent") or "").startswith("cf/")):
        logcache.wait_until_traced(c, build.app_guid)
    return api.get_build(req, guid)


@route("GET", f"/v3/apps/{GUID}/processes/(?P<ptype>[^/]+)/stats")
def app_process_stats(req: Request, guid: str, ptype: str) -> Any:
    c = _c(req)
    c.app_by_guid(guid)
    proc = c.process(guid, ptype)
    if not proc:
        raise not_found("Process")
    return api.process_stats(req, proc.guid)


@override("DELETE", f"/v3/apps/{GUID}")
def delete_app(req: Request, guid: str) -> Any:
    """`DELETE /v3/apps/:guid` as Cloud Controller answers it: 202 with the deletion job's Location."""
    c = _c(req)
    app = c.app_by_guid(guid)
    job = run_job(c, "app.delete", lambda: c.delete_app(app.guid))
    return _accepted(c, job)


@override("POST", f"/v3/buildpacks/{GUID}/upload")
def upload_buildpack(req: Request, guid: str) -> Any:
    """A buildpack's zip: the cf CLI's multipart form (`bits`, with its file name), processed as a
    job (202 and the job's Location, as Cloud Controller answers); localcf's own client sends the
    zip as the body with `X-Filename` and gets the buildpack back."""
    if not (req.headers.get("Content-Type") or "").startswith("multipart/form-data"):
        return api.upload_buildpack(req, guid)
    c = _c(req)
    c.buildpack_by_guid(guid)
    names: dict[str, str] = {}
    parts = _multipart(req, names)
    if "bits" not in parts:
        raise unprocessable("Upload must include a bits file: the buildpack zip")
    data, filename = parts["bits"], os.path.basename(names.get("bits") or "buildpack.zip")
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise unprocessable(f"{filename} is not a zip file: upload the buildpack as a zip")
    job = run_job(c, "buildpack.upload", lambda: c.upload_buildpack(guid, filename, data),
                  {"buildpack": {"href": f"{c.base_url}/v3/buildpacks/{guid}"}})
    return _accepted(c, job)


@override("DELETE", f"/v3/buildpacks/{GUID}")
def delete_buildpack(req: Request, guid: str) -> Any:
    c = _c(req)
    c.buildpack_by_guid(guid)
    job = run_job(c, "buildpack.delete", lambda: c.delete_buildpack(guid))
    return _accepted(c, job)


@override("GET", "/v3/audit_events")
def audit_events(req: Request) -> Any:
    """`GET /v3/audit_events` with the ordering the cf CLI asks for (`order_by=-created_at`)."""
    body = api.audit_events(req)
    order = (req.query.get("order_by") or ["created_at"])[-1]
    if order.lstrip("-") == "created_at" and order.startswith("-"):
        body["resources"] = body["resources"][::-1]
    return body


# ------------------------------------------------------------------------------- routes

@route("GET", f"/v3/routes/{GUID}")
def get_route(req: Request, guid: str) -> Any:
    c = _c(req)
    r = next((r for r in c.routes() if r.guid == guid), None)
    if r is None:
        raise not_found("Route")
    return P.route(c, r)


@route("DELETE", f"/v3/routes/{GUID}")
def delete_route(req: Request, guid: str) -> Any:
    """`DELETE /v3/routes/:guid` (`cf delete -r`, `cf delete-route`) as a job. localcf's routes
    belong to one app and go with it, so after `DELETE /v3/apps/:guid` they are already gone."""
    c = _c(req)
    if not any(r.guid == guid for r in c.routes()):
        raise not_found("Route")
    job = run_job(c, "route.delete", lambda: c.store.delete(Route, guid))
    return _accepted(c, job)


# ------------------------------------------------------------------ lists the cf CLI filters

def _ordered(req: Request, records: list[Any]) -> list[Any]:
    """`order_by=created_at|-created_at|updated_at|-updated_at|name|-name`, as Cloud Controller sorts."""
    order = (req.query.get("order_by") or [""])[-1]
    key = order.lstrip("-")
    if key in ("created_at", "updated_at", "name"):
        records = sorted(records, key=lambda r: (str(getattr(r, key, "") or ""),))
        if order.startswith("-"):
            records = records[::-1]
    return records


def _by_apps(req: Request, c: Controller, kind: str) -> list[Any]:
    """The records of one kind (processes, packages, droplets, builds, routes) of the apps named by
    `app_guids` (all apps without it), filtered by `guids` and `states`."""
    per_app: Any = {"processes": c.processes, "packages": c.packages, "droplets": c.droplets, "builds": c.builds,
               "routes": c.routes}[kind]
    wanted = req.q("app_guids") or [a.guid for a in c.apps()]
    found = [r for g in wanted for r in per_app(g)]
    guids = req.q("guids")
    states = req.q("states")
    return [r for r in found if _filtered(guids, r.guid) and (not states or getattr(r, "state", None) in states)]


@route("GET", "/v3/processes")
def list_processes(req: Request) -> Any:
    c = _c(req)
    found = [p for p in _by_apps(req, c, "processes") if _filtered(req.q("types"), p.type)]
    return _page(c, req, "/v3/processes", [P.process(c, p) for p in _ordered(req, found)])


@route("GET", "/v3/packages")
def list_packages(req: Request) -> Any:
    c = _c(req)
    return _page(c, req, "/v3/packages", [P.package(c, p) for p in _ordered(req, _by_apps(req, c, "packages"))])


@route("GET", "/v3/droplets")
def list_droplets(req: Request) -> Any:
    c = _c(req)
    return _page(c, req, "/v3/droplets", [P.droplet(c, d) for d in _ordered(req, _by_apps(req, c, "droplets"))])


@route("GET", "/v3/builds")
def list_builds(req: Request) -> Any:
    c = _c(req)
    return _page(c, req, "/v3/builds", [P.build(c, b) for b in _ordered(req, _by_apps(req, c, "builds"))])


@override("GET", "/v3/routes")
def list_routes(req: Request) -> Any:
    c = _c(req)
    found = _by_apps(req, c, "routes")
    hosts, paths = req.q("hosts"), req.q("paths")
    found = [r for r in found if _filtered(hosts, r.host.partition(".")[0]) and _filtered(paths, r.path)]
    if not _filtered(req.q("space_guids"), SPACE_GUID) or not _filtered(req.q("domain_guids"), DOMAIN_GUID):
        found = []
    return _page(c, req, "/v3/routes", [P.route(c, r) for r in found])


@route("POST", f"/v3/apps/{GUID}/processes/(?P<ptype>[^/]+)/actions/scale")
def scale_app_process(req: Request, guid: str, ptype: str) -> Any:
    c = _c(req)
    c.app_by_guid(guid)
    proc = c.process(guid, ptype)
    if not proc:
        raise not_found("Process")
    return api.scale_process(req, proc.guid)


@route("GET", f"/v3/packages/{GUID}/droplets")
def package_droplets(req: Request, guid: str) -> Any:
    c = _c(req)
    pkg = c.package_by_guid(guid)
    states = req.q("states")
    found = [d for d in c.droplets(pkg.app_guid)
             if d.package_guid == guid and (not states or d.state in states)]
    return _page(c, req, f"/v3/packages/{guid}/droplets", [P.droplet(c, d) for d in _ordered(req, found)])


@route("GET", f"/v3/apps/{GUID}/manifest")
def app_manifest(req: Request, guid: str) -> Any:
    """The app's settings as a manifest (`cf create-app-manifest`), in Cloud Controller's layout."""
    import yaml
    c = _c(req)
    app = c.app_by_guid(guid)
    entry: dict[str, Any] = {"name": app.name}
    if app.buildpacks:
        entry["buildpacks"] = list(app.buildpacks)
    if app.env:
        entry["env"] = dict(app.env)
    procs = []
    for p in c.processes(guid):
        proc: dict[str, Any] = {"type": p.type, "instances": p.instances,
                                "memory": f"{p.memory_in_mb}M", "disk_quota": f"{p.disk_in_mb}M",
                                "health-check-type": p.health_check_type}
        if p.user_command:
            proc["command"] = p.user_command
        if p.health_check_type == "http":
            proc["health-check-http-endpoint"] = p.health_check_endpoint or "/"
        procs.append(proc)
    entry["processes"] = procs
    routes = c.routes(guid)
    if routes:
        entry["routes"] = [{"route": r.name, "protocol": "http1"} for r in routes]
    else:
        entry["no-route"] = True
    sidecars = []
    for sc in c.sidecars(guid):
        if sc.origin != "user":
            continue  # buildpack sidecars come back with the droplet
        item: dict[str, Any] = {"name": sc.name, "process_types": sorted(sc.process_types),
                                "command": sc.command}
        if sc.memory_in_mb is not None:
            item["memory"] = f"{sc.memory_in_mb}M"
        sidecars.append(item)
    if sidecars:
        entry["sidecars"] = sidecars
    entry["stack"] = app.stack or STACK
    text = "---\n" + yaml.safe_dump({"applications": [entry]}, sort_keys=False, default_flow_style=False)
    return Raw(text.encode(), "application/x-yaml")
