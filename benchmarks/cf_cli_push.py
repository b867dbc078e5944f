"""`cf push` (Cloud Foundry's own cf CLI) against `localcf push` of the same app, in the same run.

The fixture app with its Go config-server sidecar (built once, before timing), pushed to one
localcf daemon: each round pushes with the real cf CLI and then with localcf's own command,
alternating which goes first, until the app is RUNNING (both wait for that). Medians of 3 rounds
after one warm-up of each. The difference is mostly the cf CLI's own waiting: it polls the build
every few seconds and traces staging through Log Cache, whose walk only takes log envelopes that
are a second or two old.

Run: .venv/bin/python benchmarks/cf_cli_push.py   (needs ../shared/tools/cf-cli/cf beside the
project, or a folder holding cf in LOCALCF_TEST_CF_CLI_DIR)
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

from common import ROOT, Platform, median, record

RUNS = 3
CF_DIR = Path(os.environ.get("LOCALCF_TEST_CF_CLI_DIR") or ROOT.parent / "shared" / "tools" / "cf-cli")
APP = "app-using-config-server"


def main() -> None:
    if not os.access(CF_DIR / "cf", os.X_OK):
        sys.exit(f"needs Cloud Foundry's cf CLI at {CF_DIR / 'cf'} (or a folder holding cf in LOCALCF_TEST_CF_CLI_DIR)")
    sys.path.insert(0, str(ROOT / "src"))
    from sidecarlab import sidecar

    work = Path(tempfile.mkdtemp(prefix="cf-cli-push-"))
    app = work / APP
    shutil.copytree(ROOT / "fixtures" / APP, app)
    sidecar.build(out=app / "config-server")  # the Go build is not part of the figures
    cf_env = {k: v for k, v in os.environ.items() if not k.startswith("CF_")}
    cf_env.update(CF_HOME=str(work / "cf-home"), PATH=f"{CF_DIR}{os.pathsep}{os.environ.get('PATH', '')}")
    (work / "cf-home").mkdir()

    def cf(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(["cf", *args], cwd=app, env=cf_env, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"cf {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
        return proc

    with Platform() as lcf:
        lcf("start")
        status = lcf("status").stdout
        api = re.search(r"cf api (\S+)", status).group(1)  # type: ignore[union-attr]
        password = re.search(r"cf auth admin (\S+)", status).group(1)  # type: ignore[union-attr]
        cf("api", api)
        cf("auth", "admin", password)
        cf("target", "-o", "localcf", "-s", "dev")

        def timed_cf() -> float:
            t0 = time.perf_counter()
            out = cf("push").stdout
            took = time.perf_counter() - t0
            assert re.search(r"^#0\s+running", out, re.M), out
            return took

        def timed_localcf() -> float:
            t0 = time.perf_counter()
            out = lcf("push", cwd=app).stdout
            took = time.perf_counter() - t0
            assert re.search(r"^#0\s+running", out, re.M), out
            return took

        timed_cf()  # warm-up: the first staging unpacks the system buildpacks
        timed_localcf()
        cf_times: list[float] = []
        local_times: list[float] = []
        for i in range(RUNS):
            if i % 2:
                local_times.append(timed_localcf())
                cf_times.append(timed_cf())
            else:
                cf_times.append(timed_cf())
                local_times.append(timed_localcf())
        version = cf("version").stdout.strip()
    shutil.rmtree(work, ignore_errors=True)
    record("cf_cli_push", {
        "runs": RUNS, "app": APP, "cf_cli": version,
        "cf_push_s": {"median": median(cf_times), "all": [round(t, 3) for t in cf_times]},
        "localcf_push_s": {"median": median(local_times), "all": [round(t, 3) for t in local_times]},
    })


if __name__ == "__main__":
    main()
