"""Fetch a buildpack (a directory, a zip file, or an http(s) URL of a zip) into a directory, safely.

Zips are checked before anything is written: no absolute paths, no `..`, no symlink pointing
outside the buildpack; during extraction every path is resolved again, so nothing ever lands
outside the destination. Unix modes stored in the zip are kept (bin/ scripts stay executable).
System buildpack *names* are the daemon's business (its store); `system_dir` only lets a bare
name find a folder or zip of that name.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import time
import zipfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .constants import SYSTEM_BUILDPACKS  # noqa: E402,F401  (re-exported)

"""The system buildpacks localcf ships, in their default position order."""

_ZIP_UNIX = 3  # ZipInfo.create_system of zips made on Unix: external_attr holds st_mode


class BuildpackError(Exception):
    """A buildpack could not be fetched: the message says which, why, and what to do."""


def system_buildpacks_dir() -> Path:
    """The folder holding the shipped system buildpacks (one sub-folder each)."""
    return Path(__file__).resolve().parent / "system_buildpacks"


def is_url(source: str) -> bool:
    """True for an http(s) URL (the only remote buildpacks localcf fetches)."""
    parts = urlsplit(source)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def redact_url(url: str) -> str:
    """The URL with any credentials shown as `-redacted-`, as Cloud Foundry prints them."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"-redacted-:-redacted-@{host}"))


def fetch(source: str, dest: Path, *, system_dir: Path | None = None) -> Path:
    """Put the buildpack `source` (directory, zip file or http(s) URL of a zip) into `dest`
    (absent or empty) and return the directory in it that holds bin/."""
    dest = Path(dest)
    created = _prepare_dest(dest)
    try:
        if is_url(source):
            _download_and_extract(source, dest)
        else:
            path = _local_source(source, system_dir)
            if path.is_dir():
                shutil.copytree(path, dest, symlinks=True, dirs_exist_ok=True)
            elif zipfile.is_zipfile(path):
                extract_zip(path, dest)
            else:
                raise BuildpackError(f"buildpack {source} is neither a directory nor a zip file")
        return buildpack_root(dest, source)
    except BaseException:
        _clear(dest, remove=created)
        raise


def buildpack_root(directory: Path, source: str | None = None) -> Path:
    """`directory` if it holds bin/, else its single sub-directory that does (GitHub zips)."""
    if (directory / "bin").is_dir():
        return directory
    entries = [e for e in directory.iterdir() if e.name != "__MACOSX"]
    if len(entries) == 1 and (entries[0] / "bin").is_dir():
        return entries[0]
    raise BuildpackError(
        f"malformed buildpack does not contain a /bin dir: {source or directory}")


def is_local_path(source: str) -> bool:
    """True for a buildpack given as a directory or zip of this machine (an absolute path, as
    the client sends it): localcf's own kind of buildpack, which Cloud Foundry does not have."""
    return not is_url(source) and os.path.isabs(source)


def local_name(source: str) -> str:
    """The name a buildpack given as a local directory or zip goes by (its folder's name, or
    the zip's without `.zip`), so that no path of this machine shows where Cloud Foundry shows
    an admin buildpack's name or a URL: `cf app`, the droplet, the staging log."""
    name = Path(source.rstrip("/")).name
    if name.lower().endswith(".zip") and len(name) > 4:
        name = name[:-4]
    return name or "buildpack"


def declared_version(root: Path) -> str:
    """The version a buildpack declares: its `VERSION` file, else `version:` in its manifest.yml
    (the files libbuildpack's packager reads); "" when it declares none."""
    try:
        text = (root / "VERSION").read_text(errors="replace").strip()
    except OSError:
        text = ""
    if text:
        return text.splitlines()[0].strip()
    import yaml  # only here: fetching buildpacks needs no YAML

    try:
        manifest = yaml.safe_load((root / "manifest.yml").read_text(errors="replace"))
    except (OSError, yaml.YAMLError):
        return ""  # no manifest, or one that says nothing readable: no version declared
    version = manifest.get("version") if isinstance(manifest, dict) else None
    return str(version).strip() if isinstance(version, (str, int, float)) else ""


def extract_zip(zip_path: Path, dest: Path, *, kind: str = "buildpack", links_may_leave: bool = False) -> None:
    """Extract a zip into `dest`, refusing entries that would escape it.

    `kind` names the zip in refusals ("buildpack", "app package"). With `links_may_leave` (app
    packages: the cf CLI packages a symlink as a link, wherever it points), a symlink may point
    outside `dest` and is made as it is; nothing is ever written *through* one, all the same."""
    label = str(zip_path)
    dest_real = Path(os.path.realpath(dest))
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise BuildpackError(f"cannot read {kind} zip {label}: {e}") from None
    with zf:
        entries = [(info, _link_target(zf, info)) for info in zf.infolist()]
        for info, link in entries:  # all checked before anything is written
            _check_entry(info.filename, None if links_may_leave else link, label, kind)
        for info, link in entries:
            _extract_entry(zf, info, link, dest, dest_real, label, kind, links_may_leave)
    if not links_may_leave:
        _check_symlinks(dest, dest_real, label, kind)


def extract_app_package(zip_path: Path, dest: Path) -> None:
    """Extract an app package (what `cf push` uploaded) into `dest`: symlinks as they were
    packaged, every other entry inside `dest`."""
    extract_zip(zip_path, dest, kind="app package", links_may_leave=True)


def zip_dir(directory: Path, zip_path: Path) -> Path:
    """Zip a buildpack directory (paths relative to it), keeping modes and symlinks."""
    directory = Path(directory)
    if not directory.is_dir():
        raise BuildpackError(f"cannot zip {directory}: not a directory")
    zip_path = Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".buildpack-", suffix=".zip", dir=zip_path.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for root, dirs, files in os.walk(directory):
                dirs.sort()
                rel_root = Path(root).relative_to(directory)
                for name in dirs + sorted(files):
                    path = Path(root) / name
                    arcname = (rel_root / name).as_posix()
                    _add_to_zip(zf, path, arcname)
                # os.walk lists symlinks to directories as dirs; they were zipped as links.
                dirs[:] = [d for d in dirs if not (Path(root) / d).is_symlink()]
        os.replace(tmp, zip_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return zip_path


# -- internals ------------------------------------------------------------------------------

def _prepare_dest(dest: Path) -> bool:
    if dest.exists() or dest.is_symlink():
        if not dest.is_dir() or dest.is_symlink():
            raise BuildpackError(f"cannot fetch a buildpack into {dest}: it is not a directory")
        if any(dest.iterdir()):
            raise BuildpackError(f"cannot fetch a buildpack into {dest}: it is not empty")
        return False
    dest.mkdir(parents=True)
    return True


def _clear(dest: Path, *, remove: bool) -> None:
    if remove:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for entry in dest.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _local_source(source: str, system_dir: Path | None) -> Path:
    path = Path(source).expanduser()
    if path.exists():
        return path
    if system_dir is not None and "/" not in source:
        for candidate in (Path(system_dir) / source, Path(system_dir) / f"{source}.zip"):
            if candidate.exists():
                return candidate
    where = f" (nor a system buildpack of that name in {system_dir})" if system_dir else ""
    raise BuildpackError(f"buildpack {source} not found: no such directory or zip file{where}; "
                         "give a buildpack directory, a .zip, or an http(s) URL of a .zip")


def _download_and_extract(url: str, dest: Path) -> None:
    import requests  # only URL buildpacks pay for importing it

    shown = redact_url(url)
    fd, tmp = tempfile.mkstemp(prefix=".download-", suffix=".zip", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with requests.get(url, stream=True, timeout=(10, 300)) as response:
                    if response.status_code != 200:
                        raise BuildpackError(
                            f"could not download buildpack {shown}: HTTP {response.status_code} "
                            f"{response.reason}")
                    for chunk in response.iter_content(chunk_size=1 << 16):
                        out.write(chunk)
            except requests.RequestException as e:
                detail = str(e).replace(url, shown)
                raise BuildpackError(f"could not download buildpack {shown}: {detail}") from None
        if not zipfile.is_zipfile(tmp):
            raise BuildpackError(f"buildpack {shown} is not a zip file (localcf fetches zips "
                                 "over http(s); git URLs are not supported)")
        extract_zip(Path(tmp), dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _mode(info: zipfile.ZipInfo) -> int:
    return (info.external_attr >> 16) if info.create_system == _ZIP_UNIX else 0


def _link_target(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> str | None:
    if not stat.S_ISLNK(_mode(info)):
        return None
    return zf.read(info).decode("utf-8", errors="replace")


def _refuse(label: str, name: str, why: str, kind: str = "buildpack") -> BuildpackError:
    return BuildpackError(f"refusing to extract {kind} zip {label}: entry {name!r} {why}; "
                          f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} zip may only hold paths inside the "
                          f"{_tree(kind)}")


def _tree(kind: str) -> str:
    return "app" if kind == "app package" else kind


def _check_entry(name: str, link: str | None, label: str, kind: str = "buildpack") -> None:
    tree = _tree(kind)
    if "\x00" in name or not name.strip("/"):
        raise _refuse(label, name, "has an invalid name", kind)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise _refuse(label, name, "has an absolute path", kind)
    if ".." in re.split(r"[/\\]", name):
        raise _refuse(label, name, f"climbs out of the {tree} with '..'", kind)
    if link is not None:
        if link.startswith("/") or not link:
            raise _refuse(label, name, f"is a symlink to {link!r}, outside the {tree}", kind)
        resolved = os.path.normpath(os.path.join(os.path.dirname(name.rstrip("/")), link))
        if resolved == ".." or resolved.startswith("../"):
            raise _refuse(label, name, f"is a symlink to {link!r}, outside the {tree}", kind)


def _inside(path: str, root: Path) -> bool:
    return path == str(root) or path.startswith(str(root) + os.sep)


def _extract_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, link: str | None, dest: Path,
                   dest_real: Path, label: str, kind: str = "buildpack", links_may_leave: bool = False) -> None:
    name = info.filename.rstrip("/")
    target = dest / name
    tree = _tree(kind)
    # Resolve again with what is on disk now: a parent may be a symlink extracted earlier.
    parent_real = os.path.realpath(target.parent)
    if not _inside(parent_real, dest_real):
        raise _refuse(label, info.filename, f"would be written outside the {tree} (through a symlink)", kind)
    mode = _mode(info) & 0o777
    if info.is_dir():
        if not _inside(os.path.realpath(target), dest_real):
            raise _refuse(label, info.filename, f"would be written outside the {tree} (through a symlink)", kind)
        os.makedirs(target, exist_ok=True)
        os.chmod(target, (mode or 0o755) | 0o700)
        return
    os.makedirs(target.parent, exist_ok=True)
    if link is not None:
        if not links_may_leave and not _inside(os.path.realpath(os.path.join(parent_real, link)), dest_real):
            raise _refuse(label, info.filename, f"is a symlink to {link!r}, outside the {tree}", kind)
        try:
            os.symlink(link, target)
        except FileExistsError:
            raise _refuse(label, info.filename, "appears twice", kind) from None
        return
    if not mode:
        # Zips made without Unix modes (e.g. on Windows): scripts in bin/ must still run.
        mode = 0o755 if "bin" in Path(name).parts[:-1] else 0o644
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise _refuse(label, info.filename, "appears twice", kind) from None
    with os.fdopen(fd, "wb") as out, zf.open(info) as src:
        shutil.copyfileobj(src, out, 1 << 16)
        os.fchmod(out.fileno(), mode)


def _check_symlinks(dest: Path, dest_real: Path, label: str, kind: str = "buildpack") -> None:
    # A chain of links, each inside when made, can point outside once all exist.
    for root, dirs, files in os.walk(dest):
        for name in dirs + files:
            path = os.path.join(root, name)
            if os.path.islink(path) and not _inside(os.path.realpath(path), dest_real):
                rel = os.path.relpath(path, dest)
                raise _refuse(label, rel, f"is a symlink to {os.readlink(path)!r}, which "
                              f"leads outside the {_tree(kind)}", kind)


def _add_to_zip(zf: zipfile.ZipFile, path: Path, arcname: str) -> None:
    if path.is_symlink():
        info = zipfile.ZipInfo(arcname, date_time=_zip_time(path.lstat().st_mtime))
        info.create_system = _ZIP_UNIX
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, os.readlink(path))
    elif path.is_dir():
        info = zipfile.ZipInfo.from_file(path, arcname, strict_timestamps=False)
        info.create_system = _ZIP_UNIX
        zf.writestr(info, b"")
    else:
        info = zipfile.ZipInfo.from_file(path, arcname, strict_timestamps=False)
        info.create_system = _ZIP_UNIX
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(path, "rb") as src, zf.open(info, "w") as out:
            shutil.copyfileobj(src, out, 1 << 16)


def _zip_time(mtime: float) -> tuple[int, int, int, int, int, int]:

    t = time.localtime(max(mtime, 315532800))  # zip dates start in 1980
    return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)


def buildpack_upload_problem(data: bytes) -> str | None:
    """What is wrong with a buildpack zip's bytes (None when nothing is): it must be a readable zip
    whose entries all stay inside it and that holds bin/.

    It is extracted into a scratch folder with the same checks staging applies, so a zip refused
    here is one that would fail every staging later. Used by the API and, before it creates a
    record, by the command."""
    if not data:
        return "the upload is empty; upload a buildpack zip file"
    with tempfile.TemporaryDirectory(prefix="localcf-bp-check-") as tmp:
        zpath = Path(tmp) / "upload.zip"
        zpath.write_bytes(data)
        dest = Path(tmp) / "x"
        dest.mkdir()
        try:
            extract_zip(zpath, dest)
            buildpack_root(dest, "the uploaded zip")
        except BuildpackError as err:
            return str(err).replace(str(zpath), "the uploaded zip")
    return None
