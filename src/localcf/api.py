"""The API's handlers: a CAPI v3 subset, one function per route.

The HTTP layer (token, body framing and caps, the server) is `localcf.httpapi`; the rules are the
controller's, the JSON shapes the presenters', field validation `localcf.validation`'s.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from . import presenters as P
from . import validation as V
from .constants import STACK
from .controller import SPACE_GUID, ApiError, Controller, not_found, unprocessable
from .httpapi import ROUTES, UPLOAD_MAX, ApiHandler, ApiServer, Raw, Request, Stream, Upgrade, route  # noqa: F401
from .jsondoc import JsonObject

if TYPE_CHECKING:
    from .cell import Instance
    from .records import App
    from .runtime import Container

GUID = r"(?P<guid>[^/]+)"


# ------------------------------------------------------------------------------------- handlers
# Each handler reads the request, asks the controller (or the cell, the stager, the log stream) and
# answers with a presenter's JSON: the records stay typed up to the presenters.

def _c(req: Request) -> Controller:
    controller: Controller = req.handler.server.controller  # type: ignore[attr-defined]
    return controller


@route("GET", "/")
def root(req: Request) -> Any:
    b = _c(req).base_url
    return {"links": {"self": {"href": b}, "cloud_controller_v3": {"href": f"{b}/v3", "meta": {"version": "3.180.0"}},
                      "logging": None, "app_ssh": {"href": b, "meta": {"oauth_client": "ssh-proxy"}}}}


@route("GET", "/v3/info")
def info(req: Request) -> Any:
    return {"name": "localcf", "build": "", "version": 0, "description": "An embedded Cloud Foundry",
            "links": {"self": {"href": f"{_c(req).base_url}/v3/info"}}}


@route("GET", "/v3/apps")
def list_apps(req: Request) -> Any:
    c = _c(req)
    return P.paginated(c.base_url, "/v3/apps", [P.app(c, a) for a in c.apps(req.q("names") or None)])


@route("POST", "/v3/apps")
def create_app(req: Request) -> Any:
    c = _c(req)
    body = req.json()
    V.app_create(body)
    lifecycle = (body.get("lifecycle") or {}).get("data") or {}
    app = c.create_app(body.get("name", ""), lifecycle.get("buildpacks"), body.get("environment_variables"),
                       lifecycle.get("stack"))
    return 201, P.app(c, app)


@route("GET", f"/v3/apps/{GUID}")
def get_app(req: Request, guid: str) -> Any:
    c = _c(req)
    return P.app(c, c.app_by_guid(guid))


@route("PATCH", f"/v3/apps/{GUID}")
def patch_app(req: Request, guid: str) -> Any:
    c = _c(req)
    app = c.app_by_guid(guid)
    body = req.json()
    V.app_update(body)
    changes: dict[str, object] = {}
    if "name" in body:
        changes["name"] = body["name"]
    lifecycle = (body.get("lifecycle") or {}).get("data") or {}
    if "buildpacks" in lifecycle:
        for bp in lifecycle["buildpacks"] or []:
            c.check_buildpack(bp)
        changes["buildpacks"] = lifecycle["buildpacks"] or []
    if lifecycle.get("stack"):
        changes["stack"] = lifecycle["stack"]
    if changes:
        app = c.update_app(guid, **changes)
    return P.app(c, app)


@route("DELETE", f"/v3/apps/{GUID}")
def delete_app(req: Request, guid: str) -> Any:
    _c(req).delete_app(guid)
    return 202, {}


@route("GET", f"/v3/apps/{GUID}/env")
def app_env(req: Request, guid: str) -> Any:
    c = _c(req)
    return P.app_env(c, c.app_by_guid(guid), c.process(guid, "web"), c.routes(guid))


@route("GET", f"/v3/apps/{GUID}/environment_variables")
def get_env_vars(req: Request, guid: str) -> Any:
    c = _c(req)
    return P.environment_variables(c, c.app_by_guid(guid))


@route("PATCH", f"/v3/apps/{GUID}/environment_variables")
def patch_env_vars(req: Request, guid: str) -> Any:
    c = _c(req)
    body = req.json()
    V.env_update(body)
    app = c.set_env(guid, body.get("var") or {})
    return {"var": dict(app.env)}


@route("GET", f"/v3/apps/{GUID}/processes")
def app_processes(req: Request, guid: str) -> Any:
    c = _c(req)
    c.app_by_guid(guid)
    return P.paginated(c.base_url, f"/v3/apps/{guid}/processes", [P.process(c, p) for p in c.processes(guid)])


@route("GET", f"/v3/apps/{GUID}/processes/(?P<ptype>[^/]+)")
def app_process(req: Request, guid: str, ptype: str) -> Any:
    c = _c(req)
    proc = c.process(guid, ptype)
    if not proc:
        raise not_found("Process")
    return P.process(c, proc)


@route("GET", f"/v3/processes/{GUID}")
def get_process(req: Request, guid: str) -> Any:
    c = _c(req)
    return P.process(c, c.process_by_guid(guid))


@route("PATCH", f"/v3/processes/{GUID}")
def patch_process(req: Request, guid: str) -> Any:
    c = _c(req)
    body = req.json()
    V.process_update(body)
    changes: dict[str, object] = {}
    if "command" in body:
        changes["user_command"] = body["command"]
    hc = body.get("health_check") or {}
    if hc.get("type"):
        changes["health_check_type"] = hc["type"]
    data = hc.get("data") or {}
    if "endpoint" in data:
        changes["health_check_endpoint"] = data["endpoint"]
    if "timeout" in data:
        changes["health_check_timeout"] = data["timeout"]
    if "invocation_timeout" in data:
        changes["health_check_invocation_timeout"] = data["invocation_timeout"]
    return P.process(c, c.update_process(guid, **changes))


@route("POST", f"/v3/processes/{GUID}/actions/scale")
def scale_process(req: Request, guid: str) -> Any:
    c = _c(req)
    body = req.json()
    changes: dict[str, object] = {}
    for key in ("instances", "memory_in_mb", "disk_in_mb"):
        if body.get(key) is not None:
            if not isinstance(body[key], int) or body[key] < 0:
                raise unprocessable(f"{key.capitalize().replace('_', ' ')} must be a non-negative integer")
            changes[key] = body[key]
    proc = c.update_process(guid, **changes)
    c.cell.converge_app(proc.app_guid)
    return 202, P.process(c, proc)


@route("GET", f"/v3/processes/{GUID}/stats")
def process_stats(req: Request, guid: str) -> Any:
    c = _c(req)
    return P.process_stats(c.cell.stats(c.process_by_guid(guid)))


@route("GET", f"/v3/apps/{GUID}/sidecars")
def app_sidecars(req: Request, guid: str) -> Any:
    c = _c(req)
    c.app_by_guid(guid)
    return P.paginated(c.base_url, f"/v3/apps/{guid}/sidecars", [P.sidecar(c, s) for s in c.sidecars(guid)])


@route("GET", f"/v3/processes/{GUID}/sidecars")
def process_sidecars(req: Request, guid: str) -> Any:
    c = _c(req)
    proc = c.process_by_guid(guid)
    return P.paginated(c.base_url, f"/v3/processes/{guid}/sidecars",
                       [P.sidecar(c, s) for s in c.sidecars(proc.app_guid, proc.type)])


@route("GET", f"/v3/sidecars/{GUID}")
def get_sidecar(req: Request, guid: str) -> Any:
    c = _c(req)
    return P.sidecar(c, c.sidecar_by_guid(guid))


@route("POST", f"/v3/apps/{GUID}/sidecars")
def create_sidecar(req: Request, guid: str) -> Any:
    c = _c(req)
    body = req.json()
    V.sidecar_create(body)
    sc = c.create_sidecar(guid, body.get("name", ""), body.get("command", ""), body.get("process_types") or [],
                          body.get("memory_in_mb"))
    return 201, P.sidecar(c, sc)


@route("POST", "/v3/packages")
def create_package(req: Request) -> Any:
    c = _c(req)
    body = req.json()
    app_guid = (((body.get("relationships") or {}).get("app") or {}).get("data") or {}).get("guid")
    if not app_guid:
        raise unprocessable("Relationships must include an app")
    return 201, P.package(c, c.create_package(app_guid))


@route("POST", f"/v3/packages/{GUID}/upload", max_body=UPLOAD_MAX)
def upload_package(req: Request, guid: str) -> Any:
    c = _c(req)
    return P.package(c, c.upload_package(guid, req.body))


@route("GET", f"/v3/packages/{GUID}")
def get_package(req: Request, guid: str) -> Any:
    c = _c(req)
    return P.package(c, c.package_by_guid(guid))


@route("GET", f"/v3/apps/{GUID}/packages")
def app_packages(req: Request, guid: str) -> Any:
    c = _c(req)
    c.app_by_guid(guid)
    return P.paginated(c.base_url, f"/v3/apps/{guid}/packages", [P.package(c, p) for p in c.packages(guid)])


@route("POST", "/v3/builds")
def create_build(req: Request) -> Any:
    c = _c(req)
    body = req.json()
    pkg = (body.get("package") or {}).get("guid")
    lifecycle = (body.get("lifecycle") or {}).get("data") or {}
    build = c.create_build(pkg, lifecycle.get("buildpacks"), lifecycle.get("stack"))
    return 201, P.build(c, build)


@route("GET", f"/v3/builds/{GUID}")
def get_build(req: Request, guid: str) -> Any:
    c = _c(req)
    return P.build(c, c.build_by_guid(guid))


@route("GET", f"/v3/apps/{GUID}/builds")
def app_builds(req: Request, guid: str) -> Any:
    c = _c(req)
    c.app_by_guid(guid)
    return P.paginated(c.base_url, f"/v3/apps/{guid}/builds", [P.build(c, b) for b in c.builds(guid)])


@route("GET", f"/v3/droplets/{GUID}")
def get_droplet(req: Request, guid: str) -> Any:
    c = _c(req)
    return P.droplet(c, c.droplet_by_guid(guid))


@route("GET", f"/v3/droplets/{GUID}/download")
def download_droplet(req: Request, guid: str) -> Any:
    c = _c(req)
    return Raw(c.droplet_path(c.droplet_by_guid(guid)).read_bytes(), "application/gzip")


@route("GET", f"/v3/apps/{GUID}/droplets")
def app_droplets(req: Request, guid: str) -> Any:
    c = _c(req)
    c.app_by_guid(guid)
    return P.paginated(c.base_url, f"/v3/apps/{guid}/droplets", [P.droplet(c, d) for d in c.droplets(guid)])


@route("GET", f"/v3/apps/{GUID}/droplets/current")
def current_droplet(req: Request, guid: str) -> Any:
    c = _c(req)
    d = c.current_droplet(c.app_by_guid(guid))
    if not d:
        raise not_found("Droplet")
    return P.droplet(c, d)


@route("PATCH", f"/v3/apps/{GUID}/relationships/current_droplet")
def set_droplet(req: Request, guid: str) -> Any:
    c = _c(req)
    dguid = (req.json().get("data") or {}).get("guid")
    c.set_current_droplet(guid, dguid)
    return {"data": {"guid": dguid}, "links": {"self": {"href": f"{c.base_url}/v3/apps/{guid}/relationships/current_droplet"}}}


@route("POST", f"/v3/apps/{GUID}/actions/(?P<action>start|stop|restart)")
def app_action(req: Request, guid: str, action: str) -> Any:
    c = _c(req)
    app = c.app_by_guid(guid)
    if action in ("start", "restart") and not app.droplet_guid:
        raise unprocessable("Assign a droplet before starting this app.")
    actions = {"start": c.cell.start_app, "stop": c.cell.stop_app, "restart": c.cell.restart_app}
    return P.app(c, actions[action](guid))


@route("POST", f"/v3/spaces/{GUID}/actions/apply_manifest")
def apply_manifest(req: Request, guid: str) -> Any:
    c = _c(req)
    if guid != SPACE_GUID:
        raise not_found("Space")
    V.manifest(req.body)
    c.apply_manifest(req.body, req.headers.get("Content-Type") or "application/x-yaml")
    return 202, {}


@route("GET", f"/v3/spaces/{GUID}")
def get_space(req: Request, guid: str) -> Any:
    if guid != SPACE_GUID:
        raise not_found("Space")
    return {"guid": SPACE_GUID, "name": "dev"}


@route("GET", "/v3/buildpacks")
def list_buildpacks(req: Request) -> Any:
    c = _c(req)
    return P.paginated(c.base_url, "/v3/buildpacks", [P.buildpack(c, b) for b in c.buildpacks(req.q("names") or None)])


@route("POST", "/v3/buildpacks")
def create_buildpack(req: Request) -> Any:
    c = _c(req)
    body = req.json()
    V.buildpack_create(body)
    bp = c.create_buildpack(body.get("name", ""), body.get("position"), body.get("enabled", True),
                            body.get("locked", False), body.get("stack") or STACK)
    return 201, P.buildpack(c, bp)


@route("GET", f"/v3/buildpacks/{GUID}")
def get_buildpack(req: Request, guid: str) -> Any:
    c = _c(req)
    return P.buildpack(c, c.buildpack_by_guid(guid))


@route("PATCH", f"/v3/buildpacks/{GUID}")
def patch_buildpack(req: Request, guid: str) -> Any:
    c = _c(req)
    c.buildpack_by_guid(guid)
    body = req.json()
    V.buildpack_update(body)
    changes: dict[str, object] = {k: body[k] for k in ("enabled", "locked", "name", "stack") if k in body}
    position = body.get("position")
    return P.buildpack(c, c.update_buildpack(guid, position=int(position) if position is not None else None,
                                             **changes))


@route("POST", f"/v3/buildpacks/{GUID}/upload", max_body=UPLOAD_MAX)
def upload_buildpack(req: Request, guid: str) -> Any:
    c = _c(req)
    c.buildpack_by_guid(guid)
    V.buildpack_zip(req.body)
    filename = req.headers.get("X-Filename") or "buildpack.zip"
    return P.buildpack(c, c.upload_buildpack(guid, filename, req.body))


@route("DELETE", f"/v3/buildpacks/{GUID}")
def delete_buildpack(req: Request, guid: str) -> Any:
    c = _c(req)
    c.delete_buildpack(guid)
    return 202, {}


@route("GET", "/v3/audit_events")
def audit_events(req: Request) -> Any:
    c = _c(req)
    found = c.events(req.q("target_guids") or None, req.q("types") or None)
    return P.paginated(c.base_url, "/v3/audit_events", [P.audit_event(c, e) for e in found])


@route("GET", f"/v3/apps/{GUID}/routes")
def app_routes(req: Request, guid: str) -> Any:
    c = _c(req)
    c.app_by_guid(guid)
    return P.paginated(c.base_url, f"/v3/apps/{guid}/routes", [P.route(c, r) for r in c.routes(guid)])


@route("GET", "/v3/routes")
def list_routes(req: Request) -> Any:
    c = _c(req)
    return P.paginated(c.base_url, "/v3/routes", [P.route(c, r) for r in c.routes()])


@route("GET", f"/localcf/v1/apps/{GUID}/logs")
def recent_logs(req: Request, guid: str) -> Any:
    c = _c(req)
    c.app_by_guid(guid)
    return {"envelopes": [e.as_json() for e in c.logs.recent(guid)]}


@route("GET", f"/localcf/v1/builds/{GUID}/log")
def stream_build_log(req: Request, guid: str) -> Any:
    """A build's staging lines from its first, streamed until staging ends (what `cf push` traces)."""
    c = _c(req)
    c.build_by_guid(guid)

    def chunks() -> Iterator[bytes]:
        for item in c.stager.follow(guid):
            if item is None:
                yield b"\n"
            else:
                yield (json.dumps({"stream": item[0], "message": item[1]}) + "\n").encode()
    return Stream(chunks())


@route("GET", f"/localcf/v1/apps/{GUID}/logs/stream")
def stream_logs(req: Request, guid: str) -> Any:
    c = _c(req)
    c.app_by_guid(guid)

    def chunks() -> Iterator[bytes]:
        yield b"\n"  # tells the client the tail is attached before anything is staged or started
        for env in c.logs.follow(guid):
            yield (json.dumps(env.as_json()) + "\n").encode() if env else b"\n"
    return Stream(chunks())


def _ssh_instance(req: Request, guid: str) -> tuple[Controller, App, Instance, Container, JsonObject]:
    # the last item is the request's JSON body (a JSON boundary: the ssh options as sent)
    c = _c(req)
    app = c.app_by_guid(guid)
    body = req.json()
    index = int(body.get("index") or 0)
    inst = c.cell.instance(guid, index)
    container = inst.container if inst is not None else None
    if app.state != "STARTED" or inst is None or container is None or inst.state != "RUNNING":
        raise ApiError(400, 10008, "CF-SSHUnavailable" if inst is None else "CF-InstanceNotRunning",
                       f"Instance {index} of app {app.name} is not running: ssh needs a RUNNING "
                       f"instance (see `localcf app {app.name}`).")
    return c, app, inst, container, body


@route("POST", f"/localcf/v1/apps/{GUID}/ssh")
def ssh_session(req: Request, guid: str) -> Any:
    from . import ssh
    c, app, inst, container, body = _ssh_instance(req, guid)
    command = body.get("command")
    tty = bool(body.get("tty"))
    env = dict(inst.env)
    if body.get("term"):
        env["TERM"] = body["term"]
    argv = ["/bin/bash", "-c", command] if command else ["/bin/bash", "-l"]
    home = container.home_root()
    proc = container.exec(argv, env, tty=tty, cwd=home)
    if tty and body.get("rows") and body.get("cols"):
        proc.resize(int(body["rows"]), int(body["cols"]))
    peer = f"{req.handler.client_address[0]}:{req.handler.client_address[1]}"
    c.logs.emit(app.guid, "SSH", inst.index, "OUT", f"Successful remote access by {peer}")
    c.audit("audit.app.ssh-authorized", app, {"index": inst.index})

    def run(rfile: Any, sock: Any) -> None:
        try:
            ssh.serve_exec(rfile, sock, proc)
        finally:
            c.logs.emit(app.guid, "SSH", inst.index, "OUT", f"Remote access ended for {peer}")
    return Upgrade(run, ssh.UPGRADE)


@route("POST", f"/localcf/v1/apps/{GUID}/forward")
def ssh_forward(req: Request, guid: str) -> Any:
    from . import ssh
    _, _, inst, container, body = _ssh_instance(req, guid)
    host = body.get("host") or "localhost"
    if host not in ("localhost", "127.0.0.1", "::1", "0.0.0.0"):
        raise unprocessable(f"localcf forwards to ports inside the container only (localhost), not to {host}")
    try:
        inner = container.connect(int(body["port"]))
    except (OSError, ValueError, KeyError) as e:
        raise ApiError(502, 10001, "CF-ForwardFailed",
                       f"Could not connect to {host}:{body.get('port')} inside instance {inst.index}: {e}") from None
    return Upgrade(lambda rfile, sock: ssh.serve_forward(rfile, sock, inner), ssh.UPGRADE)


@route("GET", "/localcf/v1/info")
def localcf_info(req: Request) -> Any:
    return req.handler.server.info()  # type: ignore[attr-defined]


# resources kept in modules of their own register their routes when imported
from . import (  # noqa: E402,F401
    api_cfcli,
    api_security_groups,  # noqa: E402,F401
    entry,
    logcache,
)
