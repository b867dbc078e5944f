"""The local target driven by the real cf CLI: localcf (started on first use) behind `cf api`,
`cf auth`, `cf target`, so the notebooks show the real client's own output.

`target_from_params(target="local", local_cli=...)` chooses the client: "localcf" (localcf's own
verbs, for learners without the cf CLI), "cf" (the real cf CLI, v7 or later, required), or "auto"
(the real cf CLI when one of v7 or later is on PATH, else localcf's own verbs).
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ..paths import work_root
from .base import Isolation
from .cf import MIN_CLI_MAJOR, CFTarget
from .errors import TargetError
from .local import LocalTarget

__all__ = ["LOCAL_CLIS", "LocalCFWithCLI", "choose_local_cli", "local_cf_home"]

#: The values of the `local_cli` parameter.
LOCAL_CLIS = ("auto", "cf", "localcf")

_VERSION = re.compile(r"version (\d+)\.")


def local_cf_home() -> Path:
    """The kit's CF_HOME for localcf: `work/cf-home/localcf-<user>`, apart from the foundation's session."""
    return work_root() / "cf-home" / f"localcf-{getpass.getuser()}"


def _usable_cf(cf_binary: str, cf_home: Path) -> str | None:
    """Why the cf CLI cannot drive localcf, or None when it can (on PATH, v7 or later)."""
    found = shutil.which(cf_binary)
    if not found:
        return f"no {cf_binary!r} on PATH"
    # Even `cf version` writes a config.json into CF_HOME (else ~/.cf): the kit's own, never the learner's.
    cf_home.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = dict(os.environ, CF_HOME=str(cf_home))
    try:
        out = subprocess.run([found, "version"], capture_output=True, text=True, timeout=30, env=env).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"`{found} version` failed ({exc})"
    version = _VERSION.search(out)
    if version and int(version.group(1)) < MIN_CLI_MAJOR:
        return f"{found} is v{version.group(1)}, older than v{MIN_CLI_MAJOR}"
    return None


def choose_local_cli(local_cli: str, cf_binary: str = "cf", cf_home: Path | None = None) -> tuple[str, str]:
    """("cf" or "localcf", why): the client the local target runs for the `local_cli` parameter."""
    choice = (local_cli or "auto").strip().lower()
    if choice not in LOCAL_CLIS:
        raise TargetError(f"Unknown local_cli {local_cli!r}: it must be 'auto' (the real cf CLI when one of "
                          f"v{MIN_CLI_MAJOR} or later is installed, else localcf's own verbs), 'cf' or 'localcf'. "
                          "Fix it in the notebook's parameters cell or pass -p local_cli auto.")
    if choice == "localcf":
        return "localcf", "local_cli='localcf'"
    problem = _usable_cf(cf_binary, cf_home or local_cf_home())
    if choice == "cf":
        if problem:
            raise TargetError(f"local_cli='cf' needs the cf CLI v{MIN_CLI_MAJOR} or later: {problem}. Install "
                              "cf CLI v8 (https://github.com/cloudfoundry/cli#downloads), or set local_cli='localcf'.")
        return "cf", "local_cli='cf'"
    if problem:
        return "localcf", f"local_cli='auto' and {problem}"
    return "cf", "local_cli='auto' and the cf CLI is installed"


class LocalCFWithCLI(CFTarget):
    """localcf driven by the real cf CLI: the api, the admin password and the apps' URL come from
    the running localcf (its info and its state dir), the org and space are localcf's `localcf`/`dev`.
    What only the platform knows (isolation, the cells' CPU) comes from the LocalTarget beside it."""

    kind = "local"

    def __init__(self, local: LocalTarget | None = None, *, why: str = "", cf_binary: str = "cf",
                 cf_home: Path | None = None, **kwargs: Any) -> None:
        # The api is only known once localcf runs: _prepare fills it in.
        super().__init__("http://127.0.0.1", "localcf", "dev", cf_binary=cf_binary,
                         cf_home=cf_home or local_cf_home(), **kwargs)
        self.local = local or LocalTarget()
        self.why = why
        self._login: dict[str, str] = {}

    def _check_credentials(self) -> None:
        """localcf's one user: `admin`, with the password localcf keeps in its state dir."""
        self.local.prepare()
        info = json.loads(self.local._quiet("curl", "/localcf/v1/info"))
        self.api = str(info["api_url"])
        router = info.get("router_port")
        self.apps_url = f"http://{{route}}:{router}" if router else ""
        password_file = Path(info["state_dir"]) / "uaa-password"
        try:
            password = password_file.read_text().strip()
        except OSError as exc:
            raise TargetError(f"localcf's admin password ({password_file}) could not be read: {exc}. "
                              "`localcf status` shows it; or set local_cli='localcf'.") from None
        self._login = {"CF_USERNAME": "admin", "CF_PASSWORD": password}

    def _env(self) -> dict[str, str]:
        env = super()._env()
        env.update(self._login)  # the learner's own CF_USERNAME/CF_PASSWORD are for their foundation
        return env

    def app_url(self, app: str) -> str:
        self.prepare()
        return super().app_url(app)

    def platform_key(self) -> str:
        return self.local.platform_key()

    def isolation(self) -> Isolation:
        return self.local.isolation()

    def goarch(self) -> str:
        return self.local.goarch()

    def outside_host(self, app: str) -> str:
        return "127.0.0.1"  # the host is the outside of every localcf container

    def stop(self) -> None:
        self.local.stop()
        self._prepared = False

    def describe(self) -> str:
        return (f"{self.local.describe()}, driven by the real cf CLI ({self.why}; local_cli='localcf' runs "
                f"localcf's own verbs). The kit keeps this cf session in CF_HOME={self.cf_home}, leaving your own "
                f"~/.cf alone. To use it in a terminal: {self.export_line()}")
