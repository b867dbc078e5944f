"""The claims of Part 3's look inside the container (the blog's `cf ssh` session): the shared
`CONFIG_SERVER_PORT` is set for the app's processes, the sidecar answers on it over `localhost`, and
`ps` shows the sidecar running beside the app, neither started by the other.

Each check runs the very command the notebook showed (`cf ssh APP -c "..."`) again, quietly, and
reads what it printed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..targets import Target
from .core import check, fail
from .core import short as _short
from .part1 import CONFIG

__all__ = [
    "ECHO_PORT",
    "CURL_CONFIG",
    "PS_FOREST",
    "ForestProcess",
    "config_inside_container",
    "parse_forest",
    "port_in_container",
    "sidecar_beside_app",
]

#: The commands of the blog's session inside the container, as the notebook runs them.
ECHO_PORT = "echo $CONFIG_SERVER_PORT"
CURL_CONFIG = "curl -s localhost:$CONFIG_SERVER_PORT/config/"
#: `ps axwf` with the two columns the blog shows (PID, COMMAND): the tree without the volatile ones.
PS_FOREST = "ps axwf -o pid,command"


@dataclass(frozen=True)
class ForestProcess:
    """One line of `ps axwf -o pid,command`: the pid, the command, its depth in the tree and its
    parent's pid as the tree draws it (None for a top-level process)."""

    pid: int
    command: str
    depth: int
    parent: int | None


_FOREST_LINE = re.compile(r"^\s*(\d+)\s(.*)$")


def parse_forest(output: str) -> list[ForestProcess]:
    """The processes of `ps axwf -o pid,command` output. `ps f` draws a child as `\\_ COMMAND` indented
    under its parent (4 columns per level); top-level processes have no `\\_`."""
    found: list[ForestProcess] = []
    stack: list[ForestProcess] = []
    for line in output.splitlines():
        m = _FOREST_LINE.match(line)
        if not m:
            continue  # the header (PID COMMAND) or a wrapped line
        pid, rest = int(m.group(1)), m.group(2)
        branch = rest.find("\\_ ")
        if branch >= 0 and not rest[:branch].strip(" |"):
            depth, command = branch // 4 + 1, rest[branch + 3:]
        else:
            depth, command = 0, rest.strip()
        while stack and stack[-1].depth >= depth:
            stack.pop()
        process = ForestProcess(pid, command.strip(), depth, stack[-1].pid if stack else None)
        found.append(process)
        stack.append(process)
    return found


def _ancestors(process: ForestProcess, by_pid: dict[int, ForestProcess]) -> list[int]:
    chain: list[int] = []
    parent = process.parent
    while parent is not None and parent not in chain:
        chain.append(parent)
        parent = by_pid[parent].parent if parent in by_pid else None
    return chain


@check("inside {app}, CONFIG_SERVER_PORT is {port} (`cf ssh {app} -c 'echo $CONFIG_SERVER_PORT'`)")
def port_in_container(target: Target, app: str, port: int = 8082, index: int = 0) -> tuple[str, Any]:
    """The app's environment, as `cf ssh` sees it, has the manifest's CONFIG_SERVER_PORT."""
    said = target.ssh(app, ECHO_PORT, index=index).output.strip()
    if said != str(port):
        fail(f"`{ECHO_PORT}` to print {port}", repr(said) if said else "an empty line (the variable is not set)",
             "The app and its sidecar find each other through CONFIG_SERVER_PORT, set under `env:` in the "
             f"manifest. Set `CONFIG_SERVER_PORT: {port}` there and push again.")
    return f"inside {app}, CONFIG_SERVER_PORT is {said}", said


@check("inside {app}, the sidecar answers on localhost:$CONFIG_SERVER_PORT with the config JSON")
def config_inside_container(target: Target, app: str, expected: dict[str, Any] | None = None,
                            index: int = 0) -> tuple[str, Any]:
    """`curl localhost:$CONFIG_SERVER_PORT/config/` inside the container returns the config-server's JSON."""
    expected = CONFIG if expected is None else expected
    result = target.ssh(app, CURL_CONFIG, index=index, check=False)
    body = result.output.strip()
    try:
        seen = json.loads(body)
    except ValueError:
        seen = None
    if seen != expected:
        fail(f"`{CURL_CONFIG}` to print {json.dumps(expected, separators=(',', ':'))}",
             f"exit {result.returncode}: {_short(body, 400) or 'nothing'}",
             "Nothing answered, or something else did: is the sidecar running (`cf app` shows it; "
             f"`cf logs {app} --recent` has its lines) and listening on CONFIG_SERVER_PORT?")
    return f"inside {app}, localhost:$CONFIG_SERVER_PORT/config/ returns {body}", seen


@check("`ps axwf` inside {app} shows {sidecar_command} beside the app ({app_command}), neither started by "
       "the other", needs_isolation=True)
def sidecar_beside_app(target: Target, app: str, sidecar_command: str = "config-server",
                       app_command: str = "app.py", index: int = 0) -> tuple[str, Any]:
    """In the container's process tree, the sidecar and the app both run, and neither is the other's
    ancestor: the platform starts each of them (through the launcher), side by side."""
    output = target.ssh(app, PS_FOREST, index=index).output
    processes = [p for p in parse_forest(output) if not p.command.startswith("ps ")]
    by_pid = {p.pid: p for p in processes}
    sidecars = [p for p in processes if sidecar_command in p.command]
    apps = [p for p in processes if app_command in p.command and sidecar_command not in p.command]
    if not sidecars or not apps:
        missing = [name for name, hits in ((sidecar_command, sidecars), (app_command, apps)) if not hits]
        fail(f"processes whose command contains {sidecar_command!r} and {app_command!r}",
             f"none for {missing}; the tree: {_short(' | '.join(f'{p.pid} {p.command}' for p in processes), 600)}",
             f"A process that is missing is not running: `cf logs {app} --recent` says why it stopped "
             "(an app and its sidecars are codependent, so usually both are gone).")
    side, main = sidecars[0], apps[0]
    if main.pid in _ancestors(side, by_pid) or side.pid in _ancestors(main, by_pid):
        outer, inner = (main, side) if main.pid in _ancestors(side, by_pid) else (side, main)
        fail("the sidecar and the app side by side (neither in the other's subtree)",
             f"{inner.command!r} (pid {inner.pid}) runs under {outer.command!r} (pid {outer.pid})",
             "The platform starts every sidecar itself, next to the app. A start command that launches the "
             "sidecar (e.g. `./config-server & python app.py`) hides it from the platform: declare it under "
             "`sidecars:` instead.")
    return f"`ps axwf` inside {app}: {side.command!r} runs beside {main.command!r}", (side, main)
