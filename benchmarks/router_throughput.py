"""Router throughput: requests/second hitting a tiny app directly vs through localcf's router.

The budget (ARCHITECTURE.md, Budgets): through the router >= 70% of direct, same run, same
client. The app, the router and the client run as three processes, as they do for real (app in a
container, router in the daemon, client in a notebook). The client is a few threads of
keep-alive http.client connections, each doing its share of a bounded number of requests.

    python benchmarks/router_throughput.py [--requests 3000] [--concurrency 4] [--rounds 3]

Prints both rates and the ratio, and appends a JSON line to
benchmarks/results/router_throughput.jsonl.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "router_throughput.jsonl"
HOST = "bench.localcf.test"


def serve_app() -> None:
    """The tiny app: answers every GET with a short body, HTTP/1.1 keep-alive."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # one send per response (flushed by http.server after each request): with the default
        # unbuffered writes, head and body leave in two sends and Nagle's algorithm stalls them
        wbufsize = 65536
        body = b'{"hello": "sidecar lab"}\n'

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(self.body)))
            self.end_headers()
            self.wfile.write(self.body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()  # runs until the benchmark closes our stdin


def serve_router(app_port: int) -> None:
    """The router, with one backend: the app."""
    sys.path.insert(0, str(ROOT / "src"))
    from localcf.router import Backend, Router

    backend = Backend(app_guid="bench-app", instance_index=0, address=f"127.0.0.1:{app_port}",
                      connect=lambda: socket.create_connection(("127.0.0.1", app_port)))
    lines = []
    # the daemon's log stream comes later; keeping the lines costs what formatting them costs
    router = Router(lambda host, path: [backend] if host == HOST else [],
                    log=lambda *args: lines.append(args), port=0)
    router.serve_in_thread()
    print(router.port, flush=True)
    sys.stdin.read()
    router.shutdown()


def start(args: list[str]) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        proc.kill()
        raise SystemExit(f"helper {args} did not start (said {line!r})")
    return proc, int(line)


def measure(port: int, requests: int, concurrency: int) -> float:
    """Requests per second of `concurrency` keep-alive clients sharing `requests` requests."""
    share = requests // concurrency
    errors: list[str] = []
    barrier = threading.Barrier(concurrency + 1)

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        headers = {"Host": HOST}
        try:
            conn.request("GET", "/", headers=headers)  # connect before the clock starts
            conn.getresponse().read()
            barrier.wait()
            for _ in range(share):
                conn.request("GET", "/", headers=headers)
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    errors.append(f"status {resp.status}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"{len(errors)} requests failed, e.g. {errors[0]}")
    return share * concurrency / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating direct/router rounds; the medians are reported")
    parser.add_argument("--serve-app", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-router", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_app:
        return serve_app()
    if args.serve_router:
        return serve_router(args.serve_router)

    app, app_port = start(["--serve-app"])
    router, router_port = start(["--serve-router", str(app_port)])
    try:
        measure(app_port, 200, args.concurrency)  # warm both paths up
        measure(router_port, 200, args.concurrency)
        direct, routed = [], []
        for _ in range(args.rounds):
            direct.append(measure(app_port, args.requests, args.concurrency))
            routed.append(measure(router_port, args.requests, args.concurrency))
    finally:
        for proc in (router, app):
            proc.stdin.close()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    d, r = statistics.median(direct), statistics.median(routed)
    ratio = r / d
    print(f"direct:       {d:8.0f} req/s  (rounds: {', '.join(f'{x:.0f}' for x in direct)})")
    print(f"via router:   {r:8.0f} req/s  (rounds: {', '.join(f'{x:.0f}' for x in routed)})")
    print(f"ratio:        {ratio:8.1%}  (budget >= 70%)")
    record = {
        "benchmark": "router_throughput",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {**platform.uname()._asdict(), "cpu_count": os.cpu_count(),
                    "python": platform.python_version()},
        "requests": args.requests,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "direct_rps": round(d, 1),
        "router_rps": round(r, 1),
        "direct_rps_rounds": [round(x, 1) for x in direct],
        "router_rps_rounds": [round(x, 1) for x in routed],
        "ratio": round(ratio, 3),
        "budget_ratio": 0.7,
        "within_budget": ratio >= 0.7,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(record) + "\n")
    print(f"appended to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
