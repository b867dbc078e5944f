"""The notebooks, executed headless with papermill through `sidecarlab run`, on the session's localcf."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import nbformat
import pytest

from conftest import LocalCF

SIDECARLAB = Path(sys.executable).parent / "sidecarlab"
# Each claim of Part 1 that TUTORIAL.md lists, plus the two exercises' checks.
PART1_CHECKS = 13


def run_part(part: str, localcf: LocalCF, out: Path, work: Path, app_name: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, LOCALCF_HOME=str(localcf.home), SIDECARLAB_WORK=str(work))
    return subprocess.run(
        [str(SIDECARLAB), "run", part, "--out", str(out), "--no-progress", "-p", "app_name", app_name],
        env=env, capture_output=True, text=True, timeout=420,
    )


@pytest.mark.timeout(900)  # two full runs of Part 1; a guard against hanging, not a performance claim
def test_part1_runs_green_twice_in_a_row_on_the_same_platform(localcf: LocalCF, tmp_path: Path) -> None:
    app_name = f"nb1-{uuid.uuid4().hex[:8]}"
    isolated = "runtime: namespaces" in localcf("status").out
    for attempt in ("first", "second"):
        out = tmp_path / attempt
        proc = run_part("01", localcf, out, tmp_path / "work", app_name)
        assert proc.returncode == 0, f"{attempt} run failed:\n{proc.stdout}\n{proc.stderr}"
        assert "[1/1] 01-push-app-with-sidecar (target local" in proc.stdout

        summary = json.loads((out / "summary.json").read_text())
        assert summary["ok"] is True and summary["target"] == "local"
        (result,) = summary["notebooks"]
        checks = result["passed_checks"] + result["skipped_checks"]
        assert len(checks) == PART1_CHECKS, checks
        if isolated:
            assert result["skipped_checks"] == []
        else:
            assert all("runtime mode `process`" in line for line in result["skipped_checks"])

        executed = nbformat.read(str(out / "notebooks" / "01-push-app-with-sidecar.ipynb"), as_version=4)
        text = json.dumps([c.get("outputs", []) for c in executed.cells])
        assert f"$ cf push {app_name}" in text, "the notebook shows the real cf commands"
        assert "APP/PROC/WEB/SIDECAR/CONFIG-SERVER: Exited with status 137" in text

    # The notebook cleaned up after itself: no app, no work copy.
    assert app_name not in localcf("apps").out
    assert not (tmp_path / "work" / "part1" / app_name).exists()


# ------------------------------------------------------------------------------ Parts 2 and 3

import shutil  # noqa: E402

from nbformat.v4 import new_code_cell  # noqa: E402

from sidecarlab import tutorial  # noqa: E402
from sidecarlab.supply_buildpack import DOWNLOAD_SUPPLY, NEVER_DETECT, PLACEHOLDER_SUPPLY  # noqa: E402
from test_blobstore import blobstore_processes, wait_until_gone  # noqa: E402
from conftest import free_port  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOK_1 = NOTEBOOKS / "01-push-app-with-sidecar.ipynb"
NOTEBOOK_2 = NOTEBOOKS / "02-sidecar-from-buildpack.ipynb"
NOTEBOOK_3 = NOTEBOOKS / "03-real-sidecar-from-buildpack.ipynb"
# Each claim of TUTORIAL.md's Parts 2 and 3, plus the exercises' checks.
PART2_CHECKS = 9
PART3_CHECKS = 10


def run_parts(parts: list[str], localcf: LocalCF, out: Path, work: Path, home: Path, *params: str,
              notebooks: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """`sidecarlab run PARTS` on the session's localcf, with its own work dir and SIDECARLAB_HOME."""
    run_env = dict(env if env is not None else os.environ, LOCALCF_HOME=str(localcf.home),
                   SIDECARLAB_WORK=str(work), SIDECARLAB_HOME=str(home))
    argv = [str(SIDECARLAB), "run", *parts, "--out", str(out), "--no-progress", *params]
    if notebooks is not None:
        argv += ["--notebooks", str(notebooks)]
    return subprocess.run(argv, env=run_env, capture_output=True, text=True, timeout=600)


def outputs_text(path: Path) -> str:
    executed = nbformat.read(str(path), as_version=4)
    return "\n".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", [])
                     if o.get("output_type") == "stream")


def test_runner_runs_parts_1_to_3_in_order() -> None:
    names = [p.stem for p in tutorial.find_notebooks()]
    assert names[:3] == ["01-push-app-with-sidecar", "02-sidecar-from-buildpack", "03-real-sidecar-from-buildpack"]


@pytest.mark.timeout(900)  # a guard against hanging, not a performance claim
def test_parts_2_and_3_run_green_and_leave_nothing_behind(localcf: LocalCF, tmp_path: Path) -> None:
    app_name = f"nb23-{uuid.uuid4().hex[:8]}"
    home, work, out = tmp_path / "home", tmp_path / "work", tmp_path / "out"
    proc = run_parts(["02", "03"], localcf, out, work, home, "-p", "app_name", app_name)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert "[1/2] 02-sidecar-from-buildpack (target local" in proc.stdout
    assert "[2/2] 03-real-sidecar-from-buildpack (target local" in proc.stdout

    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is True
    part2, part3 = summary["notebooks"]
    assert (len(part2["passed_checks"]), len(part3["passed_checks"])) == (PART2_CHECKS, PART3_CHECKS)
    assert part2["skipped_checks"] == part3["skipped_checks"] == []

    text2 = outputs_text(out / "notebooks" / NOTEBOOK_2.name)
    assert f"$ cf push {app_name} -f " in text2
    assert "-----> Sidecar buildpack: installing the placeholder sidecar" in text2
    assert "[APP/PROC/WEB/SIDECAR/PLACEHOLDER/0] OUT placeholder sidecar: still here" in text2
    assert "BuildpackCompileFailed - App staging failed in the buildpack compile phase" in text2
    text3 = outputs_text(out / "notebooks" / NOTEBOOK_3.name)
    assert "-----> Sidecar buildpack: downloading config-server from http://127.0.0.1:" in text3
    assert "/config-server-sidecar/config-server-v9.9.9: HTTP 404" in text3
    assert "embedded S3 server at http://127.0.0.1:" in text3

    # Cleaned up: no app, no work copies, and no embedded S3 server process.
    assert app_name not in localcf("apps").out
    assert not (work / "part2").exists() and not (work / "part3").exists()
    assert wait_until_gone(home / "blobstore") == []


def test_a_failing_part_3_leaves_no_s3_server_behind(localcf: LocalCF, tmp_path: Path) -> None:
    # A copy of Part 3 that breaks right after it started the embedded S3 server.
    notebooks = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS / "params", notebooks / "params")
    nb = nbformat.read(str(NOTEBOOK_3), as_version=4)
    started = next(i for i, c in enumerate(nb.cells) if "blobstore.start()" in c.source)
    nb.cells.insert(started + 1, new_code_cell('raise RuntimeError("broken on purpose")'))
    nbformat.write(nb, str(notebooks / NOTEBOOK_3.name))
    home, out = tmp_path / "home", tmp_path / "out"

    proc = run_parts(["03"], localcf, out, tmp_path / "work", home, "-p", "app_name",
                     f"nb3-{uuid.uuid4().hex[:8]}", notebooks=notebooks)
    assert proc.returncode == 1 and "RuntimeError: broken on purpose" in proc.stderr
    assert "embedded S3 server at http://127.0.0.1:" in outputs_text(out / "notebooks" / NOTEBOOK_3.name)
    assert wait_until_gone(home / "blobstore") == [], "the S3 server outlived the failed notebook's kernel"


@pytest.mark.parametrize(("params", "env_credentials", "message"), [
    (["-p", "s3_endpoint", "aws"], False, "needs credentials in the environment variable(s) AWS_ACCESS_KEY_ID"),
    (["-p", "s3_endpoint", "http://127.0.0.1:{port}"], True, "nothing answers at 127.0.0.1:{port}"),
    (["-p", "s3_bucket", ""], False, "s3_bucket is missing"),
])
def test_part_3_rejects_bad_storage_parameters_before_anything_is_pushed(
        localcf: LocalCF, tmp_path: Path, params: list[str], env_credentials: bool, message: str) -> None:
    port = free_port()
    app_name = f"nb3-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    if env_credentials:
        env.update(AWS_ACCESS_KEY_ID="key", AWS_SECRET_ACCESS_KEY="secret")
    home, out = tmp_path / "home", tmp_path / "out"
    proc = run_parts(["03"], localcf, out, tmp_path / "work", home, "-p", "app_name", app_name,
                     *[p.format(port=port) for p in params], env=env)
    assert proc.returncode == 1
    assert "BlobStoreError: " in proc.stderr and message.format(port=port) in proc.stderr
    assert "`s3 = blobstore.validate(s3_endpoint, s3_bucket, s3_region, target=target)`" in proc.stderr
    assert app_name not in localcf("apps").out
    assert not (tmp_path / "work").exists(), "nothing was built"
    assert blobstore_processes(home / "blobstore") == []


@pytest.mark.parametrize("path,params", [
    (NOTEBOOK_1, ()),
    (NOTEBOOK_2, ("buildpack_name",)),
    (NOTEBOOK_3, ("buildpack_name",)),
])
def test_every_part_has_parameters_exercises_and_cleanup(path: Path, params: tuple[str, ...], tmp_path: Path) -> None:
    nb = nbformat.read(str(path), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    for name in ("target", "app_name", "config_server_port", "cf_api", "cf_org", "cf_space", *params):
        assert f"\n{name} = " in "\n" + code[0].source, name
    solutions = [i for i, c in enumerate(nb.cells) if "solution" in c.metadata.get("tags", [])]
    assert len(solutions) >= 2
    for i in solutions:
        # the check after each solution stays in the learner copy and gives the feedback
        follower = nb.cells[i + 1]
        assert "solution" not in follower.metadata.get("tags", []) and "checks." in follower.source
    assert "%cf delete {app_name} -f -r" in code[-1].source
    assert any("%cf delete {app_name}" in c.source for c in code[1:5]), "starts clean, so it can be re-run"
    assert tutorial.learner_copy(path, tmp_path / path.name) == len(solutions)


def test_the_buildpack_cells_are_the_kit_s_reference_scripts() -> None:
    def written(path: Path) -> list[str]:
        nb = nbformat.read(str(path), as_version=4)
        return [c.source.split("\n", 1)[1] for c in nb.cells if c.source.startswith("%%writefile")]

    assert [s.strip() for s in written(NOTEBOOK_2)] == [PLACEHOLDER_SUPPLY.strip(), NEVER_DETECT.strip()]
    assert [s.strip() for s in written(NOTEBOOK_3)] == [DOWNLOAD_SUPPLY.strip(), NEVER_DETECT.strip()]


def test_part_3_checks_its_storage_parameters_before_touching_the_platform() -> None:
    sources = [c.source for c in nbformat.read(str(NOTEBOOK_3), as_version=4).cells if c.cell_type == "code"]
    validate = next(i for i, s in enumerate(sources) if "blobstore.validate(" in s)
    connect = next(i for i, s in enumerate(sources) if "target_from_params(" in s)
    first_cf = next(i for i, s in enumerate(sources) if "%cf " in s)
    assert validate < connect < first_cf
