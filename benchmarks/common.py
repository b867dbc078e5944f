"""Shared pieces of the benchmark scripts: a throwaway localcf, timing, and recording results."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
LOCALCF = str(Path(sys.executable).parent / "localcf")


def machine() -> dict:
    """What the figures were measured on."""
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"system": platform.system(), "release": platform.release(), "machine": platform.machine(),
            "cpu": cpu, "cpus": os.cpu_count(), "memory_gb": round(mem_kb / 1024 / 1024, 1),
            "python": platform.python_version()}


def record(name: str, figures: dict) -> dict:
    """Append one result line to benchmarks/results/<name>.jsonl and print it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    entry = {"benchmark": name, "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
             "machine": machine(), **figures}
    with open(RESULTS / f"{name}.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")
    print(json.dumps(entry, indent=2))
    return entry


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


class Platform:
    """A localcf daemon in a temporary state dir, for one benchmark run."""

    def __init__(self, **env: str):
        # a benchmark stopped by SIGTERM (a timeout) still stops its daemon, through __exit__
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        self.home = Path(tempfile.mkdtemp(prefix="localcf-bench-"))
        self.env = dict(os.environ, LOCALCF_HOME=str(self.home), **env)

    def __call__(self, *args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([LOCALCF, *args], cwd=cwd, env=self.env, capture_output=True, text=True)
        if check and proc.returncode:
            raise SystemExit(f"localcf {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
        return proc

    def timed(self, *args: str, cwd: Path | None = None) -> float:
        t0 = time.perf_counter()
        self(*args, cwd=cwd)
        return time.perf_counter() - t0

    def endpoint(self) -> dict:
        return json.loads((self.home / "daemon.json").read_text())

    def close(self) -> None:
        self("stop", check=False)
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> "Platform":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
