"""The README's test command as CI runs it: a fresh clone of this checkout's HEAD, then
`CI=true bash .ci/run` with no standard input. Records the wall time of the whole (set-up, lint,
types, tests), the time pytest reports for the tests, the counts, the commit, and the machine's load
average when it started (a busy machine makes every figure longer). Run once (no repetition):
.venv/bin/python benchmarks/ci.py

CI lays the repository out with `shared/` beside it (the real cf CLI the tests drive); when the
checkout has one beside it, the clone gets a link to it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, record

# pytest's last line, e.g. "===== 768 passed, 8 skipped in 872.73s (0:14:32) ====="
_SUMMARY = re.compile(r"=+ (?P<counts>[^=]*?) in (?P<seconds>[0-9.]+)s")


def main() -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="sidecarlab-ci-") as tmp:
        base = Path(tmp)
        base.chmod(0o755)  # as a clone in a home or work folder: the unprivileged-user tests read the checkout
        clone = base / ROOT.name
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        shared = ROOT.parent / "shared"
        if shared.is_dir():
            (base / "shared").symlink_to(shared)
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTEST_ADDOPTS")}
        env["CI"] = "true"
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        proc = subprocess.run(["bash", ".ci/run"], cwd=clone, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, check=False)
        wall = round(time.perf_counter() - t0, 1)
        output = proc.stdout + proc.stderr
        if proc.returncode != 0:
            (ROOT / "benchmarks" / "results" / "ci-failed.log").write_text(output)
            raise SystemExit(f".ci/run exited {proc.returncode} after {wall}s; its output is in "
                             "benchmarks/results/ci-failed.log")
        summaries = list(_SUMMARY.finditer(output))
        if not summaries:
            raise SystemExit(f"no pytest summary line in .ci/run's output:\n{output[-2000:]}")
        last = summaries[-1]
        counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|skipped|failed|errors?)", last["counts"])}
        shutil.rmtree(clone / ".venv", ignore_errors=True)
    record("ci", {
        "what": "fresh clone, CI=true bash .ci/run < /dev/null (make test: venv and install, ruff, mypy, "
                "pytest -n 2 --dist loadgroup over tests/ and buildpack/integration/, the regression included)",
        "commit": commit,
        "load_average_at_start": round(load, 2),
        "wall_seconds": wall,
        "pytest_seconds": float(last["seconds"]),
        "set_up_and_lint_seconds": round(wall - float(last["seconds"]), 1),
        "counts": counts,
    })


if __name__ == "__main__":
    sys.exit(main())
