"""Notebook regression: the notebooks, re-executed on a fresh platform, match their reference outputs.

The references (`tests/regression/references/`) come from a real run on another day, with other
ports and another state dir; the unchanged notebooks must match them through pytest-notebook's
diff_replace/diff_ignore settings. A notebook that prints something else must fail, naming the
notebook, the cell and the diff.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat
import pytest

from sidecarlab import regression
from sidecarlab.checks import PASSED_MARK
from sidecarlab.checks.core import output_text

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
REFERENCES = ROOT / "tests" / "regression" / "references"
PART1 = "01-push-app-with-sidecar.ipynb"


def test_every_notebook_has_a_reference_made_by_a_real_run() -> None:
    notebooks = sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))
    assert notebooks and notebooks == sorted(p.name for p in REFERENCES.glob("*.ipynb"))
    for name in notebooks:
        reference = nbformat.read(str(REFERENCES / name), as_version=4)
        outputs = [o for c in reference.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        assert outputs, f"{name}: the reference has no outputs"
        text = "".join(output_text(o) for o in outputs)
        assert PASSED_MARK in text, f"{name}: the reference records no passed check"
        # stored normalised: no value of the machine or the run that made it
        assert not re.search(r"/tmp/(?!garden-init\b)|/home/(?!vcap)|\b[0-9a-f]{8}-[0-9a-f]{4}-", text), name
        assert "papermill" not in reference.metadata


def _replace_text(output: dict, old: str, new: str) -> None:
    """Replace `old` by `new` in an output's text: a stream's, or every form of a display (a check's
    line and its HTML badge)."""
    if output.get("output_type") == "stream":
        output["text"] = output["text"].replace(old, new, 1)
    else:
        for kind, value in output["data"].items():
            output["data"][kind] = value.replace(old, new, 1)


def _changed(nb_path: Path, old: str, new: str) -> str:
    """Replace `old` by `new` in the outputs of a reference copy; return the cell's first line."""
    nb = nbformat.read(str(nb_path), as_version=4)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if old in output_text(output):
                _replace_text(output, old, new)
                nbformat.write(nb, str(nb_path))
                return cell.source.splitlines()[0]
    raise AssertionError(f"{old!r} is in no output of {nb_path.name}")


def test_volatile_values_are_normalised_by_the_settings(tmp_path: Path) -> None:
    """GUIDs, times, ports, PIDs, sizes and paths of another run match; the reference is unchanged."""
    copy = tmp_path / PART1
    nb = nbformat.read(str(REFERENCES / PART1), as_version=4)
    volatile = ("a3f0c2d4-1b2c-4d5e-8f90-0123456789ab listening on 127.0.0.1:41234 (PID 31337) since "
                "2031-07-04T12:34:56Z, 12.5M of 256M, took 3.2s, in /tmp/pytest-of-x/run-7/work\n")
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                output["text"] += volatile
    listening = next(o for c in nb.cells for o in c.get("outputs", []) if "  LISTEN  " in o.get("text", ""))
    listening["text"] += "-              -      TIME_WAIT  ::1:8082       ::1:45678\n"  # a closed connection's rest
    original = nbformat.read(str(REFERENCES / PART1), as_version=4)
    for cell in original.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                output["text"] += ("11111111-2222-4333-8444-555555555555 listening on 127.0.0.1:52345 (PID 4242) "
                                   "since 2026-01-01T00:00:01Z, 9.8M of 256M, took 41.0s, in /tmp/other/work\n")
    nbformat.write(nb, str(copy))
    reference = tmp_path / "reference.ipynb"
    nbformat.write(original, str(reference))
    assert regression.compare(reference, copy) is None
    # the check that names TIME_WAIT in its claim is not a socket row: losing it fails
    claim = next(o for c in nb.cells for o in c.get("outputs", []) if "is in state TIME_WAIT" in output_text(o))
    _replace_text(claim, "is in state TIME_WAIT", "is in state ESTABLISHED")
    nbformat.write(nb, str(copy))
    assert regression.compare(reference, copy) is not None


@pytest.mark.parametrize(("old", "new"), [
    ("Hi, I'm an app with a sidecar!", "Hi, I'm an app!"),       # the sample app's greeting
    ("sidecars:", "sidecar:"),                                   # a `cf app` field
    ("state  since", "state  uptime"),                           # a `cf app` column
])
def test_a_changed_text_fails_naming_notebook_cell_and_diff(tmp_path: Path, old: str, new: str) -> None:
    copy = tmp_path / PART1
    shutil.copy(REFERENCES / PART1, copy)
    old_in_file = old
    if old == "state  since":  # columns are padded with runs of spaces: find the real spelling
        text = copy.read_text()
        old_in_file = re.search(r"state +since", text).group(0)
        new = old_in_file.replace("since", "uptime")
    first_line = _changed(copy, old_in_file, new)
    difference = regression.compare(REFERENCES / PART1, copy)
    assert difference is not None
    message = difference.describe()
    assert message.startswith(f"{PART1}: outputs differ from the reference at cell ")
    assert first_line.strip()[:40] in message
    assert re.search(r"^-.*" + re.escape(old.split()[-1]), message, re.M), message
    assert re.search(r"^\+.*" + re.escape(new.split()[-1]), message, re.M), message


def test_a_missing_line_fails(tmp_path: Path) -> None:
    copy = tmp_path / PART1
    nb = nbformat.read(str(REFERENCES / PART1), as_version=4)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            text = output_text(output)
            if PASSED_MARK in text:
                line = next(line for line in text.splitlines(keepends=True) if PASSED_MARK in line)
                _replace_text(output, line, "")
                nbformat.write(nb, str(copy))
                difference = regression.compare(REFERENCES / PART1, copy)
                assert difference is not None and "-" + PASSED_MARK in difference.diff.replace(" ", "")
                return
    raise AssertionError("no check line in the reference")


@pytest.mark.timeout(900)  # re-executes every notebook; a guard against hanging, not a performance claim
def test_unchanged_notebooks_match_their_references_on_a_fresh_platform(tmp_path: Path) -> None:
    """The regression run itself (`make regression`): another day, other ports, another state dir."""
    report = regression.check(out_dir=tmp_path / "out")
    assert report.compared == sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))
    assert report.ok, report.describe()


@pytest.mark.timeout(600)
def test_a_notebook_that_prints_something_else_fails(tmp_path: Path) -> None:
    """A copy of Part 1 whose first check cell prints one more line: the re-executed notebook fails
    against Part 1's reference, naming the notebook, the cell and the diff."""
    nb = nbformat.read(str(NOTEBOOKS / PART1), as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "checks.app_answers(" in c.source)
    nb.cells[index].source += '\nprint("Hello from a changed notebook")'
    changed = tmp_path / "notebooks" / PART1
    changed.parent.mkdir()
    nbformat.write(nb, str(changed))
    report = regression.check([str(changed)], out_dir=tmp_path / "out")
    assert not report.ok
    (difference,) = report.differences
    message = difference.describe()
    assert message.startswith(f"{PART1}: outputs differ from the reference at cell ")
    # papermill's injected parameters cell shifts positions by one
    assert f"cell {index + 2} `" in message, message
    assert re.search(r"^\+.*Hello from a changed notebook", message, re.M), message


_STARTUP = """\
   T [CELL/0] OUT Cell localcf-cell-0 successfully created container for instance G
{lines}   T [CELL/0] OUT Container became healthy
   T [APP/PROC/WEB/0] OUT Sending a request to the config-server sidecar
"""
_APP = ["   T [APP/PROC/WEB/0] OUT Invoking start command.\n", "   T [APP/PROC/WEB/0] OUT app listening on 0.0.0.0:8080\n"]
_SIDECAR = ["   T [APP/PROC/WEB/SIDECAR/CONFIG-SERVER/0] OUT Invoking start command.\n",
            "   T [APP/PROC/WEB/SIDECAR/CONFIG-SERVER/0] OUT listening 0.0.0.0:8082...\n"]


def _logs_notebook(lines: list[str]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("%cf logs app --recent")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=_STARTUP.format(lines="".join(lines)))]
    nb.cells = [cell]
    return nb


def test_start_up_lines_of_app_and_sidecar_may_interleave_but_not_change(tmp_path: Path) -> None:
    """The processes of an instance start at once: any interleaving of their lines matches, each
    process keeping its own order; a missing or changed line still fails."""
    reference = tmp_path / "reference.ipynb"
    nbformat.write(_logs_notebook(_APP + _SIDECAR), str(reference))
    for lines in ([_SIDECAR[0], _APP[0], _SIDECAR[1], _APP[1]], _SIDECAR + _APP):
        assert regression.compare(reference, _logs_notebook(lines)) is None
    for lines in (_APP + _SIDECAR[:1], [_APP[1], _APP[0], *_SIDECAR],
                  _APP + [_SIDECAR[0], _SIDECAR[1].replace("8082", "8083")]):
        difference = regression.compare(reference, _logs_notebook(lines))
        assert difference is not None and "cell 1 `%cf logs app --recent`" in difference.describe()


@pytest.mark.parametrize("base", ["", "notebooks", "sidecar_src/config-server"])
def test_a_work_dir_outside_the_checkout_spelled_relative_to_any_of_its_directories_is_masked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base: str) -> None:
    """The go build line spells its output relative to sidecar_src/config-server; the notebooks spell
    paths relative to notebooks/: every spelling of the work dir becomes <SIDECARLAB_WORK>, with no
    climbing `../` left over (even when checkout and work dir share a leading part, e.g. /tmp)."""
    import os
    work = tmp_path / "run-1" / "work"
    monkeypatch.setenv("SIDECARLAB_WORK", str(work))
    relative = os.path.relpath(work / "part4" / "bin" / "config-server", ROOT / base)
    text = f"go build -trimpath -o {relative} .\n"
    for _path, regex, replacement in regression.diff_replace():
        text = re.sub(regex, replacement, text)
    assert text == "go build -trimpath -o <SIDECARLAB_WORK>/part4/bin/config-server .\n"


def test_lines_the_app_and_its_sidecar_log_at_once_may_interleave_but_not_change(tmp_path: Path) -> None:
    """One request: the app and the sidecar log it at once, in either order; each process's own
    order, its lines, and the platform's lines between them still count."""
    send = "   T [APP/PROC/WEB/0] OUT Sending a request to the config-server sidecar\n"
    got = "   T [APP/PROC/WEB/SIDECAR/CONFIG-SERVER/0] OUT Received a request for config.\n"
    answer = "   T [APP/PROC/WEB/0] OUT Received {} from the config-server sidecar\n"
    router = "   T [RTR/0] OUT app.apps.localhost - GET /config 200\n"

    def notebook(lines: list[str]) -> nbformat.NotebookNode:
        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell("%cf logs app --recent")
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="".join(lines))]
        nb.cells = [cell]
        return nb

    reference = tmp_path / "reference.ipynb"
    nbformat.write(notebook([send, got, answer, router]), str(reference))
    assert regression.compare(reference, notebook([send, answer, got, router])) is None
    for lines in ([answer, send, got, router], [send, answer, router], [send, got, router, answer],
                  [send, got.replace("config.", "nothing."), answer, router]):
        assert regression.compare(reference, notebook(lines)) is not None, lines
