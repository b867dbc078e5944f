"""`/v3/security_groups`: Cloud Controller's security group resource over localcf's API.

Registers its routes with `localcf.api`'s `route` decorator when imported. The shape is CAPI's:
`{guid, created_at, updated_at, name, rules, globally_enabled: {running, staging},
relationships: {running_spaces, staging_spaces}, links}`. localcf has one space and binds groups
globally only, so the space relationships are always empty lists.

- `GET /v3/security_groups` (filters `names`, `guids`, `globally_enabled_running`, `globally_enabled_staging`)
- `POST /v3/security_groups` `{name, rules?, globally_enabled?}`
- `GET|PATCH|DELETE /v3/security_groups/:guid` (PATCH takes `name`, `rules`, `globally_enabled`)
"""

from __future__ import annotations

from typing import Any

from . import presenters as P
from .api import GUID, Request, route
from .controller import ApiError, Controller, not_found, unprocessable
from .jsondoc import JsonObject
from .security_groups import (
    LIFECYCLES,
    SecurityGroup,
    SecurityGroupError,
    SecurityGroupNotFound,
    SecurityGroups,
    for_store,
)

CREATE_KEYS = ("name", "rules", "globally_enabled", "relationships")
UPDATE_KEYS = ("name", "rules", "globally_enabled")


def _controller(req: Request) -> Controller:
    return req.handler.server.controller  # type: ignore[attr-defined]


def _groups(req: Request) -> SecurityGroups:
    return for_store(_controller(req).store)


def present(base_url: str, g: SecurityGroup) -> JsonObject:
    return {
        "guid": g.guid, "created_at": g.created_at, "updated_at": g.updated_at, "name": g.name,
        "rules": g.rules,
        "globally_enabled": {"running": g.running, "staging": g.staging},
        "relationships": {"running_spaces": {"data": []}, "staging_spaces": {"data": []}},
        "links": {"self": {"href": f"{base_url}/v3/security_groups/{g.guid}"}},
    }


def _api_error(e: SecurityGroupError) -> ApiError:
    if isinstance(e, SecurityGroupNotFound):
        return not_found("Security group")
    return unprocessable(e.detail)


def _body(req: Request, allowed: tuple[str, ...]) -> tuple[JsonObject, dict[str, bool]]:
    """The request body, checked as Cloud Controller checks it; and its `globally_enabled` part."""
    body = req.json()
    unknown = [k for k in body if k not in allowed]
    if unknown:
        raise unprocessable("Unknown field(s): " + ", ".join(f"'{k}'" for k in unknown))
    relationships = body.get("relationships") or {}
    if not isinstance(relationships, dict) or any(
            (rel or {}).get("data") for rel in relationships.values() if isinstance(rel, dict)):
        raise unprocessable("localcf binds security groups globally only (globally_enabled.running, "
                            "globally_enabled.staging), not to spaces")
    enabled = body.get("globally_enabled")
    if enabled is None:
        return body, {}
    if not isinstance(enabled, dict):
        raise unprocessable("Globally enabled must be an object")
    extra = [k for k in enabled if k not in LIFECYCLES]
    if extra:
        raise unprocessable("Globally enabled only allows keys 'running' and 'staging'")
    for k, v in enabled.items():
        if not isinstance(v, bool):
            raise unprocessable(f"Globally enabled {k} must be a boolean")
    return body, enabled


def _bool_filter(req: Request, name: str) -> bool | None:
    values = req.q(name)
    if not values:
        return None
    if values[-1] not in ("true", "false"):
        raise ApiError(400, 10005, "CF-BadQueryParameter", f"The query parameter is invalid: {name} must be a boolean")
    return values[-1] == "true"


@route("GET", "/v3/security_groups")
def list_security_groups(req: Request) -> Any:
    c = _controller(req)
    found = _groups(req).all()
    names, guids = req.q("names"), req.q("guids")
    if names:
        found = [g for g in found if g.name in names]
    if guids:
        found = [g for g in found if g.guid in guids]
    for lifecycle in LIFECYCLES:
        wanted = _bool_filter(req, f"globally_enabled_{lifecycle}")
        if wanted is not None:
            found = [g for g in found if g.bound(lifecycle) == wanted]
    return P.paginated(c.base_url, "/v3/security_groups", [present(c.base_url, g) for g in found])


@route("POST", "/v3/security_groups")
def create_security_group(req: Request) -> Any:
    c = _controller(req)
    body, enabled = _body(req, CREATE_KEYS)
    try:
        g = _groups(req).create(body.get("name"), body.get("rules"), running=enabled.get("running", False),
                                staging=enabled.get("staging", False))
    except SecurityGroupError as e:
        raise _api_error(e) from None
    return 201, present(c.base_url, g)


@route("GET", f"/v3/security_groups/{GUID}")
def get_security_group(req: Request, guid: str) -> Any:
    try:
        return present(_controller(req).base_url, _groups(req).get(guid))
    except SecurityGroupError as e:
        raise _api_error(e) from None


@route("PATCH", f"/v3/security_groups/{GUID}")
def patch_security_group(req: Request, guid: str) -> Any:
    body, enabled = _body(req, UPDATE_KEYS)
    try:
        g = _groups(req).update(guid, name=body.get("name"), rules=body.get("rules"),
                                running=enabled.get("running"), staging=enabled.get("staging"))
    except SecurityGroupError as e:
        raise _api_error(e) from None
    return present(_controller(req).base_url, g)


@route("DELETE", f"/v3/security_groups/{GUID}")
def delete_security_group(req: Request, guid: str) -> Any:
    try:
        _groups(req).delete(guid)
    except SecurityGroupError as e:
        raise _api_error(e) from None
    return 202, {}
