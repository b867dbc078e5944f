"""The entry documents and UAA's endpoints, so that Cloud Foundry's own `cf` CLI can find and log in.

- `GET /`: Cloud Controller's root document. Every link a foundation announces points back at
  this API (`login`, `uaa`, `log_cache`), except `app_ssh`, the ssh proxy's `127.0.0.1:PORT`
  with `meta.host_key_fingerprint` and `meta.oauth_client: ssh-proxy`.
- `GET /v3`: links to every v3 resource. `GET /v3/info`: the foundation's name and version.
- `GET /login`: UAA's login document (the prompts `cf login` asks).
- `POST /oauth/token`, `GET /oauth/authorize`: see `localcf.uaa`.

Importing this module installs `localcf.uaa.check` as the API's authentication hook (`httpapi.AUTH_HOOK`).
"""

from __future__ import annotations

from typing import Any

from . import api, httpapi, uaa
from .api import Raw, Request
from .controller import Controller

CC_V3_VERSION = "3.180.0"
CC_V2_VERSION = "2.245.0"
V3_RESOURCES = (
    "app_usage_events", "apps", "audit_events", "buildpacks", "builds", "deployments", "domains",
    "droplets", "environment_variable_groups", "feature_flags", "info", "isolation_segments",
    "organizations", "organization_quotas", "packages", "processes", "resource_matches", "roles", "routes",
    "security_groups", "service_brokers", "service_instances", "service_credential_bindings",
    "service_offerings", "service_plans", "service_route_bindings", "service_usage_events", "spaces",
    "space_quotas", "stacks", "tasks", "users",
)


def _c(req: Request) -> Controller:
    return req.handler.server.controller  # type: ignore[attr-defined]


def override(method: str, pattern: str) -> Any:
    """Like `api.route`, but takes the place of a handler already registered for the same path."""
    compiled = "^" + pattern + "$"

    def deco(fn: Any) -> Any:
        for spec in api.ROUTES:
            if spec.method == method and spec.pattern.pattern == compiled:
                spec.fn = fn  # the route keeps its body limit
                return fn
        return api.route(method, pattern)(fn)
    return deco


def _href(url: str, **meta: Any) -> dict[str, Any]:
    return {"href": url, "meta": meta} if meta else {"href": url}


@override("GET", "/")
def root(req: Request) -> Any:
    from . import sshproxy
    c = _c(req)
    b = c.base_url
    proxy = sshproxy.running_for(c.state)
    app_ssh = (_href(proxy.endpoint, host_key_fingerprint=proxy.fingerprint, oauth_client=uaa.SSH_CLIENT_ID)
               if proxy is not None else None)
    return {"links": {
        "self": _href(b),
        "bits_service": None,
        "cloud_controller_v2": None,
        "cloud_controller_v3": _href(f"{b}/v3", version=CC_V3_VERSION),
        "network_policy_v0": None,
        "network_policy_v1": None,
        "login": _href(b),
        "uaa": _href(b),
        "credhub": None,
        "routing": None,
        "logging": None,
        "log_cache": _href(b),
        "log_stream": None,
        "app_ssh": app_ssh,
    }}


@api.route("GET", "/v3")
def v3_root(req: Request) -> Any:
    b = _c(req).base_url
    links = {"self": _href(f"{b}/v3")}
    links.update({name: _href(f"{b}/v3/{name}") for name in V3_RESOURCES})
    return {"links": links}


@override("GET", "/v3/info")
def info(req: Request) -> Any:
    b = _c(req).base_url
    return {"build": "", "cli_version": {"minimum": "", "recommended": ""}, "custom": {},
            "description": "An embedded Cloud Foundry", "name": "localcf", "version": 0,
            "osbapi_version": "", "rate_limits": {"enabled": False},
            "links": {"self": _href(f"{b}/v3/info"), "support": None}}


@api.route("GET", "/login")
def login_info(req: Request) -> Any:
    code = req.query.get("code")
    if code:  # where the ssh-proxy client's redirect lands: show the code, as UAA's page would
        return Raw(f"Your one-time code: {code[-1]}\n".encode(), "text/plain; charset=utf-8")
    b = _c(req).base_url
    return {"app": {"version": "localcf"}, "showLoginLinks": True,
            "links": {"uaa": b, "passwd": "/forgot_password", "login": b, "register": "/create_account"},
            "zone_name": uaa.ZONE, "entityID": "localcf", "commit_id": "localcf", "idpDefinitions": {},
            "prompts": {"username": ["text", "Email"], "password": ["password", "Password"]},
            "timestamp": ""}


@api.route("POST", "/oauth/token")
def oauth_token(req: Request) -> Any:
    c = _c(req)
    try:
        return uaa.for_state(c.state).token_request(req.body, req.headers.get("Authorization", ""), c.base_url)
    except uaa.UaaError as e:
        return e.status, e.body()


@api.route("GET", "/oauth/authorize")
def oauth_authorize(req: Request) -> Any:
    c = _c(req)
    server = uaa.for_state(c.state)
    token = uaa.bearer(req.headers.get("Authorization", ""))
    claims = server.decode(token) if token else None
    if claims is None:
        return 401, {"error": "unauthorized",
                     "error_description": "Full authentication is required to access this resource"}
    try:
        code = server.authorize_code((req.query.get("client_id") or [""])[-1],
                                     (req.query.get("response_type") or [""])[-1], claims)
    except uaa.UaaError as e:
        return e.status, e.body()
    return 302, Raw(b"", "text/html", headers={"Location": f"{c.base_url}/login?code={code}"})


httpapi.AUTH_HOOK = uaa.check
