"""The daemon's start: racing starters, and a failed start that shows its cause. Real `localcf`
processes, each against a state dir of its own."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import BIN, LocalCF, Result


@pytest.fixture
def cold(tmp_path: Path) -> Iterator[LocalCF]:
    """A state dir nobody started yet; its daemon (if any) is stopped at the end."""
    cf = LocalCF(tmp_path / "cold-home")
    yield cf
    cf("stop", check=False)


def daemon_pids_serving(cf: LocalCF) -> list[str]:
    return re.findall(r"localcf daemon (\d+) serving", (cf.home / "daemon.log").read_text())


def test_25_racing_starters_all_succeed_with_one_daemon(cold: LocalCF) -> None:
    verbs = [("start",) if i % 2 == 0 else ("apps",) for i in range(25)]
    with ThreadPoolExecutor(max_workers=25) as pool:
        results = list(pool.map(lambda args: cold(*args, check=False, timeout=180), verbs))
    failures = [(v, r.code, r.text) for v, r in zip(verbs, results) if r.code != 0]
    assert not failures, failures
    assert len(daemon_pids_serving(cold)) == 1, (cold.home / "daemon.log").read_text()
    pid = json.loads((cold.home / "daemon.json").read_text())["pid"]
    started = [r.out for v, r in zip(verbs, results) if v == ("start",)]
    assert all(f"pid {pid}," in out for out in started), started
    # each says "started" or "is running" (an `apps` may have started the daemon first): the pid is the one
    assert all(re.search(r"^localcf (started|is running): pid \d+,", out, re.M) for out in started), started
    assert all("No apps found" in r.out for v, r in zip(verbs, results) if v == ("apps",))
    # a start attempt that lost the race leaves no second daemon behind it
    assert "another localcf daemon holds" not in (cold.home / "daemon.log").read_text()


def test_api_port_taken_shows_the_bind_error(cold: LocalCF) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cold.env["LOCALCF_API_PORT"] = str(port)
        res = cold("start", check=False)
    assert res.code == 1
    assert res.err.startswith("FAILED\nlocalcf daemon exited with status 1 while starting:\n")
    assert (f"the API cannot listen on 127.0.0.1:{port} (from $LOCALCF_API_PORT): "
            "[Errno 98] Address already in use") in res.err
    assert f"(its log is {cold.home / 'daemon.log'})" in res.err
    assert not (cold.home / "daemon.json").exists()


def test_api_port_setting_is_used(cold: LocalCF) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cold.env["LOCALCF_API_PORT"] = str(port)
    res = cold("start")
    assert f"API http://127.0.0.1:{port}" in res.out


def test_broken_state_dir_shows_the_whole_cause_not_older_log_lines(cold: LocalCF) -> None:
    cold.home.mkdir(parents=True)
    (cold.home / "localcf.db").write_bytes(b"this is not a database " * 200)
    # an earlier life's log, longer than a page: none of it is the cause
    (cold.home / "daemon.log").write_text("".join(f"old line {i} of an earlier daemon\n" for i in range(400)))
    res = cold("start", check=False)
    assert res.code == 1
    assert "old line" not in res.text
    assert "Traceback (most recent call last):" in res.err
    assert "sqlite3.DatabaseError: file is not a database" in res.err
    assert res.err.rstrip().endswith(
        f"localcf: the daemon could not start: file is not a database\n(its log is {cold.home / 'daemon.log'})")


def test_state_dir_that_is_a_file_is_named(tmp_path: Path) -> None:
    home = tmp_path / "a-file"
    home.write_text("")
    res = LocalCF(home)("start", check=False)
    assert res.code == 1
    assert res.err == (f"FAILED\ncannot use the state dir {home}: it is not a folder. Set LOCALCF_HOME to a "
                       "folder you can write, or move that file away.\n")


def test_bad_read_timeout_setting_is_named(cold: LocalCF) -> None:
    cold.env["LOCALCF_API_READ_TIMEOUT"] = "soon"
    res = cold("start", check=False)
    assert res.code == 1
    assert "localcf: LOCALCF_API_READ_TIMEOUT='soon' is not a positive number of seconds" in res.err


def test_a_daemon_started_by_hand_is_waited_for_not_fought(cold: LocalCF) -> None:
    # a daemon launched directly (not through `localcf start`) holds the state dir while it starts;
    # a starter at the same moment waits for it and uses it
    cold.home.mkdir(parents=True)
    env = dict(cold.env, PYTHONUNBUFFERED="1")
    with open(cold.home / "daemon.log", "ab") as log:
        by_hand = subprocess.Popen([str(BIN / "python"), "-m", "localcf.daemon"], env=env, stdout=log,
                                   stderr=log, start_new_session=True)
    try:
        res: Result = cold("start", check=False)
        assert res.code == 0, res.text
        assert f"pid {by_hand.pid}," in res.out
        assert daemon_pids_serving(cold) == [str(by_hand.pid)]
    finally:
        cold("stop", check=False)
        by_hand.wait(timeout=30)


def test_token_is_private_and_stable(cold: LocalCF) -> None:
    cold("start")
    token = cold.home / "token"
    assert oct(token.stat().st_mode & 0o777) == "0o600"
    first = token.read_text()
    cold("stop")
    cold("start")
    assert token.read_text() == first and len(first.strip()) >= 32
    assert not [p for p in os.listdir(cold.home) if p.startswith(".token-")]


def test_staging_folders_a_dead_daemon_left_are_reclaimed_at_start(cold: LocalCF) -> None:
    cold("start")
    cold("stop")
    leftover = cold.home / "staging" / "build-of-a-killed-daemon"
    (leftover / "contents").mkdir(parents=True)
    (leftover / "contents" / "droplet.tgz").write_bytes(b"x" * 4096)
    cold("start")
    assert cold.home.joinpath("staging").is_dir()
    assert not leftover.exists()
