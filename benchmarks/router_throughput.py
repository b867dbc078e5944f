"""Router throughput: requests/second to a tiny app, directly and through localcf's router.

The budget (ARCHITECTURE.md, Budgets): through the router >= 70% of direct, same run, same
client. The app, the router and the client run as three processes, as they do for real (the
app in a container, the router in the daemon, the client in a notebook), and share the machine.

Two clients, each used for both paths, in alternating rounds (the median ratio is reported):

- `requests`: one requests.Session in a loop, what the kit's notebooks and checks do. This is
  the figure the budget is judged on.
- `http.client`: a few threads of keep-alive http.client connections. It costs the client far
  less per request, so the router's share of the machine shows more: a stress figure.

    python benchmarks/router_throughput.py [--requests 3000] [--rounds 3] [--threads 4]

Prints the rates and ratios and appends a JSON line to benchmarks/results/router_throughput.jsonl.
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
BUDGET = 0.70


def serve_app() -> None:
    """The tiny app: answers every GET with a short JSON body, HTTP/1.1 keep-alive."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # one send per response (http.server flushes after each request): unbuffered, head
        # and body would leave in two sends and Nagle's algorithm would stall the second
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
    """The router, with one route to the app."""
    sys.path.insert(0, str(ROOT / "src"))
    from localcf.router import Backend, Router

    backend = Backend(app_guid="bench-app", instance_index=0, address=f"127.0.0.1:{app_port}",
                      connect=lambda: socket.create_connection(("127.0.0.1", app_port)))
    lines = []
    # the daemon's log stream comes later: here the lines are formatted and kept in memory
    router = Router(lambda host, path: [backend] if host == HOST else [],
                    log=lambda *entry: lines.append(entry), port=0)
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
        proc.wait()
        raise SystemExit(f"helper {args} did not start (it said {line!r})")
    return proc, int(line)


def stop(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def with_requests(port: int, count: int) -> float:
    """Requests per second of one requests.Session doing `count` GETs in a loop."""
    import requests

    url, headers = f"http://127.0.0.1:{port}/", {"Host": HOST}
    with requests.Session() as session:
        session.get(url, headers=headers).raise_for_status()  # connected before the clock
        t0 = time.perf_counter()
        for _ in range(count):
            response = session.get(url, headers=headers)
            if response.status_code != 200:
                raise SystemExit(f"GET via port {port}: status {response.status_code}")
        return count / (time.perf_counter() - t0)


def with_http_client(port: int, count: int, threads: int) -> float:
    """Requests per second of `threads` keep-alive http.client connections sharing `count`."""
    share = count // threads
    errors: list[str] = []
    barrier = threading.Barrier(threads + 1)

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        headers = {"Host": HOST}
        try:
            conn.request("GET", "/", headers=headers)  # connected before the clock
            conn.getresponse().read()
            barrier.wait()
            for _ in range(share):
                conn.request("GET", "/", headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    errors.append(f"status {response.status}")
        finally:
            conn.close()

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"{len(errors)} requests failed, e.g. {errors[0]}")
    return share * threads / elapsed


def compare(measure, app_port: int, router_port: int, rounds: int) -> dict:
    """Alternate direct and routed rounds (the machine's load drifts); medians of each."""
    measure(app_port, 200)  # warm both paths up
    measure(router_port, 200)
    direct, routed = [], []
    for _ in range(rounds):
        direct.append(measure(app_port))
        routed.append(measure(router_port))
    ratios = [r / d for d, r in zip(direct, routed)]
    return {
        "direct_rps": round(statistics.median(direct), 1),
        "router_rps": round(statistics.median(routed), 1),
        "ratio": round(statistics.median(ratios), 3),
        "direct_rps_rounds": [round(x, 1) for x in direct],
        "router_rps_rounds": [round(x, 1) for x in routed],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="per round and path")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4, help="of the http.client client")
    parser.add_argument("--serve-app", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-router", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_app:
        return serve_app()
    if args.serve_router:
        return serve_router(args.serve_router)

    app, app_port = start(["--serve-app"])
    try:
        router, router_port = start(["--serve-router", str(app_port)])
        try:
            results = {
                "requests": compare(lambda port, n=args.requests: with_requests(port, n),
                                    app_port, router_port, args.rounds),
                "http.client": compare(
                    lambda port, n=args.requests: with_http_client(port, n, args.threads),
                    app_port, router_port, args.rounds),
            }
        finally:
            stop(router)
    finally:
        stop(app)

    for name, r in results.items():
        print(f"{name:12s} direct {r['direct_rps']:8.0f} req/s   via router {r['router_rps']:8.0f} "
              f"req/s   ratio {r['ratio']:6.1%}")
    headline = results["requests"]["ratio"]
    verdict = "within" if headline >= BUDGET else "OUTSIDE"
    print(f"budget: >= {BUDGET:.0%} with the requests client: {headline:.1%}, {verdict} budget")
    record = {
        "benchmark": "router_throughput",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {**platform.uname()._asdict(), "cpu_count": os.cpu_count(),
                    "python": platform.python_version()},
        "requests_per_round": args.requests,
        "rounds": args.rounds,
        "http_client_threads": args.threads,
        "clients": results,
        "budget_ratio": BUDGET,
        "ratio": headline,
        "within_budget": headline >= BUDGET,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(record) + "\n")
    print(f"appended to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
