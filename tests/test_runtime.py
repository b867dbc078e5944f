"""The container runtime, with real processes: namespaces mode (skipped with the reason where the
host forbids it) and process mode. The droplet is fixtures/runtime/droplet, tarred per test."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from localcf.runtime import (ContainerError, ContainerSpec, IsolationUnavailable, ProcessDef, Runtime,
                             free_port, namespace_support)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "runtime"
PY = sys.executable
MODES = ["namespaces", "process"]


# --- helpers ----------------------------------------------------------------------------------

def wait_for(predicate, timeout: float = 30.0, what: str = "the condition"):
    """Poll until `predicate()` is truthy; fail the test (not time it) if it never is."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


class Events:
    """Collects on_output and on_exit calls."""

    def __init__(self):
        self.lines: list[tuple[str, str, str]] = []
        self.exits: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def output(self, name: str, stream: str, line: str) -> None:
        with self.lock:
            self.lines.append((name, stream, line))

    def exit(self, name: str, status: int) -> None:
        with self.lock:
            self.exits.append((name, status))

    def out(self, name: str, stream: str = "OUT") -> list[str]:
        with self.lock:
            return [line for n, s, line in self.lines if n == name and s == stream]

    def status(self, name: str) -> int | None:
        with self.lock:
            found = [status for n, status in self.exits if n == name]
        assert len(found) <= 1, f"on_exit called {len(found)} times for {name}"
        return found[0] if found else None


def http_get(sock: socket.socket, path: str = "/") -> tuple[int, str]:
    with sock:
        sock.settimeout(10)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def scan_proc(needle: str) -> list[int]:
    """Pids (other than ours) whose command line or environment carries `needle`."""
    found, raw = [], needle.encode()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        for part in ("cmdline", "environ"):
            try:
                with open(f"/proc/{name}/{part}", "rb") as f:
                    if raw in f.read():
                        found.append(int(name))
                        break
            except OSError:
                continue
    return found


def running_commands(needle: str) -> list[str]:
    """Command lines of the processes that carry `needle` (zombies have none)."""
    out = []
    for pid in scan_proc(needle):
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip())
        except OSError:
            continue
    return out


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


@pytest.fixture(scope="session")
def droplet(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("droplet") / "droplet.tgz"
    with tarfile.open(path, "w:gz") as tf:
        for child in sorted((FIXTURES / "droplet").iterdir()):
            tf.add(child, arcname=child.name)
    return path


@pytest.fixture(params=MODES)
def runtime(request, tmp_path):
    if request.param == "namespaces":
        support = namespace_support(tmp_path)
        if not support.ok:
            pytest.skip(f"namespaces mode unavailable here: {support.reason}")
    rt = Runtime(tmp_path / "containers", request.param)
    yield rt
    rt.close(graceful=1.0)


def make_spec(rt: Runtime, droplet: Path, processes: dict[str, str], **extra_env) -> ContainerSpec:
    cid = str(uuid.uuid4())
    home = rt.home_root(cid)
    port = rt.allocate_port()
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": f"{home}/app", "TMPDIR": f"{home}/tmp",
           "PORT": str(port), "INSTANCE_GUID": cid, "LANG": "C.UTF-8", **extra_env}
    return ContainerSpec(cid, droplet, [ProcessDef(n, c, dict(env)) for n, c in processes.items()],
                         routed_port=port)


def app_and_sidecar(rt: Runtime, droplet: Path, events: Events):
    sidecar_port = free_port()
    spec = make_spec(rt, droplet, {"web": f"{PY} -u server.py", "config-server": f"{PY} -u sidecar.py"},
                     SIDECAR_PORT=str(sidecar_port))
    container = rt.create(spec, events.output, events.exit)
    container.start()
    wait_for(lambda: container.port_open(spec.routed_port) and container.port_open(sidecar_port),
             what="the app and sidecar ports")
    return container, spec, sidecar_port


# --- processes, ports, isolation ---------------------------------------------------------------

def test_app_reaches_sidecar_and_connect_reaches_both(runtime, droplet):
    events = Events()
    container, spec, sidecar_port = app_and_sidecar(runtime, droplet, events)
    assert http_get(container.connect()) == (200, "hello from web; ORDER=profile.d/a profile.d/b .profile.d .profile")
    assert http_get(container.connect(), "/sidecar") == (200, "web got: hello from sidecar")
    assert http_get(container.connect(sidecar_port)) == (200, "hello from sidecar")
    assert container.http_ok(spec.routed_port, "/")
    assert not container.http_ok(spec.routed_port, "/missing")  # 404 is not healthy
    assert not container.port_open(free_port())
    with pytest.raises(ConnectionRefusedError):
        container.connect(free_port())
    assert events.out("web")[-1] == f"web listening on {spec.routed_port}"
    assert events.out("config-server")[-1] == f"sidecar listening on {sidecar_port}"

    upstream = container.upstream()
    if runtime.mode == "namespaces":
        assert upstream.startswith("unix:")
        relay = socket.socket(socket.AF_UNIX)
        relay.connect(upstream[len("unix:"):])
        assert http_get(relay) == (200, "hello from web; ORDER=profile.d/a profile.d/b .profile.d .profile")
        assert container.home_root() == "/home/vcap"
    else:
        assert upstream == f"127.0.0.1:{spec.routed_port}"
        assert container.home_root() == str(container.root)
    assert (container.root / "app" / "server.py").is_file()
    assert (container.root / "deps" / "0" / "README").is_file()


def test_isolation_ps_ports_hostname(runtime, droplet):
    if runtime.mode != "namespaces":
        pytest.skip("process mode has no isolation: processes share the host's pid and network namespaces")
    events = Events()
    container, spec, sidecar_port = app_and_sidecar(runtime, droplet, events)
    env = spec.processes[0].env

    ps = container.exec(["ps", "-e", "-o", "pid=,args="], env).communicate(timeout=30)[0].decode()
    rows = [line.split(None, 1) for line in ps.strip().splitlines()]
    commands = [args for _, args in rows]
    # PID 1 reads as garden's init, as on a Diego cell; nothing of its host command line is left.
    assert rows[0] == ["1", "/tmp/garden-init"], ps
    assert any("server.py" in c for c in commands) and any("sidecar.py" in c for c in commands)
    # Nothing of the host shows: every process is the init, the app, the sidecar or ps itself.
    assert all(any(k in c for k in ("/tmp/garden-init", "server.py", "sidecar.py", "ps -e")) for c in commands), ps

    with pytest.raises(ConnectionRefusedError):  # the sidecar's port is not on the host
        socket.create_connection(("127.0.0.1", sidecar_port), timeout=5).close()
    assert http_get(container.connect(sidecar_port)) == (200, "hello from sidecar")

    script = "hostname; pwd; id -u; getent hosts $(hostname) | cut -d' ' -f1"
    out, _ = container.exec(["bash", "-c", script], env, cwd="/home/vcap/app").communicate(timeout=30)
    assert out.decode().split() == [spec.id, "/home/vcap/app", "2000", "127.0.0.1"]  # vcap, as on a cell
    # All of the container's processes are one user: a session reads the sidecar's descriptors
    # (what `lsof` does) and may signal it, as on a cell.
    peek = "readlink /proc/$(pgrep -f sidecar.py | head -n 1)/fd/0 && kill -0 $(pgrep -f sidecar.py | head -n 1) && echo may-signal"
    out, err = container.exec(["sh", "-c", peek], env).communicate(timeout=30)
    assert out.decode().split() == ["/dev/null", "may-signal"], err
    # Nothing of the host's homes: /home holds vcap alone.
    listing = container.exec(["ls", "-A", "/home"], env).communicate(timeout=30)[0].decode().split()
    assert listing == ["vcap"]


def test_launcher_lines_and_profile_order(runtime, droplet):
    events = Events()
    spec = make_spec(runtime, droplet, {"order": 'echo "ORDER=$ORDER"; echo "PWD=$PWD"; echo oops >&2'})
    container = runtime.create(spec, events.output, events.exit)
    container.start()
    wait_for(lambda: events.status("order") is not None, what="the process to exit")
    home = container.home_root()
    assert events.out("order") == ["Invoking pre-start scripts.", "Invoking start command.",
                                   "ORDER=profile.d/a profile.d/b .profile.d .profile", f"PWD={home}/app"]
    assert events.out("order", "ERR") == ["oops"]
    assert events.status("order") == 0


# --- exits and stopping -----------------------------------------------------------------------

def test_exit_statuses(runtime, droplet):
    events = Events()
    spec = make_spec(runtime, droplet, {
        "clean": "exit 0", "three": "exit 3", "victim": "exec sleep 300", "target": "exec sleep 300",
    })
    container = runtime.create(spec, events.output, events.exit)
    container.start()
    wait_for(lambda: events.status("clean") is not None and events.status("three") is not None,
             what="the short processes to exit")
    assert events.status("clean") == 0
    assert events.status("three") == 3
    pids = container.pids()
    assert set(pids) == {"victim", "target"}
    # (pids are those of the launcher at first: it becomes the command by exec)
    wait_for(lambda: b"sleep" in Path(f"/proc/{pids['victim']}/cmdline").read_bytes(), what="exec of sleep")
    assert spec.id.encode() in Path(f"/proc/{pids['victim']}/environ").read_bytes()

    container.kill_process("victim", signal.SIGKILL)  # as `kill -9` inside
    os.kill(pids["target"], signal.SIGKILL)           # as `kill -9` of the host pid
    wait_for(lambda: events.status("victim") is not None and events.status("target") is not None,
             what="the killed processes to be reported")
    assert events.status("victim") == 137
    assert events.status("target") == 137
    assert container.pids() == {}
    with pytest.raises(ProcessLookupError):
        container.kill_process("victim", signal.SIGTERM)


def test_stop_sends_sigterm_then_sigkill(runtime, droplet):
    events = Events()
    spec = make_spec(runtime, droplet, {
        "stubborn": "trap '' TERM; echo armed; while true; do sleep 0.05; done",
        "polite": "exec sleep 300",
    })
    container = runtime.create(spec, events.output, events.exit)
    container.start()
    wait_for(lambda: "armed" in events.out("stubborn"), what="the TERM trap")
    container.stop(graceful=0.5)
    # stop() returns once every process exited and its on_exit ran.
    assert events.status("polite") == 128 + signal.SIGTERM
    assert events.status("stubborn") == 128 + signal.SIGKILL
    container.destroy()
    container.destroy()  # idempotent
    assert not container.dir.exists()


def test_codependent_stop_from_on_exit_callback(runtime, droplet):
    """The cell stops the rest from inside on_exit: that must not deadlock."""
    events = Events()
    holder = {}

    def on_exit(name: str, status: int) -> None:
        events.exit(name, status)
        if name == "short":
            holder["c"].stop(graceful=5)
            holder["stopped"] = True

    spec = make_spec(runtime, droplet, {"short": "exit 0", "long": "echo started; exec sleep 300",
                                        "long2": "echo started; exec sleep 300"})
    holder["c"] = container = runtime.create(spec, events.output, on_exit)
    container.start()
    wait_for(lambda: holder.get("stopped"), what="the callback's stop() to return")
    # A process not yet started when the stop came is not started at all.
    assert container.running() == []
    assert events.status("short") == 0
    # One that had started (it wrote a line) was stopped, and its exit (SIGTERM: 143) is reported, once;
    # one that wrote nothing may have been stopped before its first line, or never started.
    for name in ("long", "long2"):
        if events.out(name):
            assert events.status(name) == 143, (name, events.lines, events.exits)
        else:
            assert events.status(name) in (143, None), (name, events.exits)
    assert holder["c"].pids() == {}


def test_init_reaps_orphans_and_its_death_is_reported(runtime, droplet):
    events = Events()
    spec = make_spec(runtime, droplet, {"web": "(sleep 0.05 &); (sleep 0.05 &); exec sleep 300"})
    container = runtime.create(spec, events.output, events.exit)
    container.start()
    init = container.init_pid()
    wait_for(lambda: "sleep 300" in running_commands(spec.id), what="the process to start")
    wait_for(lambda: "sleep 0.05" not in running_commands(spec.id), what="the short-lived orphans to end")

    def children_states() -> list[str]:
        states = []
        for name in os.listdir("/proc"):
            try:
                fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == init:
                states.append(fields[0])
        return states

    wait_for(lambda: children_states() == ["S"], what="the init to reap its orphans")
    os.kill(init, signal.SIGKILL)  # an init that dies takes its processes along, and says so
    wait_for(lambda: events.status("web") is not None, what="the exit report")
    assert events.status("web") == 137
    wait_for(lambda: scan_proc(spec.id) == [], what="the processes to die with their init")
    with pytest.raises(ContainerError, match="is not running"):
        container.exec(["true"], {})


# --- exec ---------------------------------------------------------------------------------------

def test_exec_pipes_status_and_tty(runtime, droplet):
    events = Events()
    spec = make_spec(runtime, droplet, {"web": "exec sleep 300"})
    container = runtime.create(spec, events.output, events.exit)
    container.start()
    env = spec.processes[0].env

    cat = container.exec(["cat"], env)
    assert cat.communicate(b"through stdin\n", timeout=30) == (b"through stdin\n", b"")
    assert cat.returncode == 0
    failing = container.exec(["bash", "-c", "echo to-err >&2; exit 5"], env)
    assert failing.communicate(timeout=30) == (b"", b"to-err\n")
    assert failing.returncode == 5
    with pytest.raises(FileNotFoundError):
        container.exec(["no-such-command-here"], env)

    term = container.exec(["bash", "-c", "test -t 0 && echo on-a-tty; read line; echo got-$line"], env, tty=True)
    try:
        os.write(term.pty, b"hello\n")
        seen = b""
        while b"got-hello" not in seen:
            try:
                chunk = os.read(term.pty, 4096)
            except OSError:  # EIO: the terminal's other side closed
                break
            if not chunk:
                break
            seen += chunk
        assert b"on-a-tty" in seen and b"got-hello" in seen
        assert term.wait(30) == 0
    finally:
        term.close()

    sleeper = container.exec(["sleep", "300"], env)
    sleeper.kill()
    assert sleeper.wait(30) == 137


# --- staging tasks ----------------------------------------------------------------------------

@pytest.fixture
def host_server():
    class Hello(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


FETCH = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"


def test_run_task_host_network_reaches_host(runtime, host_server):
    lines = []
    status = runtime.run_task([PY, "-c", FETCH, host_server], env={"PATH": os.environ["PATH"]},
                              on_output=lambda stream, line: lines.append((stream, line)))
    assert (status, lines) == (0, [("OUT", "ok")])


def test_run_task_air_gapped_cannot_reach_host(runtime, host_server):
    lines = []
    task = dict(env={"PATH": os.environ["PATH"]}, network="none",
                on_output=lambda stream, line: lines.append((stream, line)))
    if runtime.mode != "namespaces":
        with pytest.raises(IsolationUnavailable, match="air-gapped staging task needs namespaces mode"):
            runtime.run_task([PY, "-c", FETCH, host_server], **task)
        pytest.skip("process mode cannot air-gap a task (and says so, checked above)")
    status = runtime.run_task([PY, "-c", FETCH, host_server], **task)
    assert status == 1
    assert ("OUT", "ok") not in lines
    assert any("Connection refused" in line or "unreachable" in line for _, line in lines), lines


def test_run_task_binds_status_and_streams(runtime, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "in.txt").write_text("payload\n")
    binds = {work: "/home/vcap/work"}
    inside = runtime.task_paths(binds)[work]
    assert inside == ("/home/vcap/work" if runtime.mode == "namespaces" else str(work.resolve()))
    lines = []
    script = 'cp "$1/in.txt" "$1/out.txt"; echo copied; echo warned >&2; kill -9 $$'
    status = runtime.run_task(["bash", "-c", script, "task", inside], env={"PATH": os.environ["PATH"]},
                              binds=binds, on_output=lambda stream, line: lines.append((stream, line)))
    assert status == 137
    assert sorted(lines) == [("ERR", "warned"), ("OUT", "copied")]
    assert (work / "out.txt").read_text() == "payload\n"
    assert not list((runtime.base_dir / ".tasks").iterdir())  # scratch removed


def test_run_task_timeout_kills_the_whole_task(runtime):
    marker = f"localcf-task-{uuid.uuid4().hex}"
    env = {"PATH": os.environ["PATH"], "MARKER": marker}
    with pytest.raises(TimeoutError, match="ran longer than 0.5 s and was killed"):
        runtime.run_task(["bash", "-c", "sleep 300 & echo started; sleep 301"], env=env, timeout=0.5,
                         on_output=lambda *a: None)
    try:
        wait_for(lambda: scan_proc(marker) == [], timeout=10, what="the task's processes to die")
    finally:
        kill_all(scan_proc(marker))


def test_run_task_rejects_binds_outside_home_vcap(runtime, tmp_path):
    if runtime.mode != "namespaces":
        pytest.skip("process mode ignores binds: tasks see host paths")
    with pytest.raises(ValueError, match="staging binds go under /home/vcap/"):
        runtime.run_task(["true"], env={}, binds={tmp_path: "/tmp/app"}, on_output=lambda *a: None)


# --- no orphans -------------------------------------------------------------------------------

def test_destroy_leaves_no_process(runtime, droplet):
    events = Events()
    spec = make_spec(runtime, droplet, {
        "web": "sleep 300 & (setsid sleep 301 &); exec sleep 302",  # a child, an escaped grandchild
    })
    container = runtime.create(spec, events.output, events.exit)
    container.start()
    wait_for(lambda: len(scan_proc(spec.id)) >= 3, what="the processes to start")
    container.destroy(graceful=1.0)
    try:
        left = scan_proc(spec.id)
        assert left == []
    finally:
        kill_all(scan_proc(spec.id))
    assert not container.dir.exists()
    assert events.status("web") == 143


def test_killed_owner_leaves_no_process(runtime, droplet, tmp_path):
    cid = str(uuid.uuid4())
    owner = subprocess.Popen(
        [PY, str(FIXTURES / "owner.py"), str(tmp_path / "owned"), runtime.mode, str(droplet), cid,
         str(free_port()), "hold"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    report = {}
    try:
        report = json.loads(owner.stdout.readline() or '{"error": "no report"}')
        assert "pids" in report, (report, owner.stderr.read() if owner.poll() is not None else "")
        assert set(report["pids"]) == {"web", "config-server"}
        assert len(scan_proc(cid)) >= 4  # processes, their children, and the init
        owner.kill()  # SIGKILL: no cleanup code of the owner runs
        owner.wait()
        deadline = time.monotonic() + 10
        while scan_proc(cid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert scan_proc(cid) == []
        # What the dead owner left, the next one reclaims: the container's folder and socket,
        # and a staging task's folder.
        left = tmp_path / "owned" / cid
        task_left = tmp_path / "owned" / ".tasks" / "task-0123456789ab"
        (task_left / "vcap").mkdir(parents=True)
        sock = Path(report["upstream"][len("unix:"):]) if report["upstream"].startswith("unix:") else None
        assert left.is_dir() and (sock is None or sock.exists())
        removed = Runtime(tmp_path / "owned", runtime.mode).reclaim()
        assert sorted(removed) == sorted([left, task_left])
        assert not left.exists() and not task_left.exists() and (sock is None or not sock.exists())
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        kill_all(scan_proc(cid))
        # Nobody was left to remove the relay's socket (it may live outside tmp_path).
        if report.get("upstream", "").startswith("unix:"):
            Path(report["upstream"][len("unix:"):]).unlink(missing_ok=True)
        owner.stdout.close()
        owner.stderr.close()


def test_reclaim_keeps_what_is_alive(runtime, droplet):
    events = Events()
    container, spec, _ = app_and_sidecar(runtime, droplet, events)
    other = Runtime(runtime.base_dir, runtime.mode)  # as a second daemon on the same folder would
    assert other.reclaim() == []
    assert container.dir.is_dir() and container.port_open(spec.routed_port)


def test_namespaces_work_for_an_unprivileged_user(droplet, tmp_path):
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to become the user nobody (the product itself never needs root)")
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    # Tried through bash: nobody must be able to exec it from any process, not only from setpriv.
    check = 'exec "$0" -c "import sys; assert sys.version_info >= (3, 10)"'
    python = next((p for p in (PY, os.path.realpath(PY), "/usr/bin/python3", shutil.which("python3"))
                   if p and subprocess.run([*as_nobody, "bash", "-c", check, p], capture_output=True).returncode == 0),
                  None)
    if python is None:
        pytest.skip("no Python interpreter that the user nobody may run")
    if subprocess.run([*as_nobody, "unshare", "--user", "--map-root-user", "--pid", "--fork", "--net", "true"],
                      capture_output=True).returncode != 0:
        pytest.skip("this host forbids unprivileged user namespaces")
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="localcf-nobody-"))  # tmp_path's parents are closed to nobody
    try:
        shared.chmod(0o777)
        shutil.copy(droplet, shared / "droplet.tgz")
        (shared / "droplet.tgz").chmod(0o644)
        cid = str(uuid.uuid4())
        # psutil (a dependency, for pids()) as nobody's interpreter can load it, from a copy.
        import psutil

        site = shared / "site"
        shutil.copytree(Path(psutil.__file__).parent, site / "psutil")
        for path in [site, *site.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        env = {"PATH": os.environ["PATH"], "HOME": str(shared),
               "PYTHONPATH": f"{Path(__import__('localcf').__file__).resolve().parent.parent}:{site}"}
        if subprocess.run([*as_nobody, python, "-c", "import psutil"], env=env, capture_output=True).returncode:
            pytest.skip(f"{python} cannot load this psutil (a dependency of the runtime)")
        done = subprocess.run([*as_nobody, python, str(FIXTURES / "owner.py"), str(shared / "base"), "namespaces",
                               str(shared / "droplet.tgz"), cid, str(free_port()), "check"],
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        seen = json.loads(done.stdout)
        assert (seen["mode"], seen["uid"], seen["home"]) == ("namespaces", 65534, "/home/vcap")
        # vcap inside, the user who runs localcf on the host
        assert seen["inside_id"] == "2000"
        assert seen["host_uids"] == {"web": ["65534"] * 4, "config-server": ["65534"] * 4}
        assert seen["ps"].split()[0] == "1"
        assert not seen["host_reaches_sidecar"] and seen["inside_reaches_sidecar"]
    finally:
        kill_all(scan_proc(str(shared)))
        shutil.rmtree(shared, ignore_errors=True)


# --- usage and errors ---------------------------------------------------------------------------

def test_pids_and_stats(runtime, droplet):
    events = Events()
    container, spec, _ = app_and_sidecar(runtime, droplet, events)
    pids = container.pids()
    assert set(pids) == {"web", "config-server"}
    assert b"server.py" in Path(f"/proc/{pids['web']}/cmdline").read_bytes()
    assert b"sidecar.py" in Path(f"/proc/{pids['config-server']}/cmdline").read_bytes()
    stats = container.stats()
    assert stats["mem"] > 1_000_000  # two Python interpreters
    assert stats["disk"] >= (container.root / "app" / "server.py").stat().st_size
    # cpu: cores busy since the last reading (1.0 = one core). A loop inside burns 0.6 s of CPU time
    # (however long a loaded machine makes that take) and then idles: the readings, each times the
    # time since the one before, add up to that CPU time; none is above the machine's cores
    container.stats()
    busy = container.exec([sys.executable, "-c",
                           "import time\nwhile time.process_time() < 0.6: pass\ntime.sleep(5)"],
                          {"PATH": "/usr/bin:/bin"})
    burned, last = 0.0, time.monotonic()
    deadline = last + 60
    while burned < 0.5 and time.monotonic() < deadline:
        time.sleep(0.2)
        cpu = container.stats()["cpu"]
        now = time.monotonic()
        assert 0.0 <= cpu <= (os.cpu_count() or 1) + 0.05, cpu
        burned, last = burned + cpu * (now - last), now
    busy.wait(timeout=60)
    assert burned >= 0.5, burned


def test_errors_say_what_to_do(tmp_path, droplet, monkeypatch):
    monkeypatch.setenv("LOCALCF_RUNTIME", "jail")
    with pytest.raises(ValueError, match="unknown container runtime mode 'jail' .*LOCALCF_RUNTIME.*'namespaces' or 'process'"):
        Runtime(tmp_path)
    monkeypatch.setenv("LOCALCF_RUNTIME", "process")
    rt = Runtime(tmp_path / "c")
    assert rt.mode == "process" and "LOCALCF_RUNTIME=process" in rt.notice
    with pytest.raises(ContainerError, match="droplet .*missing.tgz does not exist"):
        rt.create(make_spec(rt, tmp_path / "missing.tgz", {"web": "true"}), print, print)
    with pytest.raises(ValueError, match="process names must be unique, web repeats"):
        rt.create(ContainerSpec("x1", droplet, [ProcessDef("web", "true", {})] * 2), print, print)
    with pytest.raises(ValueError, match="container id '../x' is not valid"):
        rt.home_root("../x")
    not_a_droplet = tmp_path / "bad.tgz"
    not_a_droplet.write_text("not a tarball")
    with pytest.raises(ContainerError, match="cannot unpack droplet"):
        rt.create(make_spec(rt, not_a_droplet, {"web": "true"}), print, print)
    assert rt.containers() == []
    assert [p.name for p in (tmp_path / "c").iterdir()] == []
