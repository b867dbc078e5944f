"""Cloud Controller's resource pool: files already uploaded, by SHA-1, so `cf push` sends them once.

The cf CLI lists the files it is about to upload (`POST /v3/resource_matches`: path, SHA-1, size,
mode); the platform answers with those it already holds, and the CLI leaves them out of the zip it
uploads, naming them in the upload's `resources` field instead. As on Cloud Controller, only files
from 64 KiB (its `minimum_size`) to 512 MiB are pooled; they are kept under the state dir's blobs
(`resource_pool/<sha1[:2]>/<sha1>`) as each package is uploaded, whichever client uploaded it.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

MIN_SIZE = 64 * 1024
MAX_SIZE = 512 * 1024 * 1024


class ResourceError(ValueError):
    """A resource list that cannot be honoured (unknown file, bad entry)."""


def pool_dir(blobs: Path) -> Path:
    return blobs / "resource_pool"


def _blob(blobs: Path, sha1: str) -> Path:
    return pool_dir(blobs) / sha1[:2] / sha1


def _valid_sha1(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 40 and all(ch in "0123456789abcdef" for ch in value)


def matches(blobs: Path, resources: list[Any]) -> list[dict[str, Any]]:
    """The entries of `resources` (`{checksum: {value}, size_in_bytes, path, mode}`) the pool holds."""
    found = []
    for r in resources:
        if not isinstance(r, dict):
            continue
        sha1 = (r.get("checksum") or {}).get("value")
        size = r.get("size_in_bytes")
        if not _valid_sha1(sha1) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
            continue
        blob = _blob(blobs, str(sha1))
        if blob.is_file() and blob.stat().st_size == size:
            found.append(r)
    return found


def add_from_zip(blobs: Path, package: Path) -> int:
    """Pool the files of an uploaded package zip that are large enough; returns how many were new."""
    added = 0
    with zipfile.ZipFile(package) as z:
        for info in z.infolist():
            if info.is_dir() or not MIN_SIZE <= info.file_size <= MAX_SIZE:
                continue
            h = hashlib.sha1()
            with z.open(info) as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            blob = _blob(blobs, h.hexdigest())
            if blob.exists():
                continue
            blob.parent.mkdir(parents=True, exist_ok=True)
            tmp = blob.with_name(blob.name + f".{os.getpid()}.tmp")
            with z.open(info) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            tmp.replace(blob)
            added += 1
    return added


def _mode(value: Any) -> int:
    if value in (None, ""):
        return 0o644
    try:
        return int(str(value), 8) & 0o7777
    except ValueError:
        raise ResourceError(f"mode {value!r} is not an octal file mode such as 0644") from None


def assemble(blobs: Path, bits: bytes, resources: list[Any]) -> bytes:
    """The package zip: the uploaded `bits` plus the listed `resources` taken from the pool."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        if bits:
            with zipfile.ZipFile(io.BytesIO(bits)) as src:
                for info in src.infolist():
                    dst.writestr(info, src.read(info))
        for i, r in enumerate(resources):
            if not isinstance(r, dict):
                raise ResourceError(f"resources[{i}] is not an object")
            sha1 = (r.get("checksum") or {}).get("value")
            path = r.get("path")
            if not _valid_sha1(sha1) or not isinstance(path, str) or not path or path.startswith("/") \
                    or ".." in path.split("/"):
                raise ResourceError(f"resources[{i}] needs a relative path and a SHA-1 checksum")
            blob = _blob(blobs, str(sha1))
            if not blob.is_file():
                raise ResourceError(f"resources[{i}] ({path}) is not in the resource pool: upload it in the bits")
            info = zipfile.ZipInfo(path)
            info.external_attr = (0o100000 | _mode(r.get("mode"))) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(blob, "rb") as f, dst.open(info, "w") as w:
                shutil.copyfileobj(f, w, 1 << 20)
    return out.getvalue()
