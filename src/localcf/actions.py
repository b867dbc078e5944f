"""What the `localcf` command does, step by step, as the cf CLI's actor layer does it.

Each action talks to the daemon through a `Client` and returns what it found or made (a build, a
droplet guid, the instances' stats, an app's summary); none prints. Output that must stream while an
action runs (the staging log) goes to the `on_line` callback it is given. Failures are `ActionFailed`
with the cf CLI's text, which the command prints after `FAILED`.

The command's click functions (`localcf.cli`) parse flags, call these, and print with
`localcf.output`; so each verb reads as the steps it takes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import manifest as manifest_mod
from .appbits import zip_app_dir
from .buildpacks import is_url
from .client import Client, ClientError
from .constants import DEFAULT_DOMAIN, DEFAULT_HEALTH_TIMEOUT, SPACE_GUID
from .jsondoc import JsonObject
from .polling import poll_until

OnLine = Callable[[str], None]


class ActionFailed(Exception):
    """An action could not be done; the message is the cf CLI's text for it."""


# ------------------------------------------------------------------------------------ staging

def stage_package(c: Client, app: JsonObject, package_guid: str, on_line: OnLine) -> JsonObject:
    """Create a build of the package and follow its staging log (each line to `on_line`) until it
    ends; returns the staged build. ActionFailed when staging failed."""
    build = c.post("/v3/builds", {"package": {"guid": package_guid}})
    for item in c.stream_lines(f"/localcf/v1/builds/{build['guid']}/log"):
        on_line(item["message"])
    # The stream ends with the staging, or early when the daemon restarted: then ask until it ends.
    build = poll_until(lambda: _ended(c, build["guid"]), timeout=None, interval=0.1)
    if build["state"] == "FAILED":
        raise ActionFailed(f"Error staging application: {build['error']}")
    return build


def _ended(c: Client, build_guid: str) -> JsonObject | None:
    build: JsonObject = c.get(f"/v3/builds/{build_guid}")
    return None if build["state"] == "STAGING" else build


def set_current_droplet(c: Client, app: JsonObject, droplet_guid: str) -> None:
    c.patch(f"/v3/apps/{app['guid']}/relationships/current_droplet", {"data": {"guid": droplet_guid}})


def newest_package(c: Client, app: JsonObject) -> str:
    """The guid of the app's newest uploaded (READY) package."""
    ready = [p for p in c.get(f"/v3/apps/{app['guid']}/packages")["resources"] if p["state"] == "READY"]
    if not ready:
        raise ActionFailed(f"App '{app['name']}' has no uploaded package: push it first.")
    guid: str = ready[-1]["guid"]
    return guid


def stage_and_set_droplet(c: Client, app: JsonObject, package_guid: str, on_line: OnLine) -> str:
    """Stage the package and make its droplet the app's current one; returns the droplet's guid."""
    build = stage_package(c, app, package_guid, on_line)
    droplet_guid: str = build["droplet"]["guid"]
    set_current_droplet(c, app, droplet_guid)
    return droplet_guid


# ---------------------------------------------------------------------------------- instances

def start(c: Client, app: JsonObject) -> None:
    c.post(f"/v3/apps/{app['guid']}/actions/start")


def stop(c: Client, app: JsonObject) -> None:
    c.post(f"/v3/apps/{app['guid']}/actions/stop")


def restart(c: Client, app: JsonObject) -> None:
    c.post(f"/v3/apps/{app['guid']}/actions/restart")


def wait_for_instances(c: Client, app: JsonObject, timeout: float = 60) -> list[JsonObject]:
    """Wait until an instance of web is RUNNING (returns the stats then; [] when web has no
    instances). ActionFailed as `cf push` says it when every instance crashed or time ran out
    (the longer of `timeout` and the process's health check timeout)."""
    web = c.get(f"/v3/apps/{app['guid']}/processes/web")
    if web["instances"] == 0:
        return []
    health_timeout = web["health_check"]["data"].get("timeout") or DEFAULT_HEALTH_TIMEOUT

    def running() -> list[JsonObject] | None:
        stats: list[JsonObject] = c.get(f"/v3/processes/{web['guid']}/stats")["resources"]
        states = [s["state"] for s in stats]
        if any(s == "RUNNING" for s in states):
            return stats
        if states and all(s == "CRASHED" for s in states):
            raise ActionFailed(f"Start unsuccessful\n\nTIP: use 'cf logs {app['name']} --recent' for more information")
        return None

    return poll_until(running, timeout=max(timeout, health_timeout), interval=0.05, on_timeout=lambda: ActionFailed(
        f"Start app timeout\n\nTIP: Application must be listening on the right port. "
        f"Instead of hard coding the port, use the $PORT environment variable.\n\n"
        f"Use 'cf logs {app['name']} --recent' for more information"))


def restart_and_wait(c: Client, app: JsonObject) -> list[JsonObject]:
    restart(c, app)
    return wait_for_instances(c, app)


def process(c: Client, app: JsonObject, process_type: str) -> JsonObject:
    """The app's process of that type (a CAPI 404 when it has none)."""
    proc: JsonObject = c.get(f"/v3/apps/{app['guid']}/processes/{process_type}")
    return proc


def scale(c: Client, proc: JsonObject, changes: JsonObject) -> None:
    """Scale a process: `instances`, `memory_in_mb`, `disk_in_mb`."""
    c.post(f"/v3/processes/{proc['guid']}/actions/scale", changes)


# --------------------------------------------------------------------------------- manifests

def resolve_buildpack_refs(refs: list[str], base: Path) -> list[str]:
    """Local buildpack directories and zips become absolute paths the daemon can read."""

    out = []
    for ref in refs:
        if not is_url(ref) and (ref.startswith((".", "/", "~")) or os.sep in ref or ref.endswith(".zip")):
            p = (base / os.path.expanduser(ref)).resolve()
            if not p.exists():
                raise ActionFailed(f"Buildpack path {ref} does not exist (looked at {p}). "
                                   "Give an admin buildpack name, an http(s) URL of a zip, or an existing "
                                   "directory or zip.")
            ref = str(p)
        out.append(ref)
    return out


def check_buildpacks_exist(c: Client, m: manifest_mod.Manifest | None, app_index: int, refs: list[str]) -> None:
    """The unknown-buildpack error, with the manifest's file and line when it came from one."""

    for ref in refs:
        if ref in ("default", "null", "") or is_url(ref) or os.path.isabs(ref):
            continue
        if c.buildpack(ref) is None:
            msg = f'Buildpack "{ref}" must be an existing admin buildpack or a valid git URI'
            app_bps = m.apps[app_index].buildpacks if m is not None else None
            if m is not None and m.source and app_bps and ref in app_bps:
                raise m.error(app_index, "buildpacks", app_bps.index(ref), message=msg,
                              hint="create it with `localcf create-buildpack`, or fix the name (see `localcf buildpacks`)")
            raise ActionFailed(msg)


def check_default_route(c: Client, m: manifest_mod.Manifest | None, app_index: int,
                        am: manifest_mod.AppManifest) -> str | None:
    """The default route `cf push` will make for the app (`HOST.apps.localhost`), or None when it
    makes none (routes given, --no-route, or the app has routes already).

    An app name that cannot be a host fails here, before anything is applied, with Cloud
    Controller's text (and the manifest line of the name when it came from a file)."""
    if am.no_route or am.routes:
        return None
    existing = c.app(am.name)
    if existing and c.get(f"/v3/apps/{existing['guid']}/routes")["resources"]:
        return None
    try:
        host = manifest_mod.default_route_host(am.name)
    except manifest_mod.ManifestError as e:
        text = f"For application '{am.name}': {e.message}"
        if m is not None and m.source:
            raise m.error(app_index, "name", message=text, hint=e.hint) from None
        raise ActionFailed(f"{text}\n\nTIP: {e.hint}") from None
    return f"{host}.{DEFAULT_DOMAIN}"


def apply_manifest(c: Client, m: manifest_mod.Manifest, indexes: list[int],
                   overrides: JsonObject | None = None) -> list[manifest_mod.AppManifest]:
    """Apply the apps of `m` at `indexes` (with `cf push` flags in `overrides`): buildpack paths
    resolved, names checked, then one `apply_manifest` request; returns the apps as applied."""
    apps = []
    base = Path(m.source).resolve().parent if m.source else Path.cwd()
    for i in indexes:
        am = m.apps[i].with_overrides(**overrides) if overrides else m.apps[i]
        if am.buildpacks:
            am = dataclasses.replace(am, buildpacks=resolve_buildpack_refs(am.buildpacks, base))
        check_buildpacks_exist(c, m, i, am.buildpacks or [])
        check_default_route(c, m, i, am)
        apps.append(am)
    c.request("POST", f"/v3/spaces/{SPACE_GUID}/actions/apply_manifest",
              data=json.dumps(manifest_mod.manifest_to_wire(apps)).encode(),
              headers={"Content-Type": "application/json"})
    return apps


# ---------------------------------------------------------------------------------- packages

def app_dir_of(m: manifest_mod.Manifest, am: manifest_mod.AppManifest) -> Path:
    """The folder `cf push` uploads: `-p`/`path:`, else the manifest's folder, else the cwd."""
    if am.path:
        return Path(am.path)
    return Path(m.source).resolve().parent if m.source else Path.cwd()


def package_bits(app_dir: Path) -> bytes:
    """The app folder zipped as `cf push` uploads it (.cfignore honoured, symlinks kept as links)."""
    with tempfile.TemporaryDirectory() as tmp:
        zpath = Path(tmp) / "app.zip"
        zip_app_dir(app_dir, zpath)
        return zpath.read_bytes()


def upload_package(c: Client, app: JsonObject, bits: bytes) -> JsonObject:
    """A new bits package of the app, with `bits` uploaded; returns the package."""
    pkg: JsonObject = c.post("/v3/packages", {"type": "bits",
                                                  "relationships": {"app": {"data": {"guid": app["guid"]}}}})
    c.request("POST", f"/v3/packages/{pkg['guid']}/upload", data=bits, headers={"Content-Type": "application/zip"})
    return pkg


# ---------------------------------------------------------------------------------- droplets

def current_droplet_guid(app: JsonObject) -> str | None:
    cur = app["relationships"]["current_droplet"]["data"]
    return cur["guid"] if cur else None


def download_droplet(c: Client, droplet_guid: str) -> bytes:
    data: bytes = c.get(f"/v3/droplets/{droplet_guid}/download", raw=True)
    return data


def droplet_file_name(droplet_guid: str) -> str:
    """The name the cf CLI gives a downloaded droplet: `droplet_<guid>.tgz`."""
    return f"droplet_{droplet_guid}.tgz"


# ---------------------------------------------------------------------------------- app views

@dataclass
class ProcessView:
    process: JsonObject
    sidecars: list[str]
    stats: list[JsonObject]

    @property
    def running(self) -> int:
        return sum(1 for s in self.stats if s["state"] == "RUNNING")


@dataclass
class AppSummary:
    """What `cf app` shows: the app, its routes, its current droplet, and each process."""

    app: JsonObject
    routes: list[str]
    droplet: JsonObject | None
    processes: list[ProcessView] = field(default_factory=list)
    now: float = field(default_factory=time.time)


def app_summary(c: Client, app: JsonObject) -> AppSummary:
    g = app["guid"]
    routes = [r["url"] for r in c.get(f"/v3/apps/{g}/routes")["resources"]]
    droplet = None
    if current_droplet_guid(app):
        try:
            droplet = c.get(f"/v3/apps/{g}/droplets/current")
        except ClientError:
            droplet = None
    sidecars = c.get(f"/v3/apps/{g}/sidecars")["resources"]
    views = []
    for proc in c.get(f"/v3/apps/{g}/processes")["resources"]:
        names = [s["name"] for s in sidecars if proc["type"] in s["process_types"]]
        views.append(ProcessView(proc, names, c.get(f"/v3/processes/{proc['guid']}/stats")["resources"]))
    return AppSummary(app, routes, droplet, views)


def app_list(c: Client) -> list[tuple[JsonObject, list[str], list[str]]]:
    """Each app with its processes (`web:1/1`) and routes, for `cf apps`."""
    out = []
    for a in c.get("/v3/apps")["resources"]:
        procs = []
        for p in c.get(f"/v3/apps/{a['guid']}/processes")["resources"]:
            stats = c.get(f"/v3/processes/{p['guid']}/stats")["resources"]
            running = sum(1 for s in stats if s["state"] == "RUNNING")
            procs.append(f"{p['type']}:{running}/{p['instances']}")
        routes = [r["url"] for r in c.get(f"/v3/apps/{a['guid']}/routes")["resources"]]
        out.append((a, procs, routes))
    return out
