"""Part 1 as a learner meets it: a learner copy opened in JupyterLab in a real browser.

Debian's chromium (driven by Playwright) opens a learner copy of Part 1 (`sidecarlab learner-copy`)
in a JupyterLab started for the test, runs all cells from the Run menu, and waits until the first
exercise's check fails, as it must in a learner copy (its solution is removed). Every check before
that exercise passed on the page and is rendered so that it reads: its PASS badge is visible on
the check's colour, its line is the claim of that very check, and the mark's glyph is drawn by an
installed font (not the empty box of a missing glyph, not an emoji font). The tracked notebooks are
unchanged afterwards.

Where chromium is missing it is installed with apt-get (as root); where it cannot be had, or
Playwright is not installed, the test is skipped with the reason. JupyterLab, its kernels and the
app the notebook pushed are removed at the end; the platform is the session's localcf.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import psutil
import pytest
import requests
from conftest import LocalCF, free_port
from test_notebooks import _PROVES, PART1, check_calls

from sidecarlab.checks import FAILED_MARK, PASSED_MARK
from sidecarlab.checks.core import output_text

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NOTEBOOK_1 = ROOT / "notebooks" / "01-push-app-with-sidecar.ipynb"
CHROMIUM = Path("/usr/bin/chromium")
APP = "app-using-config-server"  # the learner copy's own parameter
PASS_COLOUR = "rgb(26, 127, 55)"  # the PASS badge's #1a7f37
# guards against hanging, not performance claims
LAB_START_SECONDS = 90
RUN_SECONDS = 300


def ensure_chromium() -> Path:
    """Debian's chromium, installed with apt-get when missing and this is root; else a skip."""
    if CHROMIUM.is_file():
        return CHROMIUM
    if not shutil.which("apt-get") or os.geteuid() != 0:
        pytest.skip(f"no browser: {CHROMIUM} is missing and cannot be installed here (needs apt-get as root); "
                    "run `sudo apt-get install -y chromium` (or `make browser` as root)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "chromium"]
    proc = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:  # a stale package list: once more after an update
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=300)
        proc = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or not CHROMIUM.is_file():
        pytest.skip(f"no browser: `{' '.join(install)}` failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
    return CHROMIUM


class Lab:
    """A JupyterLab server on a free port with a random token, serving `root`, in its own settings
    dirs; `stop()` shuts down its kernels and ends every process it started."""

    def __init__(self, root: Path, state: Path, env: dict[str, str]) -> None:
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        for name in ("config", "data", "runtime", "ipython"):
            (state / name).mkdir(parents=True, exist_ok=True)
        env = dict(env, JUPYTER_CONFIG_DIR=str(state / "config"), JUPYTER_DATA_DIR=str(state / "data"),
                   JUPYTER_RUNTIME_DIR=str(state / "runtime"), IPYTHONDIR=str(state / "ipython"),
                   PATH=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]))
        argv = [str(BIN / "jupyter"), "lab", "--no-browser", f"--port={self.port}", "--ip=127.0.0.1",
                f"--ServerApp.token={self.token}", f"--ServerApp.root_dir={root}",
                "--ServerApp.port_retries=0",
                # no calls out: no update check, no news
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.news_url=None"]
        if os.geteuid() == 0:
            argv.append("--allow-root")
        self.log = (state / "lab.log").open("w")
        self.proc = subprocess.Popen(argv, cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.started: dict[int, psutil.Process] = {}

    def api(self, method: str, path: str) -> requests.Response:
        return requests.request(method, f"{self.url}/api/{path}", timeout=10,
                                headers={"Authorization": f"token {self.token}"})

    def wait_ready(self) -> None:
        deadline = time.monotonic() + LAB_START_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"jupyter lab exited {self.proc.returncode}:\n{self.log_text()}")
            try:
                if self.api("GET", "status").status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"jupyter lab did not answer within {LAB_START_SECONDS}s:\n{self.log_text()}")

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-3000:]

    def remember_children(self) -> None:
        """Note the server's processes (kernels run in sessions of their own)."""
        try:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self.started.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass

    def stop(self) -> None:
        self.remember_children()
        try:
            for kernel in self.api("GET", "kernels").json():
                self.api("DELETE", f"kernels/{kernel['id']}")
        except (requests.RequestException, ValueError):
            pass
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        _, alive = psutil.wait_procs(list(self.started.values()), timeout=15)
        for process in alive:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        self.log.close()


@pytest.fixture
def browser_kit(localcf: LocalCF) -> tuple[Any, Path]:
    """Playwright's sync API and chromium's path; a skip with the reason where either cannot be had,
    or where Part 1's isolation checks would be skipped."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed "
                                   "(pip install -e '.[test]')")
    chromium = ensure_chromium()
    if "runtime: namespaces" not in localcf("status").out:
        pytest.skip("Part 1's isolation checks need Linux user namespaces, missing here: they would be skipped")
    return sync_api, chromium


@pytest.fixture
def lab(browser_kit: tuple[Any, Path], tmp_path: Path, localcf: LocalCF) -> Iterator[tuple[Lab, Path]]:
    """JupyterLab serving a folder with a learner copy of Part 1, its kernels on the session's localcf."""
    folder = tmp_path / "workshop"
    made = subprocess.run([str(BIN / "sidecarlab"), "learner-copy", str(NOTEBOOK_1), "--out", str(folder)],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0 and "solution(s) removed" in made.stdout, made.stdout + made.stderr
    env = dict(os.environ, LOCALCF_HOME=str(localcf.home), SIDECARLAB_WORK=str(tmp_path / "work"),
               SIDECARLAB_HOME=str(tmp_path / "home"))
    server = Lab(folder, tmp_path / "lab", env)
    try:
        server.wait_ready()
        yield server, folder / NOTEBOOK_1.name
    finally:
        print(f"jupyter lab's log (its end):\n{server.log_text()}")  # shown only when the test failed
        server.stop()
        localcf("delete", APP, "-f", "-r", check=False)


# In the page: each cell's prompt, its checks (status, text, badge) and how many outputs it shows.
_CELLS = """() => Array.from(document.querySelectorAll('.jp-Notebook .jp-Cell')).map(cell => ({
  prompt: (cell.querySelector('.jp-InputPrompt') || {}).textContent || '',
  checks: Array.from(cell.querySelectorAll('.sidecarlab-check')).map(c => ({
    status: c.className, text: c.textContent,
    badge: (c.querySelector('.sidecarlab-badge') || {}).textContent || ''})),
  outputs: cell.querySelectorAll('.jp-OutputArea-output').length,
}))"""

# Run All has stopped: an error shows (the traceback's error name) and no cell waits or runs ([*]).
_STOPPED = """() => {
  const cells = Array.from(document.querySelectorAll('.jp-Notebook .jp-Cell'));
  const failed = cells.some(c => Array.from(c.querySelectorAll('.jp-OutputArea-output'))
    .some(o => /^\\S*(Error|CheckFailed|Exception)\\b/m.test(o.textContent)));
  const busy = cells.some(c => (c.querySelector('.jp-InputPrompt') || {}).textContent === '[*]:');
  return failed && !busy;
}"""

# Whether the browser draws `mark` in `element`'s font: its pixels on a canvas differ from those of
# an unassigned code point (U+0378), which every font lacks and which is drawn as the missing-glyph box.
_DRAWN = """(element, mark) => {
  const font = getComputedStyle(element).font;
  const draw = (text) => {
    const canvas = document.createElement('canvas'); canvas.width = 64; canvas.height = 64;
    const g = canvas.getContext('2d'); g.font = font; g.fillStyle = '#000'; g.textBaseline = 'top';
    g.fillText(text, 8, 8);
    return Array.from(g.getImageData(0, 0, 64, 64).data).join(',');
  };
  const glyph = draw(mark), missing = draw('\\u0378');
  return {font, inked: /[1-9]/.test(glyph), differs: glyph !== missing};
}"""


# Some cell is queued or has run: its prompt is no longer `[ ]:`.
_STARTED = """() => Array.from(document.querySelectorAll('.jp-Notebook .jp-Cell .jp-InputPrompt'))
  .some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))"""


def close_dialogs(page: Any) -> list[str]:
    """Close the JupyterLab dialogs in the way, as a learner would, and return their texts.

    A dialog can open on its own while the page settles (a kernel that restarted, a lost
    connection that came back, a kernel to choose). "Select Kernel" is accepted (its default is the
    notebook's own kernel); any other is closed with Escape, which declines (no build, no change)."""
    seen: list[str] = []
    for _ in range(5):
        dialogs = page.locator(".jp-Dialog")
        if dialogs.count() == 0:
            break
        dialog = dialogs.first
        text = " | ".join(dialog.inner_text().split("\n"))
        seen.append(text)
        accept = dialog.locator(".jp-Dialog-footer .jp-mod-accept")
        if text.startswith("Select Kernel") and accept.count():
            accept.first.click()
        else:
            page.keyboard.press("Escape")
        page.wait_for_timeout(500)
    if seen:  # in the report of a test that fails later
        print(f"JupyterLab dialogs closed: {seen}")
    return seen


def run_all_cells(page: Any, timeout_error: type[Exception]) -> None:
    """Run > Run All Cells, as a learner does; again (up to three more times) if no cell was queued:
    a menu clicked while the page still settles can miss its notebook, a dialog can be in the way."""
    for _ in range(4):
        close_dialogs(page)
        try:
            page.get_by_role("menuitem", name="Run", exact=True).click(timeout=10_000)
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click(timeout=10_000)
            page.wait_for_function(_STARTED, timeout=20_000, polling=250)
            return
        except timeout_error:  # a dialog first, then the menu, and once more
            close_dialogs(page)
            page.keyboard.press("Escape")
    raise AssertionError(f"Run > Run All Cells queued no cell (four tries); dialogs: {close_dialogs(page)}")


def _fonts_of(cdp: Any, selector: str) -> list[str]:
    """The installed fonts the browser drew the text of the first `selector` with (DevTools' CSS domain)."""
    root = cdp.send("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
    node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
    return [font["familyName"] for font in cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]]


def _tracked_notebooks() -> tuple[str, dict[str, str]]:
    """`git status` of notebooks/ and the digest of every file in it."""
    status = subprocess.run(["git", "status", "--porcelain", "--", "notebooks"], cwd=ROOT, capture_output=True,
                            text=True).stdout
    digests = {str(p.relative_to(ROOT)): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in sorted((ROOT / "notebooks").rglob("*")) if p.is_file()}
    return status, digests


def _saved(notebook: Path, cell: int) -> nbformat.NotebookNode:
    """The notebook as the browser saved it, once `cell` has outputs in it."""
    deadline = time.monotonic() + 30
    while True:
        saved = nbformat.read(str(notebook), as_version=4)
        if saved.cells[cell].get("outputs"):
            return saved
        assert time.monotonic() < deadline, f"JupyterLab did not save {notebook.name} with outputs (Ctrl+S)"
        time.sleep(0.5)


@pytest.mark.timeout(600)  # a guard against hanging, not a performance claim
def test_a_learner_copy_of_part_1_runs_in_jupyterlab_and_shows_its_checks(
        browser_kit: tuple[Any, Path], lab: tuple[Lab, Path]) -> None:
    sync_api, chromium = browser_kit
    server, notebook = lab
    tracked = _tracked_notebooks()

    # What must pass: every check call before the first exercise, each proving its own claim.
    source = nbformat.read(str(notebook), as_version=4)
    first_exercise = next(i for i, c in enumerate(source.cells) if "exercise" in c.metadata.get("tags", []))
    before = [i for i, c in enumerate(source.cells[:first_exercise]) if c.cell_type == "code"
              and check_calls_in(c.source)]
    expected = PART1[:sum(len(check_calls_in(source.cells[i].source)) for i in before)]
    assert [name for name, _ in expected] == [n for i in before for n in check_calls_in(source.cells[i].source)]
    exercise_check = next(i for i, c in enumerate(source.cells) if i > first_exercise and c.cell_type == "code"
                          and check_calls_in(c.source))
    assert check_calls(notebook)[len(expected)] == "memory_limit_carved"

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{server.url}/lab/tree/{notebook.name}?token={server.token}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=LAB_START_SECONDS * 1000)
            # the kernel is up when the notebook's toolbar says idle
            page.wait_for_selector(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status='idle']",
                                   timeout=LAB_START_SECONDS * 1000)
            server.remember_children()
            run_all_cells(page, sync_api.TimeoutError)
            # until the exercise's check failed (or an earlier cell did), and nothing runs any more
            page.wait_for_function(_STOPPED, timeout=RUN_SECONDS * 1000, polling=500)
            server.remember_children()
            cells = page.evaluate(_CELLS)
            assert len(cells) == len(source.cells), "the page shows the notebook's cells"
            # Saved from the browser (the learner copy is the test's own): what each cell output.
            close_dialogs(page)
            page.locator(".jp-Notebook .jp-Cell").first.click()
            page.keyboard.press("Control+s")
            ran = _saved(notebook, exercise_check)

            # Before the exercise: no error, and each check passed, in order, with its own claim.
            for index, cell in enumerate(ran.cells[:first_exercise]):
                errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
                assert not errors, f"cell {index + 1} failed before the first exercise: {errors}"
            lines = [line for cell in ran.cells[:first_exercise] for o in cell.get("outputs", [])
                     for line in output_text(o).splitlines() if line.startswith(PASSED_MARK)]
            shown = [check for i in before for check in cells[i]["checks"]]
            assert len(shown) == len(expected), shown
            assert sum(len(cell["checks"]) for cell in cells[:first_exercise]) == len(expected)
            for check, line, (name, fill) in zip(shown, lines, expected, strict=True):
                assert "sidecarlab-check-passed" in check["status"] and check["badge"] == "PASS", check
                assert check["text"] == "PASS" + line, "the page shows the check's line after its badge"
                pattern = PASSED_MARK + " " + _PROVES[name].format(app=re.escape(APP), **fill)
                assert re.match(pattern, line), f"{name} should show\n  {pattern}\nbut shows\n  {line}"

            # Each badge is visible on its colour, each mark drawn by an installed, non-emoji font.
            cdp = page.context.new_cdp_session(page)
            cdp.send("DOM.enable")
            cdp.send("CSS.enable")
            badges = page.locator(".sidecarlab-check-passed .sidecarlab-badge")
            marks = page.locator(".sidecarlab-check-passed .sidecarlab-mark")
            assert badges.count() == marks.count() == len(expected)
            for n in range(len(expected)):
                badge, mark = badges.nth(n), marks.nth(n)
                mark.scroll_into_view_if_needed()
                assert badge.is_visible() and mark.is_visible()
                assert badge.evaluate("e => getComputedStyle(e).backgroundColor") == PASS_COLOUR
                box = mark.bounding_box()
                assert box is not None and box["width"] > 0 and box["height"] > 0, box
                drawn = mark.evaluate(_DRAWN, mark.text_content())
                assert mark.text_content() == PASSED_MARK and drawn["inked"] and drawn["differs"], (
                    f"{PASSED_MARK!r} is drawn as a missing glyph in {drawn['font']}")
                mark.evaluate("(e, n) => e.id = 'sidecarlab-mark-' + n", n)
                fonts = _fonts_of(cdp, f"#sidecarlab-mark-{n}")
                assert fonts and not any("emoji" in f.lower() for f in fonts), fonts

            # The exercise's check failed, saying so; every cell before it ran, none after it.
            (failure,) = [o for o in ran.cells[exercise_check].outputs if o.output_type == "error"]
            assert failure.ename == "CheckFailed" and failure.evalue.startswith(f"{FAILED_MARK} MEMORY_LIMIT inside {APP}")
            for index, cell in enumerate(cells[:exercise_check]):
                if source.cells[index].cell_type == "code":
                    assert re.fullmatch(r"\[\d+\]:", cell["prompt"]), f"cell {index + 1} did not run: {cell}"
            assert all(not cell["outputs"] for cell in cells[exercise_check + 1:])
            assert all(not cell.get("outputs") for cell in ran.cells[exercise_check + 1:])
        finally:
            browser.close()

    assert _tracked_notebooks() == tracked, "the tracked notebooks in notebooks/ changed"


def check_calls_in(source: str) -> list[str]:
    """The checks a cell's source calls, in order (helpers that prove nothing left out)."""
    calls = re.findall(r"\bchecks\.(\w+)\(", source)
    return [name for name in calls if name not in ("show_sockets", "wait_until_reachable")]
