"""Verbs about apps and what they hold: `create-app`, `apps`, `app`, `delete`, `env`, `set-env`,
`unset-env`, `events`, `logs`, and `curl` for the API itself."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .. import actions, output
from ..client import ClientError
from ..constants import SPACE_GUID
from .base import WHERE, alias, client, confirm_delete, fail_on_client_errors, main, say
from .lifecycle import print_app_summary


@main.command("create-app")
@click.argument("name")
@fail_on_client_errors
def create_app(name: str) -> None:
    """Create an app (cf create-app)."""
    click.echo(f"Creating app {name} {WHERE}...")
    try:
        client().post("/v3/apps", {"name": name, "relationships": {"space": {"data": {"guid": SPACE_GUID}}}})
    except ClientError as e:
        if "already exists" in e.detail:
            say(f"App {name} already exists", "OK")
            return
        raise
    click.echo("OK")


alias("v3-create-app", create_app, "Create an app (cf v6 experimental verb).")


@main.command()
@fail_on_client_errors
def apps() -> None:
    """List apps (cf apps)."""
    c = client()
    say(f"Getting apps {WHERE}...", "")
    found = actions.app_list(c)
    if not found:
        click.echo("No apps found")
        return
    rows = [["name", "requested state", "processes", "routes"]]
    for a, procs, routes in found:
        rows.append([a["name"], a["state"].lower(), ", ".join(procs), ", ".join(routes)])
    click.echo(output.table(rows))


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
    say(f"Showing health and status for app {name} {WHERE}...", "")
    print_app_summary(c, a)


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
        say(f"{k}: {json.dumps(v, indent=2)}", "")
    for k, v in e["application_env_json"].items():
        say(f"{k}: {json.dumps(v, indent=2)}", "")
    if e["environment_variables"]:
        click.echo("User-Provided:")
        for k, v in sorted(e["environment_variables"].items()):
            click.echo(f"{k}: {v}")
    else:
        click.echo("No user-provided env variables have been set")
    say("", "No running env variables have been set", "", "No staging env variables have been set")


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
    say("OK", f"TIP: Use 'cf restage {name}' to ensure your env variable changes take effect.")


@main.command("unset-env")
@click.argument("name")
@click.argument("var")
@fail_on_client_errors
def unset_env(name: str, var: str) -> None:
    """Remove an env variable of an app (cf unset-env)."""
    c = client()
    click.echo(f"Removing env variable {var} from app {name} {WHERE}...")
    a = c.require_app(name)
    if var not in c.get(f"/v3/apps/{a['guid']}/environment_variables")["var"]:
        say(f"Env variable {var} was not set.", "OK")
        return
    c.patch(f"/v3/apps/{a['guid']}/environment_variables", {"var": {var: None}})
    say("OK", f"TIP: Use 'cf restage {name}' to ensure your env variable changes take effect.")


@main.command()
@click.argument("name")
@fail_on_client_errors
def events(name: str) -> None:
    """Show an app's recent events (cf events)."""
    c = client()
    say(f"Getting events for app {name} {WHERE}...", "")
    app = c.require_app(name)
    found = c.get("/v3/audit_events", params={"target_guids": app["guid"]})["resources"]
    rows = [["time", "event", "actor", "description"]]
    for e in reversed(found):
        actor = e["actor"]["name"]
        data = e.get("data") or {}
        if e["type"] in ("app.crash", "audit.app.process.crash"):  # actor: the app, or the process type
            desc = ", ".join(f"{k}: {data[k]}" for k in ("index", "reason", "cell_id", "instance",
                                                          "exit_description") if k in data)
        else:
            desc = ""
        rows.append([output.event_time(e["created_at"]), e["type"], actor, desc])
    click.echo(output.table(rows))


@main.command()
@click.argument("name")
@click.option("--recent", is_flag=True, help="Dump recent logs instead of tailing")
@fail_on_client_errors
def logs(name: str, recent: bool) -> None:
    """Show an app's logs (cf logs)."""
    c = client()
    a = c.require_app(name)
    say(f"Retrieving logs for app {name} {WHERE}...", "")
    if recent:
        for e in c.recent_logs(a["guid"]):
            click.echo(output.log_line(e))
        return
    try:
        for line in c.stream_logs(a["guid"], timeout=3600):
            if line:
                click.echo(output.log_line(line))
    except KeyboardInterrupt:
        pass


@main.command()
@click.argument("path")
@click.option("-X", "method", default=None, help="HTTP method (default GET, or POST with -d)")
@click.option("-d", "data", default=None, help="Request body")
@click.option("-H", "headers", multiple=True, help="Header 'Name: value'")
@click.option("-i", "include", is_flag=True, help="Show the response status")
@fail_on_client_errors
def curl(path: str, method: str | None, data: str | None, headers: tuple[str, ...], include: bool) -> None:
    """Call the API directly (cf curl /v3/...)."""
    import requests

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
