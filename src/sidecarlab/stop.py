"""Stop everything the kit started on this machine: ssh tunnels, the embedded S3 server, localcf.

Closing JupyterLab ends its kernels, but what they started lives on: the localcf daemon (and the
apps in its containers), an embedded S3 server started from a terminal, a `cf ssh -L` tunnel left
by a kernel that was killed. `stop_everything()` ends them, in the order they depend on each other
(tunnels, then the object store, then the platform), and is idempotent: a second call finds
nothing and says so.

The kit drives localcf through its command, as it drives `cf` (`localcf stop`, `localcf status`),
never through its internals. Tunnels are recognised by what the kit runs (`localcf ssh ... -L`
or `cf ssh ... -L`) and by the settings they run with: the same localcf state settings as this
process, or a `CF_HOME` inside the kit's work dir. Another user's processes, or a tunnel to
another localcf, are never touched.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from . import blobstore
from .errors import KitError
from .paths import work_root

__all__ = ["StopError", "Stopped", "kit_tunnels", "localcf_command", "localcf_state_dir", "stop_everything"]

# Settings that decide which localcf state dir a `localcf` process works on.
_LOCALCF_SETTINGS = ("LOCALCF_HOME", "XDG_DATA_HOME", "HOME")
_STATE_DIR_LINE = re.compile(r"state dir (.+?)\)?$", re.MULTILINE)
# Guards against hanging, not performance claims.
_COMMAND_DEADLINE = 120.0
_TUNNEL_DEADLINE = 10.0


class StopError(KitError):
    """Something the kit started could not be stopped."""


@dataclass(frozen=True)
class Stopped:
    """One thing `stop_everything` looked at: what it is, and whether it was running."""

    what: str
    was_running: bool
    detail: str = ""

    def line(self) -> str:
        """One line for people."""
        if self.was_running:
            return f"stopped {self.what}" + (f" ({self.detail})" if self.detail else "")
        return f"{self.what}: not running" + (f" ({self.detail})" if self.detail else "")


def localcf_command(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `localcf ARGS` with the interpreter of the kit (the localcf installed with it)."""
    return subprocess.run([sys.executable, "-m", "localcf.cli", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=_COMMAND_DEADLINE)


def localcf_state_dir() -> Path:
    """The state dir localcf uses with this environment, as `localcf status` names it."""
    said = localcf_command("status")
    found = _STATE_DIR_LINE.search(said.stdout)
    if found is None:
        raise StopError(f"`localcf status` did not name its state dir (exit {said.returncode}):\n"
                        f"{said.stdout}{said.stderr}")
    return Path(found.group(1).strip())


def _is_tunnel(args: list[str]) -> bool:
    return "ssh" in args and "-L" in args and ("-N" in args or any(a.startswith("-N") for a in args))


def _runs_localcf(args: list[str]) -> bool:
    return "localcf.cli" in args or (bool(args) and Path(args[0]).name == "localcf") or (
        len(args) > 1 and Path(args[1]).name == "localcf")


def _runs_cf(args: list[str]) -> bool:
    return bool(args) and Path(args[0]).name == "cf"


def kit_tunnels() -> list[psutil.Process]:
    """This user's `localcf ssh -N -L` tunnels to this localcf, and `cf ssh -N -L` tunnels of the
    kit's cf sessions (a CF_HOME inside the work dir)."""
    cf_homes = (work_root() / "cf-home").resolve()
    ours = {name: os.environ.get(name) for name in _LOCALCF_SETTINGS}
    found = []
    for proc in psutil.process_iter(["pid", "uids", "cmdline"]):
        try:
            if proc.pid == os.getpid() or proc.info["uids"] is None or proc.info["uids"].real != os.getuid():
                continue
            args = proc.info["cmdline"] or []
            if not _is_tunnel(args):
                continue
            if _runs_localcf(args):
                env = proc.environ()
                if all(env.get(name) == value for name, value in ours.items()):
                    found.append(proc)
            elif _runs_cf(args):
                cf_home = proc.environ().get("CF_HOME")
                if cf_home and Path(cf_home).resolve().is_relative_to(cf_homes):
                    found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _stop_tunnels() -> Stopped:
    tunnels = kit_tunnels()
    for proc in tunnels:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(tunnels, timeout=_TUNNEL_DEADLINE)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=_TUNNEL_DEADLINE)
    pids = ", ".join(str(p.pid) for p in tunnels)
    return Stopped("ssh tunnels", bool(tunnels), f"pid {pids}" if tunnels else "")


def _stop_blobstore() -> Stopped:
    state_dir = blobstore.default_state_dir()
    running = blobstore.status(state_dir)
    stopped = blobstore.stop(state_dir)
    detail = f"pid {running.pid}, port {running.port}" if running is not None else f"state dir {state_dir}"
    return Stopped("the embedded S3 server", stopped, detail)


def _stop_localcf() -> Stopped:
    said = localcf_command("stop")
    if said.returncode != 0:
        raise StopError(f"`localcf stop` failed (exit {said.returncode}):\n{said.stdout}{said.stderr}")
    was_running = "not running" not in said.stdout
    return Stopped("the localcf daemon", was_running, "its apps start again with it: `localcf start`"
                   if was_running else "")


def stop_everything(log: Callable[[str], None] = print) -> list[Stopped]:
    """Stop the kit's ssh tunnels, the embedded S3 server and the localcf daemon; say what was
    running. Idempotent."""
    results = []
    for step in (_stop_tunnels, _stop_blobstore, _stop_localcf):
        result = step()
        log(result.line())
        results.append(result)
    return results
