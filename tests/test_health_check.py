"""The cell's health check end to end, through the real `localcf` command: an instance becomes RUNNING
when its check passes, and one whose check never passes within the process's `timeout` is crashed
with Diego's words."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from conftest import FIXTURES, LocalCF
from sidecarlab.polling import poll_until


@pytest.fixture(scope="module")
def cf(tmp_path_factory: pytest.TempPathFactory) -> LocalCF:
    lcf = LocalCF(tmp_path_factory.mktemp("localcf-health"))
    lcf.env.update(LOCALCF_RUNTIME="process", LOCALCF_TIME_SCALE="0.001")
    lcf("start")
    yield lcf
    lcf("stop", check=False)


def _app(tmp_path: Path, endpoint: str) -> tuple[str, Path]:
    """The runtime app (404 for every path it does not know) with an http health check on `endpoint`."""
    name = f"hc-{uuid.uuid4().hex[:8]}"
    app = tmp_path / name
    app.mkdir()
    for f in ("app.py", "Procfile", "requirements.txt"):
        shutil.copy(FIXTURES / "runtime-app" / f, app / f)
    (app / "manifest.yml").write_text(
        f"applications:\n- name: {name}\n  memory: 128M\n  disk_quota: 256M\n  health-check-type: http\n"
        f"  health-check-http-endpoint: {endpoint}\n  timeout: 2\n")
    return name, app


def _recent(cf: LocalCF, name: str) -> list[str]:
    return cf("logs", name, "--recent").out.splitlines()


def _crashes(cf: LocalCF, name: str) -> list[dict]:
    guid = cf("app", name, "--guid").out.strip()
    events = json.loads(cf("curl", f"/v3/audit_events?target_guids={guid}").out)["resources"]
    return [e for e in events if e["type"] == "app.crash"]


def test_an_instance_whose_health_check_passes_runs(cf: LocalCF, tmp_path: Path) -> None:
    name, app = _app(tmp_path, "/")
    cf("push", cwd=app)
    try:
        lines = _recent(cf, name)
        assert any(line.endswith("[CELL/0] OUT Container became healthy") for line in lines), lines
        assert not any("health check never passed" in line for line in lines)
        assert _crashes(cf, name) == []
    finally:
        cf("delete", name, "-f")


def test_an_instance_never_healthy_within_its_timeout_crashes_with_diegos_words(cf: LocalCF,
                                                                                 tmp_path: Path) -> None:
    name, app = _app(tmp_path, "/missing")  # the app answers, but 404
    push = cf("push", cwd=app, check=False)
    try:
        assert push.code != 0, push.text
        crashes = poll_until(lambda: _crashes(cf, name), timeout=60, interval=0.2, what="an app.crash event")
        assert crashes[0]["data"]["exit_description"] == (
            "Instance never healthy after 2s: Failed to make HTTP request to '/missing' on port 8080: "
            "connection refused")
        lines = _recent(cf, name)
        assert any(line.endswith("[CELL/0] ERR Timed out after 2s: health check never passed.") for line in lines), \
            lines
        assert not any(line.endswith("Container became healthy") for line in lines)
    finally:
        cf("delete", name, "-f")
