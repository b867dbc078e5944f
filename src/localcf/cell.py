"""The cell: desired versus actual instances, like Diego's BBS, rep and executor together.

For every started app it keeps `instances` instances of each process type running, each in its own
container with the type's sidecars beside it. It health-checks the app process, treats any exit of
any process as the instance's crash (codependence), reports crashes as Cloud Controller does
(`[API]` lines, audit events, crash_count) and restarts by the BBS back-off table.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import environment as envmod
from .constants import CELL_ID  # noqa: E402,F401  (re-exported)
from .controller import Controller
from .polling import PollTimeout, poll_until
from .records import Actor, App, CrashPayload, InstanceStats, JsonObject, Process
from .router.routes import Backend, build_routes, match_route
from .runtime import Container, ContainerError, ContainerSpec, ProcessDef, Runtime

GRACEFUL_SECONDS = 10.0
RESET_CRASH_COUNT_AFTER = 300.0  # seconds of running after which a crash counts as the first again


def restart_delay(crash_count: int) -> float | None:
    """Seconds to wait before restarting after the crash that made `crash_count` (None: never).

    Diego's restart calculator: two immediate restarts, then 30 s doubling to 16 min, never after 200.
    """
    if crash_count >= 200:
        return None
    if crash_count <= 2:
        return 0.0
    return float(min(30 * 2 ** (crash_count - 3), 960))


def source_type(process_type: str, sidecar: str | None = None) -> str:
    base = f"APP/PROC/{process_type.upper()}"
    return f"{base}/SIDECAR/{sidecar.upper()}" if sidecar else base


@dataclass
class Instance:
    app_guid: str
    process_guid: str
    process_type: str
    index: int
    guid: str = field(default_factory=lambda: str(uuid.uuid4()))
    state: str = "STARTING"
    since: float = field(default_factory=time.time)
    crash_count: int = 0
    details: str | None = None
    container: Container | None = None
    version: str | None = None
    stopping: bool = False
    crashed_reason: str | None = None
    restart_timer: threading.Timer | None = None
    names: dict[str, str | None] = field(default_factory=dict)  # container process name -> sidecar name
    env: dict[str, str] = field(default_factory=dict)  # the app process's environment (for cf ssh)


class Cell:
    """Runs instances for the controller; also runs staging tasks in the same container runtime."""

    def __init__(self, controller: Controller, runtime: Runtime | None = None):
        self.c = controller
        self.runtime = runtime or Runtime(controller.state.containers)
        self.runtime_mode = self.runtime.mode
        self.runtime_notice = self.runtime.notice
        self.time_scale = float(os.environ.get("LOCALCF_TIME_SCALE", "1") or 1)
        self.graceful = float(os.environ.get("LOCALCF_GRACEFUL_SECONDS", GRACEFUL_SECONDS))
        self._lock = threading.RLock()
        # (process guid) -> {index: Instance}
        self._instances: dict[str, dict[int, Instance]] = {}
        self._closing = False
        self._routes: dict[str, list[tuple[str, str]]] = {}
        self._routes_at = 0.0
        # the router asks for backends on every request: answers are cached until an instance changes
        self._gen = 0
        self._backend_cache: dict[str, tuple[int, list[Backend]]] = {}
        self._web_guid: dict[str, str] = {}

    # ----------------------------------------------------------------------------- staging

    def task_runner(self, argv: list[str], env: dict[str, str], binds: dict[Path, str], network: str,
                    on_output: Callable[[str, str], None]) -> int:
        """Run a staging task in a container: binds map host dirs to paths under /home/vcap."""
        where = self.runtime.task_paths(binds)
        mapped = []
        for arg in argv:
            for host, inside in where.items():
                h = str(host)
                if arg == h or arg.startswith(h + "/"):
                    arg = inside + arg[len(h):]
                    break
            mapped.append(arg)
        return self.runtime.run_task(mapped, env=env, binds=binds, network=network, on_output=on_output)

    # ------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Bring back every app that should run (after a daemon start)."""
        for app in self.c.apps():
            if app.state == "STARTED" and app.droplet_guid:
                self.converge_app(app.guid)

    def shutdown(self) -> None:
        """Stop every container; desired states stay as they are, for the next start."""
        self._closing = True
        with self._lock:
            instances = [i for by in self._instances.values() for i in by.values()]
            self._instances.clear()
        threads = [threading.Thread(target=self._destroy, args=(i, "shutdown"), daemon=True) for i in instances]
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.graceful + 15)
        self.runtime.close(graceful=1)

    def start_app(self, app_guid: str) -> App:
        app = self.c.update_app(app_guid, state="STARTED")
        self.c.audit("audit.app.start", app, {})
        self.converge_app(app_guid)
        return app

    def stop_app(self, app_guid: str) -> App:
        app = self.c.update_app(app_guid, state="STOPPED")
        self.c.audit("audit.app.stop", app, {})
        self._stop_all(app_guid)
        return app

    def restart_app(self, app_guid: str) -> App:
        self._stop_all(app_guid)
        app = self.c.update_app(app_guid, state="STARTED")
        self.c.audit("audit.app.restart", app, {})
        self.converge_app(app_guid)
        return app

    def remove_app(self, app_guid: str) -> None:
        self._stop_all(app_guid)
        self._web_guid.pop(app_guid, None)
        self._backend_cache.pop(app_guid, None)

    def _stop_all(self, app_guid: str) -> None:
        with self._lock:
            doomed = []
            for pguid, by_index in list(self._instances.items()):
                for inst in list(by_index.values()):
                    if inst.app_guid == app_guid:
                        doomed.append(inst)
                        del by_index[inst.index]
                if not by_index:
                    del self._instances[pguid]
        threads = [threading.Thread(target=self._destroy, args=(i, "stop"), daemon=True) for i in doomed]
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.graceful + 15)

    def converge_app(self, app_guid: str) -> None:
        """Make the actual instances match the desired ones for every process type of the app."""
        app = self.c.store.maybe(App, app_guid)
        if not app:
            return
        for proc in self.c.processes(app_guid):
            want = proc.instances if app.state == "STARTED" and app.droplet_guid else 0
            with self._lock:
                by_index = self._instances.setdefault(proc.guid, {})
                extra = [i for idx, i in by_index.items() if idx >= want]
                for inst in extra:
                    del by_index[inst.index]
                missing = [idx for idx in range(want) if idx not in by_index]
                for idx in missing:
                    by_index[idx] = Instance(app_guid, proc.guid, proc.type, idx)
                new = [by_index[idx] for idx in missing]
            for inst in extra:
                threading.Thread(target=self._destroy, args=(inst, "scale"), daemon=True).start()
            for inst in new:
                threading.Thread(target=self._run_instance, args=(inst,), daemon=True).start()

    # -------------------------------------------------------------------------- instances

    def _emit(self, inst: Instance, source: str, stream: str, message: str) -> None:
        self.c.logs.emit(inst.app_guid, source, inst.index, stream, message)

    def _current(self, inst: Instance) -> bool:
        with self._lock:
            return self._instances.get(inst.process_guid, {}).get(inst.index) is inst

    def _run_instance(self, inst: Instance) -> None:
        """Create the container, start the processes, and wait for the health check."""
        c = self.c
        app = c.store.maybe(App, inst.app_guid)
        proc = c.store.maybe(Process, inst.process_guid)
        droplet = c.current_droplet(app) if app else None
        if not (app and proc and droplet):
            return
        inst.version = proc.version
        command = c.effective_command(proc)
        self._emit(inst, "CELL", "OUT", f"Cell {CELL_ID} creating container for instance {inst.guid}")
        if not command:
            self._crash(inst, f"{source_type(proc.type)}: no start command", None)
            return
        sidecars = c.sidecars(app.guid, proc.type)
        port = self.runtime.allocate_port()
        ctx = envmod.InstanceContext(
            app_guid=app.guid, app_name=app.name, process_guid=proc.guid, process_type=proc.type,
            process_memory_mb=proc.memory_in_mb, process_disk_mb=proc.disk_in_mb,
            process_version=proc.version, instance_guid=inst.guid, instance_index=inst.index,
            cf_api=c.base_url, external_port=port, port=port, uris=[r.name for r in c.routes(app.guid)],
            app_env=app.env,
            sidecars=[envmod.SidecarInfo(s.name, s.memory_in_mb) for s in sidecars],
            home_root=self.runtime.home_root(inst.guid),
        )
        try:
            processes = [ProcessDef(proc.type, command, envmod.process_environment(ctx))]
            inst.names = {proc.type: None}
            for s in sidecars:
                name = s.name if s.name not in inst.names else f"sidecar-{s.name}"
                processes.append(ProcessDef(name, s.command, envmod.process_environment(
                    ctx, sidecar=envmod.SidecarInfo(s.name, s.memory_in_mb))))
                inst.names[name] = s.name
            inst.env = processes[0].env
        except ValueError as e:  # sidecars leave the app no memory
            self._crash(inst, str(e), None)
            return
        spec = ContainerSpec(id=inst.guid, droplet=c.droplet_path(droplet), processes=processes, routed_port=port)
        try:
            container = self.runtime.create(spec, lambda n, s, line: self._on_output(inst, n, s, line),
                                            lambda n, status: self._on_exit(inst, n, status))
        except (ContainerError, OSError, ValueError) as e:
            self._emit(inst, "CELL", "ERR", f"Cell {CELL_ID} failed to create container for instance {inst.guid}: {e}")
            self._crash(inst, f"failed to create container: {e}", None)
            return
        inst.container = container
        if not self._current(inst):
            container.destroy(graceful=0)
            return
        self._emit(inst, "CELL", "OUT", f"Cell {CELL_ID} successfully created container for instance {inst.guid}")
        try:
            container.start()
        except ContainerError as e:
            self._crash(inst, str(e), None)
            return
        self._emit(inst, "CELL", "OUT", "Starting health monitoring of container")
        self._health_check(inst, proc, container)

    def _health_check(self, inst: Instance, proc: Process, container: Container) -> None:
        kind = proc.health_check_type or "port"
        timeout = proc.health_check_timeout or 60
        invocation = proc.health_check_invocation_timeout or 1
        endpoint = proc.health_check_endpoint or "/"

        def attempt() -> str | None:
            """"healthy", "gone" (stopped, crashed or replaced meanwhile: nothing more to do), or None."""
            if inst.stopping or inst.state == "CRASHED" or not self._current(inst):
                return "gone"
            if kind == "process":
                ok = bool(container.running())
            elif kind == "http":
                ok = container.http_ok(container.port, endpoint, timeout=invocation)
            else:
                ok = container.port_open(container.port, timeout=invocation)
            return "healthy" if ok else None

        try:
            outcome = poll_until(attempt, timeout=timeout, interval=0.02, backoff=1.5, max_interval=0.2)
        except PollTimeout:
            outcome = None
        if outcome == "gone":
            return
        if outcome == "healthy":
            with self._lock:
                if inst.stopping or inst.state == "CRASHED":
                    return
                inst.state, inst.since = "RUNNING", time.time()
                self._gen += 1
            self._emit(inst, "CELL", "OUT", "Container became healthy")
            return
        what = {"http": f"Failed to make HTTP request to '{endpoint}' on port {8080}",
                "process": "Process exited", "port": f"Failed to make TCP connection to port {8080}"}[kind]
        self._emit(inst, "CELL", "ERR", f"Timed out after {_duration(timeout)}: health check never passed.")
        self._crash(inst, f"Instance never healthy after {_duration(timeout)}: {what}: connection refused", None)

    def _on_output(self, inst: Instance, name: str, stream: str, line: str) -> None:
        self._emit(inst, source_type(inst.process_type, inst.names.get(name)), stream, line)

    def _on_exit(self, inst: Instance, name: str, status: int) -> None:
        source = source_type(inst.process_type, inst.names.get(name))
        self._emit(inst, source, "OUT", f"Exit status {status}")
        if inst.stopping or self._closing:
            return
        reason = "Codependent step exited" if status == 0 else f"{source}: Exited with status {status}"
        # any exit ends the instance: the others are stopped (SIGTERM, then SIGKILL)
        threading.Thread(target=self._crash, args=(inst, reason, status), daemon=True).start()

    def _crash(self, inst: Instance, reason: str, status: int | None) -> None:
        with self._lock:
            if inst.stopping or inst.state == "CRASHED" or not self._current(inst):
                return
            ran_for = time.time() - inst.since if inst.state == "RUNNING" else 0
            inst.state, inst.stopping, inst.crashed_reason = "CRASHED", True, reason
            self._gen += 1
            # the count carries over restarts (a fresh Instance starts with it), and resets after long runs
            inst.crash_count = 1 if ran_for > RESET_CRASH_COUNT_AFTER else inst.crash_count + 1
            inst.since = time.time()
        if inst.container is not None:
            self._teardown(inst)
        self._report_crash(inst, reason)
        delay = restart_delay(inst.crash_count)
        if delay is None or self._closing:
            return
        timer = threading.Timer(delay * self.time_scale, self._restart, args=(inst,))
        timer.daemon = True
        inst.restart_timer = timer
        timer.start()

    def _report_crash(self, inst: Instance, reason: str) -> None:
        """Cloud Controller's side of a crash: two `[API]` lines and two audit events.

        Field for field as cloud_controller_ng records them: `audit.app.process.crash` (actor: the
        process) carries the whole crash payload, `crash_count` included; `app.crash` (actor: the
        app) keeps only `instance, index, cell_id, exit_status, exit_description, reason` of it.
        Diego's payload has no `exit_status`, so neither event has one.
        """
        c = self.c
        app = c.store.maybe(App, inst.app_guid)
        if not app:
            return
        payload = CrashPayload(instance=inst.guid, index=inst.index, cell_id=CELL_ID, reason="CRASHED",
                               exit_description=reason, crash_count=inst.crash_count,
                               crash_timestamp=time.time_ns(), version=inst.version).as_json()
        c.logs.emit(app.guid, "API", 0, "OUT", f'Process has crashed with type: "{inst.process_type}"')
        c.logs.emit(app.guid, "API", 0, "OUT", f"App instance exited with guid {app.guid} payload: {ruby_hash(payload)}")
        c.audit("audit.app.process.crash", app, truncate_description(payload),
                actor=Actor(guid=inst.process_guid, type="process", name=inst.process_type))
        c.audit("app.crash", app, app_crash_metadata(payload), actor=Actor(guid=app.guid, type="app", name=app.name))

    def _restart(self, inst: Instance) -> None:
        with self._lock:
            if not self._current(inst) or self._closing:
                return
            fresh = Instance(inst.app_guid, inst.process_guid, inst.process_type, inst.index,
                             crash_count=inst.crash_count)
            self._instances[inst.process_guid][inst.index] = fresh
        self._run_instance(fresh)

    def _teardown(self, inst: Instance) -> None:
        container = inst.container
        if container is None:
            return
        self._emit(inst, "CELL", "OUT", f"Cell {CELL_ID} stopping instance {inst.guid}")
        self._emit(inst, "CELL", "OUT", f"Cell {CELL_ID} destroying container for instance {inst.guid}")
        try:
            container.destroy(graceful=self.graceful)
        except Exception as e:  # a broken container must not stop the cell
            self._emit(inst, "CELL", "ERR", f"Cell {CELL_ID} failed to destroy container for instance {inst.guid}: {e}")
        self._emit(inst, "CELL", "OUT", f"Cell {CELL_ID} successfully destroyed container for instance {inst.guid}")

    def _destroy(self, inst: Instance, why: str) -> None:
        inst.stopping = True
        self._gen += 1
        if inst.restart_timer:
            inst.restart_timer.cancel()
        self._teardown(inst)

    # ------------------------------------------------------------------------------ views

    def instances(self, process_guid: str) -> list[Instance]:
        with self._lock:
            return sorted(self._instances.get(process_guid, {}).values(), key=lambda i: i.index)

    def stats(self, proc: Process) -> list[InstanceStats]:
        app = self.c.store.maybe(App, proc.app_guid)
        out = []
        found = {i.index: i for i in self.instances(proc.guid)}
        for idx in range(max(proc.instances, max(found, default=-1) + 1)):
            inst = found.get(idx)
            state = inst.state if inst else "DOWN"
            if app and app.state != "STARTED":
                state = "DOWN"
            cpu: float = 0
            mem = disk = 0
            if inst and inst.container is not None and inst.state in ("RUNNING", "STARTING"):
                try:
                    usage = inst.container.stats()
                    cpu, mem, disk = usage.get("cpu", 0), usage.get("mem", 0), usage.get("disk", 0)
                except Exception:  # a container going away has no usage; the stats still answer
                    pass
            out.append(InstanceStats(
                type=proc.type, index=idx, state=state, instance_guid=inst.guid if inst else None,
                cpu=cpu, mem=mem, disk=disk, uptime=int(time.time() - inst.since) if inst else 0,
                mem_quota=proc.memory_in_mb * 1024 * 1024, disk_quota=proc.disk_in_mb * 1024 * 1024,
                details=inst.crashed_reason if inst and inst.state == "CRASHED" else None,
                crash_count=inst.crash_count if inst else 0,
            ))
        return out

    def routes_changed(self) -> None:
        """The controller added or removed routes: the next lookup reads the route table afresh."""
        self._routes_at = 0.0

    def backends(self, host: str, path: str) -> list[Backend]:
        """The router's lookup: RUNNING web instances of the app mapped to `host` (and path prefix)."""
        now = time.monotonic()
        if now - self._routes_at > 0.5:
            self._routes = build_routes((r.host, r.path or "", r.app_guid) for r in self.c.routes())
            self._routes_at = now
        app_guid = match_route(self._routes, host, path)
        if app_guid is None:
            return []
        cached = self._backend_cache.get(app_guid)
        if cached and cached[0] == self._gen:
            return cached[1]
        gen = self._gen
        found = [Backend(app_guid, i.index, i.container.connect, i.container.upstream(), i.guid)
                 for i in self.running_backends(app_guid) if i.container is not None]
        self._backend_cache[app_guid] = (gen, found)
        return found

    def running_backends(self, app_guid: str) -> list[Instance]:
        """RUNNING web instances of an app, for the router."""
        web_guid = self._web_guid.get(app_guid)
        if web_guid is None:
            web = self.c.process(app_guid, "web")
            if not web:
                return []
            web_guid = self._web_guid[app_guid] = web.guid
        return [i for i in self.instances(web_guid)
                if i.state == "RUNNING" and not i.stopping and i.container is not None]

    def instance(self, app_guid: str, index: int = 0) -> Instance | None:
        web = self.c.process(app_guid, "web")
        if not web:
            return None
        with self._lock:
            return self._instances.get(web.guid, {}).get(index)


# what cloud_controller_ng's AppEventRepository#create_app_crash_event keeps of the crash payload
APP_CRASH_FIELDS = ("instance", "index", "cell_id", "exit_status", "exit_description", "reason")
TRUNCATE_THRESHOLD = 10000  # cloud_controller_ng's TruncationMixin
TRUNCATED_SUFFIX = " (truncated)"


def truncate(message: str) -> str:
    """ActiveSupport's `String#truncate(10000, omission: ' (truncated)')`."""
    if len(message) <= TRUNCATE_THRESHOLD:
        return message
    return message[: TRUNCATE_THRESHOLD - len(TRUNCATED_SUFFIX)] + TRUNCATED_SUFFIX


def truncate_description(payload: JsonObject) -> JsonObject:
    return {**payload, "exit_description": truncate(str(payload.get("exit_description") or ""))}


def app_crash_metadata(payload: JsonObject) -> JsonObject:
    """`app.crash` metadata: the payload sliced to APP_CRASH_FIELDS (in that order, missing ones
    skipped, as Ruby's Hash#slice does), its exit_description truncated."""
    return truncate_description({k: payload[k] for k in APP_CRASH_FIELDS if k in payload})


def _duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s}s" if m else f"{s}s"


def ruby_hash(d: JsonObject) -> str:
    """A JSON object as Ruby's Hash#inspect renders it (what Cloud Controller's log line shows)."""
    def val(v: object) -> str:
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if v is None:
            return "nil"
        if isinstance(v, bool):
            return "true" if v else "false"
        return str(v)
    return "{" + ", ".join(f'"{k}"=>{val(v)}' for k, v in d.items()) + "}"
