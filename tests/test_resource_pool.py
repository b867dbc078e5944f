"""The resource pool behind `POST /v3/resource_matches`: what is pooled, matched and put back."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from localcf import resource_pool as rp

BIG = bytes(range(256)) * 400  # 100 KiB: pooled (64 KiB and more)
SMALL = b"print('hi')\n"


def package(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        info = zipfile.ZipInfo("bin/tool")
        info.external_attr = 0o100755 << 16
        z.writestr(info, BIG)
        z.writestr("app.py", SMALL)
    return path


def entry(data: bytes, path: str, mode: str = "644") -> dict:
    return {"checksum": {"value": hashlib.sha1(data).hexdigest()}, "size_in_bytes": len(data), "path": path,
            "mode": mode}


def test_only_large_files_are_pooled_and_matched(tmp_path: Path) -> None:
    blobs = tmp_path / "blobs"
    assert rp.matches(blobs, [entry(BIG, "bin/tool")]) == []
    assert rp.add_from_zip(blobs, package(tmp_path / "p.zip")) == 1
    assert rp.add_from_zip(blobs, tmp_path / "p.zip") == 0, "a file is pooled once"
    wanted = [entry(BIG, "bin/tool", "755"), entry(SMALL, "app.py"), {"checksum": {"value": "x"}}, "junk"]
    assert rp.matches(blobs, wanted) == [wanted[0]]
    wrong_size = dict(entry(BIG, "bin/tool"), size_in_bytes=len(BIG) - 1)
    assert rp.matches(blobs, [wrong_size]) == []


def test_assemble_puts_pooled_files_back_with_their_mode(tmp_path: Path) -> None:
    blobs = tmp_path / "blobs"
    rp.add_from_zip(blobs, package(tmp_path / "p.zip"))
    bits = io.BytesIO()
    with zipfile.ZipFile(bits, "w") as z:
        z.writestr("app.py", SMALL)
    data = rp.assemble(blobs, bits.getvalue(), [entry(BIG, "vendor/tool", "755")])
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.read("app.py") == SMALL and z.read("vendor/tool") == BIG
        assert (z.getinfo("vendor/tool").external_attr >> 16) & 0o777 == 0o755


@pytest.mark.parametrize("bad, says", [
    (entry(b"y" * 70000, "missing"), "is not in the resource pool"),
    (entry(BIG, "../escape"), "needs a relative path"),
    (entry(BIG, "/abs"), "needs a relative path"),
    (entry(BIG, "tool", "rwx"), "is not an octal file mode"),
    ("not-an-object", "is not an object"),
])
def test_assemble_refuses_what_it_cannot_honour(tmp_path: Path, bad: object, says: str) -> None:
    blobs = tmp_path / "blobs"
    rp.add_from_zip(blobs, package(tmp_path / "p.zip"))
    with pytest.raises(rp.ResourceError, match=says):
        rp.assemble(blobs, b"", [bad])
