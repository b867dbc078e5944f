"""Names and defaults that both sides of localcf use: the `localcf` command and the daemon.

A module of plain values with no imports of localcf's own, so that the command line never has to
import server-side modules (the controller, the cell, the stager) just to learn a constant.
"""

from __future__ import annotations

ORG_NAME = "localcf"
ORG_GUID = "7ce1f3a5-0000-4000-8000-00000000c0de"
SPACE_NAME = "dev"
SPACE_GUID = "5bace5ba-0000-4000-8000-00000000c0de"
USER_NAME = "admin"
USER_GUID = "ad314ad3-0000-4000-8000-00000000c0de"

STACK = "cflinuxfs4"
DEFAULT_DOMAIN = "apps.localhost"
"""The shared domain default routes are made on (`APP.apps.localhost`)."""

CELL_ID = "localcf-cell-0"
"""The one Diego cell localcf has, as `[CELL/0]` lines and crash events name it."""

SYSTEM_BUILDPACKS = ("python_buildpack", "binary_buildpack")
"""The system buildpacks localcf ships, in their default position order."""

DEFAULT_MEMORY_MB = 1024
DEFAULT_DISK_MB = 1024
DEFAULT_HEALTH_TIMEOUT = 60
"""Seconds an instance has to become healthy (Cloud Foundry's default for `timeout`)."""

HOST_MAX_LENGTH = 63
"""The longest DNS label, and so the longest host a default route can have."""
