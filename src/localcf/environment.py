"""The environment of every process of an instance: the app process and each of its sidecars.

This is what Cloud Controller, the Diego executor and the buildpack launcher together give a
process on a real foundation (CF-BEHAVIOUR.md section 2), computed in one place so the runtime
only has to pass it to the launcher.

Who wins when names collide (decided after Cloud Foundry's own code):

- Cloud Controller builds the list as ``initial env (LANG) + user env``, then writes
  ``VCAP_APPLICATION``, ``MEMORY_LIMIT`` and ``VCAP_SERVICES`` over it; the executor adds
  ``PORT``, ``INSTANCE_*`` and ``CF_INSTANCE_*``; the launcher sets ``HOME``, ``TMPDIR``,
  ``DEPS_DIR`` and rewrites ``VCAP_APPLICATION``. So the user's env comes first and every
  name the platform sets wins over it.
- The two exceptions are the defaults ``LANG`` and ``PATH``: on Cloud Foundry they come from the
  initial env and the container image, which the user's env overrides, so here too.
- Cloud Controller refuses user env names starting with ``VCAP_`` or ``VMC_`` and ``PORT``
  (``localcf.manifest`` does the same), so those never reach this module from a manifest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

# localcf has exactly one org and one space, the ones the API serves (`localcf.records`).
from .records import ORG_GUID, ORG_NAME, SPACE_GUID, SPACE_NAME, JsonObject

__all__ = [
    "CONTAINER_HOME_ROOT", "DEFAULT_FILE_DESCRIPTORS", "DEFAULT_LANG", "DEFAULT_PATH", "ORG_GUID", "ORG_NAME",
    "ROUTED_PORT", "SIDECAR_MEMORY_TOO_LARGE", "SPACE_GUID", "SPACE_NAME", "InstanceContext", "SidecarInfo",
    "memory_limit_mb", "process_environment", "vcap_application",
]

CONTAINER_HOME_ROOT = "/home/vcap"
ROUTED_PORT = 8080
DEFAULT_LANG = "en_US.UTF-8"
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
DEFAULT_FILE_DESCRIPTORS = 16384

SIDECAR_MEMORY_TOO_LARGE = (
    'The memory allocation defined is too large to run with the dependent "{process_type}" process'
)

@dataclass(frozen=True)
class SidecarInfo:
    """A sidecar attached to the process: its name and memory in MB (None when unset)."""

    name: str
    memory_mb: int | None = None


@dataclass
class InstanceContext:
    """Everything the environment of one instance's processes is computed from."""

    app_guid: str
    app_name: str
    process_guid: str
    process_type: str
    process_memory_mb: int
    process_disk_mb: int
    process_version: str
    instance_guid: str
    instance_index: int
    cf_api: str
    external_port: int
    """The host port that reaches the routed port from outside the container."""
    container_ip: str = "127.0.0.1"
    port: int = ROUTED_PORT
    """The port the app must listen on: 8080 in a container, a free host port in `process` mode."""
    uris: list[str] = field(default_factory=list)
    app_env: Mapping[str, str] = field(default_factory=dict)
    """The app's own env (manifest `env:` and `cf set-env`), values already strings."""
    sidecars: list[SidecarInfo] = field(default_factory=list)
    """Every sidecar attached to this process type: their memory is carved out of the app's."""
    home_root: str | os.PathLike[str] = CONTAINER_HOME_ROOT
    """Where the droplet is unpacked: `/home/vcap`, or elsewhere in the runtime's `process` mode."""
    space_name: str = SPACE_NAME
    space_guid: str = SPACE_GUID
    org_name: str = ORG_NAME
    org_guid: str = ORG_GUID
    file_descriptors: int = DEFAULT_FILE_DESCRIPTORS


def memory_limit_mb(ctx: InstanceContext, sidecar: SidecarInfo | None = None) -> int:
    """MEMORY_LIMIT in MB: a sidecar's own memory (or the whole process's when unset); for the
    app, the process memory minus every sidecar's memory.

    Raises ValueError with Cloud Foundry's text when the sidecars leave the app nothing.
    """
    if sidecar is not None:
        return sidecar.memory_mb if sidecar.memory_mb is not None else ctx.process_memory_mb
    carved = sum(s.memory_mb for s in ctx.sidecars if s.memory_mb is not None)
    if carved >= ctx.process_memory_mb:
        raise ValueError(
            SIDECAR_MEMORY_TOO_LARGE.format(process_type=ctx.process_type)
            + f"; its sidecars ask for {carved} MB of the process's {ctx.process_memory_mb} MB:"
            " give the sidecars less memory or the process more"
        )
    return ctx.process_memory_mb - carved


def vcap_application(ctx: InstanceContext, sidecar: SidecarInfo | None = None) -> JsonObject:
    """VCAP_APPLICATION as JSON: Cloud Controller's keys plus the four the launcher adds."""
    return {
        "application_id": ctx.app_guid,
        "application_name": ctx.app_name,
        "application_uris": list(ctx.uris),
        "application_version": ctx.process_version,
        "cf_api": ctx.cf_api,
        # Cloud Controller reports the carved memory here too, per process (app or sidecar).
        "limits": {
            "disk": ctx.process_disk_mb,
            "fds": ctx.file_descriptors,
            "mem": memory_limit_mb(ctx, sidecar),
        },
        "name": ctx.app_name,
        "organization_id": ctx.org_guid,
        "organization_name": ctx.org_name,
        "process_id": ctx.process_guid,
        "process_type": ctx.process_type,
        "space_id": ctx.space_guid,
        "space_name": ctx.space_name,
        "uris": list(ctx.uris),
        "version": ctx.process_version,
        # Added by the launcher from the process's own environment.
        "host": "0.0.0.0",
        "port": ctx.port,
        "instance_id": ctx.instance_guid,
        "instance_index": ctx.instance_index,
    }


def _go_json(value: object) -> str:
    # The launcher re-marshals VCAP_APPLICATION with Go's encoding/json: sorted map keys, no spaces.
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def process_environment(ctx: InstanceContext, *, sidecar: SidecarInfo | None = None) -> dict[str, str]:
    """The full environment of the app process of `ctx`, or of `sidecar` when given."""
    root = os.fspath(ctx.home_root).rstrip("/") or "/"
    # Defaults first so the user's env may override them; then the platform's names, which win.
    env: dict[str, str] = {"PATH": DEFAULT_PATH, "LANG": DEFAULT_LANG}
    env.update({str(k): str(v) for k, v in ctx.app_env.items()})

    platform = {
        "HOME": f"{root}/app",
        "TMPDIR": f"{root}/tmp",
        "DEPS_DIR": f"{root}/deps",
        "PORT": str(ctx.port),
        "VCAP_APP_PORT": str(ctx.port),
        "VCAP_APP_HOST": "0.0.0.0",
        "MEMORY_LIMIT": f"{memory_limit_mb(ctx, sidecar)}m",
        "VCAP_APPLICATION": _go_json(vcap_application(ctx, sidecar)),
        "VCAP_SERVICES": "{}",
        "INSTANCE_GUID": ctx.instance_guid,
        "INSTANCE_INDEX": str(ctx.instance_index),
        "CF_INSTANCE_GUID": ctx.instance_guid,
        "CF_INSTANCE_INDEX": str(ctx.instance_index),
        "CF_INSTANCE_IP": ctx.container_ip,
        "CF_INSTANCE_PORT": str(ctx.external_port),
        "CF_INSTANCE_ADDR": f"{ctx.container_ip}:{ctx.external_port}",
        "CF_INSTANCE_PORTS": _go_json([{"external": ctx.external_port, "internal": ctx.port}]),
    }
    env.update(platform)
    return env
