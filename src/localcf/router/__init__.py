"""The router: a gorouter-like HTTP reverse proxy on 127.0.0.1.

A request's Host header (port stripped, case-insensitive) and path choose a route; the route's
healthy instances (what the lookup returns) are served round robin. The texts a learner sees
are gorouter's: `404 Not Found: Requested route ('<host>') does not exist.` with
`X-Cf-RouterError: unknown_route`, and `502 Bad Gateway: Registered endpoint failed to handle
the request.` with `X-Cf-RouterError: endpoint_failure`. Each proxied request produces one `RTR`
access log line in gorouter's format.

How it is built, and why: the budget is 80% of the throughput of hitting the app directly, on
two cores shared with the app and the client. The standard library's HTTP classes spend most of
a request's time in Python object churn, and one thread per connection spends the rest handing
the GIL around. So one event-loop thread parses heads itself and moves whole messages: a request
with its body, a response with its body, each up to 256 KiB, in one send each way, over
keep-alive connections to the apps. What does not fit that shape is streamed by a worker thread.

The modules, one concern each:

- `routes`: `Backend`, and the route matcher (gorouter's host and path rules) that the cell's
  lookup and `RouteTable` share;
- `http1`: HTTP/1.x heads and body framing, and the router's own answers (400, 404, 502);
- `connections`: the client and backend connections the loop holds, timeouts and retry policy;
- `loop`: `Router`, the event loop (epoll, or the platform's selector) with its connection pool;
- `stream`: the streaming path of worker threads (big or endless bodies, upgrades);
- `access_log`: the `RTR` lines, formatted and written in batches by a thread of their own.
"""

from __future__ import annotations

from .http1 import BAD_GATEWAY_TEXT, NOT_FOUND_TEXT
from .loop import DEFAULT_HEAD_TIMEOUT, DEFAULT_PORTS, HEAD_TIMEOUT_ENV, PORT_ENV, Router, RouterError
from .routes import Backend, BackendLookup, RouteTable, build_routes, match_route

__all__ = [
    "BAD_GATEWAY_TEXT",
    "Backend",
    "BackendLookup",
    "DEFAULT_HEAD_TIMEOUT",
    "DEFAULT_PORTS",
    "HEAD_TIMEOUT_ENV",
    "NOT_FOUND_TEXT",
    "PORT_ENV",
    "RouteTable",
    "Router",
    "RouterError",
    "build_routes",
    "match_route",
]
