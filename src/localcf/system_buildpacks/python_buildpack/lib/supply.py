"""python_buildpack's supply, run by the interpreter it gives the app (see bin/supply).

supply.py PYTHON BUILD_DIR CACHE_DIR DEPS_DIR DEPS_IDX

- deps/IDX is a virtual environment of PYTHON's base interpreter, as the real buildpack puts
  CPython in deps/IDX: `pyvenv.cfg`, bin/python, python3 and pythonX.Y linked to the base
  interpreter, and a .pth that adds PYTHON's own site directories (its packages). So an app
  started as `python app.py` runs as `python app.py` (`ps` shows no path of this machine) with
  PYTHON's packages, and `sys.executable` is deps/IDX/bin/python;
- requirements.txt: when PYTHON's environment already satisfies every line, nothing is installed
  and pip never runs (so no network); otherwise `pip install --target deps/IDX/site-packages`,
  put on PYTHONPATH at launch by deps/IDX/profile.d/python.sh;
- deps/IDX/config.yml names the buildpack.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import site
import subprocess
import sys
from pathlib import Path

NAME = "python"


def step(message: str) -> None:
    print(f"-----> {message}", flush=True)


def note(message: str) -> None:
    print(f"       {message}", flush=True)


def write_environment(dep_dir: Path) -> None:
    """Make dep_dir a virtual environment of this interpreter's base, seeing its packages.

    Python finds `pyvenv.cfg` beside its bin/ from the path it is started by, so the links
    must be links to the base interpreter (not to a virtualenv's python, which would find that
    virtualenv's pyvenv.cfg only when started by its own path).
    """
    base = Path(os.path.realpath(getattr(sys, "_base_executable", "") or sys.executable))
    if not base.is_file():
        raise SystemExit(f"python_buildpack: the base interpreter {base} of {sys.executable} is not a file")
    version = "%d.%d" % sys.version_info[:2]
    bin_dir = dep_dir / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in ("python", "python3", f"python{version}"):
        link = bin_dir / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(base)
    (dep_dir / "pyvenv.cfg").write_text(
        f"home = {base.parent}\ninclude-system-site-packages = false\n"
        f"version = {platform.python_version()}\n")
    site_dir = dep_dir / "lib" / f"python{version}" / "site-packages"
    site_dir.mkdir(parents=True, exist_ok=True)
    # This interpreter's site directories, with their own .pth files (editable installs).
    dirs = [d for d in site.getsitepackages() if os.path.isdir(d)]
    adds = "".join(f"; site.addsitedir({d!r})" for d in dirs)
    (site_dir / "localcf-interpreter.pth").write_text(f"import site{adds}\n")


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
    write_environment(dep_dir)
    step(f"Using Python {platform.python_version()}, the interpreter localcf runs on")
    check_runtime_txt(build_dir)
    installed = install_requirements(python, build_dir, cache_dir, dep_dir)
    write_profile_script(dep_dir, deps_idx, installed)
    (dep_dir / "config.yml").write_text(f"name: {NAME}\nconfig: {{}}\nversion: {version}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
