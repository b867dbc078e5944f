"""The picture of an instance: drawn from a real pushed app on the session's localcf, it shows the very
processes, PIDs and ports of the snapshot the checks read, the sidecar's port unreachable from this
machine and the app's port reachable through the route; hand-made snapshots cover the edge cases
(no sidecar, two sidecars, names that need escaping)."""

from __future__ import annotations

import dataclasses
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import LocalCF

from sidecarlab import checks, picture, sidecar, tutorial
from sidecarlab.checks import ContainerSnapshot, parse_snapshot
from sidecarlab.picture import InstanceFacts, Reach, Sidecar
from sidecarlab.targets import LocalTarget

SVG = "{http://www.w3.org/2000/svg}"


def groups(svg: str, kind: str) -> list[dict[str, str]]:
    """The data-* attributes of every `<g class=kind>` of the picture (parsing it proves it well-formed)."""
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return [{k.removeprefix("data-"): v for k, v in g.attrib.items() if k.startswith("data-")}
            for g in root.iter(f"{SVG}g") if g.get("class") == kind]


def drawn_processes(svg: str) -> dict[int, dict[str, str]]:
    return {int(g["pid"]): g for g in groups(svg, "process")}


def drawn_ports(svg: str) -> set[tuple[int | None, int]]:
    return {(int(g["pid"]) if g["pid"] else None, int(g["port"])) for g in groups(svg, "port")}


def listening(snap: ContainerSnapshot) -> set[tuple[int | None, int]]:
    return {(s.pid, s.local_port) for s in snap.sockets if s.state == "LISTEN"}


# --------------------------------------------------------------------------- a real instance

@pytest.fixture(scope="module")
def target(localcf: LocalCF) -> LocalTarget:
    return LocalTarget(home=localcf.home, echo=False)


@pytest.fixture(scope="module")
def pushed_app(target: LocalTarget, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not target.isolation().isolated:
        pytest.skip(f"needs container isolation: {target.isolation().reason}")
    work = tmp_path_factory.mktemp("picture")
    name = f"pic-{uuid.uuid4().hex[:8]}"
    manifest = tutorial.copy_fixture_app(work / name, name, 8082)
    sidecar.build(out=work / name / "config-server")
    target.cf("push", name, "-f", str(manifest), "-p", str(work / name), quiet=True)
    yield name
    target.cleanup(name)


def test_the_picture_of_a_pushed_app_shows_the_snapshots_processes_and_ports(target: LocalTarget, pushed_app: str,
                                                                             capsys) -> None:
    pic = picture.instance(target, pushed_app, port=8082)
    assert pic is not None
    snap = pic.snapshot
    assert capsys.readouterr().out == pic.text + "\n"

    drawn = drawn_processes(pic.svg)
    # every process of the instance, and only those: the snapshot's own shell is no part of it
    assert snap.self_pid is not None and snap.self_pid in snap.processes
    assert {pid: g["command"] for pid, g in drawn.items()} == {
        pid: cmd for pid, cmd in snap.processes.items() if pid != snap.self_pid}
    (app_pid,) = snap.pids_of("app.py")
    (sidecar_pid,) = snap.pids_of("config-server")
    assert drawn[app_pid]["role"] == "app" and drawn[app_pid]["name"] == pushed_app
    assert drawn[sidecar_pid]["role"] == "sidecar" and drawn[sidecar_pid]["name"] == "config-server"
    assert [pid for pid, g in drawn.items() if g["role"] in ("app", "sidecar")] == [app_pid, sidecar_pid]
    assert f"PID {app_pid}" in pic.text and f"PID {sidecar_pid}" in pic.text

    assert drawn_ports(pic.svg) == listening(snap)
    assert {(app_pid, 8080), (sidecar_pid, 8082)} <= drawn_ports(pic.svg)
    ports = {int(g["port"]): g for g in groups(pic.svg, "port")}
    assert ports[8080]["routed"] == "yes" and ports[8080]["reachable-from-host"] == "yes"
    assert ports[8082]["routed"] == "no" and ports[8082]["reachable-from-host"] == "no"

    (route,) = groups(pic.svg, "route")
    assert route["route"] == target.routes(pushed_app)[0] and route["port"] == "8080"
    reaches = {(g["via"], g["port"]): g["reachable"] for g in groups(pic.svg, "reach")}
    assert reaches == {("route", "8080"): "yes", ("direct", "8082"): "no"}
    assert pic.facts.outside[8082] == Reach(False, "connection refused")

    # the app's request to its sidecar (made through the router just before the snapshot)
    (connection,) = groups(pic.svg, "connection")
    assert connection["to-port"] == "8082" and connection["to-pid"] == str(sidecar_pid)
    assert connection["from-pid"] in ("", str(app_pid))


def test_the_picture_draws_the_very_snapshot_a_check_took(target: LocalTarget, pushed_app: str) -> None:
    result = checks.sidecar_listening(target, pushed_app, port=8082)
    assert result.passed
    pic = picture.instance(target, pushed_app, port=8082, snapshot=result.data)
    assert pic is not None and pic.snapshot is result.data
    drawn = drawn_processes(pic.svg)
    assert set(drawn) == set(result.data.processes) - {result.data.self_pid}
    assert drawn_ports(pic.svg) == listening(result.data)


# ------------------------------------------------------------------------ hand-made snapshots

TCP_HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"


def tcp_line(n: int, local: str, remote: str, state: str, inode: int) -> str:
    return f"   {n}: {local} {remote} {state} 00000000:00000000 00:00000000 00000000     0        0 {inode} 1 0"


FACTS = InstanceFacts(app="my-app", route="my-app.apps.localhost", route_port=8080,
                      through_router=Reach(True, "GET /config: HTTP 200"),
                      outside={8082: Reach(False, "connection refused")})


def facts(**changes: Any) -> InstanceFacts:
    return dataclasses.replace(FACTS, **changes)


def test_without_a_sidecar_the_picture_says_so_and_draws_no_connection() -> None:
    snap = parse_snapshot("\n".join([
        "SELF 9", "PROC 1 python3 -I -S container_init.py init.json", "PROC 4 python app.py",
        "PROC 9 /bin/bash -c", "SOCK 4 socket:[100]", "TCP", TCP_HEADER,
        tcp_line(0, "00000000:1F90", "00000000:0000", "0A", 100),
    ]))
    svg = picture.render(snap, facts())
    drawn = drawn_processes(svg)
    assert set(drawn) == {1, 4} and drawn[4]["role"] == "app" and drawn[1]["role"] == "other"
    assert drawn[1]["name"] == "container_init.py"
    assert not any(g["role"] == "sidecar" for g in drawn.values())
    assert groups(svg, "connection") == []
    assert drawn_ports(svg) == {(4, 8080)}
    assert "no sidecar process" in picture.describe(snap, facts())


def test_two_sidecars_are_each_drawn_with_their_ports_and_the_apps_connections() -> None:
    snap = parse_snapshot("\n".join([
        "PROC 4 python app.py", "PROC 5 ./config-server", "PROC 6 /home/vcap/app/log-shipper --fast",
        "SOCK 4 socket:[100]", "SOCK 5 socket:[200]", "SOCK 6 socket:[300]", "SOCK 4 socket:[400]",
        "TCP", TCP_HEADER,
        tcp_line(0, "00000000:1F90", "00000000:0000", "0A", 100),
        tcp_line(1, "0100007F:1F92", "00000000:0000", "0A", 200),
        tcp_line(2, "0100007F:2382", "00000000:0000", "0A", 300),
        tcp_line(3, "0100007F:A4B2", "0100007F:2382", "01", 400),   # app -> log-shipper, established
        tcp_line(4, "0100007F:1F92", "0100007F:A4B3", "06", 0),     # what is left of app -> config-server
    ]))
    two = facts(sidecars=(Sidecar("config-server", "config-server"),
                          Sidecar.from_command("logs", "SHIP_PORT=9090 ./log-shipper --fast")),
                outside={8082: Reach(False, "connection refused"), 9090: Reach(True, "the sidecar answered")})
    svg = picture.render(snap, two)
    drawn = drawn_processes(svg)
    assert {pid: (g["role"], g["name"]) for pid, g in drawn.items()} == {
        4: ("app", "my-app"), 5: ("sidecar", "config-server"), 6: ("sidecar", "logs")}
    assert drawn_ports(svg) == {(4, 8080), (5, 8082), (6, 9090)}
    connections = {g["to-port"]: g for g in groups(svg, "connection")}
    assert connections["9090"]["from-pid"] == "4" and connections["9090"]["state"] == "ESTABLISHED"
    assert connections["8082"]["from-pid"] == "" and connections["8082"]["state"] == "TIME_WAIT"
    ports = {int(g["port"]): g["reachable-from-host"] for g in groups(svg, "port")}
    assert ports == {8080: "yes", 8082: "no", 9090: "yes"}  # 9090 leaks, and the picture shows it
    text = picture.describe(snap, two)
    assert "sidecar config-server (PID 5) listens on :8082" in text and "sidecar logs (PID 6)" in text


def test_names_with_markup_characters_are_escaped_and_read_back_whole() -> None:
    evil = 'x<y & "z">'
    snap = parse_snapshot("\n".join([
        f"PROC 4 python app.py {evil}", f"PROC 5 ./config-server {evil}", f"PROC 7 ./{evil}",
        "SOCK 4 socket:[100]", "TCP", TCP_HEADER, tcp_line(0, "00000000:1F90", "00000000:0000", "0A", 100),
    ]))
    odd = facts(app=f"app {evil}", route=f"{evil}.example", sidecars=(Sidecar(f"side {evil}", "config-server"),))
    svg = picture.render(snap, odd)
    assert evil not in svg and "<y" not in svg  # only ever escaped
    root = ET.fromstring(svg)
    assert root.get("data-app") == f"app {evil}"
    drawn = drawn_processes(svg)
    assert drawn[4]["name"] == f"app {evil}" and drawn[4]["command"] == f"python app.py {evil}"
    assert drawn[5]["name"] == f"side {evil}"
    assert drawn[7]["command"] == f"./{evil}"
    assert groups(svg, "route")[0]["route"] == f"{evil}.example"
    texts = "".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert f"sidecar: side {evil}" in texts


def test_an_unowned_listener_is_drawn_without_an_owner() -> None:
    snap = parse_snapshot("\n".join([
        "PROC 4 python app.py", "SOCK 4 socket:[100]", "TCP", TCP_HEADER,
        tcp_line(0, "00000000:1F90", "00000000:0000", "0A", 100),
        tcp_line(1, "00000000:08AE", "00000000:0000", "0A", 555),  # 2222, e.g. an sshd running as root
    ]))
    svg = picture.render(snap, facts(outside={}))
    assert drawn_ports(svg) == {(4, 8080), (None, 2222)} == listening(snap)


def test_the_sidecar_is_found_by_its_program_whatever_its_command_sets_first() -> None:
    assert Sidecar.from_command("config-server", "CONFIG_SERVER_PORT=9099 ./config-server") == Sidecar(
        "config-server", "config-server")
    assert Sidecar.from_command("s", "/opt/bin/agent --port 1").needle == "agent"
    assert Sidecar.from_command("s", "").needle == "s"


def test_outside_a_kernel_the_picture_is_its_printed_line(capsys) -> None:
    snap = parse_snapshot("PROC 4 python app.py\nTCP\n")
    pic = picture.InstancePicture(snap, facts(outside={}))
    pic.show()
    assert capsys.readouterr().out == pic.text + "\n" and repr(pic) == pic.text
    assert pic.text.startswith("instance 0 of my-app: the app (PID 4) listens on no port")
