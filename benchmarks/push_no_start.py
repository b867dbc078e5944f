"""`localcf push --no-start` of the Python fixture app: median of 5 (upload, stage, droplet).

Run: .venv/bin/python benchmarks/push_no_start.py
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from common import ROOT, Platform, median, record

RUNS = 5


def main() -> None:
    app = Path(tempfile.mkdtemp()) / "app"
    shutil.copytree(ROOT / "fixtures" / "app-using-config-server", app)
    (app / "config-server").write_text("#!/bin/sh\nexit 0\n")  # the Go build is not part of this figure
    (app / "config-server").chmod(0o755)
    with Platform() as cf:
        t0 = time.perf_counter()
        cf("start")
        daemon_start = time.perf_counter() - t0
        cf("push", "--no-start", cwd=app)  # warm-up: first staging unpacks the system buildpacks
        times = [cf.timed("push", "--no-start", cwd=app) for _ in range(RUNS)]
    shutil.rmtree(app.parent, ignore_errors=True)
    record("push_no_start", {"runs": RUNS, "push_no_start_s": {"median": median(times), "all": [round(t, 3) for t in times]},
                             "daemon_start_s": round(daemon_start, 3)})


if __name__ == "__main__":
    main()
