"""The `sidecarlab` command: parses arguments and calls the kit (`sidecarlab.tutorial`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

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


if __name__ == "__main__":
    main()
