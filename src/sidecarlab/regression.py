"""Notebook regression: every notebook re-executed and its outputs compared with reference outputs.

The references are the notebooks as a real run executed them (`tests/regression/references/`), made
by `update()` (`make regression-update`). `check()` (`make regression`) executes the notebooks again
and compares each with its reference; a difference fails and names the notebook, the cell and the diff.

How the work is split, and why:

- **Execution** is the tutorial's own: `tutorial.run` (papermill), so the notebooks get their
  parameters (papermill's injected cell, from `notebooks/params/<target>.yml`) and the kit's kernel,
  exactly as `sidecarlab run` and CI run them. pytest-notebook's `NBRegressionFixture.check` executes a
  notebook as it is, with the outputs stored in that same file; it would need a copy of the current
  notebook with the reference outputs grafted in, which loses a cell deleted from the notebook and
  executes through a second path nobody runs.
- **Comparison** is pytest-notebook's, configured through one `NBRegressionFixture` (`fixture()`):
  its `post_processors` (`coalesce_streams`, and ours, `sidecarlab_order_startup_logs`, registered
  under pytest-notebook's `nbreg.post_proc` entry point: the app's and sidecars' start-up log lines
  grouped per process, since they start at once), its `diff_replace` regexes (GUIDs, timestamps, ports,
  durations, sizes, PIDs, digests, the machine's paths), its `diff_ignore` paths (metadata, execution
  counts), then its `diff_notebooks` / `filter_diff` / `diff_to_string` (nbdime), the very steps of
  `NBRegressionFixture.check` after execution. No diffing here is hand-written; `regression` only
  names the cells a diff touches.
- **References** are stored with the same `diff_replace` already applied (and papermill's timing
  metadata removed), so they hold no values of the machine that made them, and a regeneration that
  changes nothing real changes no line.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import KitError
from .paths import checkout_dir, work_root
from .tutorial import default_notebooks_dir, find_notebooks, run

__all__ = [
    "DIFF_IGNORE",
    "NotebookDiff",
    "RegressionError",
    "RegressionReport",
    "check",
    "compare",
    "default_references_dir",
    "diff_replace",
    "fixture",
    "update",
]

OUTPUTS = "/cells/*/outputs"

# Paths of the notebook JSON no comparison looks at: who ran it, when, how often.
DIFF_IGNORE = (
    "/metadata",
    "/cells/*/metadata",
    "/cells/*/execution_count",
    "/cells/*/outputs/*/execution_count",
    "/cells/*/outputs/*/traceback",
    # a check's HTML badge: made from its text/plain line (checks.core.badge_html), which is compared
    "/cells/*/outputs/*/data/text/html",
    "/cells/*/id",
    "/nbformat_minor",
)

# Volatile values in outputs, each replaced by a placeholder (applied in this order, after the paths).
_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_VOLATILE: tuple[tuple[str, str], ...] = (
    # the picture's connection in TIME_WAIT names its two ends, and which end closed first (so which
    # is local) depends on timing; its state and label stay
    (r"(?<=<title>)[^<]* TIME_WAIT(?=</title>)", "<ENDS> TIME_WAIT"),
    # `ps axwf -o pid,command`: the PID of `ps` itself counts the processes started before it
    (r"(?m)^( *)\d+( +)(?=ps )", r"\1<PID>\2"),
    # `ps aux` rows: PID, CPU and memory use, the scheduling state (running or sleeping at that
    # instant; its modifiers stay), start and CPU time vary; the user, TTY and command count
    (r"(?m)^(\S+) +\d+ +\d+\.\d+ +\d+\.\d+ +\d+ +\d+ +(\S+) +[RSDIT](\S*) +\S+ +\d+:\d+ ",
     r"\1  <PID>  <CPU>  <MEM>  <VSZ>  <RSS>  \2  <STATE>\3  <START>  <CPUTIME> "),
    # the health monitor starts at the same moment as the app's pre-start scripts: its log line has
    # no fixed place among theirs, so it is left out
    (r"(?m)^.*\[CELL/\d+\] OUT Starting health monitoring of container\n", ""),
    # GUIDs of apps, processes, droplets, buildpacks, requests, ...
    (r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", "<GUID>"),
    # the buildpack test harness's unique names (Part 5): apps `NAME-<6 hex>`, buildpacks
    # `config_server_<package>_<8 hex>` and their versions `<VERSION>-it.<8 hex>`
    (r"\b(it-(?:un)?cached)-[0-9a-f]{6}\b", r"\1-<ID>"),
    (r"\b(config_server_(?:un)?cached)_[0-9a-f]{8}\b", r"\1_<ID>"),
    (r"-it\.[0-9a-f]{8}\b", "-it.<ID>"),
    # timestamps: ISO 8601 / RFC 3339 (with or without T, fraction, zone); cf's `last uploaded`
    # (Tue 01 Dec 01:47:00 UTC 2026); `date` (Tue Dec  1 01:47:00 UTC 2026); a bare time of day
    (r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}| ?UTC)?", "<TIME>"),
    (_DAY + r" +\d{1,2} +" + _MONTH + r" +\d{2}:\d{2}:\d{2} +[A-Z]{3,4} +\d{4}", "<TIME>"),
    (_DAY + r" +" + _MONTH + r" +\d{1,2} +\d{2}:\d{2}:\d{2} +[A-Z]{3,4} +\d{4}", "<TIME>"),
    (r"\b\d{2}:\d{2}:\d{2}(?:\.\d+)?\b", "<TIME>"),
    (r"\b" + _MONTH + r" +\d{1,2} +\d{2}:\d{2}\b", "<TIME>"),  # `ls -l`
    # digests and long hex ids (SHA-256 of binaries, container ids)
    (r"\b[0-9a-f]{12,64}\b(?:\.\.\.)?", "<HEX>"),
    # PIDs (before ports: both are numbers the OS hands out)
    (r"\b(PID|pid|process)( ?)\d+\b", r"\1\2<PID>"),
    # ports the OS hands out (the platform's API, router, object store; ssh -L's local end): 5 digits
    (r"(?<=[:\s(])[1-6]\d{4}\b", "<PORT>"),
    # durations: 1.2s, 350ms, 1m2.5s; the router's response_time:0.002 gorouter_time:0.0002
    (r"\b\d+(?:\.\d+)?(?:ms|s|µs|m\d+(?:\.\d+)?s)\b", "<DURATION>"),
    (r"\b(response_time|gorouter_time):\d+(?:\.\d+)?", r"\1:<DURATION>"),
    # pytest's summary adds the time as h:mm:ss past a minute (`in 131.20s (0:02:11)`), and pads its
    # rules (`===== 6 passed in 1.2s =====`) to the terminal's width around text whose length varies
    (r" \(\d+:\d{2}:\d{2}\)", ""),
    # the `%cf` magic's counts of what it left out: the lines a `--grep` kept are compared one by
    # one, but how many log lines there were (router lines, periodic ones) depends on timing; a folded
    # transcript's length follows from it
    (r"\(\d+ of \d+ lines match;", "(<N> of <N> lines match;"),
    (r"\(\d+ more lines of this transcript are folded away", "(<N> more lines of this transcript are folded away"),
    (r"={3,}", "==="),
    # sizes: byte counts, cf's human sizes (5.5M, 2.1K, 7MB), measured usage before a quota
    # (`12.3M of 256M`: the quota 256M is configuration and stays, as does a sidecar's `64 MB`),
    # percentages of CPU or progress
    (r"\b\d+(?:\.\d+)?(?: ?(?:bytes|KiB|MiB|GiB)\b|(?:B|kB|KB|MB|GB)\b)", "<SIZE>"),
    (r"(?<=\()\d+(?:\.\d+)?[KMG]?(?=\))", "<SIZE>"),
    (r"(?<=\s)\d+(?:\.\d+)?[KMGT]?B? of (?=\d+[KMGT])", "<SIZE> of "),
    (r"(?<=\s)\d+(?:\.\d+)?%", "<PERCENT>"),
    # a row of a socket table (COMMAND PID STATE LOCAL REMOTE) in TIME_WAIT is what is left of a closed
    # connection for a minute: whether one shows, and which end closed, depends on timing
    (r"(?m)^\S+ +\S+ +TIME_WAIT +\S+ +\S+ *\n", ""),
    # column padding: tables (`cf app`, `cf buildpacks`) pad columns to their widest value, which
    # varies with the values above; the columns and their order still count
    (r"(?<=\S)[ \t]{2,}(?=\S)", "  "),
)


def _machine_paths() -> list[tuple[str, str]]:
    """Directories of this machine and this run that outputs may show, as (regex, placeholder).

    The run's own places (the platform's state dir, the work dir, the object store's state, the
    checkout) keep what follows them (`<SIDECARLAB_WORK>/part1/app`); a path elsewhere under the
    temporary directory or the home directory is replaced whole. A relative spelling (`../work/x`,
    `../../../../tmp/x`) becomes the same placeholder as the absolute one.
    """
    root = checkout_dir()
    own = {
        "LOCALCF_HOME": os.environ.get("LOCALCF_HOME", ""),
        "SIDECARLAB_WORK": str(work_root()),
        "SIDECARLAB_HOME": os.environ.get("SIDECARLAB_HOME", ""),
        "CHECKOUT": str(root),
    }
    elsewhere = {"TMP": tempfile.gettempdir(), "HOME": str(Path.home())}
    found: list[tuple[str, str, str]] = []  # (path, regex, placeholder)
    for places, rest in ((own, ""), (elsewhere, r"[^\s'\"`,;)\]]*")):
        for name, value in places.items():
            if not value or value == "/":
                continue
            for spelling in {value, os.path.realpath(value)}:
                # a container's own /tmp/garden-init (PID 1, as on a cell) is no path of this machine
                keep = r"(?!/garden-init\b)" if name == "TMP" else ""
                found.append((spelling, re.escape(spelling) + keep + rest, f"<{name}>"))
                inside = Path(spelling).is_relative_to(root) and spelling != str(root)
                if inside:  # ../work from notebooks/, ../../work from sidecar_src/config-server
                    relative = os.path.relpath(spelling, root)
                    found.append((relative, r"(?:\.\./)+" + re.escape(relative) + r"\b" + rest, f"<{name}>"))
                else:  # outside the checkout, spelled relative to some directory of it (notebooks/,
                    # sidecar_src/config-server): ../../../tmp-dir/work, whose climb swallows the
                    # leading part both paths share (a checkout under /tmp): any climb, then any tail
                    # of the path of two components or more
                    parts = Path(spelling).parts[1:]
                    for k in range(len(parts) - 1):
                        tail = "/".join(parts[k:])
                        found.append((tail, r"(?:\.\./)+" + re.escape(tail) + r"\b" + rest, f"<{name}>"))
    found.sort(key=lambda item: len(item[0]), reverse=True)
    pairs = [(regex, token) for _, regex, token in found]
    # `../../../../tmp/x` after `/tmp/x` became a placeholder: drop the climbing part
    pairs.append((r"(?:\.\./)*\.\.(?=<[A-Z_]+>)", ""))
    return pairs


def diff_replace() -> tuple[tuple[str, str, str], ...]:
    """pytest-notebook `diff_replace` entries `(path, regex, replacement)` for every volatile value."""
    pairs = _machine_paths() + list(_VOLATILE)
    return tuple((OUTPUTS, regex, replacement) for regex, replacement in pairs)


def fixture(exec_timeout: int = 600) -> Any:
    """The one `NBRegressionFixture` holding the regression's settings."""
    with warnings.catch_warnings():  # pytest-notebook's autodoc warns about attrs types on import
        warnings.simplefilter("ignore")
        from pytest_notebook.nb_regression import NBRegressionFixture
    return NBRegressionFixture(
        exec_timeout=exec_timeout,
        exec_cwd=str(default_notebooks_dir()),
        diff_replace=diff_replace(),
        diff_ignore=DIFF_IGNORE,
        post_processors=POST_PROCESSORS,
        diff_use_color=False,
    )


# --------------------------------------------------------------------------------- results

class RegressionError(KitError):
    """The regression could not run (no reference for a notebook, a notebook failed to execute)."""


@dataclass
class NotebookDiff:
    """A notebook whose outputs differ from its reference: where, and the diff."""

    notebook: str
    cells: list[tuple[int, str]]  # (position from 1, first line of the cell's source)
    diff: str

    def describe(self) -> str:
        where = "; ".join(f"cell {n} `{first}`" for n, first in self.cells) or "notebook structure"
        return f"{self.notebook}: outputs differ from the reference at {where}\n{self.diff}"


@dataclass
class RegressionReport:
    """Every notebook compared, the ones that differ, and where executed notebooks are."""

    compared: list[str] = field(default_factory=list)
    differences: list[NotebookDiff] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    def describe(self) -> str:
        if self.ok:
            return f"{len(self.compared)} notebook(s) match their references: {', '.join(self.compared)}"
        return "\n\n".join(d.describe() for d in self.differences)


# ------------------------------------------------------------------------------- comparison

def _read(path: Path | str) -> Any:
    import nbformat

    return nbformat.read(str(path), as_version=4)


_STARTUP_BEGINS = re.compile(r"\[CELL/\d+\] OUT Cell \S+ successfully created container for instance ")
_STARTUP_ENDS = re.compile(r"\] OUT Container became healthy")
_LOG_SOURCE = re.compile(r"^\s*\S+ \[([^\]]+)\] (?:OUT|ERR) ")


def _order_startup(text: str) -> str:
    """Within each container start-up in a log listing (from `successfully created container` to
    `Container became healthy`), put the lines of the app's and the sidecars' processes one process
    after the other, each in its own order: they start at once, so their lines interleave by chance.
    The cell's own lines in between (health monitoring) go first, in their order."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    window: list[str] | None = None
    for line in lines:
        if window is not None and (_STARTUP_ENDS.search(line) or not _LOG_SOURCE.match(line)):
            out.extend(_by_process(window))
            window = None
        if window is not None:
            window.append(line)
            continue
        out.append(line)
        if _STARTUP_BEGINS.search(line):
            window = []
    if window:
        out.extend(_by_process(window))
    return "".join(out)


def _by_process(window: list[str]) -> list[str]:
    sources = [m.group(1) if (m := _LOG_SOURCE.match(line)) else "" for line in window]
    sources = [source if source.startswith("APP/PROC/") else "" for source in sources]
    return [window[i] for i in sorted(range(len(window)), key=lambda i: (sources[i], i))]  # stable per process


def _order_exchanges(text: str) -> str:
    """Within each run of consecutive lines from an instance's processes (`[APP/PROC/...]`), put each
    process's lines one process after the other, each in its own order: the app and its sidecar log
    one request at once (`Sending a request`, `Received a request for config.`, `Received {...}`), and
    which of two processes' lines reaches the log first is chance. Lines of the platform (API, CELL,
    RTR, STG) keep their places and break the runs."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    run: list[str] = []
    for line in lines:
        m = _LOG_SOURCE.match(line)
        if m and m.group(1).startswith("APP/PROC/"):
            run.append(line)
            continue
        out.extend(_by_process(run))
        run = []
        out.append(line)
    out.extend(_by_process(run))
    return "".join(out)


def order_concurrent_logs(nb: Any, resources: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """pytest-notebook post-processor (entry point `nbreg.post_proc` `sidecarlab_order_startup_logs`):
    the start-up lines of an instance's processes grouped per process (see `_order_startup`), and
    so are the lines its processes log at once afterwards (see `_order_exchanges`)."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") != "stream":
                continue
            text = output.get("text", "")
            if "successfully created container" in text:
                text = _order_startup(text)
            output["text"] = _order_exchanges(text)
    return nb, resources


POST_PROCESSORS = ("coalesce_streams", "sidecarlab_order_startup_logs")


def _post_process(nb: Any, settings: Any) -> Any:
    from pytest_notebook.post_processors import load_processor

    resources: dict[str, Any] = {}
    for name in settings.post_processors:
        try:
            processor = load_processor(name)
        except ValueError:
            raise RegressionError(f"pytest-notebook has no post-processor {name!r}: the kit's entry points are "
                                  "missing from this environment; reinstall it (`make .venv/.installed`, or "
                                  "`pip install -e '.[test]'`).") from None
        nb, resources = processor(nb, resources)
    return nb


def _changed_cells(diff: list[Any], nb: Any) -> list[tuple[int, str]]:
    cells: set[int] = set()
    for entry in diff:
        if entry["key"] != "cells":
            continue
        for sub in entry.get("diff", []):
            cells.add(int(sub["key"]))
    named = []
    for index in sorted(cells):
        source = nb.cells[index].source if index < len(nb.cells) else ""
        first = next((line.strip() for line in source.splitlines() if line.strip()), "")
        named.append((index + 1, first[:80]))
    return named


def compare(reference: Path, executed: Path | Any, settings: Any | None = None) -> NotebookDiff | None:
    """Compare an executed notebook with its reference through pytest-notebook's diffing, with the
    fixture's post-processors, `diff_replace` and `diff_ignore`; None when they match."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pytest_notebook.diffing import diff_notebooks, diff_to_string, filter_diff
        from pytest_notebook.notebook import config_from_metadata, regex_replace_nb
    settings = settings or fixture()
    expected = _post_process(_read(reference), settings)
    obtained = _post_process(_read(executed) if isinstance(executed, (str, Path)) else executed, settings)
    # a cell's own settings (`"nbreg": {"diff_replace": [...]}` in its metadata, pytest-notebook's
    # format), read from the notebook as executed now: for a value only that cell shows
    own = config_from_metadata(obtained)
    replace = list(settings.diff_replace) + list(own.diff_replace)
    expected = regex_replace_nb(expected, replace)
    obtained = regex_replace_nb(obtained, replace)
    filtered = filter_diff(diff_notebooks(expected, obtained), set(settings.diff_ignore) | set(own.diff_ignore))
    if not filtered:
        return None
    text = diff_to_string(expected, filtered, use_color=settings.diff_use_color,
                          color_words=settings.diff_color_words)
    return NotebookDiff(Path(reference).name, _changed_cells(filtered, expected), text)


def default_references_dir() -> Path:
    return checkout_dir() / "tests" / "regression" / "references"


def _strip(nb: Any, source: Path, settings: Any) -> Any:
    """The executed notebook as a reference: post-processed, volatile values replaced, no timings."""
    from pytest_notebook.notebook import config_from_metadata, regex_replace_nb

    nb = _post_process(nb, settings)
    nb = regex_replace_nb(nb, list(settings.diff_replace) + list(config_from_metadata(nb).diff_replace))
    original = _read(source)
    nb.metadata = original.metadata  # the notebook's own kernelspec, not this machine's kernel
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell["id"] = "injected-parameters"  # papermill draws a random id each run
    return nb


@contextmanager
def fresh_platform(log: Callable[[str], None] = print) -> Iterator[Path]:
    """A fresh embedded platform for one regression run: a new localcf state dir, work dir and object
    store state (LOCALCF_HOME, SIDECARLAB_WORK, SIDECARLAB_HOME set for the run), removed afterwards."""
    scratch = Path(tempfile.mkdtemp(prefix="sidecarlab-regression-"))
    names = ("LOCALCF_HOME", "SIDECARLAB_WORK", "SIDECARLAB_HOME")
    previous = {name: os.environ.get(name) for name in names}
    os.environ.update(LOCALCF_HOME=str(scratch / "localcf"), SIDECARLAB_WORK=str(scratch / "work"),
                      SIDECARLAB_HOME=str(scratch / "home"))
    localcf = str(Path(sys.executable).parent / "localcf")
    try:
        started = subprocess.run([localcf, "start"], capture_output=True, text=True, timeout=300)
        if started.returncode != 0:
            raise RegressionError(f"`localcf start` in {scratch} failed (exit {started.returncode}):\n"
                                  f"{started.stdout}{started.stderr}")
        log(started.stdout.strip())
        yield scratch
    finally:
        subprocess.run([localcf, "stop"], capture_output=True, text=True, timeout=300)
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(scratch, ignore_errors=True)


def _execute(notebooks: list[Path], out_dir: Path, params: Mapping[str, Any] | None, settings: Any,
             log: Callable[[str], None]) -> list[Path]:
    """Run the notebooks as `sidecarlab run` does, in the fixture's `exec_cwd` with its `exec_timeout`."""
    report = run([str(p) for p in notebooks], params=params, out_dir=out_dir, progress=False, log=log,
                 cwd=Path(settings.exec_cwd), timeout=settings.exec_timeout)
    if not report.ok:
        failed = next(r for r in report.results if not r.ok)
        raise RegressionError(f"A notebook failed to execute, so nothing was compared: {failed.failure_line()}\n"
                              f"(executed notebook: {failed.output})")
    return [Path(r.output) for r in report.results]


def check(parts: Sequence[str] = (), *, notebooks_dir: Path | None = None, references_dir: Path | None = None,
          out_dir: Path | None = None, params: Mapping[str, Any] | None = None,
          log: Callable[[str], None] = print) -> RegressionReport:
    """Execute the notebooks of `parts` (all when empty) on a fresh platform and compare each with its
    reference. Differences are in the report; a notebook that fails to execute raises RegressionError."""
    references_dir = Path(references_dir) if references_dir else default_references_dir()
    notebooks = find_notebooks(parts, notebooks_dir)
    missing = [n.name for n in notebooks if not (references_dir / n.name).is_file()]
    if missing:
        raise RegressionError(f"No reference for {', '.join(missing)} in {references_dir}: make them with "
                              "`make regression-update` (a real run of the notebooks).")
    out_dir = Path(out_dir) if out_dir else checkout_dir() / "build" / "regression"
    report = RegressionReport()
    with fresh_platform(log):
        settings = fixture()  # inside: the run's state dirs are among the paths it replaces
        for executed in _execute(notebooks, out_dir, params, settings, log):
            report.compared.append(executed.name)
            difference = compare(references_dir / executed.name, executed, settings)
            if difference is not None:
                report.differences.append(difference)
    return report


def update(parts: Sequence[str] = (), *, notebooks_dir: Path | None = None, references_dir: Path | None = None,
           out_dir: Path | None = None, params: Mapping[str, Any] | None = None,
           log: Callable[[str], None] = print) -> RegressionReport:
    """Execute the notebooks of `parts` (all when empty) on a fresh platform and store them as the
    references (nothing is written unless every notebook ran)."""
    import nbformat

    references_dir = Path(references_dir) if references_dir else default_references_dir()
    notebooks = find_notebooks(parts, notebooks_dir)
    out_dir = Path(out_dir) if out_dir else checkout_dir() / "build" / "regression"
    report = RegressionReport()
    with fresh_platform(log):
        settings = fixture()
        executed_paths = _execute(notebooks, out_dir, params, settings, log)
        references = [_strip(_read(executed), source, settings)
                      for source, executed in zip(notebooks, executed_paths, strict=True)]
    references_dir.mkdir(parents=True, exist_ok=True)
    for executed, reference in zip(executed_paths, references, strict=True):
        target = references_dir / executed.name
        nbformat.write(reference, str(target))
        report.written.append(target)
        report.compared.append(executed.name)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sidecarlab.regression [--update] [PART ...]`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sidecarlab.regression", description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", help="notebooks to run (e.g. 01 03); all when none")
    parser.add_argument("--update", action="store_true", help="store the executed notebooks as the references")
    parser.add_argument("--references", type=Path, default=None, help="the references' directory")
    args = parser.parse_args(argv)
    try:
        if args.update:
            report = update(args.parts, references_dir=args.references)
            for path in report.written:
                print(f"reference written: {path}")
            return 0
        report = check(args.parts, references_dir=args.references)
    except KitError as exc:
        print(f"regression: {exc}")
        return 2
    print(report.describe())
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
