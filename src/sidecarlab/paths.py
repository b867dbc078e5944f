"""Where the kit keeps things on this machine: the checkout, and the scratch space `work/`."""

from __future__ import annotations

import os
from pathlib import Path

from .sidecar import project_root

__all__ = ["checkout_dir", "work_root"]


def checkout_dir() -> Path:
    """The Sidecar Lab checkout the kit runs from (the current directory outside one)."""
    root = project_root()
    return root if root is not None else Path.cwd()


def work_root() -> Path:
    """The scratch space: the checkout's git-ignored `work/`, or $SIDECARLAB_WORK (tests move it)."""
    return Path(os.environ.get("SIDECARLAB_WORK") or checkout_dir() / "work")
