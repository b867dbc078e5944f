"""Put a learner back at the start: everything the tutorial made on this machine goes, fresh learner
copies come back.

`plan()` lists what will be deleted, each path with what it is, so the command can show it and ask
first: the work dir (`work/`: app copies, buildpack work copies, the kit's cf sessions and the
learner copies, edits included), the embedded S3 server's state dir, and localcf's state dir (apps,
droplets, buildpacks, security groups). `carry_out()` stops everything the kit started first (a
running daemon would write into the directory being deleted), deletes the listed paths and nothing
else, then writes fresh learner copies.

A path that does not look like what it should be (the home directory, the checkout itself, a
localcf state dir with no localcf files in it) is not deleted: the plan says why, and what to do.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import blobstore, tutorial
from .errors import KitError
from .paths import checkout_dir, work_root
from .stop import Stopped, localcf_state_dir, stop_everything

__all__ = ["Doomed", "ResetError", "ResetPlan", "carry_out", "plan"]

# Files a localcf state dir holds once the daemon has run (the store and the API token).
_LOCALCF_MARKERS = ("localcf.db", "token")


class ResetError(KitError):
    """A listed path could not be deleted."""


@dataclass(frozen=True)
class Doomed:
    """A path the reset deletes, and what it holds."""

    path: Path
    what: str


@dataclass
class ResetPlan:
    """What a reset deletes, what it leaves (and why), and where the fresh learner copies go."""

    delete: list[Doomed] = field(default_factory=list)
    leave: list[str] = field(default_factory=list)
    learners_dir: Path = field(default_factory=tutorial.learners_dir)

    def describe(self) -> str:
        """The listing shown before asking."""
        lines = ["sidecarlab reset stops localcf, the embedded S3 server and the kit's ssh tunnels, then deletes:"]
        lines += [f"  {d.path}  ({d.what})" for d in self.delete] or ["  nothing: no state found"]
        lines += [f"  not deleted: {reason}" for reason in self.leave]
        lines.append(f"and writes fresh learner copies of the notebooks to {self.learners_dir}.")
        return "\n".join(lines)


def _unsafe(path: Path) -> str:
    """Why deleting `path` could hurt more than the kit's state ('' when it cannot)."""
    path = path.resolve()
    home, checkout = Path.home().resolve(), checkout_dir().resolve()
    if path == Path(path.anchor) or path == home or home.is_relative_to(path):
        return f"{path} is the home directory or holds it"
    if checkout.is_relative_to(path):
        return f"{path} is the checkout or holds it"
    return ""


def _consider(found: ResetPlan, path: Path, what: str, setting: str) -> None:
    if not path.exists():
        return
    reason = _unsafe(path)
    if reason:
        found.leave.append(f"{reason}; point {setting} at a directory of its own")
    else:
        found.delete.append(Doomed(path.resolve(), what))


def plan() -> ResetPlan:
    """What a reset would delete in this environment (nothing is touched)."""
    found = ResetPlan()
    _consider(found, work_root(), "the work dir: app and buildpack copies, cf sessions, your learner copies "
              "and their edits", "SIDECARLAB_WORK")
    _consider(found, blobstore.default_state_dir(), "the embedded S3 server's state", "SIDECARLAB_HOME")
    localcf_home = localcf_state_dir()
    if localcf_home.is_dir() and any(localcf_home.iterdir()) and not any(
            (localcf_home / name).exists() for name in _LOCALCF_MARKERS):
        found.leave.append(f"{localcf_home} holds no localcf state ({', '.join(_LOCALCF_MARKERS)}); "
                           "point LOCALCF_HOME at localcf's own state dir")
    else:
        _consider(found, localcf_home, "localcf's state: apps, droplets, buildpacks, security groups",
                  "LOCALCF_HOME")
    return found


def carry_out(found: ResetPlan, log: Callable[[str], None] = print) -> tuple[list[Stopped], list[tutorial.LearnerCopy]]:
    """Stop everything, delete what `found` lists, write fresh learner copies."""
    stopped = stop_everything(log=log)
    for doomed in found.delete:
        _delete(doomed.path)
        log(f"deleted {doomed.path}")
    copies = tutorial.make_learner_copies(out_dir=found.learners_dir, force=True)
    for copy in copies:
        log(copy.line())
    return stopped, copies


def _delete(path: Path) -> None:
    """`rm -rf path`, also through read-only folders (droplets and caches unpack some)."""
    try:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IRWXU)
        for root, dirs, _ in os.walk(path):  # top-down: a folder is made writable before it is entered
            for name in dirs:
                inner = Path(root, name)
                if not inner.is_symlink():
                    inner.chmod(inner.stat().st_mode | stat.S_IRWXU)
        shutil.rmtree(path)
    except OSError as exc:
        raise ResetError(f"Could not delete {path}: {exc}. Nothing after it was deleted; remove it by hand "
                         "(it may belong to another user, or a program may still use it) and run the reset again.") \
            from None
