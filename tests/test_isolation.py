"""No privilege on the host from inside a container, through the real `localcf` command.

An app (and a buildpack while staging) tries to read the user's home, the state dir's token,
another app's droplet and socket, and to write outside its own tree; every attempt must fail,
while the same commands on its own files succeed (so a failure is the isolation, not a typo).
Runs in the namespaces runtime only; when the tests run as root (as CI does), this also checks
that nothing of a container is host root.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import stat
import tempfile
import uuid
from pathlib import Path

import pytest

from conftest import ROOT, LocalCF
from test_platform_runtime import (delete, namespaces_available, push_runtime_app, stats, wait_for)

CONTAINER_HOST_ID = 200000  # localcf.runtime.CONTAINER_HOST_ID: what a container's ids map to under root


def attempts(checks: dict[str, str]) -> str:
    """A shell script that runs each command and prints NAME:REACHED or NAME:DENIED."""
    lines = ['try_() { n=$1; shift; if sh -c "$1" >/dev/null 2>&1; then echo "$n:REACHED"; '
             'else echo "$n:DENIED"; fi; }']
    lines += [f"try_ {name} {shlex.quote(cmd)}" for name, cmd in checks.items()]
    return "\n".join(lines) + "\n"


def outcome(out: str) -> dict[str, str]:
    return dict(m.groups() for m in re.finditer(r"^\s*(\w+):(REACHED|DENIED)\s*$", out, re.M))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """A namespaces-mode daemon whose user has a home with a secret in it."""
    if not namespaces_available():
        pytest.skip("Linux user namespaces are not available on this host")
    base = tmp_path_factory.mktemp("isolation")
    home = base / "user-home"
    (home / ".ssh").mkdir(parents=True)
    secret = home / ".ssh" / "id_ed25519"
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY----- not for apps\n")
    lcf = LocalCF(base / "state")
    lcf.env.update(LOCALCF_RUNTIME="namespaces", HOME=str(home), LOCALCF_GRACEFUL_SECONDS="2")
    lcf("start")
    yield lcf, home, secret
    lcf("stop", check=False)


def relay_socket(state: Path, instance: str) -> Path:
    """Where the runtime put an instance's routed-port socket on the host (see Container._choose_relay_path)."""
    cdir = (state / "containers" / instance).resolve()
    near = cdir / "routed.sock"
    if len(str(near).encode()) <= 100:
        return near
    digest = hashlib.sha256(str(cdir).encode()).hexdigest()[:20]
    return Path(tempfile.gettempdir()) / f"localcf-{os.getuid()}" / f"{digest}.sock"


def test_an_app_reaches_nothing_of_the_host(world, tmp_path: Path) -> None:
    lcf, home, secret = world
    state = lcf.home.resolve()
    mine = push_runtime_app(lcf, tmp_path)
    other = push_runtime_app(lcf, tmp_path)
    try:
        other_instance = stats(lcf, other)[0]["instance_guid"]
        other_file = state / "containers" / other_instance / "vcap" / "app" / "app.py"
        other_sock = relay_socket(state, other_instance)
        token = state / "token"
        src = ROOT / "src" / "localcf"
        # What the app goes for is really there on the host.
        for path in (secret, token, other_file, other_sock, src / "__init__.py"):
            assert path.exists(), path
        # On the host, only the platform's user may connect to an instance's socket.
        assert stat.S_IMODE(other_sock.stat().st_mode) == 0o600
        marker = f"pwned-{uuid.uuid4().hex[:8]}"
        script = attempts({
            "own_read": "cat /home/vcap/app/app.py",
            "own_write": f"touch /home/vcap/app/{marker} && touch /tmp/{marker}",
            "home": f"cat {secret}",
            "home_dir": f"ls {home}",
            "token": f"cat {token}",
            "other_droplet": f"cat {other_file}",
            "droplet_blobs": f"ls {state}/blobs/droplets",
            "other_socket": f"python -c 'import socket,sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])' "
                            f"{other_sock}",
            "write_state": f"touch {state}/{marker}",
            "write_src": f"touch {src}/{marker}",
            "write_etc": f"touch /etc/{marker}",
            "write_usr": f"touch /usr/{marker}",
            "shadow": "cat /etc/shadow",
        })
        seen = outcome(lcf("ssh", mine["name"], "-c", script).out)
        assert seen.pop("own_read") == "REACHED" and seen.pop("own_write") == "REACHED", seen
        assert seen == {k: "DENIED" for k in seen} and len(seen) == 11, seen
        for where in (state, src):
            assert not (where / marker).exists()

        who = lcf("ssh", mine["name"], "-c", "id; grep '^vcap:' /etc/passwd; grep CapEff /proc/self/status").out
        ident, passwd, caps = who.splitlines()
        assert ident.startswith("uid=2000(vcap) gid=2000(vcap)"), ident
        assert passwd.startswith("vcap:x:2000:2000:"), passwd
        assert caps.split() == ["CapEff:", "0000000000000000"], caps
    finally:
        delete(lcf, mine)
        delete(lcf, other)


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            continue
    return kids


def _uids_on_host(instance: str) -> dict[int, list[int]]:
    """pid -> [real, effective, saved, fs] uids of the host processes of one instance's container:
    the init (the child of the `unshare` whose command line names the container's folder; its own
    command line reads /tmp/garden-init) and every process whose environment names the instance."""
    found = {}
    inits: set[int] = set()
    rows = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            environ = Path(f"/proc/{name}/environ").read_bytes()
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            status = Path(f"/proc/{name}/status").read_text()
        except OSError:
            continue
        if (cmdline.startswith(b"unshare") or b"/unshare\0" in cmdline) and instance.encode() in cmdline:
            inits.update(_children(int(name)))
            continue
        rows.append((int(name), instance.encode() in environ, status))
    for pid, inside, status in rows:
        if inside or pid in inits:
            uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
            found[pid] = [int(v) for v in uid_line.split()[1:]]
    assert inits & set(found), f"the init of {instance} was not found among the host's processes"
    return found


def test_container_processes_are_never_host_root(world, tmp_path: Path) -> None:
    lcf, _, _ = world
    app = push_runtime_app(lcf, tmp_path)
    try:
        instance = stats(lcf, app)[0]["instance_guid"]
        # the init, the launcher-started app and sidecar (bash exec'd into python), and this ssh session
        found = wait_for(lambda: (lambda f: f if len(f) >= 3 else None)(_uids_on_host(instance)), 10,
                         "the container's processes on the host")
        for pid, uids in found.items():
            assert 0 not in uids, (pid, uids)
            if os.geteuid() == 0:
                assert uids == [CONTAINER_HOST_ID] * 4, (pid, uids)
            else:
                assert uids == [os.geteuid()] * 4, (pid, uids)
    finally:
        delete(lcf, app)


def test_staging_reaches_nothing_of_the_host(world, tmp_path: Path) -> None:
    lcf, home, secret = world
    state = lcf.home.resolve()
    token = state / "token"
    marker = f"pwned-{uuid.uuid4().hex[:8]}"
    bp = tmp_path / "nosy_buildpack"
    (bp / "bin").mkdir(parents=True)
    script = attempts({
        "own_write": f"touch /tmp/{marker} && touch /home/vcap/{marker}",
        "home": f"cat {secret}",
        "token": f"cat {token}",
        "write_state": f"touch {state}/{marker}",
        "write_src": f"touch {ROOT / 'src' / 'localcf'}/{marker}",
        "db": f"cat {state}/localcf.db",
    })
    (bp / "bin" / "supply").write_text("#!/bin/bash\n" + script + 'echo "uid:$(id -u) $(grep CapEff /proc/self/status)"\n')
    (bp / "bin" / "supply").chmod(0o755)
    app = tmp_path / "nosy"
    app.mkdir()
    name = f"nosy-{uuid.uuid4().hex[:6]}"
    (app / "manifest.yml").write_text(f"applications: [{{name: {name}, no-route: true, "
                                      f"buildpacks: [{bp}, binary_buildpack]}}]\n")
    (app / "Procfile").write_text("web: sleep 1000\n")
    try:
        out = lcf("push", "--no-start", cwd=app).out
        seen = outcome(out)
        assert seen.pop("own_write") == "REACHED", out
        assert seen == {k: "DENIED" for k in ("home", "token", "write_state", "write_src", "db")}, out
        assert re.search(r"uid:2000 CapEff:\s+0000000000000000", out), out
        assert not (state / marker).exists()
    finally:
        lcf("delete", name, "-f", check=False)


def test_process_mode_says_apps_run_as_the_user(tmp_path: Path) -> None:
    lcf = LocalCF(tmp_path / "state")
    lcf.env.update(LOCALCF_RUNTIME="process")
    try:
        started = lcf("start").out
        status = lcf("status").out
        for out in (started, status):
            assert re.search(r"^Notice: .*no container isolation, apps run as the user running localcf", out, re.M), out
    finally:
        lcf("stop", check=False)


def test_ssh_command_ends_when_the_client_is_killed(world, tmp_path: Path) -> None:
    """As on a cell: a dropped ssh connection hangs up the session's processes."""
    import signal
    import subprocess
    import time

    from conftest import BIN

    lcf, _, _ = world
    app = push_runtime_app(lcf, tmp_path)
    try:
        tag = f"{300 + int(uuid.uuid4().int % 600)}"
        client = subprocess.Popen([str(BIN / "localcf"), "ssh", app["name"], "-c", f"sleep {tag}; echo survived"],
                                  env=lcf.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        try:
            look = f"pgrep -x -f 'sleep {tag}' || true"
            wait_for(lambda: lcf("ssh", app["name"], "-c", look).out.strip(), 20, "the remote sleep to start")
        finally:
            client.send_signal(signal.SIGKILL)
            client.wait()
            client.stdout.close()
            client.stderr.close()
        deadline = time.monotonic() + 10
        while lcf("ssh", app["name"], "-c", look).out.strip() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert lcf("ssh", app["name"], "-c", look).out.strip() == "", "the remote command outlived its client"
    finally:
        delete(lcf, app)
