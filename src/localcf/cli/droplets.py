"""Droplets: `download-droplet` (cf's verb, a `droplet_<guid>.tgz` file) and `droplet download`
(unpacked into a folder, to look inside)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import click

from .. import actions
from .base import WHERE, CommandFailed, client, fail_on_client_errors, main


@main.command("download-droplet")
@click.argument("name")
@click.option("--droplet", "droplet_guid", help="Droplet guid (default: the current one)")
@click.option("--path", "path", type=click.Path(), help="File or directory to write the droplet to")
@fail_on_client_errors
def download_droplet(name: str, droplet_guid: str | None, path: str | None) -> None:
    """Download an app's droplet as a .tgz (cf download-droplet): `droplet_<guid>.tgz` in the
    current directory or the --path directory, or the --path file."""
    c = client()
    a = c.require_app(name)
    if not droplet_guid:
        droplet_guid = actions.current_droplet_guid(a)
        if not droplet_guid:
            raise CommandFailed(f"App '{name}' does not have a current droplet.")
    click.echo(f"Downloading current droplet for app {name} {WHERE}...")
    data = actions.download_droplet(c, droplet_guid)
    out = Path(path) if path else Path.cwd()
    if out.is_dir():
        out = out / actions.droplet_file_name(droplet_guid)
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
    c = client()
    a = c.require_app(name)
    guid = actions.current_droplet_guid(a)
    if not guid:
        raise CommandFailed(f"App '{name}' does not have a current droplet. Push it first (--no-start is enough).")
    data = actions.download_droplet(c, guid)
    dest = Path(directory)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tf:
        tf.extractall(dest, filter="tar")
    click.echo(f"Droplet of {name} unpacked into {dest}")
