"""CFTarget: a real Cloud Foundry through the `cf` binary (v7 or later).

The kit never touches the learner's own cf session: every call runs with a CF_HOME of the kit's
own (per learner, under the work directory), which `describe()` names and `export_line()` offers
for a terminal. Credentials come only from the environment (CF_USERNAME, CF_PASSWORD).
"""

from __future__ import annotations

import base64
import binascii
import getpass
import json
import os
import re
import shutil
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from .. import learner
from ..paths import work_root
from .base import HTTP_TIMEOUT, HttpResponse, Isolation, Target
from .errors import TargetError

__all__ = ["ADMIN_BUILDPACK_POSITION", "MIN_CLI_MAJOR", "CFTarget", "default_cf_home"]

#: Position for a new admin buildpack on a real foundation: last, so it never changes which
#: buildpack detection picks for other apps (it never detects anyway).
ADMIN_BUILDPACK_POSITION = 999

#: The oldest cf CLI the kit can drive: v6 has no `create-app`, and its `cf app` has no `sidecars:` row.
MIN_CLI_MAJOR = 7

_VERSION = re.compile(r"version (\d+)\.(\d+)\.(\d+)")
_NOT_AUTHORIZED = ("not authorized", "NotAuthorized", "403 Forbidden")


def default_cf_home() -> Path:
    """The kit's own CF_HOME for this learner: `work/cf-home/<user>` (the cf CLI keeps `.cf/` in it)."""
    return work_root() / "cf-home" / getpass.getuser()


class CFTarget(Target):
    """A real Cloud Foundry through the `cf` binary: api, org and space from parameters,
    credentials ONLY from the environment variables CF_USERNAME and CF_PASSWORD.

    Not tested against a real foundation (none is reachable where this kit is developed); its
    tests drive a recorded `cf` stand-in that answers in the cf CLI's own format.
    """

    kind = "cf"

    def __init__(self, api: str, org: str, space: str, *, skip_ssl_validation: bool = False,
                 cf_binary: str = "cf", cf_home: Path | None = None, apps_url: str = "",
                 **kwargs: Any) -> None:
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
        self.apps_url = _checked_apps_url(apps_url)
        self.cf_binary = cf_binary
        self.cf_home = Path(cf_home).resolve() if cf_home else default_cf_home().resolve()
        self.cli_version: str | None = None

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
        env = super()._env()
        # Never the learner's own ~/.cf: `cf api` would empty its tokens and org/space.
        env["CF_HOME"] = str(self.cf_home)
        return env

    def _install_hint(self) -> str:
        return "Install the cf CLI v8, or use target='local'."

    def export_line(self) -> str:
        """The shell line that gives a terminal the kit's cf session."""
        return f"export CF_HOME={self.cf_home}"

    def space_name(self) -> str:
        return self.space

    def platform_key(self) -> str:
        # Admin buildpacks belong to the foundation, not to a space.
        return f"cf {self.api.rstrip('/')}"

    def _check_credentials(self) -> None:
        missing = [v for v in ("CF_USERNAME", "CF_PASSWORD") if not os.environ.get(v)]
        if missing:
            raise TargetError(
                f"target='cf' needs credentials in the environment variable(s) {', '.join(missing)} "
                "(never in notebook parameters). Export them before starting Jupyter or "
                "`sidecarlab run`, e.g. `export CF_USERNAME=... CF_PASSWORD=...`."
            )

    def _prepare(self) -> None:
        self._check_credentials()
        self.cf_home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._prepared = True  # the login verbs below must not recurse into prepare()
        try:
            self._require_v7()
            api = ["api", self.api] + (["--skip-ssl-validation"] if self.skip_ssl_validation else [])
            self.cf(*api, echo=False, quiet=True)
            # `cf auth` with no arguments reads CF_USERNAME and CF_PASSWORD itself, so the
            # password never appears in an argv or an echoed line.
            self.cf("auth", echo=False, quiet=True)
            self.cf("target", "-o", self.org, "-s", self.space, echo=False, quiet=True)
        except BaseException:
            self._prepared = False
            raise

    def _require_v7(self) -> None:
        result = self.cf("version", echo=False, quiet=True, check=False)
        found = _VERSION.search(result.output)
        if not found:
            return  # an unknown build says nothing: the verbs themselves will tell
        self.cli_version = ".".join(found.groups())
        if int(found.group(1)) < MIN_CLI_MAJOR:
            raise TargetError(
                f"cf CLI v{MIN_CLI_MAJOR} or later needed: {self._binary()} is version {self.cli_version}, "
                "which has no `cf create-app`, and its `cf app` shows no sidecars. Install cf CLI v8 "
                "(https://github.com/cloudfoundry/cli#downloads), or use target='local'.",
                hint="Install cf CLI v8, or use target='local'.")

    def app_url(self, app: str) -> str:
        """`https://<route url>`, or the `apps_url` template (`cf_apps_url`) filled with the route's
        host name, the route's path after it."""
        routes = self.routes(app)
        if not routes:
            raise TargetError(f"App '{app}' has no route: push it without --no-route.")
        if not self.apps_url:
            return f"https://{routes[0]}"
        host, slash, path = routes[0].partition("/")
        return self.apps_url.format(route=host).rstrip("/") + slash + path

    def http_get(self, app: str, path: str = "/", timeout: float = HTTP_TIMEOUT) -> HttpResponse:
        url = self.app_url(app).rstrip("/") + path
        parts = urlsplit(url)
        connect, headers = url, {}
        if parts.scheme == "http" and _is_loopback_name(parts.hostname or ""):
            # Names under .localhost are the loopback (RFC 6761), as browsers treat them, though the
            # system's resolver may not know them: connect to 127.0.0.1, name the route in Host.
            port = f":{parts.port}" if parts.port else ""
            connect = parts._replace(netloc=f"127.0.0.1{port}").geturl()
            headers["Host"] = parts.hostname or ""
        try:
            r = requests.get(connect, headers=headers, timeout=timeout, verify=not self.skip_ssl_validation)
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
        host = routes[0].partition("/")[0] if routes else (urlsplit(self.api).hostname or self.api)
        return "127.0.0.1" if _is_loopback_name(host) else host

    def admin_scopes(self) -> tuple[bool | None, list[str]]:
        scopes = _token_scopes(self.cf("oauth-token", echo=False, quiet=True).output)
        return ADMIN_SCOPE in scopes, scopes

    def install_buildpack(self, directory: Path, name: str, manifest: Path) -> str:
        """A real Cloud Foundry only takes admin buildpack names or git/http URLs in `buildpacks:`,
        so the directory becomes (or updates) the admin buildpack `name`: `cf create-buildpack NAME
        DIR POSITION` or `cf update-buildpack NAME -p DIR`. That needs the admin role."""
        directory = Path(directory).resolve()
        found = learner.buildpack_guids(self, name)
        foreign = learner.not_created_here(self, name) if found else []
        if foreign:
            hint = ("Give the buildpack a name of your own: set the notebook's `learner` parameter (`-p learner "
                    "NAME` with `sidecarlab run`), or `buildpack_name`.")
            raise TargetError(f"Could not install the buildpack {name!r}: an admin buildpack of that name exists and "
                              "no notebook of yours created it, so it is left as it is (not updated, not deleted).\n"
                              + hint, hint)
        args = (["update-buildpack", name, "-p", str(directory)] if found else
                ["create-buildpack", name, str(directory), str(ADMIN_BUILDPACK_POSITION)])
        result = self.cf(*args, check=False)
        if not result.ok:
            raise self._admin_error(result.shown, result.output, f"install the buildpack {name!r}")
        return name

    def remove_buildpack(self, name: str) -> None:
        """`cf delete-buildpack NAME -f`, which deletes it only if a notebook of this learner created it."""
        result = self.cf("delete-buildpack", name, "-f", check=False)
        if not result.ok:
            raise self._admin_error(result.shown, result.output, f"delete the buildpack {name!r}")

    def _admin_error(self, shown: str, output: str, what: str) -> TargetError:
        said = " ".join(line.strip() for line in output.splitlines()
                        if line.strip() and line.strip() != "FAILED") or "nothing"
        if any(text in output for text in _NOT_AUTHORIZED):
            hint = (f"Admin buildpacks need the Cloud Foundry admin role: ask an operator to run `{shown}` for "
                    "you, or push the buildpack to a git repository and put its URL in `buildpacks:` instead.")
            return TargetError(f"Could not {what}: `{shown}` was refused (cf said: {said}).\n{hint}", hint)
        hint = f"Read what cf said, fix it, and run the cell again (`{shown}` in a terminal shows the same)."
        return TargetError(f"Could not {what}: `{shown}` failed (cf said: {said}).\n{hint}", hint)

    def describe(self) -> str:
        return (f"cf ({self.api}, org {self.org}, space {self.space}); the kit keeps its cf session in "
                f"CF_HOME={self.cf_home}, leaving your own ~/.cf alone. To use that session in a terminal: "
                f"{self.export_line()}")


ADMIN_SCOPE = "cloud_controller.admin"


def _is_loopback_name(host: str) -> bool:
    return host == "localhost" or host.endswith(".localhost")


def _checked_apps_url(template: str) -> str:
    """The `cf_apps_url` template, checked: http(s), with `{route}` and no other field."""
    template = (template or "").strip()
    if not template:
        return ""
    example = "'http://{route}:61080'"
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise TargetError(f"cf_apps_url {template!r} is not a template ({exc}): write it like {example}, "
                          "with {route} where the route's host name goes.") from None
    if fields != ["route"] or urlsplit(template).scheme not in ("http", "https"):
        raise TargetError(f"cf_apps_url {template!r} must be an http:// or https:// URL with {{route}} once "
                          f"where the route's host name goes, and no other {{field}}, e.g. {example}; "
                          "leave it empty for https://<route>.")
    return template


def _token_scopes(output: str) -> list[str]:
    """The `scope` claim of the JWT that `cf oauth-token` prints (`bearer <jwt>`), unverified: it
    is only read to tell the learner early what Cloud Controller would refuse later."""
    token = output.strip().splitlines()[-1].split()[-1] if output.strip() else ""
    parts = token.split(".")
    if len(parts) != 3:
        raise TargetError(f"`cf oauth-token` printed no token ({output.strip()[:200]!r}): log in again.")
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        raise TargetError("`cf oauth-token` printed a token that is not a JWT: log in again.") from None
    scopes = claims.get("scope") or []
    return [str(s) for s in scopes] if isinstance(scopes, list) else str(scopes).split()
