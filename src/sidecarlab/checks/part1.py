"""The claims of Part 1: an app with a sidecar answers, the API and `cf app` show the sidecar, both
run in one container, the sidecar's port is private, logs, crashes and recovery, memory."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from ..polling import PollTimeout, poll_until
from ..targets import Event, HttpResponse, Instance, LogLine, Target, TargetError
from .core import DEFAULT_DEADLINE, check, fail
from .core import poll as _poll
from .core import short as _short
from .snapshot import ContainerSnapshot, TcpSocket, container_snapshot

__all__ = [
    "CONFIG",
    "GREETING",
    "SIDECAR_DOWN",
    "app_answers",
    "cf_app_shows_sidecar",
    "codependent_crash",
    "config_from_sidecar",
    "crash_logged",
    "hung_sidecar_unnoticed",
    "logs_show_app_and_sidecar",
    "memory_limit_carved",
    "processes_in_one_container",
    "sidecar_crash_recovers",
    "sidecar_listening",
    "sidecar_per_instance",
    "sidecar_port_private",
    "sidecar_registered",
    "wait_until_reachable",
]

GREETING = "Hi, I'm an app with a sidecar!"
CONFIG = {"Scope": "some-service.admin", "Password": "not-a-real-p4$$w0rd"}
SIDECAR_DOWN = {"error": "error connecting to local config-server"}


# ------------------------------------------------------------------------------ small helpers

def _get(target: Target, app: str, path: str) -> HttpResponse:
    try:
        return target.http_get(app, path)
    except TargetError as exc:
        fail(f"an HTTP answer from GET {path}", str(exc), _unreachable_hint(target, app, exc))


def _unreachable_hint(target: Target, app: str, exc: TargetError) -> str:
    """Why an app could not be asked at all: it is not there, or the platform does not answer."""
    if exc.hint:
        return exc.hint
    try:
        exists = target.app_exists(app)
    except TargetError:
        exists = None
    if exists is False:
        return (f"There is no app '{app}' in the targeted space (`cf apps` lists the apps): push it "
                "first (run the push cell above), then run this cell again.")
    if exists:
        return (f"The app '{app}' exists but the router gave no answer for it: `cf app {app}` shows whether "
                f"an instance runs; `cf logs {app} --recent` says why not.")
    return ("The platform did not answer: is it running? (`localcf status` on the local target, "
            "`cf api` and `cf target` on a real foundation).")


def _router_hint(app: str, response: HttpResponse) -> str:
    error = response.headers.get("X-Cf-RouterError", "")
    if error == "unknown_route" or response.status == 404 and "does not exist" in response.body:
        return (f"The router has no running instance of '{app}': is it pushed and started? "
                f"Run `cf app {app}`; if it crashed, `cf logs {app} --recent` says why.")
    if error == "endpoint_failure" or response.status == 502 and "Registered endpoint" in response.body:
        return (f"The router reached an instance of '{app}' but it did not answer: the app may have "
                f"just crashed. See `cf logs {app} --recent`.")
    return f"See `cf logs {app} --recent` for what the app printed."


# ------------------------------------------------------------------------------- HTTP claims

@check("GET {path} of {app} answers {expected!r}")
def app_answers(target: Target, app: str, path: str = "/", expected: str = GREETING) -> tuple[str, Any]:
    """The app answers `path` through the router with `expected`."""
    response = _get(target, app, path)
    if response.status != 200 or response.body.strip() != expected:
        fail(f"HTTP 200 with the body {expected!r}",
             f"HTTP {response.status} with the body {_short(response.body)!r}",
             _router_hint(app, response))
    return f"GET {path} of {app} answers {expected!r} (HTTP 200, through the router)", response


@check("GET /config of {app} returns the config-server's JSON, fetched by the app from its sidecar")
def config_from_sidecar(target: Target, app: str, expected: dict[str, Any] | None = None,
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
    common = ("The app answered, but nothing answered it on localhost:$CONFIG_SERVER_PORT inside its "
              "container (within the app's 3 s). ")
    try:
        sidecars = target.sidecars(app)
    except TargetError:
        sidecars = []
    if not sidecars:
        return (common + f"The app has no sidecar at all (`cf curl /v3/apps/$(cf app {app} --guid)/sidecars` "
                "lists none): add the `sidecars:` block (name config-server, process_types [web], "
                "command ./config-server) to manifest.yml, apply it and push again.")
    names = ", ".join(s.get("name", "?") for s in sidecars)
    return (common + f"The app has the sidecar(s) {names}. If you froze it with `kill -STOP`, thaw it: "
            f"`cf ssh {app} -c \"kill -CONT $(pgrep config-server)\"`. Otherwise check that the config-server binary was built "
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
             f"List {process_type} under `process_types:` of the {sidecar} sidecar in manifest.yml, then apply "
             "the manifest or push again.")
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
    types = re.findall(r"^type:\s*(\S+)", output, flags=re.MULTILINE)
    if process_type not in types:
        fail(f"a process of type {process_type} with `sidecars:` naming {sidecar}",
             f"no process of type {process_type}; `cf app` lists the type(s) {', '.join(types) or 'none'}",
             f"Declare the {process_type} process in manifest.yml (under `processes:`, with its command and "
             f"`instances:`), list it in the sidecar's process_types, and push again.")
    if sidecar not in names:
        seen = (f"sidecars: {sidecar_lines[process_type]!r} for type {process_type}"
                if process_type in sidecar_lines else f"no `sidecars:` line for type {process_type}")
        fail(f"`sidecars:` naming {sidecar} under `type: {process_type}`", seen,
             "cf CLI v7+ prints sidecars per process; the sidecar must be attached to this process type.")
    return f"`cf app {app}` shows `sidecars: {', '.join(names)}` for type {process_type}"


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
             f"The sidecar must listen on the port the app calls: both read $CONFIG_SERVER_PORT ({port}) "
             f"when they start. After `cf set-env`, restart the app (`cf restart {app}`) so that both read the "
             "new value; otherwise check the sidecar's command in manifest.yml and the env: block.")
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
    print(_tunnel_shown(app, port, index), flush=True)
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


def _tunnel_shown(app: str, port: int, index: int = 0) -> str:
    where = f" -i {index}" if index else ""
    return f"$ cf ssh {app}{where} -N -L LOCAL:localhost:{port}   # then, on this machine: curl localhost:LOCAL/config/"


def _config_requests_logged(target: Target, app: str, sidecar: str = "config-server") -> int:
    """How many `Received a request for config.` lines the sidecar has logged so far."""
    source = f"APP/PROC/WEB/SIDECAR/{sidecar.upper()}"
    return sum(1 for line in target.recent_logs(app)
               if line.source == source and "Received a request for config." in line.message)


def _wait_for_more_config_requests(target: Target, app: str, before: int, wait: float = 2.0) -> bool:
    try:
        return poll_until(lambda: _config_requests_logged(target, app) > before, timeout=wait, interval=0.2)
    except PollTimeout:
        return False


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _http_via(host: str, port: int, path: str) -> tuple[int, str] | None:
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

APP_CRASH = "app.crash"
PROCESS_CRASH = "audit.app.process.crash"
# What Diego writes when a sidecar (or the app) exits with status 0: today the bare error, joined
# with `; ` to any other; older cells `2 error(s) occurred:\n\n* Codependent step exited\n* cancelled`.
CODEPENDENT_EXIT = "Codependent step exited"


def _crash_events(target: Target, app: str) -> list[Event]:
    return target.events(app, types=(APP_CRASH,))


def _codependent(description: str) -> bool:
    return any(part.strip(" *\n") == CODEPENDENT_EXIT
               for part in description.replace("\n", ";").split(";"))


def _running_again(target: Target, app: str, process_type: str, index: int,
                   deadline: float) -> tuple[Instance | None, list[Instance]]:
    seen: list[Instance] = []

    def probe() -> Instance | None:
        seen[:] = target.instances(app, process_type)
        return next((i for i in seen if i.index == index and i.state == "RUNNING"), None)

    return _poll(deadline, probe), seen


def _config_again(target: Target, app: str, deadline: float) -> HttpResponse | None:
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



def _await_crash_event(target: Target, app: str, matches: Callable[[str], bool], shown: str, index: int,
                       deadline: float, what_to_run: str) -> list[Event]:
    """The app.crash events of instance `index` whose exit description `matches`, polled until `deadline`."""
    def matching() -> list[Event]:
        return [e for e in _crash_events(target, app)
                if matches(str(e.data.get("exit_description", ""))) and e.data.get("index", index) == index]

    events = _poll(deadline, matching)
    if not events:
        others = [e.data.get("exit_description") for e in _crash_events(target, app)]
        fail(f"an app.crash event with exit_description {shown}",
             f"crash events: {others}" if others else f"no app.crash event within {deadline:.0f}s",
             f"{what_to_run} `cf events {app}` lists what the platform recorded.")
    return events


def _process_crash_for(target: Target, app: str, crash: Event) -> Event | None:
    """The audit.app.process.crash event of the same crash as the app.crash event `crash`: Cloud
    Controller keeps the crash_count only there (app.crash metadata is a slice of the payload)."""
    instance, index = crash.data.get("instance"), crash.data.get("index")
    candidates = [e for e in target.events(app, types=(PROCESS_CRASH,))
                  if e.data.get("index") == index and (not instance or e.data.get("instance") == instance)
                  and str(e.data.get("exit_description", "")).startswith(
                      str(crash.data.get("exit_description", ""))[:200])]
    return candidates[-1] if candidates else None


@check("kill -9 of {sidecar} crashes instance {index} of {app} (crash_count {crash_count}), and it comes "
       "back RUNNING")
def sidecar_crash_recovers(target: Target, app: str, sidecar: str = "config-server", exit_status: int = 137,
                           crash_count: int = 1, process_type: str = "web", index: int = 0,
                           deadline: float = DEFAULT_DEADLINE) -> tuple[str, Any]:
    """After the sidecar was killed: an app.crash event names it, then the instance runs again."""
    reason = f"APP/PROC/{process_type.upper()}/SIDECAR/{sidecar.upper()}: Exited with status {exit_status}"

    events = _await_crash_event(target, app, lambda seen: seen == reason, repr(reason), index, deadline,
                                f"Run the cell that kills the sidecar "
                                f"(`cf ssh {app} -c \"kill -9 $(pgrep {sidecar})\"`) first.")
    event = events[-1]
    process_event = _poll(min(deadline, 10.0), lambda: _process_crash_for(target, app, event))
    if process_event is None:
        fail(f"an {PROCESS_CRASH} event for the same crash (it carries crash_count)",
             f"only the {APP_CRASH} event {event.data}",
             f"Cloud Controller records both events for every crash; see `cf events {app}`.")
    seen_count = process_event.data.get("crash_count")
    if seen_count != crash_count:
        fail(f"crash_count {crash_count}", f"crash_count {seen_count} (in {PROCESS_CRASH})",
             "crash_count counts the crashes of this instance in a row; it is 1 on a freshly pushed "
             "app. Run the notebook again from the top (its first cell deletes the app).")
    _recovered(target, app, process_type, index, deadline, "after the crash")
    return (f"the crash was recorded (app.crash: {reason!r}; {PROCESS_CRASH}: crash_count {crash_count}) "
            f"and instance {index} of {app} is RUNNING again with /config working"), event


@check("when {sidecar} exits with status 0, the app is stopped with it and instance {index} of {app} "
       "crashes (codependence), then comes back")
def codependent_crash(target: Target, app: str, sidecar: str = "config-server", process_type: str = "web",
                      index: int = 0, deadline: float = DEFAULT_DEADLINE) -> tuple[str, Any]:
    """A sidecar's clean exit still crashes the instance, and the app's process is stopped with it."""
    reason = CODEPENDENT_EXIT

    events = _await_crash_event(target, app, _codependent, f"saying {reason!r}", index, deadline,
                                "Run the cell that stops the sidecar cleanly (`kill -TERM`; the config-server "
                                "exits with status 0 on SIGTERM) first.")
    app_source = f"APP/PROC/{process_type.upper()}"
    sidecar_source = f"{app_source}/SIDECAR/{sidecar.upper()}"

    def app_stopped() -> LogLine | None:
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


# Cloud Controller's log line for a crashed instance (CF-BEHAVIOUR.md section 3), e.g.
# `App instance exited with guid G payload: {"instance"=>"...", ..., "exit_description"=>"...", ...}`.
_INSTANCE_EXITED = re.compile(r"App instance exited with guid (\S+) payload: (\{.*\})")


@check("`cf logs {app} --recent` has Cloud Controller's [API] line for the crash of instance {index}: "
       "`App instance exited ... payload` naming {sidecar}")
def crash_logged(target: Target, app: str, sidecar: str = "config-server", exit_status: int = 137,
                 process_type: str = "web", index: int = 0, deadline: float = 30.0) -> tuple[str, Any]:
    """Recent logs hold `[API/N] OUT App instance exited with guid APP payload: {...}` with the reason."""
    reason = f"APP/PROC/{process_type.upper()}/SIDECAR/{sidecar.upper()}: Exited with status {exit_status}"
    guid = target.app_guid(app)
    seen: list[LogLine] = []

    def probe() -> list[LogLine]:
        seen[:] = target.recent_logs(app)
        return [line for line in seen if line.source == "API" and (m := _INSTANCE_EXITED.search(line.message))
                and m.group(1) == guid and f'"exit_description"=>"{reason}"' in m.group(2)
                and f'"index"=>{index}' in m.group(2)]

    found = _poll(deadline, probe)
    if not found:
        api = [line.message for line in seen if line.source == "API"]
        fail(f"an [API] line `App instance exited with guid {guid} payload: {{...\"exit_description\"=>"
             f"\"{reason}\"...}}`",
             f"[API] lines: {_short(' | '.join(api[-4:]), 900)}" if api else
             f"no [API] lines among the {len(seen)} recent log lines",
             f"Cloud Controller logs this line when an instance crashes. Kill the sidecar first (the "
             f"`kill -9` cell above); `cf logs {app} --recent` keeps only the latest lines, so run this "
             "check soon after.")
    line = found[-1]
    payload = _INSTANCE_EXITED.search(line.message)
    assert payload is not None
    count = re.search(r'"crash_count"=>(\d+)', payload.group(2))
    return (f"{line.tag} says `App instance exited with guid {guid} payload: ...` with exit_description "
            f"{reason!r}" + (f" and crash_count {count.group(1)}" if count else "")), line


# ------------------------------------------------------------------------------ a hung sidecar

# How long the app waits for its sidecar before it answers with its error (fixtures' app.py).
APP_SIDECAR_TIMEOUT = 3.0


def _in_flight(snap: ContainerSnapshot, app_command: str, port: int) -> list[TcpSocket]:
    app_pids = snap.pids_of(app_command)
    return [s for s in snap.sockets if s.pid in app_pids and s.remote_port == port and s.state == "ESTABLISHED"]


@check("while {sidecar_command} is frozen (SIGSTOP), instance {index} of {app} stays RUNNING, the app's "
       "connection to port {port} waits ESTABLISHED, and GET /config answers the app's error",
       needs_isolation=True)
def hung_sidecar_unnoticed(target: Target, app: str, port: int = 8082, sidecar_command: str = "config-server",
                           app_command: str = "app.py", process_type: str = "web", index: int = 0,
                           deadline: float = 30.0) -> tuple[str, Any]:
    """A stopped (not dead) sidecar is not noticed by the platform: the app's requests to it hang until
    the app gives up and answers `{"error": ...}`; meanwhile the app's socket to it is ESTABLISHED."""
    target.app_guid(app)  # an app that is not there is said so plainly, before any thread starts
    answers: list[HttpResponse | TargetError] = []
    stop = threading.Event()

    def ask() -> None:
        # Requests keep coming, each held open for the app's timeout, so a snapshot taken at any
        # moment (a real foundation's `cf ssh` takes seconds to log in) finds one in flight.
        while not stop.is_set():
            try:
                answers.append(target.http_get(app, "/config", timeout=APP_SIDECAR_TIMEOUT + 15))
            except TargetError as exc:
                answers.append(exc)
                return

    askers = [threading.Thread(target=ask, daemon=True) for _ in range(2)]
    for i, asker in enumerate(askers):
        asker.start()
        if i == 0:
            time.sleep(APP_SIDECAR_TIMEOUT / 2)
    snaps: list[ContainerSnapshot] = []
    try:
        def caught() -> list[TcpSocket] | bool:
            if any(isinstance(a, TargetError) for a in answers):
                return True  # the app cannot be asked at all: nothing to wait for
            snaps[:] = [container_snapshot(target, app, index)]
            return _in_flight(snaps[0], app_command, port)

        outcome = _poll(deadline, caught)
        in_flight = outcome if isinstance(outcome, list) else []
    finally:
        stop.set()
        for asker in askers:
            asker.join(APP_SIDECAR_TIMEOUT + 20)
    errors = [a for a in answers if isinstance(a, TargetError)]
    if errors:
        fail(f"answers from GET /config of {app}", str(errors[0]), _unreachable_hint(target, app, errors[0]))
    responses = [a for a in answers if isinstance(a, HttpResponse)]
    if not responses:
        fail(f"an answer from GET /config of {app} within {deadline:.0f}s", "no answer at all",
             f"The app gives up on its sidecar after {APP_SIDECAR_TIMEOUT:.0f}s; see `cf logs {app} --recent`.")
    served = [r for r in responses if r.status == 200 and _json_or_none(r.body) == CONFIG]
    if served:
        fail(f"the app's error {json.dumps(SIDECAR_DOWN)} (HTTP 502): the sidecar cannot answer",
             "HTTP 200 with the sidecar's JSON: the sidecar answered, so it is not frozen",
             f"Freeze the sidecar first: run the cell `cf ssh {app} -c \"kill -STOP $(pgrep {sidecar_command})\"` "
             "above (and thaw it with `kill -CONT` afterwards).")
    last = responses[-1]
    if last.status != 502 or _json_or_none(last.body) != SIDECAR_DOWN:
        fail(f"HTTP 502 with the app's error {json.dumps(SIDECAR_DOWN)}",
             f"HTTP {last.status} with the body {_short(last.body)!r}", _router_hint(app, last))
    if not in_flight:
        snap = snaps[0] if snaps else None
        on_port = [f"{snap.command(s.pid).split(' ')[0] if snap else '?'} {s.state} "
                   f"{s.local}:{s.local_port}->{s.remote}:{s.remote_port}"
                   for s in (snap.sockets if snap else []) if port in (s.local_port, s.remote_port)]
        fail(f"an ESTABLISHED connection from the app ({app_command}) to port {port} while a request waits",
             f"sockets on port {port}: {'; '.join(on_port) or 'none'}",
             f"Each /config request holds a connection to the sidecar for up to {APP_SIDECAR_TIMEOUT:.0f}s "
             f"while the sidecar is frozen. Is the app's CONFIG_SERVER_PORT {port}? (`cf env {app}`)")
    instances = target.instances(app, process_type)
    mine = next((i for i in instances if i.index == index), None)
    if mine is None or mine.state != "RUNNING":
        fail(f"instance {index} RUNNING: a frozen sidecar is still a running process",
             f"instance {index} is {mine.state if mine else 'missing'}",
             "Only the app process is health checked; a sidecar is only watched for having exited. Did the "
             f"sidecar exit instead of stopping? `cf events {app}` shows a crash if it did.")
    sock = in_flight[0]
    return (f"the app (PID {sock.pid}) held an ESTABLISHED connection to {sock.remote}:{sock.remote_port}, "
            f"the frozen sidecar, GET /config answered HTTP 502 "
            f"{last.body.strip()}, and instance {index} stayed RUNNING"), (snaps[0] if snaps else None)


# -------------------------------------------------------------------------- one per instance

@check("each of the {instances} instances of {app}'s {process_type} process runs its own {sidecar_command}, "
       "listening on port {port} in its own container", needs_isolation=True)
def sidecar_per_instance(target: Target, app: str, instances: int = 2, sidecar_command: str = "config-server",
                         port: int = 8082, process_type: str = "web",
                         deadline: float = DEFAULT_DEADLINE) -> tuple[str, Any]:
    """`cf scale APP -i N` gives N instances, and every instance's container has its own sidecar."""
    seen: list[Instance] = []

    def all_running() -> bool:
        seen[:] = target.instances(app, process_type)
        return len(seen) == instances and all(i.state == "RUNNING" for i in seen)

    if not _poll(deadline, all_running):
        states = ", ".join(f"#{i.index} {i.state}" for i in seen) or "no instances"
        fail(f"{instances} RUNNING instances of {process_type}", f"{states} after {deadline:.0f}s",
             f"Scale the process first: `cf scale {app} -i {instances}` (the cell above); `cf app {app}` "
             "shows the instances as they start.")
    found = []
    for inst in sorted(seen, key=lambda i: i.index):
        snap = container_snapshot(target, app, inst.index)
        pids = snap.pids_of(sidecar_command)
        listening = [s for s in snap.sockets if s.state == "LISTEN" and s.local_port == port and s.pid in pids]
        if not pids or not listening:
            fail(f"a {sidecar_command} listening on port {port} inside instance {inst.index}",
                 f"processes of instance {inst.index}: {_short('; '.join(snap.processes.values()), 600)}",
                 f"Every instance of {process_type} starts its own sidecars; if one is missing it may have "
                 f"crashed: `cf logs {app} --recent` (look at [APP/PROC/{process_type.upper()}/SIDECAR/.../"
                 f"{inst.index}]).")
        found.append((inst.index, listening[0].pid))
    described = "; ".join(f"instance {i}: {sidecar_command} PID {pid}" for i, pid in found)
    return (f"{len(found)} instances of {process_type}, each with its own {sidecar_command} listening on port "
            f"{port} ({described}): the same port in each, so each is a container of its own"), found


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
