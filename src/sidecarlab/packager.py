"""The buildpack packager of Part 4: `sidecarlab buildpack package`, buildpack-packager's behaviour.

A libbuildpack-style buildpack keeps its dependencies in `manifest.yml` (`dependencies:` with `name`,
`version`, `uri`, `sha256`, `cf_stacks`) and is shipped as a zip in two forms:

- uncached: the buildpack's own files (`include_files`); staging downloads each dependency from its
  `uri`, so the foundation needs a way out to the internet;
- cached: the same plus every dependency at `dependencies/<md5hex(uri)>/<basename(uri)>`, named by
  a `file:` key in the zipped manifest, so staging needs no network at all (air-gapped foundations).

Both are named `<language>_buildpack[-cached][-<stack>]-v<version>.zip`. With `stack` the zipped
manifest keeps only the dependencies for that stack and gains `stack:`; with `any_stack` it keeps
them all. The texts (success line, errors) are buildpack-packager's.

The config-server the buildpack installs is uploaded by `upload_dependency` as a versioned archive
holding `bin/config-server` (what `sidecarlab sidecar upload --buildpack DIR` calls), which records the
archive's `uri` and `sha256` in DIR's `manifest.yml`: DIR is a work copy made by `copy_buildpack`,
never the committed `buildpack/` of the repository.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import blobstore, sidecar

__all__ = [
    "DEPENDENCY",
    "PLACEHOLDER_SHA256",
    "Package",
    "PackagerError",
    "copy_buildpack",
    "default_buildpack_dir",
    "default_cache_dir",
    "dependency_archive",
    "elf_goarch",
    "load_manifest",
    "package",
    "record_upload",
    "summary",
    "upload_dependency",
    "zip_name",
]

#: The dependency the sidecar buildpack installs.
DEPENDENCY = "config-server"
#: The committed manifest's sha256 until an upload records the real one.
PLACEHOLDER_SHA256 = "0" * 64

Log = Callable[[str], None]

_ELF_MACHINES = {0x3E: "amd64", 0xB7: "arm64", 0x28: "arm", 0x03: "386", 0x15: "ppc64le", 0x16: "s390x",
                 0xF3: "riscv64"}
# Files buildpack-packager leaves out when it copies a buildpack to package it.
_NOT_COPIED = {".git", "tests"}


class PackagerError(RuntimeError):
    """Packaging (or recording an upload) failed; the message is buildpack-packager's text or says what to fix."""


@dataclass(frozen=True)
class Package:
    """A packaged buildpack zip."""

    path: Path
    size: int
    cached: bool
    stack: str | None
    version: str

    @property
    def line(self) -> str:
        """buildpack-packager's success line."""
        kind = "cached" if self.cached else "uncached"
        return f"{kind} buildpack created and saved as {self.path} with a size of {self.size // 1024 // 1024}MB"


# ---------------------------------------------------------------------------------- manifest

def default_buildpack_dir() -> Path:
    """The repository's `buildpack/` (the committed source; package a work copy of it)."""
    root = sidecar.project_root()
    if root is None or not (root / "buildpack" / "manifest.yml").is_file():
        raise PackagerError("Cannot find buildpack/manifest.yml next to the sidecarlab package: it is not installed "
                            "from a Sidecar Lab checkout. Pass the buildpack directory explicitly.")
    return root / "buildpack"


def default_cache_dir() -> Path:
    """buildpack-packager's download cache: `~/.buildpack-packager/cache`."""
    return Path.home() / ".buildpack-packager" / "cache"


def copy_buildpack(dest: Path, source: Path | None = None) -> Path:
    """A work copy of the buildpack (default: the repository's `buildpack/`) at `dest`, replacing any
    copy there; uploads record their uri and sha256 in the copy, and the copy is what gets packaged."""
    source = Path(source) if source is not None else default_buildpack_dir()
    dest = Path(dest)
    if dest.resolve() == source.resolve():
        raise PackagerError(f"{dest} is the buildpack itself: give another directory for the work copy.")
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns(*_NOT_COPIED, "*.zip"))
    return dest


def load_manifest(directory: Path) -> dict[str, Any]:
    """The buildpack's `manifest.yml`, checked for the fields libbuildpack and the packager read."""
    path = Path(directory) / "manifest.yml"
    if not path.is_file():
        raise PackagerError(f"No manifest.yml in {directory}: run in a buildpack directory (one with manifest.yml, "
                            "VERSION and bin/) or pass --buildpack DIR.")
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PackagerError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise PackagerError(f"{path}: the top level must be a mapping (language, default_versions, dependencies, "
                            "include_files).")
    if not isinstance(document.get("language"), str) or not document["language"]:
        raise PackagerError(f"{path}: `language` is missing; it names the zip (<language>_buildpack-v<version>.zip).")
    for key in ("dependencies", "default_versions", "include_files"):
        document.setdefault(key, [])
        if not isinstance(document[key], list):
            raise PackagerError(f"{path}: `{key}` must be a list.")
    for i, dep in enumerate(document["dependencies"]):
        missing = [k for k in ("name", "version", "uri", "sha256", "cf_stacks")
                   if not isinstance(dep, dict) or dep.get(k) in (None, "")]
        if missing:
            raise PackagerError(f"{path}: dependencies[{i}] lacks {', '.join(missing)} (each dependency needs name, "
                                "version, uri, sha256 and cf_stacks).")
        dep["version"] = str(dep["version"])
        if not isinstance(dep["sha256"], str) or len(dep["sha256"]) != 64:
            raise PackagerError(f"{path}: dependencies[{i}].sha256 must be 64 hex digits, in quotes "
                                f"(found {dep['sha256']!r}).")
        if not isinstance(dep["cf_stacks"], list):
            raise PackagerError(f"{path}: dependencies[{i}].cf_stacks must be a list of stacks, e.g. [cflinuxfs4].")
    for i, default in enumerate(document["default_versions"]):
        if not isinstance(default, dict) or not default.get("name") or default.get("version") in (None, ""):
            raise PackagerError(f"{path}: default_versions[{i}] needs name and version.")
        default["version"] = str(default["version"])
    return document


def zip_name(language: str, version: str, cached: bool, stack: str | None) -> str:
    """`<language>_buildpack[-cached][-<stack>]-v<version>.zip`."""
    cached_part = "-cached" if cached else ""
    stack_part = f"-{stack}" if stack else ""
    return f"{language}_buildpack{cached_part}{stack_part}-v{version}.zip"


def _validate_stack(manifest: dict[str, Any], stack: str) -> None:
    deps = manifest["dependencies"]
    if not any(stack in d["cf_stacks"] for d in deps):
        raise PackagerError(f"Stack `{stack}` not found in manifest")
    for default in manifest["default_versions"]:
        if not any(d["name"] == default["name"] and d["version"] == default["version"] and stack in d["cf_stacks"]
                   for d in deps):
            raise PackagerError(f"No matching default dependency `{default['name']}` for stack `{stack}`")


# ---------------------------------------------------------------------------------- packaging

def package(buildpack_dir: Path, *, stack: str | None = None, any_stack: bool = False, cached: bool = False,
            version: str | None = None, out_dir: Path | None = None, cache_dir: Path | None = None,
            goarch: str | None = None, log: Log | None = print) -> Package:
    """Package `buildpack_dir` as buildpack-packager's `build` does; returns the zip (written atomically).

    Copies the buildpack to a scratch directory, writes VERSION there, runs `pre_package` (here: the Go
    build of bin/supply for linux/`goarch`, default this machine's CPU), then zips `include_files` and,
    when `cached`, every dependency kept for the stack (downloaded once into `cache_dir`, checked against
    its sha256). The zip goes to `out_dir` (default: the buildpack directory).
    """
    if not stack and not any_stack:
        raise PackagerError("error: must either specify a stack or pass -any-stack")
    if stack and any_stack:
        raise PackagerError("error: cannot specify a stack AND pass -any-stack")
    say = log or (lambda _line: None)
    buildpack_dir = Path(buildpack_dir).resolve()
    if version is None:
        try:
            version = (buildpack_dir / "VERSION").read_text().strip()
        except OSError as exc:
            raise PackagerError(f"error: Could not read VERSION file: {exc}") from None
    if not version:
        raise PackagerError(f"error: {buildpack_dir / 'VERSION'} is empty: write the buildpack's version there "
                            "or pass --version.")
    manifest = load_manifest(buildpack_dir)
    if stack:
        _validate_stack(manifest, stack)
    for dep in manifest["dependencies"]:
        if dep["sha256"] == PLACEHOLDER_SHA256:
            say(f"warning: {dep['name']} {dep['version']} still has the placeholder uri/sha256 of the committed "
                "manifest: upload it first (`sidecarlab sidecar upload --version V --buildpack DIR`).")
    out_dir = Path(out_dir).resolve() if out_dir is not None else buildpack_dir
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    with tempfile.TemporaryDirectory(prefix="buildpack-packager") as scratch:
        work = Path(scratch) / "buildpack"
        shutil.copytree(buildpack_dir, work, symlinks=True, ignore=shutil.ignore_patterns(*_NOT_COPIED))
        (work / "VERSION").write_text(version)
        if manifest.get("pre_package"):
            _pre_package(work, str(manifest["pre_package"]), goarch)

        files: list[tuple[str, Path]] = []
        for name in manifest["include_files"]:
            path = work / str(name)
            if not path.is_file():
                raise PackagerError(f"include_files names {name}, which is not a file in {buildpack_dir}: add it, or "
                                    "remove it from include_files in manifest.yml.")
            files.append((str(name), path))
        if "manifest.yml" not in manifest["include_files"]:
            raise PackagerError("include_files must list manifest.yml: staging reads the dependencies from it.")

        kept = []
        for dep in manifest["dependencies"]:
            if stack and stack not in dep["cf_stacks"]:
                continue
            if cached:
                rel, cached_file = _download_dependency(dep, cache_dir, say)
                dep["file"] = rel
                files.append((rel, cached_file))
            kept.append(dep)
        manifest["dependencies"] = kept
        if stack:
            manifest["stack"] = stack
        (work / "manifest.yml").write_text(yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False))

        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / zip_name(manifest["language"], version, cached, stack)
        partial = target.with_name(f".{target.name}.partial")
        try:
            _zip_files(partial, files)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
    result = Package(target, target.stat().st_size, cached, stack or None, version)
    say(result.line)
    return result


def _pre_package(work: Path, command: str, goarch: str | None) -> None:
    """Run the manifest's pre_package in the copy, with the kit's Go toolchain on PATH."""
    env = sidecar.go_environment()
    env["PATH"] = str(sidecar.go_binary().parent) + os.pathsep + env.get("PATH", "")
    env["GOARCH"] = goarch or sidecar.host_goarch()
    argv = shlex.split(command)
    if argv and not os.path.isabs(argv[0]) and (work / argv[0]).exists():
        argv[0] = str(work / argv[0])
    try:
        proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise PackagerError(f"pre_package `{command}` could not run: {exc}") from None
    if proc.returncode != 0:
        raise PackagerError(f"pre_package `{command}` failed (exit {proc.returncode}):\n"
                            f"{(proc.stdout + proc.stderr).strip()}")
    supply = work / "bin" / "supply"
    if supply.is_file() and supply.read_bytes()[:4] != b"\x7fELF":
        raise PackagerError(f"pre_package `{command}` did not compile bin/supply (it is still a script).")


def _download_dependency(dep: dict[str, Any], cache_dir: Path, say: Log) -> tuple[str, Path]:
    """`dependencies/<md5hex(uri)>/<basename(uri)>` from the cache, downloaded first when missing or stale."""
    uri = str(dep["uri"])
    basename = Path(urllib.parse.urlsplit(uri).path).name or "dependency"
    rel = f"dependencies/{hashlib.md5(uri.encode()).hexdigest()}/{basename}"
    path = cache_dir / rel
    if path.is_file() and blobstore.sha256_of(path) != dep["sha256"]:
        path.unlink()  # a stale copy (the object was uploaded again): fetch it afresh
    if not path.is_file():
        _download(uri, path)
    actual = blobstore.sha256_of(path)
    if actual != dep["sha256"]:
        path.unlink()
        raise PackagerError(f"{uri} ({dep['name']} {dep['version']}): dependency sha256 mismatch: "
                            f"expected sha256 {dep['sha256']}, actual sha256 {actual}")
    return rel, path


def _download(uri: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    parts = urllib.parse.urlsplit(uri)
    try:
        if parts.scheme == "file":
            shutil.copyfile(urllib.request.url2pathname(parts.path), partial)
        else:
            handlers: list[urllib.request.BaseHandler] = []
            if parts.hostname in ("127.0.0.1", "localhost", "::1"):
                handlers.append(urllib.request.ProxyHandler({}))  # this machine: never through a proxy
            with urllib.request.build_opener(*handlers).open(uri, timeout=60) as response, open(partial, "wb") as out:
                shutil.copyfileobj(response, out)
        partial.replace(dest)
    except urllib.error.HTTPError as exc:
        raise PackagerError(f"could not download {uri}: {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PackagerError(f"could not download {uri}: {reason}") from None
    finally:
        partial.unlink(missing_ok=True)


def _zip_files(target: Path, files: list[tuple[str, Path]]) -> None:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, path in files:
            info = zipfile.ZipInfo.from_file(path, name)
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as src, zf.open(info, "w") as dst:
                shutil.copyfileobj(src, dst)


def summary(buildpack_dir: Path) -> str:
    """buildpack-packager's `summary`: Markdown tables of the packaged binaries and the default versions."""
    manifest = load_manifest(Path(buildpack_dir))
    lines = ["", "Packaged binaries:", "", "| name | version | cf_stacks |", "|-|-|-|"]
    for dep in sorted(manifest["dependencies"], key=lambda d: (d["name"], d["version"])):
        lines.append(f"| {dep['name']} | {dep['version']} | {', '.join(map(str, dep['cf_stacks']))} |")
    if manifest["default_versions"]:
        lines += ["", "Default binary versions:", "", "| name | version |", "|-|-|"]
        lines += [f"| {d['name']} | {d['version']} |" for d in manifest["default_versions"]]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------- the uploaded dependency

def elf_goarch(binary: Path) -> str:
    """The GOARCH of a linux (ELF) binary, read from its header."""
    head = Path(binary).read_bytes()[:20]
    if head[:4] != b"\x7fELF":
        raise PackagerError(f"{binary} is not a linux (ELF) binary: build it with GOOS=linux.")
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    try:
        return _ELF_MACHINES[machine]
    except KeyError:
        raise PackagerError(f"{binary} is built for an unknown CPU (ELF machine {machine:#x}).") from None


def dependency_archive(binary: Path, dest: Path) -> Path:
    """A .tgz holding `bin/config-server` (mode 0755), byte for byte the same for the same binary."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    data = Path(binary).read_bytes()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, payload in (("bin", None), ("bin/config-server", data)):
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if payload is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(payload), 0o755
                tar.addfile(info, io.BytesIO(payload))
    with open(dest, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(buffer.getvalue())
    return dest


def record_upload(buildpack_dir: Path, uri: str, sha256: str, version: str, *, name: str = DEPENDENCY,
                  log: Log | None = print) -> Path:
    """Write the uploaded archive's `uri`, `sha256` and `version` into the work copy's manifest.yml (the
    dependency `name` and its default version), as the blog's build script does; returns the manifest."""
    buildpack_dir = Path(buildpack_dir)
    committed = sidecar.project_root()
    if committed is not None and buildpack_dir.resolve() == (committed / "buildpack").resolve():
        raise PackagerError(f"{buildpack_dir} is the repository's committed buildpack: record uploads in a work copy "
                            "(sidecarlab buildpack copy DIR, or packager.copy_buildpack(DIR)) and package that.")
    manifest = load_manifest(buildpack_dir)
    entries = [d for d in manifest["dependencies"] if d["name"] == name]
    if not entries:
        raise PackagerError(f"{buildpack_dir / 'manifest.yml'} has no dependency named {name}: add one under "
                            "dependencies (name, version, uri, sha256, cf_stacks).")
    # The entry of the default version (the one staging installs), else the first of that name.
    defaults = [d for d in manifest["default_versions"] if d["name"] == name]
    entry = next((d for d in entries if defaults and d["version"] == defaults[0]["version"]), entries[0])
    entry.update(version=version, uri=uri, sha256=sha256)
    if defaults:
        defaults[0]["version"] = version
    else:
        manifest["default_versions"].append({"name": name, "version": version})
    path = buildpack_dir / "manifest.yml"
    partial = path.with_name(".manifest.yml.partial")
    partial.write_text("---\n" + yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False))
    partial.replace(path)
    if log:
        log(f"recorded {name} {version} (uri {uri}, sha256 {sha256}) in {path}")
    return path


def upload_dependency(binary: Path, version: str, settings: blobstore.S3Settings, buildpack_dir: Path, *,
                      state_dir: Path | None = None, log: Log | None = print) -> blobstore.Upload:
    """Upload the config-server as `config-server-v<version>-linux-<arch>.tgz` (holding bin/config-server)
    with the kit's blobstore and record its uri and sha256 in `buildpack_dir`'s manifest.yml."""
    arch = elf_goarch(binary)
    version = version.strip().lstrip("v")
    with tempfile.TemporaryDirectory(prefix="sidecarlab-dependency-") as tmp:
        archive = dependency_archive(binary, Path(tmp) / f"config-server-v{version}-linux-{arch}.tgz")
        # The object key is config-server-sidecar/config-server-v<version>-linux-<arch>.tgz.
        uploaded = blobstore.upload_sidecar(archive, f"{version}-linux-{arch}.tgz", settings, state_dir=state_dir,
                                            log=log)
    record_upload(buildpack_dir, uploaded.url, uploaded.sha256, version, log=log)
    return uploaded

