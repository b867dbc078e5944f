"""Part 4: its checks fail when they should, on real pushes to localcf (a cached zip whose manifest's
sha256 does not match its file, an uncached package staged air-gapped, a buildpack without launch.yml,
a foundation that is not air-gapped), the air-gapped checks are skipped in runtime mode `process`,
a learner who is not an admin is stopped before anything is pushed, and the notebook runs green
headless, binds the staging security group back even when a check fails, and leaves nothing behind."""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
import yaml
from conftest import LocalCF, install_cf_stand_in
from nbformat.v4 import new_code_cell
from test_blobstore import wait_until_gone
from test_buildpack_product import (  # noqa: F401
    Platform,
    Zips,
    air_gapped,
    cached_zip,
    uncached_zip,
    zips,
)
from test_packager import archive_name, binary, dep_server  # noqa: F401

from sidecarlab import checks, part4, tutorial
from sidecarlab.checks import SKIPPED_MARK, CheckFailed
from sidecarlab.targets import CFTarget, LocalTarget

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NOTEBOOK_4 = NOTEBOOKS / "04-system-and-cached-buildpack.ipynb"
SIDECARLAB = Path(sys.executable).parent / "sidecarlab"
# Each claim of TUTORIAL.md's Part 4 (and the issue's list), plus the exercises' checks.
PART4_CHECKS = 13
# The checks that need staging air-gapped; localcf in runtime mode `process` skips them.
AIR_GAPPED_CHECKS = 2


def bound_for_staging(cf: LocalCF) -> list[str]:
    out = cf("staging-security-groups").out
    return [line.strip() for line in out.splitlines()[2:] if line.strip() and line.strip() != "name"]


def run_part4(localcf: LocalCF, tmp_path: Path, *params: str, notebooks: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, LOCALCF_HOME=str(localcf.home), SIDECARLAB_WORK=str(tmp_path / "work"),
               SIDECARLAB_HOME=str(tmp_path / "home"))
    argv = [str(SIDECARLAB), "run", "04", "--out", str(tmp_path / "out"), "--no-progress", *params]
    if notebooks is not None:
        argv += ["--notebooks", str(notebooks)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)


def two_free_ports() -> int:
    """A port P with P and P + 1 free, below the ephemeral range, where localcf's process mode picks
    the apps' own ports (bound to port 0), so neither sidecar can meet an app's port."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]) \
        if Path("/proc/sys/net/ipv4/ip_local_port_range").is_file() else 32768
    for port in random.sample(range(20000, min(low, 30000) - 1), 200):
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise AssertionError("no two consecutive free ports below the ephemeral range")


def outputs_text(path: Path) -> str:
    executed = nbformat.read(str(path), as_version=4)
    return "\n".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", [])
                     if o.get("output_type") == "stream")


# ----------------------------------------------------------------------------------- the notebook

@pytest.mark.timeout(900)  # a guard against hanging, not a performance claim
def test_part_4_runs_green_headless_and_leaves_nothing_behind(localcf: LocalCF, tmp_path: Path) -> None:
    app, buildpack = f"nb4-{uuid.uuid4().hex[:8]}", f"nb4-bp-{uuid.uuid4().hex[:6]}"
    groups_before = bound_for_staging(localcf)
    proc = run_part4(localcf, tmp_path, "-p", "app_name", app, "-p", "system_buildpack_name", buildpack)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert "[1/1] 04-system-and-cached-buildpack (target local" in proc.stdout

    (result,) = json.loads((tmp_path / "out" / "summary.json").read_text())["notebooks"]
    assert len(result["passed_checks"]) + len(result["skipped_checks"]) == PART4_CHECKS
    if "runtime: namespaces" in localcf("status").out:
        assert result["skipped_checks"] == []
    else:
        assert len(result["skipped_checks"]) == AIR_GAPPED_CHECKS
        assert all("staging cannot be air-gapped" in line for line in result["skipped_checks"])

    text = outputs_text(tmp_path / "out" / "notebooks" / NOTEBOOK_4.name)
    # The real commands: cf verbs through %cf, and what the kit did for the learner.
    for shown in (f"$ cf create-buildpack {buildpack} ", "$ cf unbind-staging-security-group public_networks",
                  "$ cf bind-staging-security-group public_networks", f"$ cf update-buildpack {buildpack} -p ",
                  "$ aws s3 cp config-server-v0.0.1-linux-", "$ buildpack-packager build -stack cflinuxfs4 -cached",
                  "go build -trimpath", f"$ cf push {app}-2 -f "):
        assert shown in text, shown
    assert "       Copy [" in text and "**ERROR** dependency sha256 mismatch: expected sha256 " in text
    assert "**ERROR** could not download: " in text

    # Cleaned up: the apps, the system buildpack, the work folder, the S3 server; the groups as before.
    apps = localcf("apps").out
    assert app not in apps and f"{app}-2" not in apps
    assert buildpack not in localcf("buildpacks").out
    assert bound_for_staging(localcf) == groups_before
    assert not (tmp_path / "work" / "part4").exists()
    assert wait_until_gone(tmp_path / "home" / "blobstore") == []


@pytest.mark.timeout(600)
def test_part_4_runs_green_in_process_mode_with_only_the_air_gapped_checks_skipped(tmp_path: Path) -> None:
    cf = LocalCF(tmp_path / "localcf-process")
    cf.env["LOCALCF_RUNTIME"] = "process"
    cf("start")
    try:
        # Apps share this machine's network in process mode: sidecar ports nothing else holds.
        proc = run_part4(cf, tmp_path, "-p", "config_server_port", str(two_free_ports()))
        assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
        (result,) = json.loads((tmp_path / "out" / "summary.json").read_text())["notebooks"]
        assert len(result["passed_checks"]) == PART4_CHECKS - AIR_GAPPED_CHECKS
        assert len(result["skipped_checks"]) == AIR_GAPPED_CHECKS
        assert all("staging cannot be air-gapped here: localcf runs in runtime mode `process`" in line
                   for line in result["skipped_checks"])
        assert "public_networks" in bound_for_staging(cf)
    finally:
        cf("stop", check=False)


def notebook_copy_with(tmp_path: Path, after: str, source: str) -> Path:
    """A copy of Part 4 with one more code cell right after the first cell containing `after`."""
    notebooks = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS / "params", notebooks / "params")
    nb = nbformat.read(str(NOTEBOOK_4), as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if after in c.source)
    nb.cells.insert(index + 1, new_code_cell(source))
    nbformat.write(nb, str(notebooks / NOTEBOOK_4.name))
    return notebooks


@pytest.mark.timeout(600)
def test_a_failing_check_while_air_gapped_binds_the_staging_group_back(localcf: LocalCF, tmp_path: Path) -> None:
    app, buildpack = f"nb4f-{uuid.uuid4().hex[:8]}", f"nb4f-bp-{uuid.uuid4().hex[:6]}"
    # Right after the air-gapped push with the cached zip, claim that it downloaded: a real check, failing.
    notebooks = notebook_copy_with(tmp_path, "%cf push {app_name} -f {manifest_path} -p {app_path}",
                                   "part4.dependency_downloaded(cf_target, app_name, dependency.uri)")
    try:
        proc = run_part4(localcf, tmp_path, "-p", "app_name", app, "-p", "system_buildpack_name", buildpack,
                         notebooks=notebooks)
        assert proc.returncode == 1
        assert "CheckFailed" in proc.stderr and "Download [" in proc.stderr
        text = outputs_text(tmp_path / "out" / "notebooks" / NOTEBOOK_4.name)
        assert "$ cf unbind-staging-security-group public_networks" in text
        assert "The cell failed while staging was air-gapped: binding public_networks back for staging" in text
        assert "public_networks" in bound_for_staging(localcf)
        assert not (tmp_path / "work" / "part4" / "unbound-staging-groups.json").exists()
        assert wait_until_gone(tmp_path / "home" / "blobstore") == []
    finally:
        localcf("delete", app, "-f", "-r", check=False)
        localcf("delete-buildpack", buildpack, "-f", check=False)
        localcf("bind-staging-security-group", "public_networks", check=False)


def test_a_killed_kernel_s_air_gap_is_undone_by_the_next_run(localcf: LocalCF, tmp_path: Path) -> None:
    marker = tmp_path / "unbound-staging-groups.json"
    # A stand-in for a notebook kernel: it makes the guard, unbinds, and is killed before any clean-up.
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from sidecarlab import part4\n"
        "from sidecarlab.targets import LocalTarget\n"
        "t = LocalTarget(home=Path(sys.argv[1]), echo=False)\n"
        "part4.StagingGroupsGuard(t, marker=Path(sys.argv[2]))\n"
        "t.cf('unbind-staging-security-group', 'public_networks', quiet=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    try:
        proc = subprocess.run([sys.executable, "-c", script, str(localcf.home), str(marker)], timeout=120, check=False)
        assert proc.returncode == -signal.SIGKILL
        assert "public_networks" not in bound_for_staging(localcf)
        assert json.loads(marker.read_text())["groups"] == ["public_networks"]

        target = LocalTarget(home=localcf.home, echo=False)
        assert part4.StagingGroupsGuard.recover(target, marker, log=lambda _line: None) == ["public_networks"]
        assert "public_networks" in bound_for_staging(localcf)
        assert not marker.exists()
        assert part4.StagingGroupsGuard.recover(target, marker) == []
    finally:
        localcf("bind-staging-security-group", "public_networks", check=False)


def test_a_guard_made_again_before_the_clean_up_still_binds_the_group_back(localcf: LocalCF, tmp_path: Path) -> None:
    marker = tmp_path / "unbound-staging-groups.json"
    target = LocalTarget(home=localcf.home, echo=False)
    first = part4.StagingGroupsGuard(target, marker=marker)
    try:
        target.cf("unbind-staging-security-group", "public_networks", quiet=True)
        # The guard-and-unbind cell run a second time: the group is already unbound.
        again = part4.StagingGroupsGuard(target, marker=marker)
        assert first.unbound == again.unbound == ["public_networks"]
        again.bind_back(echo=False)
        assert "public_networks" in bound_for_staging(localcf) and not marker.exists()
    finally:
        first.done()
        localcf("bind-staging-security-group", "public_networks", check=False)


def test_the_notebook_has_parameters_exercises_an_early_admin_check_and_cleanup(tmp_path: Path) -> None:
    nb = nbformat.read(str(NOTEBOOK_4), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    for name in ("target", "app_name", "config_server_port", "cf_api", "cf_org", "cf_space", "system_buildpack_name",
                 "stack", "s3_endpoint", "s3_bucket"):
        assert f"\n{name} = " in "\n" + code[0].source, name
    sources = [c.source for c in code]
    admin = next(i for i, s in enumerate(sources) if "part4.require_admin(cf_target)" in s)
    first_change = next(i for i, s in enumerate(sources) if "%cf " in s or "build_and_upload_dependency" in s)
    assert admin < first_change, "the admin check comes before anything is built, pushed or deleted"
    unbind = next(i for i, s in enumerate(sources) if "%cf unbind-staging-security-group public_networks" in s)
    assert "StagingGroupsGuard(" in sources[unbind].split("%cf unbind")[0], "the guard is made before unbinding"

    # Exercises are Cloud Foundry: a manifest and cf commands, no kit helpers in the solutions.
    solutions = [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    assert len(solutions) >= 3
    for cell in solutions:
        lines = [line for line in cell.source.splitlines() if line.strip()]
        assert lines[0].startswith("%%writefile") or all(line.startswith("%cf ") for line in lines), cell.source
    # After each exercise's last solution cell comes its check, which stays in the learner copy.
    for i, cell in enumerate(nb.cells[:-1]):
        follower = nb.cells[i + 1]
        if "solution" in cell.metadata.get("tags", []) and "solution" not in follower.metadata.get("tags", []):
            assert "checks." in follower.source or "part4." in follower.source
    assert tutorial.learner_copy(NOTEBOOK_4, tmp_path / NOTEBOOK_4.name) == len(solutions)

    last = code[-1].source
    assert "%cf delete {app_name} -f -r" in last and "%cf delete-buildpack {system_buildpack_name} -f" in last
    assert "%cf bind-staging-security-group {group}" in last and "guard.done()" in last
    assert any("%cf delete {app_name} -f -r" in s for s in sources[1:admin + 3]), "starts clean, so it can be re-run"


def test_runner_and_params_cover_part_4() -> None:
    assert [p.stem for p in tutorial.find_notebooks(["04"])] == [NOTEBOOK_4.stem]
    cf = yaml.safe_load((NOTEBOOKS / "params" / "cf.yml").read_text())
    assert cf["system_buildpack_name"] and cf["stack"] == "cflinuxfs4"
    assert "s3_endpoint" in cf and "s3_bucket" in cf


# -------------------------------------------------------------------- checks that must fail

def test_cached_zip_check_refuses_a_tampered_file_and_an_uncached_zip(cached_zip: Path, uncached_zip: Path,  # noqa: F811
                                                                      zips: Zips, tmp_path: Path,  # noqa: F811
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    passed = part4.cached_zip_holds_dependency(cached_zip)
    assert passed.passed and part4.zip_dependency_path(zips.url) in capsys.readouterr().out

    tampered, sha = part4.tamper_dependency(cached_zip, tmp_path / "tampered.zip", log=lambda _line: None)
    with pytest.raises(CheckFailed) as failed:
        part4.cached_zip_holds_dependency(tampered)
    assert failed.value.expected.endswith(f"with the manifest's sha256 {zips.sha256}")
    assert failed.value.seen == f"sha256 {sha}" and "dependency sha256 mismatch" in failed.value.hint

    with pytest.raises(CheckFailed) as failed:
        part4.cached_zip_holds_dependency(uncached_zip)
    assert failed.value.seen == "file: None" and "--cached" in failed.value.hint

    # The manifest's sha256 edited instead of the file: the same mismatch, seen from the other side.
    edited = tmp_path / "edited.zip"
    with zipfile.ZipFile(cached_zip) as src, zipfile.ZipFile(edited, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "manifest.yml":
                data = data.replace(zips.sha256.encode(), zips.wrong_sha256.encode())
            dst.writestr(info, data)
    with pytest.raises(CheckFailed) as failed:
        part4.cached_zip_holds_dependency(edited)
    assert zips.wrong_sha256 in failed.value.expected and failed.value.seen == f"sha256 {zips.sha256}"


def test_manifest_check_refuses_a_user_sidecar_and_a_wrong_order(tmp_path: Path) -> None:
    manifest = tutorial.copy_fixture_app(tmp_path / "app", "p4-manifest")
    with pytest.raises(CheckFailed) as failed:
        part4.manifest_names_buildpack(manifest, "config-server-buildpack")
    assert failed.value.expected == "buildpacks: [config-server-buildpack, python_buildpack]"
    part4.use_system_buildpack(manifest, "config-server-buildpack")
    assert part4.manifest_names_buildpack(manifest, "config-server-buildpack").passed
    document = yaml.safe_load(manifest.read_text())
    document["applications"][0]["sidecars"] = [{"name": "config-server", "process_types": ["web"],
                                                "command": "config-server"}]
    manifest.write_text(yaml.safe_dump(document))
    with pytest.raises(CheckFailed) as failed:
        part4.manifest_names_buildpack(manifest, "config-server-buildpack")
    assert "conflicts with an existing user-defined sidecar" in failed.value.hint


@pytest.fixture
def online(localcf: LocalCF, tmp_path: Path) -> Iterator[Platform]:
    platform = Platform(localcf, tmp_path)
    yield platform
    platform.cleanup()


@pytest.fixture
def offline(air_gapped: LocalCF, tmp_path: Path) -> Iterator[Platform]:  # noqa: F811
    platform = Platform(air_gapped, tmp_path)
    yield platform
    platform.cleanup()


def test_air_gapped_checks_pass_on_the_cached_zip_and_fail_on_the_uncached_one(offline: Platform, cached_zip: Path,  # noqa: F811
                                                                               uncached_zip: Path, zips: Zips) -> None:  # noqa: F811
    name, pushed = offline.push(offline.install(cached_zip))
    assert pushed.code == 0, pushed.text
    assert part4.cached_staged_air_gapped(offline.target, name).passed
    assert part4.binary_on_path(offline.target, name).data["EXE"] == "/home/vcap/deps/0/bin/config-server"
    with pytest.raises(CheckFailed) as failed:
        part4.uncached_failed_air_gapped(offline.target, name, zips.url)
    assert failed.value.seen.startswith("the latest build is STAGED") and "still the cached one" in failed.value.hint
    with pytest.raises(CheckFailed) as failed:
        part4.dependency_downloaded(offline.target, name, zips.url)
    assert "uncached zip" in failed.value.hint

    # The uncached package, air-gapped: the cached claim fails, the uncached one holds.
    uncached_app, pushed = offline.push(offline.install(uncached_zip))
    assert pushed.code != 0
    with pytest.raises(CheckFailed) as failed:
        part4.cached_staged_air_gapped(offline.target, uncached_app)
    assert failed.value.expected == "a successful staging" and "FAILED" in failed.value.seen
    assert "could not download" in failed.value.seen and "-cached-" in failed.value.hint
    proven = part4.uncached_failed_air_gapped(offline.target, uncached_app, zips.url)
    assert zips.url in proven.data and "could not download: " in proven.data
    with pytest.raises(CheckFailed) as failed:
        part4.dependency_downloaded(offline.target, uncached_app, zips.url)
    assert "still air-gapped" in failed.value.hint


def test_air_gapped_checks_fail_where_staging_reaches_the_network(online: Platform, cached_zip: Path,  # noqa: F811
                                                                  uncached_zip: Path, zips: Zips) -> None:  # noqa: F811
    name, pushed = online.push(online.install(cached_zip))
    assert pushed.code == 0, pushed.text
    with pytest.raises(CheckFailed) as failed:
        part4.cached_staged_air_gapped(online.target, name)
    assert "public_networks" in failed.value.seen and "unbind-staging-security-group" in failed.value.hint
    with pytest.raises(CheckFailed) as failed:
        part4.checksum_mismatch(online.target, name, expected=zips.sha256)
    assert "the latest build is STAGED" in failed.value.seen

    other, pushed = online.push(online.install(uncached_zip))
    assert pushed.code == 0, pushed.text
    assert part4.dependency_downloaded(online.target, other, zips.url).passed
    with pytest.raises(CheckFailed) as failed:
        part4.uncached_failed_air_gapped(online.target, other, zips.url)
    assert "still reaches the network" in failed.value.hint


def test_checksum_check_wants_the_tampered_file_s_sha256(online: Platform, cached_zip: Path, zips: Zips,  # noqa: F811
                                                         tmp_path: Path) -> None:
    tampered, sha = part4.tamper_dependency(cached_zip, tmp_path / "tampered.zip", log=lambda _line: None)
    name, pushed = online.push(online.install(tampered))
    assert pushed.code != 0
    proven = part4.checksum_mismatch(online.target, name, expected=zips.sha256, actual=sha)
    assert proven.data == f"**ERROR** dependency sha256 mismatch: expected sha256 {zips.sha256}, actual sha256 {sha}"
    with pytest.raises(CheckFailed) as failed:
        part4.checksum_mismatch(online.target, name, expected=zips.sha256, actual=zips.sha256)
    assert failed.value.seen == proven.data


# A supply buildpack that installs the config-server into the app directory and declares nothing:
# no launch.yml, so the app's manifest must declare the sidecar (origin `user`), by its path.
NO_LAUNCH_YML_SUPPLY = """#!/usr/bin/env bash
set -euo pipefail
BUILDPACK_DIR=$(cd "$(dirname "$0")/.." && pwd)
tar -xzf "$BUILDPACK_DIR/config-server.tgz" -C "$1" --strip-components=1 bin/config-server
echo "-----> installed ./config-server, no launch.yml"
"""


def test_a_buildpack_without_launch_yml_fails_the_origin_and_path_checks(online: Platform, zips: Zips,  # noqa: F811
                                                                         tmp_path: Path) -> None:
    bp = tmp_path / "no-launch-yml"
    (bp / "bin").mkdir(parents=True)
    (bp / "bin" / "supply").write_text(NO_LAUNCH_YML_SUPPLY)
    (bp / "bin" / "detect").write_text("#!/bin/sh\nexit 1\n")
    for script in (bp / "bin").iterdir():
        script.chmod(0o755)
    shutil.copy(zips.server.directory / zips.archive, bp / "config-server.tgz")
    name, pushed = online.push(online.install(bp), sidecars=[{"name": "config-server", "process_types": ["web"],
                                                             "command": "./config-server"}])
    assert pushed.code == 0, pushed.text
    checks.config_from_sidecar(online.target, name)

    with pytest.raises(CheckFailed) as failed:
        checks.sidecar_registered(online.target, name, origin="buildpack")
    assert failed.value.expected == "origin 'buildpack'" and '"origin": "user"' in failed.value.seen
    assert "launch.yml" in failed.value.hint
    with pytest.raises(CheckFailed) as failed:
        part4.binary_on_path(online.target, name)
    assert failed.value.seen == "the command './config-server'" and "launch.yml" in failed.value.hint


def test_air_gapped_checks_are_skipped_in_process_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cf = LocalCF(tmp_path / "localcf-process")
    cf.env["LOCALCF_RUNTIME"] = "process"
    cf("start")
    try:
        target = LocalTarget(home=cf.home, echo=False)
        for result in (part4.cached_staged_air_gapped(target, "never-pushed"),
                       part4.uncached_failed_air_gapped(target, "never-pushed", "http://example.com/x.tgz")):
            assert result.status == "skipped" and not result.passed
            assert "staging cannot be air-gapped here: localcf runs in runtime mode `process`" in result.reason
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 2 and all(line.startswith(SKIPPED_MARK + " skipped: ") for line in lines)
    finally:
        cf("stop", check=False)


# ------------------------------------------------------------- the admin check, on a cf stand-in
# No real foundation is reachable where the kit is developed: a stand-in `cf` answers `oauth-token`
# with a token carrying the scopes the test chooses, and records every verb it is asked to run.

STAND_IN = r'''#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["CF_STAND_IN_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
if args[0] == "oauth-token":
    print("bearer " + os.environ["CF_STAND_IN_TOKEN"])
else:
    print("OK")
'''


def token(scopes: list[str]) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    return f"{part({'alg': 'RS256'})}.{part({'user_name': 'learner', 'scope': scopes})}.c2lnbmF0dXJl"


@pytest.fixture
def cf_stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return install_cf_stand_in(tmp_path, monkeypatch, STAND_IN.format(python=sys.executable))


def test_a_learner_who_is_not_an_admin_is_stopped_before_anything_is_pushed(
        cf_stand_in: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = CFTarget("https://api.example.com", "org", "space", echo=False)
    monkeypatch.setenv("CF_STAND_IN_TOKEN", token(["openid", "cloud_controller.read", "cloud_controller.write"]))
    with pytest.raises(part4.AdminRequired) as refused:
        part4.require_admin(target, log=lambda _line: None)
    message = str(refused.value)
    assert "Part 4 needs a Cloud Foundry admin on cf (https://api.example.com, org org, space space)" in message
    assert "learner has the scopes cloud_controller.read, cloud_controller.write, openid, without " \
           "cloud_controller.admin" in message
    assert "Ask your operator for a user with the cloud_controller.admin scope" in message
    verbs = [json.loads(line)[0] for line in cf_stand_in.read_text().splitlines()]
    assert verbs == ["version", "api", "auth", "target", "oauth-token"], "nothing but logging in and reading the token"

    monkeypatch.setenv("CF_STAND_IN_TOKEN", token(["openid", "cloud_controller.admin"]))
    said: list[str] = []
    part4.require_admin(target, log=said.append)
    assert said == ["$ cf oauth-token   # then read the token's `scope` list: it must hold cloud_controller.admin",
                    ("learner has the cloud_controller.admin scope: Part 4 may create system buildpacks and "
                     "change staging security groups.")]
