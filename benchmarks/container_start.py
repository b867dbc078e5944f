"""What a container's own root filesystem costs, measured against another source tree (the
"before", e.g. a checkout of the previous commit), each the median of several runs:

- container start: `Runtime.create` + `Container.start` until the process's first line arrives
  (a shell that echoes and sleeps), namespaces mode, the droplet of fixtures/runtime;
- push of the fixture app (stage, start, healthy), Go build excluded;
- a crashed instance (kill -9 of its sidecar) RUNNING again.

Run: .venv/bin/python benchmarks/container_start.py [--runs N] [--before SRC_DIR [--before-commit C]]
where SRC_DIR is the `src` directory of the tree to compare with, for example
`git archive C src | tar -x -C /some/dir` and SRC_DIR=/some/dir/src.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from pathlib import Path

from common import ROOT, Platform, median, record
from running_app import crash_to_running, fixture_app

THIS_SRC = ROOT / "src"


def start_times(runs: int) -> list[float]:
    """In a child process whose PYTHONPATH picks the tree: create+start until the first line."""
    from localcf.runtime import ContainerSpec, ProcessDef, Runtime

    base = Path(tempfile.mkdtemp(prefix="localcf-bench-cs-"))
    droplet = base / "droplet.tgz"
    with tarfile.open(droplet, "w:gz") as tf:
        for child in sorted((ROOT / "fixtures" / "runtime" / "droplet").iterdir()):
            tf.add(child, arcname=child.name)
    rt = Runtime(base / "containers", "namespaces")
    times = []
    try:
        for i in range(runs + 1):  # the first run warms caches and is not counted
            up = threading.Event()
            cid = str(uuid.uuid4())
            env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": rt.home_root(cid) + "/app"}
            spec = ContainerSpec(cid, droplet, [ProcessDef("web", "echo up; exec sleep 60", env)],
                                 routed_port=rt.allocate_port())
            t0 = time.perf_counter()
            c = rt.create(spec, lambda name, stream, line: line == "up" and up.set(), lambda *a: None)
            c.start()
            if not up.wait(30):
                raise SystemExit("the container's process never said it was up")
            elapsed = time.perf_counter() - t0
            c.destroy(graceful=0.5)
            if i:
                times.append(elapsed)
    finally:
        rt.close(graceful=0.5)
        shutil.rmtree(base, ignore_errors=True)
    return times


def run_in(src: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(src))
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True)


class TreePlatform(Platform):
    """A throwaway localcf whose command comes from the source tree `src`."""

    def __init__(self, src: Path, **env: str):
        super().__init__(**env)
        self.env["PYTHONPATH"] = str(src)

    def __call__(self, *args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-c", "from localcf.cli import main; main()", *args]
        proc = subprocess.run(argv, cwd=cwd, env=self.env, capture_output=True, text=True)
        if check and proc.returncode:
            raise SystemExit(f"localcf {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
        return proc


def platform_times(src: Path, app: Path, runs: int) -> dict:
    name = "app-using-config-server"
    with TreePlatform(src, LOCALCF_RUNTIME="namespaces") as cf:
        cf("start")
        cf("push", cwd=app)  # warm-up
        pushes = []
        for _ in range(runs):
            cf("delete", name, "-f")
            pushes.append(cf.timed("push", cwd=app))
        crashes = []
        for _ in range(runs):
            cf("restart", name)
            crashes.append(crash_to_running(cf, name))
    return {"push_start_healthy_s": {"median": median(pushes), "all": [round(t, 3) for t in pushes]},
            "crash_to_running_s": {"median": median(crashes), "all": [round(t, 3) for t in crashes]}}


def measure(src: Path, app: Path, runs: int) -> dict:
    done = run_in(src, __file__, "--child-start", str(runs))
    if done.returncode:
        raise SystemExit(f"container start in {src} failed:\n{done.stdout}{done.stderr}")
    starts = json.loads(done.stdout.strip().splitlines()[-1])
    commit = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return {"commit": commit or None,
            "container_start_s": {"median": median(starts), "all": [round(t, 4) for t in starts]},
            **platform_times(src, app, runs)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--before", type=Path, help="the src directory of the tree to compare with")
    ap.add_argument("--before-commit", help="the commit the --before tree was taken from (recorded)")
    ap.add_argument("--child-start", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_start is not None:
        print(json.dumps(start_times(args.child_start)))
        return
    app = fixture_app()
    try:
        figures = {"root_filesystem": measure(THIS_SRC, app, args.runs)}
        if args.before:
            figures["before"] = measure(args.before.resolve(), app, args.runs)
            if args.before_commit:
                figures["before"]["commit"] = args.before_commit
            figures["added_per_container_start_ms"] = round(
                (figures["root_filesystem"]["container_start_s"]["median"]
                 - figures["before"]["container_start_s"]["median"]) * 1000, 1)
    finally:
        shutil.rmtree(app.parent, ignore_errors=True)
    # The machine may be shared: the load says how far to trust absolute figures (the before/after
    # comparison runs back to back, under the same load).
    record("container_start", {"runs": args.runs, "runtime": "namespaces", "euid": os.geteuid(),
                               "load_average_1m_5m": [round(x, 1) for x in os.getloadavg()[:2]], **figures})


if __name__ == "__main__":
    main()
