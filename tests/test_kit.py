"""The kit's core: targets (local for real, cf through a recorded stand-in), the %cf magic, the runner."""

from __future__ import annotations

import getpass
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml
from conftest import LocalCF, install_cf_stand_in
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from sidecarlab import blobstore, checks, supply_buildpack, tutorial
from sidecarlab.checks import FAILED_MARK, PASSED_MARK, CheckFailed, part1
from sidecarlab.supply_buildpack import BuildpackError
from sidecarlab.targets import (
    ApiError,
    CFTarget,
    CommandError,
    HttpResponse,
    LocalTarget,
    SshNotAllowed,
    Target,
    TargetError,
    parse_log_line,
    target_from_params,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_1 = ROOT / "notebooks" / "01-push-app-with-sidecar.ipynb"
SIDECARLAB = Path(sys.executable).parent / "sidecarlab"
GUID = "5c3a4f0e-1d2b-4c3d-8e9f-0a1b2c3d4e5f"


# ------------------------------------------------------------------------------ LocalTarget

@pytest.fixture(scope="module")
def local(localcf: LocalCF) -> LocalTarget:
    return LocalTarget(home=localcf.home, echo=True)


def test_local_target_echoes_the_cf_command_and_streams_output(local: LocalTarget, capsys) -> None:
    result = local.cf("apps")
    out = capsys.readouterr().out
    assert out.startswith("$ cf apps\nGetting apps in org ")
    assert result.ok and result.shown == "cf apps"
    assert result.output in out


def test_local_target_reports_the_router_and_runtime_from_status(local: LocalTarget) -> None:
    local.prepare()
    status = subprocess.run([sys.executable, "-m", "localcf.cli", "status"], capture_output=True, text=True,
                            env=dict(os.environ, LOCALCF_HOME=str(local.home)), check=True).stdout
    assert f":{local.router_port} " in status
    assert f"runtime: {local.runtime}" in status
    assert local.isolation().isolated == (local.runtime == "namespaces")


def test_failing_verb_raises_with_the_command_and_the_cf_output(local: LocalTarget) -> None:
    with pytest.raises(CommandError) as info:
        local.cf("app", "no-such-app", echo=False, quiet=True)
    message = str(info.value)
    assert message.startswith("`cf app no-such-app` failed with exit status 1.")
    assert "App 'no-such-app' not found." in message


def test_curl_returns_parsed_json(local: LocalTarget) -> None:
    apps = local.curl("/v3/apps")
    assert isinstance(apps["resources"], list)
    assert "pagination" in apps


def test_missing_app_says_to_push_first(local: LocalTarget) -> None:
    with pytest.raises(TargetError, match=r"App 'ghost' was not found on the local target.*Push it first"):
        local.app_guid("ghost")


def test_log_lines_parse_in_cf_format() -> None:
    line = parse_log_line("   2019-05-18T02:53:35.00+0000 [APP/PROC/WEB/SIDECAR/CONFIG-SERVER/0] OUT "
                          "listening 0.0.0.0:8082...")
    assert line is not None
    assert (line.source, line.instance, line.stream, line.message) == (
        "APP/PROC/WEB/SIDECAR/CONFIG-SERVER", "0", "OUT", "listening 0.0.0.0:8082...")
    assert line.tag == "[APP/PROC/WEB/SIDECAR/CONFIG-SERVER/0]"
    assert parse_log_line("Retrieving logs for app x in org o / space s as admin...") is None


# ------------------------------------------------------------------------ target_from_params

def test_unknown_target_is_a_clear_error() -> None:
    with pytest.raises(TargetError, match=r"Unknown target 'kubernetes'.*'local'.*'cf'"):
        target_from_params(target="kubernetes")


def test_cf_target_names_the_missing_parameters() -> None:
    with pytest.raises(TargetError, match=r"needs the parameter\(s\) cf_org, cf_space"):
        target_from_params(target="cf", cf_api="https://api.example.com")


def test_target_from_params_ignores_other_notebook_parameters(tmp_path: Path) -> None:
    made = target_from_params(target="local", app_name="x", config_server_port=8082, localcf_home=str(tmp_path))
    assert isinstance(made, LocalTarget) and made.home == tmp_path.resolve()


# ------------------------------------------------------- CFTarget, against a recorded stand-in
# No real foundation is reachable where the kit is developed, so these tests drive a stand-in
# `cf` that records its argv and answers like the cf CLI; they prove what CFTarget sends to `cf`.

STAND_IN = r'''#!{python}
import json, os, sys
args = sys.argv[1:]
env = os.environ
with open(env["CF_STAND_IN_LOG"], "a") as log:
    log.write(json.dumps({{"argv": args, "has_user": bool(env.get("CF_USERNAME")), "cf_home": env.get("CF_HOME"),
                          "cf_trace": env.get("CF_TRACE"), "cf_color": env.get("CF_COLOR"),
                          "clicolor_force": env.get("CLICOLOR_FORCE")}}) + "\n")
# What the learner's environment does to a real cf CLI: CF_TRACE=true writes the HTTP dialogue to
# stdout, forced colour wraps words in escape codes.
scenario = set(env.get("CF_STAND_IN", "").split(","))
colour = env.get("CF_COLOR", "").lower() == "true" or bool(env.get("CLICOLOR_FORCE"))
def bold(text):
    return f"\x1b[1m{{text}}\x1b[0m" if colour else text
def answer(document):
    if env.get("CF_TRACE", "").lower() == "true":
        print("REQUEST: [2024-05-01T10:00:00Z]\nGET " + args[1] + " HTTP/1.1\nAuthorization: [PRIVATE DATA HIDDEN]\n")
        print("RESPONSE: [2024-05-01T10:00:00Z]\nHTTP/1.1 200 OK\nContent-Type: application/json\n")
    print(json.dumps(document, indent=3))
def page(resources):
    answer({{"pagination": {{"total_results": len(resources), "next": None}}, "resources": resources}})
CC_ERRORS = {{
    "forbidden": {{"errors": [{{"detail": "You are not authorized to perform the requested action",
                                "title": "CF-NotAuthorized", "code": 10003}}]}},
    "not-found": {{"errors": [{{"detail": "App not found", "title": "CF-ResourceNotFound", "code": 10010}}]}},
}}
verb = args[0] if args else ""
if verb == "version":
    print("cf version 6.53.0+8e2b70a4a.2020-10-01" if "v6" in scenario else "cf version 8.7.10+5b7ce3c.2024-04-04")
elif verb == "auth" and not (env.get("CF_USERNAME") and env.get("CF_PASSWORD")):
    print("Credentials were rejected"); sys.exit(1)
elif verb == "app" and "--guid" in args:
    print("{guid}")
elif verb == "curl" and scenario & set(CC_ERRORS) and args[1].startswith(("/v3/apps/", "/v3/audit_events")):
    # cf curl exits 0 on an HTTP error and prints Cloud Controller's error document.
    answer(CC_ERRORS[next(iter(scenario & set(CC_ERRORS)))])
elif verb == "curl" and args[1].endswith("/routes"):
    page([{{"url": "myapp.apps.example.com"}}])
elif verb == "curl" and args[1].endswith("/sidecars"):
    page([{{"name": "config-server", "process_types": ["web"], "origin": "user", "command": "./config-server"}}])
elif verb == "curl" and args[1].endswith("/processes/web"):
    answer({{"guid": "proc-guid", "type": "web"}})
elif verb == "curl" and args[1].startswith("/v3/processes/proc-guid/stats"):
    page([{{"index": 0, "state": "RUNNING", "uptime": 12}}])
elif verb == "curl" and args[1].startswith("/v3/audit_events"):
    # Cloud Controller's two events of one crash: app.crash keeps a slice of the payload (no
    # crash_count); audit.app.process.crash keeps all of it.
    crash = {{"instance": "inst-1", "index": 0, "cell_id": "cell-1", "exit_status": 137, "reason": "CRASHED",
             "exit_description": "APP/PROC/WEB/SIDECAR/CONFIG-SERVER: Exited with status 137"}}
    events = [{{"guid": "e1", "type": "app.crash", "created_at": "2024-05-01T10:00:01Z", "data": crash}}]
    if "no-process-event" not in scenario:
        events.append({{"guid": "e2", "type": "audit.app.process.crash", "created_at": "2024-05-01T10:00:01Z",
                       "data": dict(crash, crash_count=2, crash_timestamp=1714557601000000000,
                                    version="v-1")}})
    wanted = args[1].partition("types=")[2].split("&")[0].split(",")
    page([e for e in events if e["type"] in wanted])
elif verb == "curl" and args[1].startswith("/v3/buildpacks"):
    page([])
elif verb == "ssh" and "no-ssh" in scenario:
    print("Error opening SSH connection: You are not authorized to perform the requested action.")
    sys.exit(1)
elif verb in ("create-buildpack", "update-buildpack", "delete-buildpack") and "not-admin" in scenario:
    print(f"Creating buildpack {{args[1]}} as learner...")
    print("You are not authorized to perform the requested action")
    print("FAILED"); sys.exit(1)
elif verb == "app":
    print("Showing health and status for app " + bold(args[1]) + " in org o / space s as learner...\n")
    print("name:              " + args[1])
    print("\ntype:           web\nsidecars:       config-server\ninstances:      1/1")
elif verb == "fail":
    print("something went wrong"); sys.exit(3)
else:
    print("OK " + " ".join(args))
'''


@pytest.fixture
def cf_stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = install_cf_stand_in(tmp_path, monkeypatch, STAND_IN.format(python=sys.executable, guid=GUID),
                              password="s3cret-pw", log_name="cf-calls.jsonl")
    # The kit's own CF_HOME lives under the work directory: a temporary one here.
    monkeypatch.setenv("SIDECARLAB_WORK", str(tmp_path / "work"))
    return log


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_cf_target_logs_in_with_env_credentials_then_runs_verbs(cf_stand_in: Path, tmp_path: Path) -> None:
    target = CFTarget("https://api.example.com", "my-org", "my-space", skip_ssl_validation=True,
                      cf_home=tmp_path / "cf-home", echo=False)
    sidecars = target.sidecars("myapp")
    assert sidecars[0]["name"] == "config-server"
    assert target.app_url("myapp") == "https://myapp.apps.example.com"
    argvs = [c["argv"] for c in calls(cf_stand_in)]
    assert argvs[:6] == [
        ["version"],
        ["api", "https://api.example.com", "--skip-ssl-validation"],
        ["auth"],
        ["target", "-o", "my-org", "-s", "my-space"],
        ["app", "myapp", "--guid"],
        ["curl", f"/v3/apps/{GUID}/sidecars"],
    ]
    # The guid is remembered: the routes lookup does not ask for it again.
    assert argvs[6:] == [["curl", f"/v3/apps/{GUID}/routes"]]
    assert all("s3cret-pw" not in " ".join(a) for a in argvs), "the password must never be in an argv"
    assert {c["cf_home"] for c in calls(cf_stand_in)} == {str(tmp_path / "cf-home")}


def test_cf_target_without_credentials_says_which_variables(cf_stand_in: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CF_PASSWORD")
    target = CFTarget("https://api.example.com", "o", "s", echo=False)
    with pytest.raises(TargetError, match=r"environment variable\(s\) CF_PASSWORD \(never in notebook"):
        target.cf("apps")
    assert not cf_stand_in.exists(), "cf must not be run without credentials"


def test_cf_target_without_the_cf_binary_says_what_to_install() -> None:
    target = CFTarget("https://api.example.com", "o", "s", cf_binary="no-such-cf-binary", echo=False)
    target._prepared = True  # skip login: the point is the missing binary
    with pytest.raises(TargetError, match=r"cf CLI \('no-such-cf-binary'\) is not on PATH.*target='local'"):
        target.cf("apps")


def cf_target(**kwargs) -> CFTarget:
    return CFTarget("https://api.example.com", "my-org", "my-space", echo=False, **kwargs)


def test_the_kit_keeps_a_cf_home_of_its_own_and_offers_the_export(cf_stand_in: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # The learner's own cf session: `cf api` in there would empty its tokens and org/space.
    learner_home = tmp_path / "learner"
    (learner_home / ".cf").mkdir(parents=True)
    config = '{"AccessToken": "bearer learner-token", "OrganizationFields": {"Name": "their-org"}}'
    (learner_home / ".cf" / "config.json").write_text(config)
    monkeypatch.setenv("CF_HOME", str(learner_home))

    target = target_from_params(target="cf", cf_api="https://api.example.com", cf_org="my-org",
                                cf_space="my-space", app_name="myapp")
    assert isinstance(target, CFTarget)
    target.sidecars("myapp")
    kit_home = tmp_path / "work" / "cf-home" / getpass.getuser()
    assert target.cf_home == kit_home.resolve() and kit_home.is_dir()
    assert {c["cf_home"] for c in calls(cf_stand_in)} == {str(kit_home.resolve())}
    assert (learner_home / ".cf" / "config.json").read_text() == config
    assert target.export_line() == f"export CF_HOME={kit_home.resolve()}"
    assert f"CF_HOME={kit_home.resolve()}" in target.describe()
    assert target.export_line() in target.describe()


def test_cf_trace_and_forced_colour_are_off_for_the_kit_s_calls(cf_stand_in: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CF_TRACE", "true")
    monkeypatch.setenv("CF_COLOR", "true")
    monkeypatch.setenv("CLICOLOR_FORCE", "1")
    target = cf_target()
    assert target.sidecars("myapp")[0]["name"] == "config-server"
    assert [i.state for i in target.instances("myapp")] == ["RUNNING"]
    assert checks.cf_app_shows_sidecar(target, "myapp").passed
    seen = calls(cf_stand_in)
    assert {(c["cf_trace"], c["cf_color"], c["clicolor_force"]) for c in seen} == {("false", "false", None)}


def test_a_v6_cli_is_refused_before_anything_runs(cf_stand_in: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CF_STAND_IN", "v6")
    target = cf_target()
    with pytest.raises(TargetError) as info:
        target.cf("apps")
    assert str(info.value).startswith("cf CLI v7 or later needed: ")
    assert "version 6.53.0" in str(info.value) and "Install cf CLI v8" in str(info.value)
    assert [c["argv"] for c in calls(cf_stand_in)] == [["version"]], "nothing may run on a v6 CLI"


@pytest.mark.parametrize(("scenario", "title", "detail"), [
    ("forbidden", "CF-NotAuthorized", "You are not authorized to perform the requested action"),
    ("not-found", "CF-ResourceNotFound", "App not found"),
])
def test_an_api_error_is_a_failure_that_shows_cc_s_title_and_detail(cf_stand_in: Path,
                                                                     monkeypatch: pytest.MonkeyPatch, scenario: str,
                                                                     title: str, detail: str) -> None:
    monkeypatch.setenv("CF_STAND_IN", scenario)
    target = cf_target()
    with pytest.raises(ApiError) as info:
        target.curl(f"/v3/apps/{GUID}/sidecars")
    assert (info.value.title, info.value.detail) == (title, detail)
    assert f"{title}: {detail}" in str(info.value)
    # No "no sidecars", no "no build at all", no KeyError: the check fails with CC's own words.
    for check in (checks.sidecar_registered, checks.supply_ran, checks.sidecar_crash_recovers):
        with pytest.raises(CheckFailed) as failed:
            check(target, "myapp")
        assert f"{title}: {detail}" in failed.value.seen, check.__name__
        assert failed.value.hint == info.value.hint
    with pytest.raises(ApiError):
        target.instances("myapp")


def test_an_api_error_on_the_local_target_is_the_same_failure(local: LocalTarget) -> None:
    with pytest.raises(ApiError) as info:
        local.curl("/v3/apps/no-such-guid/sidecars")
    assert info.value.title.startswith("CF-") and info.value.detail
    assert f"{info.value.title}: {info.value.detail}" in str(info.value)


class Answering(CFTarget):
    """The recorded cf, and an app that answers /config: the app itself is not on this machine."""

    def http_get(self, app: str, path: str = "/", timeout: float = 10.0) -> HttpResponse:
        return HttpResponse(f"https://{app}{path}", 200, {}, json.dumps(checks.CONFIG))


def test_ssh_disabled_is_recognised_and_names_the_fix(cf_stand_in: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CF_STAND_IN", "no-ssh")
    target = Answering("https://api.example.com", "my-org", "my-space", echo=False)
    fixes = ("`cf enable-ssh myapp`", "`cf allow-space-ssh my-space`", "ask your operator")
    for check in (checks.processes_in_one_container, checks.sidecar_listening, checks.memory_limit_carved):
        with pytest.raises(CheckFailed) as failed:
            check(target, "myapp")
        assert "You are not authorized to perform the requested action" in failed.value.seen
        assert all(fix in failed.value.hint for fix in fixes), failed.value.hint
        assert "Is the app pushed and running?" not in failed.value.hint
    with pytest.raises(SshNotAllowed):
        checks.show_sockets(target, "myapp")
    # Even where a failing ssh is expected (`--no-check` kill cells), a refused one is an error.
    with pytest.raises(SshNotAllowed):
        target.ssh("myapp", "kill -9 $(pgrep config-server)", check=False)
    with pytest.raises(SshNotAllowed):
        with target.tunnel("myapp", 8082):
            pass


def test_crash_count_is_read_from_the_process_crash_event(cf_stand_in: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = Answering("https://api.example.com", "my-org", "my-space", echo=False)
    passed = checks.sidecar_crash_recovers(target, "myapp", crash_count=2, deadline=1.0)
    assert "audit.app.process.crash: crash_count 2" in passed.statement
    with pytest.raises(CheckFailed) as info:
        checks.sidecar_crash_recovers(target, "myapp", crash_count=1, deadline=1.0)
    assert info.value.seen == "crash_count 2 (in audit.app.process.crash)"

    monkeypatch.setenv("CF_STAND_IN", "no-process-event")
    with pytest.raises(CheckFailed) as info:
        checks.sidecar_crash_recovers(target, "myapp", crash_count=2, deadline=1.0)
    assert info.value.expected.startswith("an audit.app.process.crash event for the same crash")


@pytest.mark.parametrize(("description", "codependent"), [
    ("Codependent step exited", True),
    ("Codependent step exited; APP/PROC/WEB: Exited with status 143", True),
    ("2 error(s) occurred:\n\n* Codependent step exited\n* cancelled", True),
    ("2 error(s) occurred:\n\n* 2 error(s) occurred:\n\n* Codependent step exited\n* cancelled\n* cancelled", True),
    ("APP/PROC/WEB/SIDECAR/CONFIG-SERVER: Exited with status 137", False),
    ("Not a Codependent step exited message", False),
])
def test_codependent_exits_are_recognised_in_every_diego_wording(description: str, codependent: bool) -> None:
    assert part1._codependent(description) is codependent


def test_the_tunnel_waits_as_long_as_a_real_ssh_proxy_needs() -> None:
    deadline = inspect.signature(Target.tunnel).parameters["deadline"].default
    assert deadline >= 35.0


def test_a_non_admin_gets_one_clean_message_for_admin_buildpacks(cf_stand_in: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CF_STAND_IN", "not-admin")
    bp = supply_buildpack.write_buildpack(tmp_path / "bp", supply_buildpack.PLACEHOLDER_SUPPLY).directory
    target = cf_target()
    with pytest.raises(BuildpackError) as info:
        supply_buildpack.install_buildpack(target, bp, "sidecar_buildpack", tmp_path / "manifest.yml")
    message = str(info.value)
    assert message.startswith("Could not install the buildpack 'sidecar_buildpack': `cf create-buildpack "
                              f"sidecar_buildpack {bp} 999` was refused")
    assert "need the Cloud Foundry admin role: ask an operator" in message
    with pytest.raises(TargetError, match="Could not delete the buildpack 'sidecar_buildpack'"):
        target.remove_buildpack("sidecar_buildpack")


# ----------------------------------------------------------------------------- the %cf magic

@pytest.fixture
def shell(cf_stand_in: Path):
    from IPython.core.interactiveshell import InteractiveShell

    from sidecarlab import magics

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "sidecarlab.magics")
    assert "cf" in ip.magics_manager.magics["line"]
    magics.load_ipython_extension(ip)  # again: an earlier test's teardown reset the error display
    target = CFTarget("https://api.example.com", "o", "s")
    magics.use_target(target)
    ip.user_ns["app_name"] = "myapp"
    yield ip
    ip.magics_manager.registry["CfMagics"].target = None
    ip.set_custom_exc((), None)


def test_cf_magic_echoes_and_runs_with_notebook_variables(shell, cf_stand_in: Path, capsys) -> None:
    result = shell.run_cell('%cf ssh {app_name} -c "echo $MEMORY_LIMIT; kill -9 $(pgrep x)"')
    assert result.success, result.error_in_exec
    out = capsys.readouterr().out
    assert out.splitlines()[0] == '$ cf ssh myapp -c "echo $MEMORY_LIMIT; kill -9 $(pgrep x)"'
    # {name} comes from the notebook; $VAR and $(...) reach the remote shell untouched.
    assert calls(cf_stand_in)[-1]["argv"] == ["ssh", "myapp", "-c", "echo $MEMORY_LIMIT; kill -9 $(pgrep x)"]


def test_cf_magic_failure_is_shown_without_a_python_traceback(shell, capsys) -> None:
    result = shell.run_cell("%cf fail now")
    assert isinstance(result.error_in_exec, CommandError)
    out = capsys.readouterr().out
    assert "CommandError: `cf fail now` failed with exit status 3." in out
    assert "something went wrong" in out
    assert "Traceback" not in out


def test_cf_magic_no_check_tolerates_a_failing_command(shell, capsys) -> None:
    result = shell.run_cell("%cf --no-check fail on purpose")
    assert result.success
    assert capsys.readouterr().out.splitlines()[0] == "$ cf fail on purpose"


def test_cf_magic_unknown_variable_is_a_clear_error(shell, capsys) -> None:
    result = shell.run_cell("%cf app {no_such_variable}")
    assert isinstance(result.error_in_exec, NameError)
    assert "no notebook variable 'no_such_variable'" in str(result.error_in_exec)
    out = capsys.readouterr().out
    assert out.startswith("UnknownVariable: %cf: {no_such_variable} names no notebook variable")
    assert "Traceback" not in out


def test_failed_check_in_a_notebook_shows_expected_seen_hint_only(shell, capsys) -> None:
    shell.user_ns["CheckFailed"] = CheckFailed
    result = shell.run_cell('raise CheckFailed("GET / answers", "HTTP 200", "HTTP 404", "push the app")')
    assert isinstance(result.error_in_exec, CheckFailed)
    out = capsys.readouterr().out
    assert f"{FAILED_MARK} GET / answers\n   expected: HTTP 200\n   seen:     HTTP 404\n   hint:     push the app" in out
    assert "Traceback" not in out


def test_ssh_disabled_in_a_cf_cell_is_one_message_without_a_traceback(shell, capsys,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CF_STAND_IN", "no-ssh")
    for cell in ('%cf ssh {app_name} -c "ps aux"', '%cf --no-check ssh {app_name} -c "kill -9 $(pgrep x)"',
                 "checks.show_sockets(target, app_name)"):
        shell.user_ns.update(checks=checks, target=shell.magics_manager.registry["CfMagics"].target)
        result = shell.run_cell(cell)
        assert isinstance(result.error_in_exec, SshNotAllowed), cell
        out = capsys.readouterr().out
        assert "SshNotAllowed: `cf ssh myapp " in out and "`cf enable-ssh myapp`" in out, out
        assert "Traceback" not in out


def test_kit_errors_in_a_cell_are_one_message_without_a_traceback(shell, capsys, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CF_STAND_IN", "not-admin")
    bp = supply_buildpack.write_buildpack(tmp_path / "bp", supply_buildpack.PLACEHOLDER_SUPPLY).directory
    shell.user_ns.update(supply_buildpack=supply_buildpack, bp=bp, manifest=tmp_path / "manifest.yml",
                         blobstore=blobstore, target=shell.magics_manager.registry["CfMagics"].target)
    for cell, error in (
            ('supply_buildpack.install_buildpack(target, bp, "sidecar_buildpack", manifest)', "BuildpackError"),
            ('blobstore.validate("embedded", target="cf")', "BlobStoreError"),
            ('supply_buildpack.finish_buildpack(manifest.parent / "nothing")', "BuildpackError")):
        result = shell.run_cell(cell)
        assert type(result.error_in_exec).__name__ == error, cell
        out = capsys.readouterr().out
        assert out.startswith(f"{error}: ") or f"\n{error}: " in out, out
        assert out.count(f"{error}: ") == 1 and "Traceback" not in out


def test_the_notebook_setup_points_the_cf_magic_at_the_target_it_creates(shell, capsys) -> None:
    from sidecarlab import notebook

    made = notebook.target_from_params(target="cf", cf_api="https://api.example.com", cf_org="o", cf_space="s",
                                       app_name="myapp")
    assert shell.magics_manager.registry["CfMagics"].target is made
    # A bad parameter is one clean message too: the error display is loaded before the target is made.
    shell.user_ns["notebook"] = notebook
    result = shell.run_cell('notebook.target_from_params(target="kubernetes")')
    assert isinstance(result.error_in_exec, TargetError)
    out = capsys.readouterr().out
    assert out.startswith("TargetError: Unknown target 'kubernetes'") and "Traceback" not in out


# ---------------------------------------------------------------------- the tutorial runner

def test_find_notebooks_by_part_number_and_clear_error_otherwise() -> None:
    assert tutorial.find_notebooks(["01"]) == [NOTEBOOK_1]
    assert tutorial.find_notebooks(["1"]) == [NOTEBOOK_1]
    with pytest.raises(tutorial.TutorialError, match=r"No notebook matches '42'.*01-push-app-with-sidecar"):
        tutorial.find_notebooks(["42"])


def test_params_files_hold_no_secrets_and_name_the_target(tmp_path: Path) -> None:
    assert tutorial.load_params("local")["target"] == "local"
    cf = tutorial.load_params("cf")
    assert {"cf_api", "cf_org", "cf_space"} <= set(cf)
    (tmp_path / "cf.yml").write_text("cf_api: x\ncf_password: hunter2\n")
    with pytest.raises(tutorial.TutorialError, match=r"'cf_password' must not be a parameter"):
        tutorial.load_params("cf", tmp_path)
    with pytest.raises(tutorial.TutorialError, match=r"No parameters file for target 'nope'"):
        tutorial.load_params("nope", tmp_path)


def test_kernelspec_runs_this_python(tmp_path: Path) -> None:
    name = tutorial.ensure_kernel(tmp_path)
    spec = json.loads((tmp_path / "kernels" / name / "kernel.json").read_text())
    assert spec["argv"][:3] == [sys.executable, "-m", "ipykernel_launcher"]
    assert tutorial.ensure_kernel(tmp_path) == name


def test_learner_copy_drops_solutions_and_keeps_checks(tmp_path: Path) -> None:
    dest = tmp_path / "learner.ipynb"
    removed = tutorial.learner_copy(NOTEBOOK_1, dest)
    original = nbformat.read(str(NOTEBOOK_1), as_version=4)
    copy = nbformat.read(str(dest), as_version=4)
    assert removed == sum("solution" in c.metadata.get("tags", []) for c in original.cells) >= 2
    solutions = {c.source for c in original.cells if "solution" in c.metadata.get("tags", [])}
    # (a solution may repeat a cell the notebook also runs elsewhere, e.g. the same `%cf push`)
    only_in_solutions = solutions - {c.source for c in original.cells if "solution" not in c.metadata.get("tags", [])}
    assert only_in_solutions and not only_in_solutions & {c.source for c in copy.cells}
    assert sum(c.source == tutorial.LEARNER_PLACEHOLDER for c in copy.cells) == removed
    assert "checks.memory_limit_carved" in "".join(c.source for c in copy.cells)


def test_copy_fixture_app_renames_and_sets_the_port(tmp_path: Path) -> None:
    (tmp_path / "stale").mkdir(parents=True)
    manifest = tutorial.copy_fixture_app(tmp_path / "stale", "my-app", 9000)
    (app,) = yaml.safe_load(manifest.read_text())["applications"]
    assert app["name"] == "my-app" and app["env"]["CONFIG_SERVER_PORT"] == 9000
    assert app["sidecars"][0]["command"] == "./config-server"
    assert (tmp_path / "stale" / "app.py").is_file()


def test_remove_work_dir_refuses_paths_outside_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECARLAB_WORK", str(tmp_path / "work"))
    inside = tutorial.work_dir("part1", "x")
    tutorial.remove_work_dir(inside)
    assert not inside.exists()
    outside = tmp_path / "precious"
    outside.mkdir()
    with pytest.raises(tutorial.TutorialError, match="Refusing to delete"):
        tutorial.remove_work_dir(outside)
    assert outside.exists()


def _tiny_tutorial(tmp_path: Path) -> Path:
    notebooks = tmp_path / "notebooks"
    (notebooks / "params").mkdir(parents=True)
    (notebooks / "params" / "local.yml").write_text("target: local\ngreeting: from-params\n")
    parameters = new_code_cell('target = "cf"\ngreeting = "default"')
    parameters.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[
        new_markdown_cell("# A tiny part"),
        parameters,
        new_code_cell(f'print("{PASSED_MARK} greeting is", greeting)'),
        new_code_cell('assert greeting == "from-params", greeting\nraise ValueError("broken on purpose")'),
        new_code_cell('print("never reached")'),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, str(notebooks / "07-tiny.ipynb"))
    return notebooks


def test_run_names_the_notebook_and_the_failing_cell(tmp_path: Path) -> None:
    notebooks = _tiny_tutorial(tmp_path)
    out = tmp_path / "build"
    # --out relative to the current directory (the notebooks run from their own: the kernel is found)
    proc = subprocess.run([str(SIDECARLAB), "run", "07", "--notebooks", str(notebooks), "--out", "build",
                           "--no-progress"], capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "NoSuchKernel" not in proc.stderr
    # Cell 5 of the executed notebook (papermill adds the injected-parameters cell), In [4].
    assert "07-tiny.ipynb, cell 5 (In [4])" in proc.stderr
    assert 'assert greeting == "from-params", greeting' in proc.stderr
    assert "ValueError: broken on purpose" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is False
    (result,) = summary["notebooks"]
    assert result["passed_checks"] == [f"{PASSED_MARK} greeting is from-params"]
    executed = nbformat.read(str(out / "notebooks" / "07-tiny.ipynb"), as_version=4)
    assert "never reached" not in json.dumps(executed.cells[-1].get("outputs", []))
    assert "| 07-tiny | failed |" in (out / "summary.md").read_text()


def test_run_rejects_an_unknown_part_with_the_list(tmp_path: Path) -> None:
    notebooks = _tiny_tutorial(tmp_path)
    proc = subprocess.run([str(SIDECARLAB), "run", "99", "--notebooks", str(notebooks), "--out",
                           str(tmp_path / "b")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "No notebook matches '99'" in proc.stderr and "07-tiny" in proc.stderr


class Routed(CFTarget):
    """A CFTarget whose apps have the given routes (what `cf curl /v3/apps/GUID/routes` would list)."""

    def __init__(self, *args: Any, routes: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._routes = routes

    def routes(self, app: str) -> list[str]:
        return self._routes


def test_cf_apps_url_overrides_the_https_route_url() -> None:
    def made(routes: list[str], apps_url: str = "") -> CFTarget:
        return Routed("https://api.example.com", "o", "s", routes=routes, apps_url=apps_url)

    assert made(["myapp.apps.example.com"]).app_url("myapp") == "https://myapp.apps.example.com"
    assert made(["myapp.apps.example.com/v1"]).app_url("myapp") == "https://myapp.apps.example.com/v1"
    assert made(["myapp.dev.cfdev.sh"], "http://{route}:61080").app_url("myapp") == "http://myapp.dev.cfdev.sh:61080"
    assert made(["myapp.apps.localhost/v1"], "http://{route}:8080").app_url("myapp") == \
        "http://myapp.apps.localhost:8080/v1"
    target = target_from_params(target="cf", cf_api="https://api.example.com", cf_org="o", cf_space="s",
                                cf_apps_url="http://{route}:61080")
    assert isinstance(target, CFTarget) and target.apps_url == "http://{route}:61080"
    # The route host of a .localhost domain is the loopback, seen from outside the container.
    assert made(["myapp.apps.localhost"]).outside_host("myapp") == "127.0.0.1"
    assert made(["myapp.apps.example.com"]).outside_host("myapp") == "myapp.apps.example.com"


@pytest.mark.parametrize("template", ["http://myapp:61080", "ftp://{route}", "http://{route}:{port}",
                                      "http://{route", "{route}:61080"])
def test_a_bad_cf_apps_url_says_what_it_must_look_like(template: str) -> None:
    with pytest.raises(TargetError) as info:
        target_from_params(target="cf", cf_api="https://api.example.com", cf_org="o", cf_space="s",
                           cf_apps_url=template)
    assert f"cf_apps_url {template!r}" in str(info.value) and "http://{route}:61080" in str(info.value)
