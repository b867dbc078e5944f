"""The tutorial's Parts 1 to 5 headless (`sidecarlab run 01 02 03 04 05`), warm caches: per part and total.

A throwaway localcf, work dir and object-store state dir; one warm-up run first (Go build cache,
kernel, system buildpacks), then the measured run. Budget (ARCHITECTURE.md section 6): all five
parts < 90 s with warm caches.

Run: .venv/bin/python benchmarks/tutorial.py
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

from common import Platform, record

PARTS = ["01", "02", "03", "04", "05"]
SIDECARLAB = str(Path(sys.executable).parent / "sidecarlab")


def run_tutorial(cf: Platform, scratch: Path, label: str) -> tuple[float, dict]:
    """One headless run of PARTS; (wall seconds, summary.json)."""
    out = scratch / label
    env = dict(cf.env, SIDECARLAB_WORK=str(scratch / "work"), SIDECARLAB_HOME=str(scratch / "home"))
    t0 = time.perf_counter()
    proc = subprocess.run([SIDECARLAB, "run", *PARTS, "--out", str(out), "--no-progress"],
                          env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"the {label} run failed:\n{proc.stdout}\n{proc.stderr}")
    return seconds, json.loads((out / "summary.json").read_text())


def main() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="sidecarlab-bench-"))
    try:
        with Platform() as cf:
            cf("start")
            run_tutorial(cf, scratch, "warm-up")
            total, summary = run_tutorial(cf, scratch, "measured")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    parts = {Path(n["notebook"]).stem: n["seconds"] for n in summary["notebooks"]}
    checks = sum(len(n["passed_checks"]) for n in summary["notebooks"])
    record("tutorial", {"parts": PARTS, "seconds_per_part": parts, "total_s": round(total, 1),
                        "checks_passed": checks, "runtime": os.environ.get("LOCALCF_RUNTIME", "default")})


if __name__ == "__main__":
    main()
