"""Instances, sidecars, crashes, logs, router and ssh, end to end through the real `localcf` command.

Every test runs in both container runtime modes. Tests that need isolation skip in `process` mode
with the reason, as the kit's checks do.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from conftest import BIN, FIXTURES, LocalCF, free_port
from localcf.cell import restart_delay

TIME_SCALE = 0.001  # 30 s of back-off become 30 ms
LOG_LINE = re.compile(
    r"^   \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d\d[+-]\d{4} "
    r"\[(APP/PROC/WEB(/SIDECAR/[A-Z0-9-]+)?|STG|API|CELL|RTR|SSH)/\d+\] (OUT|ERR) .*$")


def namespaces_available() -> bool:
    try:
        return subprocess.run(["unshare", "--user", "--map-root-user", "--pid", "--fork", "--net", "true"],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module", params=["namespaces", "process"])
def cf(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> LocalCF:
    mode = request.param
    if mode == "namespaces" and not namespaces_available():
        pytest.skip("Linux user namespaces are not available on this host")
    home = tmp_path_factory.mktemp(f"localcf-{mode}")
    lcf = LocalCF(home)
    lcf.env.update(LOCALCF_RUNTIME=mode, LOCALCF_TIME_SCALE=str(TIME_SCALE), LOCALCF_GRACEFUL_SECONDS="2")
    lcf.mode = mode  # type: ignore[attr-defined]
    lcf("start")
    yield lcf
    lcf("stop", check=False)
    assert container_processes(home) == [], "processes left behind after localcf stop"


def needs_isolation(cf: LocalCF) -> None:
    if cf.mode != "namespaces":  # type: ignore[attr-defined]
        pytest.skip("needs container isolation: the process runtime runs instances as plain host processes")




def push_runtime_app(cf: LocalCF, tmp_path: Path, *, instances: int = 1, sidecar_memory: str | None = None,
                     env: dict[str, str] | None = None, start: bool = True) -> dict:
    """Push a copy of fixtures/runtime-app under a unique name with a unique sidecar port and name."""
    name = f"rt-{uuid.uuid4().hex[:8]}"
    sidecar = f"helper-{uuid.uuid4().hex[:6]}"
    port = free_port()
    app = tmp_path / name
    app.mkdir()
    for f in ("app.py", "sidecar.py", "Procfile", "requirements.txt"):
        (app / f).write_text((FIXTURES / "runtime-app" / f).read_text())
    envs = {"SIDECAR_PORT": str(port), **(env or {})}
    lines = ["applications:", f"- name: {name}", "  memory: 256M", "  disk_quota: 512M",
             f"  instances: {instances}", "  env:"]
    lines += [f"    {k}: '{v}'" for k, v in envs.items()]
    lines += ["  sidecars:", f"  - name: {sidecar}", "    process_types: [web]",
              f"    command: python sidecar.py {sidecar}"]
    if sidecar_memory:
        lines.append(f"    memory: {sidecar_memory}")
    (app / "manifest.yml").write_text("\n".join(lines) + "\n")
    args = ["push"] + ([] if start else ["--no-start"])
    out = cf(*args, cwd=app).out
    guid = cf("app", name, "--guid").out.strip()
    return {"name": name, "guid": guid, "sidecar": sidecar, "port": port, "dir": app, "push": out}


def get(cf: LocalCF, app: dict, path: str, **kw) -> requests.Response:
    return requests.get(f"http://127.0.0.1:{cf.router_port}{path}",  # type: ignore[attr-defined]
                        headers={"Host": f"{app['name']}.apps.localhost"}, timeout=10, **kw)


def api(cf: LocalCF, path: str) -> dict:
    return json.loads(cf("curl", path).out)


def stats(cf: LocalCF, app: dict) -> list[dict]:
    web = api(cf, f"/v3/apps/{app['guid']}/processes/web")
    return api(cf, f"/v3/processes/{web['guid']}/stats")["resources"]


def wait_for(predicate, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def crashes(cf: LocalCF, app: dict, etype: str = "app.crash") -> list[dict]:
    return [e for e in api(cf, f"/v3/audit_events?target_guids={app['guid']}")["resources"] if e["type"] == etype]


def recent(cf: LocalCF, app: dict) -> list[str]:
    return cf("logs", app["name"], "--recent").out.splitlines()[2:]


def container_processes(home: Path) -> list[str]:
    """Processes that belong to any container of this state dir (by their environment or command line)."""
    marker = str(home).encode()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if b"localcf.daemon" in cmdline:
            continue
        if marker in cmdline or marker + b"/containers" in environ or b"home/vcap" in environ and marker in environ:
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


def delete(cf: LocalCF, app: dict) -> None:
    cf("delete", app["name"], "-f")


# ------------------------------------------------------------------------ one container

def test_app_and_sidecar_share_one_container(cf: LocalCF, tmp_path: Path) -> None:
    app = push_runtime_app(cf, tmp_path)
    try:
        assert get(cf, app, "/").text == "instance 0"
        # the app reaches its sidecar on localhost
        assert get(cf, app, "/sidecar").text == f"sidecar {app['sidecar']}"
        # ssh -L reaches the sidecar's port
        local = free_port()
        fwd = subprocess.Popen([str(BIN / "localcf"), "ssh", app["name"], "-N", "-L", f"{local}:localhost:{app['port']}"],
                               env=cf.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            body = wait_for(lambda: _try_get(f"http://127.0.0.1:{local}/"), 15, "the forwarded port")
            assert body == f"sidecar {app['sidecar']}"
        finally:
            fwd.terminate()
            fwd.wait(10)
        if cf.mode == "namespaces":  # type: ignore[attr-defined]
            ps = cf("ssh", app["name"], "-c", "ps -eo pid,args").out.splitlines()[1:]
            commands = [line.split(None, 1)[1] for line in ps]
            # as on a Diego cell: PID 1 is garden's init, the app and the sidecar read as their commands
            assert commands[0] == "/tmp/garden-init", commands
            assert "python app.py" in commands, commands
            assert f"python sidecar.py {app['sidecar']}" in commands, commands
            # only the container's own: init, app, sidecar, and the ssh session's shell and ps
            assert len(commands) <= 5, commands
            assert all(c == "/tmp/garden-init" or c.endswith(" app.py") or "sidecar.py" in c
                       or c.startswith(("ps ", "/bin/bash")) for c in commands), commands
            # the host cannot reach the sidecar's port
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", app["port"]), timeout=2).close()
    finally:
        delete(cf, app)


def _try_get(url: str) -> str | None:
    try:
        return requests.get(url, timeout=2).text
    except requests.RequestException:
        return None


def test_host_isolation(cf: LocalCF, tmp_path: Path) -> None:
    needs_isolation(cf)
    app = push_runtime_app(cf, tmp_path)
    try:
        out = cf("ssh", app["name"], "-c", "hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /home/vcap").out
        hostname, init, listing = out.splitlines()[0], out.splitlines()[1], out.splitlines()[2:]
        inst = stats(cf, app)[0]["instance_guid"]
        assert hostname == inst
        assert init.rstrip() == "/tmp/garden-init", init
        assert {"app", "deps", "profile.d", "tmp", "logs"} <= set(listing)
    finally:
        delete(cf, app)


# ------------------------------------------------------------------------------ crashes

def test_kill_9_of_the_sidecar_crashes_and_restarts_the_instance(cf: LocalCF, tmp_path: Path) -> None:
    app = push_runtime_app(cf, tmp_path)
    try:
        first = stats(cf, app)[0]["instance_guid"]
        cf("ssh", app["name"], "-c", f"pkill -9 -f 'sidecar.py {app['sidecar']}'", check=False)
        source = f"APP/PROC/WEB/SIDECAR/{app['sidecar'].upper()}"
        events = wait_for(lambda: crashes(cf, app), 20, "an app.crash event")
        data = events[0]["data"]
        # app.crash keeps CC's slice of the payload (no crash_count), with the app as its actor
        assert list(data) == ["instance", "index", "cell_id", "exit_description", "reason"], data
        assert data["exit_description"] == f"{source}: Exited with status 137"
        assert data["reason"] == "CRASHED" and data["index"] == 0
        assert data["instance"] == first
        assert events[0]["actor"] == {"guid": app["guid"], "type": "app", "name": app["name"]}
        # audit.app.process.crash carries the whole payload, crash_count included; its actor is the process
        process_events = crashes(cf, app, "audit.app.process.crash")
        assert process_events, "audit.app.process.crash is recorded"
        full = process_events[0]["data"]
        assert set(full) == {"instance", "index", "cell_id", "reason", "exit_description", "crash_count",
                             "crash_timestamp", "version"}, full
        assert full["crash_count"] == 1 and full["instance"] == first and full["cell_id"] == data["cell_id"]
        assert full["exit_description"] == data["exit_description"]
        assert process_events[0]["actor"]["type"] == "process" and process_events[0]["actor"]["name"] == "web"
        # RUNNING again without anyone acting, in a new instance
        wait_for(lambda: [s for s in stats(cf, app) if s["state"] == "RUNNING" and s["instance_guid"] != first],
                 30, "the instance to run again")
        assert get(cf, app, "/sidecar").text == f"sidecar {app['sidecar']}"
        lines = recent(cf, app)
        assert any(re.search(rf"\[{re.escape(source)}/0\] OUT Exit status 137$", line) for line in lines)
        assert any(line.endswith('[API/0] OUT Process has crashed with type: "web"') for line in lines)
        payload = next(line for line in lines if "App instance exited with guid" in line)
        assert re.search(
            rf'\[API/0\] OUT App instance exited with guid {app["guid"]} payload: '
            rf'\{{"instance"=>"{first}", "index"=>0, "cell_id"=>"[^"]+", "reason"=>"CRASHED", '
            rf'"exit_description"=>"{re.escape(source)}: Exited with status 137", "crash_count"=>1, '
            rf'"crash_timestamp"=>\d+, "version"=>"[0-9a-f-]+"\}}$', payload), payload
        out = cf("events", app["name"]).out
        assert "app.crash" in out and f"exit_description: {source}: Exited with status 137" in out
    finally:
        delete(cf, app)


def test_sidecar_exiting_0_is_a_codependent_crash(cf: LocalCF, tmp_path: Path) -> None:
    app = push_runtime_app(cf, tmp_path, env={"SIDECAR_EXIT_AFTER": "0.5"})
    try:
        events = wait_for(lambda: crashes(cf, app), 20, "an app.crash event")
        assert events[0]["data"]["exit_description"] == "Codependent step exited"
    finally:
        delete(cf, app)


def test_the_app_exiting_stops_its_sidecar(cf: LocalCF, tmp_path: Path) -> None:
    app = push_runtime_app(cf, tmp_path)
    try:
        try:
            get(cf, app, "/exit/3")
        except requests.RequestException:
            pass
        events = wait_for(lambda: crashes(cf, app), 20, "an app.crash event")
        assert events[0]["data"]["exit_description"] == "APP/PROC/WEB: Exited with status 3"
        source = f"APP/PROC/WEB/SIDECAR/{app['sidecar'].upper()}"
        # the sidecar was stopped with SIGTERM (143) by the platform, not left running
        wait_for(lambda: any(re.search(rf"\[{re.escape(source)}/0\] OUT Exit status 143$", l) for l in recent(cf, app)),
                 20, "the sidecar's exit")
    finally:
        delete(cf, app)


# bbs's restart calculator, written out (CF-BEHAVIOUR.md section 3): the delay in seconds before the
# restart that follows crash number n; the product's table is checked against it below
BACK_OFF_S = {1: 0, 2: 0, 3: 30, 4: 60, 5: 120, 6: 240, 7: 480}
BACK_OFF_SCALE = 0.01  # 30 s become 0.3 s: long enough to tell from a container start, short for a test


def test_restart_back_off_under_a_shrunk_clock(cf: LocalCF, tmp_path: Path,
                                                tmp_path_factory: pytest.TempPathFactory) -> None:
    # a daemon of its own, on a clock slow enough that each delay stands out from the time a
    # container takes to start and crash again: a cell that ignored the delays fails the gaps below
    own = LocalCF(tmp_path_factory.mktemp("localcf-back-off"))
    own.env.update(LOCALCF_RUNTIME=cf.mode, LOCALCF_TIME_SCALE=str(BACK_OFF_SCALE),  # type: ignore[attr-defined]
                   LOCALCF_GRACEFUL_SECONDS="2")
    own("start")
    app = push_runtime_app(own, tmp_path, env={"CRASH_AT_START": "1"}, start=False)
    try:
        subprocess.run([str(BIN / "localcf"), "start", app["name"]], env=own.env, capture_output=True, timeout=120)
        # the crash count is in the process's crash event (app.crash does not carry it, as on CC)
        events = wait_for(lambda: (lambda e: e if len(e) >= 7 else None)(crashes(own, app, "audit.app.process.crash")),
                          90, "seven crashes")
        events.sort(key=lambda e: e["data"]["crash_count"])
        counts = [e["data"]["crash_count"] for e in events]
        assert counts[:7] == [1, 2, 3, 4, 5, 6, 7]
        assert all(e["data"]["exit_description"] == "APP/PROC/WEB: Exited with status 1" for e in events)
        ts = [e["data"]["crash_timestamp"] / 1e9 for e in events]
        gaps = {k: ts[k] - ts[k - 1] for k in range(1, 7)}  # gaps[k]: from crash k to crash k + 1
        for k, gap in gaps.items():
            # the restart after crash k waits at least the scaled table delay
            assert gap >= BACK_OFF_S[k] * BACK_OFF_SCALE, (k, gaps)
        # and the waits grow as the table does: the time to start and crash again is the same each
        # time, so each gap beyond the second is longer than the immediate restarts' by the delay
        immediate = max(gaps[1], gaps[2])
        for k in (4, 5, 6):
            assert gaps[k] - immediate >= 0.5 * BACK_OFF_S[k] * BACK_OFF_SCALE, (k, gaps)
        assert gaps[6] - gaps[4] >= 0.5 * (BACK_OFF_S[6] - BACK_OFF_S[4]) * BACK_OFF_SCALE, gaps
        # while it waits (4.8 s after the seventh crash), the instance is CRASHED
        wait_for(lambda: stats(own, app)[0]["state"] == "CRASHED", 10, "a CRASHED instance")
    finally:
        delete(own, app)
        own("stop", check=False)


def test_back_off_table() -> None:
    assert [restart_delay(n) for n in range(1, 8)] == [BACK_OFF_S[n] for n in range(1, 8)]
    assert [restart_delay(n) for n in (1, 2)] == [0, 0]
    assert [restart_delay(n) for n in (3, 4, 5, 6, 7)] == [30, 60, 120, 240, 480]
    assert restart_delay(8) == restart_delay(100) == restart_delay(199) == 960
    assert restart_delay(200) is None and restart_delay(500) is None


# --------------------------------------------------------------------------------- logs

def test_log_lines_have_cf_format_and_tags(cf: LocalCF, tmp_path: Path) -> None:
    app = push_runtime_app(cf, tmp_path)
    try:
        get(cf, app, "/sidecar")
        cf("ssh", app["name"], "-c", "true")
        cf("ssh", app["name"], "-c", f"pkill -9 -f 'sidecar.py {app['sidecar']}'", check=False)
        wait_for(lambda: crashes(cf, app), 20, "the crash")
        lines = recent(cf, app)
        bad = [line for line in lines if not LOG_LINE.match(line)]
        assert not bad, bad
        tags = {re.search(r"\[([^\]]+)\] (OUT|ERR)", line).group(1) for line in lines}
        sidecar = f"APP/PROC/WEB/SIDECAR/{app['sidecar'].upper()}/0"
        assert {"APP/PROC/WEB/0", sidecar, "STG/0", "API/0", "CELL/0", "RTR/0", "SSH/0"} <= tags, tags
        assert any(f"[{sidecar}] ERR {app['sidecar']} says hello on stderr" in line for line in lines)
        assert any(f"[{sidecar}] OUT {app['sidecar']} listening on {app['port']}" in line for line in lines)
        launcher = [line for line in lines if "[APP/PROC/WEB/0]" in line and "Invoking" in line]
        assert [line.split(" OUT ")[1] for line in launcher[:2]] == ["Invoking pre-start scripts.", "Invoking start command."]
    finally:
        delete(cf, app)


def test_recent_logs_survive_a_daemon_restart(cf: LocalCF, tmp_path: Path) -> None:
    app = push_runtime_app(cf, tmp_path)
    try:
        before = [line for line in recent(cf, app) if "[STG/0]" in line]
        assert before
        cf("stop")
        cf("start")
        after = recent(cf, app)
        assert all(line in after for line in before)
        # and the started app came back
        wait_for(lambda: get(cf, app, "/").status_code == 200, 30, "the app to come back")
    finally:
        delete(cf, app)


# -------------------------------------------------------------------------- environment

@pytest.mark.parametrize("sidecar_memory", [None, "32M"])
def test_environment_of_app_and_sidecar(cf: LocalCF, tmp_path: Path, sidecar_memory: str | None) -> None:
    app = push_runtime_app(cf, tmp_path, sidecar_memory=sidecar_memory)
    try:
        env = get(cf, app, "/env").json()
        home = "/home/vcap" if cf.mode == "namespaces" else env["HOME"].rsplit("/app", 1)[0]  # type: ignore[attr-defined]
        side = json.loads(cf("ssh", app["name"], "-c", f"cat $TMPDIR/{app['sidecar']}.env.json").out)
        inst = stats(cf, app)[0]
        port = "8080" if cf.mode == "namespaces" else env["PORT"]  # type: ignore[attr-defined]
        for e in (env, side):
            assert e["HOME"] == f"{home}/app"
            assert e["TMPDIR"] == f"{home}/tmp"
            assert e["DEPS_DIR"] == f"{home}/deps"
            assert e["PORT"] == e["VCAP_APP_PORT"] == port
            assert e["VCAP_APP_HOST"] == "0.0.0.0"
            assert e["LANG"] == "en_US.UTF-8"
            assert e["VCAP_SERVICES"] == "{}"
            assert e["INSTANCE_GUID"] == e["CF_INSTANCE_GUID"] == inst["instance_guid"]
            assert e["INSTANCE_INDEX"] == e["CF_INSTANCE_INDEX"] == "0"
            assert e["CF_INSTANCE_IP"] and e["CF_INSTANCE_PORT"]
            assert e["CF_INSTANCE_ADDR"] == f"{e['CF_INSTANCE_IP']}:{e['CF_INSTANCE_PORT']}"
            ports = json.loads(e["CF_INSTANCE_PORTS"])
            assert ports[0]["internal"] == int(port)
            assert e["SIDECAR_PORT"] == str(app["port"])
            vcap = json.loads(e["VCAP_APPLICATION"])
            for key in ("application_id", "application_name", "name", "uris", "application_uris", "space_name",
                        "space_id", "organization_name", "organization_id", "process_id", "process_type",
                        "limits", "version", "application_version", "cf_api", "host", "port", "instance_id",
                        "instance_index"):
                assert key in vcap, key
            assert vcap["application_id"] == app["guid"] and vcap["application_name"] == app["name"]
            assert vcap["instance_id"] == inst["instance_guid"] and vcap["process_type"] == "web"
            assert vcap["application_uris"] == [f"{app['name']}.apps.localhost"]
        if sidecar_memory:
            assert env["MEMORY_LIMIT"] == "224m" and side["MEMORY_LIMIT"] == "32m"
        else:
            assert env["MEMORY_LIMIT"] == "256m" and side["MEMORY_LIMIT"] == "256m"
    finally:
        delete(cf, app)


# ------------------------------------------------------------------------------- router

def test_round_robin_over_two_instances(cf: LocalCF, tmp_path: Path) -> None:
    # two instances of one app bind the same ports: only separate network namespaces allow that
    needs_isolation(cf)
    app = push_runtime_app(cf, tmp_path)
    try:
        cf("scale", app["name"], "-i", "2")
        wait_for(lambda: [s["state"] for s in stats(cf, app)] == ["RUNNING", "RUNNING"], 30, "two instances")
        seen = [get(cf, app, "/").text for _ in range(6)]
        assert set(seen) == {"instance 0", "instance 1"}
        assert all(seen[i] != seen[i + 1] for i in range(5)), seen
    finally:
        delete(cf, app)


def test_router_404_and_502_texts(cf: LocalCF, tmp_path: Path) -> None:
    app = push_runtime_app(cf, tmp_path)
    try:
        r = requests.get(f"http://127.0.0.1:{cf.router_port}/", headers={"Host": "nothing-here.apps.localhost"},  # type: ignore[attr-defined]
                         timeout=10)
        assert r.status_code == 404
        assert r.text == "404 Not Found: Requested route ('nothing-here.apps.localhost') does not exist.\n"
        assert r.headers["X-Cf-RouterError"] == "unknown_route"
        r = get(cf, app, "/die")
        assert r.status_code == 502
        assert r.text == "502 Bad Gateway: Registered endpoint failed to handle the request.\n"
        assert r.headers["X-Cf-RouterError"] == "endpoint_failure"
        headers = get(cf, app, "/headers").json()
        assert "X-Forwarded-For" in headers and "X-Request-Start" in headers
        # no healthy instance: answered like an unknown route
        cf("stop", app["name"])
        r = get(cf, app, "/")
        assert r.status_code == 404 and f"Requested route ('{app['name']}.apps.localhost') does not exist." in r.text
    finally:
        delete(cf, app)


# -------------------------------------------------------------------------------- ssh

def test_ssh_runs_commands_with_the_app_environment(cf: LocalCF, tmp_path: Path) -> None:
    app = push_runtime_app(cf, tmp_path)
    try:
        res = cf("ssh", app["name"], "-c", "echo out-$CF_INSTANCE_INDEX; echo err >&2; exit 7", check=False)
        assert res.code == 7
        assert res.out.strip() == "out-0" and res.err.strip() == "err"
        res = cf("ssh", app["name"], "-c", "cat", input="through stdin\n")
        assert res.out == "through stdin\n"
        res = cf("ssh", app["name"], "-i", "3", "-c", "true", check=False)
        assert res.code == 1 and "not running" in res.err
    finally:
        delete(cf, app)


# --------------------------------------------------------------------------- no orphans

def test_no_orphans_after_kill_9_of_the_daemon_and_apps_come_back(tmp_path: Path, request) -> None:
    mode = "namespaces" if namespaces_available() else "process"
    lcf = LocalCF(tmp_path / "home")
    lcf.env.update(LOCALCF_RUNTIME=mode, LOCALCF_GRACEFUL_SECONDS="2")
    lcf.mode = mode  # type: ignore[attr-defined]
    lcf("start")
    try:
        app = push_runtime_app(lcf, tmp_path)
        assert container_processes(lcf.home), "the app's processes are found by the scan"
        pid = json.loads((lcf.home / "daemon.json").read_text())["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not container_processes(lcf.home), 10, "every container process to end")
        lcf("start")
        wait_for(lambda: _try_get_status(lcf, app) == 200, 30, "the started app to come back")
        lcf("stop")
        assert container_processes(lcf.home) == []
    finally:
        lcf("stop", check=False)


def _try_get_status(cf: LocalCF, app: dict) -> int | None:
    try:
        return get(cf, app, "/").status_code
    except requests.RequestException:
        return None


def test_interactive_ssh_on_a_pty(cf: LocalCF, tmp_path: Path) -> None:
    import pty
    import select
    app = push_runtime_app(cf, tmp_path)
    try:
        pid, fd = pty.fork()
        if pid == 0:  # the child: an interactive `localcf ssh` on a terminal
            os.execve(str(BIN / "localcf"), [str(BIN / "localcf"), "ssh", app["name"]], cf.env)
        output = b""
        os.write(fd, b"echo interactive-$CF_INSTANCE_INDEX-$((6*7)); tty; exit 5\n")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.5)
            if r:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                output += chunk
        status = None
        while status is None and time.monotonic() < deadline + 10:
            done, st = os.waitpid(pid, os.WNOHANG)
            status = st if done else None
            time.sleep(0.05)
        if status is None:  # never hang the suite: end the session and fail
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        text = output.decode(errors="replace")
        assert status is not None, f"`localcf ssh` did not end after `exit`: {text!r}"
        assert "interactive-0-42" in text, text
        assert "/dev/pts/" in text, text  # the shell inside runs on a terminal
        assert os.waitstatus_to_exitcode(status) == 5
    finally:
        delete(cf, app)
