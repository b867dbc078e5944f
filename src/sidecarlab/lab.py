"""`sidecarlab lab` (`make lab`): JupyterLab on the learners' own copies of the notebooks.

The tracked notebooks stay untouched: JupyterLab opens `work/notebooks/` (git-ignored), where the
learner copies are made if missing and never overwritten. The banner says how to stop what the kit
starts, since closing JupyterLab leaves localcf running; it is said again when JupyterLab exits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence

from . import tutorial

__all__ = ["AFTER_LAB", "open_lab"]

AFTER_LAB = ("JupyterLab has stopped; localcf and anything else the kit started still run. "
             "`make stop` (or `sidecarlab stop`) stops them.")


def open_lab(jupyter_args: Sequence[str] = (), banner: str = "", log: Callable[[str], None] = print) -> int:
    """Make the missing learner copies, show `banner` ({learners} filled in), run JupyterLab in the
    learners' folder until it exits; its exit status."""
    learners = tutorial.learners_dir()
    for made in tutorial.make_learner_copies(out_dir=learners):
        if made.status == "written":
            log(made.line())
    if banner:
        log(banner.format(learners=learners))
    argv = [sys.executable, "-m", "jupyterlab", *jupyter_args]
    if os.geteuid() == 0 and "--allow-root" not in argv:
        argv.append("--allow-root")
    # Ctrl-C is JupyterLab's to answer (it asks before shutting down): this process waits for it. A
    # handler, not SIG_IGN, which the child would inherit.
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        code = subprocess.call(argv, cwd=learners)
    finally:
        signal.signal(signal.SIGINT, previous)
    log(AFTER_LAB)
    return code
