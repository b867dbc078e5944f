"""The tutorial: run the notebooks headless (papermill), make learner copies, set up workspaces.

Learners work in copies of their own, `work/notebooks/` (git-ignored, `learners_dir()`), made by
`make_learner_copies()`: never in the tracked `notebooks/`, so a save in JupyterLab leaves the
checkout clean, and a learner's edits are never overwritten unless asked (`force`).

`run()` is a straight pipeline per notebook: find it, load its parameters for the target, make
sure a kernel for this Python exists, execute, collect the check lines, write the executed notebook
and a summary under `build/`. A failure names the notebook and the cell.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .checks import PASSED_MARK, SKIPPED_MARK
from .checks.core import output_text
from .errors import KitError
from .paths import checkout_dir, work_root

__all__ = [
    "LearnerCopy",
    "NotebookResult",
    "RunReport",
    "TutorialError",
    "copy_fixture_app",
    "ensure_kernel",
    "find_notebooks",
    "learner_copy",
    "learners_dir",
    "load_params",
    "make_learner_copies",
    "remove_work_dir",
    "run",
    "run_notebook",
    "work_dir",
]

EXERCISE_TAG = "exercise"
SOLUTION_TAG = "solution"
LEARNER_PLACEHOLDER = "# Your solution here: see the exercise above. The check below tells you when it works.\n"


class TutorialError(KitError):
    """The tutorial could not be run as asked (no such part, bad parameters file, ...)."""


@dataclass
class NotebookResult:
    """How one notebook ran: passed or failed (where and why), and the check lines it printed."""

    notebook: str
    output: str
    status: str
    seconds: float
    passed_checks: list[str] = field(default_factory=list)
    skipped_checks: list[str] = field(default_factory=list)
    failed_cell: int | None = None  # position in the executed notebook, from 1
    failed_exec_count: int | None = None
    failed_source: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "passed"

    def failure_line(self) -> str:
        """`notebook, cell N (In [M]): first line of the cell: error`, for the terminal and CI."""
        if self.ok:
            return ""
        where = f"{self.notebook}"
        if self.failed_cell is not None:
            where += f", cell {self.failed_cell}"
            if self.failed_exec_count is not None:
                where += f" (In [{self.failed_exec_count}])"
        first = next((line for line in self.failed_source.splitlines() if line.strip()), "")
        return f"{where}: `{first.strip()}`\n{self.error}" if first else f"{where}\n{self.error}"


@dataclass
class RunReport:
    """Every notebook's result, and where the summary was written."""

    target: str
    results: list[NotebookResult]
    summary: Path

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)


# -------------------------------------------------------------------------------- locations

def _root() -> Path:
    return checkout_dir()


def default_notebooks_dir() -> Path:
    """`notebooks/` of the checkout (or of the current directory outside one)."""
    return _root() / "notebooks"


def default_out_dir() -> Path:
    """`build/` of the checkout, where executed notebooks and the summary go."""
    return _root() / "build"


def work_dir(*parts: str) -> Path:
    """A scratch directory under the checkout's git-ignored `work/` (or $SIDECARLAB_WORK), created."""
    path = work_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def remove_work_dir(path: Path) -> None:
    """Delete a directory made by `work_dir`/`copy_fixture_app` (refuses anything outside `work/`)."""
    path = Path(path).resolve()
    root = work_root().resolve()
    if not path.is_relative_to(root) or path == root:
        raise TutorialError(f"Refusing to delete {path}: only directories under {root} are work dirs.")
    shutil.rmtree(path, ignore_errors=True)


def copy_fixture_app(dest: Path, app_name: str, config_server_port: int = 8082,
                     fixture: str = "app-using-config-server") -> Path:
    """A fresh copy of a fixture app in `dest` (replacing what was there), its manifest renamed to
    `app_name` with CONFIG_SERVER_PORT set; returns the manifest's path."""
    src = _root() / "fixtures" / fixture
    if not (src / "manifest.yml").is_file():
        raise TutorialError(f"No fixture app {fixture!r} at {src}: run the notebooks from a Sidecar Lab "
                            "checkout (fixtures/ holds the sample apps).")
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "config-server"))
    manifest_path = dest / "manifest.yml"
    manifest = yaml.safe_load(manifest_path.read_text())
    (app,) = manifest["applications"]
    app["name"] = app_name
    app.setdefault("env", {})["CONFIG_SERVER_PORT"] = int(config_server_port)
    manifest_path.write_text("---\n" + yaml.safe_dump(manifest, sort_keys=False, default_flow_style=None))
    return manifest_path


# ------------------------------------------------------------------------------- notebooks

def find_notebooks(parts: Sequence[str] = (), notebooks_dir: Path | None = None) -> list[Path]:
    """The notebooks named by `parts` ("01", "1", "02-install...", a path), or all, in order."""
    directory = Path(notebooks_dir) if notebooks_dir else default_notebooks_dir()
    available = sorted(p for p in directory.glob("[0-9][0-9]-*.ipynb"))
    if not parts:
        if not available:
            raise TutorialError(f"No notebooks (NN-name.ipynb) in {directory}.")
        return available
    chosen: list[Path] = []
    for part in parts:
        as_path = Path(part)
        if as_path.suffix == ".ipynb" and as_path.is_file():
            chosen.append(as_path.resolve())
            continue
        if part.isdigit():
            hits = [p for p in available if p.stem.startswith(part.zfill(2) + "-")]
        else:
            stem = Path(part).stem
            hits = [p for p in available if p.stem == stem or p.stem.startswith(stem)]
        if not hits:
            names = ", ".join(p.stem for p in available) or "none"
            raise TutorialError(f"No notebook matches {part!r} in {directory} (available: {names}). "
                                "Name a part by its number, e.g. `sidecarlab run 01`.")
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


def load_params(target: str, params_dir: Path | None = None) -> dict[str, Any]:
    """The parameters of `notebooks/params/<target>.yml` (with `target` set)."""
    directory = Path(params_dir) if params_dir else default_notebooks_dir() / "params"
    path = directory / f"{target}.yml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in directory.glob("*.yml"))) or "none"
        raise TutorialError(f"No parameters file for target {target!r}: expected {path} "
                            f"(targets with one: {known}).")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise TutorialError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise TutorialError(f"{path}: expected a mapping of parameter names to values, got {type(loaded).__name__}.")
    for secret in ("cf_password", "password", "cf_username", "username"):
        if secret in loaded:
            raise TutorialError(f"{path}: {secret!r} must not be a parameter: credentials come only from the "
                                "environment variables CF_USERNAME and CF_PASSWORD.")
    loaded["target"] = target
    return loaded


# ---------------------------------------------------------------------------------- kernel

def kernel_name() -> str:
    """A kernel name tied to this Python environment, e.g. `sidecarlab-3f2a9c1d`."""
    return "sidecarlab-" + hashlib.sha256(sys.prefix.encode()).hexdigest()[:8]


def ensure_kernel(jupyter_dir: Path) -> str:
    """Write a kernelspec for this very Python under `jupyter_dir/kernels/` and return its name.

    Executing with this explicit kernel (instead of whatever `python3` a user's Jupyter config
    points at) makes headless runs use the environment the kit is installed in, in a fresh venv
    and in CI alike.
    """
    try:
        import ipykernel  # noqa: F401
    except ImportError:
        raise TutorialError(f"ipykernel is not installed in {sys.prefix}: install the kit with "
                            "`pip install -e '.[kit]'`.") from None
    name = kernel_name()
    spec_dir = Path(jupyter_dir) / "kernels" / name
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python ({Path(sys.prefix).name}, Sidecar Lab)",
        "language": "python",
        "metadata": {"debugger": False},
    }
    path = spec_dir / "kernel.json"
    text = json.dumps(spec, indent=1)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return name


# --------------------------------------------------------------------------------- running

def _check_lines(nb: Any) -> tuple[list[str], list[str]]:
    passed, skipped = [], []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            for line in output_text(output).splitlines():  # printed, or shown as a display
                if line.startswith(PASSED_MARK):
                    passed.append(line)
                elif line.startswith(SKIPPED_MARK):
                    skipped.append(line)
    return passed, skipped


def notebook_parameters(path: Path) -> list[str]:
    """The names in a notebook's `parameters` cell, as papermill finds them."""
    import papermill

    return list(papermill.inspect_notebook(str(path)))


def parameters_for(notebook: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The `parameters` a notebook declares in its `parameters` cell (a target's file serves all parts)."""
    declared = set(notebook_parameters(notebook))
    return {name: value for name, value in parameters.items() if name in declared}


def check_parameters(notebooks: Sequence[Path], given: Mapping[str, Any]) -> None:
    """Refuse a parameter none of `notebooks` has (papermill would inject it unread), naming the
    known ones, before anything runs."""
    known: dict[str, list[str]] = {}
    for notebook in notebooks:
        for name in notebook_parameters(notebook):
            known.setdefault(name, []).append(notebook.stem[:2])
    unknown = sorted(set(given) - set(known))
    if unknown:
        listed = ", ".join(sorted(known))
        raise TutorialError(
            f"Unknown notebook parameter{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: "
            f"the notebooks to run ({', '.join(n.stem for n in notebooks)}) take {listed}. "
            "Check the spelling after -p.")


def run_notebook(path: Path, output: Path, parameters: Mapping[str, Any], kernel: str,
                 progress: bool = True, timeout: float | None = None, cwd: Path | None = None) -> NotebookResult:
    """Execute one notebook with papermill (in `cwd`, default its directory); never raises for a
    failing cell (see the result)."""
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from .kernel import IpcKernelManager  # needs the kit's Jupyter packages, like papermill

    output.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    result = NotebookResult(str(path), str(output), "passed", 0.0)
    try:
        papermill.execute_notebook(
            str(path), str(output), parameters=dict(parameters), kernel_name=kernel,
            progress_bar=progress, cwd=str(cwd or path.parent), execution_timeout=timeout,
            kernel_manager_class=IpcKernelManager,
        )
    except PapermillExecutionError as exc:
        result.status = "failed"
        result.failed_cell = exc.cell_index + 1  # people count cells from 1
        result.failed_exec_count = exc.exec_count
        result.failed_source = exc.source or ""
        result.error = f"{exc.ename}: {exc.evalue}"
    except Exception as exc:  # kernel died, timeout, unreadable notebook: still a named failure
        result.status = "failed"
        result.error = f"{type(exc).__name__}: {exc}"
    result.seconds = round(time.monotonic() - started, 1)
    if output.is_file():
        result.passed_checks, result.skipped_checks = _check_lines(nbformat.read(str(output), as_version=4))
    return result


def run(
    parts: Sequence[str] = (),
    *,
    target: str = "local",
    params: Mapping[str, Any] | None = None,
    notebooks_dir: Path | None = None,
    out_dir: Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    cwd: Path | None = None,
    timeout: float | None = None,
) -> RunReport:
    """Run the notebooks of `parts` (all when empty) on `target`; write executed notebooks to
    `out_dir/notebooks/` and `out_dir/summary.{md,json}`. Stops at the first failing notebook.
    `cwd` (default: each notebook's directory) and `timeout` (per cell) go to papermill."""
    notebooks_dir = Path(notebooks_dir) if notebooks_dir else default_notebooks_dir()
    out_dir = Path(out_dir).resolve() if out_dir else default_out_dir()  # notebooks run from their own directory
    notebooks = find_notebooks(parts, notebooks_dir)
    parameters = load_params(target, notebooks_dir / "params")
    check_parameters(notebooks, params or {})
    parameters.update(params or {})
    jupyter_dir = out_dir / "jupyter"
    kernel = ensure_kernel(jupyter_dir)
    results: list[NotebookResult] = []
    previous = os.environ.get("JUPYTER_PATH")
    # jupyter_client finds kernelspecs through JUPYTER_PATH; ours goes first.
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(jupyter_dir), previous]))
    try:
        for number, notebook in enumerate(notebooks, start=1):
            log(f"[{number}/{len(notebooks)}] {notebook.stem} (target {target}, kernel {kernel})")
            out = out_dir / "notebooks" / notebook.name
            # only what the notebook declares: papermill warns of the rest and injects it unread
            own = parameters_for(notebook, parameters)
            result = run_notebook(notebook, out, own, kernel, progress=progress, timeout=timeout, cwd=cwd)
            results.append(result)
            if result.ok:
                log(f"    passed in {result.seconds}s: {len(result.passed_checks)} checks passed, "
                    f"{len(result.skipped_checks)} skipped")
                for line in result.skipped_checks:
                    log(f"    {line}")
            else:
                log(f"    FAILED after {result.seconds}s: {result.failure_line()}")
                log(f"    executed notebook: {out}")
                break
    finally:
        if previous is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = previous
    summary = _write_summary(out_dir, target, results)
    return RunReport(target, results, summary)


def _write_summary(out_dir: Path, target: str, results: list[NotebookResult]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(
        {"target": target, "ok": all(r.ok for r in results), "notebooks": [asdict(r) for r in results]},
        indent=2, ensure_ascii=False))
    lines = [f"# Tutorial run on target `{target}`", "",
             "| notebook | status | seconds | checks passed | skipped |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {Path(r.notebook).stem} | {r.status} | {r.seconds} | {len(r.passed_checks)} | "
                     f"{len(r.skipped_checks)} |")
    for r in results:
        if not r.ok:
            lines += ["", f"## {Path(r.notebook).stem} failed", "", "```", r.failure_line(), "```"]
        if r.skipped_checks:
            lines += ["", f"## {Path(r.notebook).stem}: skipped checks", ""]
            lines += [f"- {line}" for line in r.skipped_checks]
    path = out_dir / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------------------- learner copies

def learner_copy(src: Path, dest: Path) -> int:
    """Write `src` without its solutions to `dest`: cells tagged `solution` become a placeholder,
    every output is cleared. Returns how many solutions were removed."""
    import nbformat

    nb = nbformat.read(str(src), as_version=4)
    removed = 0
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if SOLUTION_TAG in tags:
            cell.source = LEARNER_PLACEHOLDER
            cell.metadata["tags"] = [t for t in tags if t != SOLUTION_TAG]
            removed += 1
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(copy.deepcopy(nb), str(dest))
    return removed


def learners_dir() -> Path:
    """Where learners work: `work/notebooks/` (under $SIDECARLAB_WORK when set), git-ignored."""
    return work_root() / "notebooks"


@dataclass(frozen=True)
class LearnerCopy:
    """One learner copy and what `make_learner_copies` did with it."""

    path: Path
    status: str  # "written" (new), "replaced" (force), "unchanged" (already the fresh copy), "kept" (edited)
    solutions_removed: int

    def line(self) -> str:
        """One line for people."""
        said = {
            "written": f"written ({self.solutions_removed} solution(s) removed)",
            "replaced": f"replaced by a fresh copy ({self.solutions_removed} solution(s) removed)",
            "unchanged": "already the fresh learner copy",
            "kept": "kept: it differs from a fresh copy (your edits); --force replaces it",
        }[self.status]
        return f"{self.path}: {said}"


def make_learner_copies(notebooks: Sequence[Path] = (), out_dir: Path | None = None,
                        force: bool = False) -> list[LearnerCopy]:
    """Learner copies of `notebooks` (default: every notebook of the tutorial) in `out_dir` (default:
    `learners_dir()`). A copy that exists and differs from a fresh one holds the learner's edits and
    is kept, unless `force`."""
    import tempfile

    sources = [Path(n) for n in notebooks] or find_notebooks()
    out_dir = Path(out_dir) if out_dir else learners_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    made: list[LearnerCopy] = []
    for src in sources:
        dest = out_dir / src.name
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".learner-copy-") as scratch:
            fresh = Path(scratch) / src.name
            removed = learner_copy(src, fresh)
            if not dest.exists():
                status = "written"
            elif dest.read_bytes() == fresh.read_bytes():
                status = "unchanged"
            else:
                status = "replaced" if force else "kept"
            if status in ("written", "replaced"):
                os.replace(fresh, dest)  # atomic: never a half-written notebook
        made.append(LearnerCopy(dest, status, removed))
    return made
