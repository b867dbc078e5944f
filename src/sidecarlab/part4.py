"""Part 4 of the tutorial: the system buildpack, cached and uncached, on an air-gapped foundation.

The notebook stays thin; what it needs lives here, in three groups:

- steps the kit does for the learner (build and upload the dependency, package the buildpack,
  tamper with a cached zip). Each prints the command a learner would type for it on a real
  foundation (`go build`, `aws s3 cp`, `buildpack-packager build`, `unzip`/`zip`) before doing it;
- the checks of Part 4's claims. Each shows one pass line (`PASSED_MARK`), or a skipped line when the platform
  cannot show the claim (localcf in runtime mode `process` has no network namespace to stage in, so
  staging cannot be air-gapped there), or raises `CheckFailed` with what was expected, what was seen
  and a hint. They read the platform only through the Target (`cf curl`, `cf ssh`, `cf logs`);
- the foundation-wide settings Part 4 touches: `require_admin` (creating a system buildpack and
  changing staging security groups are admin actions, so a learner without the role is stopped
  before anything is pushed) and `StagingGroupsGuard`, which binds the staging security groups the
  notebook unbinds back even when a cell fails half way.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import io
import json
import os
import shlex
import tarfile
import time
import urllib.parse
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from . import blobstore, learner, packager, sidecar
from .checks import CheckFailed, CheckResult, check, fail, latest_build, staging_log
from .part3 import go_build_command
from .supply_buildpack import BuildpackError
from .targets import LogLine, Target, TargetError

__all__ = [
    "ADMIN_SCOPE",
    "PUBLIC_NETWORKS",
    "AdminRequired",
    "Dependency",
    "StagingGroupsGuard",
    "binary_on_path",
    "build_and_upload_dependency",
    "cached_staged_air_gapped",
    "cached_zip_holds_dependency",
    "checksum_mismatch",
    "dependency_downloaded",
    "manifest_names_buildpack",
    "package_buildpack",
    "require_admin",
    "staging_groups_opening_egress",
    "tamper_dependency",
    "uncached_failed_air_gapped",
    "use_system_buildpack",
    "zip_dependency_path",
]

#: The staging security group a usual cf-deployment binds for public egress (CF-BEHAVIOUR.md section 9).
PUBLIC_NETWORKS = "public_networks"
#: The UAA scope Cloud Controller reads as "admin": needed for system buildpacks and global security groups.
from .targets.cf import ADMIN_SCOPE  # noqa: E402

# libbuildpack's texts, as the packaged bin/supply prints them (CF-BEHAVIOUR.md section 7).
_COPY = "Copy ["
_DOWNLOAD = "Download ["
_COULD_NOT_DOWNLOAD = "could not download: "
_MISMATCH = "dependency sha256 mismatch: expected sha256 {expected}, actual sha256 {actual}"
# What localcf writes into a staging log it could not air-gap (runtime mode `process`).
_NOT_AIR_GAPPED = "this staging cannot be air-gapped"
STAGING_LOG_DEADLINE = 10.0
POLL_SECONDS = 0.3

Log = Callable[[str], None]


def _show(command: str, log: Log = print) -> None:
    """Print the command a learner would type for a step the kit does for them."""
    log(f"$ {command}")


# ============================================================================ steps for the learner

@dataclass(frozen=True)
class Dependency:
    """The uploaded config-server archive as the buildpack's manifest.yml records it."""

    name: str
    version: str
    uri: str
    sha256: str
    binary: Path
    buildpack_dir: Path

    @property
    def archive_name(self) -> str:
        return Path(urllib.parse.urlsplit(self.uri).path).name


def build_and_upload_dependency(target: Target, work: Path, version: str, s3: blobstore.S3Settings, *,
                                log: Log = print) -> Dependency:
    """Build the config-server for the target's cells, make a work copy of the repository's
    `buildpack/`, upload the archive (`bin/config-server` inside) and record its uri and sha256 in
    the copy's manifest.yml. Prints what a learner would type for each step."""
    work = Path(work)
    goarch = target.goarch()
    binary = work / "bin" / "config-server"
    _show(go_build_command(binary, goarch), log)
    sidecar.build(out=binary, goos="linux", goarch=goarch)
    buildpack_dir = packager.copy_buildpack(work / "buildpack")
    version = version.strip().lstrip("v")
    key = blobstore.sidecar_key(f"{version}-linux-{goarch}.tgz", s3.learner)  # the key upload_dependency writes
    archive = key.rsplit("/", 1)[-1]
    _show(f"tar -czf {archive} -C {shlex.quote(os.path.relpath(work))} bin/config-server", log)
    _show(blobstore.aws_cp_command(archive, s3, key), log)
    _show(f"sha256sum {archive}   # then write the uri and the sha256 into buildpack/manifest.yml", log)
    uploaded = packager.upload_dependency(binary, version, s3, buildpack_dir, log=log)
    return Dependency(packager.DEPENDENCY, version, uploaded.url, uploaded.sha256, binary, buildpack_dir)


def package_buildpack(buildpack_dir: Path, *, cached: bool, stack: str, out_dir: Path, target: Target,
                      log: Log = print) -> Path:
    """`buildpack-packager build -stack STACK [-cached]` with the kit's packager; returns the zip."""
    flag = " -cached" if cached else ""
    _show(f"buildpack-packager build -stack {stack}{flag}   "
          f"# here: sidecarlab buildpack package --stack {stack}{' --cached' if cached else ''}", log)
    made = packager.package(Path(buildpack_dir), stack=stack, cached=cached, out_dir=Path(out_dir),
                            cache_dir=Path(out_dir) / "packager-cache", goarch=target.goarch(), log=log)
    return made.path


def use_system_buildpack(manifest: Path, buildpack: str, final: str = "python_buildpack") -> str:
    """Make the app's manifest name the system buildpack (then `final`) and drop its `sidecars:`, which the
    buildpack now declares itself; returns the manifest's new text."""
    manifest = Path(manifest)
    document = yaml.safe_load(manifest.read_text()) or {}
    apps = document.get("applications") or []
    if len(apps) != 1:
        raise BuildpackError(f"{manifest} has {len(apps)} applications; the tutorial's manifests have exactly one.")
    apps[0].pop("sidecars", None)
    apps[0]["buildpacks"] = [buildpack, final]
    text = "---\n" + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
    manifest.write_text(text)
    return text


def zip_dependency_path(uri: str) -> str:
    """Where buildpack-packager stores a dependency in a cached zip: `dependencies/<md5hex(uri)>/<basename>`."""
    basename = Path(urllib.parse.urlsplit(uri).path).name or "dependency"
    return f"dependencies/{hashlib.md5(uri.encode()).hexdigest()}/{basename}"


def _zip_manifest(zf: zipfile.ZipFile) -> dict[str, Any]:
    document = yaml.safe_load(zf.read("manifest.yml"))
    return document if isinstance(document, dict) else {}


def tamper_dependency(cached_zip: Path, out: Path, *, log: Log = print) -> tuple[Path, str]:
    """A copy of `cached_zip` whose dependency file has bytes appended (its manifest unchanged), as an
    attacker or a broken mirror would leave it; returns the zip and the tampered file's sha256."""
    cached_zip, out = Path(cached_zip), Path(out)
    with zipfile.ZipFile(cached_zip) as zf:
        deps = [d for d in _zip_manifest(zf).get("dependencies", []) if d.get("file")]
        if not deps:
            raise packager.PackagerError(f"{cached_zip.name} holds no dependency: tamper with a cached zip.")
        rel = str(deps[0]["file"])
        if rel not in zf.namelist():
            raise packager.PackagerError(f"{cached_zip.name} names {rel} in its manifest but does not hold it.")
        sha = ""
        _show(f"unzip -q {cached_zip.name} -d tampered && echo tampered >> tampered/{rel} && "
              f"(cd tampered && zip -qr ../{out.name} .)", log)
        partial = out.with_name(f".{out.name}.partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as dst:
            for info in zf.infolist():
                data = zf.read(info)
                if info.filename == rel:
                    data += b"tampered\n"
                    sha = hashlib.sha256(data).hexdigest()
                dst.writestr(info, data)
    partial.replace(out)
    return out, sha


# ============================================================================== admin and groups

class AdminRequired(TargetError):
    """The learner's user may not create system buildpacks or change staging security groups."""


#: What each part does that needs the admin role: (what it does, what the admin may do, whom to ask for what).
_ADMIN_NEEDS = {
    "Part 2": ("installs its buildpack as an admin buildpack (`cf create-buildpack`): a real Cloud Foundry takes "
               "only admin buildpack names or git URLs in `buildpacks:`",
               "install admin buildpacks",
               "or ask them to install the buildpack for you"),
    "Part 3": ("installs its buildpack as an admin buildpack (`cf create-buildpack`): a real Cloud Foundry takes "
               "only admin buildpack names or git URLs in `buildpacks:`",
               "install admin buildpacks",
               "or ask them to install the buildpack for you"),
    "Part 4": ("creates a system buildpack (`cf create-buildpack`) and air-gaps staging for the whole foundation "
               f"(`cf unbind-staging-security-group {PUBLIC_NETWORKS}`)",
               "create system buildpacks and change staging security groups",
               "on a sandbox foundation (air-gapping staging affects every app staged there meanwhile)"),
}


def require_admin(target: Target, *, log: Log = print, part: str = "Part 4") -> None:
    """Stop before anything is pushed when the learner cannot do the admin steps of `part`.

    `cf create-buildpack` (Parts 2 to 4 on a real foundation) and `cf (un)bind-staging-security-group`
    (Part 4) need the `cloud_controller.admin` scope. On localcf the learner is the platform's admin; on
    a real foundation the scopes of the learner's token say it (the API's own test for "admin")."""
    does, may, ask = _ADMIN_NEEDS.get(part, _ADMIN_NEEDS["Part 4"])
    admin, scopes = target.admin_scopes()
    if admin is None:  # the embedded platform: the learner is its admin
        log(f"localcf: you are the platform's admin, so you may {may}.")
        return
    _show("cf oauth-token   # then read the token's `scope` list: it must hold " + ADMIN_SCOPE, log)
    user = os.environ.get("CF_USERNAME", "your user")
    if not admin:
        raise AdminRequired(
            f"{part} needs a Cloud Foundry admin on {target.describe()}: it {does}. {user} has the scopes "
            f"{', '.join(sorted(scopes)) or 'none'}, without {ADMIN_SCOPE}. Ask your operator for a user with "
            f"the {ADMIN_SCOPE} scope {ask}, or run {part} on the embedded platform (target: local). "
            "Nothing was pushed.")
    log(f"{user} has the {ADMIN_SCOPE} scope: {part} may {may}.")


def _rule_opens_egress(rule: dict[str, Any]) -> bool:
    """Whether a security group rule lets a staging container reach more than DNS."""
    protocol = str(rule.get("protocol", "")).lower()
    if protocol == "all":
        return True
    if protocol not in ("tcp", "udp"):
        return False  # icmp
    ports = str(rule.get("ports", "")).replace(" ", "")
    return ports != "" and any(p != "53" for p in ports.split(","))


def staging_groups_opening_egress(target: Target) -> list[str]:
    """The security groups bound for staging whose rules open more than name resolution."""
    groups = target.curl_all("/v3/security_groups?globally_enabled_staging=true&per_page=5000")
    return sorted(g["name"] for g in groups
                  if (g.get("globally_enabled") or {}).get("staging", True)
                  and any(_rule_opens_egress(r) for r in g.get("rules") or []))


def _bound_for_staging(target: Target, name: str) -> bool:
    groups = target.curl_all(f"/v3/security_groups?names={urllib.parse.quote(name)}")
    return any(g.get("name") == name and (g.get("globally_enabled") or {}).get("staging") for g in groups)


@dataclass
class StagingGroupsGuard:
    """Binds back the staging security groups a notebook unbinds, whatever happens to the notebook.

    A headless run stops at the first failing cell, so a clean-up cell at the end cannot be the only
    way back. Made before the unbinding cell, the guard remembers which of `groups` are bound for
    staging now, and binds those back (`cf bind-staging-security-group NAME`):

    - right after any cell that raises (a failed check, a failed command): an IPython
      `post_run_cell` hook, which runs before the notebook runner sees the error;
    - when the kernel exits before the clean-up cell (`atexit`);
    - on the next run, when the kernel was killed: its names are kept in `marker` until restored,
      and `recover` reads them.

    `done()` in the clean-up cell, after it bound the groups back itself, ends the watch.

    On a foundation shared by several learners, the guard first takes the air-gap lease
    (`sidecarlab.learner.acquire_air_gap`: it waits while another run holds it, then until no other
    learner's staging is under way), and `done()` releases it once the groups are bound back.
    """

    target: Target
    groups: Sequence[str] = (PUBLIC_NETWORKS,)
    marker: Path | None = None
    unbound: list[str] = field(default_factory=list, init=False)
    _active: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        # One air gap at a time on a shared foundation, and none under another learner's staging:
        # the lease is taken first (waiting for others), released by done() after the groups are back.
        learner.acquire_air_gap(self.target, self.groups)
        # A guard made again before the clean-up (the cell run twice) finds the group already
        # unbound: the marker still names it, so this guard binds it back too.
        earlier = self._marked(self.target, self.marker) if self.marker is not None else []
        now = [g for g in self.groups if _bound_for_staging(self.target, g)]
        self.unbound = list(dict.fromkeys(earlier + now))
        self._active = True
        if self.marker is not None:
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            self.marker.write_text(json.dumps({"target": self.target.describe(), "groups": self.unbound}))
        shell = _ipython()
        if shell is not None:
            shell.events.register("post_run_cell", self._after_cell)
        atexit.register(self._at_exit)

    @classmethod
    def recover(cls, target: Target, marker: Path, *, log: Log = print) -> list[str]:
        """Bind back the groups an earlier run unbound and never restored (its kernel was killed)."""
        restored = [g for g in cls._marked(target, marker) if not _bound_for_staging(target, g)]
        for name in restored:
            log(f"an earlier run of this notebook left {name} unbound for staging: binding it back")
            target.cf("bind-staging-security-group", name)
        Path(marker).unlink(missing_ok=True)
        learner.release_leftover_lease(target, log=log)
        return restored

    @staticmethod
    def _marked(target: Target, marker: Path) -> list[str]:
        """The groups a marker names for this target (none when there is no marker)."""
        try:
            left = json.loads(Path(marker).read_text())
        except (OSError, ValueError):
            return []
        if not isinstance(left, dict) or left.get("target") != target.describe():
            return []
        return [str(g) for g in left.get("groups") or []]

    def _after_cell(self, result: Any) -> None:
        if not self._active or not (getattr(result, "error_in_exec", None) or getattr(result, "error_before_exec", None)):
            return
        still = [g for g in self.unbound if not _bound_for_staging(self.target, g)]
        if still:
            print(f"\nThe cell failed while staging was air-gapped: binding {', '.join(still)} back for staging "
                  "(the clean-up at the end may not run).", flush=True)
        self.bind_back()

    def _at_exit(self) -> None:
        if self._active:
            with contextlib.suppress(Exception):  # the interpreter is ending: nothing left to report to
                self.bind_back(echo=False)

    def bind_back(self, echo: bool = True) -> None:
        """Bind back now the groups this guard remembers (those still unbound), then end its watch."""
        for name in self.unbound:
            if not _bound_for_staging(self.target, name):
                self.target.cf("bind-staging-security-group", name, echo=echo, quiet=not echo)
        self.done()

    def done(self) -> None:
        """End the watch: the groups are bound again (the clean-up cell bound them, or the guard did)."""
        if not self._active:
            return
        self._active = False
        shell = _ipython()
        if shell is not None:
            with contextlib.suppress(ValueError):
                shell.events.unregister("post_run_cell", self._after_cell)
        atexit.unregister(self._at_exit)
        if self.marker is not None:
            self.marker.unlink(missing_ok=True)
        learner.release_air_gap(self.target)


def _ipython() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency of the kit
        return None
    return get_ipython()


# ===================================================================================== checks

def _report(result: CheckResult) -> CheckResult:
    return result.show()


class _NotSo(Exception):
    def __init__(self, expected: str, seen: str, hint: str) -> None:
        super().__init__(expected)
        self.expected, self.seen, self.hint = expected, seen, hint


def _not_so(expected: str, seen: str, hint: str) -> NoReturn:
    """Inside a file check: stop with what was expected, what was seen and a hint."""
    raise _NotSo(expected, seen, hint)


def _file_check(what: str, run: Callable[[], str]) -> CheckResult:
    """A check on files (no platform): `run` returns what it proved or calls `_not_so`."""
    try:
        statement = run()
    except _NotSo as exc:
        raise CheckFailed(what, exc.expected, exc.seen, exc.hint) from None
    return _report(CheckResult("passed", statement))


def cached_zip_holds_dependency(cached_zip: Path, dependency: str = packager.DEPENDENCY) -> CheckResult:
    """The cached zip holds the dependency at buildpack-packager's path (`dependencies/<md5(uri)>/<file>`,
    named by the zipped manifest's `file:`), with the manifest's sha256, and `bin/config-server` inside."""
    cached_zip = Path(cached_zip)
    what = f"{cached_zip.name} holds {dependency} at the packager's path, with the manifest's sha256"

    def run() -> str:
        if not cached_zip.is_file():
            _not_so(f"a zip at {cached_zip}", "no such file", "Run the packaging cell above (`--cached`).")
        with zipfile.ZipFile(cached_zip) as zf:
            names = zf.namelist()
            if "manifest.yml" not in names:
                _not_so("manifest.yml in the zip", f"entries: {', '.join(names[:20])}",
                     "A buildpack zip needs manifest.yml at its top: list it under include_files.")
            entries = [d for d in _zip_manifest(zf).get("dependencies", []) if d.get("name") == dependency]
            if not entries:
                _not_so(f"a dependency named {dependency} in the zipped manifest.yml", "none",
                     "The buildpack's manifest.yml must list the config-server under dependencies.")
            dep = entries[0]
            want = zip_dependency_path(str(dep.get("uri", "")))
            if dep.get("file") != want:
                _not_so(f"`file: {want}` in the zipped manifest (md5 of the uri, then its file name)",
                     f"file: {dep.get('file')!r}",
                     "Only a cached package has `file:`: package with --cached (buildpack-packager -cached). "
                     "Without it staging downloads the uri, which an air-gapped foundation cannot reach.")
            if want not in names:
                _not_so(f"the entry {want} in the zip", f"dependencies in the zip: "
                     f"{', '.join(n for n in names if n.startswith('dependencies/')) or 'none'}",
                     "Package again with --cached: the packager downloads the uri and stores it there.")
            data = zf.read(want)
        actual = hashlib.sha256(data).hexdigest()
        if actual != dep.get("sha256"):
            _not_so(f"{want} with the manifest's sha256 {dep.get('sha256')}", f"sha256 {actual}",
                 "The file in the zip is not the one the manifest describes, so staging would stop with "
                 "`dependency sha256 mismatch`. Upload the dependency again (it records its sha256) and package again.")
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                member = tar.getmember("bin/config-server")
        except (tarfile.TarError, KeyError, OSError) as exc:
            _not_so("a .tgz holding bin/config-server (so it lands on PATH as deps/IDX/bin/config-server)",
                 f"{want}: {exc}", "Upload the archive packager.dependency_archive makes, not the bare binary.")
        if not member.mode & 0o111:
            _not_so("bin/config-server executable in the archive", f"mode {oct(member.mode)}",
                 "Make the binary executable before archiving it.")
        return (f"{cached_zip.name} holds {want} ({len(data) // 1024} KiB, sha256 {actual[:16]}..., the manifest's), "
                f"with bin/config-server inside")

    return _file_check(what, run)


def manifest_names_buildpack(manifest: Path, buildpack: str, final: str = "python_buildpack") -> CheckResult:
    """The app's manifest names the system buildpack first and the final buildpack last, with no `sidecars:`."""
    manifest = Path(manifest)
    what = f"{manifest.name} names {buildpack} by name and declares no sidecars"

    def run() -> str:
        try:
            document = yaml.safe_load(manifest.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            _not_so(f"a readable manifest at {manifest}", str(exc), "Run the cell that writes the app's manifest.")
        apps = document.get("applications") or [{}]
        app = apps[0] or {}
        buildpacks = list(app.get("buildpacks") or [])
        if buildpacks != [buildpack, final]:
            _not_so(f"buildpacks: [{buildpack}, {final}]", f"buildpacks: {buildpacks}",
                 "List the system buildpack by its name (as `cf buildpacks` shows it) first, and the final "
                 f"buildpack, {final}, last.")
        if app.get("sidecars"):
            _not_so("no `sidecars:` in the app's manifest", f"sidecars: {app['sidecars']}",
                 "The buildpack declares the sidecar itself (launch.yml); a user sidecar of the same name would be "
                 "refused: `Buildpack defined sidecar 'config-server' conflicts with an existing user-defined sidecar`.")
        return f"{manifest.name} names [{buildpack}, {final}] and has no `sidecars:` block"

    return _file_check(what, run)


def _air_gap_skip(target: Target, what: str) -> CheckResult | None:
    """A skipped result when the target cannot air-gap staging (localcf in runtime mode `process`)."""
    isolation = target.isolation()
    if isolation.isolated:
        return None
    return _report(CheckResult(
        "skipped", what, "staging cannot be air-gapped here: localcf runs in runtime mode `process`, which has "
        "no network namespace to stage in, so staging always uses this machine's network"))


def _latest_staging(target: Target, app: str, needles: Sequence[str], deadline: float) -> tuple[dict[str, Any] | None,
                                                                                                 list[LogLine]]:
    """The newest build and its staging log, waiting briefly until each needle appears (logs may lag)."""
    build = latest_build(target, app)
    end = time.monotonic() + deadline
    while True:
        lines = staging_log(target, app)
        if all(any(n in line.message for line in lines) for n in needles) or time.monotonic() >= end:
            return build, lines
        time.sleep(POLL_SECONDS)


def _tail(lines: Iterable[LogLine], count: int = 8) -> str:
    messages = [line.message.strip() for line in lines]
    text = " | ".join(messages[-count:]) if messages else "no [STG] lines at all"
    return text if len(text) <= 900 else "..." + text[-900:]


def _lines_with(lines: Iterable[LogLine], needle: str) -> list[str]:
    return [line.message.strip() for line in lines if needle in line.message]


@check("the latest staging of {app} took the dependency from the cached zip with staging air-gapped")
def _cached_staged(target: Target, app: str, deadline: float) -> tuple[str, Any]:
    build, lines = _latest_staging(target, app, [_COPY], deadline)
    if build is None:
        fail(f"a build of {app}", "no build at all", "Run the push cell above.")
    copied, downloaded = _lines_with(lines, _COPY), _lines_with(lines, _DOWNLOAD)
    if build.get("state") != "STAGED":
        fail("a successful staging", f"the latest build is {build.get('state')} ({build.get('error')}); its log "
             f"ends: {_tail(lines)}",
             "Is the system buildpack the cached zip? `cf buildpacks` shows its file name, which must hold "
             "`-cached-`; `cf update-buildpack NAME -p CACHED_ZIP` puts it back.")
    if downloaded or not copied:
        fail(f"a `{_COPY}<zip path>]` line and no `{_DOWNLOAD}` line",
             f"{'; '.join(downloaded + copied) or 'neither'}",
             "The buildpack downloaded the dependency: it is the uncached package. Install the cached zip "
             "(`cf update-buildpack NAME -p CACHED_ZIP`) and push again.")
    if any(_NOT_AIR_GAPPED in line.message for line in lines):
        fail("a staging without network", "the staging log says it could not be air-gapped",
             "This platform cannot air-gap staging (runtime mode `process`).")
    open_groups = staging_groups_opening_egress(target)
    if open_groups:
        fail("no staging security group opening egress (an air-gapped foundation)",
             f"bound for staging and opening egress: {', '.join(open_groups)}",
             f"Run the cell with `%cf unbind-staging-security-group {PUBLIC_NETWORKS}` (and unbind the other "
             "groups named here), then push again.")
    return (f"the latest staging of {app} succeeded with no staging security group opening egress; the "
            f"dependency came from the zip: {copied[-1]!r}"), copied


def cached_staged_air_gapped(target: Target, app: str, deadline: float = STAGING_LOG_DEADLINE) -> CheckResult:
    """The app staged while no staging security group opened egress, taking the dependency from the zip."""
    skipped = _air_gap_skip(target, f"the latest staging of {app} took the dependency from the cached zip "
                                    "with staging air-gapped")
    return skipped or _cached_staged(target, app, deadline)


@check("staging of {app} with the uncached buildpack failed air-gapped, with the download error naming {url}")
def _uncached_failed(target: Target, app: str, url: str, deadline: float) -> tuple[str, Any]:
    build, lines = _latest_staging(target, app, [_COULD_NOT_DOWNLOAD], deadline)
    if build is None:
        fail(f"a failed build of {app}", "no build at all", "Run the push cell above first.")
    if build.get("state") != "FAILED":
        copied = _lines_with(lines, _COPY)
        hint = ("It staged from the zip: the system buildpack is still the cached one. "
                "`cf update-buildpack NAME -p UNCACHED_ZIP`, then push again." if copied else
                "It downloaded the dependency, so staging still reaches the network: "
                f"`cf staging-security-groups` must list no group but dns (unbind {PUBLIC_NETWORKS}).")
        fail(f"the latest build FAILED (the download of {url} cannot work air-gapped)",
             f"the latest build is {build.get('state')}; its log ends: {_tail(lines)}", hint)
    said = _lines_with(lines, _DOWNLOAD + url)
    errors = _lines_with(lines, _COULD_NOT_DOWNLOAD)
    if not said or not errors:
        fail(f"`{_DOWNLOAD}{url}]` and then `**ERROR** {_COULD_NOT_DOWNLOAD}...`",
             f"the latest staging's log ends: {_tail(lines)}",
             "Staging failed for another reason than the download: read its [STG] lines.")
    named = [e for e in errors if url in e] or errors
    seen_error = str(build.get("error") or "")
    return (f"staging of {app} failed ({seen_error}) at {said[-1]!r}: {named[-1]!r}"), named[-1]


def uncached_failed_air_gapped(target: Target, app: str, url: str,
                               deadline: float = STAGING_LOG_DEADLINE) -> CheckResult:
    """Air-gapped, the uncached package fails its download: `Download [URL]`, then `could not download: ...`."""
    skipped = _air_gap_skip(target, f"staging of {app} with the uncached buildpack failed air-gapped, with the "
                                    f"download error naming {url}")
    return skipped or _uncached_failed(target, app, url, deadline)


@check("staging of {app} refused the tampered dependency with libbuildpack's sha256 mismatch text")
def checksum_mismatch(target: Target, app: str, expected: str, actual: str | None = None,
                      deadline: float = STAGING_LOG_DEADLINE) -> tuple[str, Any]:
    """The newest build FAILED with `dependency sha256 mismatch: expected sha256 EXP, actual sha256 ACT`."""
    prefix = f"dependency sha256 mismatch: expected sha256 {expected}, actual sha256 "
    build, lines = _latest_staging(target, app, [prefix], deadline)
    if build is None:
        fail(f"a failed build of {app}", "no build at all", "Run the push cell above first.")
    said = _lines_with(lines, prefix)
    want = _MISMATCH.format(expected=expected, actual=actual or "<the file's sha256>")
    if build.get("state") != "FAILED" or not said:
        fail(f"a FAILED build whose log says `{want}`",
             f"the latest build is {build.get('state')}; its log ends: {_tail(lines)}",
             "Is the tampered zip the system buildpack (`cf update-buildpack NAME -p TAMPERED_ZIP`), and did "
             "the push after it run? libbuildpack checks every dependency's sha256, from the zip or downloaded.")
    if actual is not None and not any(prefix + actual in s for s in said):
        fail(want, said[-1], "The file staging checked is not the tampered one: install the tampered zip again.")
    return f"staging of {app} failed ({build.get('error')}): {said[-1]!r}", said[-1]


@check("the latest staging of {app} downloaded {url} and succeeded")
def dependency_downloaded(target: Target, app: str, url: str, deadline: float = STAGING_LOG_DEADLINE) -> tuple[str, Any]:
    """The newest build STAGED and its log has `Download [URL]` (the uncached package, online)."""
    build, lines = _latest_staging(target, app, [_DOWNLOAD + url], deadline)
    if build is None:
        fail(f"a build of {app}", "no build at all", "Push the app first.")
    said = _lines_with(lines, _DOWNLOAD + url)
    if build.get("state") != "STAGED" or not said:
        errors = _lines_with(lines, _COULD_NOT_DOWNLOAD)
        hint = (f"The download failed: staging is still air-gapped. `cf bind-staging-security-group {PUBLIC_NETWORKS}` "
                "opens it again." if errors else
                "The system buildpack must be the uncached zip (`cf update-buildpack NAME -p UNCACHED_ZIP`), then push.")
        fail(f"a STAGED build whose log says `{_DOWNLOAD}{url}]`",
             f"the latest build is {build.get('state')}; its log ends: {_tail(lines)}", hint)
    return f"the latest staging of {app} succeeded and downloaded the dependency: {said[-1]!r}", said[-1]


_PATH_SCRIPT = r"""
for d in /proc/[0-9]*; do
  exe=$(readlink "$d/exe" 2>/dev/null) || continue
  case "$exe" in */{name}) ;; *) continue;; esac
  tr '\0' '\n' < "$d/environ" 2>/dev/null | grep -q '{guid}' || continue
  echo "PID ${{d#/proc/}}"
  echo "EXE $exe"
  echo "CMD $(tr '\0' ' ' < "$d/cmdline")"
  tr '\0' '\n' < "$d/environ" | grep '^PATH=' | sed 's/^/ENV /'
done
echo DONE
"""


@check("the sidecar's command `{name}` of {app} runs the buildpack's binary, found on PATH")
def binary_on_path(target: Target, app: str, name: str = "config-server", sidecar: str = "config-server",
                   index: int = 0) -> tuple[str, Any]:
    """The sidecar's command is the bare name, and the running process's executable lies in a
    directory of its PATH under deps/ (where a supply buildpack's `bin` goes)."""
    found = next((s for s in target.sidecars(app) if s.get("name") == sidecar), None)
    if found is None:
        fail(f"a sidecar {sidecar} of {app}", "none", "Push the app with the sidecar buildpack first.")
    if str(found.get("command", "")).strip() != name:
        fail(f"the command `{name}` (a bare name, looked up on PATH)", f"the command {found.get('command')!r}",
             "The buildpack's launch.yml declares the command; with the binary in deps/IDX/bin it needs no path.")
    output = target.ssh(app, _PATH_SCRIPT.format(name=name, guid=target.app_guid(app)), index=index).output
    procs: list[dict[str, str]] = []
    for line in output.splitlines():
        key, _, value = line.partition(" ")
        if key == "PID":
            procs.append({})
        elif procs and key in ("EXE", "CMD", "ENV"):
            procs[-1][key] = value.strip()
    if not procs:
        fail(f"a running process whose executable is .../{name}", "none in the container",
             f"The sidecar is not running: see `cf logs {app} --recent` for its lines.")
    for proc in procs:
        exe = proc.get("EXE", "")
        path = proc.get("ENV", "").removeprefix("PATH=").split(":")
        if os.path.dirname(exe) in path and "/deps/" in exe:
            return (f"the sidecar's command is `{name}` and runs {exe}: {os.path.dirname(exe)} is on its PATH"), proc
    fail("an executable under /home/vcap/deps/IDX/bin, on the PATH of the process",
         "; ".join(f"{p.get('EXE')} with {p.get('ENV', 'no PATH')}" for p in procs),
         "A supply buildpack's deps/IDX/bin is put on PATH by the final buildpack's profile.d script; "
         "unpack the archive so that the binary is deps/IDX/bin/config-server.")
