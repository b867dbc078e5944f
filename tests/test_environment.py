"""localcf.environment: every variable of an app process and of its sidecars (CF-BEHAVIOUR.md 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from localcf import environment as envmod
from localcf.environment import InstanceContext, SidecarInfo, process_environment

TOO_LARGE = 'The memory allocation defined is too large to run with the dependent "web" process'

VCAP_APPLICATION_KEYS = {
    "application_id", "application_name", "name", "uris", "application_uris", "space_name", "space_id",
    "organization_name", "organization_id", "process_id", "process_type", "limits", "version",
    "application_version", "cf_api", "host", "port", "instance_id", "instance_index",
}


def context(**changes) -> InstanceContext:
    values = dict(
        app_guid="a1a1a1a1-0000-4000-8000-000000000001",
        app_name="app-using-config-server",
        process_guid="a1a1a1a1-0000-4000-8000-000000000001",
        process_type="web",
        process_memory_mb=256,
        process_disk_mb=1024,
        process_version="b2b2b2b2-0000-4000-8000-000000000002",
        instance_guid="c3c3c3c3-0000-4000-8000-000000000003",
        instance_index=0,
        cf_api="http://127.0.0.1:45678",
        external_port=61001,
        container_ip="10.255.0.2",
        uris=["app-using-config-server.localcf.dev"],
        app_env={"CONFIG_SERVER_PORT": "8082"},
        sidecars=[SidecarInfo("config-server", 32)],
    )
    values.update(changes)
    return InstanceContext(**values)


def test_app_process_gets_every_platform_variable():
    env = process_environment(context())
    assert env["HOME"] == "/home/vcap/app"
    assert env["TMPDIR"] == "/home/vcap/tmp"
    assert env["DEPS_DIR"] == "/home/vcap/deps"
    assert env["PORT"] == "8080"
    assert env["VCAP_APP_PORT"] == "8080"
    assert env["VCAP_APP_HOST"] == "0.0.0.0"
    assert env["LANG"] == "en_US.UTF-8"
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert env["MEMORY_LIMIT"] == "224m"  # 256 - 32 carved out for the sidecar
    assert env["VCAP_SERVICES"] == "{}"
    assert env["INSTANCE_GUID"] == env["CF_INSTANCE_GUID"] == "c3c3c3c3-0000-4000-8000-000000000003"
    assert env["INSTANCE_INDEX"] == env["CF_INSTANCE_INDEX"] == "0"
    assert env["CF_INSTANCE_IP"] == "10.255.0.2"
    assert env["CF_INSTANCE_PORT"] == "61001"
    assert env["CF_INSTANCE_ADDR"] == "10.255.0.2:61001"
    assert env["CF_INSTANCE_PORTS"] == '[{"external":61001,"internal":8080}]'
    assert env["CONFIG_SERVER_PORT"] == "8082"
    assert all(isinstance(v, str) for v in env.values())


def test_the_environment_has_exactly_these_names():
    env = process_environment(context())
    assert set(env) == {
        "HOME", "TMPDIR", "DEPS_DIR", "PORT", "VCAP_APP_PORT", "VCAP_APP_HOST", "LANG", "PATH",
        "MEMORY_LIMIT", "VCAP_APPLICATION", "VCAP_SERVICES", "INSTANCE_GUID", "INSTANCE_INDEX",
        "CF_INSTANCE_GUID", "CF_INSTANCE_INDEX", "CF_INSTANCE_IP", "CF_INSTANCE_PORT", "CF_INSTANCE_ADDR",
        "CF_INSTANCE_PORTS", "CONFIG_SERVER_PORT",
    }


def test_vcap_application_has_exactly_cf_keys_and_values():
    raw = process_environment(context(instance_index=2))["VCAP_APPLICATION"]
    vcap = json.loads(raw)
    assert set(vcap) == VCAP_APPLICATION_KEYS
    assert vcap["application_id"] == "a1a1a1a1-0000-4000-8000-000000000001"
    assert vcap["application_name"] == vcap["name"] == "app-using-config-server"
    assert vcap["uris"] == vcap["application_uris"] == ["app-using-config-server.localcf.dev"]
    assert vcap["space_name"] == "dev" and vcap["space_id"] == envmod.SPACE_GUID
    assert vcap["organization_name"] == "localcf" and vcap["organization_id"] == envmod.ORG_GUID
    assert vcap["process_id"] == "a1a1a1a1-0000-4000-8000-000000000001" and vcap["process_type"] == "web"
    assert vcap["limits"] == {"mem": 224, "disk": 1024, "fds": 16384}
    assert vcap["version"] == vcap["application_version"] == "b2b2b2b2-0000-4000-8000-000000000002"
    assert vcap["cf_api"] == "http://127.0.0.1:45678"
    assert vcap["host"] == "0.0.0.0" and vcap["port"] == 8080
    assert vcap["instance_id"] == "c3c3c3c3-0000-4000-8000-000000000003" and vcap["instance_index"] == 2
    # marshalled as Go's encoding/json does in the launcher: sorted keys, no spaces
    assert raw == json.dumps(vcap, sort_keys=True, separators=(",", ":"))
    assert raw.startswith('{"application_id":')


def test_sidecar_with_memory_sees_its_own_memory():
    ctx = context()
    env = process_environment(ctx, sidecar=ctx.sidecars[0])
    assert env["MEMORY_LIMIT"] == "32m"
    assert json.loads(env["VCAP_APPLICATION"])["limits"]["mem"] == 32
    # everything else is the app's: same container, same PORT
    app_env = process_environment(ctx)
    differing = {k for k in env if env[k] != app_env[k]}
    assert differing == {"MEMORY_LIMIT", "VCAP_APPLICATION"}
    assert env["PORT"] == "8080" and env["HOME"] == "/home/vcap/app"


def test_sidecar_without_memory_sees_the_whole_process_memory():
    ctx = context(sidecars=[SidecarInfo("config-server")])
    assert process_environment(ctx, sidecar=ctx.sidecars[0])["MEMORY_LIMIT"] == "256m"
    # and carves nothing out of the app
    assert process_environment(ctx)["MEMORY_LIMIT"] == "256m"


def test_several_sidecars_are_all_carved_out_of_the_app():
    ctx = context(process_memory_mb=1024, sidecars=[SidecarInfo("a", 100), SidecarInfo("b"), SidecarInfo("c", 24)])
    assert process_environment(ctx)["MEMORY_LIMIT"] == "900m"
    assert process_environment(ctx, sidecar=ctx.sidecars[1])["MEMORY_LIMIT"] == "1024m"
    assert process_environment(ctx, sidecar=ctx.sidecars[2])["MEMORY_LIMIT"] == "24m"


def test_no_sidecars_means_the_whole_memory():
    assert process_environment(context(sidecars=[]))["MEMORY_LIMIT"] == "256m"


def test_sidecars_taking_all_the_memory_is_cf_error():
    with pytest.raises(ValueError) as caught:
        process_environment(context(sidecars=[SidecarInfo("a", 200), SidecarInfo("b", 56)]))
    assert str(caught.value).startswith(TOO_LARGE + "; ")


def test_user_env_cannot_override_platform_names_but_may_set_lang_and_path():
    user = {
        "HOME": "/elsewhere", "MEMORY_LIMIT": "9999m", "CF_INSTANCE_INDEX": "7", "INSTANCE_GUID": "x",
        "VCAP_APP_HOST": "1.2.3.4", "TMPDIR": "/t", "LANG": "C.UTF-8", "PATH": "/opt/bin:/usr/bin", "MY_VAR": "ok",
    }
    env = process_environment(context(app_env=user))
    assert env["HOME"] == "/home/vcap/app" and env["TMPDIR"] == "/home/vcap/tmp"
    assert env["MEMORY_LIMIT"] == "224m"
    assert env["CF_INSTANCE_INDEX"] == "0" and env["INSTANCE_GUID"] == "c3c3c3c3-0000-4000-8000-000000000003"
    assert env["VCAP_APP_HOST"] == "0.0.0.0"
    assert env["LANG"] == "C.UTF-8" and env["PATH"] == "/opt/bin:/usr/bin"
    assert env["MY_VAR"] == "ok"


def test_process_mode_moves_home_and_port(tmp_path):
    root = tmp_path / "containers" / "c3c3" / "vcap"
    ctx = context(home_root=root, port=40123, external_port=40123, container_ip="127.0.0.1")
    env = process_environment(ctx)
    assert env["HOME"] == f"{root}/app"
    assert env["TMPDIR"] == f"{root}/tmp"
    assert env["DEPS_DIR"] == f"{root}/deps"
    assert env["PORT"] == env["VCAP_APP_PORT"] == "40123"
    assert env["CF_INSTANCE_PORTS"] == '[{"external":40123,"internal":40123}]'
    assert env["CF_INSTANCE_ADDR"] == "127.0.0.1:40123"
    assert json.loads(env["VCAP_APPLICATION"])["port"] == 40123


def test_a_real_process_started_with_it_sees_it(tmp_path):
    # The runtime passes this dict as the whole environment of a real process: it must be usable as is.
    ctx = context(home_root=tmp_path)
    env = process_environment(ctx, sidecar=ctx.sidecars[0])
    env["PATH"] = os.environ["PATH"]  # find the test's python on this machine
    script = "import json, os; print(json.dumps({k: os.environ[k] for k in ('MEMORY_LIMIT', 'HOME', 'VCAP_APPLICATION')}))"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout)
    assert seen["MEMORY_LIMIT"] == "32m"
    assert seen["HOME"] == f"{tmp_path}/app"
    assert json.loads(seen["VCAP_APPLICATION"])["application_name"] == "app-using-config-server"


def test_fixed_org_and_space():
    assert (envmod.ORG_NAME, envmod.SPACE_NAME) == ("localcf", "dev")
    assert envmod.ORG_GUID != envmod.SPACE_GUID
    ctx = context(space_name="other", space_guid="s", org_name="o", org_guid="g")
    vcap = json.loads(process_environment(ctx)["VCAP_APPLICATION"])
    assert (vcap["space_name"], vcap["space_id"], vcap["organization_name"], vcap["organization_id"]) == ("other", "s", "o", "g")
