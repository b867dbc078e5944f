"""The checks of Part 1: each passes on a working app and fails, with its hint, when the thing it
checks is broken. Real apps pushed to the session's localcf; one fake target only where the thing
under test is the check's own behaviour (a platform that never restarts a crashed instance)."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import LocalCF, free_port

from sidecarlab import checks, sidecar, tutorial
from sidecarlab.checks import PASSED_MARK, SKIPPED_MARK, CheckFailed
from sidecarlab.targets import (
    Event,
    HttpResponse,
    Instance,
    Isolation,
    LocalTarget,
    Target,
)


@pytest.fixture(scope="module")
def target(localcf: LocalCF) -> LocalTarget:
    return LocalTarget(home=localcf.home, echo=False)


@pytest.fixture(scope="session")
def sidecar_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sidecar.build(out=tmp_path_factory.mktemp("sidecar") / "config-server")


class Pusher:
    """Pushes copies of the sample app (optionally with an edited manifest) and deletes them after."""

    def __init__(self, target: Target, binary: Path, workdir: Path) -> None:
        self.target, self.binary, self.workdir = target, binary, workdir
        self.pushed: list[str] = []

    def push(self, edit: Callable[[dict[str, Any]], None] | None = None, with_binary: bool = True,
             port: int = 8082) -> str:
        name = f"chk-{uuid.uuid4().hex[:8]}"
        app_dir = self.workdir / name
        manifest = tutorial.copy_fixture_app(app_dir, name, port)
        if edit:
            document = yaml.safe_load(manifest.read_text())
            edit(document["applications"][0])
            manifest.write_text(yaml.safe_dump(document, sort_keys=False))
        if with_binary:
            (app_dir / "config-server").write_bytes(self.binary.read_bytes())
            (app_dir / "config-server").chmod(0o755)
        self.pushed.append(name)
        self.target.cf("push", name, "-f", str(manifest), "-p", str(app_dir), quiet=True)
        return name

    def cleanup(self) -> None:
        for name in self.pushed:
            self.target.cleanup(name)


@pytest.fixture
def apps(target: LocalTarget, sidecar_binary: Path, tmp_path: Path) -> Iterator[Pusher]:
    pusher = Pusher(target, sidecar_binary, tmp_path)
    yield pusher
    pusher.cleanup()


@pytest.fixture(scope="module")
def good_app(target: LocalTarget, sidecar_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pusher = Pusher(target, sidecar_binary, tmp_path_factory.mktemp("good"))
    yield pusher.push()
    pusher.cleanup()


# ----------------------------------------------------------------------------- passing checks

def needs_isolation(target: Target) -> None:
    """Skip, with the platform's reason, a test whose claims need container isolation."""
    isolation = target.isolation()
    if not isolation.isolated:
        pytest.skip(f"needs container isolation (Linux user namespaces): {isolation.reason}")


def test_working_app_passes_each_check_with_exactly_one_line(target: LocalTarget, good_app: str, capsys) -> None:
    for check in (checks.app_answers, checks.config_from_sidecar, checks.sidecar_registered,
                  checks.cf_app_shows_sidecar, checks.logs_show_app_and_sidecar):
        result = check(target, good_app)
        out = capsys.readouterr().out
        assert out == result.line() + "\n", f"{check.__name__} printed {out!r}"
        assert result.status == "passed" and out.startswith(PASSED_MARK + " "), out
    assert "origin user" in checks.sidecar_registered(target, good_app).statement


def test_working_app_passes_each_isolation_check_with_exactly_one_line(target: LocalTarget, good_app: str,
                                                                       capsys) -> None:
    needs_isolation(target)
    for check in (checks.processes_in_one_container, checks.sidecar_listening, checks.sidecar_port_private):
        assert check.needs_isolation
        result = check(target, good_app)
        out = capsys.readouterr().out
        # One result line, after the command a learner would type for what the kit did (the tunnel).
        *commands, last = out.splitlines()
        assert last == result.line(), f"{check.__name__} printed {out!r}"
        assert all(line.startswith("$ cf ") for line in commands), out
        assert result.status == "passed" and last.startswith(PASSED_MARK + " "), out
    assert f"$ cf ssh {good_app} -N -L LOCAL:localhost:8082" in out


def test_memory_check_passes_when_the_sidecar_memory_is_carved_out(target: LocalTarget, apps: Pusher,
                                                                  capsys) -> None:
    needs_isolation(target)
    name = apps.push(edit=lambda app: app["sidecars"][0].update(memory="64M"))
    capsys.readouterr()
    result = checks.memory_limit_carved(target, name, process_memory_mb=256, sidecar_memory_mb=64)
    assert result.passed and result.data == ("192m", "64m")
    assert capsys.readouterr().out == result.line() + "\n"
    assert "the app's MEMORY_LIMIT is 192m (256M - 64M) and the sidecar's is 64m" in result.statement


# ------------------------------------------------------------------ checks catching breakage

def test_app_pushed_without_the_sidecar_fails_the_config_check_with_its_hint(target: LocalTarget,
                                                                           apps: Pusher) -> None:
    name = apps.push(edit=lambda app: app.pop("sidecars"), with_binary=False)
    checks.app_answers(target, name)  # the app itself is fine

    with pytest.raises(CheckFailed) as info:
        checks.config_from_sidecar(target, name)
    failed = info.value
    assert failed.expected.startswith("HTTP 200 with {\"Scope\": \"some-service.admin\"")
    assert "HTTP 502" in failed.seen and "error connecting to local config-server" in failed.seen
    assert "has no sidecar at all" in failed.hint and "sidecars:" in failed.hint

    with pytest.raises(CheckFailed, match="seen:     no sidecars"):
        checks.sidecar_registered(target, name)
    with pytest.raises(CheckFailed, match="no `sidecars:` line|sidecars: ''"):
        checks.cf_app_shows_sidecar(target, name)
    with pytest.raises(CheckFailed, match=r"no \[APP/PROC/WEB/SIDECAR/CONFIG-SERVER/0\]"):
        checks.logs_show_app_and_sidecar(target, name)


def test_app_pushed_without_the_sidecar_fails_the_one_container_check(target: LocalTarget, apps: Pusher) -> None:
    needs_isolation(target)
    name = apps.push(edit=lambda app: app.pop("sidecars"), with_binary=False)
    with pytest.raises(CheckFailed, match="no 'config-server'"):
        checks.processes_in_one_container(target, name)


def test_sidecar_binding_another_port_fails_the_listening_check(target: LocalTarget, apps: Pusher) -> None:
    name = apps.push(edit=lambda app: app["sidecars"][0].update(command="CONFIG_SERVER_PORT=9099 ./config-server"))
    with pytest.raises(CheckFailed) as info:
        checks.config_from_sidecar(target, name)
    assert "sidecar(s) config-server" in info.value.hint and "$CONFIG_SERVER_PORT" in info.value.hint
    needs_isolation(target)
    with pytest.raises(CheckFailed) as info:
        checks.sidecar_listening(target, name, port=8082)
    assert info.value.seen == "port 8082 is held by nothing; config-server listens on 9099"
    assert "both read $CONFIG_SERVER_PORT" in info.value.hint
    assert "after `cf set-env`, restart the app" in info.value.hint.lower()
    # On the port the sidecar really uses, the listener is found, but the app never connects there.
    with pytest.raises(CheckFailed) as info:
        checks.sidecar_listening(target, name, port=9099)
    assert info.value.seen == "no TCP connection on port 9099 besides the listener"


def test_memory_check_fails_when_the_sidecar_has_no_memory_of_its_own(target: LocalTarget, good_app: str) -> None:
    needs_isolation(target)
    with pytest.raises(CheckFailed) as info:
        checks.memory_limit_carved(target, good_app, process_memory_mb=256, sidecar_memory_mb=64)
    # Without `memory:` a sidecar sees the whole process memory, and nothing is carved out.
    assert info.value.seen == "MEMORY_LIMIT=256m for the app and MEMORY_LIMIT=256m for the sidecar"
    assert "memory: 64M" in info.value.hint


def test_crash_check_without_a_crash_fails_and_says_what_to_run(target: LocalTarget, good_app: str) -> None:
    with pytest.raises(CheckFailed) as info:
        checks.sidecar_crash_recovers(target, good_app, deadline=1.0)
    assert info.value.seen == "no app.crash event within 1s"
    assert 'kill -9 $(pgrep config-server)' in info.value.hint


def test_crash_checks_follow_the_platform_through_restarts_and_back_off(target: LocalTarget,
                                                                       apps: Pusher) -> None:
    # `pgrep` would see every config-server on this machine, not just this container's.
    needs_isolation(target)
    name = apps.push()

    def kill_sidecar() -> None:
        target.ssh(name, "kill -9 $(pgrep config-server)", check=False)

    with pytest.raises(CheckFailed) as info:
        checks.crash_logged(target, name, deadline=1.0)
    assert "App instance exited with guid" in info.value.expected and "Kill the sidecar first" in info.value.hint
    kill_sidecar()
    first = checks.sidecar_crash_recovers(target, name, crash_count=1)
    assert first.data.data["exit_description"] == "APP/PROC/WEB/SIDECAR/CONFIG-SERVER: Exited with status 137"
    logged = checks.crash_logged(target, name)
    guid = target.app_guid(name)
    assert logged.data.tag == "[API/0]"
    assert logged.data.message.startswith(f"App instance exited with guid {guid} payload: {{\"instance\"=>")
    assert ('"reason"=>"CRASHED", "exit_description"=>"APP/PROC/WEB/SIDECAR/CONFIG-SERVER: Exited with status 137", '
            '"crash_count"=>1, "crash_timestamp"=>') in logged.data.message
    kill_sidecar()
    assert checks.sidecar_crash_recovers(target, name, crash_count=2).passed
    # The third crash in a row is restarted only after 30 s (Diego's back-off): a check with a
    # shorter deadline must fail with a clear message instead of waiting or hanging.
    kill_sidecar()
    with pytest.raises(CheckFailed) as info:
        checks.sidecar_crash_recovers(target, name, crash_count=3, deadline=3.0)
    assert info.value.expected == f"instance 0 of {name} RUNNING again within 3s after the crash"
    assert "CRASHED" in info.value.seen and info.value.seen.endswith("after 3s")
    assert "waits 30 s" in info.value.hint


def test_a_frozen_sidecar_is_caught_in_flight_and_the_instance_stays_running(target: LocalTarget,
                                                                           apps: Pusher, capsys) -> None:
    needs_isolation(target)
    name = apps.push()
    # Not frozen: the sidecar answers, and the check says how to freeze it.
    with pytest.raises(CheckFailed) as info:
        checks.hung_sidecar_unnoticed(target, name, deadline=2.0)
    assert info.value.seen == "HTTP 200 with the sidecar's JSON: the sidecar answered, so it is not frozen"
    assert "kill -STOP" in info.value.hint

    target.ssh(name, "kill -STOP $(pgrep config-server)")
    try:
        capsys.readouterr()
        result = checks.hung_sidecar_unnoticed(target, name)
        assert capsys.readouterr().out == result.line() + "\n"
        assert "GET /config answered HTTP 502 {\"error\": \"error connecting to local config-server\"}" in result.line()
        assert "instance 0 stayed RUNNING" in result.line()
        snap = result.data
        app_pid = snap.pids_of("app.py")[0]
        assert any(s.pid == app_pid and s.state == "ESTABLISHED" and s.remote_port == 8082 for s in snap.sockets)
        checks.show_sockets(target, name, port=8082, snapshot=snap)
        table = capsys.readouterr().out
        assert table.startswith(f'$ cf ssh {name} -c "lsof -i | grep 8082"')
        assert any(line.split()[:3] == ["python", str(app_pid), "ESTABLISHED"] for line in table.splitlines())
    finally:
        target.ssh(name, "kill -CONT $(pgrep config-server)")
    assert checks.config_from_sidecar(target, name).passed
    assert not target.events(name, types=("app.crash",)), "a frozen sidecar is no crash"


def test_a_sidecar_serves_web_and_worker_and_each_instance_runs_its_own(target: LocalTarget, apps: Pusher,
                                                                       good_app: str) -> None:
    # An app with only a web process: each check names what is missing in the manifest.
    with pytest.raises(CheckFailed) as info:
        checks.cf_app_shows_sidecar(target, good_app, process_type="worker")
    assert info.value.seen == "no process of type worker; `cf app` lists the type(s) web"
    assert "under `processes:`" in info.value.hint
    with pytest.raises(CheckFailed) as info:
        checks.sidecar_registered(target, good_app, process_type="worker")
    assert '"process_types": ["web"]' in info.value.seen and "List worker under `process_types:`" in info.value.hint

    def two_types_two_instances(app: dict[str, Any]) -> None:
        app["instances"] = 2
        app["processes"] = [{"type": "worker", "command": "python app.py", "instances": 1, "memory": "128M",
                             "health-check-type": "process"}]
        app["sidecars"][0]["process_types"] = ["web", "worker"]

    name = apps.push(edit=two_types_two_instances)
    assert checks.sidecar_registered(target, name, process_type="worker").passed
    assert checks.cf_app_shows_sidecar(target, name, process_type="worker").passed
    assert [i.state for i in target.instances(name, "worker")] == ["RUNNING"]
    needs_isolation(target)
    result = checks.sidecar_per_instance(target, name, instances=2)
    assert [index for index, _ in result.data] == [0, 1]
    # Asked for more instances than there are, the check says how to scale.
    with pytest.raises(CheckFailed) as info:
        checks.sidecar_per_instance(target, name, instances=3, deadline=1.0)
    assert info.value.seen == "#0 RUNNING, #1 RUNNING after 1s"
    assert f"cf scale {name} -i 3" in info.value.hint


@pytest.mark.parametrize("check", [checks.app_answers, checks.config_from_sidecar, checks.hung_sidecar_unnoticed,
                                   checks.sidecar_registered, checks.crash_logged, checks.sidecar_per_instance])
def test_a_check_on_an_app_that_is_not_there_says_to_push_it(target: LocalTarget, check: Any) -> None:
    name = f"gone-{uuid.uuid4().hex[:8]}"
    if check.needs_isolation:
        needs_isolation(target)
    with pytest.raises(CheckFailed) as info:
        check(target, name)
    # What was seen says the app is missing; the hint must fit that, not blame the platform.
    assert f"'{name}' was not found" in info.value.seen or "no app" in info.value.seen.lower()
    assert "push it first" in info.value.hint.lower() or "is the app pushed" in info.value.hint.lower()
    assert "is the platform running" not in info.value.hint.lower()


class NeverRestarts(Target):
    """A platform whose crashed instance never comes back: the check under test must say so."""

    kind = "never-restarts"

    def __init__(self) -> None:
        super().__init__(echo=False)
        self.polls = 0

    def _argv(self, args: Sequence[str]) -> list[str]:
        raise AssertionError(f"no cf verb expected, got {args}")

    def app_url(self, app: str) -> str:
        return f"http://{app}.example"

    def http_get(self, app: str, path: str = "/", timeout: float = 10.0) -> HttpResponse:
        return HttpResponse(self.app_url(app) + path, 404, {"X-Cf-RouterError": "unknown_route"},
                            f"404 Not Found: Requested route ('{app}.example') does not exist.\n")

    def isolation(self) -> Isolation:
        return Isolation(True, "pretends to have containers")

    def outside_host(self, app: str) -> str:
        return "127.0.0.1"

    def install_buildpack(self, directory: Path, name: str, manifest: Path) -> str:
        raise AssertionError("no buildpack expected")

    def remove_buildpack(self, name: str) -> None:
        raise AssertionError("no buildpack expected")

    def events(self, app: str, types: Sequence[str] = ()) -> list[Event]:
        crash = {"instance": "i-1", "index": 0, "reason": "CRASHED",
                 "exit_description": "APP/PROC/WEB/SIDECAR/CONFIG-SERVER: Exited with status 137"}
        recorded = [Event("e1", "app.crash", "2024-01-01T00:00:00Z", crash),
                    Event("e2", "audit.app.process.crash", "2024-01-01T00:00:00Z", dict(crash, crash_count=1))]
        return [e for e in recorded if not types or e.type in types]

    def instances(self, app: str, process_type: str = "web") -> list[Instance]:
        self.polls += 1
        return [Instance(0, "CRASHED")]


def test_crash_check_on_a_platform_that_never_restarts_fails_clearly(capsys) -> None:
    platform = NeverRestarts()
    with pytest.raises(CheckFailed) as info:
        checks.sidecar_crash_recovers(platform, "app", deadline=1.0)
    assert info.value.seen == "#0 CRASHED after 1s"
    assert "A platform that does not restart crashed instances leaves the app down" in info.value.hint
    assert platform.polls >= 2, "the check must poll until its deadline, not look once"
    assert PASSED_MARK not in capsys.readouterr().out


# ------------------------------------------------------------------------ isolation: skipped

def test_isolation_checks_are_skipped_in_process_mode(tmp_path: Path, sidecar_binary: Path,
                                                      monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("LOCALCF_RUNTIME", "process")
    platform = LocalTarget(home=tmp_path / "lcf", echo=False)
    try:
        pusher = Pusher(platform, sidecar_binary, tmp_path / "apps")
        # A free port: in process mode the sidecar listens on this machine, beside everything else.
        name = pusher.push(port=free_port())
        assert platform.runtime == "process"
        capsys.readouterr()
        for check in (checks.processes_in_one_container, checks.sidecar_listening, checks.sidecar_port_private,
                      checks.memory_limit_carved):
            result = check(platform, name)
            assert result.status == "skipped" and not result.passed
            out = capsys.readouterr().out
            assert out.startswith(SKIPPED_MARK + " skipped: ") and "runtime mode `process`" in out
            assert PASSED_MARK not in out
        assert checks.app_answers(platform, name).passed  # what needs no isolation is still proven
    finally:
        platform.stop()


# ---------------------------------------------------------------------- reading /proc inside

SNAPSHOT = """\
PROC 1 /usr/bin/python3 -I -S container_init.py init.json
PROC 2 python app.py
PROC 3 ./config-server
PROC 9 bash -c for d in /proc/[0-9]*; do ... MEMORY_LIMIT ... done
ENV 2 MEMORY_LIMIT=192m
ENV 3 MEMORY_LIMIT=64m
SOCK 3 socket:[1111]
SOCK 2 socket:[2222]
SOCK 2 socket:[4444]
TCP
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F92 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0 100 0 0 10 0
   1: 0100007F:A4B2 0100007F:1F92 01 00000000:00000000 00:00000000 00000000     0        0 2222 1 0 20 4 30 10 -1
   2: 0100007F:1F92 0100007F:A4B3 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 5555 1 0 20 4 30 10 -1
"""


def test_snapshot_parsing_reads_proc_net_tcp_and_socket_owners() -> None:
    snap = checks.parse_snapshot(SNAPSHOT)
    assert snap.pids_of("config-server") == [3] and snap.pids_of("app.py") == [2]
    assert snap.memory_limits == {2: "192m", 3: "64m"}
    summary = [(s.local, s.local_port, s.remote, s.remote_port, s.state, s.pid) for s in snap.sockets]
    assert summary == [
        ("127.0.0.1", 8082, "0.0.0.0", 0, "LISTEN", 3),
        ("127.0.0.1", 42162, "127.0.0.1", 8082, "ESTABLISHED", 2),
        ("127.0.0.1", 8082, "127.0.0.1", 42163, "TIME_WAIT", None),
        ("::", 8080, "::", 0, "LISTEN", 2),
        ("127.0.0.1", 8080, "127.0.0.1", 54321, "ESTABLISHED", None),
    ]


# ------------------------------------------------------------- the private-port check, both ways

def test_port_check_is_not_fooled_by_another_config_server_on_this_machine(target: LocalTarget, apps: Pusher,
                                                                          sidecar_binary: Path, capsys) -> None:
    needs_isolation(target)  # the process runtime shares this machine's ports
    port = free_port()
    name = apps.push(port=port)
    impostor = subprocess.Popen([str(sidecar_binary)], env={"CONFIG_SERVER_PORT": str(port)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until = time.monotonic() + 10
        while time.monotonic() < wait_until:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        capsys.readouterr()
        result = checks.sidecar_port_private(target, name, port=port)
        assert result.passed
        assert "another program on this machine" in capsys.readouterr().out
    finally:
        impostor.terminate()
        impostor.wait(10)


def test_port_check_fails_when_the_sidecar_itself_answers_from_outside(tmp_path: Path, sidecar_binary: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # process mode puts the sidecar on this machine's network: exactly the leak the check must catch
    monkeypatch.setenv("LOCALCF_RUNTIME", "process")
    platform = LocalTarget(home=tmp_path / "lcf", echo=False)
    try:
        port = free_port()
        name = Pusher(platform, sidecar_binary, tmp_path / "apps").push(port=port)
        with pytest.raises(checks._Fail) as info:  # the check's body, without its isolation skip
            checks.sidecar_port_private.__wrapped__(platform, name, port=port)
        assert "logged the request" in info.value.seen
    finally:
        platform.stop()
