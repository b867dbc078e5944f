"""The kit's pytest harness (sidecarlab.testing): against the `cf` target through a recorded cf
stand-in (the exact cf commands, in order, so a real foundation needs no code change), and the
buildpack's integration suite run on localcf against deliberately broken copies of the buildpack,
whose failures must name the claim and show the staging log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sidecarlab import blobstore, packager, sidecar
from sidecarlab.targets import TargetError
from sidecarlab.testing.plugin import cf_settings, make_target

ROOT = Path(__file__).resolve().parents[1]
GUID = "0f9e8d7c-6b5a-4c3d-9e2f-1a2b3c4d5e6f"

# ------------------------------------------------------------------ the cf target, through a stand-in
# A `cf` that records each argv and answers like cf CLI v8 and Cloud Controller would: staging egress
# through the group public_networks, a push that stages (or fails, when CF_STAND_IN=staging-fails),
# `cf logs --recent` with the staging lines, the app's sidecars, and `ps` over `cf ssh`.

STAND_IN = r'''#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["CF_STAND_IN_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
fails = "staging-fails" in os.environ.get("CF_STAND_IN", "")
def page(resources):
    print(json.dumps({{"pagination": {{"total_results": len(resources), "next": None}}, "resources": resources}}))
STG = ["Creating container for instance stg-1", "-----> Installing config-server 0.0.1",
       "       Download [https://store.example.com/config-server-v0.0.1-linux-amd64.tgz]"]
if fails:
    STG.append("       **ERROR** could not download: dial tcp: connection refused")
verb = args[0] if args else ""
if verb == "version":
    print("cf version 8.7.10+5b7ce3c.2024-04-04")
elif verb == "curl" and args[1].startswith("/v3/security_groups"):
    page([{{"name": "public_networks", "globally_enabled": {{"staging": True, "running": True}},
           "rules": [{{"protocol": "all", "destination": "0.0.0.0-9.255.255.255"}}]}},
          {{"name": "dns", "globally_enabled": {{"staging": True, "running": True}},
           "rules": [{{"protocol": "udp", "destination": "0.0.0.0/0", "ports": "53"}}]}}])
elif verb == "push":
    print("Pushing app " + args[1] + " to org o / space s as learner...")
    print("Staging app and tracing logs...")
    for line in STG:
        print("   " + line)
    if fails:
        print("StagingError - Staging error: staging failed\nFAILED"); sys.exit(1)
    print("Waiting for app " + args[1] + " to start...")
elif verb == "app" and "--guid" in args:
    print("{guid}")
elif verb == "logs":
    for line in STG:
        stream = "ERR" if "ERROR" in line else "OUT"
        print("   2024-05-01T10:00:00.00+0000 [STG/0] " + stream + " " + line)
    print("   2024-05-01T10:00:05.00+0000 [APP/PROC/WEB/SIDECAR/CONFIG-SERVER/0] OUT listening on 8082")
elif verb == "curl" and args[1].endswith("/sidecars"):
    page([{{"name": "config-server", "process_types": ["web"], "origin": "buildpack", "command": "config-server"}}])
elif verb == "ssh":
    print("    PID COMMAND\n      1 /tmp/lifecycle/init\n     12 python app.py\n     13 config-server\n"
          "     40 ps -eo pid,args")
else:
    print("OK " + " ".join(args))
'''

SUITE = '''
import pytest
from pathlib import Path
from sidecarlab.testing import (DeployFailed, sidecar_registered, sidecar_running_in_instance,
                                staging_failed_with, staging_logged)

FIXTURE = Path(__file__).parent / "app"

def test_deploys(platform):
    app = platform.deploy.with_buildpacks("config_server_bp", "python_buildpack") \\
        .with_env({"GREETING": "hi"}).without_internet_access().execute("greeter", FIXTURE)
    Path("deployed.txt").write_text(app.name)
    staging_logged(app, "-----> Installing config-server 0.0.1")
    assert "config-server" in sidecar_running_in_instance(app, "config-server")
    assert sidecar_registered(app, "config-server", origin="buildpack")["origin"] == "buildpack"

def test_staging_fails(platform, monkeypatch):
    monkeypatch.setenv("CF_STAND_IN", "staging-fails")
    with pytest.raises(DeployFailed) as failed:
        platform.deploy.with_buildpacks("config_server_bp").without_internet_access().execute("broken", FIXTURE)
    Path("failed.txt").write_text(failed.value.name)
    assert "**ERROR** could not download: dial tcp: connection refused" in str(failed.value)
    staging_failed_with(failed.value, "could not download")

def test_a_failing_claim_attaches_the_logs(platform):
    app = platform.deploy.with_buildpacks("config_server_bp").execute("claims", FIXTURE)
    Path("claims.txt").write_text(app.name)
    staging_logged(app, "Copy [")
'''


@pytest.fixture
def stand_in(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "cf"
    script.write_text(STAND_IN.format(python=sys.executable, guid=GUID))
    script.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               CF_STAND_IN_LOG=str(tmp_path / "cf-calls.jsonl"), CF_USERNAME="learner", CF_PASSWORD="s3cret-pw",
               SIDECARLAB_WORK=str(tmp_path / "work"))
    for name in ("CF_API", "CF_ORG", "CF_SPACE", "CF_SKIP_SSL_VALIDATION", "CF_STAND_IN"):
        env.pop(name, None)
    return env


def recorded(env: dict[str, str]) -> list[list[str]]:
    return [json.loads(line) for line in Path(env["CF_STAND_IN_LOG"]).read_text().splitlines()]


def test_the_harness_drives_the_cf_target_with_the_exact_cf_commands(stand_in: dict[str, str], tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    (suite / "app").mkdir(parents=True)
    (suite / "app" / "manifest.yml").write_text(yaml.safe_dump(
        {"applications": [{"name": "sample", "memory": "256M", "env": {"CONFIG_SERVER_PORT": 8082}}]}))
    (suite / "app" / "app.py").write_text("print('hi')\n")
    (suite / "test_on_cf.py").write_text(SUITE)
    (suite / "pytest.ini").write_text("[pytest]\n")
    params = tmp_path / "cf.yml"
    params.write_text("target: cf\ncf_api: https://api.example.com\ncf_org: my-org\ncf_space: my-space\n"
                      "cf_skip_ssl_validation: true\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "sidecarlab.testing.plugin", "-p", "no:cacheprovider",
                           "-n", "0", "-rA", "--target", "cf", "--cf-params", str(params), str(suite)],
                          cwd=suite, env=stand_in, capture_output=True, text=True, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    assert "1 failed, 2 passed" in out, out
    # The failing claim names itself, shows the staging log, and the report holds both logs.
    assert "claim failed: staging logged 'Copy ['" in out, out
    assert "-----> Installing config-server 0.0.1" in out
    claims = (suite / "claims.txt").read_text()
    assert f"staging log of {claims}" in out and f"runtime log of {claims}" in out
    assert "[APP/PROC/WEB/SIDECAR/CONFIG-SERVER/0] OUT listening on 8082" in out

    app, broken = (suite / "deployed.txt").read_text(), (suite / "failed.txt").read_text()
    assert app.startswith("greeter-") and broken.startswith("broken-") and claims.startswith("claims-")
    groups = "/v3/security_groups?globally_enabled_staging=true&per_page=5000"

    calls = recorded(stand_in)
    # Each push names its copy's manifest and folder under the session's work directory.
    pushes = [c for c in calls if c[0] == "push"]
    for call in pushes:
        assert Path(call[3]) == Path(call[5]) / "manifest.yml" and Path(call[5]).name == call[1]
    manifest = yaml.safe_load((Path(pushes[0][5]) / "manifest.yml").read_text())
    assert manifest["applications"][0]["buildpacks"] == ["config_server_bp", "python_buildpack"]
    assert manifest["applications"][0]["env"] == {"CONFIG_SERVER_PORT": 8082, "GREETING": "hi"}
    shown = [c if c[0] != "push" else ["push", c[1]] for c in calls]
    assert shown == [
        ["version"],
        ["api", "https://api.example.com", "--skip-ssl-validation"],
        ["auth"],
        ["target", "-o", "my-org", "-s", "my-space"],
        # test_deploys: air-gapped staging, the push, the claims, clean-up
        ["curl", groups],
        ["unbind-staging-security-group", "public_networks"],
        ["push", app],
        ["bind-staging-security-group", "public_networks"],
        ["logs", app, "--recent"],
        ["ssh", app, "-c", "ps -eo pid,args"],
        ["app", app, "--guid"],
        ["curl", f"/v3/apps/{GUID}/sidecars"],
        ["delete", app, "-f", "-r"],
        # test_staging_fails: the group is bound back although the push failed
        ["curl", groups],
        ["unbind-staging-security-group", "public_networks"],
        ["push", broken],
        ["bind-staging-security-group", "public_networks"],
        ["logs", broken, "--recent"],
        ["delete", broken, "-f", "-r"],
        # test_a_failing_claim_attaches_the_logs: the claim reads the log; the report reads both logs
        ["push", claims],
        ["logs", claims, "--recent"],
        ["logs", claims, "--recent"],
        ["logs", claims, "--recent"],
        ["delete", claims, "-f", "-r"],
    ]
    assert all("s3cret-pw" not in " ".join(c) for c in calls), "the password must never be in an argv"


def test_cf_settings_come_from_the_params_file_then_the_environment(tmp_path: Path) -> None:
    params = tmp_path / "cf.yml"
    params.write_text("cf_api: https://api.one.example.com\ncf_org: one\ncf_space: dev\n")
    settings = cf_settings(params, {"CF_SPACE": "ci", "CF_SKIP_SSL_VALIDATION": "true"})
    assert (settings["cf_api"], settings["cf_org"], settings["cf_space"], settings["cf_skip_ssl_validation"]) == \
        ("https://api.one.example.com", "one", "ci", True)


def test_a_cf_target_without_its_settings_names_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CF_API", "CF_ORG", "CF_SPACE"):
        monkeypatch.delenv(name, raising=False)
    params = tmp_path / "cf.yml"
    params.write_text("cf_api: ''\ncf_org: o\ncf_space: ''\n")
    with pytest.raises(TargetError, match=r"--target cf needs cf_api, cf_space: .*export CF_API, CF_SPACE"):
        make_target("cf", tmp_path, params)
    with pytest.raises(TargetError, match="is not a file"):
        make_target("cf", tmp_path, tmp_path / "missing.yml")


# ------------------------------------------------------ the integration suite against broken buildpacks

def run_integration(buildpack: Path, tmp_path: Path, select: str, env: dict[str, str] | None = None) -> str:
    """The buildpack's integration suite on its own localcf, against `buildpack`; returns its output."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "buildpack/integration", "--buildpack", str(buildpack),
                           "-n", "0", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "basetemp"),
                           "-k", select, "-q"],
                          cwd=ROOT, env=env or dict(os.environ), capture_output=True, text=True, timeout=600,
                          check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, f"the suite should fail on a broken buildpack (exit {proc.returncode}):\n{out}"
    return out


def broken_copy(tmp_path: Path) -> Path:
    return packager.copy_buildpack(tmp_path / "broken-buildpack")


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path} no longer holds {old!r}: update the broken copy"
    path.write_text(text.replace(old, new, 1))


def test_a_buildpack_that_declares_no_sidecar_fails_the_sidecar_claims(tmp_path: Path) -> None:
    broken = broken_copy(tmp_path)
    edit(broken / "src" / "supply" / "main.go", 'filepath.Join(depDir, "launch.yml")',
         'filepath.Join(depDir, "launch.yml.off")')
    out = run_integration(broken, tmp_path, "uncached and (registered or same_instance)")
    assert "2 failed" in out, out
    assert "claim failed: the sidecar 'config-server' is registered for web with origin 'buildpack'" in out
    assert "seen: no sidecars" in out
    assert "claim failed: the sidecar (config-server) is running in instance 0 of the app" in out
    # the staging log lines are shown with the claim
    assert "-----> Installing config-server 0.0.1" in out and "Declared the config-server sidecar" in out


def test_a_buildpack_whose_supply_exits_1_fails_with_the_staging_log(tmp_path: Path) -> None:
    broken = broken_copy(tmp_path)
    edit(broken / "src" / "supply" / "main.go", "func main() {\n",
         'func main() {\n\tfmt.Fprintln(os.Stderr, "       **ERROR** supply broken on purpose")\n\tos.Exit(1)\n')
    out = run_integration(broken, tmp_path, "uncached and config_answers")
    assert "1 failed" in out, out
    assert "claim failed: GET /config answers 200 with the JSON" in out, out
    assert "did not deploy: `cf push it-uncached-" in out
    assert "**ERROR** supply broken on purpose" in out


def test_a_buildpack_with_a_wrong_checksum_fails_with_the_mismatch(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The author uploaded the dependency and recorded a wrong sha256: the uncached package fails the
    claim in staging with libbuildpack's mismatch text, the cached one cannot even be packaged."""
    monkeypatch.setenv("SIDECARLAB_HOME", str(tmp_path / "home"))
    broken = broken_copy(tmp_path)
    binary = sidecar.build(out=tmp_path / "bin" / "config-server", goos="linux", goarch=sidecar.host_goarch())
    s3 = blobstore.validate()
    blobstore.start()
    try:
        uploaded = packager.upload_dependency(binary, "0.0.1", s3, broken, log=None)
        wrong = "ab" * 32
        edit(broken / "manifest.yml", uploaded.sha256, wrong)
        out = run_integration(broken, tmp_path, "greets", env=dict(os.environ))
    finally:
        blobstore.stop_if_mine()
    assert "1 failed" in out and "1 error" in out, out
    assert "claim failed: GET / answers 200 with a body containing" in out
    assert f"**ERROR** dependency sha256 mismatch: expected sha256 {wrong}, actual sha256 {uploaded.sha256}" in out
    assert f"dependency sha256 mismatch: expected sha256 {wrong}" in out.split("ERROR at setup")[-1]


def test_air_gapped_deploys_are_skipped_with_the_reason_in_process_mode(tmp_path: Path) -> None:
    env = dict(os.environ, LOCALCF_RUNTIME="process")
    proc = subprocess.run([sys.executable, "-m", "pytest", "buildpack/integration", "-n", "0", "-p", "no:cacheprovider",
                           "--basetemp", str(tmp_path / "basetemp"), "-k", "egress", "-rs", "-q"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "2 skipped" in out, out
    assert "staging cannot be air-gapped on local: localcf runs apps as plain processes (runtime mode `process`)" in out


def test_the_suite_uploads_to_an_s3_server_of_its_own_and_leaves_the_shared_one_alone(tmp_path: Path) -> None:
    """Two suites (or a suite and a notebook) in one checkout used to share the checkout's embedded S3
    server: the one that started it stopped it at its end while the other still downloaded from it."""
    import boto3

    home = tmp_path / "home"
    shared = blobstore.start(home / "blobstore", owner_pid=None)  # a server the user started beforehand
    try:
        env = dict(os.environ, SIDECARLAB_HOME=str(home), SIDECARLAB_WORK=str(tmp_path / "work"))
        proc = subprocess.run([sys.executable, "-m", "pytest", "buildpack/integration", "-n", "0", "-p",
                               "no:cacheprovider", "--basetemp", str(tmp_path / "basetemp"), "-k",
                               "uncached and root_greets", "-q"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout + proc.stderr
        # the shared server got nothing and still runs; the suite's own is gone
        client = boto3.client("s3", endpoint_url=shared.endpoint_url, region_name=blobstore.DEFAULT_REGION,
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        buckets = [b["Name"] for b in client.list_buckets().get("Buckets", [])]
        assert all(client.list_objects_v2(Bucket=b).get("KeyCount", 0) == 0 for b in buckets), buckets
        still = blobstore.status(home / "blobstore")
        assert still is not None and (still.pid, still.port) == (shared.pid, shared.port)
        own = list((tmp_path / "basetemp").glob("blobstore*"))
        assert own and all(blobstore.status(d) is None for d in own), own
    finally:
        blobstore.stop(home / "blobstore")
