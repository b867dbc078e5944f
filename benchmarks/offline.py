"""Offline delivery: filling the wheelhouse, setting the kit up from it with the network off, and
building the static site.

One run (each step takes minutes): `sidecarlab wheelhouse` into a temporary directory (its wheels,
its size, its time, pip's verification included); then `make` sets up a fresh venv from it with
`--no-index` inside `unshare -rn` (a network namespace with only loopback), pip's own settings and
cache set aside, as tests/test_offline.py does; then `sidecarlab site` from build/notebooks/ when
executed notebooks are there (run `sidecarlab run` first to include the site's figure).

Run: .venv/bin/python benchmarks/offline.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, record

SIDECARLAB = str(Path(sys.executable).parent / "sidecarlab")


def timed(argv: list[str], **kwargs: object) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    elapsed = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stdout}{proc.stderr}")
    return round(elapsed, 1)


def main() -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from sidecarlab.offline import executed_notebooks, offline_pip_env

    work = Path(tempfile.mkdtemp(prefix="offline-bench-"))
    try:
        wheelhouse = work / "wheelhouse"
        fill_s = timed([SIDECARLAB, "wheelhouse", "--out", str(wheelhouse)])
        wheels = list(wheelhouse.glob("*.whl"))
        size = sum(p.stat().st_size for p in wheels)

        venv = work / "venv"
        env = dict(offline_pip_env(), PIP_NO_CACHE_DIR="1")
        install_s = timed(["unshare", "-rn", "make", "--no-print-directory", "-C", str(ROOT), f"VENV={venv}",
                           f"WHEELHOUSE={wheelhouse}", f"PYTHON={sys.executable}", f"{venv}/.installed"], env=env)

        figures: dict[str, object] = {
            "wheels": len(wheels), "wheelhouse_mb": round(size / 1e6, 1), "wheelhouse_fill_s": fill_s,
            "offline_setup_s": install_s,
        }
        executed = ROOT / "build" / "notebooks"
        parts = executed_notebooks(executed)
        if parts:
            figures["site_parts"] = len(parts)
            figures["site_build_s"] = timed([SIDECARLAB, "site", "--from", str(executed), "--out", str(work / "site")])
        record("offline", figures)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
