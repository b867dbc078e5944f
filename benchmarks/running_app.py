"""The running platform's figures, each the median of several runs:

- push of the fixture app (stage, start, healthy), Go build excluded;
- a crashed instance (kill -9 of its sidecar) RUNNING again;
- requests per second through the router divided by directly to the app (same client, same run);
- the daemon's resident memory with the app running.

Run: .venv/bin/python benchmarks/running_app.py [--runs N]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

from common import ROOT, Platform, median, record

REQUESTS = 2000


def fixture_app() -> Path:
    """The tutorial's app with its real sidecar, built once with the Go toolchain."""
    from sidecarlab.sidecar import build
    app = Path(tempfile.mkdtemp()) / "app"
    shutil.copytree(ROOT / "fixtures" / "app-using-config-server", app)
    build(out=app / "config-server")
    return app


def sidecar_pid(api_port: int) -> int | None:
    """The config-server of this platform's instance: its VCAP_APPLICATION names this API."""
    marker = f'"cf_api":"http://127.0.0.1:{api_port}"'.encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if cmd.startswith(b"./config-server") and marker in env:
            return int(pid)
    return None


def web_stats(cf: Platform, name: str) -> list[dict]:
    guid = cf("app", name, "--guid").stdout.strip()
    web = json.loads(cf("curl", f"/v3/apps/{guid}/processes/web").stdout)
    return json.loads(cf("curl", f"/v3/processes/{web['guid']}/stats").stdout)["resources"]


def stats_fast(client, name: str) -> list[dict]:
    app = client.require_app(name)
    web = client.get(f"/v3/apps/{app['guid']}/processes/web")
    return client.get(f"/v3/processes/{web['guid']}/stats")["resources"]


def crash_to_running(cf: Platform, name: str) -> float:
    from localcf.client import Client
    from localcf.paths import StateDir
    client = Client(StateDir(cf.home), autostart=False)
    before = stats_fast(client, name)[0]["instance_guid"]
    pid = sidecar_pid(cf.endpoint()["api_port"])
    if pid is None:
        raise SystemExit("could not find the sidecar's process")
    t0 = time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    while time.perf_counter() - t0 < 60:
        s = stats_fast(client, name)[0]
        if s["state"] == "RUNNING" and s["instance_guid"] != before:
            return time.perf_counter() - t0
        time.sleep(0.005)
    raise SystemExit("the crashed instance did not run again within 60 s")


def rps(connect, host: str, n: int = REQUESTS) -> float:
    """Requests per second of one keep-alive client doing GET / n times."""
    conn = connect()
    t0 = time.perf_counter()
    for _ in range(n):
        conn.request("GET", "/", headers={"Host": host})
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise SystemExit(f"GET / answered {r.status}")
    elapsed = time.perf_counter() - t0
    conn.close()
    return n / elapsed


def rps_requests(url: str, host: str, n: int = REQUESTS) -> float:
    """Requests per second of one keep-alive requests.Session (the client the notebooks use)."""
    import requests
    with requests.Session() as session:
        t0 = time.perf_counter()
        for _ in range(n):
            r = session.get(url, headers={"Host": host}, timeout=10)
            if r.status_code != 200:
                raise SystemExit(f"GET / answered {r.status_code}")
        return n / (time.perf_counter() - t0)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def measure(mode: str, app: Path, runs: int) -> dict:
    name = "app-using-config-server"
    with Platform(LOCALCF_RUNTIME=mode) as cf:
        cf("start")
        cf("push", cwd=app)  # warm-up
        pushes = []
        for _ in range(runs):
            cf("delete", name, "-f")
            pushes.append(cf.timed("push", cwd=app))
        crashes = []
        for _ in range(runs):
            # a restart resets the crash count, so every sample is a first crash (restarted at once);
            # the third crash in a row would wait 30 s by the back-off table
            cf("restart", name)
            crashes.append(crash_to_running(cf, name))
        time.sleep(0.5)
        ep = cf.endpoint()
        host = f"{name}.apps.localhost"
        via_router = [rps(lambda: http.client.HTTPConnection("127.0.0.1", ep["router_port"]), host)
                      for _ in range(3)]
        via_router_rq = [rps_requests(f"http://127.0.0.1:{ep['router_port']}/", host) for _ in range(3)]
        direct, direct_rq = [], []
        if mode == "process":
            port = int(cf("ssh", name, "-c", "echo $PORT").stdout.strip())
            direct = [rps(lambda: http.client.HTTPConnection("127.0.0.1", port), host) for _ in range(3)]
            direct_rq = [rps_requests(f"http://127.0.0.1:{port}/", host) for _ in range(3)]
        daemon_rss = rss_mb(ep["pid"])
        return {
            "push_start_healthy_s": {"median": median(pushes), "all": [round(t, 3) for t in pushes]},
            "crash_to_running_s": {"median": median(crashes), "all": [round(t, 3) for t in crashes]},
            "http_client": {"router_rps": median(via_router), "direct_rps": median(direct) if direct else None,
                            "router_over_direct": round(median(via_router) / median(direct), 3) if direct else None},
            "requests_session": {"router_rps": median(via_router_rq), "direct_rps": median(direct_rq) if direct_rq else None,
                                 "router_over_direct": round(median(via_router_rq) / median(direct_rq), 3) if direct_rq else None},
            # in namespaces mode nothing on the host reaches the app but the router: that is the point
            "direct_means": "the app's host port" if mode == "process" else "unreachable from the host",
            "daemon_rss_mb": daemon_rss,
        }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--modes", default="namespaces,process")
    args = ap.parse_args()
    app = fixture_app()
    try:
        figures = {mode: measure(mode, app, args.runs) for mode in args.modes.split(",")}
    finally:
        shutil.rmtree(app.parent, ignore_errors=True)
    record("running_app", {"runs": args.runs, "requests_per_rps_sample": REQUESTS, **figures})


if __name__ == "__main__":
    main()
