"""Cloud Foundry app manifests (cf CLI v7/v8 semantics): parse, substitute ((vars)), validate.

Three parts, one job each:

- `model`: the records (`AppManifest`, `ProcessSpec`, `SidecarSpec`, `RouteSpec`, `Manifest`),
  `ManifestError`, sizes (`parse_memory`), `cf push` flags (`AppManifest.with_overrides`) and the
  default route's host (`default_route_host`);
- `yamlread`: the YAML with the line of every field, and ((vars)) substitution;
- `validation`: the values checked against Cloud Foundry's rules, into records;

and `wire`, the one JSON shape both sides of the API share (`to_wire`, `from_wire`).

Every error a user can cause names the file, the line and the field, what was wrong and what to
do (`manifest.yml:7: applications[0].sidecars[0]: 'command' is required; add ...`); `Manifest.where()`
hands a field's line to checks made elsewhere (an unknown buildpack, say, which only the platform
can tell), and `Manifest.error()` builds a `ManifestError` for them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..constants import DEFAULT_DISK_MB, DEFAULT_MEMORY_MB
from .model import (
    BAD_HEALTH_CHECK_TYPE,
    BAD_ROUTE,
    BUILDPACK_AND_BUILDPACKS,
    DEFAULT_ROUTE_BAD_HOST,
    DEFAULT_ROUTE_TOO_LONG,
    DUPLICATE_PROCESS,
    ENDPOINT_NEEDS_HTTP,
    HEALTH_CHECK_TYPES,
    MEMORY_FORMS,
    ROUTE_PROTOCOLS,
    SIDECAR_MEMORY_TOO_LARGE,
    AppManifest,
    Manifest,
    ManifestError,
    ProcessSpec,
    RouteSpec,
    SidecarSpec,
    default_route_host,
    field_name,
    parse_memory,
)
from .validation import APP_KEYS, PROCESS_KEYS, ROUTE_KEYS, SIDECAR_KEYS, UNSUPPORTED_APP_KEYS, validate
from .wire import AppWire, ManifestWire, from_wire, manifest_from_wire, manifest_to_wire, to_wire
from .yamlread import UNRESOLVED_VARS, collect_vars, parse_var_flags, read_yaml

__all__ = [
    "APP_KEYS", "BAD_HEALTH_CHECK_TYPE", "BAD_ROUTE", "BUILDPACK_AND_BUILDPACKS", "DEFAULT_DISK_MB",
    "DEFAULT_MEMORY_MB", "DEFAULT_ROUTE_BAD_HOST", "DEFAULT_ROUTE_TOO_LONG", "DUPLICATE_PROCESS",
    "ENDPOINT_NEEDS_HTTP", "HEALTH_CHECK_TYPES", "MEMORY_FORMS", "PROCESS_KEYS", "ROUTE_KEYS",
    "ROUTE_PROTOCOLS", "SIDECAR_KEYS", "SIDECAR_MEMORY_TOO_LARGE", "UNRESOLVED_VARS",
    "UNSUPPORTED_APP_KEYS", "AppManifest", "AppWire", "Manifest", "ManifestError", "ManifestWire",
    "ProcessSpec", "RouteSpec", "SidecarSpec", "default_route_host", "field_name", "from_wire", "load",
    "loads", "manifest_from_wire", "manifest_to_wire", "parse_memory", "parse_var_flags", "to_wire",
]


def load(
    path: Path | str,
    vars: Mapping[str, Any] | None = None,
    vars_files: Sequence[Path | str] = (),
    *,
    check_paths: bool = True,
) -> Manifest:
    """Read, substitute and validate the manifest at `path` (relative app paths resolve against
    its folder). Raises ManifestError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError("no such manifest", str(path), hint="give the path of a manifest file with -f") from None
    except IsADirectoryError:
        raise ManifestError("is a folder, not a manifest", str(path),
                            hint="give the manifest file itself, e.g. -f manifest.yml") from None
    except UnicodeDecodeError as exc:
        raise ManifestError(f"is not UTF-8 text ({exc.reason})", str(path), hint="save the manifest as UTF-8") from None
    return loads(text, str(path), path.parent.resolve(), vars=vars, vars_files=vars_files, check_paths=check_paths)


def loads(
    text: str,
    source: str = "manifest.yml",
    base_dir: Path | str = ".",
    vars: Mapping[str, Any] | None = None,
    vars_files: Sequence[Path | str] = (),
    *,
    check_paths: bool = True,
) -> Manifest:
    """Parse manifest `text`; `source` names it in errors, `base_dir` anchors relative paths."""
    data, found = read_yaml(text, source, collect_vars(vars, vars_files))
    apps = validate(data, found, Path(base_dir).resolve(), check_paths)
    found.raise_problems()
    return Manifest(apps, source, found.warnings, found.lines, found.fields)
