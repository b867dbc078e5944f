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


def platform_times(trees: dict[str, Path], app: Path, runs: int) -> dict[str, dict]:
    """Push and crash-to-RUNNING on one daemon per tree, all running at once; the samples
    alternate between the trees, so that a change of the machine's load hits them alike."""
    name = "app-using-config-server"
    platforms = {tree: TreePlatform(src, LOCALCF_RUNTIME="namespaces") for tree, src in trees.items()}
    pushes: dict[str, list[float]] = {tree: [] for tree in trees}
    crashes: dict[str, list[float]] = {tree: [] for tree in trees}
    try:
        for cf in platforms.values():
            cf("start")
            cf("push", cwd=app)  # warm-up
        for _ in range(runs):
            for tree, cf in platforms.items():
                cf("delete", name, "-f")
                pushes[tree].append(cf.timed("push", cwd=app))
        for _ in range(runs):
            for tree, cf in platforms.items():
                cf("restart", name)
                crashes[tree].append(crash_to_running(cf, name))
    finally:
        for cf in platforms.values():
            cf.close()
    return {tree: {"push_start_healthy_s": {"median": median(pushes[tree]), "all": [round(t, 3) for t in pushes[tree]]},
                   "crash_to_running_s": {"median": median(crashes[tree]), "all": [round(t, 3) for t in crashes[tree]]}}
            for tree in trees}


def child_starts(src: Path, runs: int) -> list[float]:
    done = run_in(src, __file__, "--child-start", str(runs))
    if done.returncode:
        raise SystemExit(f"container start in {src} failed:\n{done.stdout}{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def commit_of(src: Path) -> str | None:
    return subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip() or None


def measure(trees: dict[str, Path], app: Path, runs: int, rounds: int) -> dict:
    # Container starts alternate between the trees, round by round, so that a change of the
    # machine's load hits both alike; so do push and crash samples (platform_times).
    starts: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(rounds):
        for name, src in trees.items():
            starts[name] += child_starts(src, runs)
    platform = platform_times(trees, app, runs)
    return {name: {"commit": commit_of(src),
                   "container_start_s": {"median": median(starts[name]), "all": [round(t, 4) for t in starts[name]]},
                   **platform[name]}
            for name, src in trees.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3, help="container-start rounds, alternating the trees")
    ap.add_argument("--before", type=Path, help="the src directory of the tree to compare with")
    ap.add_argument("--before-commit", help="the commit the --before tree was taken from (recorded)")
    ap.add_argument("--child-start", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_start is not None:
        print(json.dumps(start_times(args.child_start)))
        return
    trees = {"root_filesystem": THIS_SRC}
    if args.before:
        trees["before"] = args.before.resolve()
    app = fixture_app()
    try:
        figures = measure(trees, app, args.runs, args.rounds)
    finally:
        shutil.rmtree(app.parent, ignore_errors=True)
    if args.before:
        if args.before_commit:
            figures["before"]["commit"] = args.before_commit
        figures["added_per_container_start_ms"] = round(
            (figures["root_filesystem"]["container_start_s"]["median"]
             - figures["before"]["container_start_s"]["median"]) * 1000, 1)
    # The machine may be shared: the load says how far to trust absolute figures.
    record("container_start", {"runs": args.runs, "start_rounds": args.rounds, "runtime": "namespaces",
                               "euid": os.geteuid(), "load_average_1m_5m": [round(x, 1) for x in os.getloadavg()[:2]], **figures})


if __name__ == "__main__":
    main()
