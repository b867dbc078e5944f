"""How a check's result shows: one line starting with its mark outside a kernel; in a Jupyter kernel
one display with the same line as `text/plain` and a PASS/SKIP badge as `text/html`, never twice.

The marks are glyphs Debian's default fonts draw (fontconfig is asked, where it is installed), so a
notebook without a colour-emoji font shows them; the badge reads without any glyph. The notebooks
here run in a real kernel (nbclient), as papermill and JupyterLab run them.
"""

from __future__ import annotations

import shutil
import subprocess

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from sidecarlab.checks import FAILED_MARK, PASSED_MARK, SKIPPED_MARK, CheckFailed, check, fail
from sidecarlab.checks.core import CheckResult, badge_html, output_text

_DEFINE = '''\
from sidecarlab.checks import check, fail

@check("the answer of {target}")
def answers(target, right=True):
    if not right:
        fail("42", "41", "ask again")
    return f"{target} answers 42"
'''


def _execute(*sources: str) -> nbformat.NotebookNode:
    nb = new_notebook(cells=[new_code_cell(_DEFINE), *map(new_code_cell, sources)],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    NotebookClient(nb, timeout=60, kernel_name="python3", allow_errors=True).execute()
    return nb


@check("the answer of {target}")
def _answers(target: str, right: bool = True) -> str:
    if not right:
        fail("42", "41", "ask again")
    return f"{target} answers 42"


def test_outside_a_kernel_a_check_prints_its_line_once(capsys: pytest.CaptureFixture[str]) -> None:
    result = _answers("deep-thought")
    assert capsys.readouterr().out == f"{PASSED_MARK} deep-thought answers 42\n" == result.line() + "\n"
    with pytest.raises(CheckFailed) as failed:
        _answers("deep-thought", right=False)
    assert str(failed.value).startswith(f"{FAILED_MARK} the answer of deep-thought\n   expected: 42\n")
    assert capsys.readouterr().out == ""


def test_in_a_kernel_a_check_shows_one_display_with_its_line_and_a_badge() -> None:
    nb = _execute('print("asking")\nanswers("deep-thought")\nprint("asked")',  # the last expression too
                  'answers("x", right=False)')
    outputs = nb.cells[1].outputs
    assert [o.output_type for o in outputs] == ["stream", "display_data", "stream"], outputs
    shown = outputs[1]
    assert shown.data["text/plain"] == f"{PASSED_MARK} deep-thought answers 42"
    assert shown.data["text/html"] == badge_html("passed", shown.data["text/plain"])
    assert ">PASS</span>" in shown.data["text/html"] and "deep-thought answers 42</div>" in shown.data["text/html"]
    assert [output_text(o) for o in outputs] == ["asking\n", f"{PASSED_MARK} deep-thought answers 42", "asked\n"]
    (error,) = nb.cells[2].outputs
    assert error.output_type == "error" and error.ename == "CheckFailed"
    assert error.evalue.startswith(f"{FAILED_MARK} the answer of x")


def test_a_check_as_the_last_expression_is_shown_once() -> None:
    nb = _execute('answers("deep-thought")', 'result = answers("y")\nresult')
    for cell in nb.cells[1:]:
        (only,) = cell.outputs
        assert only.output_type == "display_data"


def test_the_badge_reads_without_the_glyph_and_escapes_the_text() -> None:
    skipped = CheckResult("skipped", "one container <ps aux> & co", reason="runtime mode `process`")
    assert skipped.line() == f"{SKIPPED_MARK} skipped: one container <ps aux> & co (runtime mode `process`)"
    page = skipped._repr_html_()
    assert ">SKIP</span>" in page and "sidecarlab-check-skipped" in page
    assert "skipped: one container &lt;ps aux&gt; &amp; co (runtime mode `process`)</div>" in page
    assert skipped._repr_mimebundle_() == {"text/plain": skipped.line(), "text/html": page}


@pytest.mark.skipif(shutil.which("fc-list") is None, reason="fontconfig's fc-list is not installed")
def test_the_default_fonts_draw_every_mark() -> None:
    """Each mark is one code point that DejaVu Sans and DejaVu Sans Mono (Debian's default fonts,
    the ones JupyterLab's code font falls back to) draw; no emoji font needed."""
    for family in ("DejaVu Sans", "DejaVu Sans Mono"):
        if family not in _fc_list(family):
            pytest.skip(f"{family} is not installed")
        for mark in (PASSED_MARK, SKIPPED_MARK, FAILED_MARK):
            assert len(mark) == 1, f"{mark!r}: one code point, no variation selector"
            assert family in _fc_list(f"{family}:charset={ord(mark):x}"), f"{family} has no glyph for U+{ord(mark):04X}"
    assert "DejaVu" not in _fc_list("DejaVu Sans:charset=2705"), "the question fontconfig answers no to, for ✅"


def _fc_list(pattern: str) -> str:
    return subprocess.run(["fc-list", pattern, "family"], capture_output=True, text=True, check=True).stdout
