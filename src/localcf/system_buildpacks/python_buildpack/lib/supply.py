"""python_buildpack's supply, run by the interpreter it gives the app (see bin/supply).

supply.py PYTHON BUILD_DIR CACHE_DIR DEPS_DIR DEPS_IDX

- deps/IDX/bin/python and python3 run PYTHON (small wrappers, not symlinks: a symlink to a
  virtualenv's python would lose the virtualenv);
- requirements.txt: when PYTHON's environment already satisfies every line, nothing is installed
  and pip never runs (so no network); otherwise `pip install --target deps/IDX/site-packages`,
  put on PYTHONPATH at launch by deps/IDX/profile.d/python.sh;
- deps/IDX/config.yml names the buildpack.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path

NAME = "python"


def step(message: str) -> None:
    print(f"-----> {message}", flush=True)


def note(message: str) -> None:
    print(f"       {message}", flush=True)


def write_wrappers(python: str, bin_dir: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in ("python", "python3"):
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(python)} "$@"\n')
        wrapper.chmod(0o755)


def check_runtime_txt(build_dir: Path) -> None:
    runtime = build_dir / "runtime.txt"
    if not runtime.is_file():
        return
    wanted = runtime.read_text(errors="replace").strip()
    match = re.fullmatch(r"python-(\d+)\.(\d+)(?:\.\S+)?", wanted)
    have = platform.python_version_tuple()[:2]
    if match is None:
        note(f"Warning: runtime.txt says {wanted!r}; expected e.g. 'python-3.11.7'. Ignoring it.")
    elif list(match.groups()) != have:
        note(f"Warning: runtime.txt asks for {wanted}, but localcf's python_buildpack uses the "
             f"Python localcf runs on ({platform.python_version()}).")


def requirement_lines(path: Path) -> list[str]:
    """requirements.txt lines without comments, blank lines and line continuations."""
    text = path.read_text(errors="replace").replace("\\\n", "")
    lines = []
    for raw in text.splitlines():
        line = re.sub(r"(^|\s+)#.*$", "", raw).strip()
        if line:
            lines.append(line)
    return lines


def unmet_requirements(lines: list[str]) -> list[str] | None:
    """The lines this interpreter's environment does not satisfy, or None when only pip can
    tell (options such as -r or --index-url, URLs, local paths, unparsable lines)."""
    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:
        try:
            from pip._vendor.packaging.requirements import InvalidRequirement, Requirement
        except ImportError:
            return None
    unmet = []
    for line in lines:
        if line.startswith("-"):
            return None
        try:
            req = Requirement(line)
            if req.url:
                return None
            if req.marker is not None and not req.marker.evaluate():
                continue
            if not _satisfied(req, Requirement):
                unmet.append(line)
        except InvalidRequirement:
            return None
        except Exception:  # a marker packaging cannot evaluate, say: let pip decide
            return None
    return unmet


def _satisfied(req, requirement_class, depth: int = 0) -> bool:
    try:
        dist = importlib.metadata.distribution(req.name)
    except importlib.metadata.PackageNotFoundError:
        return False
    if not req.specifier.contains(dist.version, prereleases=True):
        return False
    # An extra (pkg[extra]) is met when the dependencies it adds are installed too.
    for extra in sorted(req.extras):
        for spec in dist.requires or []:
            sub = requirement_class(spec)
            if sub.marker is None or not sub.marker.evaluate({"extra": extra}):
                continue
            if depth > 5 or not _satisfied(sub, requirement_class, depth + 1):
                return False
    return True


def install_requirements(python: str, build_dir: Path, cache_dir: Path, dep_dir: Path) -> bool:
    """True when packages were installed into dep_dir/site-packages."""
    req_file = build_dir / "requirements.txt"
    if not req_file.is_file():
        if (build_dir / "Pipfile").is_file():
            note("Warning: Pipfile found but localcf's python_buildpack does not run pipenv; "
                 "list the app's dependencies in requirements.txt instead.")
        return False
    lines = requirement_lines(req_file)
    if not lines:
        step("requirements.txt lists nothing: no packages to install")
        return False
    unmet = unmet_requirements(lines)
    if unmet == []:
        step("Requirements already satisfied by the Python environment: nothing to install")
        for line in lines:
            note(line)
        return False
    step("Installing requirements with pip")
    if unmet:
        note("Not installed yet: " + ", ".join(unmet))
    site = dep_dir / "site-packages"
    cmd = [python, "-E", "-s", "-m", "pip", "install", "--target", str(site),
           "--requirement", str(req_file), "--cache-dir", str(cache_dir / "pip"),
           "--disable-pip-version-check", "--no-input", "--progress-bar", "off"]
    # From the app's dir: relative paths in requirements.txt are the app's.
    result = subprocess.run(cmd, cwd=build_dir, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        print(f"python_buildpack: pip could not install {req_file.name} "
              f"(exit status {result.returncode}); see pip's messages above", file=sys.stderr,
              flush=True)
        raise SystemExit(1)
    return True


def write_profile_script(dep_dir: Path, deps_idx: str, site_packages: bool) -> None:
    profile = dep_dir / "profile.d"
    profile.mkdir(exist_ok=True)
    lines = ["# Written by python_buildpack", "export PYTHONUNBUFFERED=1"]
    if site_packages:
        lines.append(f'export PYTHONPATH="$DEPS_DIR/{deps_idx}/site-packages'
                     '${PYTHONPATH:+:$PYTHONPATH}"')
    (profile / "python.sh").write_text("\n".join(lines) + "\n")


def main(argv: list[str]) -> int:
    if len(argv) != 6:
        print("usage: supply.py PYTHON BUILD_DIR CACHE_DIR DEPS_DIR DEPS_IDX", file=sys.stderr)
        return 2
    python, build_dir, cache_dir, deps_dir, deps_idx = argv[1], *map(Path, argv[2:5]), argv[5]
    version = (Path(__file__).resolve().parent.parent / "VERSION").read_text().strip()
    dep_dir = deps_dir / deps_idx
    step(f"Python Buildpack version {version}")
    write_wrappers(python, dep_dir / "bin")
    step(f"Using Python {platform.python_version()} ({python})")
    check_runtime_txt(build_dir)
    installed = install_requirements(python, build_dir, cache_dir, dep_dir)
    write_profile_script(dep_dir, deps_idx, installed)
    (dep_dir / "config.yml").write_text(f"name: {NAME}\nconfig: {{}}\nversion: {version}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
