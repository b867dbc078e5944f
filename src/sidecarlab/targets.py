"""Targets: the platform a notebook drives, through cf verbs and the /v3 JSON only.

A `Target` runs cf verbs and shows their output as the cf CLI prints it. `LocalTarget` drives the
embedded Cloud Foundry (the `localcf` command, started on first use); `CFTarget` drives the real `cf`
binary against a foundation. Everything else (curl, ssh, logs, events, cleanup) is written once on
top of those verbs, so notebooks and checks never branch on the target.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import requests

__all__ = [
    "CFTarget",
    "CommandError",
    "CommandResult",
    "Event",
    "HttpResponse",
    "Instance",
    "Isolation",
    "LocalTarget",
    "LogLine",
    "Target",
    "TargetError",
    "parse_log_line",
    "target_from_params",
]

# How long one cf verb may run before it is stopped: a push stages and starts an app, so it is
# generous; the point is that a notebook never hangs forever on a stuck command.
DEFAULT_COMMAND_TIMEOUT = 600.0
HTTP_TIMEOUT = 10.0
TUNNEL_DEADLINE = 30.0

# After these verbs an app name may stand for another app (or none): forget remembered guids.
_VERBS_CHANGING_GUIDS = {"delete", "rename", "create-app", "push", "v3-create-app", "v3-push"}

# `   2019-05-18T02:53:35.00+0000 [APP/PROC/WEB/SIDECAR/CONFIG-SERVER/0] OUT listening 0.0.0.0:8082...`
_LOG_LINE = re.compile(r"^\s*(\S+) \[([^\]]+)\] (OUT|ERR) ?(.*)$")


class TargetError(RuntimeError):
    """The platform could not be reached or set up; the message says what to do."""


class CommandError(TargetError):
    """A cf verb exited non-zero; carries the command as the learner sees it and its output."""

    def __init__(self, shown: str, returncode: int, output: str, hint: str = "") -> None:
        tail = "\n".join(output.rstrip().splitlines()[-25:])
        message = f"`{shown}` failed with exit status {returncode}."
        if tail:
            message += f"\n{tail}"
        if hint:
            message += f"\n{hint}"
        super().__init__(message)
        self.shown = shown
        self.returncode = returncode
        self.output = output


@dataclass
class CommandResult:
    """One cf verb that ran: the command as shown (`cf ...`), its exit status and merged output."""

    shown: str
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        """True when the command exited with status 0."""
        return self.returncode == 0


@dataclass
class HttpResponse:
    """An HTTP answer from an app, through the platform's router."""

    url: str
    status: int
    headers: dict[str, str]
    body: str

    def json(self) -> Any:
        """The body parsed as JSON (raises ValueError when it is not JSON)."""
        return json.loads(self.body)


@dataclass(frozen=True)
class LogLine:
    """One line of `cf logs`: timestamp, source (`APP/PROC/WEB`), instance, OUT|ERR, message."""

    timestamp: str
    source: str
    instance: str
    stream: str
    message: str

    @property
    def tag(self) -> str:
        """The bracketed tag as cf prints it, e.g. `[APP/PROC/WEB/0]`."""
        return f"[{self.source}/{self.instance}]" if self.instance else f"[{self.source}]"


@dataclass
class Event:
    """An audit event of an app (`/v3/audit_events`), e.g. type `app.crash` with its data."""

    guid: str
    type: str
    created_at: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Instance:
    """One instance of a process, as `/v3/processes/GUID/stats` reports it."""

    index: int
    state: str
    uptime: Optional[float] = None
    details: Optional[str] = None


@dataclass(frozen=True)
class Isolation:
    """Whether the target runs each instance in a real container, and if not, why."""

    isolated: bool
    reason: str


def parse_log_line(line: str) -> Optional[LogLine]:
    """A `cf logs` line as a LogLine, or None for lines that are not log lines (headers, blanks)."""
    m = _LOG_LINE.match(line.rstrip("\n"))
    if not m:
        return None
    timestamp, tag, stream, message = m.groups()
    source, sep, instance = tag.rpartition("/")
    if not sep:
        source, instance = tag, ""
    return LogLine(timestamp, source, instance, stream, message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Target(ABC):
    """A platform the tutorial drives through cf verbs; subclasses say how a verb is run."""

    #: "local" or "cf": the value of the notebooks' `target` parameter.
    kind: str = ""

    def __init__(self, *, echo: bool = True, command_timeout: float = DEFAULT_COMMAND_TIMEOUT) -> None:
        self.echo = echo
        self.command_timeout = command_timeout
        self._prepared = False
        self._guids: dict[str, str] = {}

    # ------------------------------------------------------------------ what subclasses provide

    @abstractmethod
    def _argv(self, args: Sequence[str]) -> list[str]:
        """The real argv that runs the cf verb `args` on this target."""

    def _env(self) -> dict[str, str]:
        """The environment the cf command runs in."""
        return dict(os.environ)

    def _prepare(self) -> None:  # noqa: B027 (optional hook: most targets need no setup)
        """Make the platform usable (start it, log in); called once before the first verb."""

    @abstractmethod
    def app_url(self, app: str) -> str:
        """The URL a browser would open for `app`."""

    @abstractmethod
    def http_get(self, app: str, path: str = "/", timeout: float = HTTP_TIMEOUT) -> HttpResponse:
        """GET `path` of `app` through the platform's router (any status; raises TargetError when unreachable)."""

    @abstractmethod
    def isolation(self) -> Isolation:
        """Whether instances run in isolated containers (checks that need it skip otherwise)."""

    @abstractmethod
    def outside_host(self, app: str) -> str:
        """A host name from which a port of `app`'s container would be reached from outside."""

    # ------------------------------------------------------------------------------- cf verbs

    def prepare(self) -> "Target":
        """Start or log in to the platform once; every verb calls this first."""
        if not self._prepared:
            self._prepare()
            self._prepared = True
        return self

    def cf(
        self,
        *args: str,
        check: bool = True,
        echo: Optional[bool] = None,
        quiet: bool = False,
        shown: Optional[str] = None,
        cwd: Optional[Path] = None,
        timeout: Optional[float] = None,
    ) -> CommandResult:
        """Run the cf verb `args`, echoing `$ cf ...` and streaming its output line by line.

        `quiet` keeps the output to the result (for checks that parse it); `check` raises
        CommandError on a non-zero exit; `shown` overrides the echoed command line.
        """
        self.prepare()
        if args and args[0] in _VERBS_CHANGING_GUIDS:
            self._guids.clear()
        shown = shown or "cf " + shlex.join(args)
        if self.echo if echo is None else echo:
            print(f"$ {shown}", flush=True)
        returncode, output = self._run(self._argv(args), quiet=quiet, cwd=cwd,
                                       timeout=timeout or self.command_timeout, shown=shown)
        if check and returncode != 0:
            raise CommandError(shown, returncode, output)
        return CommandResult(shown, returncode, output)

    def _run(self, argv: list[str], *, quiet: bool, cwd: Optional[Path], timeout: float,
             shown: str) -> tuple[int, str]:
        try:
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self._env(), cwd=cwd, text=True, errors="replace", bufsize=1,
            )
        except FileNotFoundError as exc:
            raise TargetError(f"Cannot run `{shown}`: {exc}. {self._install_hint()}") from None
        timed_out = threading.Event()

        def stop() -> None:
            timed_out.set()
            proc.kill()

        watchdog = threading.Timer(timeout, stop)
        watchdog.daemon = True
        watchdog.start()
        lines = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if not quiet:
                    # sys.stdout is looked up per line: Jupyter swaps it per cell.
                    print(line, end="", file=sys.stdout, flush=True)
            returncode = proc.wait()
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        output = "".join(lines)
        if timed_out.is_set():
            raise CommandError(shown, returncode, output,
                               hint=f"It was stopped after {timeout:.0f}s without finishing.")
        return returncode, output

    def _install_hint(self) -> str:
        return ""

    # ------------------------------------------------------------------------- built on verbs

    def curl(self, path: str, method: str = "GET", body: Any = None) -> Any:
        """`cf curl PATH` parsed as JSON (raises CommandError on an API error)."""
        args = ["curl", path]
        if method != "GET":
            args += ["-X", method]
        if body is not None:
            args += ["-d", json.dumps(body)]
        result = self.cf(*args, echo=False, quiet=True)
        text = result.output.strip()
        if not text:
            return {}
        try:
            return json.loads(text)
        except ValueError:
            raise TargetError(f"`{result.shown}` did not answer JSON:\n{text[:2000]}") from None

    def curl_all(self, path: str) -> list[dict[str, Any]]:
        """Every resource of a paginated `/v3` list, following `pagination.next`."""
        resources: list[dict[str, Any]] = []
        next_path: Optional[str] = path
        while next_path:
            page = self.curl(next_path)
            resources.extend(page.get("resources", []))
            href = ((page.get("pagination") or {}).get("next") or {}).get("href")
            next_path = None
            if href:
                m = re.search(r"/v3/.*$", href)
                next_path = m.group(0) if m else None
        return resources

    def app_guid(self, app: str) -> str:
        """The guid of `app` (`cf app APP --guid`), remembered per name until cleanup."""
        if app not in self._guids:
            result = self.cf("app", app, "--guid", echo=False, quiet=True, check=False)
            guid = result.output.strip().splitlines()[-1].strip() if result.output.strip() else ""
            if result.returncode != 0 or not re.fullmatch(r"[0-9a-fA-F-]{8,}", guid):
                said = " ".join(line.strip() for line in result.output.splitlines()
                                if line.strip() and line.strip() != "FAILED")
                raise TargetError(
                    f"App '{app}' was not found on the {self.kind} target (cf said: {said or 'nothing'}). "
                    "Push it first (run the push cell above)."
                )
            self._guids[app] = guid
        return self._guids[app]

    def app_exists(self, app: str) -> bool:
        """Whether an app of that name exists in the targeted space."""
        found = self.curl(f"/v3/apps?names={app}")
        return bool(found.get("resources"))

    def routes(self, app: str) -> list[str]:
        """The app's routes as `host.domain[/path]` strings."""
        return [r.get("url", "") for r in self.curl_all(f"/v3/apps/{self.app_guid(app)}/routes")]

    def sidecars(self, app: str) -> list[dict[str, Any]]:
        """The app's sidecars (`/v3/apps/GUID/sidecars`)."""
        return self.curl_all(f"/v3/apps/{self.app_guid(app)}/sidecars")

    def instances(self, app: str, process_type: str = "web") -> list[Instance]:
        """The instances of one process type of `app`, with their states."""
        guid = self.app_guid(app)
        process = self.curl(f"/v3/apps/{guid}/processes/{process_type}")
        stats = self.curl(f"/v3/processes/{process['guid']}/stats")
        return [
            Instance(int(s.get("index", 0)), str(s.get("state", "")), s.get("uptime"), s.get("details"))
            for s in stats.get("resources", [])
        ]

    def ssh(self, app: str, command: str, index: int = 0, check: bool = True,
            echo: bool = False, quiet: bool = True) -> CommandResult:
        """`cf ssh APP -i INDEX -c COMMAND`: run a shell command inside an instance's container."""
        args = ["ssh", app]
        if index:
            args += ["-i", str(index)]
        args += ["-c", command]
        return self.cf(*args, check=check, echo=echo, quiet=quiet)

    @contextlib.contextmanager
    def tunnel(self, app: str, port: int, index: int = 0,
               deadline: float = TUNNEL_DEADLINE) -> Iterator[int]:
        """`cf ssh -N -L LOCAL:localhost:PORT`: yields LOCAL, a port on this machine that reaches
        `port` inside the instance's container, and closes the tunnel afterwards."""
        self.prepare()
        local = _free_port()
        args = ["ssh", app, "-N", "-L", f"{local}:localhost:{port}"]
        if index:
            args[2:2] = ["-i", str(index)]
        shown = "cf " + shlex.join(args)
        with tempfile.TemporaryFile("w+") as log:
            proc = subprocess.Popen(self._argv(args), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=self._env())
            try:
                end = time.monotonic() + deadline
                while True:
                    if proc.poll() is not None:
                        log.seek(0)
                        raise CommandError(shown, proc.returncode, log.read(),
                                           hint="The tunnel ended before it accepted a connection.")
                    try:
                        with socket.create_connection(("127.0.0.1", local), timeout=1):
                            break
                    except OSError:
                        if time.monotonic() > end:
                            log.seek(0)
                            raise CommandError(shown, -1, log.read(),
                                               hint=f"The tunnel did not listen on port {local} "
                                                    f"within {deadline:.0f}s.") from None
                        time.sleep(0.1)
                yield local
            finally:
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()

    def recent_logs(self, app: str) -> list[LogLine]:
        """`cf logs APP --recent`, parsed into LogLines."""
        result = self.cf("logs", app, "--recent", echo=False, quiet=True)
        return [line for line in map(parse_log_line, result.output.splitlines()) if line]

    def events(self, app: str, types: Sequence[str] = ()) -> list[Event]:
        """The app's audit events (optionally only `types`), oldest first."""
        path = f"/v3/audit_events?target_guids={self.app_guid(app)}&per_page=5000"
        if types:
            path += "&types=" + ",".join(types)
        found = [
            Event(str(r.get("guid", "")), str(r.get("type", "")), str(r.get("created_at", "")),
                  dict(r.get("data") or {}))
            for r in self.curl_all(path)
        ]
        if types:
            found = [e for e in found if e.type in types]
        return sorted(found, key=lambda e: e.created_at)

    def cleanup(self, app: str) -> None:
        """Delete `app` and its routes (`cf delete APP -f -r`); nothing happens when it is gone."""
        self.cf("delete", app, "-f", "-r", echo=self.echo, quiet=not self.echo)
        self._guids.pop(app, None)

    def forget(self, app: str) -> None:
        """Drop what is remembered about `app` (its guid), e.g. after it was deleted elsewhere."""
        self._guids.pop(app, None)

    def goarch(self) -> str:
        """The CPU (Go's GOARCH) the platform's cells run, for cross-compiling the sidecar."""
        from .sidecar import host_goarch

        return host_goarch()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

    def describe(self) -> str:
        """One line saying which platform this is."""
        return self.kind


class LocalTarget(Target):
    """The embedded Cloud Foundry: runs the `localcf` command, starting the daemon on first use."""

    kind = "local"

    def __init__(self, home: Optional[Path] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.home = Path(home).resolve() if home else None
        self.router_port: Optional[int] = None
        self.runtime: Optional[str] = None
        self.runtime_notice: Optional[str] = None

    def _argv(self, args: Sequence[str]) -> list[str]:
        # The same interpreter as the kit, so the command always matches the installed localcf.
        return [sys.executable, "-m", "localcf.cli", *args]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.home:
            env["LOCALCF_HOME"] = str(self.home)
        return env

    def _install_hint(self) -> str:
        return "Install the kit with: pip install -e '.[kit]' (it includes localcf)."

    def _prepare(self) -> None:
        self._quiet("start")
        self.refresh()

    def _quiet(self, *args: str) -> str:
        shown = "localcf " + shlex.join(args)
        returncode, output = self._run(self._argv(args), quiet=True, cwd=None, timeout=120, shown=shown)
        if returncode != 0:
            raise CommandError(shown, returncode, output,
                               hint="localcf could not be started; its log is daemon.log in its state dir "
                                    "($LOCALCF_HOME).")
        return output

    def refresh(self) -> None:
        """Read the router port and runtime mode again from the platform's info (JSON, a stable interface)."""
        info = json.loads(self._quiet("curl", "/localcf/v1/info"))
        self.router_port = info.get("router_port")
        self.runtime = info.get("runtime")
        self.runtime_notice = info.get("runtime_notice")

    def app_url(self, app: str) -> str:
        self.prepare()
        routes = self.routes(app)
        if not routes:
            raise TargetError(f"App '{app}' has no route: push it without --no-route.")
        if self.router_port is None:
            self.refresh()
        return f"http://{routes[0]}:{self.router_port}" if self.router_port else f"http://{routes[0]}"

    def http_get(self, app: str, path: str = "/", timeout: float = HTTP_TIMEOUT) -> HttpResponse:
        self.prepare()
        routes = self.routes(app)
        if not routes:
            raise TargetError(f"App '{app}' has no route: push it without --no-route.")
        if self.router_port is None:
            self.refresh()
        if self.router_port is None:
            raise TargetError("localcf runs no router (its container runtime is missing): "
                              "see `localcf status`.")
        host, _, route_path = routes[0].partition("/")
        full_path = ("/" + route_path.rstrip("/") if route_path else "") + path
        # *.apps.localhost does not resolve everywhere; the router only needs the Host header.
        url = f"http://127.0.0.1:{self.router_port}{full_path}"
        try:
            r = requests.get(url, headers={"Host": host}, timeout=timeout)
        except requests.RequestException as exc:
            raise TargetError(f"GET http://{host}:{self.router_port}{full_path} got no answer: {exc}") from None
        return HttpResponse(f"http://{host}:{self.router_port}{full_path}", r.status_code,
                            dict(r.headers), r.text)

    def isolation(self) -> Isolation:
        self.prepare()
        if self.runtime == "namespaces":
            return Isolation(True, "localcf runs each instance in its own Linux namespaces (a container)")
        if self.runtime == "process":
            why = f"; localcf says: {self.runtime_notice}" if self.runtime_notice else ""
            return Isolation(False, "localcf runs apps as plain processes (runtime mode `process`), so there "
                             "is no container boundary to prove" + why)
        return Isolation(False, "localcf reports no container runtime (see `localcf status`)")

    def outside_host(self, app: str) -> str:
        # The host is the outside of every localcf container.
        return "127.0.0.1"

    def stop(self) -> None:
        """Stop this target's localcf daemon (apps come back on the next start)."""
        self._run(self._argv(["stop"]), quiet=True, cwd=None, timeout=60, shown="localcf stop")
        self._prepared = False

    def describe(self) -> str:
        home = self.home or os.environ.get("LOCALCF_HOME")
        where = f"LOCALCF_HOME={home}" if home else "the default state dir"
        return f"local (localcf, {where})"


class CFTarget(Target):
    """A real Cloud Foundry through the `cf` binary: api, org and space from parameters,
    credentials ONLY from the environment variables CF_USERNAME and CF_PASSWORD.

    Not tested against a real foundation (none is reachable where this kit is developed); its
    tests drive a recorded `cf` stand-in.
    """

    kind = "cf"

    def __init__(self, api: str, org: str, space: str, *, skip_ssl_validation: bool = False,
                 cf_binary: str = "cf", cf_home: Optional[Path] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        missing = [name for name, value in (("cf_api", api), ("cf_org", org), ("cf_space", space)) if not value]
        if missing:
            raise TargetError(
                f"target='cf' needs the parameter(s) {', '.join(missing)}: set them in the notebook's "
                "parameters cell or in notebooks/params/cf.yml (credentials go in the environment "
                "variables CF_USERNAME and CF_PASSWORD, never in parameters)."
            )
        self.api, self.org, self.space = api, org, space
        self.skip_ssl_validation = skip_ssl_validation
        self.cf_binary = cf_binary
        self.cf_home = Path(cf_home) if cf_home else None

    def _argv(self, args: Sequence[str]) -> list[str]:
        return [self._binary(), *args]

    def _binary(self) -> str:
        found = shutil.which(self.cf_binary)
        if not found:
            raise TargetError(
                f"The cf CLI ({self.cf_binary!r}) is not on PATH. Install cf CLI v8 "
                "(https://github.com/cloudfoundry/cli#downloads), or use target='local'."
            )
        return found

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.cf_home:
            env["CF_HOME"] = str(self.cf_home)
        return env

    def _install_hint(self) -> str:
        return "Install the cf CLI v8, or use target='local'."

    def _prepare(self) -> None:
        missing = [v for v in ("CF_USERNAME", "CF_PASSWORD") if not os.environ.get(v)]
        if missing:
            raise TargetError(
                f"target='cf' needs credentials in the environment variable(s) {', '.join(missing)} "
                "(never in notebook parameters). Export them before starting Jupyter or "
                "`sidecarlab run`, e.g. `export CF_USERNAME=... CF_PASSWORD=...`."
            )
        self._prepared = True  # the login verbs below must not recurse into prepare()
        try:
            api = ["api", self.api] + (["--skip-ssl-validation"] if self.skip_ssl_validation else [])
            self.cf(*api, echo=False, quiet=True)
            # `cf auth` with no arguments reads CF_USERNAME and CF_PASSWORD itself, so the
            # password never appears in an argv or an echoed line.
            self.cf("auth", echo=False, quiet=True)
            self.cf("target", "-o", self.org, "-s", self.space, echo=False, quiet=True)
        except BaseException:
            self._prepared = False
            raise

    def app_url(self, app: str) -> str:
        routes = self.routes(app)
        if not routes:
            raise TargetError(f"App '{app}' has no route: push it without --no-route.")
        return f"https://{routes[0]}"

    def http_get(self, app: str, path: str = "/", timeout: float = HTTP_TIMEOUT) -> HttpResponse:
        url = self.app_url(app).rstrip("/") + path
        try:
            r = requests.get(url, timeout=timeout, verify=not self.skip_ssl_validation)
        except requests.RequestException as exc:
            raise TargetError(f"GET {url} got no answer: {exc}") from None
        return HttpResponse(url, r.status_code, dict(r.headers), r.text)

    def isolation(self) -> Isolation:
        return Isolation(True, "Cloud Foundry runs each instance in its own Diego container")

    def goarch(self) -> str:
        # cflinuxfs stacks run on x86-64 cells.
        return "amd64"

    def outside_host(self, app: str) -> str:
        routes = self.routes(app)
        return routes[0].partition("/")[0] if routes else self.api

    def describe(self) -> str:
        return f"cf ({self.api}, org {self.org}, space {self.space})"


def target_from_params(
    target: str = "local",
    cf_api: Optional[str] = None,
    cf_org: Optional[str] = None,
    cf_space: Optional[str] = None,
    cf_skip_ssl_validation: bool = False,
    localcf_home: Optional[str] = None,
    **_other_params: Any,
) -> Target:
    """The Target a notebook's parameters name, made the target of its `%cf` magic.

    Extra parameters (app_name, config_server_port, ...) are accepted and ignored, so a notebook
    can pass all of its parameters.
    """
    kind = (target or "").strip().lower()
    made: Target
    if kind == "local":
        made = LocalTarget(home=Path(localcf_home) if localcf_home else None)
    elif kind == "cf":
        made = CFTarget(cf_api or "", cf_org or "", cf_space or "", skip_ssl_validation=cf_skip_ssl_validation)
    else:
        raise TargetError(
            f"Unknown target {target!r}: the `target` parameter must be 'local' (the embedded "
            "Cloud Foundry) or 'cf' (a real foundation). Fix it in the notebook's parameters cell "
            "or pass -p target local to `sidecarlab run`."
        )
    try:
        from . import magics
    except ImportError:  # IPython is missing: no notebook, so no magic to point at the target
        return made
    magics.use_target(made)
    return made

