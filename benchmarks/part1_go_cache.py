"""Part 1 headless (`sidecarlab run 01`) with a cold Go build cache, then with the same cache warm.

The cold run starts from an empty GOCACHE (what a learner's first run pays for compiling the Go
standard library); the warm run reuses it. Both on one throwaway localcf, after a warm-up run of
localcf itself with the machine's own Go cache, so that only the Go cache differs.

Run: .venv/bin/python benchmarks/part1_go_cache.py
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from common import Platform, record
from tutorial import run_tutorial
import tutorial


def main() -> None:
    tutorial.PARTS = ["01"]
    scratch = Path(tempfile.mkdtemp(prefix="sidecarlab-bench-"))
    gocache = scratch / "gocache"
    try:
        with Platform() as cf:
            cf("start")
            run_tutorial(cf, scratch, "warm-up")  # system buildpacks, kernel, localcf's own caches
            cf.env["GOCACHE"] = str(gocache)
            cold, _ = run_tutorial(cf, scratch, "cold")
            warm, _ = run_tutorial(cf, scratch, "warm")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    record("part1_go_cache", {"part": "01", "cold_go_cache_s": round(cold, 1), "warm_go_cache_s": round(warm, 1)})


if __name__ == "__main__":
    main()
