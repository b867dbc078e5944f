"""Checks: each proves one claim of the tutorial on any target.

A check shows exactly one line: `✔ <what was proven>`, or `⊘ skipped: <claim> (<why>)` when the
target cannot show it (the marks: `PASSED_MARK`, `SKIPPED_MARK`; in a notebook also as a PASS or
SKIP badge). Otherwise it raises `CheckFailed` with what was expected, what was seen and a hint
(its message starts with `FAILED_MARK`, ✘). The rooms: `core` (the `check` decorator, results,
failures), `snapshot` (processes and sockets inside an instance), `part1` and `parts_2_3` (the
claims of each part).
"""

from __future__ import annotations

from .core import (
    DEFAULT_DEADLINE,
    FAILED_MARK,
    PASSED_MARK,
    POLL_SECONDS,
    SKIPPED_MARK,
    CheckFailed,
    CheckResult,
    _Fail,
    check,
    fail,
)
from .part1 import (
    CONFIG,
    GREETING,
    SIDECAR_DOWN,
    app_answers,
    cf_app_shows_sidecar,
    codependent_crash,
    config_from_sidecar,
    crash_logged,
    hung_sidecar_unnoticed,
    logs_show_app_and_sidecar,
    memory_limit_carved,
    processes_in_one_container,
    sidecar_crash_recovers,
    sidecar_listening,
    sidecar_per_instance,
    sidecar_port_private,
    sidecar_registered,
    wait_until_reachable,
)
from .part3 import config_inside_container as config_inside_container  # Part 3: inside the container
from .part3 import port_in_container as port_in_container
from .part3 import sidecar_beside_app as sidecar_beside_app
from .parts_2_3 import (
    download_error_line,
    download_failed,
    droplet_holds,
    latest_build,
    sidecar_logged,
    staging_failed,
    staging_log,
    supply_ran,
)
from .snapshot import ContainerSnapshot, TcpSocket, container_snapshot, parse_snapshot, show_sockets

__all__ = [
    "CONFIG",
    "DEFAULT_DEADLINE",
    "FAILED_MARK",
    "GREETING",
    "PASSED_MARK",
    "POLL_SECONDS",
    "SIDECAR_DOWN",
    "SKIPPED_MARK",
    "CheckFailed",
    "CheckResult",
    "ContainerSnapshot",
    "TcpSocket",
    "_Fail",
    "app_answers",
    "cf_app_shows_sidecar",
    "check",
    "codependent_crash",
    "config_from_sidecar",
    "container_snapshot",
    "crash_logged",
    "download_error_line",
    "download_failed",
    "droplet_holds",
    "fail",
    "hung_sidecar_unnoticed",
    "latest_build",
    "logs_show_app_and_sidecar",
    "memory_limit_carved",
    "parse_snapshot",
    "processes_in_one_container",
    "show_sockets",
    "sidecar_crash_recovers",
    "sidecar_listening",
    "sidecar_logged",
    "sidecar_per_instance",
    "sidecar_port_private",
    "sidecar_registered",
    "staging_failed",
    "staging_log",
    "supply_ran",
    "wait_until_reachable",
]
