"""The instance snapshot: processes, their MEMORY_LIMIT and TCP sockets inside a container, read
from /proc over `cf ssh` (works where neither `ss` nor `lsof` is installed)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from ..targets import Target
from .core import short as _short

__all__ = ["ContainerSnapshot", "TcpSocket", "container_snapshot", "parse_snapshot", "show_sockets"]

_SNAPSHOT_SCRIPT = r"""
echo "SELF $$"
for d in /proc/[0-9]*; do
  p=${d#/proc/}
  c=$(tr '\0' ' ' < "$d/cmdline" 2>/dev/null)
  [ -n "$c" ] || continue
  echo "PROC $p $c"
  m=$(tr '\0' '\n' < "$d/environ" 2>/dev/null | grep '^MEMORY_LIMIT=' | head -n 1)
  [ -n "$m" ] && echo "ENV $p $m"
  for f in "$d"/fd/*; do
    l=$(readlink "$f" 2>/dev/null) || continue
    case "$l" in socket:*) echo "SOCK $p $l";; esac
  done
done
echo TCP
cat /proc/net/tcp /proc/net/tcp6 2>/dev/null
"""

_TCP_STATES = {
    "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
    "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING",
}


@dataclass
class TcpSocket:
    """One line of /proc/net/tcp{,6}: addresses, state, and the owning PID when one still owns it."""

    local: str
    local_port: int
    remote: str
    remote_port: int
    state: str
    inode: int
    pid: int | None = None


@dataclass
class ContainerSnapshot:
    """Processes (PID -> command line), their MEMORY_LIMIT, and TCP sockets, seen inside a container."""

    processes: dict[int, str] = field(default_factory=dict)
    memory_limits: dict[int, str] = field(default_factory=dict)
    sockets: list[TcpSocket] = field(default_factory=list)
    #: The PID of the shell that took the snapshot (not a process of the instance), when it said so.
    self_pid: int | None = None

    def pids_of(self, needle: str) -> list[int]:
        """PIDs whose command line contains `needle` (the snapshot's own shell excluded)."""
        return sorted(pid for pid, cmd in self.processes.items()
                      if needle in cmd and "/proc/" not in cmd and "MEMORY_LIMIT" not in cmd)

    def command(self, pid: int | None) -> str:
        return self.processes.get(pid, "?") if pid is not None else "-"


def _hex_address(text: str) -> tuple[str, int]:
    host_hex, port_hex = text.split(":")
    raw = bytes.fromhex(host_hex)
    # /proc/net/tcp prints each 32-bit word of the address in host (little-endian) byte order.
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address), int(port_hex, 16)


def parse_snapshot(output: str) -> ContainerSnapshot:
    """Parse what the snapshot script printed."""
    snap = ContainerSnapshot()
    owners: dict[int, int] = {}
    in_tcp = False
    for line in output.splitlines():
        if line.strip() == "TCP":
            in_tcp = True
            continue
        if not in_tcp:
            kind, _, rest = line.partition(" ")
            pid_text, _, value = rest.partition(" ")
            if not pid_text.isdigit():
                continue
            pid = int(pid_text)
            if kind == "SELF":
                snap.self_pid = pid
            elif kind == "PROC":
                snap.processes[pid] = value.strip()
            elif kind == "ENV":
                snap.memory_limits[pid] = value.partition("=")[2].strip()
            elif kind == "SOCK":
                m = re.match(r"socket:\[(\d+)\]", value.strip())
                if m:
                    owners[int(m.group(1))] = pid
            continue
        fields = line.split()
        if len(fields) < 10 or not fields[0].rstrip(":").isdigit():
            continue
        try:
            local, local_port = _hex_address(fields[1])
            remote, remote_port = _hex_address(fields[2])
        except ValueError:
            continue
        inode = int(fields[9]) if fields[9].isdigit() else 0
        snap.sockets.append(TcpSocket(local, local_port, remote, remote_port,
                                      _TCP_STATES.get(fields[3].upper(), fields[3]), inode, owners.get(inode)))
    return snap


def container_snapshot(target: Target, app: str, index: int = 0) -> ContainerSnapshot:
    """Processes and TCP sockets inside instance `index` of `app`, read from /proc over `cf ssh`
    (works where neither `ss` nor `lsof` is installed)."""
    return parse_snapshot(target.ssh(app, _SNAPSHOT_SCRIPT, index=index).output)


def show_sockets(target: Target, app: str, port: int | None = None, index: int = 0,
                 snapshot: ContainerSnapshot | None = None) -> None:
    """Print an `lsof -i`-like table of the TCP sockets inside the container (only `port`'s if given),
    from a fresh snapshot or the one given (e.g. the one a check took at the right moment)."""
    where = f" -i {index}" if index else ""
    grep = f" | grep {port}" if port is not None else ""
    print(f'$ cf ssh {app}{where} -c "lsof -i{grep}"   # the kit reads the same from /proc/net/tcp', flush=True)
    snap = snapshot if snapshot is not None else container_snapshot(target, app, index)
    rows = [("COMMAND", "PID", "STATE", "LOCAL", "REMOTE")]
    for s in snap.sockets:
        if port is not None and port not in (s.local_port, s.remote_port):
            continue
        rows.append((_short(snap.command(s.pid).split(" ")[0].rsplit("/", 1)[-1], 20) if s.pid else "-",
                     str(s.pid or "-"), s.state, f"{s.local}:{s.local_port}",
                     f"{s.remote}:{s.remote_port}" if s.state != "LISTEN" else "*"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
