"""A full disk under the state dir: refused uploads, no partial blobs, staging that names the cause,
and a daemon that still starts and deletes. The state dir lives on a small tmpfs of its own."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest
import requests
from conftest import LocalCF
from test_platform_staging import write_app, write_bp

SIZE_MB = 24


@pytest.fixture
def small_disk(tmp_path: Path):
    """A LocalCF whose state dir is on a tmpfs of SIZE_MB (needs root to mount; skipped otherwise)."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m", "tmpfs", str(mnt)], check=False,
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    cf = LocalCF(mnt / "home")
    try:
        cf("start")
        yield cf, mnt
    finally:
        cf("stop", check=False)
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


def fill(path: Path) -> None:
    """Write zeros to `path` until the disk is full, to the very byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def api(cf: LocalCF) -> tuple[str, dict[str, str]]:
    c = cf.client()
    return c.base_url, {"Authorization": f"bearer {c.state.token()}"}


def partial_blobs(home: Path) -> list[Path]:
    return [p for d in ("packages", "droplets", "buildpacks") for p in (home / "blobs" / d).glob("*.tmp")]


def test_an_upload_that_does_not_fit_is_refused_and_leaves_nothing(small_disk, tmp_path: Path) -> None:
    cf, mnt = small_disk
    app = write_app(tmp_path, "fits", "applications: [{name: fits, no-route: true}]\n")
    cf("create-app", "fits", cwd=app)
    base, headers = api(cf)
    guid = cf("app", "fits", "--guid").out.strip()
    pkg = requests.post(f"{base}/v3/packages", headers=headers, timeout=10,
                        json={"type": "bits", "relationships": {"app": {"data": {"guid": guid}}}}).json()
    free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
    r = requests.post(f"{base}/v3/packages/{pkg['guid']}/upload", headers=headers, timeout=60,
                      data=b"x" * (free + (2 << 20)))
    assert r.status_code == 507, r.text
    error = r.json()["errors"][0]
    assert error["title"] == "CF-BlobstoreError"
    assert error["detail"].startswith("Not enough space to store the package: it needs "), error
    assert "free" in error["detail"] and "localcf delete" in error["detail"]
    assert partial_blobs(cf.home) == []
    # the package is still waiting for bits, and a small upload still works
    got = requests.get(f"{base}/v3/packages/{pkg['guid']}", headers=headers, timeout=10).json()
    assert got["state"] == "AWAITING_UPLOAD"


def test_partial_blobs_are_removed_when_the_daemon_starts(small_disk) -> None:
    cf, _mnt = small_disk
    cf("stop")
    # what a daemon killed in the middle of an upload leaves: a partial blob, here filling the disk
    leftover = cf.home / "blobs" / "packages" / "app-guid-package-guid.tmp"
    fill(leftover)
    assert leftover.stat().st_size > 0
    res = cf("start", check=False)
    assert res.code == 0, res.text
    assert not leftover.exists()
    assert "fits" not in cf("apps").out  # the daemon answers


def test_delete_works_on_a_full_disk(small_disk, tmp_path: Path) -> None:
    cf, mnt = small_disk
    bp = write_bp(tmp_path / "bps", "bin-bp", supply="true\n", finalize="true\n",
                  release="echo 'default_process_types: {web: sleep 1000}'\n")
    app = write_app(tmp_path, "full", f"applications: [{{name: full, no-route: true, buildpacks: [{bp}]}}]\n",
                    {"payload.bin": "y" * (2 << 20)})
    cf("push", "--no-start", cwd=app)
    fill(mnt / "filler")
    res = cf("delete", "full", "-f", check=False)
    assert res.code == 0, res.text
    assert "full" not in cf("apps").out
    assert list((cf.home / "blobs" / "packages").iterdir()) == []


def test_staging_out_of_space_names_the_cause(small_disk, tmp_path: Path) -> None:
    cf, _mnt = small_disk
    bp = write_bp(tmp_path / "bps", "hog", supply="true\n", finalize=textwrap.dedent(f"""\
        echo "filling the disk"
        dd if=/dev/zero of="$1/hog" bs=1M count={SIZE_MB * 2}
        """), release="echo 'default_process_types: {web: sleep 1000}'\n")
    app = write_app(tmp_path, "hog", f"applications: [{{name: hog, no-route: true, buildpacks: [{bp}]}}]\n")
    res = cf("push", "--no-start", cwd=app, check=False)
    assert res.code == 1, res.text
    assert "No space left on device" in res.out
    assert "Error staging application: StagingError - Staging error: no space left on device: " in res.err, res.err
    assert "free some space" in res.err
    # the staging dir is gone and the daemon still works
    assert list((cf.home / "staging").iterdir()) == []
    assert partial_blobs(cf.home) == []
    assert cf("delete", "hog", "-f").code == 0


def test_the_daemon_starts_on_a_disk_filled_by_something_else(small_disk, tmp_path: Path) -> None:
    cf, mnt = small_disk
    app = write_app(tmp_path, "kept", "applications: [{name: kept, no-route: true}]\n")
    cf("create-app", "kept", cwd=app)
    cf("stop")
    fill(mnt / "filler")  # not ours to remove: the store's reserve is what makes room
    res = cf("start", check=False)
    assert res.code == 0, res.text
    assert "kept" in cf("apps").out
    assert cf("delete", "kept", "-f").code == 0
