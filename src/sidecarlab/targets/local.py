"""LocalTarget: the embedded Cloud Foundry, driven through the `localcf` command (started on first use)."""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests

from .base import HTTP_TIMEOUT, HttpResponse, Isolation, Target
from .errors import CommandError, TargetError

__all__ = ["LocalTarget"]


class LocalTarget(Target):
    """The embedded Cloud Foundry: runs the `localcf` command, starting the daemon on first use."""

    kind = "local"

    def __init__(self, home: Path | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.home = Path(home).resolve() if home else None
        self.router_port: int | None = None
        self.runtime: str | None = None
        self.runtime_notice: str | None = None
        #: Why localcf's own verbs run rather than the real cf CLI (the `local_cli` choice), if chosen.
        self.client_choice = ""

    def _argv(self, args: Sequence[str]) -> list[str]:
        # The same interpreter as the kit, so the command always matches the installed localcf.
        return [sys.executable, "-m", "localcf.cli", *args]

    def _env(self) -> dict[str, str]:
        env = super()._env()
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

    def install_buildpack(self, directory: Path, name: str, manifest: Path) -> str:
        """localcf takes a local directory in `buildpacks:` (a path relative to the manifest's folder),
        so nothing is uploaded and `name` is not needed."""
        ref = os.path.relpath(Path(directory).resolve(), Path(manifest).resolve().parent)
        return ref if ref.startswith((".", os.sep)) else f".{os.sep}{ref}"

    def remove_buildpack(self, name: str) -> None:
        """Nothing to remove: the manifest named the directory itself."""

    def platform_key(self) -> str:
        home = self.home or os.environ.get("LOCALCF_HOME") or "the default state dir"
        return f"localcf {home}"

    def _droplets_in(self, directory: Path) -> list[Path]:
        # localcf releases before the cf CLI's naming wrote `droplet.tgz`; the new name comes first.
        return super()._droplets_in(directory) or sorted(directory.glob("droplet.tgz"))

    def stop(self) -> None:
        """Stop this target's localcf daemon (apps come back on the next start)."""
        self._run(self._argv(["stop"]), quiet=True, cwd=None, timeout=60, shown="localcf stop")
        self._prepared = False

    def describe(self) -> str:
        home = self.home or os.environ.get("LOCALCF_HOME")
        where = f"LOCALCF_HOME={home}" if home else "the default state dir"
        said = f", driven by localcf's own verbs ({self.client_choice})" if self.client_choice else ""
        return f"local (localcf, {where}){said}"
