"""The kit's `cf` code path end to end with the real cf CLI (v7.2.0) driving localcf:

- Part 1 run headless with `--target cf` through `CFTarget` (its `cf api`, `cf auth`, `cf target`
  included), the app reached through the `cf_apps_url` template; the learner's own
  `~/.cf/config.json` stays byte-identical;
- Parts 1 to 3 run headless on the local target with `local_cli=cf`: the real cf CLI against the
  local target's own localcf, no parameter but that one.

The real `cf` comes from `../shared/tools/cf-cli` beside the project root (or the folder named by
`LOCALCF_TEST_CF_CLI_DIR`); where it is absent the module is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT, LocalCF
from test_blobstore import wait_until_gone
from test_notebooks import (
    NOTEBOOK_1,
    NOTEBOOK_2,
    NOTEBOOK_3,
    PART1,
    PART2,
    PART3,
    assert_claims,
    check_lines,
    outputs_text,
    skip_without_isolation,
)

CF_DIR = Path(os.environ.get("LOCALCF_TEST_CF_CLI_DIR") or ROOT.parent / "shared" / "tools" / "cf-cli")
if not os.access(CF_DIR / "cf", os.X_OK):
    pytest.skip(f"needs Cloud Foundry's cf CLI: ../shared/tools/cf-cli/cf beside the project root, or a folder "
                f"holding cf in LOCALCF_TEST_CF_CLI_DIR (not found at {CF_DIR / 'cf'})", allow_module_level=True)

SIDECARLAB = Path(sys.executable).parent / "sidecarlab"
LEARNER_CF_CONFIG = FIXTURES / "learner-home" / ".cf" / "config.json"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> LocalCF:
    lcf = LocalCF(tmp_path_factory.mktemp("localcf-cftarget"))
    lcf("start")
    yield lcf
    lcf("stop", check=False)


def daemon(platform: LocalCF) -> dict:
    return json.loads((platform.home / "daemon.json").read_text())


def admin_password(platform: LocalCF) -> str:
    return (platform.home / "uaa-password").read_text().strip()


@pytest.mark.timeout(900)  # a guard against a hung run, not a performance claim
def test_part1_runs_green_on_the_cf_target_with_the_real_cli_against_localcf(platform: LocalCF,
                                                                              tmp_path: Path) -> None:
    skip_without_isolation(platform)
    home = tmp_path / "home"
    shutil.copytree(LEARNER_CF_CONFIG.parent.parent, home)
    app_name = f"cft-{uuid.uuid4().hex[:8]}"
    work, out = tmp_path / "work", tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CF_") and k != "LOCALCF_HOME"}
    env.update(HOME=str(home), SIDECARLAB_WORK=str(work), CF_USERNAME="admin", CF_PASSWORD=admin_password(platform),
               PATH=f"{CF_DIR}{os.pathsep}{os.environ.get('PATH', '')}")
    ports = daemon(platform)
    argv = [str(SIDECARLAB), "run", "01", "--target", "cf", "--out", str(out), "--no-progress",
            "-p", "app_name", app_name, "-p", "cf_api", f"http://127.0.0.1:{ports['api_port']}",
            "-p", "cf_org", "localcf", "-p", "cf_space", "dev",
            "-p", "cf_apps_url", f"http://{{route}}:{ports['router_port']}"]
    started = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=840)
    print(f"Part 1 headless on the cf target (real cf CLI, localcf): {time.monotonic() - started:.1f}s")
    assert proc.returncode == 0, f"the run failed:\n{proc.stdout}\n{proc.stderr}"
    assert "[1/1] 01-push-app-with-sidecar (target cf" in proc.stdout

    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is True and summary["target"] == "cf"
    (result,) = summary["notebooks"]
    assert result["skipped_checks"] == []
    executed = out / "notebooks" / NOTEBOOK_1.name
    assert_claims(NOTEBOOK_1, executed, PART1, app_name)
    assert result["passed_checks"] == check_lines(executed)
    text = outputs_text(executed)
    assert f"$ cf push {app_name}" in text
    assert "APP/PROC/WEB/SIDECAR/CONFIG-SERVER: Exited with status 137" in text
    kit_home = work / "cf-home"
    assert f"CF_HOME={kit_home}" in text, "the connect cell names the kit's own CF_HOME"

    # The real cf logged in through the kit's own CF_HOME, never the learner's.
    (kit_config,) = kit_home.glob("*/.cf/config.json")
    assert json.loads(kit_config.read_text())["Target"] == f"http://127.0.0.1:{ports['api_port']}"
    assert (home / ".cf" / "config.json").read_bytes() == LEARNER_CF_CONFIG.read_bytes()
    assert sorted(p.name for p in (home / ".cf").iterdir()) == ["config.json"]
    # The notebook cleaned up after itself.
    assert app_name not in platform("apps").out


@pytest.mark.timeout(1500)  # a guard against a hung run, not a performance claim
def test_parts_1_to_3_run_green_on_the_local_target_driven_by_the_real_cli(platform: LocalCF,
                                                                           tmp_path: Path) -> None:
    skip_without_isolation(platform)
    app_name = f"lcli-{uuid.uuid4().hex[:8]}"
    home, work, out = tmp_path / "home", tmp_path / "work", tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CF_")}
    env.update(LOCALCF_HOME=str(platform.home), SIDECARLAB_WORK=str(work), SIDECARLAB_HOME=str(home),
               PATH=f"{CF_DIR}{os.pathsep}{os.environ.get('PATH', '')}")
    argv = [str(SIDECARLAB), "run", "01", "02", "03", "--out", str(out), "--no-progress",
            "-p", "app_name", app_name, "-p", "local_cli", "cf"]
    started = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1440)
    print(f"Parts 1 to 3 headless on the local target driven by the real cf CLI: {time.monotonic() - started:.1f}s")
    assert proc.returncode == 0, f"the run failed:\n{proc.stdout}\n{proc.stderr}"

    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is True and summary["target"] == "local"
    assert [n["skipped_checks"] for n in summary["notebooks"]] == [[], [], []]
    for notebook, expected in ((NOTEBOOK_1, PART1), (NOTEBOOK_2, PART2), (NOTEBOOK_3, PART3)):
        assert_claims(notebook, out / "notebooks" / notebook.name, expected, app_name)
        text = outputs_text(out / "notebooks" / notebook.name)
        # The connect cell says which client runs, and the output is the real cf CLI's own.
        assert "driven by the real cf CLI (local_cli='cf'" in text
        assert f"$ cf push {app_name}" in text
    text2 = outputs_text(out / "notebooks" / NOTEBOOK_2.name)
    assert "-----> Sidecar buildpack: installing the placeholder sidecar" in text2
    assert "BuildpackCompileFailed - App staging failed in the buildpack compile phase" in text2
    assert "$ cf create-buildpack sidecar_buildpack " in text2, "an admin buildpack, as on a foundation"
    text3 = outputs_text(out / "notebooks" / NOTEBOOK_3.name)
    assert "/config-server-sidecar/config-server-v9.9.9: HTTP 404" in text3

    # The real cf ran in the kit's own CF_HOME for localcf, logged in to the local target's localcf.
    (kit_config,) = (work / "cf-home").glob("localcf-*/.cf/config.json")
    assert json.loads(kit_config.read_text())["Target"] == f"http://127.0.0.1:{daemon(platform)['api_port']}"
    # Cleaned up: no app, no work copies, no embedded S3 server.
    assert app_name not in platform("apps").out
    assert not (work / "part2").exists() and not (work / "part3").exists()
    assert wait_until_gone(home / "blobstore") == []
    assert "sidecar_buildpack" not in [b["name"] for b in platform.client().get("/v3/buildpacks")["resources"]]


def test_local_cli_auto_says_which_client_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sidecarlab.targets import LocalCFWithCLI, LocalTarget, TargetError, target_from_params
    monkeypatch.setenv("SIDECARLAB_WORK", str(tmp_path / "work"))
    monkeypatch.setenv("PATH", f"{CF_DIR}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("HOME", str(tmp_path / "learner"))
    monkeypatch.delenv("CF_HOME", raising=False)
    (tmp_path / "learner").mkdir()
    found = target_from_params(target="local", local_cli="auto", localcf_home=str(tmp_path / "lcf"))
    assert isinstance(found, LocalCFWithCLI)
    assert "driven by the real cf CLI (local_cli='auto' and the cf CLI is installed" in found.describe()
    # Asking the cf CLI its version wrote into the kit's CF_HOME, not the learner's ~/.cf.
    assert list((tmp_path / "learner").iterdir()) == []
    assert (found.cf_home / ".cf" / "config.json").is_file()
    monkeypatch.setenv("PATH", str(tmp_path / "no-cf-here"))
    plain = target_from_params(target="local", local_cli="auto", localcf_home=str(tmp_path / "lcf"))
    assert type(plain) is LocalTarget
    assert "driven by localcf's own verbs (local_cli='auto' and no 'cf' on PATH)" in plain.describe()
    with pytest.raises(TargetError, match=r"local_cli='cf' needs the cf CLI v7 or later: no 'cf' on PATH"):
        target_from_params(target="local", local_cli="cf")
    with pytest.raises(TargetError, match=r"Unknown local_cli 'kubectl'"):
        target_from_params(target="local", local_cli="kubectl")
