"""Shared fixtures: one embedded platform per test session (per xdist worker), real processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
BIN = Path(sys.executable).parent


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
