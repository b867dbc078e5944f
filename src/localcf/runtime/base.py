"""What every part of the runtime shares: errors, what a container runs, constants."""

from __future__ import annotations

import os
import re
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MODES = ("namespaces", "process")


ROUTED_PORT = 8080


HOME_INSIDE = "/home/vcap"


OutputCallback = Callable[[str, str, str], None]   # (process name, "OUT"|"ERR", line)


ExitCallback = Callable[[str, int], None]          # (process name, exit status)


TaskOutputCallback = Callable[[str, str], None]    # ("OUT"|"ERR", line)


_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class ContainerError(Exception):
    """A container could not be created, started or reached."""


class _Halted(ContainerError):
    """The init refused to start a process because the container is stopping."""


class IsolationUnavailable(ContainerError):
    """What was asked needs namespaces mode, and this runtime runs in process mode."""


@dataclass
class ProcessDef:
    """One process of a container: the app ("web") or a sidecar."""

    name: str               # unique inside the container
    command: str            # start command, run through the launcher
    env: dict[str, str]     # the whole environment, computed by the caller


@dataclass
class ContainerSpec:
    """What to run in a container."""

    id: str                 # instance guid; also the hostname inside
    droplet: Path           # droplet .tgz, unpacked at home_root()
    processes: list[ProcessDef]
    routed_port: int = ROUTED_PORT   # use Runtime.allocate_port()


def _text(line: bytes) -> str:
    if line.endswith(b"\r"):
        line = line[:-1]
    return line.decode("utf-8", "replace")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rmtree(path: Path) -> None:
    def retry(func, p, _exc):
        # Processes may leave read-only directories behind; make them writable and go on.
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    if path.exists():
        shutil.rmtree(path, onerror=retry)
