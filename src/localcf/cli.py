"""The `localcf` command: the cf CLI's verbs and output, against the embedded Cloud Foundry."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import click
import yaml

from . import daemon
from . import manifest as manifest_mod
from .appbits import zip_app_dir
from .buildpacks import is_url
from .client import Client, ClientError
from .controller import SPACE_GUID
from .logstream import format_line
from .paths import StateDir

ORG, SPACE, USER = "localcf", "dev", "admin"
WHERE = f"in org {ORG} / space {SPACE} as {USER}"


class CommandFailed(click.ClickException):
    """Printed as the cf CLI prints failures: `FAILED` then the reason, exit 1."""

    def show(self, file: Any = None) -> None:
        click.echo("FAILED", err=True)
        click.echo(self.message, err=True)


def client() -> Client:
    ctx = click.get_current_context()
    obj = ctx.find_root().obj
    if obj is None:
        obj = ctx.find_root().obj = {}
    if "client" not in obj:
        obj["client"] = Client()
    return obj["client"]


def fail_on_client_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    import functools

    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        try:
            return fn(*a, **kw)
        except ClientError as e:
            raise CommandFailed(e.detail) from None
        except manifest_mod.ManifestError as e:
            raise CommandFailed(str(e)) from None
        except daemon.DaemonError as e:
            raise CommandFailed(str(e)) from None
    return wrapper


def table(rows: list[list[str]]) -> str:
    """Columns separated by three spaces, as the cf CLI aligns them."""
    if not rows:
        return ""
    widths = [max(len(str(r[i])) if i < len(r) else 0 for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [str(c).ljust(widths[i]) for i, c in enumerate(r)]
        out.append("   ".join(cells).rstrip())
    return "\n".join(out)


def mb(n: int | None) -> str:
    if n is None:
        return ""
    return f"{n // 1024}G" if n >= 1024 and n % 1024 == 0 else f"{n}M"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sidecar-lab", prog_name="localcf")
def main() -> None:
    """localcf: an embedded Cloud Foundry. Its verbs are the cf CLI's."""


# ------------------------------------------------------------------------------------- daemon

@main.command()
@click.argument("app_name", required=False)
@fail_on_client_errors
def start(app_name: str | None) -> None:
    """Start the daemon (nothing happens if it runs); with APP_NAME, start that app (cf start)."""
    if app_name:
        start_app(app_name)
        return
    state = StateDir()
    was = daemon.is_running(state)
    ep = daemon.start(state)
    c = Client(state)
    info = c.get("/localcf/v1/info")
    click.echo(f"localcf {'is running' if was else 'started'}: pid {ep['pid']}, API {info['api_url']}"
               + (f", router http://*.apps.localhost:{info['router_port']}" if info.get("router_port") else ""))
    if info.get("runtime_notice"):
        click.echo(f"Notice: {info['runtime_notice']}")


@main.command()
@click.argument("app_name", required=False)
@fail_on_client_errors
def stop(app_name: str | None) -> None:
    """Stop the daemon (apps come back on the next start); with APP_NAME, stop that app (cf stop)."""
    if app_name:
        c = client()
        click.echo(f"Stopping app {app_name} {WHERE}...")
        app = c.require_app(app_name)
        c.post(f"/v3/apps/{app['guid']}/actions/stop")
        click.echo("")
        click.echo("OK")
        return
    if daemon.stop(StateDir()):
        click.echo("localcf stopped")
    else:
        click.echo("localcf is not running")


def stage_newest_package(c: Client, app: dict[str, Any]) -> None:
    """Stage the app's newest uploaded package and make the droplet current (start, restage)."""
    ready = [p for p in c.get(f"/v3/apps/{app['guid']}/packages")["resources"] if p["state"] == "READY"]
    if not ready:
        raise CommandFailed(f"App '{app['name']}' has no uploaded package: push it first.")
    build = stage_package(c, app, ready[-1]["guid"])
    c.patch(f"/v3/apps/{app['guid']}/relationships/current_droplet", {"data": {"guid": build["droplet"]["guid"]}})


def restart_and_wait(c: Client, app: dict[str, Any]) -> None:
    click.echo("")
    click.echo("Waiting for app to start...")
    click.echo("")
    c.post(f"/v3/apps/{app['guid']}/actions/restart")
    wait_for_instances(c, app)


def start_app(name: str) -> None:
    c = client()
    click.echo(f"Starting app {name} {WHERE}...")
    app = c.require_app(name)
    if app["state"] == "STARTED":
        click.echo("")
        click.echo(f"App '{name}' is already started.")
        click.echo("")
        click.echo("OK")
        return
    if not app["relationships"]["current_droplet"]["data"]:
        stage_newest_package(c, app)
    click.echo("")
    click.echo("Waiting for app to start...")
    click.echo("")
    c.post(f"/v3/apps/{app['guid']}/actions/start")
    wait_for_instances(c, app)
    print_app_summary(c, c.require_app(name))


@main.command()
@click.argument("name")
@fail_on_client_errors
def restart(name: str) -> None:
    """Stop and start an app's instances (cf restart)."""
    c = client()
    click.echo(f"Restarting app {name} {WHERE}...")
    app = c.require_app(name)
    click.echo("")
    click.echo("Stopping app...")
    restart_and_wait(c, app)
    print_app_summary(c, c.require_app(name))


@main.command()
@click.argument("name")
@click.option("-f", "force", is_flag=True, help="Do not ask for confirmation")
@fail_on_client_errors
def restage(name: str, force: bool) -> None:
    """Stage the app's newest package again and restart it (cf restage)."""
    c = client()
    click.echo(f"Restaging app {name} {WHERE}...")
    click.echo("")
    app = c.require_app(name)
    stage_newest_package(c, app)
    if app["state"] == "STARTED":
        restart_and_wait(c, app)
    print_app_summary(c, c.require_app(name))


@main.command()
@click.argument("name")
@click.option("-i", "instances", type=int, help="Number of instances")
@click.option("-m", "memory", help="Memory limit (e.g. 256M, 1G)")
@click.option("-k", "disk", help="Disk limit (e.g. 512M, 1G)")
@click.option("--process", "ptype", default="web", show_default=True, help="Process type")
@fail_on_client_errors
def scale(name: str, instances: int | None, memory: str | None, disk: str | None, ptype: str) -> None:
    """Change an app's instances, memory or disk (cf scale)."""
    c = client()
    app = c.require_app(name)
    body: dict[str, Any] = {}
    if instances is not None:
        if instances < 0:
            raise CommandFailed("Incorrect Usage: -i must be 0 or more")
        body["instances"] = instances
    if memory:
        body["memory_in_mb"] = manifest_mod.parse_memory(memory, "-m")
    if disk:
        body["disk_in_mb"] = manifest_mod.parse_memory(disk, "-k")
    proc = c.get(f"/v3/apps/{app['guid']}/processes/{ptype}")
    click.echo(f"Scaling app {name} {WHERE}...")
    c.post(f"/v3/processes/{proc['guid']}/actions/scale", body)
    if ("memory_in_mb" in body or "disk_in_mb" in body) and app["state"] == "STARTED":
        click.echo("Stopping app...")
        c.post(f"/v3/apps/{app['guid']}/actions/restart")
    if app["state"] == "STARTED" and body.get("instances", 1):
        click.echo("Instances starting...")
        wait_for_instances(c, app)
    click.echo("")
    print_app_summary(c, c.require_app(name))


@main.command()
@click.argument("name")
@fail_on_client_errors
def events(name: str) -> None:
    """Show an app's recent events (cf events)."""
    c = client()
    click.echo(f"Getting events for app {name} {WHERE}...")
    click.echo("")
    app = c.require_app(name)
    found = c.get("/v3/audit_events", params={"target_guids": app["guid"]})["resources"]
    rows = [["time", "event", "actor", "description"]]
    for e in reversed(found):
        ts = datetime.strptime(e["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).astimezone()
        stamp = ts.strftime("%Y-%m-%dT%H:%M:%S.00%z")
        actor = e["actor"]["name"]
        data = e.get("data") or {}
        if e["type"] in ("app.crash", "audit.app.process.crash"):
            if e["type"] == "app.crash":
                actor = app["name"]
            else:
                actor = data.get("process_type", "web")
            desc = ", ".join(f"{k}: {data[k]}" for k in ("index", "reason", "cell_id", "instance",
                                                          "exit_description") if k in data)
        else:
            desc = ""
        rows.append([stamp, e["type"], actor, desc])
    click.echo(table(rows))


@main.command()
@click.argument("name")
@click.option("-i", "--app-instance-index", "index", type=int, default=0, show_default=True,
              help="Instance index")
@click.option("-c", "--command", "command", help="Command to run (default: an interactive shell)")
@click.option("-L", "forwards", multiple=True, help="Local port forward [BIND:]LOCAL_PORT:HOST:PORT")
@click.option("-N", "no_command", is_flag=True, help="Do not run a command (with -L)")
@click.option("-t", "--force-pseudo-tty", "force_tty", is_flag=True, help="Force a pseudo-terminal")
@click.option("-T", "--disable-pseudo-tty", "no_tty", is_flag=True, help="No pseudo-terminal")
@fail_on_client_errors
def ssh(name: str, index: int, command: str | None, forwards: tuple[str, ...], no_command: bool,
        force_tty: bool, no_tty: bool) -> None:
    """Run a command or a shell in an instance's container, or forward ports into it (cf ssh)."""
    from . import ssh as sshmod
    c = client()
    app = c.require_app(name)
    port = c.endpoint["api_port"]
    token = c.state.token()
    listeners = [start_forward(c, app, spec, index) for spec in forwards]
    if no_command or (forwards and command is None and not sys.stdin.isatty()):
        if not listeners:
            raise CommandFailed("Incorrect Usage: -N needs at least one -L")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return
    tty = (force_tty or (command is None and sys.stdin.isatty())) and not no_tty
    body: dict[str, Any] = {"index": index, "command": command, "tty": tty, "term": os.environ.get("TERM")}
    if tty:
        size = os.get_terminal_size() if sys.stdout.isatty() else os.terminal_size((80, 24))
        body.update(rows=size.lines, cols=size.columns)
    try:
        sock, reader = sshmod.open_upgraded(port, token, f"/localcf/v1/apps/{app['guid']}/ssh", body)
    except ConnectionError as e:
        raise CommandFailed(str(e)) from None
    if tty and sys.stdin.isatty():
        import termios
        import tty as ttymod
        saved = termios.tcgetattr(sys.stdin.fileno())
        ttymod.setraw(sys.stdin.fileno(), termios.TCSANOW)  # keep what was typed ahead
        try:
            status = sshmod.run_client(sock, reader, tty)
        finally:
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
    else:
        status = sshmod.run_client(sock, reader, tty, stdin=None if command is None else sys.stdin.buffer)
    sys.exit(status)


def start_forward(c: Client, app: dict[str, Any], spec: str, index: int) -> Any:
    """Listen on a local port; each connection is forwarded to HOST:PORT inside the container."""
    import socket as socketmod
    import threading
    from . import ssh as sshmod
    parts = spec.split(":")
    if len(parts) == 3:
        bind, (local, host, rport) = "127.0.0.1", parts
    elif len(parts) == 4:
        bind, local, host, rport = parts
    else:
        raise CommandFailed(f"Incorrect Usage: -L {spec}: expected [BIND_ADDRESS:]LOCAL_PORT:REMOTE_HOST:REMOTE_PORT")
    try:
        lport, rport_i = int(local), int(rport)
    except ValueError:
        raise CommandFailed(f"Incorrect Usage: -L {spec}: ports must be numbers") from None
    srv = socketmod.socket()
    srv.setsockopt(socketmod.SOL_SOCKET, socketmod.SO_REUSEADDR, 1)
    try:
        srv.bind((bind or "127.0.0.1", lport))
    except OSError as e:
        raise CommandFailed(f"Error opening local port {bind}:{lport}: {e.strerror}") from None
    srv.listen(16)
    port, token = c.endpoint["api_port"], c.state.token()

    def handle(conn: Any) -> None:
        try:
            sock, reader = sshmod.open_upgraded(port, token, f"/localcf/v1/apps/{app['guid']}/forward",
                                                {"index": index, "host": host, "port": rport_i})
        except ConnectionError as e:
            click.echo(f"connect to {host}:{rport_i} failed: {e}", err=True)
            conn.close()
            return
        sshmod._splice(sock, conn, first_reader=reader)
        conn.close()
        sock.close()

    def accept() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return srv


@main.command()
def status() -> None:
    """Say whether the daemon runs, and where."""
    state = StateDir()
    ep = daemon.is_running(state)
    if not ep:
        click.echo(f"localcf is not running (state dir {state.root})")
        sys.exit(1)
    info = Client(state).get("/localcf/v1/info")
    click.echo(f"localcf is running: pid {ep['pid']}, API {info['api_url']}, state dir {state.root}")
    if info.get("router_port"):
        click.echo(f"router: http://<app>.apps.localhost:{info['router_port']}  runtime: {info.get('runtime')}")
    if info.get("runtime_notice"):
        click.echo(f"Notice: {info['runtime_notice']}")


# --------------------------------------------------------------------------------------- apps

@main.command("create-app")
@click.argument("name")
@fail_on_client_errors
def create_app(name: str) -> None:
    """Create an app (cf create-app)."""
    click.echo(f"Creating app {name} {WHERE}...")
    try:
        client().post("/v3/apps", {"name": name, "relationships": {"space": {"data": {"guid": "dev"}}}})
    except ClientError as e:
        if "already exists" in e.detail:
            click.echo(f"App {name} already exists")
            click.echo("OK")
            return
        raise
    click.echo("OK")


main.add_command(click.Command("v3-create-app", callback=create_app.callback, params=create_app.params,
                               help="Create an app (cf v6 experimental verb)."))


def load_manifest(path: Path, variables: tuple[str, ...], vars_files: tuple[str, ...]) -> Any:
    vars_map: dict[str, str] = {}
    for v in variables:
        k, sep, val = v.partition("=")
        if not sep:
            raise CommandFailed(f"Incorrect usage: --var {v}: expected KEY=VALUE")
        vars_map[k] = val
    m = manifest_mod.load(path, vars=vars_map, vars_files=[Path(f) for f in vars_files])
    for warning in m.warnings:
        click.echo(f"Warning: {warning}", err=True)
    return m


def check_buildpacks_exist(m: Any, app_index: int, refs: list[str], where: str | None = None) -> None:
    """The unknown-buildpack error, with the manifest's file and line when it came from one."""
    for i, ref in enumerate(refs):
        if ref in ("default", "null", "") or is_url(ref) or os.path.isabs(ref):
            continue
        if client().buildpack(ref) is None:
            msg = f'Buildpack "{ref}" must be an existing admin buildpack or a valid git URI'
            if m is not None and m.source and ref in (m.apps[app_index].buildpacks or []):
                raise m.error(app_index, "buildpacks", m.apps[app_index].buildpacks.index(ref), message=msg,
                              hint="create it with `localcf create-buildpack`, or fix the name (see `localcf buildpacks`)")
            raise CommandFailed(msg)


def resolve_buildpack_refs(refs: list[str], base: Path) -> list[str]:
    """Local buildpack directories and zips become absolute paths the daemon can read."""
    out = []
    for ref in refs:
        if not is_url(ref) and (ref.startswith((".", "/", "~")) or os.sep in ref or ref.endswith(".zip")):
            p = (base / os.path.expanduser(ref)).resolve()
            if not p.exists():
                raise CommandFailed(f"Buildpack path {ref} does not exist (looked at {p}). "
                                    "Give an admin buildpack name, an http(s) URL of a zip, or an existing "
                                    "directory or zip.")
            ref = str(p)
        out.append(ref)
    return out


@main.command("apply-manifest")
@click.option("-f", "manifest_path", type=click.Path(), help="Path to the manifest")
@click.option("--var", "variables", multiple=True, help="Variable KEY=VALUE for ((KEY)) in the manifest")
@click.option("--vars-file", "vars_files", multiple=True, help="YAML file of variables")
@fail_on_client_errors
def apply_manifest(manifest_path: str | None, variables: tuple[str, ...], vars_files: tuple[str, ...]) -> None:
    """Apply a manifest: create or update apps, processes, sidecars, env and routes."""
    path = Path(manifest_path) if manifest_path else find_manifest(Path.cwd())
    if path is None:
        raise CommandFailed("Incorrect Usage: The specified path 'manifest.yml' does not exist.")
    path = path / "manifest.yml" if path.is_dir() else path
    if not path.exists():
        raise CommandFailed(f"Incorrect Usage: The specified path '{path}' does not exist.")
    m = load_manifest(path, variables, vars_files)
    click.echo(f"Applying manifest {path.resolve()} {WHERE}...")
    send_manifest(m, list(range(len(m.apps))))
    click.echo("OK")


main.add_command(click.Command("v3-apply-manifest", callback=apply_manifest.callback,
                               params=apply_manifest.params, help="Apply a manifest (cf v6 experimental verb)."))


def find_manifest(directory: Path) -> Path | None:
    for name in ("manifest.yml", "manifest.yaml"):
        if (directory / name).is_file():
            return directory / name
    return None


def send_manifest(m: Any, indexes: list[int], overrides: dict[str, Any] | None = None) -> None:
    apps = []
    for i in indexes:
        am = m.apps[i]
        if overrides:
            am = am.with_overrides(**overrides)
        d = am.to_dict()
        refs = d.get("buildpacks") or []
        if refs:
            refs = resolve_buildpack_refs(refs, Path(m.source).resolve().parent if m.source else Path.cwd())
            d["buildpacks"] = refs
        check_buildpacks_exist(m, i, refs)
        apps.append(d)
    client().request("POST", f"/v3/spaces/{SPACE_GUID}/actions/apply_manifest",
                     data=json.dumps({"applications": apps}).encode(),
                     headers={"Content-Type": "application/json"})


@main.command()
@click.argument("app_name", required=False)
@click.option("-f", "manifest_path", type=click.Path(), help="Path to the manifest")
@click.option("-p", "path", type=click.Path(), help="Path to the app directory")
@click.option("-b", "buildpacks", multiple=True, help="Buildpack (repeat for several)")
@click.option("-c", "command", help="Start command")
@click.option("-m", "memory", help="Memory limit (e.g. 256M, 1G)")
@click.option("-k", "disk", help="Disk limit (e.g. 512M, 1G)")
@click.option("-i", "instances", type=int, help="Number of instances")
@click.option("-s", "stack", help="Stack")
@click.option("-u", "--health-check-type", "health_check_type", type=click.Choice(["port", "process", "http", "none"]))
@click.option("--endpoint", "endpoint", help="HTTP health check endpoint")
@click.option("-t", "timeout", type=int, help="Health check timeout in seconds")
@click.option("--no-start", is_flag=True, help="Stage but do not start")
@click.option("--no-route", is_flag=True, help="Do not map a route")
@click.option("--random-route", is_flag=True, help="Map a random route")
@click.option("--no-manifest", is_flag=True, help="Ignore manifest.yml in the current directory")
@click.option("--var", "variables", multiple=True, help="Variable KEY=VALUE for the manifest")
@click.option("--vars-file", "vars_files", multiple=True, help="YAML file of variables")
@fail_on_client_errors
def push(app_name: str | None, manifest_path: str | None, path: str | None, buildpacks: tuple[str, ...],
         command: str | None, memory: str | None, disk: str | None, instances: int | None,
         stack: str | None, health_check_type: str | None, endpoint: str | None, timeout: int | None,
         no_start: bool, no_route: bool, random_route: bool, no_manifest: bool,
         variables: tuple[str, ...], vars_files: tuple[str, ...]) -> None:
    """Push an app: apply its manifest, upload, stage, and start it (cf push)."""
    m = None
    if manifest_path:
        mp = Path(manifest_path)
        mp = mp / "manifest.yml" if mp.is_dir() else mp
        if not mp.exists():
            raise CommandFailed(f"Incorrect Usage: The specified path '{manifest_path}' does not exist.")
        m = load_manifest(mp, variables, vars_files)
    elif not no_manifest:
        found = find_manifest(Path.cwd())
        if found:
            m = load_manifest(found, variables, vars_files)
    if m is None:
        if not app_name:
            raise CommandFailed("Incorrect Usage: the required argument `APP_NAME` was not provided")
        m = manifest_mod.loads(yaml.safe_dump({"applications": [{"name": app_name}]}), source="",
                               base_dir=Path.cwd())
        indexes = [0]
    elif app_name:
        indexes = [i for i, a in enumerate(m.apps) if a.name == app_name]
        if not indexes:
            raise CommandFailed(f"Could not find app named '{app_name}' in manifest")
    else:
        indexes = list(range(len(m.apps)))
    overrides: dict[str, Any] = {}
    for key, val in (("path", path and str(Path(path).resolve())), ("command", command),
                     ("memory", memory), ("disk_quota", disk), ("instances", instances), ("stack", stack),
                     ("health_check_type", health_check_type), ("health_check_http_endpoint", endpoint),
                     ("timeout", timeout)):
        if val is not None:
            overrides[key] = val
    if buildpacks:
        overrides["buildpacks"] = resolve_buildpack_refs(list(buildpacks), Path.cwd())
    if no_route:
        overrides["no_route"] = True
    if random_route:
        overrides["random_route"] = True
    if overrides and len(indexes) > 1:
        raise CommandFailed("Incorrect Usage: Command line flags (except -f and --no-start) cannot be "
                            "applied when pushing multiple apps from a manifest file.")
    for i in indexes:
        am = m.apps[i].with_overrides(**overrides) if overrides else m.apps[i]
        push_one(m, i, am, overrides, no_start)


def push_one(m: Any, index: int, am: Any, overrides: dict[str, Any], no_start: bool) -> None:
    c = client()
    name = am.name
    click.echo(f"Pushing app {name} to org {ORG} / space {SPACE} as {USER}...")
    if m.source:
        click.echo(f"Applying manifest file {Path(m.source).resolve()}...")
    send_manifest(m, [index], overrides)
    click.echo("Manifest applied")
    app = c.require_app(name)
    app_dir = Path(am.path) if getattr(am, "path", None) else Path(m.source).resolve().parent if m.source else Path.cwd()
    if not app_dir.exists():
        raise CommandFailed(f"Incorrect Usage: The specified path '{app_dir}' does not exist.")
    click.echo("Packaging files to upload...")
    with tempfile.TemporaryDirectory() as tmp:
        zpath = Path(tmp) / "app.zip"
        zip_app_dir(app_dir, zpath)
        data = zpath.read_bytes()
    pkg = c.post("/v3/packages", {"type": "bits", "relationships": {"app": {"data": {"guid": app["guid"]}}}})
    click.echo("Uploading files...")
    c.request("POST", f"/v3/packages/{pkg['guid']}/upload", data=data,
              headers={"Content-Type": "application/zip"})
    click.echo(f" {_kib(len(data))} / {_kib(len(data))} [==============================] 100.00%")
    click.echo("")
    click.echo("Waiting for API to complete processing files...")
    click.echo("")
    build = stage_package(c, app, pkg["guid"])
    c.patch(f"/v3/apps/{app['guid']}/relationships/current_droplet", {"data": {"guid": build["droplet"]["guid"]}})
    if not no_start:
        click.echo("")
        click.echo(f"Waiting for app {name} to start...")
        click.echo("")
        c.post(f"/v3/apps/{app['guid']}/actions/restart")
        wait_for_instances(c, app)
    click.echo("")
    print_app_summary(c, c.require_app(name))


main.add_command(click.Command("v3-push", callback=push.callback, params=push.params,
                               help="Push an app (cf v6 experimental verb)."))


def _kib(n: int) -> str:
    return f"{n / 1024:.2f} KiB"


def stage_package(c: Client, app: dict[str, Any], package_guid: str) -> dict[str, Any]:
    """Create a build and trace its staging log until it ends; returns the staged build."""
    click.echo("Staging app and tracing logs...")
    build = c.post("/v3/builds", {"package": {"guid": package_guid}})
    for item in c.stream_lines(f"/localcf/v1/builds/{build['guid']}/log"):
        click.echo(f"   {item['message']}")
    build = c.get(f"/v3/builds/{build['guid']}")
    while build["state"] == "STAGING":  # the stream ended early (a daemon restart): poll instead
        time.sleep(0.1)
        build = c.get(f"/v3/builds/{build['guid']}")
    if build["state"] == "FAILED":
        raise CommandFailed(f"Error staging application: {build['error']}")
    return build


def wait_for_instances(c: Client, app: dict[str, Any], timeout: float = 60) -> None:
    web = c.get(f"/v3/apps/{app['guid']}/processes/web")
    if web["instances"] == 0:
        return
    deadline = time.monotonic() + max(timeout, (web["health_check"]["data"].get("timeout") or 60))
    while time.monotonic() < deadline:
        stats = c.get(f"/v3/processes/{web['guid']}/stats")["resources"]
        states = [s["state"] for s in stats]
        if any(s == "RUNNING" for s in states):
            return
        if states and all(s == "CRASHED" for s in states):
            raise CommandFailed(f"Start unsuccessful\n\nTIP: use 'cf logs {app['name']} --recent' for more information")
        time.sleep(0.05)
    raise CommandFailed(f"Start app timeout\n\nTIP: Application must be listening on the right port. "
                        f"Instead of hard coding the port, use the $PORT environment variable.\n\n"
                        f"Use 'cf logs {app['name']} --recent' for more information")


def _when(ts: str | None) -> str:
    if not ts:
        return ""
    dt = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).astimezone()
    return dt.strftime("%a %d %b %H:%M:%S %Z %Y")


def print_app_summary(c: Client, app: dict[str, Any]) -> None:
    g = app["guid"]
    routes = [r["url"] for r in c.get(f"/v3/apps/{g}/routes")["resources"]]
    droplet = None
    if app["relationships"]["current_droplet"]["data"]:
        try:
            droplet = c.get(f"/v3/apps/{g}/droplets/current")
        except ClientError:
            droplet = None
    rows = [["name:", app["name"]], ["requested state:", app["state"].lower()],
            ["routes:", ", ".join(routes)],
            ["last uploaded:", _when(droplet["created_at"]) if droplet else ""],
            ["stack:", droplet["stack"] if droplet else ""]]
    width = max(len(r[0]) for r in rows) + 3
    for k, v in rows:
        click.echo(f"{k.ljust(width)}{v}".rstrip())
    click.echo("buildpacks:")
    if droplet and droplet["buildpacks"]:
        bp_rows = [["name", "version", "detect output", "buildpack name"]]
        for b in droplet["buildpacks"]:
            bp_rows.append([b.get("name") or "", b.get("version") or "", b.get("detect_output") or "",
                            b.get("buildpack_name") or ""])
        for line in table(bp_rows).splitlines():
            click.echo(f"\t{line}")
    sidecars = c.get(f"/v3/apps/{g}/sidecars")["resources"]
    for proc in c.get(f"/v3/apps/{g}/processes")["resources"]:
        click.echo("")
        names = [s["name"] for s in sidecars if proc["type"] in s["process_types"]]
        stats = c.get(f"/v3/processes/{proc['guid']}/stats")["resources"]
        running = sum(1 for s in stats if s["state"] == "RUNNING")
        prow = [["type:", proc["type"]], ["sidecars:", ", ".join(names)],
                ["instances:", f"{running}/{proc['instances']}"],
                ["memory usage:", mb(proc["memory_in_mb"])], ["start command:", proc["command"] or ""]]
        pw = max(len(r[0]) for r in prow) + 3
        for k, v in prow:
            click.echo(f"{k.ljust(pw)}{v}".rstrip())
        if not stats:
            click.echo("There are no running instances of this process.")
            continue
        inst = [["", "state", "since", "cpu", "memory", "disk", "details"]]
        for s in stats:
            since = ""
            if s.get("uptime") is not None and s["state"] == "RUNNING":
                since = datetime.fromtimestamp(time.time() - s["uptime"], timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            u = s.get("usage") or {}
            inst.append([f"#{s['index']}", s["state"].lower(), since,
                         f"{(u.get('cpu') or 0) * 100:.1f}%",
                         f"{_bytes(u.get('mem'))} of {mb(proc['memory_in_mb'])}",
                         f"{_bytes(u.get('disk'))} of {mb(proc['disk_in_mb'])}", s.get("details") or ""])
        click.echo(table(inst))


def _bytes(n: int | None) -> str:
    n = n or 0
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f}G"
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f}M"
    return f"{n / 1024:.1f}K" if n else "0"


@main.command()
@fail_on_client_errors
def apps() -> None:
    """List apps (cf apps)."""
    c = client()
    click.echo(f"Getting apps {WHERE}...")
    click.echo("")
    found = c.get("/v3/apps")["resources"]
    if not found:
        click.echo("No apps found")
        return
    rows = [["name", "requested state", "processes", "routes"]]
    for a in found:
        procs = []
        for p in c.get(f"/v3/apps/{a['guid']}/processes")["resources"]:
            stats = c.get(f"/v3/processes/{p['guid']}/stats")["resources"]
            running = sum(1 for s in stats if s["state"] == "RUNNING")
            procs.append(f"{p['type']}:{running}/{p['instances']}")
        routes = [r["url"] for r in c.get(f"/v3/apps/{a['guid']}/routes")["resources"]]
        rows.append([a["name"], a["state"].lower(), ", ".join(procs), ", ".join(routes)])
    click.echo(table(rows))


@main.command()
@click.argument("name")
@click.option("--guid", is_flag=True, help="Print only the app's guid")
@fail_on_client_errors
def app(name: str, guid: bool) -> None:
    """Show an app (cf app)."""
    c = client()
    a = c.require_app(name)
    if guid:
        click.echo(a["guid"])
        return
    click.echo(f"Showing health and status for app {name} {WHERE}...")
    click.echo("")
    print_app_summary(c, a)


def confirm_delete(kind: str, name: str) -> bool:
    """Ask as cf does; with no terminal to ask on, refuse and say how to skip the question."""
    if not sys.stdin.isatty():
        raise CommandFailed(f"Refusing to delete {kind} {name} without confirmation: no terminal to ask on. "
                            "Use -f to delete without asking.")
    if click.confirm(f"Really delete the {kind} {name}?", default=False):
        return True
    click.echo(f"{kind.capitalize()} has not been deleted.")
    return False


@main.command()
@click.argument("name")
@click.option("-f", "force", is_flag=True, help="Do not ask for confirmation")
@click.option("-r", "routes", is_flag=True, help="Also delete the app's routes")
@fail_on_client_errors
def delete(name: str, force: bool, routes: bool) -> None:
    """Delete an app (cf delete)."""
    if not force and not confirm_delete("app", name):
        return
    c = client()
    click.echo(f"Deleting app {name} {WHERE}...")
    a = c.app(name)
    if not a:
        click.echo(f"App '{name}' does not exist.")
    else:
        c.delete(f"/v3/apps/{a['guid']}")
    click.echo("OK")


@main.command()
@click.argument("name")
@fail_on_client_errors
def env(name: str) -> None:
    """Show an app's environment (cf env)."""
    c = client()
    a = c.require_app(name)
    click.echo(f"Getting env variables for app {name} {WHERE}...")
    e = c.get(f"/v3/apps/{a['guid']}/env")
    click.echo("System-Provided:")
    for k, v in e["system_env_json"].items():
        click.echo(f"{k}: {json.dumps(v, indent=2)}")
        click.echo("")
    for k, v in e["application_env_json"].items():
        click.echo(f"{k}: {json.dumps(v, indent=2)}")
        click.echo("")
    if e["environment_variables"]:
        click.echo("User-Provided:")
        for k, v in sorted(e["environment_variables"].items()):
            click.echo(f"{k}: {v}")
    else:
        click.echo("No user-provided env variables have been set")
    click.echo("")
    click.echo("No running env variables have been set")
    click.echo("")
    click.echo("No staging env variables have been set")


@main.command("set-env")
@click.argument("name")
@click.argument("var")
@click.argument("value")
@fail_on_client_errors
def set_env(name: str, var: str, value: str) -> None:
    """Set an env variable of an app (cf set-env)."""
    c = client()
    click.echo(f"Setting env variable {var} for app {name} {WHERE}...")
    a = c.require_app(name)
    c.patch(f"/v3/apps/{a['guid']}/environment_variables", {"var": {var: value}})
    click.echo("OK")
    click.echo(f"TIP: Use 'cf restage {name}' to ensure your env variable changes take effect.")


@main.command("unset-env")
@click.argument("name")
@click.argument("var")
@fail_on_client_errors
def unset_env(name: str, var: str) -> None:
    """Remove an env variable of an app (cf unset-env)."""
    c = client()
    click.echo(f"Removing env variable {var} from app {name} {WHERE}...")
    a = c.require_app(name)
    if var not in (a and c.get(f"/v3/apps/{a['guid']}/environment_variables")["var"]):
        click.echo(f"Env variable {var} was not set.")
        click.echo("OK")
        return
    c.patch(f"/v3/apps/{a['guid']}/environment_variables", {"var": {var: None}})
    click.echo("OK")
    click.echo(f"TIP: Use 'cf restage {name}' to ensure your env variable changes take effect.")


@main.command()
@click.argument("path")
@click.option("-X", "method", default=None, help="HTTP method (default GET, or POST with -d)")
@click.option("-d", "data", default=None, help="Request body")
@click.option("-H", "headers", multiple=True, help="Header 'Name: value'")
@click.option("-i", "include", is_flag=True, help="Show the response status")
@fail_on_client_errors
def curl(path: str, method: str | None, data: str | None, headers: tuple[str, ...], include: bool) -> None:
    """Call the API directly (cf curl /v3/...)."""
    c = client()
    if not path.startswith("/"):
        path = "/" + path
    method = (method or ("POST" if data else "GET")).upper()
    hdrs = {}
    for h in headers:
        k, _, v = h.partition(":")
        hdrs[k.strip()] = v.strip()
    if data and data.startswith("@"):
        data = Path(data[1:]).read_text()
    import requests
    r = requests.request(method, c.base_url + path, data=data.encode() if data else None,
                         headers={"Authorization": f"bearer {c.state.token()}",
                                  **({"Content-Type": "application/json"} if data else {}), **hdrs}, timeout=60)
    if include:
        click.echo(f"HTTP/1.1 {r.status_code} {r.reason}")
    try:
        click.echo(json.dumps(r.json(), indent=3))
    except ValueError:
        click.echo(r.text)
    if r.status_code >= 400:
        sys.exit(1)


# --------------------------------------------------------------------------------- buildpacks

@main.command()
@fail_on_client_errors
def buildpacks() -> None:
    """List admin buildpacks (cf buildpacks)."""
    click.echo(f"Getting buildpacks as {USER}...")
    click.echo("")
    found = client().get("/v3/buildpacks")["resources"]
    if not found:
        click.echo("No buildpacks found")
        return
    rows = [["position", "name", "stack", "enabled", "locked", "filename"]]
    for b in found:
        rows.append([str(b["position"]), b["name"], b["stack"] or "", str(b["enabled"]).lower(),
                     str(b["locked"]).lower(), b["filename"] or ""])
    click.echo(table(rows))


def _buildpack_zip(path: str) -> tuple[str, bytes]:
    from .buildpacks import zip_dir
    p = Path(path)
    if p.is_dir():
        with tempfile.TemporaryDirectory() as tmp:
            z = Path(tmp) / (p.resolve().name + ".zip")
            zip_dir(p, z)
            return z.name, z.read_bytes()
    if p.is_file():
        return p.name, p.read_bytes()
    raise CommandFailed(f"Incorrect Usage: The specified path '{path}' does not exist.")


@main.command("create-buildpack")
@click.argument("name")
@click.argument("path")
@click.argument("position", type=int)
@click.option("--disable", is_flag=True, help="Create it disabled")
@fail_on_client_errors
def create_buildpack(name: str, path: str, position: int, disable: bool) -> None:
    """Create an admin buildpack from a directory or zip (cf create-buildpack)."""
    c = client()
    filename, data = _buildpack_zip(path)
    click.echo(f"Creating buildpack {name} as {USER}...")
    bp = c.post("/v3/buildpacks", {"name": name, "position": position, "enabled": not disable})
    click.echo("OK")
    click.echo("")
    click.echo(f"Uploading buildpack {name} as {USER}...")
    c.request("POST", f"/v3/buildpacks/{bp['guid']}/upload", data=data,
              headers={"Content-Type": "application/zip", "X-Filename": filename})
    click.echo("OK")


@main.command("update-buildpack")
@click.argument("name")
@click.option("-p", "path", help="New buildpack directory or zip")
@click.option("-i", "position", type=int, help="New position")
@click.option("--enable", "enable", is_flag=True, default=None)
@click.option("--disable", "disable", is_flag=True, default=None)
@click.option("--lock", "lock", is_flag=True, default=None)
@click.option("--unlock", "unlock", is_flag=True, default=None)
@fail_on_client_errors
def update_buildpack(name: str, path: str | None, position: int | None, enable: bool | None,
                     disable: bool | None, lock: bool | None, unlock: bool | None) -> None:
    """Update an admin buildpack (cf update-buildpack)."""
    c = client()
    if enable and disable:
        raise CommandFailed("Incorrect Usage: The following arguments cannot be used together: --enable, --disable")
    if lock and unlock:
        raise CommandFailed("Incorrect Usage: The following arguments cannot be used together: --lock, --unlock")
    click.echo(f"Updating buildpack {name} as {USER}...")
    bp = c.buildpack(name)
    if not bp:
        raise CommandFailed(f"Buildpack '{name}' not found.")
    if path and bp["locked"] and not unlock:
        raise CommandFailed("The buildpack is locked")
    changes: dict[str, Any] = {}
    if position is not None:
        changes["position"] = position
    if enable:
        changes["enabled"] = True
    if disable:
        changes["enabled"] = False
    if unlock:
        changes["locked"] = False
    if changes:
        c.patch(f"/v3/buildpacks/{bp['guid']}", changes)
    if path:
        filename, data = _buildpack_zip(path)
        click.echo("OK")
        click.echo("")
        click.echo(f"Uploading buildpack {name} as {USER}...")
        c.request("POST", f"/v3/buildpacks/{bp['guid']}/upload", data=data,
                  headers={"Content-Type": "application/zip", "X-Filename": filename})
    if lock:
        c.patch(f"/v3/buildpacks/{bp['guid']}", {"locked": True})
    click.echo("OK")


@main.command("delete-buildpack")
@click.argument("name")
@click.option("-f", "force", is_flag=True, help="Do not ask for confirmation")
@fail_on_client_errors
def delete_buildpack(name: str, force: bool) -> None:
    """Delete an admin buildpack (cf delete-buildpack)."""
    if not force and not confirm_delete("buildpack", name):
        return
    c = client()
    click.echo(f"Deleting buildpack {name} as {USER}...")
    bp = c.buildpack(name)
    if not bp:
        click.echo(f"Buildpack '{name}' does not exist.")
    else:
        c.delete(f"/v3/buildpacks/{bp['guid']}")
    click.echo("OK")


# ----------------------------------------------------------------------------------- droplets

@main.command("download-droplet")
@click.argument("name")
@click.option("--droplet", "droplet_guid", help="Droplet guid (default: the current one)")
@click.option("--path", "path", type=click.Path(), help="File or directory to write the droplet to")
@fail_on_client_errors
def download_droplet(name: str, droplet_guid: str | None, path: str | None) -> None:
    """Download an app's droplet as a .tgz (cf download-droplet)."""
    c = client()
    a = c.require_app(name)
    if not droplet_guid:
        cur = a["relationships"]["current_droplet"]["data"]
        if not cur:
            raise CommandFailed(f"App '{name}' does not have a current droplet.")
        droplet_guid = cur["guid"]
    click.echo(f"Downloading current droplet for app {name} {WHERE}...")
    data = c.get(f"/v3/droplets/{droplet_guid}/download", raw=True)
    out = Path(path) if path else Path.cwd()
    if out.is_dir():
        out = out / "droplet.tgz"
    out.write_bytes(data)
    click.echo(f"Droplet downloaded successfully at {out}")
    click.echo("OK")


@main.group()
def droplet() -> None:
    """Look inside droplets."""


@droplet.command("download")
@click.argument("name")
@click.argument("directory", type=click.Path())
@fail_on_client_errors
def droplet_download(name: str, directory: str) -> None:
    """Download an app's current droplet and unpack it into DIRECTORY."""
    import tarfile
    c = client()
    a = c.require_app(name)
    cur = a["relationships"]["current_droplet"]["data"]
    if not cur:
        raise CommandFailed(f"App '{name}' does not have a current droplet. Push it first (--no-start is enough).")
    data = c.get(f"/v3/droplets/{cur['guid']}/download", raw=True)
    dest = Path(directory)
    dest.mkdir(parents=True, exist_ok=True)
    import io
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tf:
        tf.extractall(dest, filter="tar")
    click.echo(f"Droplet of {name} unpacked into {dest}")


@main.command()
@click.argument("name")
@click.option("--recent", is_flag=True, help="Dump recent logs instead of tailing")
@fail_on_client_errors
def logs(name: str, recent: bool) -> None:
    """Show an app's logs (cf logs)."""
    c = client()
    a = c.require_app(name)
    if recent:
        click.echo(f"Retrieving logs for app {name} {WHERE}...")
        click.echo("")
        for e in c.recent_logs(a["guid"]):
            click.echo(format_line(e))
        return
    click.echo(f"Retrieving logs for app {name} {WHERE}...")
    click.echo("")
    try:
        for e in c.stream_logs(a["guid"], timeout=3600):
            if e:
                click.echo(format_line(e))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
