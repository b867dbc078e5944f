"""Part 5: the buildpack's integration suite (buildpack/integration, on the kit's harness) on localcf,
timed as a learner or CI runs it: the whole suite (both packages), then the uncached and the cached
package alone. Each run is a fresh `pytest` process with its own localcf, so a figure includes the
platform's start, the Go builds, packaging, the pushes and the clean-up. Run once (no repetition):
.venv/bin/python benchmarks/integration.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from common import ROOT, record

RUNS = {
    "both packages": "",
    "uncached": "uncached",
    "cached": "cached and not uncached",
}


def run(label: str, select: str, tmp: Path) -> dict:
    junit = tmp / f"{label.replace(' ', '-')}.xml"
    argv = [sys.executable, "-m", "pytest", "buildpack/integration", "-n", "0", "-q", "-p", "no:cacheprovider",
            "--basetemp", str(tmp / label.replace(" ", "-")), "--junitxml", str(junit)]
    if select:
        argv += ["-k", select]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = round(time.perf_counter() - t0, 2)
    if proc.returncode != 0:
        raise SystemExit(f"the integration suite failed ({label}):\n{proc.stdout}{proc.stderr}")
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    cases = {case.get("name", ""): round(float(case.get("time", 0)), 2) for case in suite.iter("testcase")}
    return {"wall_seconds": seconds, "tests": int(suite.get("tests", 0)), "skipped": int(suite.get("skipped", 0)),
            "tests_seconds": round(sum(cases.values()), 2), "per_test_seconds": cases}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-integration-") as tmp:
        figures = {label: run(label, select, Path(tmp)) for label, select in RUNS.items()}
    record("integration", {"target": "local", "runs": 1, "results": figures})


if __name__ == "__main__":
    main()
