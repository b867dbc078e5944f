"""The `sidecarlab` command: parses arguments and calls the kit (`sidecarlab.tutorial`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Optional

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
        notebooks_dir: Optional[Path], out_dir: Optional[Path], no_progress: bool) -> None:
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
@click.argument("notebooks", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("build/learner"),
              show_default=True, help="Directory for the learner copies.")
def learner_copy(notebooks: tuple[Path, ...], out_dir: Path) -> None:
    """Write copies of NOTEBOOKS with the solutions removed (cells tagged `solution`)."""
    for nb in notebooks:
        removed = tutorial.learner_copy(nb, out_dir / nb.name)
        click.echo(f"{out_dir / nb.name}: {removed} solution(s) removed")



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
def blobstore_start(state_dir: Optional[Path], owner_pid: Optional[int]) -> None:
    """Start the embedded S3 server on 127.0.0.1 (a free port); does nothing if it runs already."""
    from . import blobstore as store

    try:
        running = store.start(state_dir, owner_pid=owner_pid)
    except store.BlobStoreError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(("started " if running.started else "already running: ") + running.describe())


@blobstore.command("stop")
@_state_dir_option
def blobstore_stop(state_dir: Optional[Path]) -> None:
    """Stop the embedded S3 server (its objects are gone with it); does nothing if none runs."""
    from . import blobstore as store

    click.echo("stopped the embedded S3 server" if store.stop(state_dir) else "the embedded S3 server was not running")


@blobstore.command("status")
@_state_dir_option
def blobstore_status(state_dir: Optional[Path]) -> None:
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
              help="Write the URL to this buildpack directory's .downloadurl.")
@click.option("-t", "--target", default="local", show_default=True,
              help="Where the buildpack will stage: local or cf (cf cannot reach the embedded server).")
@click.option("--goarch", default=None, help="CPU to build for (default: this machine's; amd64 for -t cf).")
@_state_dir_option
def sidecar_upload(version: str, binary: Optional[Path], endpoint: str, bucket: str, region: str,
                   buildpack_dir: Optional[Path], target: str, goarch: Optional[str],
                   state_dir: Optional[Path]) -> None:
    """Upload the config-server (publicly readable) and print its URL. Credentials for a real endpoint
    come only from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."""
    from . import blobstore as store
    from . import sidecar

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
        uploaded = store.upload_sidecar(binary, version, settings, buildpack_dir=buildpack_dir,
                                        state_dir=state_dir, log=click.echo)
    except (store.BlobStoreError, sidecar.SidecarBuildError, sidecar.GoToolchainMissing) as exc:
        message = str(exc)
        if "s3_" in message:
            message += "\n(On the command line s3_endpoint is --endpoint, s3_bucket --bucket, s3_region --region.)"
        raise click.ClickException(message) from None
    click.echo(uploaded.url)


if __name__ == "__main__":
    main()
