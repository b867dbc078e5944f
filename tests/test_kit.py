"""The kit's core: targets (local for real, cf through a recorded stand-in), the %cf magic, the runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from conftest import LocalCF
from sidecarlab import tutorial
from sidecarlab.checks import CheckFailed
from sidecarlab.targets import (
    CFTarget,
    CommandError,
    LocalTarget,
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
with open(os.environ["CF_STAND_IN_LOG"], "a") as log:
    log.write(json.dumps({{"argv": args, "has_user": bool(os.environ.get("CF_USERNAME")),
                          "cf_home": os.environ.get("CF_HOME")}}) + "\n")
verb = args[0] if args else ""
if verb == "auth" and not (os.environ.get("CF_USERNAME") and os.environ.get("CF_PASSWORD")):
    print("Credentials were rejected"); sys.exit(1)
if verb == "app" and "--guid" in args:
    print("{guid}")
elif verb == "curl" and args[1].endswith("/routes"):
    print(json.dumps({{"pagination": {{"next": None}}, "resources": [{{"url": "myapp.apps.example.com"}}]}}))
elif verb == "curl" and args[1].endswith("/sidecars"):
    print(json.dumps({{"pagination": {{"next": None}}, "resources": [
        {{"name": "config-server", "process_types": ["web"], "origin": "user", "command": "./config-server"}}]}}))
elif verb == "fail":
    print("something went wrong"); sys.exit(3)
else:
    print("OK " + " ".join(args))
'''


@pytest.fixture
def cf_stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "cf"
    script.write_text(STAND_IN.format(python=sys.executable, guid=GUID))
    script.chmod(0o755)
    log = tmp_path / "cf-calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CF_STAND_IN_LOG", str(log))
    monkeypatch.setenv("CF_USERNAME", "learner")
    monkeypatch.setenv("CF_PASSWORD", "s3cret-pw")
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
    assert argvs[:5] == [
        ["api", "https://api.example.com", "--skip-ssl-validation"],
        ["auth"],
        ["target", "-o", "my-org", "-s", "my-space"],
        ["app", "myapp", "--guid"],
        ["curl", f"/v3/apps/{GUID}/sidecars"],
    ]
    # The guid is remembered: the routes lookup does not ask for it again.
    assert argvs[5:] == [["curl", f"/v3/apps/{GUID}/routes"]]
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


def test_cf_magic_unknown_variable_is_a_clear_error(shell) -> None:
    result = shell.run_cell("%cf app {no_such_variable}")
    assert isinstance(result.error_in_exec, NameError)
    assert "no notebook variable 'no_such_variable'" in str(result.error_in_exec)


def test_failed_check_in_a_notebook_shows_expected_seen_hint_only(shell, capsys) -> None:
    shell.user_ns["CheckFailed"] = CheckFailed
    result = shell.run_cell('raise CheckFailed("GET / answers", "HTTP 200", "HTTP 404", "push the app")')
    assert isinstance(result.error_in_exec, CheckFailed)
    out = capsys.readouterr().out
    assert "❌ GET / answers\n   expected: HTTP 200\n   seen:     HTTP 404\n   hint:     push the app" in out
    assert "Traceback" not in out


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
    assert "memory\"] = \"64M\"" not in "".join(c.source for c in copy.cells)
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
        new_code_cell('print("✅ greeting is", greeting)'),
        new_code_cell('assert greeting == "from-params", greeting\nraise ValueError("broken on purpose")'),
        new_code_cell('print("never reached")'),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, str(notebooks / "07-tiny.ipynb"))
    return notebooks


def test_run_names_the_notebook_and_the_failing_cell(tmp_path: Path) -> None:
    notebooks = _tiny_tutorial(tmp_path)
    out = tmp_path / "build"
    proc = subprocess.run([str(SIDECARLAB), "run", "07", "--notebooks", str(notebooks), "--out", str(out),
                           "--no-progress"], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    # Cell 5 of the executed notebook (papermill adds the injected-parameters cell), In [4].
    assert "07-tiny.ipynb, cell 5 (In [4])" in proc.stderr
    assert 'assert greeting == "from-params", greeting' in proc.stderr
    assert "ValueError: broken on purpose" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is False
    (result,) = summary["notebooks"]
    assert result["passed_checks"] == ["✅ greeting is from-params"]
    executed = nbformat.read(str(out / "notebooks" / "07-tiny.ipynb"), as_version=4)
    assert "never reached" not in json.dumps(executed.cells[-1].get("outputs", []))
    assert "| 07-tiny | failed |" in (out / "summary.md").read_text()


def test_run_rejects_an_unknown_part_with_the_list(tmp_path: Path) -> None:
    notebooks = _tiny_tutorial(tmp_path)
    proc = subprocess.run([str(SIDECARLAB), "run", "99", "--notebooks", str(notebooks), "--out",
                           str(tmp_path / "b")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "No notebook matches '99'" in proc.stderr and "07-tiny" in proc.stderr
