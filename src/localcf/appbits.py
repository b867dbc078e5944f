"""App bits: what `cf push` uploads from an app directory, honouring `.cfignore`.

As the cf CLI packages them: regular files with their modes, and every symlink as a symlink entry
holding its target, wherever it points (a link to a folder too; the folder is not descended). The
platform unpacks links as they are and never writes through one (`buildpacks.extract_app_package`).
"""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import pathspec

# What the cf CLI never uploads, whatever .cfignore says.
DEFAULT_IGNORES = [".cfignore", "/manifest.yml", ".gitignore", ".git", ".hg", ".svn", "_darcs", ".DS_Store"]

_UNIX = 3  # ZipInfo.create_system for entries whose external_attr holds a Unix st_mode


def ignore_spec(app_dir: Path) -> pathspec.PathSpec:
    lines = list(DEFAULT_IGNORES)
    cfignore = app_dir / ".cfignore"
    if cfignore.is_file():
        lines += cfignore.read_text(errors="replace").splitlines()
    return pathspec.PathSpec.from_lines("gitwildmatch", lines)


def _add_link(zf: zipfile.ZipFile, full: str, rel: str) -> None:
    info = zipfile.ZipInfo(rel)
    info.create_system = _UNIX
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    zf.writestr(info, os.readlink(full))


def zip_app_dir(src: Path, dest: Path) -> int:
    """Zip an app directory for upload, keeping file modes and symlinks; returns the entry count."""
    src = Path(src)
    spec = ignore_spec(src)
    count = 0
    # level 1: app bits are often binaries (a Go sidecar is ~10 MB); speed matters more than size here
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for root, dirs, files in os.walk(src):
            rel_root = os.path.relpath(root, src)
            rel_root = "" if rel_root == "." else rel_root + "/"
            kept = []
            for d in sorted(dirs):
                if spec.match_file(rel_root + d + "/"):
                    continue
                full = os.path.join(root, d)
                if os.path.islink(full):  # a link to a folder is a link, as the cf CLI zips it
                    if not spec.match_file(rel_root + d):
                        _add_link(zf, full, rel_root + d)
                        count += 1
                    continue
                kept.append(d)
            dirs[:] = kept
            for name in sorted(files):
                rel = rel_root + name
                if spec.match_file(rel):
                    continue
                full = os.path.join(root, name)
                if os.path.islink(full):
                    _add_link(zf, full, rel)
                else:
                    info = zipfile.ZipInfo.from_file(full, rel)
                    info.compress_type = zipfile.ZIP_DEFLATED
                    with open(full, "rb") as fh:
                        zf.writestr(info, fh.read(), compresslevel=1)
                count += 1
    return count
