"""The fixture app, run beside the real config-server sidecar as the two share a container on CF."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from sidecarlab import sidecar

from conftest import WAIT_SECONDS, Running, free_port

APP_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "app-using-config-server"
EXPECTED_BODY = '{"Scope":"some-service.admin","Password":"not-a-real-p4$$w0rd"}\n'
ERROR_BODY = '{"error": "error connecting to local config-server"}'
# A guard against a hung process, not a performance assertion.


def get(url: str) -> tuple[int, str, str]:
    """(status, Content-Type, body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=WAIT_SECONDS) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers["Content-Type"], err.read().decode()


@pytest.fixture(scope="session")
def sidecar_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sidecar.build(out=tmp_path_factory.mktemp("sidecar") / "config-server")


@pytest.fixture
def start(tmp_path: Path) -> Iterator:
    """Start processes for one test and stop every one of them afterwards."""
    started: list[Running] = []

    def _start(argv: list[str], env: dict[str, str], cwd: Path = tmp_path) -> Running:
        proc = Running(argv, env, cwd, merge_stderr=True)
        started.append(proc)
        return proc

    yield _start
    for proc in reversed(started):
        proc.stop()


def start_app(start, config_server_port: int) -> tuple[Running, int]:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "CONFIG_SERVER_PORT": str(config_server_port)}
    app = start([sys.executable, "app.py"], env, APP_DIR)
    assert app.next_line() == f"app-using-config-server listening on 0.0.0.0:{port}"
    return app, port


def test_app_gets_its_config_through_the_sidecar(start, sidecar_binary: Path) -> None:
    config_port = free_port()
    side = start([str(sidecar_binary)], {**os.environ, "CONFIG_SERVER_PORT": str(config_port)})
    assert side.next_line() == f"listening 0.0.0.0:{config_port}..."
    app, port = start_app(start, config_port)

    assert get(f"http://127.0.0.1:{port}/") == (
        200, "text/plain; charset=utf-8", "Hi, I'm an app with a sidecar!"
    )

    assert get(f"http://127.0.0.1:{port}/config") == (200, "application/json", EXPECTED_BODY)
    assert app.next_line() == (
        f"Sending a request to the config-server sidecar at localhost:{config_port}/config/"
    )
    assert app.next_line() == f"Received {EXPECTED_BODY.strip()} from the config-server sidecar"
    assert side.next_line() == "Received a request for config."


def test_app_reports_a_sidecar_that_is_down(start) -> None:
    config_port = free_port()  # nothing listens there
    app, port = start_app(start, config_port)

    status, content_type, body = get(f"http://127.0.0.1:{port}/config")
    assert (status, content_type, body) == (502, "application/json", ERROR_BODY)
    assert app.next_line() == (
        f"Sending a request to the config-server sidecar at localhost:{config_port}/config/"
    )
    assert app.next_line().startswith(
        f"Could not reach the config-server sidecar at localhost:{config_port}:"
    )


def test_fixture_is_pushable_as_the_tutorial_expects() -> None:
    manifest = yaml.safe_load((APP_DIR / "manifest.yml").read_text())
    (app,) = manifest["applications"]
    assert app["name"] == "app-using-config-server"
    assert app["env"] == {"CONFIG_SERVER_PORT": 8082}
    assert app["sidecars"] == [
        {"name": "config-server", "process_types": ["web"], "command": "./config-server"}
    ]
    assert (APP_DIR / "Procfile").read_text() == "web: python app.py\n"
    # The built binary must reach the droplet: .cfignore must not exclude it.
    assert "config-server" not in (APP_DIR / ".cfignore").read_text()
