"""Part 3 of the tutorial: the steps the kit does for the learner, each printing the command the
learner would type for it on a real foundation first (`$ ...`).

The learner's own steps stay in the notebook as the commands themselves: writing `.downloadurl`
(`echo URL > .downloadurl`), `cf update-buildpack`, `cf push`, `cf restage`, `cf ssh`. What lives here
is what needs a toolchain or a store the learner may not have set up: the Go build of the sidecar
(and `blobstore.upload_sidecar` for the upload, which prints its `aws s3 cp` line). The claims of
Part 3 are checks, in `sidecarlab.checks`.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from pathlib import Path

from . import sidecar
from .targets import Target

__all__ = ["build_sidecar", "go_build_command"]

Log = Callable[[str], None]


def go_build_command(out: Path, goarch: str, goos: str = "linux") -> str:
    """The shell line that builds the config-server as `sidecar.build` does, from the checkout's root:
    a static binary (`CGO_ENABLED=0`) for the platform's cells."""
    source = sidecar.default_source_dir()
    return (f"(cd {shlex.quote(os.path.relpath(source))} && CGO_ENABLED=0 GOOS={goos} GOARCH={goarch} "
            f"go build -trimpath -o {shlex.quote(os.path.relpath(Path(out).resolve(), source))} .)")


def build_sidecar(target: Target, out: Path, *, log: Log = print) -> Path:
    """Build the config-server for the CPU of the target's cells into `out`, printing the `go build`
    line first and the binary's size after; returns the binary."""
    goarch = target.goarch()
    log(f"$ {go_build_command(out, goarch)}")
    binary = sidecar.build(out=Path(out), goos="linux", goarch=goarch, log=log)
    log(f"built {os.path.relpath(binary)} ({binary.stat().st_size // 1024} KiB)")
    return binary
