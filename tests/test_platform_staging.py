"""The control plane and stager end to end: the real `localcf` command, the real daemon, real buildpacks."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import textwrap
import threading
import time
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from conftest import FIXTURES, LocalCF

SAMPLE = "app-using-config-server"


def write_bp(root: Path, name: str, **scripts: str) -> Path:
    """A buildpack of shell scripts: write_bp(tmp, "x", supply="echo hi")."""
    bp = root / name
    (bp / "bin").mkdir(parents=True)
    for script, body in scripts.items():
        path = bp / "bin" / script
        path.write_text("#!/usr/bin/env bash\nset -e\n" + textwrap.dedent(body))
        path.chmod(0o755)
    return bp


def write_app(root: Path, name: str, manifest: str, files: dict[str, str] | None = None) -> Path:
    app = root / name
    app.mkdir(parents=True)
    (app / "manifest.yml").write_text(textwrap.dedent(manifest))
    for fname, body in (files or {"index.txt": "hello\n"}).items():
        (app / fname).write_text(body)
    return app


def unpack_droplet(cf: LocalCF, app: str, dest: Path) -> Path:
    cf("droplet", "download", app, str(dest))
    return dest


def sidecars(cf: LocalCF, app: str) -> list[dict]:
    guid = cf("app", app, "--guid").out.strip()
    return json.loads(cf("curl", f"/v3/apps/{guid}/sidecars").out)["resources"]


# ------------------------------------------------------------------------------------ push

def test_push_no_start_makes_droplet_with_cf_layout(localcf: LocalCF, app_copy, tmp_path: Path) -> None:
    app = app_copy(SAMPLE)
    (app / "config-server").write_text("#!/bin/sh\nexit 0\n")  # stands in for the Go binary here
    (app / "config-server").chmod(0o755)
    res = localcf("push", "--no-start", cwd=app)
    out = res.out
    assert f"Pushing app {SAMPLE} to org localcf / space dev as admin..." in out
    assert "Staging app and tracing logs..." in out
    # staging output is streamed as cf push prints it: indented messages, in lifecycle order
    order = ["   Downloading python_buildpack...", "   Downloading app package...", "   -----> Python Buildpack",
             "   Exit status 0", "   Uploading droplet, build artifacts cache...", "   Uploading complete"]
    positions = [out.index(line) for line in order]
    assert positions == sorted(positions), out
    assert "requested state:   stopped" in out
    assert "sidecars:        config-server" in out

    d = unpack_droplet(localcf, SAMPLE, tmp_path / "droplet")
    for entry in ("app", "deps", "profile.d", "tmp", "logs", "staging_info.yml"):
        assert (d / entry).exists(), entry
    assert (d / "app" / "app.py").is_file()
    assert not (d / "app" / "manifest.yml").exists(), "cf never uploads the manifest"
    assert os.access(d / "app" / "config-server", os.X_OK), "file modes survive upload and staging"
    info = json.loads((d / "staging_info.yml").read_text())
    assert info == {"detected_buildpack": "python", "start_command": "python app.py"}
    assert (d / "deps" / "0" / "config.yml").is_file()
    assert (d / "profile.d" / "000_multi-supply.sh").is_file()

    scs = sidecars(localcf, SAMPLE)
    assert [(s["name"], s["process_types"], s["origin"], s["memory_in_mb"], s["command"]) for s in scs] == [
        ("config-server", ["web"], "user", None, "./config-server")]
    assert set(scs[0]) >= {"guid", "relationships", "created_at", "updated_at"}


def test_push_flags_and_cfignore(localcf: LocalCF, tmp_path: Path) -> None:
    app = write_app(tmp_path, "flags", "applications: [{name: flags-app}]\n",
                    {"Procfile": "web: python app.py\n", "requirements.txt": "", "app.py": "print(1)\n",
                     "secret.txt": "x", ".cfignore": "secret.txt\n"})
    localcf("push", "flags-app", "--no-start", "-m", "128M", "-k", "256M", "-i", "2", "-c", "python -u app.py",
            "--no-route", cwd=app)
    guid = localcf("app", "flags-app", "--guid").out.strip()
    web = json.loads(localcf("curl", f"/v3/apps/{guid}/processes/web").out)
    assert (web["memory_in_mb"], web["disk_in_mb"], web["instances"], web["command"]) == (128, 256, 2, "python -u app.py")
    assert json.loads(localcf("curl", f"/v3/apps/{guid}/routes").out)["resources"] == []
    d = unpack_droplet(localcf, "flags-app", tmp_path / "d")
    assert (d / "app" / "app.py").exists() and not (d / "app" / "secret.txt").exists()


def test_v6_verbs_create_apply_push(localcf: LocalCF, app_copy) -> None:
    app = app_copy(SAMPLE)
    manifest = (app / "manifest.yml").read_text().replace(SAMPLE, "v6-app")
    (app / "manifest.yml").write_text(manifest)
    localcf("v3-create-app", "v6-app", cwd=app)
    localcf("v3-apply-manifest", "-f", "manifest.yml", cwd=app)
    assert [s["name"] for s in sidecars(localcf, "v6-app")] == ["config-server"]
    res = localcf("v3-push", "v6-app", "--no-start", "--no-manifest", "-p", str(app), cwd=app)
    assert "Exit status 0" in res.out
    localcf("delete", "v6-app", "-f")
    assert localcf("app", "v6-app", check=False).code == 1


def test_env_verbs(localcf: LocalCF) -> None:
    localcf("create-app", "env-app")
    res = localcf("set-env", "env-app", "GREETING", "hello world")
    assert "Setting env variable GREETING for app env-app in org localcf / space dev as admin..." in res.out
    out = localcf("env", "env-app").out
    assert "User-Provided:\nGREETING: hello world" in out
    assert "VCAP_APPLICATION" in out
    localcf("unset-env", "env-app", "GREETING")
    assert "GREETING" not in localcf("env", "env-app").out


# --------------------------------------------------------------------------- buildpacks

def test_detection_order_and_skipping(localcf: LocalCF, tmp_path: Path) -> None:
    bps = tmp_path / "bps"
    write_bp(bps, "never", detect="exit 1\n")
    write_bp(bps, "first-yes", detect="echo first\n", finalize="echo FINALIZE-FIRST\n",
             release="echo '---'; echo 'default_process_types: {web: ./run}'\n")
    write_bp(bps, "second-yes", detect="echo second\n", finalize="echo FINALIZE-SECOND\n",
             release="echo 'default_process_types: {web: ./run}'\n")
    # names chosen so that name order (a-second, never, z-first) differs from position order
    # (never, z-first, a-second): detection must follow positions
    names = {"never": "det-never", "first-yes": "det-z-first-yes", "second-yes": "det-a-second-yes"}
    for i, name in enumerate(("never", "first-yes", "second-yes"), start=1):
        localcf("create-buildpack", names[name], str(bps / name), str(i))
    try:
        app = write_app(tmp_path, "detapp", "applications: [{name: detapp, no-route: true}]\n")
        res = localcf("push", "--no-start", cwd=app)
        assert "FINALIZE-FIRST" in res.out and "FINALIZE-SECOND" not in res.out
        d = unpack_droplet(localcf, "detapp", tmp_path / "d")
        assert json.loads((d / "staging_info.yml").read_text())["detected_buildpack"] == "first"
        # a disabled buildpack takes no part in detection
        localcf("update-buildpack", "det-z-first-yes", "--disable")
        res = localcf("push", "--no-start", cwd=app)
        assert "FINALIZE-SECOND" in res.out and "FINALIZE-FIRST" not in res.out
    finally:
        for name in names.values():
            localcf("delete-buildpack", name, "-f")


def test_multi_buildpack_supply_chain_and_runtime_path(localcf: LocalCF, tmp_path: Path) -> None:
    """Two supply buildpacks and python_buildpack as the final one: DEPS_IDX, config.yml, profile.d, PATH."""
    bps = tmp_path / "bps"
    for n in ("one", "two"):
        write_bp(bps, n, supply=f"""
            echo "supply {n}: args=$# idx=$4"
            mkdir -p "$3/$4/bin"
            printf '#!/bin/sh\\necho tool-{n}\\n' > "$3/$4/bin/tool-{n}"
            chmod +x "$3/$4/bin/tool-{n}"
            printf 'name: {n}\\nconfig: {{}}\\nversion: 1.0.0\\n' > "$3/$4/config.yml"
            mkdir -p "$3/$4/profile.d"; echo 'export FROM_{n.upper()}=yes' > "$3/$4/profile.d/{n}.sh"
        """)
    app = write_app(tmp_path, "multi", f"""
        applications:
        - name: multi
          no-route: true
          buildpacks: [{bps / 'one'}, {bps / 'two'}, python_buildpack]
        """, {"Procfile": "web: python app.py\n", "requirements.txt": "", "app.py": "print('hi')\n"})
    res = localcf("push", "--no-start", cwd=app)
    assert "supply one: args=4 idx=0" in res.out
    assert "supply two: args=4 idx=1" in res.out
    d = unpack_droplet(localcf, "multi", tmp_path / "d")
    assert (d / "deps" / "0" / "config.yml").read_text().startswith("name: one")
    assert (d / "deps" / "1" / "config.yml").read_text().startswith("name: two")
    # the launcher's view: source profile.d with DEPS_DIR pointing at the droplet's deps
    script = 'cd app && for f in ../profile.d/*; do . "$f"; done; tool-one; tool-two; echo "$FROM_ONE$FROM_TWO"'
    import subprocess
    out = subprocess.run(["bash", "-c", script], cwd=d, capture_output=True, text=True,
                         env={"DEPS_DIR": str(d / "deps"), "PATH": "/usr/bin:/bin", "HOME": str(d / "app")})
    assert out.stdout.split() == ["tool-one", "tool-two", "yesyes"], out.stderr


def test_launch_yml_sidecar_origin_buildpack_and_name_clash(localcf: LocalCF, tmp_path: Path) -> None:
    bps = tmp_path / "bps"
    write_bp(bps, "sc", supply="""
        cat > "$3/$4/launch.yml" <<'EOF'
        processes:
        - type: apm-agent
          command: ./apm --listen 9000
          limits: {memory: 32}
          platforms: {cloudfoundry: {sidecar_for: [web]}}
        EOF
    """)
    app = write_app(tmp_path, "scapp", f"""
        applications:
        - name: scapp
          no-route: true
          buildpacks: [{bps / 'sc'}, python_buildpack]
        """, {"Procfile": "web: python app.py\n", "requirements.txt": "", "app.py": ""})
    localcf("push", "--no-start", cwd=app)
    scs = sidecars(localcf, "scapp")
    assert [(s["name"], s["origin"], s["memory_in_mb"], s["process_types"], s["command"]) for s in scs] == [
        ("apm-agent", "buildpack", 32, ["web"], "./apm --listen 9000")]
    # the same name declared by the user: staging fails with Cloud Controller's text
    (app / "manifest.yml").write_text((app / "manifest.yml").read_text() + textwrap.indent(textwrap.dedent("""\
        sidecars:
        - name: apm-agent
          process_types: [web]
          command: ./mine
        """), "  "))
    # apply first: the user sidecar replaces the buildpack one by name
    res = localcf("push", "--no-start", cwd=app, check=False)
    assert res.code == 1
    assert ("Error staging application: StagingError - Staging error: Buildpack defined sidecar 'apm-agent' "
            "conflicts with an existing user-defined sidecar. Consider renaming 'apm-agent'.") in res.err


@pytest.mark.parametrize("case,scripts,expect_log,expect_error", [
    ("none", {"detect": "exit 1\n"}, "None of the buildpacks detected a compatible application",
     "NoAppDetectedError - An app was not successfully detected by any available buildpack"),
    ("compile", {"finalize": "echo boom; exit 7\n"}, "Failed to compile droplet",
     "BuildpackCompileFailed - App staging failed in the buildpack compile phase"),
    ("release", {"finalize": "true\n", "release": "echo 'default_process_types: [unclosed'\n"},
     "buildpack's release output invalid",
     "BuildpackReleaseFailed - App staging failed in the buildpack release phase"),
    ("supply", {"supply": "exit 3\n"}, "Failed to run all supply scripts",
     "StagingError - Staging error: staging failed"),
])
def test_staging_failure_rows(localcf: LocalCF, tmp_path: Path, case: str, scripts: dict, expect_log: str,
                              expect_error: str) -> None:
    bp = write_bp(tmp_path / "bps", f"fail-{case}", **scripts)
    if case == "none":
        chain = None  # detection over admin buildpacks: ours is the only one that could match
        localcf("create-buildpack", "fail-none", str(bp), "1")
        localcf("update-buildpack", "python_buildpack", "--disable")
    elif case == "supply":
        chain = f"[{bp}, python_buildpack]"
    else:
        chain = f"[{bp}]"
    try:
        app = write_app(tmp_path, f"f-{case}", f"applications: [{{name: f-{case}, no-route: true"
                        + (f", buildpacks: {chain}" if chain else "") + "}]\n")
        res = localcf("push", "--no-start", cwd=app, check=False)
    finally:
        if case == "none":
            localcf("delete-buildpack", "fail-none", "-f")
            localcf("update-buildpack", "python_buildpack", "--enable")
    assert res.code == 1, res.text
    assert expect_log in res.out, res.out
    assert f"FAILED\nError staging application: {expect_error}" in res.err


def test_unknown_buildpack_name(localcf: LocalCF, tmp_path: Path) -> None:
    app = write_app(tmp_path, "unk", "applications: [{name: unk}]\n")
    res = localcf("push", "--no-start", "-b", "no_such_buildpack", cwd=app, check=False)
    assert res.code == 1
    assert 'Buildpack "no_such_buildpack" must be an existing admin buildpack or a valid git URI' in res.err


def _zip_bp(bp: Path, zpath: Path, top: str | None = None) -> Path:
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted(bp.rglob("*")):
            arc = p.relative_to(bp).as_posix()
            if top:
                arc = f"{top}/{arc}"
            info = zipfile.ZipInfo(arc + ("/" if p.is_dir() else ""))
            info.external_attr = (stat.S_IMODE(p.stat().st_mode) | (stat.S_IFDIR if p.is_dir() else stat.S_IFREG)) << 16
            zf.writestr(info, b"" if p.is_dir() else p.read_bytes())
    return zpath


def test_buildpack_from_zip_and_from_http_url(localcf: LocalCF, tmp_path: Path) -> None:
    bp = write_bp(tmp_path / "bps", "zipped", finalize="echo FROM-ZIPPED-BUILDPACK\n",
                  release="echo 'default_process_types: {web: ./serve}'\n")
    serve = tmp_path / "serve"
    serve.mkdir()
    _zip_bp(bp, serve / "bp.zip", top="zipped-main")  # GitHub-style: one top folder
    app = write_app(tmp_path, "zipapp", "applications: [{name: zipapp, no-route: true}]\n")
    res = localcf("push", "--no-start", "-b", str(serve / "bp.zip"), cwd=app)
    assert "FROM-ZIPPED-BUILDPACK" in res.out

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(serve)))
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/bp.zip"
        res = localcf("push", "--no-start", "-b", url, cwd=app)
        assert "FROM-ZIPPED-BUILDPACK" in res.out
        assert f"Downloading {url}..." in res.out
    finally:
        httpd.shutdown()


def test_zip_slip_buildpack_is_refused(localcf: LocalCF, tmp_path: Path) -> None:
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("bin/detect", "#!/bin/sh\nexit 0\n")
        zf.writestr("../../escaped.txt", "owned")
    app = write_app(tmp_path, "evilapp", "applications: [{name: evilapp, no-route: true}]\n")
    res = localcf("push", "--no-start", "-b", str(evil), cwd=app, check=False)
    assert res.code == 1
    assert "../../escaped.txt" in res.text
    assert not list(tmp_path.parent.rglob("escaped.txt"))
    assert not list(localcf.home.rglob("escaped.txt"))


def test_admin_buildpack_verbs(localcf: LocalCF, tmp_path: Path) -> None:
    bp = write_bp(tmp_path / "bps", "admin", detect="exit 1\n")
    localcf("create-buildpack", "admin_bp_test", str(bp), "1", "--disable")
    try:
        out = localcf("buildpacks").out
        assert out.startswith("Getting buildpacks as admin...\n\n")
        header = out.splitlines()[2]
        assert header.split() == ["position", "name", "stack", "enabled", "locked", "filename"]
        row = next(line.split() for line in out.splitlines() if "admin_bp_test" in line)
        assert row[0] == "1" and row[3:5] == ["false", "false"]
        res = localcf("create-buildpack", "admin_bp_test", str(bp), "1", check=False)
        assert "The buildpack name admin_bp_test is already in use for the stack cflinuxfs4" in res.err
        localcf("update-buildpack", "admin_bp_test", "-i", "99", "--enable", "--lock")
        row = next(line.split() for line in localcf("buildpacks").out.splitlines() if "admin_bp_test" in line)
        assert row[3:5] == ["true", "true"] and int(row[0]) > 1
        res = localcf("update-buildpack", "admin_bp_test", "-p", str(bp), check=False)
        assert res.code == 1 and "The buildpack is locked" in res.err
    finally:
        localcf("delete-buildpack", "admin_bp_test", "-f")
    assert "admin_bp_test" not in localcf("buildpacks").out


# ----------------------------------------------------------------------------- manifests

@pytest.mark.parametrize("manifest,line,expected", [
    ("applications:\n- name: bad\n  env: [unclosed\n", None, "manifest.yml:"),
    ("applications:\n- name: nosc\n  sidecars:\n  - command: ./x\n    process_types: [web]\n", 4, "name"),
    ("applications:\n- name: nocmd\n  sidecars:\n  - name: s\n    process_types: [web]\n", 4, "command"),
    ("applications:\n- name: nopt\n  sidecars:\n  - name: s\n    command: ./x\n", 4, "process_types"),
    ("applications:\n- name: mem\n  memory: 256M\n  sidecars:\n  - name: s\n    command: ./x\n"
     "    process_types: [web]\n    memory: 256M\n", 8,
     'The memory allocation defined is too large to run with the dependent "web" process'),
    ("applications:\n- name: unkbp\n  buildpacks:\n  - python_buildpack\n  - not_a_buildpack\n", 5,
     'Buildpack "not_a_buildpack" must be an existing admin buildpack or a valid git URI'),
])
def test_manifest_errors_name_file_line_and_field(localcf: LocalCF, tmp_path: Path, manifest: str,
                                                  line: int | None, expected: str) -> None:
    app = tmp_path / "m"
    app.mkdir()
    (app / "manifest.yml").write_text(manifest)
    res = localcf("push", "--no-start", cwd=app, check=False)
    assert res.code == 1
    assert expected in res.err, res.err
    if line is not None:
        assert f"manifest.yml:{line}" in res.err, res.err
    assert "Traceback" not in res.text
    # nothing was created from a manifest that failed validation: not this case's app, not any app
    name = re.search(r"- name: (\w+)", manifest)
    assert name is not None
    apps = localcf("apps").out
    assert not re.search(rf"^{name.group(1)}\s", apps, re.M), apps


# ------------------------------------------------------------------------ API and daemon

def test_requests_without_the_token_are_refused(localcf: LocalCF) -> None:
    ep = json.loads((localcf.home / "daemon.json").read_text())
    url = f"http://127.0.0.1:{ep['api_port']}/v3/apps"
    r = requests.get(url, timeout=5)
    assert r.status_code == 401
    assert r.json()["errors"][0]["title"] == "CF-NotAuthenticated"
    r = requests.get(url, headers={"Authorization": "bearer not-the-token"}, timeout=5)
    assert r.status_code == 401 and r.json()["errors"][0]["title"] == "CF-InvalidAuthToken"
    r = requests.post(f"http://127.0.0.1:{ep['api_port']}/v3/apps", json={"name": "sneaky"}, timeout=5)
    assert r.status_code == 401
    assert "sneaky" not in localcf("apps").out
    assert stat.S_IMODE((localcf.home / "token").stat().st_mode) == 0o600
    token = (localcf.home / "token").read_text().strip()
    assert requests.get(url, headers={"Authorization": f"bearer {token}"}, timeout=5).status_code == 200


def test_kill_9_of_the_daemon_loses_no_record(tmp_path: Path, app_copy) -> None:
    cf = LocalCF(tmp_path / "home")
    cf("start")
    try:
        app = app_copy(SAMPLE)
        cf("push", "--no-start", cwd=app)
        bp = write_bp(tmp_path / "bps", "keep", detect="exit 1\n")
        cf("create-buildpack", "keep_me", str(bp), "3")
        cf("set-env", SAMPLE, "KEPT", "yes")
        guid = cf("app", SAMPLE, "--guid").out.strip()
        before = {p: json.loads(cf("curl", p).out) for p in (
            f"/v3/apps/{guid}", f"/v3/apps/{guid}/packages", f"/v3/apps/{guid}/droplets",
            f"/v3/apps/{guid}/sidecars", f"/v3/audit_events?target_guids={guid}", "/v3/buildpacks",
            f"/v3/apps/{guid}/environment_variables")}
        pid = json.loads((cf.home / "daemon.json").read_text())["pid"]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.05)
        # any verb brings the daemon back
        assert SAMPLE in cf("apps").out
        new_pid = json.loads((cf.home / "daemon.json").read_text())["pid"]
        assert new_pid != pid
        for path, old in before.items():
            new = json.loads(cf("curl", path).out)
            assert without_ports(new) == without_ports(old), path
        cf("droplet", "download", SAMPLE, str(tmp_path / "d"))
        assert (tmp_path / "d" / "staging_info.yml").exists()
    finally:
        cf("stop", check=False)


def without_ports(obj: dict) -> dict:
    """The record with the API port taken out of its links (the port changes when the daemon restarts)."""
    import re
    return json.loads(re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", json.dumps(obj)))


def test_start_stop_status_are_idempotent(tmp_path: Path) -> None:
    cf = LocalCF(tmp_path / "home")
    assert cf("status", check=False).code == 1
    first = cf("start").out
    assert "localcf started" in first
    assert "localcf is running" in cf("start").out
    assert "localcf is running" in cf("status").out
    assert cf("stop").out.strip() == "localcf stopped"
    assert cf("stop").out.strip() == "localcf is not running"
    assert cf("status", check=False).code == 1


def test_restage_makes_a_new_current_droplet(localcf: LocalCF, tmp_path: Path) -> None:
    app = write_app(tmp_path, "restaged", "applications: [{name: restaged, no-route: true}]\n",
                    {"Procfile": "web: python app.py\n", "requirements.txt": "", "app.py": "print(1)\n"})
    localcf("push", "--no-start", cwd=app)
    guid = localcf("app", "restaged", "--guid").out.strip()
    first = json.loads(localcf("curl", f"/v3/apps/{guid}/droplets/current").out)["guid"]
    out = localcf("restage", "restaged").out
    assert "Staging app and tracing logs..." in out and "   Exit status 0" in out
    second = json.loads(localcf("curl", f"/v3/apps/{guid}/droplets/current").out)["guid"]
    assert second != first
    droplets = json.loads(localcf("curl", f"/v3/apps/{guid}/droplets").out)["resources"]
    assert {d["guid"] for d in droplets} >= {first, second}
