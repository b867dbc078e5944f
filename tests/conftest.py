"""Shared fixtures: one embedded platform per test session (per xdist worker), real processes."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from sidecarlab import net

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
BIN = Path(sys.executable).parent


def install_cf_stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str, *, user: str = "learner",
                        password: str = "pw", log_name: str = "calls.jsonl") -> Path:
    """`script` (a cf stand-in's text) as the `cf` first on PATH, with CF_USERNAME and CF_PASSWORD set;
    returns the file it records its calls in (CF_STAND_IN_LOG)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "cf").write_text(script)
    (bin_dir / "cf").chmod(0o755)
    log = tmp_path / log_name
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CF_STAND_IN_LOG", str(log))
    monkeypatch.setenv("CF_USERNAME", user)
    monkeypatch.setenv("CF_PASSWORD", password)
    return log


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


class LocalCF:
    """Runs the real `localcf` command against one state dir."""

    def __init__(self, home: Path):
        self.home = home
        self.env = dict(os.environ, LOCALCF_HOME=str(home))

    def __call__(self, *args: str, cwd: Path | None = None, check: bool = True, timeout: float = 120,
                 input: str | None = None) -> Result:
        proc = subprocess.run([str(BIN / "localcf"), *args], cwd=cwd, env=self.env, capture_output=True,
                              text=True, timeout=timeout, input=input)
        res = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"localcf {' '.join(args)} exited {proc.returncode}\n{res.text}")
        return res

    @property
    def router_port(self) -> int:
        """The router's port of the running daemon (it may change when the daemon restarts)."""
        return json.loads((self.home / "daemon.json").read_text())["router_port"]

    def client(self):
        from localcf.client import Client
        from localcf.paths import StateDir
        return Client(StateDir(self.home))


@pytest.fixture(scope="session")
def localcf(tmp_path_factory: pytest.TempPathFactory) -> LocalCF:
    """One daemon for the whole session (of this xdist worker), stopped at the end."""
    home = tmp_path_factory.mktemp("localcf-home")
    cf = LocalCF(home)
    cf("start")
    yield cf
    cf("stop", check=False)


@pytest.fixture
def app_copy(tmp_path: Path):
    """A fresh copy of a fixture app directory."""
    def copy(name: str) -> Path:
        dest = tmp_path / name
        shutil.copytree(FIXTURES / name, dest, symlinks=True)
        return dest
    return copy


WAIT_SECONDS = 30


free_port = net.free_port  # the kit's one free_port, for the tests too


class Running:
    """A started process whose stdout lines are collected by a thread (stderr too, when merged)."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path | None = None,
                 merge_stderr: bool = False) -> None:
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def next_line(self) -> str:
        try:
            return self.lines.get(timeout=WAIT_SECONDS)
        except queue.Empty:
            raise AssertionError(f"no output line within {WAIT_SECONDS}s (exit code {self.proc.poll()})") from None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
