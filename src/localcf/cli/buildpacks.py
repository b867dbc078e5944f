"""Admin buildpacks: `buildpacks`, `create-buildpack`, `update-buildpack`, `delete-buildpack`."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from .. import output
from ..buildpacks import buildpack_upload_problem
from ..jsondoc import JsonObject
from .base import USER, CommandFailed, client, confirm_delete, fail_on_client_errors, main


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
    click.echo(output.table(rows))


def _buildpack_zip(path: str) -> tuple[str, bytes]:
    from ..buildpacks import zip_dir
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
    problem = buildpack_upload_problem(data)  # the API refuses it too; checked first, so no record is made
    if problem:
        raise CommandFailed(f"The buildpack upload is invalid: {problem}")
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
    changes: JsonObject = {}
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

