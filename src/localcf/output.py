"""How the `localcf` command lays text out, as the cf CLI does: tables, key/value blocks, sizes.

Pure functions from values to text; nothing here prints or talks to the daemon. The command's
modules print what these return, so every table and block of the CLI is aligned one way.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .jsondoc import JsonObject

if TYPE_CHECKING:
    from .actions import AppSummary

COLUMN_GAP = "   "
"""The cf CLI separates table columns by three spaces."""


def table(rows: Sequence[Sequence[object]]) -> str:
    """Rows (the first is the header) in columns three spaces apart, trailing spaces removed."""
    if not rows:
        return ""
    width = len(rows[0])
    widths = [max(len(str(r[i])) if i < len(r) else 0 for r in rows) for i in range(width)]
    out = []
    for r in rows:
        cells = [str(c).ljust(widths[i]) for i, c in enumerate(r)]
        out.append(COLUMN_GAP.join(cells).rstrip())
    return "\n".join(out)


def key_values(pairs: Sequence[tuple[str, str]]) -> str:
    """`key:` labels padded to one column (the longest label plus three spaces), then the values:
    the block `cf app` prints (`name:              my-app`)."""
    if not pairs:
        return ""
    width = max(len(k) for k, _ in pairs) + len(COLUMN_GAP)
    return "\n".join(f"{k.ljust(width)}{v}".rstrip() for k, v in pairs)


def indent(text: str, prefix: str) -> str:
    """Every line of `text` with `prefix` before it."""
    return "\n".join(prefix + line for line in text.splitlines())


def megabytes(n: int | None) -> str:
    """`1G` for whole gigabytes, else `256M` (the cf CLI's memory and disk sizes); "" for None."""
    if n is None:
        return ""
    return f"{n // 1024}G" if n >= 1024 and n % 1024 == 0 else f"{n}M"


def human_bytes(n: int | None) -> str:
    """Usage as `cf app` shows it: `12.3M`, `1.0G`, `512.0K`, or `0`."""
    n = n or 0
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f}G"
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f}M"
    return f"{n / 1024:.1f}K" if n else "0"


def kibibytes(n: int) -> str:
    """An upload size as `cf push` prints its progress (`12.34 KiB`)."""
    return f"{n / 1024:.2f} KiB"


def parse_api_time(ts: str) -> datetime:
    """A CAPI timestamp (`2026-01-31T12:00:00Z`) as an aware UTC datetime."""
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def local_date(ts: str | None) -> str:
    """`Sat 31 Jan 12:00:00 UTC 2026` in local time (cf app's `last uploaded:`); "" for None."""
    if not ts:
        return ""
    return parse_api_time(ts).astimezone().strftime("%a %d %b %H:%M:%S %Z %Y")


def event_time(ts: str) -> str:
    """`2026-01-31T12:00:00.00+0000` in local time (the `time` column of `cf events`)."""
    return parse_api_time(ts).astimezone().strftime("%Y-%m-%dT%H:%M:%S.00%z")


def since(uptime_seconds: float, now: float) -> str:
    """The `since` column of `cf app`: when an instance with that uptime started, in UTC."""
    return datetime.fromtimestamp(now - uptime_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def app_summary(summary: AppSummary) -> str:
    """The block `cf app` (and the end of `cf push`, `cf start`, ...) prints about an app."""
    app, droplet = summary.app, summary.droplet
    lines = [key_values([
        ("name:", app["name"]), ("requested state:", app["state"].lower()),
        ("routes:", ", ".join(summary.routes)),
        ("last uploaded:", local_date(droplet["created_at"]) if droplet else ""),
        ("stack:", droplet["stack"] if droplet else ""),
    ]), "buildpacks:"]
    if droplet and droplet["buildpacks"]:
        rows: list[list[str]] = [["name", "version", "detect output", "buildpack name"]]
        for b in droplet["buildpacks"]:
            rows.append([b.get("name") or "", b.get("version") or "", b.get("detect_output") or "",
                         b.get("buildpack_name") or ""])
        lines.append(indent(table(rows), "\t"))
    for view in summary.processes:
        proc = view.process
        lines.append("")
        lines.append(key_values([
            ("type:", proc["type"]), ("sidecars:", ", ".join(view.sidecars)),
            ("instances:", f"{view.running}/{proc['instances']}"),
            ("memory usage:", megabytes(proc["memory_in_mb"])), ("start command:", proc["command"] or ""),
        ]))
        if not view.stats:
            lines.append("There are no running instances of this process.")
            continue
        inst: list[list[str]] = [["", "state", "since", "cpu", "memory", "disk", "details"]]
        for s in view.stats:
            started = ""
            if s.get("uptime") is not None and s["state"] == "RUNNING":
                started = since(s["uptime"], summary.now)
            u = s.get("usage") or {}
            inst.append([f"#{s['index']}", s["state"].lower(), started,
                         f"{(u.get('cpu') or 0) * 100:.1f}%",
                         f"{human_bytes(u.get('mem'))} of {megabytes(proc['memory_in_mb'])}",
                         f"{human_bytes(u.get('disk'))} of {megabytes(proc['disk_in_mb'])}", s.get("details") or ""])
        lines.append(table(inst))
    return "\n".join(lines)


def log_line(envelope: JsonObject) -> str:
    """A log envelope as the cf CLI v7/v8 prints it (one line per line of the message)::

        2019-05-18T02:53:35.00+0000 [APP/PROC/WEB/0] OUT message

    with three spaces before it and the time in local time, centiseconds."""
    ts = datetime.fromtimestamp(envelope["timestamp"] / 1e9).astimezone()
    stamp = ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 10000:02d}" + ts.strftime("%z")
    header = f"   {stamp} [{envelope['source_type']}/{envelope['instance']}] {envelope['stream']} "
    return "\n".join(header + part for part in envelope["message"].split("\n"))
