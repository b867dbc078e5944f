"""Fetching buildpacks (directory, zip, http(s) URL) safely, and zipping them."""

from __future__ import annotations

import functools
import http.server
import os
import stat
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcf import buildpacks
from localcf.buildpacks import BuildpackError, fetch, is_url, zip_dir

REPO = Path(__file__).resolve().parents[1]
PYTHON_BP = REPO / "src" / "localcf" / "system_buildpacks" / "python_buildpack"
LEGACY = REPO / "fixtures" / "buildpacks" / "legacy"


def make_zip(path: Path, entries: list[tuple[str, str, int]]) -> Path:
    """A zip of (name, content, st_mode) entries; S_IFLNK modes make symlinks (content = target)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, content, mode in entries:
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = mode << 16
            zf.writestr(info, content)
    return path


FILE, EXEC, LINK = stat.S_IFREG | 0o644, stat.S_IFREG | 0o755, stat.S_IFLNK | 0o777
GOOD = [("bin/detect", "#!/bin/sh\necho ok\n", EXEC), ("README", "hi\n", FILE)]


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A directory served over HTTP on 127.0.0.1 (port 0): (base URL, directory)."""
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_is_url() -> None:
    assert is_url("https://github.com/org/bp/archive/main.zip")
    assert is_url("http://127.0.0.1:8080/bp.zip")
    assert not is_url("python_buildpack")
    assert not is_url("/some/dir")
    assert not is_url("file:///some/bp.zip")
    assert not is_url("git@github.com:org/bp.git")


def test_fetch_directory_copies_it(tmp_path: Path) -> None:
    root = fetch(str(LEGACY), tmp_path / "dest")
    assert root == tmp_path / "dest"
    assert os.access(root / "bin" / "compile", os.X_OK)
    assert (root / "bin" / "release").read_text() == (LEGACY / "bin" / "release").read_text()


def test_zip_dir_then_fetch_keeps_modes_and_symlinks(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "bin").mkdir()
    (src / "bin" / "supply").write_text("#!/bin/sh\nexit 0\n")
    (src / "bin" / "supply").chmod(0o755)
    (src / "lib").mkdir()
    (src / "lib" / "data.txt").write_text("data\n")
    (src / "lib" / "data.txt").chmod(0o600)
    (src / "bin" / "finalize").symlink_to("supply")
    (src / "lib-link").symlink_to("lib")
    archive = zip_dir(src, tmp_path / "out" / "bp.zip")
    root = fetch(str(archive), tmp_path / "dest")
    assert stat.S_IMODE((root / "bin" / "supply").stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "lib" / "data.txt").stat().st_mode) == 0o600
    assert os.readlink(root / "bin" / "finalize") == "supply"
    assert os.readlink(root / "lib-link") == "lib"
    assert (root / "lib-link" / "data.txt").read_text() == "data\n"


def test_system_buildpack_round_trips_through_a_zip(tmp_path: Path) -> None:
    archive = zip_dir(PYTHON_BP, tmp_path / "python_buildpack.zip")
    with zipfile.ZipFile(archive) as zf:
        assert "bin/supply" in zf.namelist()  # paths relative to the buildpack, no top folder
    root = fetch(str(archive), tmp_path / "dest")
    for script in ("detect", "supply", "finalize", "release"):
        assert os.access(root / "bin" / script, os.X_OK)
        assert (root / "bin" / script).read_bytes() == (PYTHON_BP / "bin" / script).read_bytes()


def test_fetch_zip_with_one_top_folder_returns_it(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "main.zip", [(f"bp-main/{n}", c, m) for n, c, m in GOOD])
    root = fetch(str(archive), tmp_path / "dest")
    assert root == tmp_path / "dest" / "bp-main"
    assert os.access(root / "bin" / "detect", os.X_OK)


def test_zip_without_unix_modes_still_has_executable_scripts(tmp_path: Path) -> None:
    archive = tmp_path / "windows.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("bin/detect", "lib/helper.sh"):
            info = zipfile.ZipInfo(name)
            info.create_system = 0  # made on Windows: external_attr holds no Unix mode
            zf.writestr(info, "#!/bin/sh\n")
    root = fetch(str(archive), tmp_path / "dest")
    assert os.access(root / "bin" / "detect", os.X_OK)
    assert not os.access(root / "lib" / "helper.sh", os.X_OK)


def test_malformed_buildpack(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "nobin.zip", [("lib/x", "x", FILE), ("README", "r", FILE)])
    with pytest.raises(BuildpackError) as e:
        fetch(str(archive), tmp_path / "dest")
    assert str(e.value) == f"malformed buildpack does not contain a /bin dir: {archive}"
    assert not (tmp_path / "dest").exists()  # cleaned up


def test_not_a_zip_and_missing_source(tmp_path: Path) -> None:
    text = tmp_path / "bp.tgz"
    text.write_text("not a zip")
    with pytest.raises(BuildpackError, match="is neither a directory nor a zip file"):
        fetch(str(text), tmp_path / "a")
    with pytest.raises(BuildpackError, match="no such directory or zip file.*http"):
        fetch(str(tmp_path / "nope"), tmp_path / "b")


def test_dest_must_be_empty(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "old").write_text("old")
    with pytest.raises(BuildpackError, match="is not empty"):
        fetch(str(LEGACY), dest)
    assert (dest / "old").read_text() == "old"


def test_system_dir_resolves_a_bare_name(tmp_path: Path) -> None:
    system = tmp_path / "system"
    system.mkdir()
    make_zip(system / "mybp.zip", GOOD)
    root = fetch("mybp", tmp_path / "dest", system_dir=system)
    assert (root / "bin" / "detect").exists()
    assert buildpacks.system_buildpacks_dir().joinpath("python_buildpack", "bin", "supply").exists()


def test_fetch_url(tmp_path: Path, http_dir: tuple[str, Path]) -> None:
    base, served = http_dir
    make_zip(served / "bp.zip", [(f"top/{n}", c, m) for n, c, m in GOOD])
    root = fetch(f"{base}/bp.zip", tmp_path / "dest")
    assert root == tmp_path / "dest" / "top"
    assert (root / "bin" / "detect").read_text() == "#!/bin/sh\necho ok\n"
    assert os.access(root / "bin" / "detect", os.X_OK)
    assert not list(tmp_path.glob(".download-*"))  # the download is not left behind


def test_fetch_url_errors(tmp_path: Path, http_dir: tuple[str, Path]) -> None:
    base, served = http_dir
    (served / "page.html").write_text("<html></html>")
    host = base.removeprefix("http://")
    with pytest.raises(BuildpackError) as e:
        fetch(f"http://user:s3cret@{host}/missing.zip", tmp_path / "a")
    assert "could not download buildpack" in str(e.value)
    assert "HTTP 404" in str(e.value)
    assert "s3cret" not in str(e.value) and "-redacted-" in str(e.value)
    with pytest.raises(BuildpackError, match="is not a zip file"):
        fetch(f"{base}/page.html", tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_unreachable_url(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BuildpackError, match=f"could not download buildpack http://127.0.0.1:{port}/"):
        fetch(f"http://127.0.0.1:{port}/bp.zip", tmp_path / "dest")


# -- hostile zips -----------------------------------------------------------------------------

def _outside_untouched(tmp_path: Path, before: set[str]) -> None:
    assert {p.name for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("entries, entry, why", [
    ([("../evil.sh", "boom", EXEC)], "../evil.sh", "climbs out of the buildpack with '..'"),
    ([("bin/../../evil.sh", "boom", EXEC)], "bin/../../evil.sh", "climbs out"),
    ([("/tmp/localcf-evil-absolute.sh", "boom", EXEC)], "/tmp/localcf-evil-absolute.sh",
     "has an absolute path"),
    ([("bin/link", "../../evil-target", LINK)], "bin/link",
     "is a symlink to '../../evil-target', outside the buildpack"),
    ([("bin/abs-link", "/etc/passwd", LINK)], "bin/abs-link",
     "is a symlink to '/etc/passwd', outside the buildpack"),
])
def test_hostile_entries_are_refused_before_writing(tmp_path: Path, entries: list,
                                                    entry: str, why: str) -> None:
    archive = make_zip(tmp_path / "evil.zip", GOOD + entries)
    before = {p.name for p in tmp_path.iterdir()}
    dest = tmp_path / "dest"
    with pytest.raises(BuildpackError) as e:
        fetch(str(archive), dest)
    message = str(e.value)
    assert f"entry {entry!r}" in message and str(archive) in message and why in message
    assert not dest.exists()
    _outside_untouched(tmp_path, before)
    assert not Path("/tmp/localcf-evil-absolute.sh").exists()


def test_symlink_chain_cannot_lead_outside(tmp_path: Path) -> None:
    # Each link looks harmless alone; together x -> y/z/../.. with y -> . is the parent of dest.
    archive = make_zip(tmp_path / "chain.zip", GOOD + [
        ("x", "y/z/../..", LINK), ("y", ".", LINK), ("x/evil.txt", "boom", FILE)])
    before = {p.name for p in tmp_path.iterdir()}
    with pytest.raises(BuildpackError) as e:
        fetch(str(archive), tmp_path / "dest")
    assert "'x/evil.txt' would be written outside the buildpack" in str(e.value)
    assert not (tmp_path / "evil.txt").exists()
    _outside_untouched(tmp_path, before)


def test_symlink_chain_alone_is_refused(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "chain.zip", GOOD + [("x", "y/z/../..", LINK), ("y", ".", LINK)])
    with pytest.raises(BuildpackError, match="'x' is a symlink to .*leads outside"):
        fetch(str(archive), tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_duplicate_entry_does_not_write_through_a_symlink(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "dup.zip", GOOD + [("lib/a", "bin/detect", LINK)])
    with zipfile.ZipFile(archive, "a") as zf:
        info = zipfile.ZipInfo("lib/a")
        info.create_system, info.external_attr = 3, FILE << 16
        zf.writestr(info, "overwrite via link")
    with pytest.raises(BuildpackError, match="'lib/a' appears twice"):
        fetch(str(archive), tmp_path / "dest")
