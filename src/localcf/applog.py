"""The `[API/0]` lines Cloud Controller writes into an app's log stream as it records app events.

Cloud Controller's event repositories emit one app log line per event they record
(`AppLogEmitter.emit`): `Created app with guid G`, `Updated app with guid G ({"state"=>"STARTED"})`,
`Uploading bits for app with guid G`, `Creating build for app with guid G`, ... `api_line` maps
localcf's audit event types to those texts; the controller emits the line when it records the
event. Crash lines are not here: the cell writes them with the crash payload.
"""

from __future__ import annotations

from typing import Any


def ruby_inspect(value: Any) -> str:
    """A value as Ruby's `inspect` renders it (hashes `{"k"=>v}`, nil, true/false, strings quoted)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{ruby_inspect(str(k))}=>{ruby_inspect(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(ruby_inspect(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def api_line(event_type: str, app_guid: str, data: dict[str, Any] | None) -> str | None:
    """Cloud Controller's app log line for an audit event, or None for events it does not log."""
    g = app_guid
    request = (data or {}).get("request")
    if event_type == "audit.app.create":
        return f"Created app with guid {g}"
    if event_type in ("audit.app.update", "audit.app.droplet.mapped"):
        return f"Updated app with guid {g} ({ruby_inspect(request if isinstance(request, dict) else {})})"
    if event_type == "audit.app.apply_manifest":
        manifest = request.get("manifest") if isinstance(request, dict) else None
        return f"Applied manifest to app with guid {g} ({manifest if manifest is not None else ''})"
    if event_type == "audit.app.start":
        return f"Starting app with guid {g}"
    if event_type == "audit.app.stop":
        return f"Stopping app with guid {g}"
    if event_type == "audit.app.restart":
        return f"Restarted app with guid {g}"
    if event_type == "audit.app.delete-request":
        return f"Deleted app with guid {g}"
    if event_type == "audit.app.upload-bits":
        return f"Uploading bits for app with guid {g}"
    if event_type == "audit.app.build.create":
        return f"Creating build for app with guid {g}"
    return None
