"""The `sidecarlab` command: parses arguments and calls the kit (`sidecarlab.tutorial`)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import yaml

from . import tutorial


def _value(text: str) -> object:
    """A `-p KEY VALUE` value as YAML reads it (8082 -> int, true -> bool), like papermill's -p."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sidecar-lab", prog_name="sidecarlab")
def main() -> None:
    """Sidecar Lab: the workshop kit. `sidecarlab run` runs the tutorial headless."""


@main.command()
@click.argument("parts", nargs=-1)
@click.option("-t", "--target", default="local", show_default=True,
              help="Where the apps go: local (the embedded Cloud Foundry) or cf (a real one).")
@click.option("-p", "--param", "params", nargs=2, multiple=True, metavar="KEY VALUE",
              help="Override a notebook parameter (after notebooks/params/TARGET.yml).")
@click.option("--notebooks", "notebooks_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Directory of the notebooks (default: notebooks/ of the checkout).")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where executed notebooks and the summary go (default: build/).")
@click.option("--no-progress", is_flag=True, help="No per-cell progress bar.")
def run(parts: tuple[str, ...], target: str, params: tuple[tuple[str, str], ...],
        notebooks_dir: Path | None, out_dir: Path | None, no_progress: bool) -> None:
    """Execute the tutorial's notebooks headless (PARTS: e.g. 01 02; default all)."""
    try:
        report = tutorial.run(parts, target=target, params={k: _value(v) for k, v in params},
                              notebooks_dir=notebooks_dir, out_dir=out_dir, progress=not no_progress,
                              log=click.echo)
    except tutorial.TutorialError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"summary: {report.summary}")
    if not report.ok:
        failed = next(r for r in report.results if not r.ok)
        click.echo(f"FAILED: {failed.failure_line()}", err=True)
        sys.exit(1)


@main.command("learner-copy")
@click.argument("notebooks", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory for the learner copies (default: the learners' work folder, work/notebooks).")
@click.option("--force", is_flag=True, help="Replace copies that differ from a fresh one (a learner's edits).")
def learner_copy(notebooks: tuple[Path, ...], out_dir: Path | None, force: bool) -> None:
    """Write copies of NOTEBOOKS (default: every part) with the solutions removed (cells tagged
    `solution`); a copy a learner has edited is kept unless --force."""
    try:
        copies = tutorial.make_learner_copies(notebooks, out_dir, force=force)
    except tutorial.TutorialError as exc:
        raise click.ClickException(str(exc)) from None
    for made in copies:
        click.echo(made.line())


# ------------------------------------------------------------------ workshop delivery: lab, stop, reset

LAB_BANNER = """Sidecar Lab: JupyterLab opens your own copies of the notebooks, in {learners}
(the solutions removed; the checks tell you when an exercise works). Your edits stay there.
When you are done: `make stop` (or `sidecarlab stop`) stops localcf, the S3 server and any ssh
tunnel the kit started; closing JupyterLab does not. `make reset` starts the tutorial over."""


@main.command("lab", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("jupyter_args", nargs=-1, type=click.UNPROCESSED)
def lab(jupyter_args: tuple[str, ...]) -> None:
    """Open JupyterLab on the learners' work folder (learner copies made where missing, never
    overwritten). JUPYTER_ARGS go to `jupyter lab` (e.g. --port 8899 --no-browser)."""
    from .lab import open_lab

    try:
        code = open_lab(jupyter_args, banner=LAB_BANNER, log=click.echo)
    except tutorial.TutorialError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


@main.command("stop")
def stop() -> None:
    """Stop everything the kit started: ssh tunnels, the embedded S3 server, the localcf daemon
    (idempotent; `localcf start` or any notebook brings the platform and its apps back)."""
    from .stop import StopError, stop_everything

    try:
        stop_everything(log=click.echo)
    except StopError as exc:
        raise click.ClickException(str(exc)) from None


@main.command("reset")
@click.option("-y", "--yes", is_flag=True, help="Do not ask before deleting.")
def reset(yes: bool) -> None:
    """Put the tutorial back at the start: stop everything, delete the work dir (learner copies
    included), the S3 server's state and localcf's state, and write fresh learner copies. Lists what
    it deletes and asks first."""
    from . import reset as resetting
    from .stop import StopError

    try:
        found = resetting.plan()
        click.echo(found.describe())
        if not yes:
            if not sys.stdin.isatty():
                raise click.ClickException(
                    "Nothing deleted: `sidecarlab reset` asks before it deletes, and there is no terminal to "
                    "ask on. Run it in a terminal, or pass --yes (`make reset RESET_ARGS=--yes`).")
            if not click.confirm("Delete all this and start over?", default=False):
                click.echo("Nothing deleted.")
                sys.exit(1)
        resetting.carry_out(found, log=click.echo)
    except (StopError, resetting.ResetError, tutorial.TutorialError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("Reset done: open the tutorial again with `make lab`.")


# ------------------------------------------------------------------ Part 3: the object store

def _state_dir_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="Where the pid and port files live (default: $SIDECARLAB_HOME/blobstore, "
                             "else build/blobstore).")(fn)


@main.group()
def blobstore() -> None:
    """The embedded S3 server (moto) that holds the sidecar binary in Part 3."""


@blobstore.command("start")
@_state_dir_option
@click.option("--owner-pid", type=int, default=None,
              help="Stop the server when this process ends (default: run until `blobstore stop`).")
def blobstore_start(state_dir: Path | None, owner_pid: int | None) -> None:
    """Start the embedded S3 server on 127.0.0.1 (a free port); does nothing if it runs already."""
    from . import blobstore as store

    try:
        running = store.start(state_dir, owner_pid=owner_pid)
    except store.BlobStoreError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(("started " if running.started else "already running: ") + running.describe())


@blobstore.command("stop")
@_state_dir_option
def blobstore_stop(state_dir: Path | None) -> None:
    """Stop the embedded S3 server (its objects are gone with it); does nothing if none runs."""
    from . import blobstore as store

    click.echo("stopped the embedded S3 server" if store.stop(state_dir) else "the embedded S3 server was not running")


@blobstore.command("status")
@_state_dir_option
def blobstore_status(state_dir: Path | None) -> None:
    """Say whether the embedded S3 server runs, and where (exit status 1 when it does not)."""
    from . import blobstore as store

    running = store.status(state_dir)
    if running is None:
        click.echo(f"not running (state dir {state_dir or store.default_state_dir()})")
        sys.exit(1)
    click.echo(f"running: {running.describe()}")


@main.group("sidecar")
def sidecar_group() -> None:
    """The config-server sidecar: build and upload it."""


@sidecar_group.command("upload")
@click.option("--version", "version", required=True, help="Sidecar version: the key is "
              "config-server-sidecar/config-server-v<VERSION>.")
@click.option("--binary", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The config-server binary (default: build it from sidecar_src/config-server).")
@click.option("--endpoint", default="embedded", show_default=True,
              help="embedded (the kit's S3 server, which must be running), aws, or an S3-compatible URL.")
@click.option("--bucket", default="sidecar-buildpack", show_default=True,
              help="The bucket (created if missing on the embedded server only).")
@click.option("--region", default="us-east-1", show_default=True, help="The bucket's region.")
@click.option("--buildpack", "buildpack_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write the URL to this buildpack directory's .downloadurl; for a buildpack with a "
              "manifest.yml (Part 4), upload a .tgz holding bin/config-server and record its uri and sha256 there.")
@click.option("-t", "--target", default="local", show_default=True,
              help="Where the buildpack will stage: local or cf (cf cannot reach the embedded server).")
@click.option("--goarch", default=None, help="CPU to build for (default: this machine's; amd64 for -t cf).")
@_state_dir_option
def sidecar_upload(version: str, binary: Path | None, endpoint: str, bucket: str, region: str,
                   buildpack_dir: Path | None, target: str, goarch: str | None,
                   state_dir: Path | None) -> None:
    """Upload the config-server (publicly readable) and print its URL. Credentials for a real endpoint
    come only from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."""
    from . import blobstore as store
    from . import packager, sidecar

    try:
        settings = store.validate(endpoint, bucket, region, target=target)
        if settings.embedded and store.status(state_dir) is None:
            raise store.BlobStoreError("The embedded S3 server is not running: start it with "
                                       "`sidecarlab blobstore start` first (and stop it with "
                                       "`sidecarlab blobstore stop` when done).")
        if binary is None:
            arch = goarch or ("amd64" if target == "cf" else sidecar.host_goarch())
            binary = sidecar.build(goos="linux", goarch=arch, log=click.echo)
            click.echo(f"built {binary} for linux/{arch}")
        if buildpack_dir is not None and (buildpack_dir / "manifest.yml").is_file():
            # Part 4: upload the versioned archive and record its uri and sha256 in the manifest.
            uploaded = packager.upload_dependency(binary, version, settings, buildpack_dir,
                                                  state_dir=state_dir, log=click.echo)
        else:
            uploaded = store.upload_sidecar(binary, version, settings, buildpack_dir=buildpack_dir,
                                            state_dir=state_dir, log=click.echo)
    except (store.BlobStoreError, sidecar.SidecarBuildError, sidecar.GoToolchainMissing,
            packager.PackagerError) as exc:
        message = str(exc)
        if "s3_" in message:
            message += "\n(On the command line s3_endpoint is --endpoint, s3_bucket --bucket, s3_region --region.)"
        raise click.ClickException(message) from None
    click.echo(uploaded.url)


# ------------------------------------------------------------------ Part 4: the buildpack packager

@main.group("buildpack")
def buildpack_group() -> None:
    """The sidecar buildpack of Part 4: a work copy, its zips (buildpack-packager's), its summary."""


@buildpack_group.command("copy")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
def buildpack_copy(dest: Path) -> None:
    """Copy the repository's buildpack/ to DEST, the work copy uploads are recorded in."""
    from . import packager

    try:
        click.echo(f"copied the buildpack to {packager.copy_buildpack(dest)}")
    except packager.PackagerError as exc:
        raise click.ClickException(str(exc)) from None


@buildpack_group.command("package")
@click.option("--cached", is_flag=True, help="Include the dependencies (for air-gapped foundations).")
@click.option("--stack", default="", help="Stack to package the buildpack for (e.g. cflinuxfs4).")
@click.option("--any-stack", is_flag=True, help="Package the buildpack for any stack.")
@click.option("--version", "version", default=None, help="Version to build as (default: the VERSION file).")
@click.option("--cachedir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Download cache of --cached (default: ~/.buildpack-packager/cache).")
@click.option("-d", "--buildpack", "buildpack_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("."), show_default=True, help="The buildpack directory (with manifest.yml).")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the zip goes (default: the buildpack directory).")
@click.option("--goarch", default=None, help="CPU bin/supply is compiled for (default: this machine's; "
              "amd64 for most real foundations).")
def buildpack_package(cached: bool, stack: str, any_stack: bool, version: str | None, cachedir: Path | None,
                      buildpack_dir: Path, out_dir: Path | None, goarch: str | None) -> None:
    """Package the buildpack as a zip, as buildpack-packager's `build` does."""
    from . import packager

    try:
        packager.package(buildpack_dir, stack=stack or None, any_stack=any_stack, cached=cached, version=version,
                         out_dir=out_dir, cache_dir=cachedir, goarch=goarch, log=click.echo)
    except packager.PackagerError as exc:
        message = str(exc)
        click.echo(message if message.startswith("error") else f"error while creating zipfile: {message}", err=True)
        sys.exit(1)


@buildpack_group.command("summary")
@click.option("-d", "--buildpack", "buildpack_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("."), show_default=True, help="The buildpack directory (with manifest.yml).")
def buildpack_summary(buildpack_dir: Path) -> None:
    """Markdown tables of the buildpack's dependencies and default versions."""
    from . import packager

    try:
        click.echo(packager.summary(buildpack_dir))
    except packager.PackagerError as exc:
        raise click.ClickException(str(exc)) from None


from . import offline  # noqa: E402  (`sidecarlab wheelhouse` and `sidecarlab site`: offline delivery)

offline.register(main)

if __name__ == "__main__":
    main()
