"""The sidecar supply buildpack of Parts 2 and 3: write it, check it, name it in an app's manifest,
install it on the target, and look inside the droplet it helped build.

A supply buildpack is a directory with `bin/supply`, run at staging time as
`bin/supply BUILD_DIR CACHE_DIR DEPS_DIR DEPS_IDX`. The notebooks write its scripts in cells the
learner reads and edits; the texts below are the reference versions of those cells (a test keeps
them in step) and what the tests and benchmarks use.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import KitError
from .targets import Target, TargetError
from .targets.cf import ADMIN_BUILDPACK_POSITION

__all__ = [
    "ADMIN_BUILDPACK_POSITION",
    "DOWNLOAD_SUPPLY",
    "NEVER_DETECT",
    "PLACEHOLDER_SUPPLY",
    "SUPPLY_MARKER",
    "BuildpackError",
    "BuildpackFiles",
    "DropletFile",
    "download_droplet",
    "droplet_file",
    "droplet_paths",
    "find_in_droplet",
    "finish_buildpack",
    "install_buildpack",
    "new_buildpack",
    "remove_buildpack",
    "set_buildpacks",
    "write_buildpack",
]

#: Every line the sidecar buildpack prints itself starts with this, so checks can find them in [STG].
SUPPLY_MARKER = "-----> Sidecar buildpack"

NEVER_DETECT = """\
#!/usr/bin/env bash
# bin/detect BUILD_DIR: exit 0 would mean "this buildpack is for this app".
# A sidecar buildpack never claims an app by itself: it only runs when an app names it under
# `buildpacks:` (then detection is skipped). As an admin buildpack it leaves other apps alone.
exit 1
"""

PLACEHOLDER_SUPPLY = """\
#!/usr/bin/env bash
# bin/supply BUILD_DIR CACHE_DIR DEPS_DIR DEPS_IDX
# Runs at staging time, before the final buildpack, and installs a placeholder sidecar.
set -euo pipefail
BUILD_DIR=$1   # the app's files: they become /home/vcap/app, where sidecar commands run
CACHE_DIR=$2   # kept between stagings of this app (unused here)
DEPS_DIR=$3    # one sub-directory per buildpack; ours is $DEPS_DIR/$DEPS_IDX
DEPS_IDX=$4    # our position in the app's buildpacks list, from 0

# Where the sidecar goes: the app directory, where the manifest's `./placeholder-sidecar` finds it.
SIDECAR_DIR=$BUILD_DIR

echo "-----> Sidecar buildpack: installing the placeholder sidecar into $SIDECAR_DIR"
mkdir -p "$SIDECAR_DIR"
cat > "$SIDECAR_DIR/placeholder-sidecar" <<'SIDECAR'
#!/usr/bin/env bash
# The placeholder does nothing but show that it runs, and from where (every 5 minutes).
while true; do
  echo "placeholder sidecar: still here (running $0)"
  sleep 300
done
SIDECAR
chmod +x "$SIDECAR_DIR/placeholder-sidecar"

# Say who we are to the buildpacks after us (the contract between buildpacks).
mkdir -p "$DEPS_DIR/$DEPS_IDX"
printf 'name: sidecar-buildpack\\nversion: 0.0.1\\nconfig: {}\\n' > "$DEPS_DIR/$DEPS_IDX/config.yml"
echo "-----> Sidecar buildpack: installed placeholder-sidecar (our deps dir: deps/$DEPS_IDX)"
"""

DOWNLOAD_SUPPLY = """\
#!/usr/bin/env bash
# bin/supply BUILD_DIR CACHE_DIR DEPS_DIR DEPS_IDX
# Downloads the config-server sidecar from the URL in .downloadurl into the app, as ./config-server.
set -euo pipefail
BUILD_DIR=$1
BUILDPACK_DIR=$(cd "$(dirname "$0")/.." && pwd)

if [ ! -s "$BUILDPACK_DIR/.downloadurl" ]; then
  echo "The sidecar buildpack has no .downloadurl: upload the config-server and write its URL there." >&2
  exit 1
fi
url=$(cat "$BUILDPACK_DIR/.downloadurl")

echo "-----> Sidecar buildpack: downloading config-server from $url"
# -f makes an HTTP error fail (curl prints the status); -w keeps the status for our own message.
if ! code=$(curl -sSfL -w '%{http_code}' -o "$BUILD_DIR/config-server" "$url"); then
  echo "Could not download $url: HTTP ${code:-000}" >&2
  rm -f "$BUILD_DIR/config-server"
  exit 1
fi
chmod +x "$BUILD_DIR/config-server"
echo "-----> Sidecar buildpack: installed ./config-server ($(wc -c < "$BUILD_DIR/config-server") bytes)"
"""


class BuildpackError(KitError):
    """The buildpack directory is not a usable supply buildpack; the message says what to fix."""


@dataclass
class BuildpackFiles:
    """A buildpack directory and its files (relative paths, with their modes), ready to push."""

    directory: Path
    files: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.directory}:"]
        lines += [f"  {mode}  {name}" for name, mode in self.files]
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


def new_buildpack(directory: Path) -> Path:
    """An empty buildpack directory with `bin/` (anything there before is removed)."""
    directory = Path(directory)
    if directory.exists():
        shutil.rmtree(directory)
    (directory / "bin").mkdir(parents=True)
    return directory


def write_buildpack(directory: Path, supply: str, detect: str = NEVER_DETECT,
                    downloadurl: str | None = None) -> BuildpackFiles:
    """Write a whole supply buildpack (bin/supply, bin/detect, optionally .downloadurl) and finish it."""
    directory = new_buildpack(directory)
    (directory / "bin" / "supply").write_text(supply)
    (directory / "bin" / "detect").write_text(detect)
    if downloadurl is not None:
        (directory / ".downloadurl").write_text(downloadurl.strip() + "\n")
    return finish_buildpack(directory)


def finish_buildpack(directory: Path) -> BuildpackFiles:
    """Make bin/* executable and check the buildpack before it is pushed: bin/supply exists, starts
    with `#!`, has Unix line endings and (for shell scripts) passes `bash -n`."""
    directory = Path(directory)
    supply = directory / "bin" / "supply"
    if not supply.is_file():
        raise BuildpackError(f"{supply} does not exist: a supply buildpack needs bin/supply (write it with the "
                             "%%writefile cell above).")
    for script in sorted((directory / "bin").iterdir()):
        if not script.is_file():
            continue
        text = script.read_bytes()
        rel = script.relative_to(directory)
        if not text.startswith(b"#!"):
            raise BuildpackError(f"{rel} does not start with `#!` (e.g. #!/usr/bin/env bash): the platform "
                                 "runs it directly, so it must name its interpreter on its first line.")
        if b"\r\n" in text:
            raise BuildpackError(f"{rel} has Windows line endings (CRLF): bash in the staging container "
                                 "would fail on them. Save it with Unix line endings (LF).")
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        first_line = text.split(b"\n", 1)[0]
        if b"bash" in first_line or first_line.endswith(b"/sh"):
            _syntax_check(script, rel)
    return BuildpackFiles(directory, _listing(directory))


def _syntax_check(script: Path, rel: Path) -> None:
    bash = shutil.which("bash")
    if bash is None:
        return
    proc = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True)
    if proc.returncode != 0:
        said = proc.stderr.strip().replace(str(script), str(rel))
        raise BuildpackError(f"{rel} is not valid bash:\n{said}\nFix the line named above and run the cell again.")


def _listing(directory: Path) -> list[tuple[str, str]]:
    found = []
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            found.append((str(path.relative_to(directory)), stat.filemode(path.stat().st_mode)))
    return found


# ------------------------------------------------------------------------------- manifests

def set_buildpacks(manifest: Path, buildpacks: Sequence[str],
                   sidecars: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Set `buildpacks:` (in order: supply buildpacks first, the final one last) and optionally
    replace `sidecars:` of the manifest's only app; returns the app's entry as written."""
    manifest = Path(manifest)
    document = yaml.safe_load(manifest.read_text())
    apps = document.get("applications") or []
    if len(apps) != 1:
        raise BuildpackError(f"{manifest} has {len(apps)} applications; the tutorial's manifests have exactly one.")
    app = apps[0]
    app["buildpacks"] = list(buildpacks)
    if sidecars is not None:
        app["sidecars"] = [dict(s) for s in sidecars]
    manifest.write_text("---\n" + yaml.safe_dump(document, sort_keys=False, default_flow_style=None))
    return app


def install_buildpack(target: Target, directory: Path, name: str, manifest: Path) -> str:
    """Make the buildpack usable by the app of `manifest`; returns how the manifest names it.

    The target decides how (`Target.install_buildpack`): localcf takes the directory itself, a real
    Cloud Foundry an admin buildpack `name` (which needs the admin role).
    """
    directory = Path(directory).resolve()
    if not (directory / "bin" / "supply").is_file():
        raise BuildpackError(f"{directory} has no bin/supply: write the buildpack first.")
    try:
        return target.install_buildpack(directory, name, Path(manifest))
    except TargetError as exc:
        raise BuildpackError(str(exc), exc.hint) from None


def remove_buildpack(target: Target, name: str) -> None:
    """Undo `install_buildpack` (`Target.remove_buildpack`)."""
    target.remove_buildpack(name)


# -------------------------------------------------------------------------------- droplets

@dataclass(frozen=True)
class DropletFile:
    """A file found in a droplet: its path (as unpacked under /home/vcap), size, mode and SHA-256."""

    path: str
    size: int
    mode: str
    sha256: str


def download_droplet(target: Target, app: str, dest_dir: Path) -> Path:
    """`cf download-droplet APP --path DIR`: the app's current droplet (.tgz) in `dest_dir`."""
    return target.download_droplet(app, Path(dest_dir))


def droplet_file(droplet: Path, path: str) -> DropletFile | None:
    """The file `path` (e.g. `app/config-server`) inside a droplet .tgz, or None when it is absent."""
    wanted = path.strip("/")
    if wanted.startswith("./"):
        wanted = wanted[2:]
    with tarfile.open(droplet, "r:gz") as tar:
        for member in tar:
            name = member.name[2:] if member.name.startswith("./") else member.name
            if name != wanted or not member.isfile():
                continue
            extracted = tar.extractfile(member)
            assert extracted is not None
            digest = hashlib.sha256()
            for chunk in iter(lambda f=extracted: f.read(1 << 20), b""):  # type: ignore[misc]
                digest.update(chunk)
            return DropletFile(name, member.size, stat.filemode(member.mode | stat.S_IFREG), digest.hexdigest())
    return None


def droplet_paths(droplet: Path, under: str = "") -> list[str]:
    """The files of a droplet (paths without `./`), optionally only those under `under`."""
    under = under.strip("/")
    with tarfile.open(droplet, "r:gz") as tar:
        names = [m.name[2:] if m.name.startswith("./") else m.name for m in tar if m.isfile()]
    return sorted(n for n in names if not under or n == under or n.startswith(under + "/"))


def find_in_droplet(target: Target, app: str, path: str) -> tuple[DropletFile | None, list[str]]:
    """Download `app`'s droplet and return the file `path` in it (or None) and the droplet's files
    in the same directory (for error messages)."""
    with tempfile.TemporaryDirectory(prefix="sidecarlab-droplet-") as tmp:
        droplet = download_droplet(target, app, Path(tmp))
        found = droplet_file(droplet, path)
        siblings = droplet_paths(droplet, os.path.dirname(path.strip("/").removeprefix("./")))
    return found, siblings
