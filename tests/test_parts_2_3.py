"""Parts 2 and 3 on a real localcf: the supply buildpack installs a placeholder sidecar, then downloads
the real config-server from the embedded S3 server. Each check passes on the working setup and fails,
with its hint, when the thing it checks is broken (wrong buildpack order, unreachable download URL,
a binary that does not match). Plus the buildpack writer's own checks and its cf-target path."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LocalCF, free_port, install_cf_stand_in
from test_blobstore import blobstore_processes, wait_until_gone

from sidecarlab import blobstore, checks, sidecar, supply_buildpack, tutorial
from sidecarlab.checks import CheckFailed
from sidecarlab.supply_buildpack import DOWNLOAD_SUPPLY, PLACEHOLDER_SUPPLY, BuildpackError
from sidecarlab.targets import CFTarget, CommandError, LocalTarget

PLACEHOLDER = {"name": "placeholder", "process_types": ["web"], "command": "./placeholder-sidecar"}
# The seed's bin/supply: curl -sSf alone, without saying which URL failed.
TERSE_SUPPLY = """#!/usr/bin/env bash
set -euo pipefail
curl -sSf "$(cat "$(dirname "$0")/../.downloadurl")" -o "$1/config-server"
chmod +x "$1/config-server"
"""


@pytest.fixture(scope="module")
def target(localcf: LocalCF) -> LocalTarget:
    return LocalTarget(home=localcf.home, echo=False)


@pytest.fixture(scope="module")
def s3_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The embedded S3 server for this module, stopped (and proven gone) at the end."""
    directory = tmp_path_factory.mktemp("s3") / "blobstore"
    blobstore.start(directory)
    try:
        yield directory
    finally:
        blobstore.stop(directory)
        assert wait_until_gone(directory) == [], "the embedded S3 server was left running"


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sidecar.build(out=tmp_path_factory.mktemp("sidecar") / "config-server")


@pytest.fixture(scope="module")
def upload(binary: Path, s3_dir: Path) -> blobstore.Upload:
    return blobstore.upload_sidecar(binary, "0.0.1", blobstore.validate(), state_dir=s3_dir, log=None)


class Apps:
    """Pushes copies of the sample app with a sidecar buildpack, and deletes them afterwards."""

    def __init__(self, target: LocalTarget, workdir: Path) -> None:
        self.target, self.workdir, self.pushed = target, workdir, []

    def push(self, supply: str, order: str = "first", downloadurl: str | None = None,
             sidecars: list[dict] | None = None, check: bool = True) -> str:
        name = f"bp-{uuid.uuid4().hex[:8]}"
        bp_dir = self.workdir / f"{name}-buildpack"
        supply_buildpack.write_buildpack(bp_dir, supply, downloadurl=downloadurl)
        app_dir = self.workdir / name
        manifest = tutorial.copy_fixture_app(app_dir, name)
        ref = supply_buildpack.install_buildpack(self.target, bp_dir, "unused", manifest)
        order_list = [ref, "python_buildpack"] if order == "first" else ["python_buildpack", ref]
        supply_buildpack.set_buildpacks(manifest, order_list, sidecars=sidecars)
        self.pushed.append(name)
        self.target.cf("push", name, "-f", str(manifest), "-p", str(app_dir), quiet=True, check=check)
        return name

    def cleanup(self) -> None:
        for name in self.pushed:
            self.target.cleanup(name)


@pytest.fixture
def apps(target: LocalTarget, tmp_path: Path) -> Iterator[Apps]:
    pushed = Apps(target, tmp_path)
    yield pushed
    pushed.cleanup()


@pytest.fixture(scope="module")
def part3_app(target: LocalTarget, upload: blobstore.Upload,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pushed = Apps(target, tmp_path_factory.mktemp("part3"))
    yield pushed.push(DOWNLOAD_SUPPLY, downloadurl=upload.url)
    pushed.cleanup()


# ------------------------------------------------------------------------------------- Part 2

def test_placeholder_buildpack_installs_a_sidecar_the_checks_can_see(target: LocalTarget, apps: Apps,
                                                                     capsys) -> None:
    name = apps.push(PLACEHOLDER_SUPPLY, sidecars=[PLACEHOLDER])
    capsys.readouterr()
    ran = checks.supply_ran(target, name)
    assert ran.passed and "-----> Sidecar buildpack: installing the placeholder sidecar" in ran.statement
    assert capsys.readouterr().out == ran.line() + "\n"
    logged = checks.sidecar_logged(target, name, sidecar="placeholder", text="placeholder sidecar: still here")
    assert "[APP/PROC/WEB/SIDECAR/PLACEHOLDER/0]" in logged.statement
    assert "running ./placeholder-sidecar" in logged.data[-1].message
    checks.app_answers(target, name)
    assert checks.sidecar_registered(target, name, sidecar="placeholder").data["origin"] == "user"
    # BUILD_DIR became app/; the buildpack's own deps dir (index 0 of 2) holds its config.yml.
    assert checks.droplet_holds(target, name, "app/placeholder-sidecar").data.mode == "-rwxr-xr-x"
    droplet = supply_buildpack.download_droplet(target, name, apps.workdir / "droplet")
    assert "deps/0/config.yml" in supply_buildpack.droplet_paths(droplet, "deps/0")

    with pytest.raises(CheckFailed) as info:
        checks.sidecar_logged(target, name, sidecar="config-server", deadline=0)
    assert "no [APP/PROC/WEB/SIDECAR/CONFIG-SERVER/0] lines" in info.value.seen
    with pytest.raises(CheckFailed, match="no such file; files under app/"):
        checks.droplet_holds(target, name, "app/config-server")


def test_buildpack_listed_after_python_fails_staging_and_the_checks_say_why(target: LocalTarget,
                                                                           apps: Apps) -> None:
    with pytest.raises(CommandError) as pushed:
        apps.push(PLACEHOLDER_SUPPLY, order="last", sidecars=[PLACEHOLDER])
    assert "BuildpackCompileFailed - App staging failed in the buildpack compile phase" in pushed.value.output
    name = apps.pushed[-1]

    with pytest.raises(CheckFailed) as info:
        checks.supply_ran(target, name)
    failed = info.value
    assert "the latest build is FAILED (BuildpackCompileFailed" in failed.seen
    assert "wrong order" in failed.hint and "python_buildpack last" in failed.hint

    result = checks.staging_failed(target, name, "BuildpackCompileFailed",
                                   ["the last buildpack is not compatible with multi-buildpack apps"])
    assert result.passed and "Warning: the last buildpack is not compatible" in result.statement
    with pytest.raises(CheckFailed, match="the error 'StagingError'"):
        checks.staging_failed(target, name, "StagingError")


def test_a_sidecar_supplied_into_deps_runs_from_the_path(target: LocalTarget, apps: Apps) -> None:
    supply = PLACEHOLDER_SUPPLY.replace("SIDECAR_DIR=$BUILD_DIR", "SIDECAR_DIR=$DEPS_DIR/$DEPS_IDX/bin")
    name = apps.push(supply, sidecars=[dict(PLACEHOLDER, command="placeholder-sidecar")])
    checks.droplet_holds(target, name, "deps/0/bin/placeholder-sidecar")
    checks.sidecar_logged(target, name, sidecar="placeholder", text="deps/0/bin/placeholder-sidecar")
    with pytest.raises(CheckFailed, match="files under app/: .*app.py"):
        checks.droplet_holds(target, name, "app/placeholder-sidecar")


# ------------------------------------------------------------------------------------- Part 3

def test_real_sidecar_is_downloaded_at_staging_and_matches_the_upload(target: LocalTarget, part3_app: str,
                                                                    upload: blobstore.Upload,
                                                                    binary: Path) -> None:
    assert f"downloading config-server from {upload.url}" in checks.supply_ran(target, part3_app).statement
    checks.config_from_sidecar(target, part3_app)
    checks.sidecar_registered(target, part3_app, sidecar="config-server", origin="user")
    found = checks.droplet_holds(target, part3_app, "app/config-server", sha256=upload.sha256).data
    assert found.sha256 == blobstore.sha256_of(binary) and found.size == binary.stat().st_size


def test_a_binary_that_does_not_match_the_upload_fails_the_droplet_check(target: LocalTarget, part3_app: str,
                                                                         binary: Path, s3_dir: Path,
                                                                         tmp_path: Path) -> None:
    # Another binary uploaded after staging (here as another version): the droplet still holds the old one.
    other = tmp_path / "config-server"
    other.write_bytes(binary.read_bytes() + b"\0")
    newer = blobstore.upload_sidecar(other, "0.0.2", blobstore.validate(), state_dir=s3_dir, log=None)
    with pytest.raises(CheckFailed) as info:
        checks.droplet_holds(target, part3_app, "app/config-server", sha256=newer.sha256)
    failed = info.value
    assert failed.expected == f"app/config-server with SHA-256 {newer.sha256}"
    assert blobstore.sha256_of(binary) in failed.seen
    assert "cf restage" in failed.hint and ".downloadurl" in failed.hint


def test_download_check_fails_when_staging_succeeded(target: LocalTarget, part3_app: str,
                                                     upload: blobstore.Upload) -> None:
    with pytest.raises(CheckFailed, match="the latest build is STAGED") as info:
        checks.download_failed(target, part3_app, upload.url)
    assert "--no-check" in info.value.hint


def test_unreachable_download_urls_fail_staging_with_the_url_and_the_status(target: LocalTarget, apps: Apps,
                                                                            s3_dir: Path) -> None:
    missing = blobstore.public_url(blobstore.validate(), blobstore.sidecar_key("9.9.9"), s3_dir)
    name = apps.push(DOWNLOAD_SUPPLY, downloadurl=missing, check=False)
    result = checks.download_failed(target, name, missing, status=404)
    assert f"Could not download {missing}: HTTP 404" in result.statement
    assert "StagingError - Staging error: staging failed" in result.statement
    with pytest.raises(CheckFailed) as info:
        checks.supply_ran(target, name)
    assert "could not download the sidecar" in info.value.hint and ".downloadurl" in info.value.hint
    with pytest.raises(CheckFailed, match="HTTP 403"):
        checks.download_failed(target, name, missing, status=403)

    nothing_there = f"http://127.0.0.1:{free_port()}/sidecar-buildpack/config-server"
    name = apps.push(DOWNLOAD_SUPPLY, downloadurl=nothing_there, check=False)
    assert "HTTP 000" in checks.download_failed(target, name, nothing_there, status="000").statement


def test_a_buildpack_that_does_not_say_which_download_failed_fails_the_check(target: LocalTarget, apps: Apps,
                                                                             s3_dir: Path) -> None:
    missing = blobstore.public_url(blobstore.validate(), blobstore.sidecar_key("8.8.8"), s3_dir)
    name = apps.push(TERSE_SUPPLY, downloadurl=missing, check=False)
    with pytest.raises(CheckFailed) as info:
        checks.download_failed(target, name, missing)
    assert info.value.expected == f"an [STG] line Could not download {missing}: HTTP <code>"
    assert "curl: (22)" in info.value.seen
    assert "-w '%{http_code}'" in info.value.hint


def test_the_module_runs_exactly_one_embedded_server(s3_dir: Path) -> None:
    # The module fixture stops it at the end and asserts that no process is left.
    assert len(blobstore_processes(s3_dir)) == 1


# --------------------------------------------------------------------- the buildpack writer

def test_finish_buildpack_makes_scripts_executable_and_lists_them(tmp_path: Path) -> None:
    files = supply_buildpack.write_buildpack(tmp_path / "bp", PLACEHOLDER_SUPPLY, downloadurl="http://x/y")
    assert dict(files.files) == {".downloadurl": "-rw-r--r--", "bin/detect": "-rwxr-xr-x",
                                 "bin/supply": "-rwxr-xr-x"}
    assert "bin/supply" in str(files)


@pytest.mark.parametrize(("script", "message"), [
    ("echo no shebang\n", "does not start with `#!`"),
    ("#!/usr/bin/env bash\r\necho hi\r\n", "Windows line endings"),
    ("#!/usr/bin/env bash\nif true; then\n  echo unfinished\n", r"bin/supply is not valid bash:\n.*line \d+"),
])
def test_finish_buildpack_refuses_broken_scripts_before_any_push(tmp_path: Path, script: str,
                                                                  message: str) -> None:
    with pytest.raises(BuildpackError, match=message):
        supply_buildpack.write_buildpack(tmp_path / "bp", script)


def test_finish_buildpack_needs_bin_supply(tmp_path: Path) -> None:
    with pytest.raises(BuildpackError, match="a supply buildpack needs bin/supply"):
        supply_buildpack.finish_buildpack(supply_buildpack.new_buildpack(tmp_path / "bp"))


def test_local_target_names_the_buildpack_by_its_path_from_the_manifest(tmp_path: Path) -> None:
    bp = supply_buildpack.new_buildpack(tmp_path / "work" / "bp")
    (bp / "bin" / "supply").write_text(PLACEHOLDER_SUPPLY)
    manifest = tmp_path / "work" / "app" / "manifest.yml"
    manifest.parent.mkdir()
    assert supply_buildpack.install_buildpack(LocalTarget(echo=False), bp, "x", manifest) == "../bp"


# The cf target, against a recorded stand-in `cf` (no real foundation is reachable here): the
# buildpack becomes an admin buildpack, created once and updated after.
STAND_IN = r'''#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["CF_STAND_IN_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
state = os.environ["CF_STAND_IN_STATE"]
if args[0] == "curl" and args[1].startswith("/v3/buildpacks"):
    exists = os.path.exists(state)
    found = [{{"guid": "bp-guid-1", "name": "sidecar_buildpack"}}] if exists else []
    print(json.dumps({{"pagination": {{"next": None}}, "resources": found}}))
elif args[0] == "create-buildpack":
    open(state, "w").close(); print("OK")
elif args[0] == "update-buildpack" and os.environ.get("CF_STAND_IN_NOT_ADMIN"):
    print("You are not authorized to perform the requested action"); sys.exit(1)
else:
    print("OK")
'''


def test_cf_target_creates_then_updates_an_admin_buildpack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = install_cf_stand_in(tmp_path, monkeypatch, STAND_IN.format(python=sys.executable), user="admin")
    monkeypatch.setenv("CF_STAND_IN_STATE", str(tmp_path / "created"))
    monkeypatch.setenv("SIDECARLAB_WORK", str(tmp_path / "work"))
    cf = CFTarget("https://api.example.com", "org", "space", echo=False)
    bp = supply_buildpack.write_buildpack(tmp_path / "bp", PLACEHOLDER_SUPPLY).directory

    assert supply_buildpack.install_buildpack(cf, bp, "sidecar_buildpack", tmp_path / "manifest.yml") == \
        "sidecar_buildpack"
    assert supply_buildpack.install_buildpack(cf, bp, "sidecar_buildpack", tmp_path / "manifest.yml") == \
        "sidecar_buildpack"
    # (before the clean-up: a buildpack this learner did not create would not be updated at all)
    monkeypatch.setenv("CF_STAND_IN_NOT_ADMIN", "1")
    with pytest.raises(BuildpackError, match="need the Cloud Foundry admin role"):
        supply_buildpack.install_buildpack(cf, bp, "sidecar_buildpack", tmp_path / "manifest.yml")
    monkeypatch.delenv("CF_STAND_IN_NOT_ADMIN")
    supply_buildpack.remove_buildpack(cf, "sidecar_buildpack")
    login = ("version", "api", "auth", "target", "curl")
    verbs = [c for c in map(json.loads, log.read_text().splitlines()) if c[0] not in login]
    assert verbs == [["create-buildpack", "sidecar_buildpack", str(bp), "999"],
                     ["update-buildpack", "sidecar_buildpack", "-p", str(bp)],
                     ["update-buildpack", "sidecar_buildpack", "-p", str(bp)],
                     ["delete-buildpack", "sidecar_buildpack", "-f"]]


def test_the_droplet_file_is_found_by_the_cf_cli_s_name_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECARLAB_WORK", str(tmp_path / "work"))
    local, cf = LocalTarget(echo=False), CFTarget("https://api.example.com", "o", "s", echo=False)
    (tmp_path / "droplet.tgz").write_bytes(b"")  # what localcf wrote before it used cf's name
    assert local._droplets_in(tmp_path) == [tmp_path / "droplet.tgz"]
    assert cf._droplets_in(tmp_path) == []
    (tmp_path / "droplet_5c3a4f0e.tgz").write_bytes(b"")
    assert local._droplets_in(tmp_path) == cf._droplets_in(tmp_path) == [tmp_path / "droplet_5c3a4f0e.tgz"]
