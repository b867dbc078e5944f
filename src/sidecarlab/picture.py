"""A picture of one instance, drawn from live data: the container with its processes (the app, its
sidecars, PIDs), the ports they listen on, the app's connection to its sidecar, the route from the
router into the app's port, and what this machine can and cannot reach from outside.

Two halves, like the checks: `render` is pure (a `ContainerSnapshot` and the `InstanceFacts` of the
route and the outside probes in, an SVG string out), and `instance` gathers the facts on a target the
way the checks do (`GET /config` through the router, then the same `/proc` snapshot
`checks.sidecar_listening` reads, then a request from outside to each sidecar port, told apart from
another program on this machine the way `checks.sidecar_port_private` does), prints one line of text
and shows the SVG inline. The SVG is built with `xml.etree` (every name escaped) and says what it
draws in `class` and `data-*` attributes (`g.process[data-pid]`, `g.port[data-port]`,
`g.connection`, `g.route`, `g.reach`), so tests read the picture instead of trusting it.
"""

from __future__ import annotations

import shlex
import socket
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from IPython import get_ipython
from IPython.display import display

from .checks.core import SKIPPED_MARK
from .checks.part1 import (
    CONFIG,
    _config_requests_logged,
    _http_via,
    _json_or_none,
    _wait_for_more_config_requests,
)
from .checks.snapshot import ContainerSnapshot, TcpSocket, container_snapshot
from .targets import Target, TargetError

__all__ = [
    "InstanceFacts",
    "InstancePicture",
    "Process",
    "Reach",
    "Sidecar",
    "describe",
    "instance",
    "processes",
    "render",
]

_SVG_NS = "http://www.w3.org/2000/svg"
_INTERPRETERS = {"python", "python3", "ruby", "node", "java", "perl", "php", "bash", "sh"}


# ------------------------------------------------------------------------------- the facts

@dataclass(frozen=True)
class Reach:
    """What a request from outside the container got: `reached` is True when it reached the process
    in the container, False when it did not, None when it cannot be told; `seen` says what came back."""

    reached: bool | None
    seen: str


@dataclass(frozen=True)
class Sidecar:
    """A sidecar of the app: its name, and what its process's command line contains."""

    name: str
    needle: str

    @classmethod
    def from_command(cls, name: str, command: str) -> Sidecar:
        """The sidecar of the API (`name`, `command`), found in `ps` by its program's file name
        (`CONFIG_SERVER_PORT=9099 ./config-server` runs as `./config-server`)."""
        try:
            words = shlex.split(command)
        except ValueError:
            words = command.split()
        program = next((w for w in words if "=" not in w.partition("/")[0]), name)
        return cls(name, program.rsplit("/", 1)[-1] or name)


@dataclass(frozen=True)
class InstanceFacts:
    """What the picture needs besides the snapshot: which process is which, the route, and what a
    request from outside (`outside_host`) got, through the router and on each sidecar port."""

    app: str
    index: int = 0
    app_command: str = "app.py"
    sidecars: tuple[Sidecar, ...] = (Sidecar("config-server", "config-server"),)
    route: str = ""
    route_port: int | None = None
    through_router: Reach | None = None
    outside_host: str = "127.0.0.1"
    outside: Mapping[int, Reach] = field(default_factory=dict)


@dataclass(frozen=True)
class Process:
    """A process of the instance as the picture draws it."""

    pid: int
    command: str
    role: str  # "app", "sidecar" or "other"
    name: str  # the app's name, the sidecar's name, or the program's


def processes(snapshot: ContainerSnapshot, facts: InstanceFacts) -> list[Process]:
    """The instance's processes (the snapshot's own shell left out), each with its role: the app,
    one of the sidecars, or another process of the container; app first, then sidecars, then others."""
    app_pids = set(snapshot.pids_of(facts.app_command))
    found: list[Process] = []
    for pid, command in sorted(snapshot.processes.items()):
        if pid == snapshot.self_pid or "/proc/" in command:
            continue
        sidecar = next((s for s in facts.sidecars if pid in snapshot.pids_of(s.needle)), None)
        if pid in app_pids:
            found.append(Process(pid, command, "app", facts.app))
        elif sidecar is not None:
            found.append(Process(pid, command, "sidecar", sidecar.name))
        else:
            found.append(Process(pid, command, "other", _program(command)))
    order = {"app": 0, "sidecar": 1, "other": 2}
    return sorted(found, key=lambda p: (order[p.role], p.pid))


def _program(command: str) -> str:
    words = command.split()
    if not words:
        return "?"
    first = words[0].rsplit("/", 1)[-1]
    if first.rstrip("0123456789.") in _INTERPRETERS:
        script = next((w for w in words[1:] if not w.startswith("-")), "")
        if script:
            return script.rsplit("/", 1)[-1]
    return first


def _short_command(command: str, limit: int = 44) -> str:
    """The command line with directories left out of its words (they say nothing here)."""
    text = " ".join(w.rsplit("/", 1)[-1] if "/" in w and not w.startswith("./") else w for w in command.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _listening(snapshot: ContainerSnapshot) -> dict[tuple[int | None, int], list[str]]:
    """(owner PID, port) -> the addresses it listens on, in the snapshot's order."""
    ports: dict[tuple[int | None, int], list[str]] = {}
    for s in snapshot.sockets:
        if s.state == "LISTEN":
            addresses = ports.setdefault((s.pid, s.local_port), [])
            if s.local not in addresses:
                addresses.append(s.local)
    return ports


def _connection(snapshot: ContainerSnapshot, port: int, client_pids: Iterable[int]) -> TcpSocket | None:
    """The connection to `port` that the sidecar check also counts: one the app holds, else any
    other (what is left of the app's last request after it closed it: TIME_WAIT, owner gone)."""
    clients = set(client_pids)
    others = [s for s in snapshot.sockets if s.state != "LISTEN" and port in (s.local_port, s.remote_port)]
    return next((s for s in others if s.pid in clients and s.remote_port == port), others[0] if others else None)


# ------------------------------------------------------------------------------ the picture

_WIDTH = 780
_WALL_X, _WALL_W = 300, 460      # the container
_PORT_X, _PORT_W = 316, 64       # port badges, inside the wall
_PROC_X, _PROC_W = 410, 330      # process boxes
_ROW = 78                        # height of an app or sidecar row
_OTHER_ROW = 40
_TOP = 64
_OK, _NO, _UNKNOWN, _INK, _MUTED = "#2e7d32", "#c62828", "#8d6e00", "#263238", "#607d8b"


def _el(parent: ET.Element, tag: str, text: str | None = None, **attrs: Any) -> ET.Element:
    child = ET.SubElement(parent, tag, {k.rstrip("_").replace("_", "-"): str(v) for k, v in attrs.items()})
    if text is not None:
        child.text = text
    return child


def _yes_no(reach: Reach | None) -> str:
    if reach is None or reach.reached is None:
        return "unknown"
    return "yes" if reach.reached else "no"


def _colour(reach: Reach | None) -> str:
    return {"yes": _OK, "no": _NO}.get(_yes_no(reach), _UNKNOWN)


def render(snapshot: ContainerSnapshot, facts: InstanceFacts) -> str:
    """The picture of the instance as an SVG document (a string), from `snapshot` and `facts` only."""
    drawn = processes(snapshot, facts)
    ports = _listening(snapshot)
    drawn_pids = {p.pid for p in drawn}
    unowned = sorted((port, pid) for (pid, port) in ports if pid not in drawn_pids)
    rows_h = sum(_ROW if p.role != "other" else _OTHER_ROW for p in drawn) + (_OTHER_ROW if unowned else 0)
    height = _TOP + rows_h + 86 + 16 * len(facts.outside)

    svg = ET.Element("svg", {"xmlns": _SVG_NS, "width": str(_WIDTH), "height": str(height),
                             "viewBox": f"0 0 {_WIDTH} {height}", "class": "sidecarlab-instance",
                             "data-app": facts.app, "data-index": str(facts.index),
                             "font-family": "sans-serif", "font-size": "12"})
    _el(svg, "title", f"instance {facts.index} of {facts.app}")
    defs = _el(svg, "defs")
    for name, colour in (("ok", _OK), ("no", _NO), ("unknown", _UNKNOWN), ("ink", _INK)):
        marker = _el(defs, "marker", id=f"sidecarlab-arrow-{name}", viewBox="0 0 10 10", refX=9, refY=5,
                     markerWidth=7, markerHeight=7, orient="auto-start-reverse")
        _el(marker, "path", d="M 0 0 L 10 5 L 0 10 z", fill=colour)

    box = _el(svg, "g", class_="container")
    _el(box, "rect", x=_WALL_X, y=_TOP - 34, width=_WALL_W, height=height - _TOP + 24, rx=10, fill="#f5f9ff",
        stroke="#1565c0", stroke_width=2)
    _el(box, "text", f"container: instance {facts.index} of {facts.app}", x=_WALL_X + 12, y=_TOP - 14,
        font_weight="bold", fill="#1565c0")

    # the processes, each with the ports it listens on
    port_y: dict[int, float] = {}                   # port -> the middle of its (first) badge
    rows: dict[int, tuple[float, float]] = {}       # pid -> (top, height) of its box
    y = float(_TOP)
    for proc in drawn:
        row_h = _ROW if proc.role != "other" else _OTHER_ROW
        rows[proc.pid] = (y, row_h - 14)
        _process_box(svg, proc, y, row_h - 14, snapshot.memory_limits.get(proc.pid))
        stroke = {"app": "#1565c0", "sidecar": "#ef6c00"}.get(proc.role, _MUTED)
        for i, port in enumerate(sorted(port for (pid, port) in ports if pid == proc.pid)):
            middle = y + 11 + i * 26
            _port_badge(svg, port, proc.pid, ports[(proc.pid, port)], middle, facts)
            _el(svg, "line", x1=_PORT_X + _PORT_W, y1=middle, x2=_PROC_X, y2=middle, stroke=stroke)
            port_y.setdefault(port, middle)
        y += row_h
    if unowned:
        _el(svg, "text", "listening, owner not visible from the shell", x=_PROC_X, y=y + 15, fill=_MUTED)
        for i, (port, owner) in enumerate(unowned):
            middle = y + 11 + i * 26
            _port_badge(svg, port, owner, ports[(owner, port)], middle, facts)
            port_y.setdefault(port, middle)
        y += _OTHER_ROW

    # the app's connection to each port its sidecars listen on: from the app's box down a lane
    # between the port badges and the boxes, into the top of the sidecar's port badge
    app_proc = next((p for p in drawn if p.role == "app"), None)
    app_pids = [p.pid for p in drawn if p.role == "app"]
    lane = 0
    for side in (p for p in drawn if p.role == "sidecar"):
        for port in sorted(port for (pid, port) in ports if pid == side.pid):
            conn = _connection(snapshot, port, app_pids)
            if conn is None or app_proc is None:
                continue
            top, box_h = rows[app_proc.pid]
            lane_x = _PORT_X + _PORT_W + 8 + 6 * (lane % 4)
            badge_x, badge_top = _PORT_X + _PORT_W / 2, port_y[port] - 11
            owner = conn.pid if conn.pid in app_pids else None
            group = _el(svg, "g", class_="connection", data_to_port=port, data_to_pid=side.pid,
                        data_from_pid="" if owner is None else owner, data_state=conn.state)
            _el(group, "title", f"{conn.local}:{conn.local_port} - {conn.remote}:{conn.remote_port} {conn.state}")
            _el(group, "path", d=f"M {_PROC_X} {top + box_h - 8 - 4 * lane} L {lane_x} {top + box_h - 8 - 4 * lane} "
                f"L {lane_x} {badge_top - 8} L {badge_x} {badge_top - 8} L {badge_x} {badge_top}",
                fill="none", stroke=_INK, stroke_width=1.5,
                stroke_dasharray="none" if conn.state == "ESTABLISHED" else "4 3",
                marker_end="url(#sidecarlab-arrow-ink)")
            how = conn.state if owner is not None else f"{conn.state}, the app's closed request"
            _el(group, "text", f"app → localhost:{port} ({how})", x=_PROC_X + 10,
                y=rows[side.pid][0] - 3, fill=_INK, font_size=11)
            lane += 1

    # outside the container: the router, and this machine
    router_y = port_y.get(facts.route_port, float(_TOP + 11)) if facts.route_port is not None else float(_TOP + 11)
    _outside(svg, facts, router_y, y + 24, port_y)
    return ET.tostring(svg, encoding="unicode")


def _process_box(svg: ET.Element, proc: Process, y: float, box_h: float, memory_limit: str | None) -> None:
    group = _el(svg, "g", class_="process", data_pid=proc.pid, data_name=proc.name, data_role=proc.role,
                data_command=proc.command)
    _el(group, "title", proc.command)
    fill, stroke = {"app": ("#e3f2fd", "#1565c0"), "sidecar": ("#fff3e0", "#ef6c00")}.get(
        proc.role, ("#eceff1", _MUTED))
    _el(group, "rect", x=_PROC_X, y=y, width=_PROC_W, height=box_h, rx=6, fill=fill, stroke=stroke)
    label = {"app": f"app: {proc.name}", "sidecar": f"sidecar: {proc.name}"}.get(proc.role, proc.name)
    _el(group, "text", _clip(label, 38), x=_PROC_X + 10, y=y + 17, font_weight="bold", fill=_INK)
    _el(group, "text", f"PID {proc.pid}", x=_PROC_X + _PROC_W - 10, y=y + 17, text_anchor="end", fill=_INK)
    if proc.role != "other":
        _el(group, "text", _short_command(proc.command), x=_PROC_X + 10, y=y + 35, fill=_MUTED,
            font_family="monospace", font_size=11)
        if memory_limit:
            _el(group, "text", f"MEMORY_LIMIT={memory_limit}", x=_PROC_X + 10, y=y + 52, fill=_MUTED,
                font_size=11)


def _port_badge(svg: ET.Element, port: int, pid: int | None, addresses: Sequence[str], middle: float,
                facts: InstanceFacts) -> None:
    reach = facts.outside.get(port)
    routed = port == facts.route_port
    group = _el(svg, "g", class_="port", data_port=port, data_pid="" if pid is None else pid,
                data_addresses=",".join(addresses), data_routed="yes" if routed else "no",
                data_reachable_from_host="yes" if routed and _yes_no(facts.through_router) == "yes"
                else _yes_no(reach) if reach else "unknown")
    _el(group, "title", f"listening on {', '.join(addresses)} port {port}")
    _el(group, "rect", x=_PORT_X, y=middle - 11, width=_PORT_W, height=22, rx=4, fill="white",
        stroke=_OK if routed else _INK)
    _el(group, "text", f":{port}", x=_PORT_X + _PORT_W / 2, y=middle + 4, text_anchor="middle",
        font_family="monospace", fill=_INK)


def _outside(svg: ET.Element, facts: InstanceFacts, router_y: float, host_y: float,
             port_y: Mapping[int, float]) -> None:
    left, width = 16, 200
    route = _el(svg, "g", class_="route", data_route=facts.route, data_port=facts.route_port or "",
                data_reachable_from_host=_yes_no(facts.through_router))
    # a long route on two lines, broken before its domain: it is what the learner typed into a browser
    lines = [facts.route or "(no route)"]
    if len(lines[0]) > 32 and "." in lines[0]:
        host_name, _, domain = lines[0].partition(".")
        lines = [host_name, "." + domain]
    router_bottom = router_y + 8 + 14 * len(lines)
    _el(route, "rect", x=left, y=router_y - 22, width=width, height=router_bottom - router_y + 22, rx=6,
        fill="#e8f5e9", stroke=_OK)
    _el(route, "text", "router", x=left + 10, y=router_y - 6, font_weight="bold", fill=_INK)
    for i, line in enumerate(lines):
        _el(route, "text", _clip(line, 32), x=left + 10, y=router_y + 10 + 14 * i, fill=_INK, font_size=11)
    if facts.route_port is not None and facts.route_port in port_y:
        _el(route, "line", x1=left + width, y1=router_y, x2=_PORT_X - 2, y2=port_y[facts.route_port],
            stroke=_OK, stroke_width=2, marker_end="url(#sidecarlab-arrow-ok)")
        _el(route, "text", f"route to :{facts.route_port}", x=left + width + 6, y=router_y - 6, fill=_OK,
            font_size=11)

    host = _el(svg, "g", class_="host", data_host=facts.outside_host)
    _el(host, "rect", x=left, y=host_y - 22, width=width, height=44, rx=6, fill="#fafafa", stroke=_INK)
    _el(host, "text", "this machine (outside)", x=left + 10, y=host_y - 6, font_weight="bold", fill=_INK)
    _el(host, "text", facts.outside_host, x=left + 10, y=host_y + 12, fill=_INK, font_size=11)

    # what this machine reached: the app through the route ...
    reach = facts.through_router
    group = _el(svg, "g", class_="reach", data_via="route", data_port=facts.route_port or "",
                data_reachable=_yes_no(reach))
    _el(group, "title", reach.seen if reach else "not tried")
    x = left + 30
    _el(group, "line", x1=x, y1=host_y - 22, x2=x, y2=router_bottom + 2, stroke=_colour(reach), stroke_width=2,
        marker_end=f"url(#sidecarlab-arrow-{_marker(reach)})")
    _el(group, "text", f"{_mark(reach)}: {_clip(reach.seen, 30) if reach else 'not tried'}", x=x + 8,
        y=(host_y + router_bottom) / 2 + 4, fill=_colour(reach), font_size=11)

    # ... and each port it tried directly (a refused one stops at the container's wall)
    for i, (port, reach) in enumerate(sorted(facts.outside.items())):
        colour = _colour(reach)
        group = _el(svg, "g", class_="reach", data_via="direct", data_port=port, data_reachable=_yes_no(reach))
        _el(group, "title", reach.seen)
        if port in port_y:
            start_x, start_y = left + width, host_y - 12 + 8 * i
            end_x = _PORT_X - 2 if reach.reached else _WALL_X - 4
            _el(group, "path", d=f"M {start_x} {start_y} L {end_x} {port_y[port]}", fill="none", stroke=colour,
                stroke_width=2, stroke_dasharray="none" if reach.reached else "6 4",
                marker_end=f"url(#sidecarlab-arrow-{_marker(reach)})")
            if reach.reached is False:
                cx, cy = _WALL_X, port_y[port]
                _el(group, "path", d=f"M {cx - 7} {cy - 7} L {cx + 7} {cy + 7} M {cx - 7} {cy + 7} "
                    f"L {cx + 7} {cy - 7}", stroke=_NO, stroke_width=3)
        _el(group, "text", f"{_mark(reach)}: {facts.outside_host}:{port}, {_clip(reach.seen, 36)}",
            x=left, y=host_y + 40 + 16 * i, fill=colour, font_size=11)


def _marker(reach: Reach | None) -> str:
    return {"yes": "ok", "no": "no"}.get(_yes_no(reach), "unknown")


def _mark(reach: Reach | None) -> str:
    return {"yes": "yes", "no": "no"}.get(_yes_no(reach), "?")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def describe(snapshot: ContainerSnapshot, facts: InstanceFacts) -> str:
    """The picture in one line of text, for outputs that show no SVG."""
    ports = _listening(snapshot)
    drawn = processes(snapshot, facts)
    parts: list[str] = []
    app_pids = [p.pid for p in drawn if p.role == "app"]
    for proc in (p for p in drawn if p.role != "other"):
        own = sorted(port for (pid, port) in ports if pid == proc.pid)
        listens = f" listens on {', '.join(f':{p}' for p in own)}" if own else " listens on no port"
        what = f"{'the app' if proc.role == 'app' else 'sidecar ' + proc.name} (PID {proc.pid}){listens}"
        if proc.role == "app" and facts.route_port in own:
            what += f", routed from {facts.route or '?'}"
        if proc.role == "sidecar":
            connected = [p for p in own if _connection(snapshot, p, app_pids) is not None]
            if connected:
                what += ", the app connects to it"
        parts.append(what)
    if not any(p.role == "sidecar" for p in drawn):
        parts.append("no sidecar process")
    reaches = []
    if facts.through_router is not None:
        reaches.append(f"the route {_mark(facts.through_router)} ({facts.through_router.seen})")
    reaches += [f":{port} {_mark(r)} ({r.seen})" for port, r in sorted(facts.outside.items())]
    line = f"instance {facts.index} of {facts.app}: " + "; ".join(parts)
    if reaches:
        line += f". From {facts.outside_host}: " + ", ".join(reaches)
    return line


class InstancePicture:
    """A rendered picture: `svg` (the drawing) and `text` (its one line), with what they were drawn from."""

    def __init__(self, snapshot: ContainerSnapshot, facts: InstanceFacts) -> None:
        self.snapshot, self.facts = snapshot, facts
        self.svg = render(snapshot, facts)
        self.text = describe(snapshot, facts)

    def show(self) -> None:
        """Print the line and show the drawing inline (in a notebook)."""
        print(self.text, flush=True)
        _show(self.svg)

    def __repr__(self) -> str:
        return self.text

    def _ipython_display_(self) -> None:
        # `instance` already showed it; a cell ending with the call should not show it twice.
        pass


# ---------------------------------------------------------------------- gathering the facts

def instance(target: Target, app: str, port: int = 8082, *, path: str = "/config", app_command: str = "app.py",
             index: int = 0, snapshot: ContainerSnapshot | None = None) -> InstancePicture | None:
    """Draw instance `index` of `app` from live data: print its one line and show the SVG inline.

    `port` is the sidecar's port (`config_server_port`); `path` is asked for through the router
    first, so the app opens its connection to the sidecar (as `checks.sidecar_listening` does). Pass
    `snapshot` to draw one already taken. On a target without containers it prints why there is no
    picture and returns None."""
    isolation = target.isolation()
    if not isolation.isolated:
        print(f"{SKIPPED_MARK} no picture of {app}: {isolation.reason}", flush=True)
        return None
    through_router = _through_router(target, app, path)
    if snapshot is None:
        snapshot = container_snapshot(target, app, index)
    sidecars = tuple(Sidecar.from_command(str(s.get("name", "?")), str(s.get("command") or s.get("name", "")))
                     for s in target.sidecars(app))
    route, route_port = _route(target, app)
    host = target.outside_host(app)
    facts = InstanceFacts(app=app, index=index, app_command=app_command, sidecars=sidecars, route=route,
                          route_port=route_port, through_router=through_router, outside_host=host)
    side_pids = {p.pid for p in processes(snapshot, facts) if p.role == "sidecar"}
    probe = sorted({p for (pid, p) in _listening(snapshot) if pid in side_pids} | {port})
    outside = {p: _from_outside(target, app, host, p, config_port=port) for p in probe}
    facts = InstanceFacts(app=app, index=index, app_command=app_command, sidecars=sidecars, route=route,
                          route_port=route_port, through_router=through_router, outside_host=host, outside=outside)
    picture = InstancePicture(snapshot, facts)
    picture.show()
    return picture


def _show(svg: str) -> None:
    # Outside a kernel (a script, a test) the line printed is the whole picture.
    if get_ipython() is not None:
        display({"image/svg+xml": svg}, raw=True)


def _through_router(target: Target, app: str, path: str) -> Reach:
    try:
        response = target.http_get(app, path)
    except TargetError as exc:
        return Reach(False, f"no answer ({exc})")
    router_error = response.headers.get("X-Cf-RouterError", "")
    if router_error:
        return Reach(False, f"HTTP {response.status} from the router ({router_error})")
    return Reach(True, f"GET {path}: HTTP {response.status}")


def _route(target: Target, app: str) -> tuple[str, int | None]:
    """The app's first route and the port inside the container its destination names."""
    guid = target.app_guid(app)
    for route in target.curl_all(f"/v3/apps/{guid}/routes"):
        for destination in route.get("destinations") or []:
            if (destination.get("app") or {}).get("guid") == guid:
                port = destination.get("port")
                return str(route.get("url", "")), int(port) if port else 8080
    return "", None


def _from_outside(target: Target, app: str, host: str, port: int, config_port: int) -> Reach:
    """What a connection from `host` to `port` gets. On the config-server's port, an answer counts as
    the sidecar's only when the sidecar logged the request (as `checks.sidecar_port_private` decides)."""
    refused = _no_connection(host, port)
    if refused is not None:
        return Reach(False, refused)
    if port != config_port:
        return Reach(None, "something accepts connections there; not known whether the sidecar")
    before = _config_requests_logged(target, app)
    answer = _http_via(host, port, "/config/")
    if answer is not None and answer[0] == 200 and _json_or_none(answer[1]) == CONFIG and \
            _wait_for_more_config_requests(target, app, before):
        return Reach(True, "the sidecar answered from outside")
    return Reach(False, "another program on this machine answered, not the sidecar")


def _no_connection(host: str, port: int) -> str | None:
    """Why a TCP connection to host:port failed, or None when it was accepted."""
    try:
        socket.create_connection((host, port), timeout=3).close()
    except ConnectionRefusedError:
        return "connection refused"
    except OSError as exc:
        return f"no connection ({exc.strerror or exc})"
    return None
