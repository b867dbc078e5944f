"""The v2 buildpack lifecycle, as Cloud Foundry's `builder` runs it, as a program of its own.

    python -m localcf.builder --build-dir DIR --buildpacks-dir DIR --buildpack-order K1,K2
        [--skip-detect] --build-artifacts-cache-dir DIR --output-droplet FILE
        --output-metadata FILE --work-dir DIR

`Builder.run` reads in the order staging happens: make directories, detect (or run the supply
buildpacks when they were given explicitly), finalize or compile, collect the process types
(launch.yml, release, Procfile), write staging_info.yml and result.json, save the droplet.
Buildpack output goes straight to this program's stdout/stderr (the staging log); a failure ends
with one line on stderr, CF's builder message (`<message>: <cause>`), and its exit code:

    222  None of the buildpacks detected a compatible application
    223  Failed to compile droplet (compile, finalize, or the final buildpack's supply failed)
    224  Failed to build droplet release (bin/release failed or printed invalid YAML)
    225  Failed to run all supply scripts / Error: one of the buildpacks chosen to supply ...
    1    anything else: bad arguments, an invalid Procfile or launch.yml, a missing build dir
    128+N  cancelled by signal N (SIGTERM, SIGINT, SIGHUP): the running script is killed too

A buildpack without bin/ (`malformed buildpack does not contain a /bin dir: <key>`) is treated
as CF's builder treats it: skipped while detecting, and exit 225 when buildpacks were given
explicitly (the message line, then `Failed to run all supply scripts: ...`).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# The builder is a program of its own (a staging task sees this file alone): its JSON and YAML
# documents (config.yml, launch.yml, staging_info.yml) are spelled `dict[str, Any]` here.
STACK = "cflinuxfs4"

# Cloud Foundry's texts: an interface, reproduced character for character.
DETECT_FAIL_MSG = "None of the buildpacks detected a compatible application"
COMPILE_FAIL_MSG = "Failed to compile droplet"
RELEASE_FAIL_MSG = "Failed to build droplet release"
SUPPLY_FAIL_MSG = "Failed to run all supply scripts"
NO_SUPPLY_SCRIPT_FAIL_MSG = (
    "Error: one of the buildpacks chosen to supply dependencies does not support multi-buildpack apps"
)
MISSING_FINALIZE_WARN_MSG = (
    "Warning: the last buildpack is not compatible with multi-buildpack apps and cannot make use"
    " of any dependencies supplied by the buildpacks specified before it"
)
FINALIZE_FAIL_MSG = "Failed to run finalize script"
RELEASE_INVALID_MSG = "buildpack's release output invalid"
PROCFILE_FAIL_MSG = "Failed to read command from Procfile"
MALFORMED_BUILDPACK_MSG = "malformed buildpack does not contain a /bin dir: {key}"
DETECT_NOT_EXECUTABLE_WARN = "WARNING: buildpack script '/bin/detect' is not executable"
NO_START_COMMAND_WARN = (
    "No start command specified by buildpack or via Procfile.",
    "App will not start unless a command is provided at runtime.",
)

SYSTEM_FAIL_CODE = 1
DETECT_FAIL_CODE = 222
COMPILE_FAIL_CODE = 223
RELEASE_FAIL_CODE = 224
SUPPLY_FAIL_CODE = 225


class StagingError(Exception):
    """A staging failure: the builder message, its exit code, and what caused it."""

    def __init__(self, message: str, exit_code: int, cause: str | None = None):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.cause = cause

    def __str__(self) -> str:
        # Same shape as the Go builder's descriptive errors: "<message>: <cause>".
        return f"{self.message}: {self.cause}" if self.cause else self.message


class _ScriptFailed(Exception):
    """A buildpack script could not start, exited non-zero or was killed by a signal."""


class _Cancelled(Exception):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def buildpack_dir_name(key: str) -> str:
    """The sub-directory of --buildpacks-dir (and of the cache) that belongs to a buildpack key."""
    return hashlib.md5(key.encode()).hexdigest()


@dataclass
class BuilderConfig:
    """The builder's arguments (see docs/internals.md, "The builder seam")."""

    build_dir: Path
    buildpacks_dir: Path
    buildpack_order: list[str]
    build_artifacts_cache_dir: Path
    output_droplet: Path
    output_metadata: Path
    work_dir: Path
    skip_detect: bool = False

    @property
    def supply_buildpacks(self) -> list[str]:
        """Every buildpack but the last, when they were given explicitly; none when detecting."""
        return self.buildpack_order[:-1] if self.skip_detect else []

    def deps_index(self, i: int) -> str:
        """DEPS_IDX: the position, zero-padded to the width of the buildpack count."""
        width = len(str(len(self.supply_buildpacks) + 1))
        return f"{i:0{width}d}"

    def supply_cache_dir(self, key: str) -> Path:
        return self.build_artifacts_cache_dir / buildpack_dir_name(key)

    @property
    def final_cache_dir(self) -> Path:
        return self.build_artifacts_cache_dir / "final"

    @property
    def deps_dir(self) -> Path:
        return self.work_dir / "deps"

    @property
    def profile_dir(self) -> Path:
        return self.work_dir / "profile.d"


@dataclass
class Buildpack:
    """A buildpack taking part in this staging: its key, the dir holding bin/, its position."""

    key: str
    path: Path
    index: int
    detect_output: str = ""

    def script(self, name: str) -> Path:
        """bin/<name> of this buildpack."""
        return self.path / "bin" / name

    def has(self, name: str) -> bool:
        """Whether this buildpack has bin/<name>."""
        return self.script(name).is_file()


@dataclass
class LaunchProcess:
    """One entry of launch.yml (or of release / Procfile): a process type or a sidecar."""

    type: str
    command: str
    sidecar_for: list[str] = field(default_factory=list)
    memory: int | None = None


@dataclass
class BuildpackMetadata:
    """A buildpack as result.json lists it: its key, and name/version from its config.yml."""

    key: str
    name: str = ""
    version: str = ""


@dataclass
class StagingResult:
    """What result.json holds."""

    process_types: dict[str, str]
    sidecars: list[dict[str, Any]]
    buildpacks: list[BuildpackMetadata]

    @property
    def detected_buildpack(self) -> str:
        return self.buildpacks[-1].name if self.buildpacks else ""

    @property
    def buildpack_key(self) -> str:
        return self.buildpacks[-1].key if self.buildpacks else ""

    @property
    def start_command(self) -> str:
        return self.process_types.get("web", "")

    def to_json(self) -> dict[str, Any]:
        """The result.json document."""
        return {
            "detected_buildpack": self.detected_buildpack,
            "process_types": self.process_types,
            "sidecars": self.sidecars,
            "lifecycle_type": "buildpack",
            "lifecycle_metadata": {
                "buildpack_key": self.buildpack_key,
                "detected_buildpack": self.detected_buildpack,
                "buildpacks": [
                    {"key": b.key, "name": b.name, "version": b.version} for b in self.buildpacks
                ],
            },
            "execution_metadata": "",
        }


class Builder:
    """Runs the lifecycle once. `run()` is the whole of staging, phase by phase."""

    def __init__(self, config: BuilderConfig, env: Mapping[str, str] | None = None):
        self.config = config
        self.env = staging_environment(env)
        self._running: subprocess.Popen[bytes] | None = None
        # A cancelling signal that came while a script was being started (see run_script).
        self._starting = False
        self._pending: int | None = None

    def run(self) -> StagingResult:
        """Stage the app: returns the result, or raises StagingError."""
        self.make_directories()
        if self.config.skip_detect:
            final = self.run_supply_buildpacks()
        else:
            final = self.detect()
        self.run_final_buildpack(final)
        processes = self.collect_processes(final)
        result = self.write_results(final, processes)
        self.save_droplet()
        return result

    # -- phases, in order -------------------------------------------------------------------

    def make_directories(self) -> None:
        """Outputs, caches, deps/IDX for each buildpack, profile.d/, tmp/, logs/."""
        c = self.config
        if not c.build_dir.is_dir():
            raise StagingError(f"build dir {c.build_dir} does not exist", SYSTEM_FAIL_CODE)
        for d in (c.output_droplet.parent, c.output_metadata.parent, c.final_cache_dir,
                  c.profile_dir, c.work_dir / "tmp", c.work_dir / "logs"):
            d.mkdir(parents=True, exist_ok=True)
        for key in c.supply_buildpacks:
            c.supply_cache_dir(key).mkdir(parents=True, exist_ok=True)
        # Every buildpack gets its deps/IDX before its supply runs, as on CF.
        for i in range(len(c.supply_buildpacks) + 1):
            (c.deps_dir / c.deps_index(i)).mkdir(parents=True, exist_ok=True)

    def detect(self) -> Buildpack:
        """Run bin/detect of each buildpack in order; the first to exit 0 stages the app alone."""
        for key in self.config.buildpack_order:
            try:
                path = self.buildpack_path(key)
            except StagingError as e:
                _say_err(str(e))
                continue
            detect = path / "bin" / "detect"
            if not detect.is_file():
                _say_err(f"buildpack '{key}' has no bin/detect, skipping it")
                continue
            if not os.access(detect, os.X_OK):
                _say(DETECT_NOT_EXECUTABLE_WARN)
                continue
            bp = Buildpack(key, path, 0)
            try:
                output = self.run_script(bp, "detect", [str(self.config.build_dir)], capture=True)
            except _ScriptFailed:
                continue
            bp.detect_output = output.strip()
            return bp
        raise StagingError(DETECT_FAIL_MSG, DETECT_FAIL_CODE)

    def run_supply_buildpacks(self) -> Buildpack:
        """Buildpacks given explicitly: every one but the last runs bin/supply, in order."""
        c = self.config
        if not c.buildpack_order:
            raise StagingError("no buildpacks to stage with: --buildpack-order is empty",
                               SYSTEM_FAIL_CODE)
        supply = [self._resolve_for_supply(key, i) for i, key in enumerate(c.supply_buildpacks)]
        if any(not bp.has("supply") for bp in supply):
            raise StagingError(NO_SUPPLY_SCRIPT_FAIL_MSG, SUPPLY_FAIL_CODE)
        for bp in supply:
            args = [str(c.build_dir), str(c.supply_cache_dir(bp.key)), str(c.deps_dir),
                    c.deps_index(bp.index)]
            try:
                self.run_script(bp, "supply", args)
            except _ScriptFailed as e:
                raise StagingError(SUPPLY_FAIL_MSG, SUPPLY_FAIL_CODE, str(e)) from None
        return self._resolve_for_supply(c.buildpack_order[-1], len(supply))

    def run_final_buildpack(self, bp: Buildpack) -> None:
        """The last buildpack: supply (if any) then finalize; without finalize, legacy compile."""
        c = self.config
        idx = c.deps_index(bp.index)
        cache = str(c.final_cache_dir)
        if bp.has("finalize"):
            if bp.has("supply"):
                try:
                    self.run_script(bp, "supply", [str(c.build_dir), cache, str(c.deps_dir), idx])
                except _ScriptFailed as e:
                    raise StagingError(COMPILE_FAIL_MSG, COMPILE_FAIL_CODE,
                                       f"{SUPPLY_FAIL_MSG}: {e}") from None
            try:
                self.run_script(bp, "finalize", [str(c.build_dir), cache, str(c.deps_dir), idx,
                                                 str(c.profile_dir)])
            except _ScriptFailed as e:
                raise StagingError(COMPILE_FAIL_MSG, COMPILE_FAIL_CODE,
                                   f"{FINALIZE_FAIL_MSG}: {e}") from None
            return
        if c.supply_buildpacks:
            _say_err(MISSING_FINALIZE_WARN_MSG)
        # A compile buildpack knows nothing of deps/: CF drops its empty deps dir.
        shutil.rmtree(c.deps_dir / idx, ignore_errors=True)
        try:
            self.run_script(bp, "compile", [str(c.build_dir), cache])
        except _ScriptFailed as e:
            raise StagingError(COMPILE_FAIL_MSG, COMPILE_FAIL_CODE, str(e)) from None

    def collect_processes(self, final: Buildpack) -> list[LaunchProcess]:
        """Supply launch.yml files in index order, then the final launch.yml or bin/release,
        then the app's Procfile; a later entry replaces an earlier one of the same type."""
        c = self.config
        processes: list[LaunchProcess] = []
        for i in range(len(c.supply_buildpacks)):
            launch = c.deps_dir / c.deps_index(i) / "launch.yml"
            if launch.is_file():
                _merge(processes, read_launch_yml(launch, c.supply_buildpacks[i]))
        final_launch = c.deps_dir / c.deps_index(final.index) / "launch.yml"
        if final_launch.is_file():
            _merge(processes, read_launch_yml(final_launch, final.key))
        else:
            _merge(processes, [LaunchProcess(t, cmd) for t, cmd in self.release(final).items()])
        _merge(processes, [LaunchProcess(t, cmd) for t, cmd in self.read_procfile().items()])
        return processes

    def release(self, bp: Buildpack) -> dict[str, str]:
        """bin/release BUILD_DIR: YAML on stdout, of which only default_process_types counts."""
        try:
            output = self.run_script(bp, "release", [str(self.config.build_dir)], capture=True)
        except _ScriptFailed as e:
            raise StagingError(RELEASE_FAIL_MSG, RELEASE_FAIL_CODE, str(e)) from None
        try:
            return parse_release(output)
        except ValueError as e:
            raise StagingError(RELEASE_FAIL_MSG, RELEASE_FAIL_CODE,
                               f"{RELEASE_INVALID_MSG}: {e}") from None

    def read_procfile(self) -> dict[str, str]:
        """The app's Procfile (a YAML map of process type to command), read after compiling."""
        path = self.config.build_dir / "Procfile"
        if not path.is_file():
            return {}
        try:
            data = yaml.safe_load(path.read_text(errors="replace"))
        except yaml.YAMLError:
            data = False
        if data is None:
            return {}
        if not isinstance(data, dict) or not all(_is_scalar(v) for v in data.values()):
            raise StagingError(PROCFILE_FAIL_MSG, SYSTEM_FAIL_CODE, "invalid YAML")
        return {str(k): _scalar_text(v) for k, v in data.items()}

    def write_results(self, final: Buildpack, processes: list[LaunchProcess]) -> StagingResult:
        """result.json for the daemon, staging_info.yml in the droplet."""
        c = self.config
        process_types: dict[str, str] = {}
        sidecars: list[dict[str, Any]] = []
        for p in processes:
            if p.sidecar_for:
                sidecars.append({"name": p.type, "command": p.command,
                                 "process_types": p.sidecar_for, "memory": p.memory})
            else:
                process_types[p.type] = p.command
        if not process_types.get("web"):
            for line in NO_START_COMMAND_WARN:
                _say_err(line)
        if c.skip_detect:
            buildpacks = [self._metadata(key, i) for i, key in enumerate(c.buildpack_order)]
        else:
            buildpacks = [self._metadata(final.key, final.index)]
            buildpacks[0].name = buildpacks[0].name or final.detect_output
        result = StagingResult(process_types, sidecars, buildpacks)
        staging_info = {"detected_buildpack": result.detected_buildpack,
                        "start_command": result.start_command}
        (c.work_dir / "staging_info.yml").write_text(
            json.dumps(staging_info, separators=(",", ":")) + "\n")
        c.output_metadata.write_text(json.dumps(result.to_json(), indent=2) + "\n")
        return result

    def save_droplet(self) -> None:
        """A tar.gz of app/, deps/, profile.d/, tmp/, logs/ and staging_info.yml, unpacked at
        /home/vcap; modes and symlinks kept. Written beside the target, then renamed."""
        c = self.config
        members = [("./app", c.build_dir)]
        for name in ("deps", "profile.d", "tmp", "logs", "staging_info.yml"):
            if (c.work_dir / name).exists():
                members.append((f"./{name}", c.work_dir / name))
        fd, tmp = tempfile.mkstemp(prefix=".droplet-", suffix=".tgz", dir=c.output_droplet.parent)
        try:
            # Level 1: droplets stay on this machine, and compressing is most of saving's time.
            with os.fdopen(fd, "wb") as raw, \
                    tarfile.open(fileobj=raw, mode="w:gz", compresslevel=1) as tar:
                for arcname, path in members:
                    tar.add(path, arcname=arcname, recursive=True)
            os.replace(tmp, c.output_droplet)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # -- helpers ----------------------------------------------------------------------------

    def buildpack_path(self, key: str) -> Path:
        """The directory holding bin/: the buildpack's own dir, or its single nested dir."""
        base = self.config.buildpacks_dir / buildpack_dir_name(key)
        if (base / "bin").exists():
            return base
        try:
            entries = list(base.iterdir())
        except OSError:
            raise StagingError(f"Failed to read buildpack directory '{base}' for buildpack "
                               f"'{key}'", SYSTEM_FAIL_CODE) from None
        if len(entries) == 1 and (entries[0] / "bin").exists():
            return entries[0]
        raise StagingError(MALFORMED_BUILDPACK_MSG.format(key=key), SYSTEM_FAIL_CODE)

    def _resolve_for_supply(self, key: str, index: int) -> Buildpack:
        try:
            return Buildpack(key, self.buildpack_path(key), index)
        except StagingError as e:
            _say_err(str(e))
            raise StagingError(SUPPLY_FAIL_MSG, SUPPLY_FAIL_CODE, str(e)) from None

    def _metadata(self, key: str, index: int) -> BuildpackMetadata:
        meta = BuildpackMetadata(key)
        config_yml = self.config.deps_dir / self.config.deps_index(index) / "config.yml"
        try:
            data = yaml.safe_load(config_yml.read_text())
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            return meta  # config.yml is optional, and CF ignores a broken one
        if isinstance(data, dict):
            meta.name = _scalar_text(data.get("name") or "")
            meta.version = _scalar_text(data.get("version") or "")
        return meta

    def run_script(self, bp: Buildpack, name: str, args: list[str], *,
                   capture: bool = False) -> str:
        """Run bin/<name> of a buildpack with its output on ours (stdout captured if asked)."""
        script = bp.script(name)
        label = f"bin/{name} of buildpack '{bp.key}'"
        sys.stdout.flush()
        sys.stderr.flush()
        # A signal handled while the script is being started (inside Popen, or before `_running` is
        # set) is held until the script is known, then stops it: cancelling earlier would leave
        # the script just started running on its own.
        self._starting = True
        try:
            proc = self._start_script(script, args, capture, label)
            self._running = proc
        finally:
            self._starting = False
            pending, self._pending = self._pending, None
            if pending is not None:
                self.cancel(pending)  # stops the script's group if it started; raises _Cancelled
        try:
            out, _ = proc.communicate()
        finally:
            self._running = None
            _kill_group(proc.pid)
        if proc.returncode < 0:
            raise _ScriptFailed(f"{label} was killed by signal "
                                f"{signal.Signals(-proc.returncode).name}")
        if proc.returncode != 0:
            raise _ScriptFailed(f"{label} exited with status {proc.returncode}")
        return out.decode(errors="replace") if out else ""

    def _start_script(self, script: Path, args: list[str], capture: bool, label: str) -> subprocess.Popen[bytes]:
        try:
            # Own process group: whatever the script leaves running can be stopped with it.
            return subprocess.Popen([str(script), *args], env=self.env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE if capture else None, process_group=0)
        except PermissionError:
            raise _ScriptFailed(f"{label} is not executable (chmod +x {script})") from None
        except FileNotFoundError:
            if not script.exists():
                raise _ScriptFailed(f"{label} does not exist") from None
            raise _ScriptFailed(f"{label} could not start: the interpreter on its #! line "
                                "was not found") from None
        except OSError as e:
            raise _ScriptFailed(f"{label} could not start: {e.strerror}") from None

    def cancel(self, signum: int) -> None:
        """Stop the running script (and its group), then abandon staging. While a script is being
        started, the signal is held until it is (see run_script)."""
        if self._starting:
            self._pending = signum
            return
        proc = self._running
        if proc is not None:
            _kill_group(proc.pid)
        raise _Cancelled(signum)


def staging_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The scripts' environment: ours (or `env`), plus what CF sets for staging."""
    result = dict(os.environ if env is None else env)
    result.setdefault("CF_STACK", STACK)
    # The interpreter python_buildpack gives the app: the one running the builder (and the kit).
    result.setdefault("LOCALCF_PYTHON", sys.executable)
    return result


def read_launch_yml(path: Path, key: str) -> list[LaunchProcess]:
    """Parse deps/IDX/launch.yml: `processes: [{type, command, limits, platforms}]`."""
    where = f"{path} (written by buildpack '{key}')"
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise StagingError(f"Failed to read launch.yml {where}", SYSTEM_FAIL_CODE,
                           _yaml_problem(e) if isinstance(e, yaml.YAMLError) else str(e)) from None
    if data is None:
        return []
    entries = data.get("processes") if isinstance(data, dict) else None
    if entries is None:
        entries = [] if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise StagingError(f"Failed to read launch.yml {where}", SYSTEM_FAIL_CODE,
                           "expected a map with a list under `processes:`")
    processes = []
    for n, entry in enumerate(entries):
        try:
            processes.append(_launch_process(entry))
        except ValueError as e:
            raise StagingError(f"Failed to read launch.yml {where}", SYSTEM_FAIL_CODE,
                               f"processes[{n}]: {e}") from None
    return processes


def _launch_process(entry: Any) -> LaunchProcess:
    if not isinstance(entry, dict):
        raise ValueError("expected a map with `type` and `command`")
    ptype, command = entry.get("type"), entry.get("command")
    if not isinstance(ptype, str) or not ptype:
        raise ValueError("`type` must be a non-empty string")
    if command is not None and not _is_scalar(command):
        raise ValueError("`command` must be a string")
    platforms = entry.get("platforms")
    cf = platforms.get("cloudfoundry") if isinstance(platforms, dict) else None
    sidecar_for = cf.get("sidecar_for") if isinstance(cf, dict) else None
    if isinstance(sidecar_for, str):
        sidecar_for = [sidecar_for]
    if sidecar_for is not None and not (
            isinstance(sidecar_for, list) and all(isinstance(s, str) for s in sidecar_for)):
        raise ValueError("`platforms.cloudfoundry.sidecar_for` must be a list of process types")
    limits = entry.get("limits") or {}
    memory = _memory_mb(limits.get("memory") if isinstance(limits, dict) else None)
    return LaunchProcess(ptype, _scalar_text(command or ""), list(sidecar_for or []), memory)


def _memory_mb(value: Any) -> int | None:
    """limits.memory in MB: an int, or a string such as `32`, `32M`, `32MB`, `1G`."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"`limits.memory` must be a number of MB, got {value!r}")
    if isinstance(value, int):
        mb = value
    else:
        text = str(value).strip().upper().removesuffix("B")
        factor = 1024 if text.endswith("G") else 1
        digits = text.rstrip("MG")
        if not digits.isdigit():
            raise ValueError(f"`limits.memory` must be a number of MB, got {value!r}")
        mb = int(digits) * factor
    if mb <= 0:
        raise ValueError(f"`limits.memory` must be positive, got {value!r}")
    return mb


def parse_release(output: str) -> dict[str, str]:
    """default_process_types from bin/release's YAML; ValueError says what is wrong with it."""
    try:
        data = yaml.safe_load(output)
    except yaml.YAMLError as e:
        raise ValueError(_yaml_problem(e)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"expected a YAML map with default_process_types, got "
                         f"{type(data).__name__} {output.strip()[:80]!r}")
    types = data.get("default_process_types")
    if types is None:
        return {}
    if not isinstance(types, dict) or not all(_is_scalar(v) for v in types.values()):
        raise ValueError("default_process_types must map process types to commands")
    return {str(k): _scalar_text(v) for k, v in types.items()}


def _yaml_problem(e: yaml.YAMLError) -> str:
    """One line: where and what, instead of PyYAML's multi-line report."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def _merge(processes: list[LaunchProcess], more: list[LaunchProcess]) -> None:
    for p in more:
        for i, old in enumerate(processes):
            if old.type == p.type:
                processes[i] = p
                break
        else:
            processes.append(p)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _scalar_text(value: Any) -> str:
    return "" if value is None else str(value)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _say(line: str) -> None:
    print(line, flush=True)


def _say_err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def build(config: BuilderConfig, env: Mapping[str, str] | None = None) -> StagingResult:
    """Run the whole lifecycle once; raises StagingError (with .exit_code) on failure."""
    return Builder(config, env).run()


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # The Go builder exits 1 on bad flags; 2 is not one of its codes.
        self.print_usage(sys.stderr)
        self.exit(SYSTEM_FAIL_CODE, f"{self.prog}: error: {message}\n")


def parse_args(argv: list[str] | None = None) -> BuilderConfig:
    """The command line of docs/internals.md, as a BuilderConfig."""
    p = _ArgumentParser(prog="python -m localcf.builder",
                        description="Stage an app with v2 buildpacks, as Cloud Foundry's builder.")
    p.add_argument("--build-dir", required=True, type=Path,
                   help="the app (a copy of the package), staged in place; app/ in the droplet")
    p.add_argument("--buildpacks-dir", required=True, type=Path,
                   help="one sub-directory per buildpack, named by the md5 of its key")
    p.add_argument("--buildpack-order", required=True,
                   help="buildpack keys, comma separated, in order")
    p.add_argument("--skip-detect", action="store_true",
                   help="the buildpacks were given explicitly: run them all, no detection")
    p.add_argument("--build-artifacts-cache-dir", required=True, type=Path,
                   help="caches kept between stagings of this app")
    p.add_argument("--output-droplet", required=True, type=Path, help="the droplet .tgz to write")
    p.add_argument("--output-metadata", required=True, type=Path, help="the result.json to write")
    p.add_argument("--work-dir", required=True, type=Path,
                   help="scratch dir for deps/, profile.d/, tmp/, logs/")
    a = p.parse_args(argv)
    order = [k for k in a.buildpack_order.split(",") if k]
    return BuilderConfig(
        build_dir=a.build_dir.absolute(), buildpacks_dir=a.buildpacks_dir.absolute(),
        buildpack_order=order, skip_detect=a.skip_detect,
        build_artifacts_cache_dir=a.build_artifacts_cache_dir.absolute(),
        output_droplet=a.output_droplet.absolute(), output_metadata=a.output_metadata.absolute(),
        work_dir=a.work_dir.absolute())


def main(argv: list[str] | None = None) -> int:
    """The `builder` program: stage, print the failure message if any, return the exit code."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True)
    config = parse_args(argv)
    builder = Builder(config)

    def on_signal(signum: int, _frame: Any) -> None:
        builder.cancel(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        builder.run()
    except StagingError as e:
        _say_err(str(e))
        return e.exit_code
    except _Cancelled as e:
        _say_err(f"Staging cancelled ({e})")
        return 128 + e.signum
    return 0


if __name__ == "__main__":
    sys.exit(main())
