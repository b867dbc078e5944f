"""App bits: what `cf push` uploads from an app directory, honouring `.cfignore`."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pathspec

# What the cf CLI never uploads, whatever .cfignore says.
DEFAULT_IGNORES = [".cfignore", "/manifest.yml", ".gitignore", ".git", ".hg", ".svn", "_darcs", ".DS_Store"]


def ignore_spec(app_dir: Path) -> pathspec.PathSpec:
    lines = list(DEFAULT_IGNORES)
    cfignore = app_dir / ".cfignore"
    if cfignore.is_file():
        lines += cfignore.read_text(errors="replace").splitlines()
    return pathspec.PathSpec.from_lines("gitwildmatch", lines)


def zip_app_dir(src: Path, dest: Path) -> int:
    """Zip an app directory for upload, keeping file modes and symlinks; returns the file count."""
    src = Path(src)
    spec = ignore_spec(src)
    count = 0
    # level 1: app bits are often binaries (a Go sidecar is ~10 MB); speed matters more than size here
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for root, dirs, files in os.walk(src):
            rel_root = os.path.relpath(root, src)
            rel_root = "" if rel_root == "." else rel_root + "/"
            dirs[:] = sorted(d for d in dirs if not spec.match_file(rel_root + d + "/"))
            for name in sorted(files):
                rel = rel_root + name
                if spec.match_file(rel):
                    continue
                full = os.path.join(root, name)
                if os.path.islink(full):
                    info = zipfile.ZipInfo(rel)
                    info.external_attr = (0o120777 << 16)
                    zf.writestr(info, os.readlink(full))
                else:
                    info = zipfile.ZipInfo.from_file(full, rel)
                    info.compress_type = zipfile.ZIP_DEFLATED
                    with open(full, "rb") as fh:
                        zf.writestr(info, fh.read(), compresslevel=1)
                count += 1
    return count
