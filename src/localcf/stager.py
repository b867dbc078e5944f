"""The stager: turns a build (package + buildpacks) into a droplet by running the builder.

Reads top to bottom in the order staging happens on Cloud Foundry: download buildpacks, create the
staging container, download the app package, run the builder (detect, supply, finalize or compile,
release), upload the droplet and the build artifacts cache, destroy the container.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import blobs
from . import buildpacks as bp_fetch
from .blobs import human_size
from .constants import CELL_ID  # noqa: E402
from .controller import Controller
from .records import (
    STACK,
    App,
    Build,
    Droplet,
    DropletBuildpack,
    DropletSidecar,
    JsonObject,
    Package,
)
from .store import new_guid

# builder exit code -> what Cloud Controller records as the build's error
STAGING_ERRORS = {
    222: "NoAppDetectedError - An app was not successfully detected by any available buildpack",
    223: "BuildpackCompileFailed - App staging failed in the buildpack compile phase",
    224: "BuildpackReleaseFailed - App staging failed in the buildpack release phase",
    225: "StagingError - Staging error: staging failed",
}
DEFAULT_STAGING_ERROR = "StagingError - Staging error: staging failed"
# what a program hitting a full disk prints (strerror(ENOSPC), Python's OSError, SQLite)
NO_SPACE_MARKS = ("No space left on device", "[Errno 28]", "database or disk is full")

# (argv, env, binds {host path: container path}, network, on_output(stream, line)) -> exit status
TaskRunner = Callable[[list[str], dict[str, str], dict[Path, str], str, Callable[[str, str], None]], int]


# prints one staging line: stg(line) or stg(line, "ERR")
Stg = Callable[..., None]


@dataclass
class Outcome:
    """How a build ends: STAGED with a droplet, or FAILED with Cloud Controller's error text."""

    state: str
    error: str | None
    droplet_guid: str | None = None


def dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


class Stager:
    """Runs builds, one thread each, streaming `[STG/0]` lines into the app's log."""

    def __init__(self, controller: Controller, runner: TaskRunner):
        self.c = controller
        self.state = controller.state
        # the cell's, wrapped by the staging security groups: staging tasks run in the container
        # runtime, with the host's network or none, as the bound staging groups decide
        self.runner = runner
        self._threads: dict[str, threading.Thread] = {}
        self._logs: dict[str, list[tuple[str, str]]] = {}  # build guid -> its staging lines so far
        self._done: set[str] = set()
        self._local: dict[str, set[str]] = {}  # build guid -> keys of its local buildpacks
        self._cond = threading.Condition()

    def follow(self, build_guid: str, heartbeat: float = 1.0) -> Iterator[tuple[str, str] | None]:
        """The staging lines of one build from its first, as they come; ends when staging ends.
        Yields (stream, line), or None as a heartbeat."""
        seen = 0
        while True:
            with self._cond:
                if build_guid not in self._logs:
                    return
                lines = self._logs[build_guid]
                if seen == len(lines) and build_guid not in self._done:
                    self._cond.wait(heartbeat)
                news, seen = lines[seen:], len(lines)
                finished = build_guid in self._done and seen == len(lines)
            if not news and not finished:
                yield None
            yield from news
            if finished:
                return

    def _log(self, build_guid: str, stream: str, line: str) -> None:
        with self._cond:
            self._logs.setdefault(build_guid, []).append((stream, line))
            self._cond.notify_all()

    def _finish(self, build_guid: str) -> None:
        with self._cond:
            self._done.add(build_guid)
            # keep the lines of the last few builds for late followers
            for old in [g for g in self._logs if g in self._done][:-20]:
                self._logs.pop(old, None)
                self._done.discard(old)
            self._cond.notify_all()

    def stage(self, build: Build) -> None:
        with self._cond:
            self._logs[build.guid] = []
        t = threading.Thread(target=self.run, args=(build.guid,), name=f"stage-{build.guid}", daemon=True)
        self._threads[build.guid] = t
        t.start()

    def wait(self, build_guid: str, timeout: float | None = None) -> None:
        t = self._threads.get(build_guid)
        if t:
            t.join(timeout)

    def resume_interrupted(self) -> None:
        """Builds left STAGING by a dead daemon are failed, as Cloud Controller does on a lost task,
        and their work folders (nothing stages before this runs) are reclaimed."""
        for b in self.c.store.find(Build):
            if b.state == "STAGING":
                self.c.store.update(Build, b.guid, state="FAILED",
                                    error="StagingError - Staging error: staging was interrupted")
        if self.state.staging.is_dir():
            for left in self.state.staging.iterdir():
                if left.is_dir() and not left.is_symlink():
                    shutil.rmtree(left, ignore_errors=True)
                else:
                    left.unlink(missing_ok=True)

    # ------------------------------------------------------------------------------------------

    def run(self, build_guid: str) -> None:
        store = self.c.store
        build = store.get(Build, build_guid)
        app = store.get(App, build.app_guid)
        work = self.state.staging / build_guid

        def stg(line: str, stream: str = "OUT") -> None:
            self._log(build_guid, stream, line)
            self.c.logs.emit(app.guid, "STG", 0, stream, line)

        outcome = Outcome("FAILED", DEFAULT_STAGING_ERROR)
        try:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            keys, skip_detect = self.download_buildpacks(build, work / "buildpacks", stg)
            stg(f"Cell {CELL_ID} creating container for instance {build_guid}")
            stg(f"Cell {CELL_ID} successfully created container for instance {build_guid}")
            self.download_package(build, work / "app", stg)
            code = self.run_builder(app, work, keys, skip_detect, stg)
            if code == 0:
                outcome = self.upload_droplet(app, build, work, stg)
            elif self._ran_out_of_space(build_guid):
                outcome = Outcome("FAILED", self.no_space_error())
            else:
                outcome = Outcome("FAILED", STAGING_ERRORS.get(code, DEFAULT_STAGING_ERROR))
            stg(f"Cell {CELL_ID} stopping instance {build_guid}")
            stg(f"Cell {CELL_ID} destroying container for instance {build_guid}")
            stg(f"Cell {CELL_ID} successfully destroyed container for instance {build_guid}")
        except bp_fetch.BuildpackError as e:
            stg(str(e), "ERR")
            outcome = Outcome("FAILED", f"StagingError - Staging error: {e}")
        except Exception as e:  # the daemon must survive any staging failure and record it
            stg(f"Staging failed: {e}", "ERR")
            error = self.no_space_error() if blobs.is_no_space(e) else f"StagingError - Staging error: {e}"
            outcome = Outcome("FAILED", error)
        finally:
            # the work dir goes first: on a full disk, that frees the room to record the outcome
            shutil.rmtree(work, ignore_errors=True)
            # the build ends after its last line, so a follower that sees the end has seen every line
            try:
                store.update(Build, build_guid, state=outcome.state, error=outcome.error,
                             droplet_guid=outcome.droplet_guid)
            except sqlite3.Error as e:
                print(f"localcf: could not record the outcome of build {build_guid}: {e}", file=sys.stderr,
                      flush=True)
            self._local.pop(build_guid, None)
            self._finish(build_guid)

    def _ran_out_of_space(self, build_guid: str) -> bool:
        """Whether the builder's output says it hit a full disk (its exit code alone does not)."""
        with self._cond:
            lines = list(self._logs.get(build_guid, []))
        return any(mark in line for _stream, line in lines for mark in NO_SPACE_MARKS)

    def no_space_error(self) -> str:
        """The build's error when staging ran out of disk space: it names the cause and the cure."""
        free = blobs.human_size(blobs.free_space(self.state.root))
        return (f"StagingError - Staging error: no space left on device: the disk of the state dir "
                f"{self.state.root} has {free} free; free some space (delete apps you no longer need) "
                f"and stage again")

    def download_buildpacks(self, build: Build, dest: Path, stg: Stg) -> tuple[list[str], bool]:
        """Buildpacks named by the build (explicit: no detection), else every enabled admin one."""
        dest.mkdir(parents=True)
        refs = list(build.buildpacks)
        skip_detect = bool(refs)
        if not refs:
            refs = [b.name for b in self.c.buildpacks() if b.enabled and b.state == "READY"]
        keys: list[str] = []
        local: set[str] = set()
        for ref in refs:
            admin = self.c.buildpack_by_name(ref)
            # The key names the buildpack to the builder, in its messages and in the droplet:
            # a local directory or zip goes by its folder's name, never by a path of this machine.
            key = ref
            if admin is None and bp_fetch.is_local_path(ref):
                key = _unique(bp_fetch.local_name(ref), keys)
                local.add(key)
            keys.append(key)
            target = dest / hashlib.md5(key.encode()).hexdigest()
            stg(f"Downloading {key}...")
            if admin:
                self._extract_cached(self.state.buildpacks / f"{admin.guid}.zip", admin.checksum or "", target)
            else:
                tmp = dest / (target.name + ".fetch")
                bp_fetch.fetch(ref, tmp).rename(target)
                shutil.rmtree(tmp, ignore_errors=True)
            stg(f"Downloaded {key}")
        self._local[build.guid] = local
        return keys, skip_detect

    def _extract_cached(self, zip_path: Path, checksum: str, target: Path) -> None:
        """Admin buildpacks are unpacked once per checksum and linked into each staging."""
        cache = self.state.root / "buildpack-cache" / (checksum or hashlib.sha256(zip_path.read_bytes()).hexdigest())
        if not cache.exists():
            tmp = cache.with_name(cache.name + f".{os.getpid()}.{threading.get_ident()}")
            got = bp_fetch.fetch(str(zip_path), tmp)
            if got != tmp:  # the zip held one top folder: keep just the buildpack root
                inner = tmp.with_name(tmp.name + ".inner")
                got.rename(inner)
                shutil.rmtree(tmp)
                inner.rename(tmp)
            try:
                tmp.rename(cache)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)  # another staging won the race
        target.symlink_to(cache, target_is_directory=True)

    def download_package(self, build: Build, app_dir: Path, stg: Stg) -> None:
        pkg = self.c.store.get(Package, build.package_guid)
        path = self.c.package_path(pkg)
        stg("Downloading app package...")
        app_dir.mkdir(parents=True)
        bp_fetch.extract_app_package(path, app_dir)
        stg(f"Downloaded app package ({human_size(path.stat().st_size)})")

    def staging_env(self, app: App) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALCF_")}
        env.update(app.env)
        env.update({
            "CF_STACK": app.stack or STACK,
            "LANG": "en_US.UTF-8",
            "MEMORY_LIMIT": "1024m",
            "VCAP_SERVICES": "{}",
            "VCAP_APPLICATION": json.dumps({"application_id": app.guid, "application_name": app.name,
                                            "name": app.name, "space_name": "dev",
                                            "organization_name": "localcf"}),
            "LOCALCF_PYTHON": sys.executable,
            "PYTHONUNBUFFERED": "1",
        })
        src = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return env

    def run_builder(self, app: App, work: Path, keys: list[str], skip_detect: bool, stg: Stg) -> int:
        cache = self.state.caches / app.guid
        cache.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "localcf.builder",
                "--build-dir", str(work / "app"),
                "--buildpacks-dir", str(work / "buildpacks"),
                "--buildpack-order", ",".join(keys),
                "--build-artifacts-cache-dir", str(cache),
                "--output-droplet", str(work / "droplet.tgz"),
                "--output-metadata", str(work / "result.json"),
                "--work-dir", str(work / "contents")]
        if skip_detect:
            argv.append("--skip-detect")
        binds = {work: "/home/vcap/staging", cache: "/home/vcap/cache"}
        code = self.runner(argv, self.staging_env(app), binds, "host", lambda s, line: stg(line, s))
        stg(f"Exit status {code}")
        return code

    def upload_droplet(self, app: App, build: Build, work: Path, stg: Stg) -> Outcome:
        """Store the droplet; returns the build's outcome (its state, error and droplet)."""
        store = self.c.store
        # JSON boundary: the builder's result.json (its fields are listed in docs/internals.md)
        result: JsonObject = json.loads((work / "result.json").read_text())
        stg("Uploading droplet, build artifacts cache...")
        stg("Uploading droplet...")
        stg("Uploading build artifacts cache...")
        stg(f"Uploaded build artifacts cache ({human_size(dir_size(self.state.caches / app.guid))})")
        data = (work / "droplet.tgz").read_bytes()
        meta = result.get("lifecycle_metadata") or {}
        droplet_guid = new_guid()
        # the blob first: a droplet record never points at a missing or half-written file
        blobs.write_atomically(self.c.droplet_blob(app.guid, droplet_guid), data)
        droplet = store.insert(Droplet(
            guid=droplet_guid, app_guid=app.guid, package_guid=build.package_guid, build_guid=build.guid,
            state="STAGED", error=None,
            process_types={str(k): str(v) for k, v in (result.get("process_types") or {}).items()},
            execution_metadata=result.get("execution_metadata", ""),
            detected_buildpack=result.get("detected_buildpack"),
            sidecars=[DropletSidecar(name=sc["name"], command=sc["command"],
                                     process_types=list(sc.get("process_types") or ["web"]),
                                     memory=sc.get("memory"))
                      for sc in result.get("sidecars") or []],
            buildpacks=[self._droplet_buildpack(b, work / "buildpacks", self._local.get(build.guid, set()))
                        for b in meta.get("buildpacks") or []],
            stack=build.stack or STACK,
            checksum=hashlib.sha256(data).hexdigest(), size=len(data),
        ))
        stg(f"Uploaded droplet ({human_size(len(data))})")
        stg("Uploading complete")
        conflict = self.c.sidecar_conflicts(app.guid, droplet.sidecars)
        if conflict:
            store.update(Droplet, droplet.guid, state="FAILED", error=conflict)
            stg(conflict, "ERR")
            return Outcome("FAILED", f"StagingError - Staging error: {conflict}")
        self.c.audit("audit.app.droplet.create", app, {"droplet_guid": droplet.guid})
        return Outcome("STAGED", None, droplet.guid)

    def _droplet_buildpack(self, entry: JsonObject, fetched: Path, local: set[str]) -> DropletBuildpack:
        """One of the droplet's `buildpacks`, from the builder's result: `name` is the buildpack's
        key (the admin buildpack's name or the URL, as on Cloud Foundry; a local directory's
        name); `buildpack_name` and `version` come from the config.yml the buildpack wrote. A
        local buildpack (localcf's own kind) without a config.yml version goes by the version
        it declares (VERSION, manifest.yml), so `cf app` shows one."""
        key = str(entry.get("key") or "")
        version = entry.get("version") or None
        if not version and key in local:
            try:
                root = bp_fetch.buildpack_root(fetched / hashlib.md5(key.encode()).hexdigest())
                version = bp_fetch.declared_version(root) or None
            except (OSError, bp_fetch.BuildpackError):
                version = None
        return DropletBuildpack(name=key, detect_output=entry.get("name"),
                                buildpack_name=entry.get("name"), version=version)


def _unique(name: str, taken: list[str]) -> str:
    """`name`, or `name-2`, `name-3`, ... when a buildpack of this build already has it."""
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    return candidate
