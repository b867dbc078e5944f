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
