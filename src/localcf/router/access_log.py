"""The router's access log: one `RTR` line per proxied request, in gorouter's format.

Lines are queued by the loop (and the streaming workers) as tuples, and formatted and handed to
the log sink by a thread of their own, in batches: the log stream may hit the disk, and waking
a thread for every request would cost the loop a GIL hand-off. Under pressure the queue is
lossy, as loggregator is, rather than without bound.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from collections.abc import Callable

from .http1 import Request
from .routes import Backend

LogFn = Callable[[str, str, int, str, str], None]
BatchFn = Callable[[list[tuple[str, str, int, str, str]]], None]

# access log lines waiting for a slow log sink; past this, new ones are dropped
MAX_PENDING = 50_000


class AccessLog:
    """The queue of access log lines and the thread that writes them."""

    def __init__(self, log: LogFn, batch: BatchFn | None = None) -> None:
        """`log(app_guid, "RTR", index, "OUT", line)` gets each line; `batch`, if given, gets
        them instead as lists of those argument tuples."""
        self._log = log
        self._batch = batch
        self._pending: collections.deque = collections.deque()
        self._dropped = 0
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="router-log", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Write what is pending, then end the thread."""
        self._stopping = True
        if self._thread is not None:
            self._wake.set()
            self._thread.join(10)

    def record(self, req: Request, backend: Backend, remote: str, code: int,
              bytes_sent: int, app_time: float, router_error: str) -> None:
        """Queue one access log line; it is formatted and written by the log thread."""
        response_time = time.perf_counter() - req.t0
        if len(self._pending) >= MAX_PENDING:
            # like loggregator, lossy under pressure rather than without bound
            self._dropped += 1
            return
        self._pending.append((backend, req, remote, code, bytes_sent, response_time,
                              app_time, router_error))
        if not self._wake.is_set():
            self._wake.set()

    def _run(self) -> None:
        # Access log lines are written off the request path (the log stream may hit the disk),
        # in batches: waking this thread for every request would cost the loop a GIL hand-off.
        pending = self._pending
        while True:
            self._wake.wait()
            self._wake.clear()
            stopping = self._stopping
            if not stopping:
                time.sleep(0.01)
            while pending:
                batch: list[tuple[str, str, int, str, str]] = []
                while pending and len(batch) < 500:
                    item = pending.popleft()
                    batch.append((item[0].app_guid, "RTR", item[0].instance_index, "OUT",
                                  format_access_log(*item)))
                try:
                    if self._batch is not None:
                        self._batch(batch)
                    else:
                        for entry in batch:
                            self._log(*entry)
                except Exception as e:  # a broken log sink must not take the router down
                    print(f"localcf router: writing access log lines failed: {e!r}",
                          file=sys.stderr)
            if self._dropped:
                dropped, self._dropped = self._dropped, 0
                print(f"localcf router: {dropped} access log lines dropped: the log sink is "
                      f"slower than the requests", file=sys.stderr)
            if stopping:
                return


def format_access_log(backend: Backend, req: Request, remote: str, code: int,
                      bytes_sent: int, response_time: float, app_time: float,
                      router_error: str) -> str:
    """gorouter's access log line, its fields in gorouter's order."""
    gorouter_time = response_time - app_time if app_time >= 0 else -1.0
    request_line = _quote(f"{req.method} {req.target} {req.version}")
    return (
        f"{req.host} - [{_ns_timestamp(req.started_ns)}] {request_line} {code} "
        f"{req.body_count.n} {bytes_sent} {_quote(req.referer)} {_quote(req.user_agent)} "
        f"{_quote(remote)} {_quote(backend.address)} "
        f"x_forwarded_for:{_quote(req.xff_raw.decode('latin-1'))} "
        f"x_forwarded_proto:{_quote(req.xfp_raw.decode('latin-1'))} "
        f"vcap_request_id:{_quote(req.request_id)} response_time:{response_time:.6f} "
        f"gorouter_time:{_fmt_time(gorouter_time)} app_id:{_quote(backend.app_guid)} "
        f"app_index:{_quote(str(backend.instance_index))} "
        f"instance_id:{_quote(backend.instance_id)} route_service_url:\"-\" "
        f"x_cf_routererror:{_quote(router_error)}"
    )


# the second last formatted, and its text: one strftime a second (the log thread is the only user)
_last_second: list = [-1, ""]


def _ns_timestamp(ns: int) -> str:
    """gorouter's access log time: `2006-01-02T15:04:05.000000000Z`, UTC."""
    _cache = _last_second
    secs, frac = divmod(ns, 1_000_000_000)
    if secs != _cache[0]:  # one strftime a second (the log thread is the only caller)
        _cache[:] = [secs, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))]
    return f"{_cache[1]}.{frac:09d}Z"


def _quote(value: str) -> str:
    """A quoted access log value, `"-"` when empty (Go's strconv.Quote for the usual text)."""
    if not value:
        return '"-"'
    if '"' in value or "\\" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + value + '"'


def _fmt_time(seconds: float) -> str:
    return f"{seconds:.6f}" if seconds >= 0 else '"-"'

