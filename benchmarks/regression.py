"""The notebook regression (`make regression`): every notebook re-executed on a fresh localcf and
compared with its reference, timed once, warm caches (Go build cache, kernel) as a developer has them.

Records the wall time of the whole run, the seconds each notebook took to execute, and the time
spent comparing (pytest-notebook's replace, filter and nbdime diff), with whether the run matched.

Run: .venv/bin/python benchmarks/regression.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import record

from sidecarlab import regression, tutorial


def main() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="sidecarlab-bench-regression-"))
    executed: dict[str, float] = {}
    compare_s = 0.0
    original_run, original_compare = tutorial.run, regression.compare

    def timed_run(*args, **kwargs):  # type: ignore[no-untyped-def]
        report = original_run(*args, **kwargs)
        executed.update({Path(r.notebook).stem: r.seconds for r in report.results})
        return report

    def timed_compare(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal compare_s
        t0 = time.perf_counter()
        try:
            return original_compare(*args, **kwargs)
        finally:
            compare_s += time.perf_counter() - t0

    regression.run, regression.compare = timed_run, timed_compare  # observe, do not change, the run
    try:
        t0 = time.perf_counter()
        report = regression.check(out_dir=scratch / "out", log=lambda _line: None)
        total = time.perf_counter() - t0
    finally:
        regression.run, regression.compare = original_run, original_compare
        shutil.rmtree(scratch, ignore_errors=True)
    if not report.ok:  # the figures stand; say what differed
        print(report.describe(), file=sys.stderr)
    record("regression", {"notebooks": report.compared, "ok": report.ok, "total_s": round(total, 1),
                          "execute_s_per_notebook": executed, "compare_s": round(compare_s, 2)})


if __name__ == "__main__":
    main()
