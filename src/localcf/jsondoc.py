"""The one spelling of a JSON object where localcf meets JSON (or YAML) it does not own a type for.

That is: CAPI documents as the API serves them and the client reads them, request bodies before
validation, manifest YAML before it becomes a typed manifest, buildpack `config.yml`/`launch.yml`,
audit-event metadata, and the daemon's endpoint file. Everything behind those boundaries is a typed
record (`localcf.records`, `localcf.manifest.model`).
"""

from __future__ import annotations

from typing import Any

JsonObject = dict[str, Any]
"""A JSON object as `json.loads` (or `yaml.safe_load`) gives it: string keys, any JSON values."""
