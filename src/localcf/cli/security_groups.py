"""The security group verbs of the `localcf` command, with the cf CLI v8's texts.

`security-groups`, `security-group NAME`, `create-security-group NAME PATH_TO_JSON_RULES_FILE`,
`update-security-group NAME PATH_TO_JSON_RULES_FILE`, `delete-security-group NAME [-f]`,
`staging-security-groups`, `running-security-groups`, `bind-staging-security-group NAME`,
`unbind-staging-security-group NAME`, `bind-running-security-group NAME`,
`unbind-running-security-group NAME`. Registered on the `localcf` group when imported.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ..client import Client, ClientError
from ..jsondoc import JsonObject
from ..output import table
from ..security_group_rules import RUNNING, STAGING, display_rule
from .base import USER, CommandFailed, client, fail_on_client_errors, main

TIP_DYNAMIC = ("TIP: If Dynamic ASG's are enabled, changes will automatically apply for running and staging "
               "applications. Otherwise, changes will require an app restart (for running) or restage (for "
               "staging) to apply to existing applications.")
TIP_UPDATE = ("TIP: Changes require an app restart (for running) or restage (for staging) to apply to "
              "existing applications.")
VALID_JSON_EXAMPLE = """Valid json file example:
[
  {
    "protocol": "tcp",
    "destination": "10.244.1.18",
    "ports": "3306"
  }
]"""
PROCESS_MODE_STAGING = ("Notice: localcf runs in process mode, which has no network namespace: staging uses the "
                        "host's network whatever the staging security groups say (it cannot be air-gapped).")


def warn(message: str) -> None:
    """A cf CLI warning: on stderr, the command goes on."""
    click.echo(message, err=True)


def find_group(c: Client, name: str) -> JsonObject | None:
    found = c.get("/v3/security_groups", params={"names": name})["resources"]
    return found[0] if found else None


def require_group(c: Client, name: str) -> JsonObject:
    group = find_group(c, name)
    if group is None:
        raise CommandFailed(f"Security group '{name}' not found.")
    return group


def read_rules(path: str) -> Any:
    """The rules file's JSON; a file that is not JSON fails with the cf CLI's text and the reason."""
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise CommandFailed(f"Incorrect json format: {path}\n{e}\n\n{VALID_JSON_EXAMPLE}") from None
    try:
        return json.loads(text)
    except ValueError as e:
        reason = f"line {e.lineno}, column {e.colno}: {e.msg}" if isinstance(e, json.JSONDecodeError) else str(e)
        raise CommandFailed(f"Incorrect json format: {path}\n{reason}\n\n{VALID_JSON_EXAMPLE}") from None


def check_path(path: str) -> None:
    if not Path(path).exists():
        raise CommandFailed(f"Incorrect Usage: The specified path '{path}' does not exist.")


def process_mode_notice(c: Client) -> None:
    """Staging groups cannot air-gap anything in process mode: say so rather than pretend."""
    if c.get("/localcf/v1/info").get("runtime") == "process":
        warn(PROCESS_MODE_STAGING)


# ------------------------------------------------------------------------------------- listing

@main.command("security-groups")
@fail_on_client_errors
def security_groups() -> None:
    """List all security groups (cf security-groups)."""
    click.echo(f"Getting security groups as {USER}...")
    click.echo("")
    found = client().get("/v3/security_groups")["resources"]
    if not found:
        click.echo("No security groups found.")
        return
    rows = [["name", "organization", "space", "lifecycle"]]
    for g in found:
        bindings = [["<all>", "<all>", lifecycle] for lifecycle in (STAGING, RUNNING)
                    if g["globally_enabled"][lifecycle]]
        for row in bindings or [["", "", ""]]:
            rows.append([g["name"], *row])
    click.echo(table(rows))


@main.command("security-group")
@click.argument("name")
@fail_on_client_errors
def security_group(name: str) -> None:
    """Show a single security group (cf security-group)."""
    c = client()
    click.echo(f"Getting info for security group {name} as {USER}...")
    click.echo("")
    group = require_group(c, name)
    click.echo(table([["name:", group["name"]], ["rules:", ""]]))
    click.echo(json.dumps([display_rule(r) for r in group["rules"]], indent=2, ensure_ascii=False))
    click.echo("")
    spaces = [("localcf", "dev") for rel in ("running_spaces", "staging_spaces")
              for _ in group["relationships"][rel]["data"]]
    if spaces:
        click.echo(table([["organization", "space"], *[list(s) for s in spaces]]))
    else:
        click.echo("No spaces assigned")


def _lifecycle_list(lifecycle: str) -> None:
    click.echo(f"Getting global {lifecycle} security groups as {USER}...")
    click.echo("")
    c = client()
    found = c.get("/v3/security_groups", params={f"globally_enabled_{lifecycle}": "true"})["resources"]
    if not found:
        click.echo(f"No global {lifecycle} security groups found.")
    else:
        click.echo(table([["name"], *[[g["name"]] for g in found]]))
    if lifecycle == STAGING:
        process_mode_notice(c)


@main.command("staging-security-groups")
@fail_on_client_errors
def staging_security_groups() -> None:
    """List security groups globally bound for staging (cf staging-security-groups)."""
    _lifecycle_list(STAGING)


@main.command("running-security-groups")
@fail_on_client_errors
def running_security_groups() -> None:
    """List security groups globally bound for running (cf running-security-groups)."""
    _lifecycle_list(RUNNING)


# ------------------------------------------------------------------------------------- changing

@main.command("create-security-group")
@click.argument("name")
@click.argument("path_to_json_rules_file", metavar="PATH_TO_JSON_RULES_FILE")
@fail_on_client_errors
def create_security_group(name: str, path_to_json_rules_file: str) -> None:
    """Create a security group from a JSON file of rules (cf create-security-group).

    The file holds a single array of rule objects, for example
    [{"protocol": "tcp", "destination": "10.0.11.0/24", "ports": "80,443",
    "description": "Allow http and https traffic from ZoneA"}].
    """
    check_path(path_to_json_rules_file)
    c = client()
    click.echo(f"Creating security group {name} as {USER}...")
    click.echo("")
    rules = read_rules(path_to_json_rules_file)
    try:
        c.post("/v3/security_groups", {"name": name, "rules": rules})
    except ClientError as e:
        if e.detail != f"Security group with name '{name}' already exists.":
            raise
        warn(e.detail)  # as cf does: a warning, and the command succeeds
    click.echo("OK")


@main.command("update-security-group")
@click.argument("name")
@click.argument("path_to_json_rules_file", metavar="PATH_TO_JSON_RULES_FILE")
@fail_on_client_errors
def update_security_group(name: str, path_to_json_rules_file: str) -> None:
    """Replace a security group's rules with those of a JSON file (cf update-security-group)."""
    check_path(path_to_json_rules_file)
    c = client()
    click.echo(f"Updating security group {name} as {USER}...")
    click.echo("")
    rules = read_rules(path_to_json_rules_file)
    group = require_group(c, name)
    c.patch(f"/v3/security_groups/{group['guid']}", {"rules": rules})
    click.echo("OK")
    click.echo("")
    click.echo(TIP_UPDATE)


def _confirm(name: str) -> bool:
    """Ask as cf does; with no terminal to ask on, refuse and say how to skip the question."""
    if not sys.stdin.isatty():
        raise CommandFailed(f"Refusing to delete security group {name} without confirmation: no terminal to "
                            "ask on. Use -f to delete without asking.")
    if click.confirm(f"Really delete the security group {name}?", default=False):
        return True
    click.echo(f"Security group '{name}' has not been deleted.")
    return False


@main.command("delete-security-group")
@click.argument("name")
@click.option("-f", "--force", "force", is_flag=True, help="Force deletion without confirmation")
@fail_on_client_errors
def delete_security_group(name: str, force: bool) -> None:
    """Delete a security group (cf delete-security-group)."""
    if not force and not _confirm(name):
        return
    c = client()
    click.echo(f"Deleting security group {name} as {USER}...")
    group = find_group(c, name)
    if group is None:
        warn(f"Security group '{name}' does not exist.")
    else:
        c.delete(f"/v3/security_groups/{group['guid']}")
    click.echo("OK")
    click.echo("")
    click.echo(TIP_DYNAMIC)


def _bind(name: str, lifecycle: str) -> None:
    c = client()
    click.echo(f"Binding security group {name} to {lifecycle} as {USER}...")
    group = require_group(c, name)
    c.patch(f"/v3/security_groups/{group['guid']}", {"globally_enabled": {lifecycle: True}})
    click.echo("OK")
    click.echo(TIP_DYNAMIC)
    if lifecycle == STAGING:
        process_mode_notice(c)


def _unbind(name: str, lifecycle: str) -> None:
    c = client()
    click.echo(f"Unbinding security group {name} from defaults for {lifecycle} as {USER}...")
    group = find_group(c, name)
    if group is None:
        warn(f"Security group '{name}' not found.")
        click.echo("OK")
        return
    c.patch(f"/v3/security_groups/{group['guid']}", {"globally_enabled": {lifecycle: False}})
    click.echo("OK")
    click.echo(TIP_DYNAMIC)
    if lifecycle == STAGING:
        process_mode_notice(c)


@main.command("bind-staging-security-group")
@click.argument("name")
@fail_on_client_errors
def bind_staging_security_group(name: str) -> None:
    """Bind a security group to the list of security groups to be used for staging applications globally."""
    _bind(name, STAGING)


@main.command("unbind-staging-security-group")
@click.argument("name")
@fail_on_client_errors
def unbind_staging_security_group(name: str) -> None:
    """Unbind a security group from the set of security groups for staging applications globally."""
    _unbind(name, STAGING)


@main.command("bind-running-security-group")
@click.argument("name")
@fail_on_client_errors
def bind_running_security_group(name: str) -> None:
    """Bind a security group to the list of security groups to be used for running applications."""
    _bind(name, RUNNING)


@main.command("unbind-running-security-group")
@click.argument("name")
@fail_on_client_errors
def unbind_running_security_group(name: str) -> None:
    """Unbind a security group from the set of security groups for running applications globally."""
    _unbind(name, RUNNING)
