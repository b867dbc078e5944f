"""Blob files (packages, droplets, buildpack zips) written whole or not at all, and disk space.

A blob is written to `<name>.tmp` beside its final path and renamed into place, so a reader never
sees half a file. Every error path removes the partial file; one that does not fit on the disk is
refused before a byte is written (`NoSpace`), with a little room kept for the database, so that a
full disk never stops the daemon from recording a deletion or a failed staging. Partial files a dead
daemon left behind are removed when the daemon opens its state dir (`remove_partial`).
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
from pathlib import Path

from .paths import StateDir

RESERVE_BYTES = 1 << 20  # kept free for the database and the logs when a blob is written
PARTIAL_SUFFIXES = (".tmp", ".upload", ".refresh")


class NoSpace(OSError):
    """A blob does not fit on the disk of its folder."""

    def __init__(self, path: Path, needed: int, free: int):
        super().__init__(errno.ENOSPC, f"No space left on device: {path} needs {human_size(needed)}, "
                                       f"{human_size(free)} free")
        self.path, self.needed, self.free = path, needed, free


def human_size(n: int) -> str:
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n}B"


def free_space(path: Path) -> int:
    """Bytes free for an unprivileged writer on the disk that holds `path`."""
    try:
        st = os.statvfs(path)
    except OSError:
        return shutil.disk_usage(path).free
    return st.f_bavail * st.f_frsize


def is_no_space(exc: BaseException) -> bool:
    """Whether an error (or one it was raised from) is a full disk."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "database or disk is full" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def write_atomically(path: Path, data: bytes, reserve: int = RESERVE_BYTES) -> None:
    """Write `data` to `path` through `path.tmp`; refuse with NoSpace when it does not fit."""
    free = free_space(path.parent)
    if len(data) + reserve > free:
        raise NoSpace(path, len(data), free)
    tmp = path.with_suffix(".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NoSpace(path, len(data), free_space(path.parent)) from e
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_partial(state: StateDir) -> list[Path]:
    """Remove what an interrupted write or staging left in the state dir; returns what went."""
    gone: list[Path] = []
    for folder in (state.packages, state.droplets, state.buildpacks):
        if not folder.is_dir():
            continue
        for f in folder.iterdir():
            if f.suffix in PARTIAL_SUFFIXES or f.name.startswith((".buildpack-", ".download-")):
                try:
                    if f.is_dir() and not f.is_symlink():
                        shutil.rmtree(f)
                    else:
                        f.unlink()
                    gone.append(f)
                except OSError as e:
                    print(f"localcf: could not remove the partial blob {f}: {e}", file=sys.stderr, flush=True)
    # half-unpacked admin buildpacks (a finished one is named by its checksum alone)
    cache = state.root / "buildpack-cache"
    if cache.is_dir():
        for d in cache.iterdir():
            if "." in d.name:
                shutil.rmtree(d, ignore_errors=True)
                gone.append(d)
    # staging work dirs of builds a dead daemon never finished (they are failed on start)
    if state.staging.is_dir():
        for d in state.staging.iterdir():
            shutil.rmtree(d, ignore_errors=True)
            gone.append(d)
    return gone
