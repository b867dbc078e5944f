"""The Target: a platform the tutorial drives through cf verbs and the /v3 JSON only.

A `Target` runs cf verbs and shows their output as the cf CLI prints it. Everything else (curl,
ssh, tunnels, logs, events, droplet download, cleanup) is written once on top of those verbs, so
notebooks and checks never branch on the target. What differs between platforms (how a verb runs,
how an app is reached, how a buildpack is made available) is a method each subclass provides.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import learner
from ..net import free_port
from ..polling import poll_until
from ..sidecar import host_goarch
from .errors import ApiError, CommandError, SshNotAllowed, TargetError, api_errors, ssh_refusal

__all__ = [
    "CommandResult",
    "Event",
    "HttpResponse",
    "Instance",
    "Isolation",
    "LogLine",
    "Target",
    "parse_log_line",
]

# How long one cf verb may run before it is stopped: a push stages and starts an app, so it is
# generous; the point is that a notebook never hangs forever on a stuck command.
DEFAULT_COMMAND_TIMEOUT = 600.0
HTTP_TIMEOUT = 10.0
# A real foundation's ssh proxy can take half a minute to open a port forward (login, one-time
# code, container lookup), so the tunnel waits longer than that.
TUNNEL_DEADLINE = 35.0

# After these verbs an app name may stand for another app (or none): forget remembered guids.
_VERBS_CHANGING_GUIDS = {"delete", "rename", "create-app", "push", "v3-create-app", "v3-push"}

# `   2019-05-18T02:53:35.00+0000 [APP/PROC/WEB/SIDECAR/CONFIG-SERVER/0] OUT listening 0.0.0.0:8082...`
_LOG_LINE = re.compile(r"^\s*(\S+) \[([^\]]+)\] (OUT|ERR) ?(.*)$")

# Colour codes, should a cf CLI print them despite CF_COLOR=false.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# `cf download-droplet` (v7+, and localcf) says where it wrote the droplet.
_DROPLET_WRITTEN = re.compile(r"Droplet downloaded successfully at (.+?)\s*$", re.MULTILINE)

# The learner's settings that would change what the kit's cf calls print (request traces on
# stdout, colour codes), and the values the kit runs them with.
_QUIET_CLI = {"CF_TRACE": "false", "CF_COLOR": "false", "NO_COLOR": "1"}
_FORCED_COLOUR = ("CLICOLOR_FORCE", "FORCE_COLOR")


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
    uptime: float | None = None
    details: str | None = None


@dataclass(frozen=True)
class Isolation:
    """Whether the target runs each instance in a real container, and if not, why."""

    isolated: bool
    reason: str


def parse_log_line(line: str) -> LogLine | None:
    """A `cf logs` line as a LogLine, or None for lines that are not log lines (headers, blanks)."""
    m = _LOG_LINE.match(line.rstrip("\n"))
    if not m:
        return None
    timestamp, tag, stream, message = m.groups()
    source, sep, instance = tag.rpartition("/")
    if not sep:
        source, instance = tag, ""
    return LogLine(timestamp, source, instance, stream, message)


class Target(ABC):
    """A platform the tutorial drives through cf verbs; subclasses say how a verb is run."""

    #: "local" or "cf": the value of the notebooks' `target` parameter.
    kind: str = ""

    def __init__(self, *, echo: bool = True, command_timeout: float = DEFAULT_COMMAND_TIMEOUT) -> None:
        self.echo = echo
        self.command_timeout = command_timeout
        self._prepared = False
        self._guids: dict[str, str] = {}
        #: The notebooks' `learner` parameter (checked; empty for a single user): with one, staging
        #: verbs wait while another run has air-gapped the foundation (`sidecarlab.learner`).
        self.learner = ""
        #: This run's identity on the platform (the air-gap lease and staging markers name it).
        self.run_id = uuid.uuid4().hex[:12]

    # ------------------------------------------------------------------ what subclasses provide

    @abstractmethod
    def _argv(self, args: Sequence[str]) -> list[str]:
        """The real argv that runs the cf verb `args` on this target."""

    def _env(self) -> dict[str, str]:
        """The environment the cf command runs in: the learner's, without request traces or
        forced colour (either would break what the kit parses)."""
        env = {k: v for k, v in os.environ.items() if k not in _FORCED_COLOUR}
        env.update(_QUIET_CLI)
        return env

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

    @abstractmethod
    def install_buildpack(self, directory: Path, name: str, manifest: Path) -> str:
        """Make the buildpack in `directory` usable by the app of `manifest`; returns how the
        manifest's `buildpacks:` names it."""

    @abstractmethod
    def remove_buildpack(self, name: str) -> None:
        """Undo `install_buildpack` (nothing is left on the platform)."""

    def admin_scopes(self) -> tuple[bool | None, list[str]]:
        """Whether the learner is an admin of the platform (`cloud_controller.admin`), and the scopes
        that say so; None where the question does not arise (the embedded platform's one user is its
        admin)."""
        return None, []

    def space_name(self) -> str:
        """The targeted space, as `cf allow-space-ssh` wants it."""
        return "SPACE"

    def platform_key(self) -> str:
        """Which platform this is, for records kept between runs (the buildpacks a notebook created)."""
        return self.describe()

    # ------------------------------------------------------------------------------- cf verbs

    def prepare(self) -> Target:
        """Start or log in to the platform once; every verb calls this first."""
        if not self._prepared:
            self._prepare()
            self._prepared = True
        return self

    def cf(
        self,
        *args: str,
        check: bool = True,
        echo: bool | None = None,
        quiet: bool = False,
        shown: str | None = None,
        cwd: Path | None = None,
        timeout: float | None = None,
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
        verb = args[0] if args else ""
        name = args[1] if len(args) > 1 and not args[1].startswith("-") else ""
        if verb == "delete-buildpack" and name:
            refused = learner.before_delete_buildpack(self, name)
            if refused:
                if not quiet:
                    print(refused, flush=True)
                return CommandResult(shown, 0, refused + "\n")
        before = learner.buildpack_guids(self, name) if verb == "create-buildpack" and name else []
        with (learner.staging_egress(self, verb) if self.learner and verb in learner.STAGING_VERBS
              else contextlib.nullcontext()):
            returncode, output = self._run(self._argv(args), quiet=quiet, cwd=cwd,
                                           timeout=timeout or self.command_timeout, shown=shown)
        if returncode == 0 and verb == "create-buildpack" and name:
            learner.record_created_buildpack(self, name, before)
        elif returncode == 0 and verb == "delete-buildpack" and name:
            learner.forget_buildpack(self, name)
        if args and args[0] == "ssh" and returncode != 0:
            # Never an expected failure, not even under --no-check: nothing after it can work.
            refused = ssh_refusal(output)
            if refused:
                raise SshNotAllowed(shown, refused, args[1] if len(args) > 1 else "APP", self.space_name())
        if check and returncode != 0:
            raise CommandError(shown, returncode, output)
        return CommandResult(shown, returncode, output)

    def _run(self, argv: list[str], *, quiet: bool, cwd: Path | None, timeout: float,
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
        output = _ANSI.sub("", "".join(lines))
        if timed_out.is_set():
            raise CommandError(shown, returncode, output,
                               hint=f"It was stopped after {timeout:.0f}s without finishing.")
        return returncode, output

    def _install_hint(self) -> str:
        return ""

    # ------------------------------------------------------------------------- built on verbs

    def curl(self, path: str, method: str = "GET", body: Any = None) -> Any:
        """`cf curl PATH` parsed as JSON. Cloud Controller's error document raises ApiError (with
        its title and detail): `cf curl` itself exits 0 on an HTTP error."""
        args = ["curl", path]
        if method != "GET":
            args += ["-X", method]
        if body is not None:
            args += ["-d", json.dumps(body)]
        result = self.cf(*args, echo=False, quiet=True, check=False)
        text = result.output.strip()
        try:
            document = json.loads(text) if text else {}
        except ValueError:
            document = None
        errors = api_errors(document)
        if errors:
            raise ApiError(result.shown, errors)
        if result.returncode != 0:
            raise CommandError(result.shown, result.returncode, result.output)
        if document is None:
            raise TargetError(f"`{result.shown}` did not answer JSON:\n{text[:2000]}")
        return document

    def curl_all(self, path: str) -> list[dict[str, Any]]:
        """Every resource of a paginated `/v3` list, following `pagination.next`."""
        resources: list[dict[str, Any]] = []
        next_path: str | None = path
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
        local = free_port()
        args = ["ssh", app, "-N", "-L", f"{local}:localhost:{port}"]
        if index:
            args[2:2] = ["-i", str(index)]
        shown = "cf " + shlex.join(args)
        with tempfile.TemporaryFile("w+") as log:
            proc = subprocess.Popen(self._argv(args), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=self._env())
            def listening() -> bool:
                if proc.poll() is not None:
                    log.seek(0)
                    said = _ANSI.sub("", log.read())
                    refused = ssh_refusal(said)
                    if refused:
                        raise SshNotAllowed(shown, refused, app, self.space_name())
                    raise CommandError(shown, proc.returncode, said,
                                       hint="The tunnel ended before it accepted a connection.")
                try:
                    with socket.create_connection(("127.0.0.1", local), timeout=1):
                        return True
                except OSError:
                    return False

            def not_listening() -> CommandError:
                log.seek(0)
                return CommandError(shown, -1, log.read(),
                                    hint=f"The tunnel did not listen on port {local} within {deadline:.0f}s.")

            try:
                poll_until(listening, timeout=deadline, interval=0.1, on_timeout=not_listening)
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
        return host_goarch()

    def download_droplet(self, app: str, dest_dir: Path) -> Path:
        """`cf download-droplet APP --path DIR`: the app's current droplet (.tgz) in `dest_dir`,
        named as the cf CLI names it (`droplet_<guid>.tgz`)."""
        dest_dir = Path(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        result = self.cf("download-droplet", app, "--path", str(dest_dir), echo=False, quiet=True)
        written = _DROPLET_WRITTEN.search(result.output)
        if written and Path(written.group(1)).is_file():
            return Path(written.group(1))
        found = self._droplets_in(dest_dir)
        if not found:
            raise TargetError(f"`{result.shown}` wrote no droplet into {dest_dir}; it said:\n"
                              f"{result.output.strip()[-1000:]}")
        return max(found, key=lambda p: p.stat().st_mtime)

    def _droplets_in(self, directory: Path) -> list[Path]:
        """Droplet files `cf download-droplet` may have written into `directory`."""
        return sorted(directory.glob("droplet_*.tgz"))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

    def describe(self) -> str:
        """One line saying which platform this is."""
        return self.kind
