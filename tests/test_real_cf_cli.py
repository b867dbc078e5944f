"""Cloud Foundry's own cf CLI (v7.2.0) driving localcf: login, push with a sidecar, logs, ssh, events,
buildpacks, delete, and the CLI's own messages for a wrong password, an expired and a missing token.

The real `cf` comes from `../shared/tools/cf-cli` beside the project root (or the folder named by
`LOCALCF_TEST_CF_CLI_DIR`); where it is absent the module is skipped with the reason. Each test runs
`cf` with a CF_HOME of its own.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import socket
import subprocess
import time
import uuid
import zipfile
from pathlib import Path

import pytest
import requests
from conftest import FIXTURES, ROOT, LocalCF, Result, Running, free_port

# the folder holding the real `cf`: $LOCALCF_TEST_CF_CLI_DIR, else ../shared/tools/cf-cli beside the project
CF_DIR = Path(os.environ.get("LOCALCF_TEST_CF_CLI_DIR") or ROOT.parent / "shared" / "tools" / "cf-cli")
if not os.access(CF_DIR / "cf", os.X_OK):
    pytest.skip(f"needs Cloud Foundry's cf CLI: ../shared/tools/cf-cli/cf beside the project root, or a folder "
                f"holding cf in LOCALCF_TEST_CF_CLI_DIR (not found at {CF_DIR / 'cf'})", allow_module_level=True)

APP = "app-using-config-server"
CONFIG_BODY = '{"Scope":"some-service.admin","Password":"not-a-real-p4$$w0rd"}'
LOG_LINE = re.compile(
    r"^   \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d\d[+-]\d{4} "
    r"\[(APP/PROC/WEB(/SIDECAR/[A-Z0-9-]+)?|STG|API|CELL|RTR|SSH)/\d+\] (OUT|ERR) .*$")
NOT_LOGGED_IN = "Not logged in. Use 'cf login' or 'cf login --sso' to log in."
REJECTED = "Credentials were rejected, please try again."
EXPIRED = "The token expired, was revoked, or the token ID is incorrect. Please log back in to re-authenticate."
WAIT = 60.0  # a guard against a hung platform, not a performance assertion


class RealCF:
    """Runs the real `cf` binary with a CF_HOME of its own."""

    def __init__(self, home: Path):
        home.mkdir(parents=True, exist_ok=True)
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CF_")}
        self.env.update(CF_HOME=str(home), PATH=f"{CF_DIR}{os.pathsep}{os.environ.get('PATH', '')}")

    def __call__(self, *args: str, check: bool = True, cwd: Path | None = None, timeout: float = 180,
                 env: dict[str, str] | None = None, input: str | None = None) -> Result:
        proc = subprocess.run(["cf", *args], cwd=cwd, env={**self.env, **(env or {})}, capture_output=True,
                              text=True, timeout=timeout, input=input if input is not None else "")
        res = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"cf {' '.join(args)} exited {proc.returncode}\n{res.text}")
        return res

    def start(self, *args: str) -> Running:
        return Running(["cf", *args], self.env, merge_stderr=True)


def api_url(platform: LocalCF) -> str:
    return f"http://127.0.0.1:{json.loads((platform.home / 'daemon.json').read_text())['api_port']}"


def admin_password(platform: LocalCF) -> str:
    """The password as `localcf status` shows it to the user."""
    found = re.search(r"cf auth admin (\S+)", platform("status").out)
    assert found, "localcf status names the cf CLI's password"
    return found.group(1)


def login(cf: RealCF, platform: LocalCF) -> None:
    cf("api", api_url(platform))
    cf("auth", "admin", admin_password(platform))
    cf("target", "-o", "localcf", "-s", "dev")


def app_names(platform: LocalCF) -> list[str]:
    """What localcf itself holds (through its own client, not through the cf CLI)."""
    return [a["name"] for a in platform.client().get("/v3/apps")["resources"]]


def until(check, what: str, timeout: float = WAIT, every: float = 0.3):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what} within {timeout:.0f}s; last seen: {last!r}")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> LocalCF:
    lcf = LocalCF(tmp_path_factory.mktemp("localcf-cfcli"))
    lcf("start")
    yield lcf
    lcf("stop", check=False)


@pytest.fixture(scope="module")
def cf(platform: LocalCF, tmp_path_factory: pytest.TempPathFactory) -> RealCF:
    """The real cf, logged in as admin and targeting localcf / dev."""
    real = RealCF(tmp_path_factory.mktemp("cf-home"))
    login(real, platform)
    return real


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the fixture app with the config-server sidecar built into it."""
    from sidecarlab import sidecar
    app = tmp_path_factory.mktemp("app") / APP
    shutil.copytree(FIXTURES / APP, app)
    sidecar.build(out=app / "config-server")
    return app


@pytest.fixture(scope="module")
def pushed(platform: LocalCF, cf: RealCF, app_dir: Path) -> Result:
    """The fixture app with its config-server sidecar, pushed by the real `cf push`."""
    if "runtime: namespaces" not in platform("status").out:
        pytest.skip("needs container isolation: in the process runtime the sidecar's port 8082 is a host port "
                    "(shared with anything else on the machine) and `pgrep` inside cf ssh sees host processes")
    return cf("push", cwd=app_dir)


def wait_running(cf: RealCF, name: str = APP) -> str:
    def shown() -> str | None:
        out = cf("app", name, check=False).out
        return out if re.search(r"^#0\s+running", out, re.M) else None
    return until(shown, f"{name} shown running by cf app")


def until_output(cf: RealCF, args: tuple[str, ...], needle: str) -> Result:
    def found() -> Result | None:
        res = cf(*args)
        return res if needle in res.out else None
    return until(found, f"{needle!r} in the output of cf {' '.join(args)}")


def through_router(platform: LocalCF, path: str = "/", host: str = f"{APP}.apps.localhost") -> requests.Response:
    return requests.get(f"http://127.0.0.1:{platform.router_port}{path}", headers={"Host": host}, timeout=30)


# ------------------------------------------------------------------------------------ login

def test_api_auth_target_apps(platform: LocalCF, tmp_path: Path) -> None:
    cf = RealCF(tmp_path / "cf-home")
    res = cf("api", api_url(platform))
    assert f"API endpoint:   {api_url(platform)}" in res.out
    assert "API version:    3." in res.out
    res = cf("auth", "admin", admin_password(platform))
    assert "Authenticating...\nOK" in res.out
    res = cf("target", "-o", "localcf", "-s", "dev")
    assert re.search(r"user:\s+admin", res.out) and re.search(r"org:\s+localcf", res.out)
    assert re.search(r"space:\s+dev", res.out)
    res = cf("apps")
    assert "Getting apps in org localcf / space dev as admin..." in res.out


def test_auth_from_environment_variables(platform: LocalCF, tmp_path: Path) -> None:
    cf = RealCF(tmp_path / "cf-home")
    cf("api", api_url(platform))
    res = cf("auth", env={"CF_USERNAME": "admin", "CF_PASSWORD": admin_password(platform)})
    assert "Authenticating...\nOK" in res.out
    assert re.search(r"user:\s+admin", cf("target", "-o", "localcf", "-s", "dev").out)


def test_password_is_kept_in_the_state_dir_readable_by_its_owner_only(platform: LocalCF) -> None:
    path = platform.home / "uaa-password"
    assert path.read_text().strip() == admin_password(platform)
    assert path.stat().st_mode & 0o777 == 0o600


# ------------------------------------------------------------------------- refused requests

def test_wrong_password_gets_the_cli_message_and_creates_nothing(platform: LocalCF, tmp_path: Path) -> None:
    cf = RealCF(tmp_path / "cf-home")
    cf("api", api_url(platform))
    res = cf("auth", "admin", "not-the-password", check=False)
    assert res.code == 1
    assert REJECTED in res.err and "FAILED" in res.out
    name = f"never-{uuid.uuid4().hex[:6]}"
    res = cf("create-app", name, check=False)
    assert res.code == 1 and NOT_LOGGED_IN in res.err
    assert name not in app_names(platform)


def test_missing_token_gets_the_cli_message_and_creates_nothing(platform: LocalCF, tmp_path: Path) -> None:
    cf = RealCF(tmp_path / "cf-home")
    cf("api", api_url(platform))
    name = f"never-{uuid.uuid4().hex[:6]}"
    res = cf("create-app", name, check=False)
    assert res.code == 1 and NOT_LOGGED_IN in res.err
    # and the API itself refuses a request that carries no token, as Cloud Controller does
    r = requests.post(f"{api_url(platform)}/v3/apps", json={"name": name}, timeout=10)
    assert r.status_code == 401
    assert r.json()["errors"][0]["title"] == "CF-NotAuthenticated"
    assert name not in app_names(platform)


def test_expired_token_gets_the_cli_message_and_creates_nothing(tmp_path: Path) -> None:
    short = LocalCF(tmp_path / "localcf-short-tokens")
    short.env.update(LOCALCF_UAA_ACCESS_TOKEN_SECONDS="1", LOCALCF_UAA_REFRESH_TOKEN_SECONDS="4")
    short("start")
    try:
        cf = RealCF(tmp_path / "cf-home")
        cf("api", api_url(short))
        password = admin_password(short)
        cf("auth", "admin", password)
        logged_in = time.monotonic()
        cf("target", "-o", "localcf", "-s", "dev")
        time.sleep(max(0.0, logged_in + 1.3 - time.monotonic()))
        # the access token expired, the refresh token not yet: the CLI refreshes without a word
        assert "Getting apps in org localcf / space dev as admin..." in cf("apps").out
        refreshed = time.monotonic()
        config = json.loads((cf.home / ".cf" / "config.json").read_text())
        old_token = config["AccessToken"].split(" ", 1)[1]
        time.sleep(max(0.0, refreshed + 4.5 - time.monotonic()))  # now the refresh token expired too
        name = f"never-{uuid.uuid4().hex[:6]}"
        res = cf("create-app", name, check=False)
        assert res.code == 1
        assert EXPIRED in res.err
        # an expired token presented to the API directly is refused with Cloud Controller's error
        r = requests.post(f"{api_url(short)}/v3/apps", json={"name": name},
                          headers={"Authorization": f"bearer {old_token}"}, timeout=10)
        assert r.status_code == 401 and r.json()["errors"][0]["title"] == "CF-InvalidAuthToken"
        assert name not in app_names(short)
    finally:
        short("stop", check=False)


# ------------------------------------------------------------------------------------- push

def test_push_streams_staging_and_runs_the_app_with_its_sidecar(platform: LocalCF, cf: RealCF, pushed: Result) -> None:
    out = pushed.out
    assert f"Pushing app {APP} to org localcf / space dev as admin..." in out
    order = ["Staging app and tracing logs...", "   Downloading python_buildpack...",
             "   -----> Python Buildpack version", "   Exit status 0", "   Uploading droplet, build artifacts cache...",
             "   Uploading complete", f"Waiting for app {APP} to start..."]
    positions = [out.find(line) for line in order]
    assert -1 not in positions and positions == sorted(positions), out
    assert "requested state:   started" in out
    assert re.search(r"^sidecars:\s+config-server$", out, re.M), out
    assert re.search(r"^#0\s+running\s", out, re.M), out
    shown = wait_running(cf)
    assert re.search(r"^sidecars:\s+config-server$", shown, re.M)
    assert re.search(r"^type:\s+web$", shown, re.M)
    r = through_router(platform, "/config")  # the app asks its sidecar inside the container
    assert r.status_code == 200 and r.text.strip() == CONFIG_BODY


def test_apps_lists_the_running_app_and_its_manifest_round_trips(cf: RealCF, pushed: Result, tmp_path: Path) -> None:
    wait_running(cf)
    row = next(line for line in cf("apps").out.splitlines() if line.startswith(APP + " "))
    assert row.split() == [APP, "started", "web:1/1", f"{APP}.apps.localhost"]
    cf("create-app-manifest", APP, "-p", str(tmp_path / "manifest.yml"))
    import yaml
    (entry,) = yaml.safe_load((tmp_path / "manifest.yml").read_text())["applications"]
    assert entry["name"] == APP and entry["env"]["CONFIG_SERVER_PORT"] == "8082"
    assert entry["sidecars"] == [{"name": "config-server", "process_types": ["web"], "command": "./config-server"}]
    assert entry["processes"][0]["memory"] == "256M"


def test_second_push_uploads_only_what_the_platform_lacks(cf: RealCF, pushed: Result, app_dir: Path) -> None:
    """Resource matching: the 9 MB sidecar binary is in the resource pool after the first push."""
    def uploaded(out: str) -> str:
        """The progress lines between `Uploading files...` and `Waiting for API ...`."""
        return out.split("Uploading files...", 1)[1].split("Waiting for API", 1)[0]
    again = cf("push", cwd=app_dir)
    assert " MiB / " in uploaded(pushed.out), pushed.out
    assert " MiB / " not in uploaded(again.out) and " KiB / " in uploaded(again.out), again.out
    assert re.search(r"^#0\s+running\s", again.out, re.M), again.out
    res = cf("ssh", APP, "-c", "stat -c %a app/config-server && pgrep -x config-server >/dev/null && echo up")
    assert res.out.split() == ["755", "up"]


def test_curl_sidecars(cf: RealCF, pushed: Result) -> None:
    guid = cf("app", APP, "--guid").out.strip()
    body = json.loads(cf("curl", f"/v3/apps/{guid}/sidecars").out)
    assert body["pagination"]["total_results"] == 1
    (sc,) = body["resources"]
    assert (sc["name"], sc["command"], sc["process_types"], sc["origin"]) == (
        "config-server", "./config-server", ["web"], "user")
    assert sc["relationships"]["app"]["data"]["guid"] == guid


def test_recent_logs_show_app_sidecar_staging_api_and_router_lines(platform: LocalCF, cf: RealCF,
                                                                  pushed: Result) -> None:
    wait_running(cf)
    assert through_router(platform, "/").status_code == 200
    res = until_output(cf, ("logs", APP, "--recent"), "[RTR/")
    lines = [line for line in res.out.splitlines() if line.startswith("   ")]
    assert lines and all(LOG_LINE.match(line) for line in lines), res.out
    for tag in ("[APP/PROC/WEB/0]", "[APP/PROC/WEB/SIDECAR/CONFIG-SERVER/0]", "[STG/0]", "[API/0]", "[RTR/0]"):
        assert tag in res.out, f"{tag} missing from cf logs --recent:\n{res.out}"
    assert re.search(r"\[APP/PROC/WEB/SIDECAR/CONFIG-SERVER/0\] OUT listening 0\.0\.0\.0:8082", res.out)
    assert f"[API/0] OUT Creating build for app with guid {cf('app', APP, '--guid').out.strip()}" in res.out


def test_streaming_logs_follow_new_lines(platform: LocalCF, cf: RealCF, pushed: Result) -> None:
    wait_running(cf)
    tail = cf.start("logs", APP)
    try:
        assert tail.next_line().startswith(f"Retrieving logs for app {APP} in org localcf / space dev as admin...")
        marker = f"/?probe={uuid.uuid4().hex}"
        deadline = time.monotonic() + WAIT
        seen: list[str] = []
        while time.monotonic() < deadline:
            through_router(platform, marker)
            try:
                while True:
                    seen.append(tail.lines.get(timeout=1))
                    if "[RTR/" in seen[-1] and marker in seen[-1]:
                        break
            except Exception:
                continue
            break
        assert any("[RTR/" in s and marker in s for s in seen), seen
        assert all(LOG_LINE.match(s) for s in seen if s.startswith("   ")), seen
    finally:
        tail.stop()


# -------------------------------------------------------------------------------------- ssh

def test_ssh_runs_a_command_with_its_exit_status(cf: RealCF, pushed: Result) -> None:
    wait_running(cf)
    res = cf("ssh", APP, "-c", "echo out-line; echo err-line >&2; echo $INSTANCE_INDEX; exit 3", check=False)
    assert res.code == 3
    assert res.out.splitlines()[:2] == ["out-line", "0"] and "err-line" in res.err
    code = cf("ssh-code").out.strip()
    assert re.fullmatch(r"[\w-]{20,}", code), "cf ssh-code prints a one-time code"


def test_ssh_interactive_shell_on_a_terminal(cf: RealCF, pushed: Result) -> None:
    wait_running(cf)
    pid, fd = pty.fork()
    if pid == 0:  # the child: the real cf on a terminal
        os.execvpe("cf", ["cf", "ssh", APP], cf.env)
    out = b""

    def read_until(needle: bytes, timeout: float = WAIT) -> None:
        nonlocal out
        deadline = time.monotonic() + timeout
        while needle not in out and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    return
    try:
        read_until(b"$ ")
        os.write(fd, b"tty; echo SHELL-OK-$((6*7))\n")
        read_until(b"SHELL-OK-42")
        os.write(fd, b"exit 7\n")
        read_until(b"\x00", timeout=5)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    text = out.decode(errors="replace")
    assert re.search(r"/dev/pts/\d+", text), text
    assert "SHELL-OK-42" in text
    assert os.waitstatus_to_exitcode(status) == 7


def test_ssh_local_forward_reaches_the_sidecar_port(cf: RealCF, pushed: Result) -> None:
    wait_running(cf)
    port = free_port()
    fwd = cf.start("ssh", APP, "-N", "-L", f"{port}:localhost:8082")
    try:
        def fetch() -> str | None:
            try:
                return requests.get(f"http://127.0.0.1:{port}/config/", timeout=5).text
            except requests.RequestException:
                return None
        assert until(fetch, "the sidecar answering through cf ssh -L").strip() == CONFIG_BODY
    finally:
        fwd.stop()


def test_events_show_the_crash_after_kill_9_of_the_sidecar(cf: RealCF, pushed: Result) -> None:
    wait_running(cf)
    cf("ssh", APP, "-c", "kill -9 $(pgrep -x config-server)", check=False)
    res = until_output(cf, ("events", APP), " app.crash ")
    assert f"Getting events for app {APP} in org localcf / space dev as admin..." in res.out
    crash = next(line for line in res.out.splitlines() if re.search(r"\sapp\.crash\s", line))
    assert "index: 0" in crash and "reason: CRASHED" in crash
    assert "exit_description: APP/PROC/WEB/SIDECAR/CONFIG-SERVER: Exited with status 137" in crash
    events = [line.split()[1] for line in res.out.splitlines()[2:] if line.strip()]
    assert events.index("app.crash") < events.index("audit.app.ssh-authorized"), "newest first, as cf events lists"
    wait_running(cf)  # restarted at once after a first crash


# ------------------------------------------------------------------------ buildpacks, delete

def test_create_list_and_delete_a_buildpack(cf: RealCF, tmp_path: Path) -> None:
    name = f"cli_bp_{uuid.uuid4().hex[:6]}"
    zpath = tmp_path / "my-buildpack-v1.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for script, body in (("detect", "exit 1"), ("supply", "echo supplied")):
            info = zipfile.ZipInfo(f"bin/{script}")
            info.external_attr = 0o755 << 16
            z.writestr(info, f"#!/usr/bin/env bash\n{body}\n")
    res = cf("create-buildpack", name, str(zpath), "1")
    assert f"Creating buildpack {name} as admin..." in res.out and "Processing uploaded buildpack" in res.out
    listing = cf("buildpacks").out
    row = next(line for line in listing.splitlines() if f" {name} " in f" {line} ")
    assert row.split() == ["1", name, "cflinuxfs4", "true", "false", "my-buildpack-v1.zip"]
    assert "python_buildpack" in listing
    res = cf("create-buildpack", name, str(zpath), "1", check=False)
    assert res.code != 0 and f"The buildpack name {name} is already in use" in res.text
    cf("delete-buildpack", "-f", name)
    assert f" {name} " not in cf("buildpacks").out


def test_delete_with_routes(platform: LocalCF, cf: RealCF, tmp_path: Path) -> None:
    name = f"delete-me-{uuid.uuid4().hex[:6]}"
    app = tmp_path / name
    app.mkdir()
    (app / "run.sh").write_text("#!/bin/sh\nexec sleep 1000\n")
    (app / "run.sh").chmod(0o755)
    (app / "manifest.yml").write_text(f"applications:\n- name: {name}\n  memory: 64M\n"
                                      "  buildpacks: [binary_buildpack]\n"
                                      "  command: ./run.sh\n  health-check-type: process\n")
    cf("push", "--no-start", cwd=app)
    routes = json.loads(cf("curl", "/v3/routes").out)["resources"]
    assert any(r["host"] == name for r in routes)
    res = cf("delete", "-f", "-r", name)
    assert f"Deleting app {name} in org localcf / space dev as admin..." in res.out and "OK" in res.out
    assert name not in app_names(platform)
    assert not any(r["host"] == name for r in json.loads(cf("curl", "/v3/routes").out)["resources"])
    assert f"App '{name}' does not exist." in cf("delete", "-f", name).text


def test_root_document_announces_the_ssh_proxy_on_loopback(platform: LocalCF) -> None:
    root = requests.get(api_url(platform) + "/", timeout=10).json()["links"]
    host, _, port = root["app_ssh"]["href"].rpartition(":")
    assert host == "127.0.0.1" and port.isdigit()
    assert root["app_ssh"]["meta"]["oauth_client"] == "ssh-proxy"
    assert re.fullmatch(r"([0-9a-f]{2}:){19}[0-9a-f]{2}", root["app_ssh"]["meta"]["host_key_fingerprint"])
    with socket.create_connection((host, int(port)), timeout=5) as s:
        assert s.recv(64).startswith(b"SSH-2.0-")


def test_the_kits_cf_target_drives_localcf_through_the_real_cli(platform: LocalCF, pushed: Result, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The kit's CFTarget (what notebooks use against a real foundation) works against localcf,
    through the real cf CLI: the same checks, the same verbs."""
    from sidecarlab import checks
    from sidecarlab.targets import CFTarget
    monkeypatch.setenv("CF_USERNAME", "admin")
    monkeypatch.setenv("CF_PASSWORD", admin_password(platform))
    monkeypatch.setenv("PATH", f"{CF_DIR}{os.pathsep}{os.environ.get('PATH', '')}")
    (tmp_path / "cf-home").mkdir()
    target = CFTarget(api_url(platform), "localcf", "dev", cf_home=tmp_path / "cf-home")
    target.echo = False
    checks.sidecar_registered(target, APP, sidecar="config-server", origin="user")
    checks.cf_app_shows_sidecar(target, APP, sidecar="config-server")
    checks.processes_in_one_container(target, APP)
    until(lambda: [i for i in target.instances(APP) if i.state == "RUNNING"], "a RUNNING instance")
    assert target.ssh(APP, "echo $CF_INSTANCE_INDEX").output.strip() == "0"
    with target.tunnel(APP, 8082) as local:
        assert requests.get(f"http://127.0.0.1:{local}/config/", timeout=10).text.strip() == CONFIG_BODY
    tags = {line.tag for line in target.recent_logs(APP)}
    assert {"[APP/PROC/WEB/0]", "[APP/PROC/WEB/SIDECAR/CONFIG-SERVER/0]", "[STG/0]", "[API/0]"} <= tags
    assert target.events(APP, ["audit.app.ssh-authorized"]), "the ssh logins are audit events"
