"""Part 4 headless (`sidecarlab run 04`) with a warm Go build cache: total and its slowest cells.

A throwaway localcf, work dir and object-store state dir; one warm-up run first (the Go build cache
for the config-server and the buildpack's bin/supply, the kernel, the system buildpacks), then the
measured run. Per-cell seconds come from papermill's own timings in the executed notebook. Budget
(ARCHITECTURE.md section 6): all five parts headless, warm caches, < 90 s total.

Run once: .venv/bin/python benchmarks/part4.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from common import Platform, record

PART = "04"
NOTEBOOK = "04-system-and-cached-buildpack.ipynb"
SIDECARLAB = str(Path(sys.executable).parent / "sidecarlab")


def run_part(cf: Platform, scratch: Path, label: str) -> tuple[float, dict, Path]:
    """One headless run of Part 4; (wall seconds, its summary entry, the executed notebook)."""
    out = scratch / label
    env = dict(cf.env, SIDECARLAB_WORK=str(scratch / "work"), SIDECARLAB_HOME=str(scratch / "home"))
    t0 = time.perf_counter()
    proc = subprocess.run([SIDECARLAB, "run", PART, "--out", str(out), "--no-progress"],
                          env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"the {label} run failed:\n{proc.stdout}\n{proc.stderr}")
    (summary,) = json.loads((out / "summary.json").read_text())["notebooks"]
    return seconds, summary, out / "notebooks" / NOTEBOOK


def slowest_cells(executed: Path, count: int = 6) -> list[dict]:
    nb = nbformat.read(str(executed), as_version=4)
    timed = [(float(c.metadata.get("papermill", {}).get("duration") or 0.0), c.source.strip().splitlines()[0])
             for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    return [{"cell": first[:90], "s": round(s, 2)} for s, first in sorted(timed, reverse=True)[:count]]


def main() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="sidecarlab-bench-part4-"))
    try:
        with Platform() as cf:
            cf("start")
            run_part(cf, scratch, "warm-up")
            wall, summary, executed = run_part(cf, scratch, "measured")
            cells = slowest_cells(executed)
            runtime = "namespaces" if "runtime: namespaces" in cf("status").stdout else "process"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    record("part4", {"part": PART, "wall_s": round(wall, 1), "notebook_s": summary["seconds"],
                     "checks_passed": len(summary["passed_checks"]), "checks_skipped": len(summary["skipped_checks"]),
                     "slowest_cells": cells, "runtime": os.environ.get("LOCALCF_RUNTIME", runtime)})


if __name__ == "__main__":
    main()
