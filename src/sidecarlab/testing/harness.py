"""The deploy builder of the kit's pytest harness: push a fixture app with chosen buildpacks onto a
Target and get back the deployment (its route, `get(path)`, `ssh(cmd)`, its staging and runtime logs),
or a `DeployFailed` that carries the staging log.

In the spirit of switchblade, in Python and for either of the kit's targets:

    deployment = platform.deploy.with_buildpacks("my_buildpack", "python_buildpack") \\
        .with_env({"GREETING": "hi"}).without_internet_access().execute("greeter", fixture_dir)
    assert deployment.get("/").status == 200

Every app gets a unique name (`NAME-<6 hex>`), and the platform remembers what it pushed so the
plugin can delete it after the test (whatever the outcome) and attach its logs to a failure report.
Only cf verbs and the /v3 JSON are used (through the Target), so the same code drives localcf and a
real foundation.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from .. import learner
from ..checks.parts_2_3 import staging_log as _staging_log
from ..part4 import staging_groups_opening_egress
from ..targets import CommandResult, HttpResponse, LogLine, Target, TargetError

__all__ = [
    "Deploy",
    "DeployFailed",
    "Deployment",
    "Platform",
    "unique_name",
]

# Cloud Foundry app names become host names: keep them short and DNS-safe.
_MAX_NAME = 50
# How many lines of a log a failure message shows (the report section holds all of them).
TAIL_LINES = 40


def unique_name(name: str) -> str:
    """`name` made unique on the platform: `name-<6 hex>`, lowercase, at most 50 characters."""
    base = "".join(c if c.isalnum() or c == "-" else "-" for c in name.lower()).strip("-") or "app"
    return f"{base[:_MAX_NAME - 7]}-{uuid.uuid4().hex[:6]}"


def _tail(lines: Sequence[str], count: int = TAIL_LINES) -> str:
    shown = list(lines)[-count:]
    skipped = len(lines) - len(shown)
    head = [f"  ... ({skipped} earlier lines)"] if skipped > 0 else []
    return "\n".join(head + [f"  {line}" for line in shown]) or "  (empty)"


class DeployFailed(AssertionError):
    """`cf push` of a deployment failed; carries the push output and the staging log's lines."""

    def __init__(self, deployment: Deployment, result: CommandResult, staging_log: list[str]) -> None:
        self.deployment = deployment
        self.result = result
        self.staging_log = staging_log
        self.name = deployment.name
        super().__init__(
            f"`{result.shown}` failed (exit {result.returncode}) on {deployment.platform.target_kind}.\n"
            f"staging log of {deployment.name}:\n{_tail(staging_log)}")

    @property
    def output(self) -> str:
        """Everything `cf push` printed."""
        return self.result.output


@dataclass
class Deployment:
    """One pushed app: its unique `name`, the output of its push, and ways to look at it."""

    platform: Platform
    name: str
    app_dir: Path
    push_output: str = ""
    air_gapped: bool = False

    def _target(self) -> Target:
        self.platform.touch(self)
        return self.platform.target

    @property
    def route(self) -> str:
        """The URL of the app's first route (`http(s)://HOST[:PORT]`)."""
        return self._target().app_url(self.name)

    def get(self, path: str = "/", timeout: float = 10.0) -> HttpResponse:
        """GET `path` through the platform's router."""
        return self._target().http_get(self.name, path, timeout=timeout)

    def ssh(self, command: str, index: int = 0, check: bool = True) -> CommandResult:
        """`cf ssh NAME -c COMMAND` in instance `index`."""
        return self._target().ssh(self.name, command, index=index, check=check)

    def sidecars(self) -> list[dict[str, Any]]:
        """The app's sidecars as `/v3/apps/GUID/sidecars` lists them."""
        return self._target().sidecars(self.name)

    def staging_log(self) -> list[str]:
        """The messages of the latest staging's `[STG]` lines (from `cf logs --recent`), else the
        staging part of what `cf push` printed."""
        target = self._target()
        try:
            lines = [line.message for line in _staging_log(target, self.name)]
        except TargetError:
            lines = []
        return lines or _pushed_staging_lines(self.push_output)

    def runtime_log(self) -> list[LogLine]:
        """The app's recent log lines other than staging (`[APP/...]`, `[RTR/...]`, `[CELL/...]`, ...)."""
        return [line for line in self._target().recent_logs(self.name) if line.source != "STG"]

    def delete(self) -> None:
        """`cf delete NAME -f -r`."""
        self.platform.target.cleanup(self.name)


def _pushed_staging_lines(output: str) -> list[str]:
    """The lines `cf push` printed while staging (between `Staging app` and the droplet's upload)."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(("Staging app", "Staging "))), 0)
    return [line for line in lines[start:] if line.strip()]


@dataclass
class Deploy:
    """A builder for one push: buildpacks, environment, air-gapped staging; `execute` pushes."""

    platform: Platform
    buildpacks: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    internet: bool = True

    def with_buildpacks(self, *names: str) -> Deploy:
        """Stage with these buildpacks, in order (the last one is the final buildpack)."""
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"with_buildpacks needs one or more buildpack names, got {names!r}")
        return Deploy(self.platform, tuple(names), dict(self.env), self.internet)

    def with_env(self, env: Mapping[str, Any]) -> Deploy:
        """Add environment variables to the app (written into its manifest's `env:`)."""
        return Deploy(self.platform, self.buildpacks, {**self.env, **{str(k): str(v) for k, v in env.items()}},
                      self.internet)

    def without_internet_access(self) -> Deploy:
        """Stage with no egress: the staging security groups that open egress (`public_networks` on a usual
        foundation) are unbound for the push and bound back afterwards, even when it fails. Skips the
        test (with the reason) on a platform whose staging cannot be air-gapped (localcf in runtime
        mode `process`)."""
        return Deploy(self.platform, self.buildpacks, dict(self.env), False)

    def execute(self, name: str, fixture: Path) -> Deployment:
        """Push a copy of the app in `fixture` as `NAME-<6 hex>`; return the deployment, or raise
        DeployFailed (with the staging log) when the push fails."""
        fixture = Path(fixture)
        if not fixture.is_dir():
            raise ValueError(f"fixture {fixture} is not a directory: pass the folder of the app to push.")
        if not self.internet:
            self.platform.require_air_gap()
        app = unique_name(name)
        app_dir = self.platform.workdir / app
        shutil.copytree(fixture, app_dir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        manifest = self._manifest(app_dir, app)
        deployment = Deployment(self.platform, app, app_dir, air_gapped=not self.internet)
        self.platform.remember(deployment)
        with self.platform.staging_air_gapped(not self.internet):
            result = self.platform.target.cf("push", app, "-f", str(manifest), "-p", str(app_dir),
                                             check=False, echo=False, quiet=True)
        deployment.push_output = result.output
        if not result.ok:
            raise DeployFailed(deployment, result, deployment.staging_log())
        return deployment

    def _manifest(self, app_dir: Path, app: str) -> Path:
        path = app_dir / "manifest.yml"
        document: dict[str, Any] = {}
        if path.is_file():
            loaded = yaml.safe_load(path.read_text()) or {}
            if not isinstance(loaded, dict):
                raise ValueError(f"{path} is not a manifest (a mapping with `applications:`).")
            document = loaded
        apps = document.setdefault("applications", [{}])
        if len(apps) != 1:
            raise ValueError(f"{path} has {len(apps)} applications; a fixture app has exactly one.")
        entry = apps[0]
        entry["name"] = app
        if self.buildpacks:
            entry["buildpacks"] = list(self.buildpacks)
        if self.env:
            entry["env"] = {**(entry.get("env") or {}), **self.env}
        path.write_text("---\n" + yaml.safe_dump(document, sort_keys=False, default_flow_style=False))
        return path


class Platform:
    """A Target plus what the harness remembers: the apps it pushed and the buildpacks it installed."""

    def __init__(self, target: Target, workdir: Path, kind: str) -> None:
        self.target = target
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.target_kind = kind
        self.deployments: list[Deployment] = []
        self.touched: list[Deployment] = []
        self.buildpacks: list[str] = []

    @property
    def deploy(self) -> Deploy:
        """A new deploy builder on this platform."""
        return Deploy(self)

    def remember(self, deployment: Deployment) -> None:
        self.deployments.append(deployment)
        self.touch(deployment)

    def touch(self, deployment: Deployment) -> None:
        """Note that the running test used `deployment` (its logs go into that test's failure report)."""
        if deployment not in self.touched:
            self.touched.append(deployment)

    def install_buildpack(self, zip_path: Path, name: str, position: int = 1) -> str:
        """`cf create-buildpack NAME ZIP POSITION` (removed again by `remove_buildpacks`)."""
        self.buildpacks.append(name)
        self.target.cf("create-buildpack", name, str(zip_path), str(position), echo=False, quiet=True)
        return name

    def remove_buildpacks(self, names: Sequence[str] | None = None) -> None:
        for name in list(self.buildpacks if names is None else names):
            self.target.cf("delete-buildpack", name, "-f", check=False, echo=False, quiet=True)
            if name in self.buildpacks:
                self.buildpacks.remove(name)

    def cleanup(self, deployments: Sequence[Deployment] | None = None) -> list[str]:
        """Delete the given deployments (default: all it pushed); returns what could not be deleted."""
        left: list[str] = []
        for deployment in list(self.deployments if deployments is None else deployments):
            result = self.target.cf("delete", deployment.name, "-f", "-r", check=False, echo=False, quiet=True)
            self.target.forget(deployment.name)
            if not result.ok:
                left.append(f"{deployment.name}: {result.output.strip()}")
            if deployment in self.deployments:
                self.deployments.remove(deployment)
            if deployment in self.touched:
                self.touched.remove(deployment)
        return left

    def require_air_gap(self) -> None:
        """Skip the running test when this platform's staging cannot be air-gapped."""
        isolation = self.target.isolation()
        if not isolation.isolated:
            pytest.skip(f"staging cannot be air-gapped on {self.target_kind}: {isolation.reason}")

    @contextmanager
    def staging_air_gapped(self, air_gapped: bool = True) -> Iterator[list[str]]:
        """Unbind the staging security groups that open egress (`public_networks` on a usual foundation)
        for the block, and bind them back after it, even when it raises.

        On a foundation shared by several learners (the target has a `learner`), the air gap is the
        whole foundation's: the block first takes the air-gap lease Part 4 takes (waiting while another
        run holds it, then until no other learner's staging is under way) and releases it after the
        groups are bound back."""
        if not air_gapped:
            yield []
            return
        shared = bool(self.target.learner)
        groups = self._take_air_gap() if shared else staging_groups_opening_egress(self.target)
        unbound: list[str] = []
        try:
            for group in groups:
                self.target.cf("unbind-staging-security-group", group, echo=False, quiet=True)
                unbound.append(group)
            yield unbound
        finally:
            try:
                for group in unbound:
                    self.target.cf("bind-staging-security-group", group, echo=False, quiet=True)
            finally:
                if shared:
                    learner.release_air_gap(self.target)

    def _take_air_gap(self) -> list[str]:
        """Take the air-gap lease, naming the groups to unbind (whoever breaks the lease of a run that
        died binds those back); return them. Read before the lease is taken, the groups may be those
        another run had unbound for its own air gap: then the lease is taken once more, naming all."""
        while True:
            lease = learner.acquire_air_gap(self.target, staging_groups_opening_egress(self.target))
            groups = staging_groups_opening_egress(self.target)
            if set(groups) <= set(lease.groups()):
                return groups
            learner.release_air_gap(self.target)
