"""The `localcf` command: the cf CLI's verbs and output, against the embedded Cloud Foundry.

Built as the cf CLI is: thin click commands (one module per group of verbs) that parse flags, call
`localcf.actions` (which talk to the daemon and return results), and print with `localcf.output`.
Nothing here imports the daemon's side (controller, cell, stager); shared names come from
`localcf.constants`.
"""

from __future__ import annotations

from . import apps, buildpacks, droplets, lifecycle, push, security_groups, ssh  # noqa: F401  (they register the verbs)
from .base import CommandFailed, main

__all__ = ["CommandFailed", "main"]
