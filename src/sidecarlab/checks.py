"""Checks: each proves one claim of the tutorial on any target.

A check prints exactly one line: `✅ <what was proven>`, or `⏭️ skipped: <claim> (<why>)` when the
target cannot show it (a claim about container isolation on a platform without containers is
never reported as passed). Otherwise it raises `CheckFailed` with what was expected, what was seen
and a hint: the learner's feedback in the notebook, and CI's failure message.
"""

from __future__ import annotations

import functools
import inspect
import ipaddress
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, NoReturn, Optional, TypeVar

import requests

from .targets import HttpResponse, Instance, LogLine, Target, TargetError

__all__ = [
    "CONFIG",
    "GREETING",
    "SIDECAR_DOWN",
    "CheckFailed",
    "CheckResult",
    "ContainerSnapshot",
    "app_answers",
    "cf_app_shows_sidecar",
    "check",
    "codependent_crash",
    "config_from_sidecar",
    "container_snapshot",
    "fail",
    "logs_show_app_and_sidecar",
    "memory_limit_carved",
    "processes_in_one_container",
    "show_sockets",
    "wait_until_reachable",
    "sidecar_crash_recovers",
    "sidecar_listening",
    "sidecar_port_private",
    "sidecar_registered",
]

GREETING = "Hi, I'm an app with a sidecar!"
CONFIG = {"Scope": "some-service.admin", "Password": "not-a-real-p4$$w0rd"}
SIDECAR_DOWN = {"error": "error connecting to local config-server"}

PASSED_MARK = "✅"
SKIPPED_MARK = "⏭️"
FAILED_MARK = "❌"

# How long a check waits for the platform to get somewhere (a restart, a route). A guard
# against hanging, not a performance claim.
DEFAULT_DEADLINE = 60.0
POLL_SECONDS = 0.5


class CheckFailed(AssertionError):
    """A claim did not hold: what was checked, what was expected, what was seen, what to do."""

    def __init__(self, what: str, expected: str, seen: str, hint: str) -> None:
        self.what, self.expected, self.seen, self.hint = what, expected, seen, hint
        super().__init__(
            f"{FAILED_MARK} {what}\n"
            f"   expected: {expected}\n"
            f"   seen:     {seen}\n"
            f"   hint:     {hint}"
        )


@dataclass
class CheckResult:
    """The outcome of a check that did not fail: passed (with what it proved) or skipped (why)."""

    status: str
    statement: str
    reason: str = ""
    data: Any = None

    @property
    def passed(self) -> bool:
        """True when the claim was proven (a skipped check did not prove it)."""
        return self.status == "passed"

    def line(self) -> str:
        """The one line the check prints."""
        if self.status == "passed":
            return f"{PASSED_MARK} {self.statement}"
        return f"{SKIPPED_MARK} skipped: {self.statement} ({self.reason})"

    def __repr__(self) -> str:
        return self.line()

    def _ipython_display_(self) -> None:
        # The check already printed its line; a notebook should not show it twice.
        pass


class _Fail(Exception):
    def __init__(self, expected: str, seen: str, hint: str) -> None:
        super().__init__(expected)
        self.expected, self.seen, self.hint = expected, seen, hint


def fail(expected: str, seen: str, hint: str) -> NoReturn:
    """Inside a check: stop with what was expected, what was seen and a hint."""
    raise _Fail(expected, seen, hint)


F = TypeVar("F", bound=Callable[..., Any])


def check(claim: str, *, needs_isolation: bool = False) -> Callable[[F], Callable[..., CheckResult]]:
    """Make `fn(target, app, ...)` a check. `claim` is formatted with the call's arguments; `fn`
    returns what it proved (a string, or a (string, data) pair) or calls `fail(...)`."""

    def decorate(fn: F) -> Callable[..., CheckResult]:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> CheckResult:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            what = claim.format(**bound.arguments)
            target: Target = bound.arguments["target"]
            if needs_isolation:
                isolation = target.isolation()
                if not isolation.isolated:
                    return _report(CheckResult("skipped", what, isolation.reason))
            try:
                outcome = fn(*bound.args, **bound.kwargs)
            except _Fail as f:
                raise CheckFailed(what, f.expected, f.seen, f.hint) from None
            except TargetError as exc:
                raise CheckFailed(what, "the platform to answer the commands this check runs", str(exc),
                                  "Is the app pushed and running? Look at `cf app` and "
                                  "`cf logs --recent` for it, then run this cell again.") from None
            statement, data = outcome if isinstance(outcome, tuple) else (outcome, None)
            return _report(CheckResult("passed", statement, data=data))

        run.claim = claim  # type: ignore[attr-defined]
        run.needs_isolation = needs_isolation  # type: ignore[attr-defined]
        return run

    return decorate


def _report(result: CheckResult) -> CheckResult:
    print(result.line(), flush=True)
    return result


# ------------------------------------------------------------------------------ small helpers

def _get(target: Target, app: str, path: str) -> HttpResponse:
    try:
        return target.http_get(app, path)
    except TargetError as exc:
        fail(f"an HTTP answer from GET {path}", str(exc),
             "The platform's router did not answer at all: is the platform running? "
             "(`cf app` for the app, `localcf status` on the local target).")


def _router_hint(app: str, response: HttpResponse) -> str:
    error = response.headers.get("X-Cf-RouterError", "")
    if error == "unknown_route" or response.status == 404 and "does not exist" in response.body:
        return (f"The router has no running instance of '{app}': is it pushed and started? "
                f"Run `cf app {app}`; if it crashed, `cf logs {app} --recent` says why.")
    if error == "endpoint_failure" or response.status == 502 and "Registered endpoint" in response.body:
        return (f"The router reached an instance of '{app}' but it did not answer: the app may have "
                f"just crashed. See `cf logs {app} --recent`.")
    return f"See `cf logs {app} --recent` for what the app printed."


def _short(text: str, limit: int = 300) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "..."


def _poll(deadline: float, probe: Callable[[], Any]) -> Any:
    """Call `probe` until it returns something truthy or `deadline` seconds pass; its last value."""
    end = time.monotonic() + deadline
    while True:
        value = probe()
        if value or time.monotonic() >= end:
            return value
        time.sleep(POLL_SECONDS)


# ------------------------------------------------------------------------------- HTTP claims

@check("GET {path} of {app} answers {expected!r}")
def app_answers(target: Target, app: str, path: str = "/", expected: str = GREETING) -> str:
    """The app answers `path` through the router with `expected`."""
    response = _get(target, app, path)
    if response.status != 200 or response.body.strip() != expected:
        fail(f"HTTP 200 with the body {expected!r}",
             f"HTTP {response.status} with the body {_short(response.body)!r}",
             _router_hint(app, response))
    return f"GET {path} of {app} answers {expected!r} (HTTP 200, through the router)", response


@check("GET /config of {app} returns the config-server's JSON, fetched by the app from its sidecar")
def config_from_sidecar(target: Target, app: str, expected: Optional[dict[str, Any]] = None,
                        path: str = "/config") -> tuple[str, Any]:
    """`/config` returns the sidecar's JSON: proof that the app reached its sidecar on localhost."""
    expected = CONFIG if expected is None else expected
    response = _get(target, app, path)
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status == 200 and body == expected:
        return (f"GET {path} of {app} returns {json.dumps(expected)}: the app got it from its sidecar "
                "over localhost"), body
    seen = f"HTTP {response.status} with the body {_short(response.body)!r}"
    if body == SIDECAR_DOWN:
        fail(f"HTTP 200 with {json.dumps(expected)}", seen, _sidecar_down_hint(target, app))
    fail(f"HTTP 200 with {json.dumps(expected)}", seen, _router_hint(app, response))


def _sidecar_down_hint(target: Target, app: str) -> str:
    common = ("The app answered, but nothing listened on localhost:$CONFIG_SERVER_PORT inside its "
              "container. ")
    try:
        sidecars = target.sidecars(app)
    except TargetError:
        sidecars = []
    if not sidecars:
        return (common + f"The app has no sidecar at all (`cf curl /v3/apps/$(cf app {app} --guid)/sidecars` "
                "lists none): add the `sidecars:` block (name config-server, process_types [web], "
                "command ./config-server) to manifest.yml, apply it and push again.")
    names = ", ".join(s.get("name", "?") for s in sidecars)
    return (common + f"The app has the sidecar(s) {names}: check that the config-server binary was built "
            "into the app directory before the push, that it listens on $CONFIG_SERVER_PORT (the same "
            f"variable the app reads, set under env: in manifest.yml), and read `cf logs {app} --recent` "
            "for the sidecar's own lines.")


# -------------------------------------------------------------------------------- API claims

@check("the API lists sidecar {sidecar} of {app} for process type {process_type}, origin {origin}")
def sidecar_registered(target: Target, app: str, sidecar: str = "config-server", process_type: str = "web",
                       origin: str = "user") -> tuple[str, Any]:
    """`/v3/apps/GUID/sidecars` holds the sidecar, attached to `process_type`, with `origin`."""
    sidecars = target.sidecars(app)
    found = next((s for s in sidecars if s.get("name") == sidecar), None)
    summary = json.dumps([{k: s.get(k) for k in ("name", "process_types", "origin", "command")}
                          for s in sidecars]) if sidecars else "no sidecars"
    if found is None:
        fail(f"a sidecar named {sidecar!r}", summary,
             f"Add a `sidecars:` entry named {sidecar} to manifest.yml, then `cf apply-manifest` (or push).")
    if process_type not in (found.get("process_types") or []):
        fail(f"process_types containing {process_type!r}", summary,
             f"Set `process_types: [{process_type}]` on the {sidecar} sidecar in manifest.yml.")
    if found.get("origin") != origin:
        fail(f"origin {origin!r}", summary,
             "origin is 'user' for sidecars from the app manifest and 'buildpack' for sidecars a "
             "buildpack declares in launch.yml.")
    return (f"/v3/apps/GUID/sidecars lists {sidecar} for {process_type} (origin {origin}, command "
            f"{found.get('command')!r})"), found


@check("`cf app {app}` shows sidecar {sidecar} on process type {process_type}")
def cf_app_shows_sidecar(target: Target, app: str, sidecar: str = "config-server",
                         process_type: str = "web") -> str:
    """The `sidecars:` line of the process type in `cf app` names the sidecar."""
    output = target.cf("app", app, echo=False, quiet=True).output
    current_type = None
    sidecar_lines: dict[str, str] = {}
    for line in output.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "type":
            current_type = value
        elif key == "sidecars" and current_type is not None:
            sidecar_lines[current_type] = value
    names = [n.strip() for n in sidecar_lines.get(process_type, "").split(",") if n.strip()]
    if sidecar not in names:
        seen = (f"sidecars: {sidecar_lines[process_type]!r} for type {process_type}"
                if process_type in sidecar_lines else f"no `sidecars:` line for type {process_type}")
        fail(f"`sidecars:` naming {sidecar} under `type: {process_type}`", seen,
             "cf CLI v7+ prints sidecars per process; the sidecar must be attached to this process type.")
    return f"`cf app {app}` shows `sidecars: {', '.join(names)}` for type {process_type}"


# ------------------------------------------------------------------------- inside the container

_SNAPSHOT_SCRIPT = r"""
for d in /proc/[0-9]*; do
  p=${d#/proc/}
  c=$(tr '\0' ' ' < "$d/cmdline" 2>/dev/null)
  [ -n "$c" ] || continue
  echo "PROC $p $c"
  m=$(tr '\0' '\n' < "$d/environ" 2>/dev/null | grep '^MEMORY_LIMIT=' | head -n 1)
  [ -n "$m" ] && echo "ENV $p $m"
  for f in "$d"/fd/*; do
    l=$(readlink "$f" 2>/dev/null) || continue
    case "$l" in socket:*) echo "SOCK $p $l";; esac
  done
done
echo TCP
cat /proc/net/tcp /proc/net/tcp6 2>/dev/null
"""

_TCP_STATES = {
    "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
    "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING",
}


@dataclass
class TcpSocket:
    """One line of /proc/net/tcp{,6}: addresses, state, and the owning PID when one still owns it."""

    local: str
    local_port: int
    remote: str
    remote_port: int
    state: str
    inode: int
    pid: Optional[int] = None


@dataclass
class ContainerSnapshot:
    """Processes (PID -> command line), their MEMORY_LIMIT, and TCP sockets, seen inside a container."""

    processes: dict[int, str] = field(default_factory=dict)
    memory_limits: dict[int, str] = field(default_factory=dict)
    sockets: list[TcpSocket] = field(default_factory=list)

    def pids_of(self, needle: str) -> list[int]:
        """PIDs whose command line contains `needle` (the snapshot's own shell excluded)."""
        return sorted(pid for pid, cmd in self.processes.items()
                      if needle in cmd and "/proc/" not in cmd and "MEMORY_LIMIT" not in cmd)

    def command(self, pid: Optional[int]) -> str:
        return self.processes.get(pid, "?") if pid is not None else "-"


def _hex_address(text: str) -> tuple[str, int]:
    host_hex, port_hex = text.split(":")
    raw = bytes.fromhex(host_hex)
    # /proc/net/tcp prints each 32-bit word of the address in host (little-endian) byte order.
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address), int(port_hex, 16)


def parse_snapshot(output: str) -> ContainerSnapshot:
    """Parse what the snapshot script printed."""
    snap = ContainerSnapshot()
    owners: dict[int, int] = {}
    in_tcp = False
    for line in output.splitlines():
        if line.strip() == "TCP":
            in_tcp = True
            continue
        if not in_tcp:
            kind, _, rest = line.partition(" ")
            pid_text, _, value = rest.partition(" ")
            if not pid_text.isdigit():
                continue
            pid = int(pid_text)
            if kind == "PROC":
                snap.processes[pid] = value.strip()
            elif kind == "ENV":
                snap.memory_limits[pid] = value.partition("=")[2].strip()
            elif kind == "SOCK":
                m = re.match(r"socket:\[(\d+)\]", value.strip())
                if m:
                    owners[int(m.group(1))] = pid
            continue
        fields = line.split()
        if len(fields) < 10 or not fields[0].rstrip(":").isdigit():
            continue
        try:
            local, local_port = _hex_address(fields[1])
            remote, remote_port = _hex_address(fields[2])
        except ValueError:
            continue
        inode = int(fields[9]) if fields[9].isdigit() else 0
        snap.sockets.append(TcpSocket(local, local_port, remote, remote_port,
                                      _TCP_STATES.get(fields[3].upper(), fields[3]), inode, owners.get(inode)))
    return snap


def container_snapshot(target: Target, app: str, index: int = 0) -> ContainerSnapshot:
    """Processes and TCP sockets inside instance `index` of `app`, read from /proc over `cf ssh`
    (works where neither `ss` nor `lsof` is installed)."""
    return parse_snapshot(target.ssh(app, _SNAPSHOT_SCRIPT, index=index).output)


def show_sockets(target: Target, app: str, port: Optional[int] = None, index: int = 0) -> None:
    """Print an `lsof -i`-like table of the TCP sockets inside the container (only `port`'s if given)."""
    snap = container_snapshot(target, app, index)
    rows = [("COMMAND", "PID", "STATE", "LOCAL", "REMOTE")]
    for s in snap.sockets:
        if port is not None and port not in (s.local_port, s.remote_port):
            continue
        rows.append((_short(snap.command(s.pid).split(" ")[0].rsplit("/", 1)[-1], 20) if s.pid else "-",
                     str(s.pid or "-"), s.state, f"{s.local}:{s.local_port}",
                     f"{s.remote}:{s.remote_port}" if s.state != "LISTEN" else "*"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


@check("`ps aux` inside instance {index} of {app} shows the app ({app_command}) and the sidecar "
       "({sidecar_command}) in one container", needs_isolation=True)
def processes_in_one_container(target: Target, app: str, sidecar_command: str = "config-server",
                               app_command: str = "app.py", index: int = 0) -> tuple[str, Any]:
    """One `ps aux` in the instance's container lists both the app's and the sidecar's process."""
    output = target.ssh(app, "ps aux", index=index).output
    found: dict[str, list[tuple[str, str]]] = {sidecar_command: [], app_command: []}
    for line in output.splitlines()[1:]:
        parts = line.split(None, 10)
        if len(parts) < 11:
            continue
        pid, command = parts[1], parts[10]
        if command.startswith(("ps ", "bash -c", "/bin/bash -c", "sh -c", "/bin/sh -c")):
            continue
        for needle in found:
            if needle in command:
                found[needle].append((pid, command))
    missing = [n for n, hits in found.items() if not hits]
    if missing:
        fail(f"processes whose command contains {sidecar_command!r} and {app_command!r}",
             f"no {', '.join(map(repr, missing))} in:\n{_short(output, 1500)}",
             "Both run in the same container only when the sidecar is attached to the web process "
             "(process_types: [web]) and the app was pushed after the sidecar was applied. If the "
             "sidecar is missing, it may have crashed: `cf logs --recent`.")
    app_pid, app_cmd = found[app_command][0]
    side_pid, side_cmd = found[sidecar_command][0]
    return (f"one `ps aux` inside instance {index} of {app} lists the app (PID {app_pid}: {app_cmd}) and "
            f"the sidecar (PID {side_pid}: {side_cmd}): one container"), found


@check("inside {app}, {sidecar_command} listens on port {port} and the app connects to it",
       needs_isolation=True)
def sidecar_listening(target: Target, app: str, port: int = 8082, sidecar_command: str = "config-server",
                      app_command: str = "app.py", index: int = 0) -> tuple[str, Any]:
    """The sidecar owns the LISTEN socket on `port`, and a connection from inside reached it."""
    # A /config request makes the app open a connection to the sidecar; the app closes it after
    # each request, so what remains to be seen is usually its TIME_WAIT entry.
    _get(target, app, "/config")
    snap = container_snapshot(target, app, index)
    sidecar_pids = snap.pids_of(sidecar_command)
    app_pids = snap.pids_of(app_command)
    listening = [s for s in snap.sockets if s.state == "LISTEN" and s.local_port == port]
    sidecar_ports = sorted({s.local_port for s in snap.sockets
                            if s.state == "LISTEN" and s.pid in sidecar_pids})
    if not sidecar_pids:
        fail(f"a {sidecar_command} process in the container",
             f"processes: {_short('; '.join(snap.processes.values()), 600)}",
             "The sidecar is not running: it may have crashed at start. `cf logs --recent` shows "
             "its output under [APP/PROC/WEB/SIDECAR/...].")
    if not any(s.pid in sidecar_pids for s in listening):
        owner = ", ".join(f"{snap.command(s.pid)} (PID {s.pid})" for s in listening) or "nothing"
        fail(f"{sidecar_command} listening on port {port}",
             f"port {port} is held by {owner}; {sidecar_command} listens on "
             f"{', '.join(map(str, sidecar_ports)) or 'no port at all'}",
             f"The sidecar must listen on the port the app calls: both read $CONFIG_SERVER_PORT "
             f"({port}). Check the sidecar's command in manifest.yml and the env: block.")
    connections = [s for s in snap.sockets if s.state != "LISTEN"
                   and (s.remote_port == port or s.local_port == port)]
    from_app = [s for s in connections if s.pid in app_pids and s.remote_port == port]
    if from_app:
        how = f"the app (PID {from_app[0].pid}) holds a {from_app[0].state} connection to it"
    elif connections:
        # Inside the container's own network namespace only the app talks to the sidecar.
        how = (f"a connection to it from inside the container is in state {connections[0].state} "
               f"(the app closes it after each /config request)")
    else:
        fail(f"a connection from the app to port {port} after GET /config",
             f"no TCP connection on port {port} besides the listener",
             "GET /config should make the app call localhost:$CONFIG_SERVER_PORT. Does /config "
             "work (the check above)?")
    pid = next(s.pid for s in listening if s.pid in sidecar_pids)
    return f"{sidecar_command} (PID {pid}) listens on port {port}, and {how}", snap


@check("port {port} of {app} is private: unreachable from outside the container, reachable "
       "through `cf ssh -L`", needs_isolation=True)
def sidecar_port_private(target: Target, app: str, port: int = 8082, path: str = "/config/",
                         index: int = 0) -> str:
    """From outside, nothing answers on the sidecar's port; through an ssh tunnel, the sidecar does."""
    host = target.outside_host(app)
    before = _config_requests_logged(target, app)
    reached = _http_via(host, port, path)
    impostor = False
    if reached is not None and reached[0] == 200 and _json_or_none(reached[1]) == CONFIG:
        # The same JSON could come from another config-server on this machine: only a request the
        # sidecar itself logged proves that its port was reached from outside.
        if _wait_for_more_config_requests(target, app, before):
            fail(f"no answer on {host}:{port} from outside the container",
                 f"the sidecar answered on {host}:{port} and logged the request: {reached[1].strip()!r}",
                 "The sidecar port should only exist inside the container. On localcf this means the "
                 "runtime is not isolating the network (see `localcf status`).")
        impostor = True
    with target.tunnel(app, port, index=index) as local:
        tunnelled = _http_via("127.0.0.1", local, path)
    if tunnelled is None or tunnelled[0] != 200 or _json_or_none(tunnelled[1]) != CONFIG:
        fail(f"the config-server JSON through the tunnel `cf ssh -L {local}:localhost:{port}`",
             "no answer" if tunnelled is None else f"HTTP {tunnelled[0]}: {_short(tunnelled[1])!r}",
             "The tunnel opened, but the sidecar did not answer through it: is it listening on "
             f"port {port} (the check above)?")
    if reached is None:
        outside = "connection refused"
    elif impostor:
        outside = (f"an answer from another program on this machine (the sidecar logged no request; "
                   f"something else listens on {host}:{port})")
    else:
        outside = f"HTTP {reached[0]} from something else"
    return (f"{host}:{port} from outside: {outside}; through `cf ssh -L {local}:localhost:{port}`: "
            f"the sidecar's JSON. Port {port} is private to the container")


def _config_requests_logged(target: Target, app: str, sidecar: str = "config-server") -> int:
    """How many `Received a request for config.` lines the sidecar has logged so far."""
    source = f"APP/PROC/WEB/SIDECAR/{sidecar.upper()}"
    return sum(1 for line in target.recent_logs(app)
               if line.source == source and "Received a request for config." in line.message)


def _wait_for_more_config_requests(target: Target, app: str, before: int, wait: float = 2.0) -> bool:
    deadline = time.monotonic() + wait
    while True:
        if _config_requests_logged(target, app) > before:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _http_via(host: str, port: int, path: str) -> Optional[tuple[int, str]]:
    """(status, body) of GET http://host:port/path, or None when nothing accepts the connection."""
    try:
        r = requests.get(f"http://{host}:{port}{path}", timeout=3)
    except requests.RequestException:
        return None
    return r.status_code, r.text


# ------------------------------------------------------------------------------------- logs

@check("`cf logs {app} --recent` has lines from the app and from sidecar {sidecar}")
def logs_show_app_and_sidecar(target: Target, app: str, sidecar: str = "config-server",
                              process_type: str = "web", index: int = 0) -> tuple[str, Any]:
    """Recent logs hold lines tagged `[APP/PROC/WEB/0]` and `[APP/PROC/WEB/SIDECAR/NAME/0]`."""
    app_source = f"APP/PROC/{process_type.upper()}"
    sidecar_source = f"{app_source}/SIDECAR/{sidecar.upper()}"
    lines = target.recent_logs(app)
    app_lines = [line for line in lines if line.source == app_source and line.instance == str(index)]
    side_lines = [line for line in lines if line.source == sidecar_source and line.instance == str(index)]
    if not app_lines or not side_lines:
        tags = sorted({line.tag for line in lines})
        missing = [f"[{s}/{index}]" for s, found in ((app_source, app_lines), (sidecar_source, side_lines))
                   if not found]
        fail(f"lines tagged [{app_source}/{index}] and [{sidecar_source}/{index}]",
             f"no {' or '.join(missing)}; tags present: {', '.join(tags) or 'no log lines at all'}",
             f"The sidecar's output is tagged with its name uppercased. If it never printed, it may "
             f"not have started: `cf app {app}` and `cf curl /v3/apps/GUID/sidecars`.")
    return (f"recent logs have {len(app_lines)} line(s) tagged [{app_source}/{index}] (e.g. "
            f"{app_lines[-1].message!r}) and {len(side_lines)} tagged [{sidecar_source}/{index}] "
            f"(e.g. {side_lines[-1].message!r})"), (app_lines, side_lines)


# ----------------------------------------------------------------------------------- crashes

def _crash_events(target: Target, app: str) -> list[Any]:
    return target.events(app, types=("app.crash",))


def _running_again(target: Target, app: str, process_type: str, index: int,
                   deadline: float) -> tuple[Optional[Instance], list[Instance]]:
    seen: list[Instance] = []

    def probe() -> Optional[Instance]:
        seen[:] = target.instances(app, process_type)
        return next((i for i in seen if i.index == index and i.state == "RUNNING"), None)

    return _poll(deadline, probe), seen


def _config_again(target: Target, app: str, deadline: float) -> Optional[HttpResponse]:
    last: list[HttpResponse] = []

    def probe() -> bool:
        try:
            response = target.http_get(app, "/config")
        except TargetError:
            return False
        last[:] = [response]
        return response.status == 200 and _json_or_none(response.body) == CONFIG

    return last[0] if _poll(deadline, probe) else None


_RESTART_HINT = ("Cloud Foundry restarts a crashed instance at once after its first and second crash, "
                 "then waits 30 s, 60 s, 2 min, ... and gives up after 200 crashes in a row. A platform "
                 "that does not restart crashed instances leaves the app down: see `cf events {app}` "
                 "and `cf app {app}`.")


def _recovered(target: Target, app: str, process_type: str, index: int, deadline: float,
               after: str) -> None:
    instance, seen = _running_again(target, app, process_type, index, deadline)
    if instance is None:
        states = ", ".join(f"#{i.index} {i.state}" for i in seen) or "no instances"
        fail(f"instance {index} of {app} RUNNING again within {deadline:.0f}s {after}",
             f"{states} after {deadline:.0f}s", _RESTART_HINT.format(app=app))
    if _config_again(target, app, deadline) is None:
        fail(f"GET /config of {app} working again within {deadline:.0f}s {after}",
             "it did not return the config-server's JSON",
             f"The instance is RUNNING but the app cannot reach the sidecar: `cf logs {app} --recent`.")



def _await_crash_event(target: Target, app: str, reason: str, index: int, deadline: float,
                       what_to_run: str) -> list[Any]:
    """The app.crash events of instance `index` with that exit description, polled until `deadline`."""
    def matching() -> list[Any]:
        return [e for e in _crash_events(target, app)
                if e.data.get("exit_description") == reason and e.data.get("index", index) == index]

    events = _poll(deadline, matching)
    if not events:
        others = [e.data.get("exit_description") for e in _crash_events(target, app)]
        fail(f"an app.crash event with exit_description {reason!r}",
             f"crash events: {others}" if others else f"no app.crash event within {deadline:.0f}s",
             f"{what_to_run} `cf events {app}` lists what the platform recorded.")
    return events


@check("kill -9 of {sidecar} crashes instance {index} of {app} (crash_count {crash_count}), and it comes "
       "back RUNNING")
def sidecar_crash_recovers(target: Target, app: str, sidecar: str = "config-server", exit_status: int = 137,
                           crash_count: int = 1, process_type: str = "web", index: int = 0,
                           deadline: float = DEFAULT_DEADLINE) -> tuple[str, Any]:
    """After the sidecar was killed: an app.crash event names it, then the instance runs again."""
    reason = f"APP/PROC/{process_type.upper()}/SIDECAR/{sidecar.upper()}: Exited with status {exit_status}"

    events = _await_crash_event(target, app, reason, index, deadline,
                                f"Run the cell that kills the sidecar (`cf ssh {app} -c \"kill -9 $(pgrep {sidecar})\"`) "
                                f"first.")
    event = events[-1]
    if event.data.get("crash_count") != crash_count:
        fail(f"crash_count {crash_count}", f"crash_count {event.data.get('crash_count')}",
             "crash_count counts the crashes of this instance in a row; it is 1 on a freshly pushed "
             "app. Run the notebook again from the top (its first cell deletes the app).")
    _recovered(target, app, process_type, index, deadline, "after the crash")
    return (f"the crash was recorded (app.crash: {reason!r}, crash_count {crash_count}) and instance "
            f"{index} of {app} is RUNNING again with /config working"), event


@check("when {sidecar} exits with status 0, the app is stopped with it and instance {index} of {app} "
       "crashes (codependence), then comes back")
def codependent_crash(target: Target, app: str, sidecar: str = "config-server", process_type: str = "web",
                      index: int = 0, deadline: float = DEFAULT_DEADLINE) -> tuple[str, Any]:
    """A sidecar's clean exit still crashes the instance, and the app's process is stopped with it."""
    reason = "Codependent step exited"

    events = _await_crash_event(target, app, reason, index, deadline,
                                "Run the cell that stops the sidecar cleanly (`kill -TERM`; the config-server "
                                "exits with status 0 on SIGTERM) first.")
    app_source = f"APP/PROC/{process_type.upper()}"
    sidecar_source = f"{app_source}/SIDECAR/{sidecar.upper()}"

    def app_stopped() -> Optional[LogLine]:
        lines = [line for line in target.recent_logs(app) if line.instance == str(index)]
        exits = [i for i, line in enumerate(lines)
                 if line.source == sidecar_source and line.message.strip() == "Exit status 0"]
        if not exits:
            return None
        after = lines[exits[-1] + 1:]
        return next((line for line in after if line.source == app_source
                     and line.message.startswith("Exit status")), None)

    stopped = _poll(min(deadline, 15.0), app_stopped)
    if stopped is None:
        fail(f"an `Exit status` line of the app ([{app_source}/{index}]) after the sidecar's `Exit status 0`",
             "no such line in `cf logs --recent`",
             "When a sidecar exits the platform stops every other process of the instance; each "
             "process's exit is logged as `Exit status N` on its own stream.")
    _recovered(target, app, process_type, index, deadline, "after the codependent crash")
    return (f"{sidecar} exited with status 0 and the app was stopped with it ({stopped.message!r} on "
            f"[{app_source}/{index}]); the instance crashed ({reason!r}) and is RUNNING again"), events[-1]


# ------------------------------------------------------------------------------------ memory

@check("MEMORY_LIMIT inside {app}: the app gets {process_memory_mb}M minus the sidecar's "
       "{sidecar_memory_mb}M, the sidecar its own {sidecar_memory_mb}M", needs_isolation=True)
def memory_limit_carved(target: Target, app: str, process_memory_mb: int = 256, sidecar_memory_mb: int = 64,
                        sidecar_command: str = "config-server", app_command: str = "app.py",
                        index: int = 0) -> tuple[str, Any]:
    """Sidecar memory is carved out of the process memory: the app sees the rest as MEMORY_LIMIT."""
    snap = container_snapshot(target, app, index)
    app_pids, side_pids = snap.pids_of(app_command), snap.pids_of(sidecar_command)
    if not app_pids or not side_pids:
        fail(f"processes {app_command!r} and {sidecar_command!r} in the container",
             f"processes: {_short('; '.join(snap.processes.values()), 600)}",
             "Both must be running to read their environment; see `cf logs --recent`.")
    app_limit = snap.memory_limits.get(app_pids[0])
    side_limit = snap.memory_limits.get(side_pids[0])
    want_app = f"{process_memory_mb - sidecar_memory_mb}m"
    want_side = f"{sidecar_memory_mb}m"
    if (app_limit, side_limit) != (want_app, want_side):
        fail(f"MEMORY_LIMIT={want_app} for the app and MEMORY_LIMIT={want_side} for the sidecar",
             f"MEMORY_LIMIT={app_limit} for the app and MEMORY_LIMIT={side_limit} for the sidecar",
             f"Give the sidecar `memory: {sidecar_memory_mb}M` in manifest.yml (the app keeps "
             f"`memory: {process_memory_mb}M`) and push again: the platform subtracts sidecar memory "
             "from the process's memory instead of adding it.")
    return (f"the app's MEMORY_LIMIT is {app_limit} ({process_memory_mb}M - {sidecar_memory_mb}M) and the "
            f"sidecar's is {side_limit}: sidecar memory is carved out of the app's"), (app_limit, side_limit)


def wait_until_reachable(target: Target, app: str, path: str = "/", deadline: float = DEFAULT_DEADLINE) -> bool:
    """Poll GET `path` until it answers 200 (or `deadline` passes); for cells right after a restart."""

    def probe() -> bool:
        try:
            return target.http_get(app, path).status == 200
        except TargetError:
            return False

    return bool(_poll(deadline, probe))


# ------------------------------------------------------------ Parts 2 and 3: the sidecar buildpack

from .supply_buildpack import SUPPLY_MARKER, find_in_droplet  # noqa: E402 (Parts 2 and 3 build on the above)

__all__ += [
    "download_error_line",
    "download_failed",
    "droplet_holds",
    "latest_build",
    "sidecar_logged",
    "staging_failed",
    "staging_log",
    "supply_ran",
]

# Texts of the buildpack lifecycle (CF-BEHAVIOUR.md section 1) that say the buildpacks are in the
# wrong order: a supply-only buildpack listed last, or a final-only one listed before it.
_LAST_NOT_MULTI = ("Warning: the last buildpack is not compatible with multi-buildpack apps and cannot "
                   "make use of any dependencies supplied by the buildpacks specified before it")
_NOT_SUPPLY = ("Error: one of the buildpacks chosen to supply dependencies does not support "
               "multi-buildpack apps")
_CONTAINER_CREATED = "creating container for instance"
STAGING_LOG_DEADLINE = 10.0


def download_error_line(url: str, status: int | str) -> str:
    """The line the Part 3 buildpack prints when a download fails: `Could not download URL: HTTP CODE`."""
    return f"Could not download {url}: HTTP {status}"


def latest_build(target: Target, app: str) -> Optional[dict[str, Any]]:
    """The app's newest build (`/v3/apps/GUID/builds`), with its `state` and `error`, or None."""
    builds = target.curl_all(f"/v3/apps/{target.app_guid(app)}/builds?order_by=created_at&per_page=5000")
    # Sorting is stable: builds created in the same second keep the API's (creation) order.
    return sorted(builds, key=lambda b: str(b.get("created_at", "")))[-1] if builds else None


def staging_log(target: Target, app: str) -> list[LogLine]:
    """The `[STG]` lines of the app's latest staging in `cf logs --recent` (from its container's start)."""
    lines = [line for line in target.recent_logs(app) if line.source == "STG"]
    starts = [i for i, line in enumerate(lines) if _CONTAINER_CREATED in line.message]
    return lines[starts[-1]:] if starts else lines


def _staging_log_with(target: Target, app: str, needles: Sequence[str], deadline: float) -> list[LogLine]:
    """The latest staging's lines, waiting briefly until each needle appears (logs may lag the API)."""
    seen: list[LogLine] = []

    def probe() -> bool:
        seen[:] = staging_log(target, app)
        return all(any(n in line.message for line in seen) for n in needles)

    _poll(deadline, probe)
    return seen


def _staging_hint(app: str, lines: Sequence[LogLine]) -> str:
    text = "\n".join(line.message for line in lines)
    if _LAST_NOT_MULTI in text or _NOT_SUPPLY in text or (
            "Failed to compile droplet" in text and "bin/compile" in text):
        return ("The buildpacks are in the wrong order. Only the LAST buildpack in `buildpacks:` is the final "
                "one: it runs finalize (or compile) and decides how the app starts. Every buildpack before it "
                "must be a supply buildpack (bin/supply). List the sidecar buildpack first and "
                "python_buildpack last, then push again.")
    if "Could not download" in text:
        return ("bin/supply could not download the sidecar: the [STG] line above names the URL and the HTTP "
                "status. Check the URL in the buildpack's .downloadurl (upload the binary again if it is "
                "missing) and that anyone may read it.")
    return (f"Read the [STG] lines of `cf logs {app} --recent`: the buildpack that failed printed why just "
            "before `Exit status`.")


def _tail_messages(lines: Sequence[LogLine], count: int = 6) -> str:
    if not lines:
        return "no [STG] lines at all"
    return " | ".join(line.message.strip() for line in lines[-count:])


@check("the latest staging of {app} ran the sidecar buildpack's bin/supply (its lines are in [STG/0])")
def supply_ran(target: Target, app: str, marker: str = SUPPLY_MARKER,
               deadline: float = STAGING_LOG_DEADLINE) -> tuple[str, Any]:
    """The newest build is STAGED and its staging log holds the sidecar buildpack's own lines."""
    build = latest_build(target, app)
    if build is None:
        fail(f"a build of {app}", "no build at all", "Push the app first (the push cell above).")
    lines = _staging_log_with(target, app, [marker], deadline if build.get("state") == "STAGED" else 0.0)
    ours = [line for line in lines if marker in line.message]
    if build.get("state") != "STAGED":
        fail(f"a successful staging whose [STG] lines include {marker!r}",
             f"the latest build is {build.get('state')} ({build.get('error')}); its log ends: "
             f"{_short(_tail_messages(lines), 600)}",
             _staging_hint(app, lines))
    if not ours:
        fail(f"[STG] lines containing {marker!r} (printed by bin/supply)",
             f"none among the {len(lines)} [STG] lines of the latest staging; it ends: "
             f"{_short(_tail_messages(lines), 600)}",
             "The sidecar buildpack did not run, or printed other lines. Is it listed under `buildpacks:` in "
             "the manifest, first, before python_buildpack? Does its bin/supply echo lines starting with "
             f"{marker!r}?")
    return (f"the latest staging of {app} succeeded and ran the sidecar buildpack's bin/supply "
            f"({len(ours)} line(s), e.g. {ours[0].message.strip()!r})"), ours


@check("staging of {app} failed with {error!r}, and the staging log says why")
def staging_failed(target: Target, app: str, error: str, log_contains: Sequence[str] = (),
                   deadline: float = STAGING_LOG_DEADLINE) -> tuple[str, Any]:
    """The newest build FAILED with a Cloud Controller error starting with `error`, and its staging
    log has lines containing each of `log_contains` (e.g. the URL and HTTP status of a download)."""
    build = latest_build(target, app)
    if build is None:
        fail(f"a failed build of {app}", "no build at all", "Run the push cell above first.")
    if build.get("state") != "FAILED":
        fail(f"the latest build FAILED with {error!r}", f"the latest build is {build.get('state')}",
             "Run the push cell with the broken setting just above first: that push must fail (the "
             "`--no-check` in `%cf --no-check push` lets the notebook go on).")
    seen_error = str(build.get("error") or "")
    if not seen_error.startswith(error):
        fail(f"the error {error!r}", f"the error {seen_error!r}",
             "Staging failed, but for another reason than this step expects: read the [STG] lines of "
             f"`cf logs {app} --recent`.")
    lines = _staging_log_with(target, app, list(log_contains), deadline)
    missing = [n for n in log_contains if not any(n in line.message for line in lines)]
    if missing:
        fail(f"[STG] lines containing {missing}",
             f"the latest staging's log ends: {_short(_tail_messages(lines, 10), 900)}",
             "A failing buildpack should say what failed, with the URL and the HTTP status for a download. "
             "Does bin/supply print `Could not download <url>: HTTP <code>` when curl fails?")
    said = [next(line.message.strip() for line in lines if n in line.message) for n in log_contains]
    why = f"; the log says {' / '.join(repr(s) for s in dict.fromkeys(said))}" if said else ""
    return f"staging of {app} failed with {seen_error!r}{why}", build


@check("the logs of {app} have lines from its sidecar {sidecar}")
def sidecar_logged(target: Target, app: str, sidecar: str, text: Optional[str] = None, process_type: str = "web",
                   index: int = 0, deadline: float = 30.0) -> tuple[str, Any]:
    """`cf logs --recent` has lines tagged `[APP/PROC/<TYPE>/SIDECAR/<NAME>/<index>]` (containing `text`)."""
    source = f"APP/PROC/{process_type.upper()}/SIDECAR/{sidecar.upper()}"
    seen: list[LogLine] = []

    def probe() -> list[LogLine]:
        seen[:] = target.recent_logs(app)
        return [line for line in seen if line.source == source and line.instance == str(index)
                and (text is None or text in line.message)]

    found = _poll(deadline, probe)
    if not found:
        tags = sorted({line.tag for line in seen})
        of_sidecar = [line.message for line in seen if line.source == source]
        what = f"lines tagged [{source}/{index}]" + (f" containing {text!r}" if text else "")
        fail(what,
             f"its lines: {_short(' | '.join(of_sidecar[-5:]), 500)}" if of_sidecar else
             f"no [{source}/{index}] lines; tags present: {', '.join(tags) or 'none'}",
             f"A sidecar's output is tagged with its name in capitals. If it has no lines, it did not start: "
             f"is `{sidecar}` under `sidecars:` in the manifest, and did the buildpack install the file its "
             f"command runs? See `cf logs {app} --recent`.")
    return (f"{len(found)} line(s) tagged [{source}/{index}] in the logs of {app}, e.g. "
            f"{found[-1].message!r}"), found


@check("the droplet of {app} holds {path}")
def droplet_holds(target: Target, app: str, path: str, sha256: Optional[str] = None) -> tuple[str, Any]:
    """The app's current droplet (`cf download-droplet`) has the file `path`, executable, with `sha256`."""
    found, siblings = find_in_droplet(target, app, path)
    folder = path.strip("/").rsplit("/", 1)[0] if "/" in path.strip("/") else "."
    if found is None:
        fail(f"a file {path} in the droplet",
             f"no such file; files under {folder}/: {_short(', '.join(siblings), 500) or 'none'}",
             "What bin/supply writes into BUILD_DIR (its first argument) ends up under app/ in the droplet, "
             "and $DEPS_DIR/$DEPS_IDX under deps/IDX/; anything written elsewhere is dropped. Check where "
             "the buildpack writes the file, then push again.")
    if "x" not in found.mode:
        fail(f"{path} executable", f"mode {found.mode}",
             "The sidecar's command runs the file, so bin/supply must `chmod +x` it.")
    if sha256 is not None and found.sha256 != sha256:
        fail(f"{path} with SHA-256 {sha256}", f"{path} with SHA-256 {found.sha256} ({found.size} bytes)",
             "The droplet holds another binary than the one uploaded: the buildpack downloaded another object "
             "(check .downloadurl: an older version?), or the binary was uploaded again after staging. "
             f"Restage (`cf restage {app}`) to download it again.")
    how = f"SHA-256 {found.sha256[:16]}..., the uploaded binary's" if sha256 else f"mode {found.mode}"
    return f"the droplet of {app} holds {found.path} ({found.size} bytes, {how})", found


@check("staging of {app} failed because the sidecar download failed, and says which URL and which HTTP status")
def download_failed(target: Target, app: str, url: str, status: Optional[int | str] = None,
                    error: str = "StagingError", deadline: float = STAGING_LOG_DEADLINE) -> tuple[str, Any]:
    """The newest build FAILED (`error`, a failed supply buildpack), and its staging log has
    `Could not download <url>: HTTP <status>` (any 3-digit status when `status` is None)."""
    prefix = download_error_line(url, "")
    build = latest_build(target, app)
    if build is None or build.get("state") != "FAILED":
        state = "no build at all" if build is None else f"the latest build is {build.get('state')}"
        fail(f"the latest build FAILED with {error!r}", state,
             "Run the push cell with the broken .downloadurl just above first: that push must fail (the "
             "`--no-check` in `%cf --no-check push` lets the notebook go on).")
    seen_error = str(build.get("error") or "")
    lines = _staging_log_with(target, app, [prefix], deadline)
    said = [line.message.strip() for line in lines if prefix in line.message]
    if not seen_error.startswith(error):
        fail(f"the error {error!r}", f"the error {seen_error!r}", _staging_hint(app, lines))
    if not said:
        fail(f"an [STG] line {prefix}<code>",
             f"the latest staging's log ends: {_short(_tail_messages(lines, 10), 900)}",
             "bin/supply should print which URL failed and the HTTP status curl got: "
             "`echo \"Could not download $url: HTTP $code\"` with code from `curl -w '%{http_code}'`.")
    codes = [re.match(r"(\d{3})", line.split(prefix, 1)[1]) for line in said]
    found = [m.group(1) for m in codes if m]
    if not found or (status is not None and str(status).zfill(3) not in found):
        fail(download_error_line(url, status if status is not None else "<3-digit status>"), said[-1],
             "The message must carry the HTTP status curl got (`-w '%{http_code}'`): 404 means the object "
             "is missing, 403 that it is not public, 000 that nothing answered.")
    return f"staging of {app} failed with {seen_error!r}; the log says {said[-1]!r}", said
