"""`push` and `apply-manifest` (and their cf v6 names `v3-push`, `v3-apply-manifest`)."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from .. import actions, manifest
from ..jsondoc import JsonObject
from ..output import kibibytes
from .base import ORG, SPACE, USER, WHERE, CommandFailed, alias, client, fail_on_client_errors, main, say, staging_line
from .lifecycle import print_app_summary


def find_manifest(directory: Path) -> Path | None:
    for name in ("manifest.yml", "manifest.yaml"):
        if (directory / name).is_file():
            return directory / name
    return None


def load_manifest(path: Path, variables: tuple[str, ...], vars_files: tuple[str, ...]) -> manifest.Manifest:
    vars_map: dict[str, str] = {}
    for v in variables:
        k, sep, val = v.partition("=")
        if not sep:
            raise CommandFailed(f"Incorrect usage: --var {v}: expected KEY=VALUE")
        vars_map[k] = val
    m = manifest.load(path, vars=vars_map, vars_files=[Path(f) for f in vars_files])
    for warning in m.warnings:
        click.echo(f"Warning: {warning}", err=True)
    return m


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
    actions.apply_manifest(client(), m, list(range(len(m.apps))))
    click.echo("OK")


alias("v3-apply-manifest", apply_manifest, "Apply a manifest (cf v6 experimental verb).")


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
        m = manifest.loads(yaml.safe_dump({"applications": [{"name": app_name}]}), source="", base_dir=Path.cwd())
        indexes = [0]
    elif app_name:
        indexes = [i for i, a in enumerate(m.apps) if a.name == app_name]
        if not indexes:
            raise CommandFailed(f"Could not find app named '{app_name}' in manifest")
    else:
        indexes = list(range(len(m.apps)))
    overrides: JsonObject = {}
    for key, val in (("path", path and str(Path(path).resolve())), ("command", command),
                     ("memory", memory), ("disk_quota", disk), ("instances", instances), ("stack", stack),
                     ("health_check_type", health_check_type), ("health_check_http_endpoint", endpoint),
                     ("timeout", timeout)):
        if val is not None:
            overrides[key] = val
    if buildpacks:
        overrides["buildpacks"] = actions.resolve_buildpack_refs(list(buildpacks), Path.cwd())
    if no_route:
        overrides["no_route"] = True
    if random_route:
        overrides["random_route"] = True
    if overrides and len(indexes) > 1:
        raise CommandFailed("Incorrect Usage: Command line flags (except -f and --no-start) cannot be "
                            "applied when pushing multiple apps from a manifest file.")
    for i in indexes:
        push_one(m, i, overrides, no_start)


alias("v3-push", push, "Push an app (cf v6 experimental verb).")


def push_one(m: manifest.Manifest, index: int, overrides: JsonObject, no_start: bool) -> None:
    c = client()
    am = m.apps[index].with_overrides(**overrides) if overrides else m.apps[index]
    name = am.name
    click.echo(f"Pushing app {name} to org {ORG} / space {SPACE} as {USER}...")
    if m.source:
        click.echo(f"Applying manifest file {Path(m.source).resolve()}...")
    actions.apply_manifest(c, m, [index], overrides)
    click.echo("Manifest applied")
    app = c.require_app(name)
    app_dir = actions.app_dir_of(m, am)
    if not app_dir.exists():
        raise CommandFailed(f"Incorrect Usage: The specified path '{app_dir}' does not exist.")
    click.echo("Packaging files to upload...")
    bits = actions.package_bits(app_dir)
    click.echo("Uploading files...")
    pkg = actions.upload_package(c, app, bits)
    kib = kibibytes(len(bits))
    say(f" {kib} / {kib} [==============================] 100.00%", "", "Waiting for API to complete processing files...", "")
    click.echo("Staging app and tracing logs...")
    actions.stage_and_set_droplet(c, app, pkg["guid"], staging_line)
    if not no_start:
        say("", f"Waiting for app {name} to start...", "")
        actions.restart_and_wait(c, app)
    click.echo("")
    print_app_summary(c, c.require_app(name))

