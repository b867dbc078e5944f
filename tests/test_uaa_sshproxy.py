"""localcf's small UAA and its ssh proxy, spoken to directly (no cf CLI needed): the grants, which
tokens the API takes, and Cloud Foundry's ssh login form with one-time codes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import uuid
from pathlib import Path

import asyncssh
import jwt
import pytest
import requests
from conftest import LocalCF

CF_CLIENT = {"Authorization": "Basic " + base64.b64encode(b"cf:").decode()}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> LocalCF:
    lcf = LocalCF(tmp_path_factory.mktemp("localcf-uaa"))
    lcf("start")
    yield lcf
    lcf("stop", check=False)


def api(platform: LocalCF) -> str:
    return f"http://127.0.0.1:{json.loads((platform.home / 'daemon.json').read_text())['api_port']}"


def password(platform: LocalCF) -> str:
    return (platform.home / "uaa-password").read_text().strip()


def grant(platform: LocalCF, **form: str) -> requests.Response:
    return requests.post(f"{api(platform)}/oauth/token", data=form, headers=CF_CLIENT, timeout=10)


def tokens(platform: LocalCF) -> dict:
    r = grant(platform, grant_type="password", username="admin", password=password(platform))
    assert r.status_code == 200, r.text
    return r.json()


def get_apps(platform: LocalCF, token: str | None) -> requests.Response:
    headers = {"Authorization": f"bearer {token}"} if token else {}
    return requests.get(f"{api(platform)}/v3/apps", headers=headers, timeout=10)


def test_password_grant_gives_the_claims_the_cf_cli_reads(platform: LocalCF) -> None:
    body = tokens(platform)
    assert body["token_type"] == "bearer" and body["expires_in"] > 0
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["user_name"] == "admin" and claims["user_id"] and claims["exp"] > claims["iat"]
    assert "cloud_controller.admin" in claims["scope"]
    assert get_apps(platform, body["access_token"]).status_code == 200


def test_wrong_password_and_unknown_client_are_refused_as_uaa_does(platform: LocalCF) -> None:
    r = grant(platform, grant_type="password", username="admin", password="wrong")
    assert r.status_code == 401 and r.json() == {"error": "unauthorized", "error_description": "Bad credentials"}
    r = requests.post(f"{api(platform)}/oauth/token", timeout=10,
                      data={"grant_type": "password", "username": "admin", "password": password(platform)},
                      headers={"Authorization": "Basic " + base64.b64encode(b"other:").decode()})
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    r = grant(platform, grant_type="implicit")
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"


def test_refresh_grant_and_which_tokens_the_api_takes(platform: LocalCF) -> None:
    body = tokens(platform)
    r = grant(platform, grant_type="refresh_token", refresh_token=body["refresh_token"])
    assert r.status_code == 200 and get_apps(platform, r.json()["access_token"]).status_code == 200
    # an access token is no refresh token, and neither a refresh token nor an id token opens the API
    r = grant(platform, grant_type="refresh_token", refresh_token=body["access_token"])
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"
    for wrong in (body["refresh_token"], body["id_token"]):
        r = get_apps(platform, wrong)
        assert r.status_code == 401 and r.json()["errors"][0]["title"] == "CF-InvalidAuthToken"
    # a token signed with another key is refused; no token at all is CF-NotAuthenticated
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    forged = jwt.encode(claims, "not-the-key-of-this-foundation-0123456789", algorithm="HS256")
    assert get_apps(platform, forged).json()["errors"][0]["title"] == "CF-InvalidAuthToken"
    assert get_apps(platform, None).json()["errors"][0]["title"] == "CF-NotAuthenticated"
    # localcf's own client keeps using the state dir's token
    assert platform("apps").code == 0


def test_state_files_are_private(platform: LocalCF) -> None:
    for name in ("uaa-password", "uaa-signing-key", "ssh_host_ed25519_key"):
        assert (platform.home / name).stat().st_mode & 0o777 == 0o600, name
    assert re.fullmatch(r"[A-Za-z0-9]{24}", password(platform))


# ------------------------------------------------------------------------------------ ssh proxy

@pytest.fixture(scope="module")
def running_app(platform: LocalCF, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A small app (binary buildpack, a Python web server) pushed with localcf's own command."""
    name = f"ssh-{uuid.uuid4().hex[:6]}"
    app = tmp_path_factory.mktemp("ssh-app") / name
    app.mkdir()
    (app / "index.html").write_text("hello\n")
    (app / "manifest.yml").write_text(
        f"applications:\n- name: {name}\n  memory: 64M\n  buildpacks: [binary_buildpack]\n"
        "  command: python3 -m http.server $PORT\n")
    platform("push", cwd=app, timeout=180)
    client = platform.client()
    guid = client.require_app(name)["guid"]
    web = client.get(f"/v3/apps/{guid}/processes/web")
    return {"name": name, "guid": guid, "process_guid": web["guid"]}


def one_time_code(platform: LocalCF) -> str:
    r = requests.get(f"{api(platform)}/oauth/authorize", params={"response_type": "code", "client_id": "ssh-proxy"},
                     headers={"Authorization": f"bearer {tokens(platform)['access_token']}"},
                     allow_redirects=False, timeout=10)
    assert r.status_code == 302
    found = re.search(r"[?&]code=([^&]+)", r.headers["Location"])
    assert found
    return found.group(1)


def ssh_endpoint(platform: LocalCF) -> tuple[str, int, str]:
    link = requests.get(f"{api(platform)}/", timeout=10).json()["links"]["app_ssh"]
    host, _, port = link["href"].rpartition(":")
    return host, int(port), link["meta"]["host_key_fingerprint"]


def ssh_run(platform: LocalCF, user: str, code: str, command: str) -> tuple[int | None, str]:
    host, port, fingerprint = ssh_endpoint(platform)

    async def go() -> tuple[int | None, str]:
        async with asyncssh.connect(host, port, username=user, password=code, known_hosts=None,
                                    client_keys=None, agent_path=None) as conn:
            key = conn.get_server_host_key()
            seen = ":".join(f"{b:02x}" for b in hashlib.sha1(key.public_data).digest())
            assert seen == fingerprint, "the host key is the one the root document announces"
            result = await conn.run(command)
            return result.exit_status, str(result.stdout)
    return asyncio.run(go())


def test_ssh_login_form_with_one_time_codes(platform: LocalCF, running_app: dict) -> None:
    user = f"cf:{running_app['process_guid']}/0"
    code = one_time_code(platform)
    status, out = ssh_run(platform, user, code, "echo in-$INSTANCE_INDEX; exit 5")
    assert (status, out) == (5, "in-0\n")
    with pytest.raises(asyncssh.PermissionDenied):
        ssh_run(platform, user, code, "true")  # a code is good once
    with pytest.raises(asyncssh.PermissionDenied):
        ssh_run(platform, user, "made-up-code", "true")
    with pytest.raises(asyncssh.PermissionDenied):
        ssh_run(platform, f"cf:{running_app['process_guid']}/3", one_time_code(platform), "true")  # no instance 3
    with pytest.raises(asyncssh.PermissionDenied):
        ssh_run(platform, "vcap", one_time_code(platform), "true")
    logs = platform("logs", running_app["name"], "--recent").out
    assert re.search(r"\[SSH/0\] OUT Successful remote access by 127\.0\.0\.1:\d+", logs)
    assert re.search(r"\[SSH/0\] OUT Remote access ended for 127\.0\.0\.1:\d+", logs)


def test_authorize_needs_a_token_and_the_ssh_proxy_client(platform: LocalCF) -> None:
    url = f"{api(platform)}/oauth/authorize"
    r = requests.get(url, params={"response_type": "code", "client_id": "ssh-proxy"}, allow_redirects=False,
                     timeout=10)
    assert r.status_code == 401
    r = requests.get(url, params={"response_type": "code", "client_id": "other"}, allow_redirects=False, timeout=10,
                     headers={"Authorization": f"bearer {tokens(platform)['access_token']}"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


def test_host_key_and_password_survive_a_restart(platform: LocalCF, tmp_path: Path) -> None:
    before = (ssh_endpoint(platform)[2], password(platform))
    platform("stop")
    platform("start")
    assert (ssh_endpoint(platform)[2], password(platform)) == before
