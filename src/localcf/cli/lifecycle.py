"""The daemon's verbs (`localcf start`, `stop`, `status`) and an app's (`start APP`, `stop APP`,
`restart`, `restage`, `scale`)."""

from __future__ import annotations

import sys

import click

from .. import actions, daemon, output
from ..client import Client
from ..jsondoc import JsonObject
from ..manifest import parse_memory
from ..paths import StateDir
from .base import WHERE, CommandFailed, client, fail_on_client_errors, main, say, staging_line


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
    info = Client(state).get("/localcf/v1/info")
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
        actions.stop(c, c.require_app(app_name))
        say("", "OK")
        return
    if daemon.stop(StateDir()):
        click.echo("localcf stopped")
    else:
        click.echo("localcf is not running")


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
    password_file = state.root / "uaa-password"  # written by the daemon: Cloud Foundry's cf CLI logs in with it
    if password_file.is_file():
        click.echo(f"cf CLI: cf api {info['api_url']} && cf auth admin {password_file.read_text().strip()}  "
                   f"(password in {password_file})")
    if info.get("runtime_notice"):
        click.echo(f"Notice: {info['runtime_notice']}")


def print_app_summary(c: Client, app: JsonObject) -> None:
    click.echo(output.app_summary(actions.app_summary(c, app)))


def stage_newest(c: Client, app: JsonObject) -> None:
    """Stage the app's newest package and make the droplet current (start, restage)."""
    package_guid = actions.newest_package(c, app)
    click.echo("Staging app and tracing logs...")
    actions.stage_and_set_droplet(c, app, package_guid, staging_line)


def restart_and_wait(c: Client, app: JsonObject) -> None:
    say("", "Waiting for app to start...", "")
    actions.restart_and_wait(c, app)


def start_app(name: str) -> None:
    c = client()
    click.echo(f"Starting app {name} {WHERE}...")
    app = c.require_app(name)
    if app["state"] == "STARTED":
        say("", f"App '{name}' is already started.", "", "OK")
        return
    if not actions.current_droplet_guid(app):
        stage_newest(c, app)
    say("", "Waiting for app to start...", "")
    actions.start(c, app)
    actions.wait_for_instances(c, app)
    print_app_summary(c, c.require_app(name))


@main.command()
@click.argument("name")
@fail_on_client_errors
def restart(name: str) -> None:
    """Stop and start an app's instances (cf restart)."""
    c = client()
    click.echo(f"Restarting app {name} {WHERE}...")
    app = c.require_app(name)
    say("", "Stopping app...")
    restart_and_wait(c, app)
    print_app_summary(c, c.require_app(name))


@main.command()
@click.argument("name")
@click.option("-f", "force", is_flag=True, help="Do not ask for confirmation")
@fail_on_client_errors
def restage(name: str, force: bool) -> None:
    """Stage the app's newest package again and restart it (cf restage)."""
    c = client()
    say(f"Restaging app {name} {WHERE}...", "")
    app = c.require_app(name)
    stage_newest(c, app)
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
    body: JsonObject = {}
    if instances is not None:
        if instances < 0:
            raise CommandFailed("Incorrect Usage: -i must be 0 or more")
        body["instances"] = instances
    if memory:
        body["memory_in_mb"] = parse_memory(memory, "-m")
    if disk:
        body["disk_in_mb"] = parse_memory(disk, "-k")
    proc = actions.process(c, app, ptype)
    click.echo(f"Scaling app {name} {WHERE}...")
    actions.scale(c, proc, body)
    if ("memory_in_mb" in body or "disk_in_mb" in body) and app["state"] == "STARTED":
        click.echo("Stopping app...")
        actions.restart(c, app)
    if app["state"] == "STARTED" and body.get("instances", 1):
        click.echo("Instances starting...")
        actions.wait_for_instances(c, app)
    click.echo("")
    print_app_summary(c, c.require_app(name))
