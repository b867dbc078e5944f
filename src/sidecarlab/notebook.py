"""What a notebook's setup cell calls: create the target its parameters name and point `%cf` at it.

The notebook creates the target, so the notebook side registers the magic (targets know nothing
of IPython). The error display is loaded first, so even a bad parameter shows as one clean message.
"""

from __future__ import annotations

from typing import Any

from . import magics, targets
from .targets import Target

__all__ = ["target_from_params"]


def target_from_params(**params: Any) -> Target:
    """`sidecarlab.targets.target_from_params(**params)`, made the target of the notebook's `%cf`."""
    magics.load_in_running_shell()
    made = targets.target_from_params(**params)
    magics.use_target(made)
    return made
